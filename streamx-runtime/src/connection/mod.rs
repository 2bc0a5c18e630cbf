//! Connecting to Redis: the URL and how it is resolved, TLS, password redaction, and the
//! fred clients built from it.
//!
//! - `redis_url`: [`RedisUrl`], its parsing and the environment it reads;
//! - `tls`: what a `rediss://` connection trusts and presents (feature `tls`);
//! - `redact`: URLs shown without their passwords;
//! - `client`: building and connecting fred clients, and explaining a failed connect;
//! - `healing`: a client replaced by a fresh connection when it is stuck.

mod client;
mod healing;
mod redact;
mod redis_url;
mod tls;

pub(crate) use client::{read_off_runtime, tool_client, with_env_off_runtime, ClientRole, COMMAND_TIMEOUT};
pub(crate) use healing::HealingClient;
pub use redact::redact;
pub use redis_url::{RedisUrl, DEFAULT_REDIS_URL, REDIS_URL_ENV};
pub use tls::{REDIS_TLS_CA_ENV, REDIS_TLS_CERT_ENV, REDIS_TLS_KEY_ENV};
