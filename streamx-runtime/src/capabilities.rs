//! What the Redis server offers beyond Redis 7.0's stream commands, detected once per
//! connection (the runtime's command connection, a producer's connection): one code path per
//! capability, chosen here, so Redis 7.0, Redis 8.2+ and Valkey behave the same to a user.
//!
//! - [`xackdel`](Capabilities::xackdel): `XACKDEL` and the `KEEPREF | DELREF | ACKED` options of
//!   `XADD` and `XTRIM` (Redis 8.2, Valkey 9.2). Without them, streamx acknowledges with `XACK`
//!   and trims with `XTRIM MINID` up to the oldest entry any group still needs.
//! - [`xadd_idmp`](Capabilities::xadd_idmp): `XADD ... IDMP` (Redis 8.6). Without it,
//!   idempotent publishes go through a script.
//!
//! Detection asks the server about the commands themselves (`COMMAND INFO`, `COMMAND DOCS`),
//! not its version number, so a fork or a build with a command renamed away is judged by what
//! it runs. A server that refuses to answer (an ACL user without `COMMAND`) is treated as
//! Redis 7.0: the fallback paths work everywhere.
//!
//! The environment variable [`DISABLE_CAPABILITIES_ENV`] (`STREAMX_DISABLE_CAPABILITIES`)
//! turns detected capabilities off by name (`xackdel`, `idmp`, or `all`, comma-separated):
//! the test suite uses it to run the fallback paths on a server that has the native ones, and
//! an operator can use it to step around a server bug.

use fred::clients::Client;
use fred::interfaces::ClientLike as _;
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::wire::value_bytes;

/// The environment variable that turns detected capabilities off (see the module docs).
pub const DISABLE_CAPABILITIES_ENV: &str = "STREAMX_DISABLE_CAPABILITIES";

/// What the server offers beyond Redis 7.0 (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// `XACKDEL`, and `KEEPREF | DELREF | ACKED` on `XADD` / `XTRIM` (Redis 8.2+, Valkey 9.2+).
    pub xackdel: bool,
    /// `XADD ... IDMP producer-id idempotent-id` (Redis 8.6+).
    pub xadd_idmp: bool,
}

impl Capabilities {
    /// Redis 7.0's stream commands only: every fallback path.
    pub const BASELINE: Capabilities = Capabilities { xackdel: false, xadd_idmp: false };

    /// Asks the server behind `client` what it offers, then applies
    /// [`DISABLE_CAPABILITIES_ENV`]. Never fails: what cannot be asked is taken as absent.
    pub async fn detect(client: &Client) -> Capabilities {
        let xackdel = command_exists(client, "XACKDEL").await;
        let xadd_idmp = xadd_has_idmp(client).await;
        Capabilities { xackdel, xadd_idmp }.without(&std::env::var(DISABLE_CAPABILITIES_ENV).unwrap_or_default())
    }

    /// These capabilities with those named in `disabled` (comma-separated `xackdel`, `idmp`,
    /// `all`) turned off.
    ///
    /// ```
    /// use streamx_runtime::Capabilities;
    /// let all = Capabilities::BASELINE.with_xackdel(true).with_xadd_idmp(true);
    /// assert_eq!(all.without("all"), Capabilities::BASELINE);
    /// assert!(!all.without("xackdel").xackdel && all.without("xackdel").xadd_idmp);
    /// assert_eq!(all.without(""), all);
    /// ```
    pub fn without(mut self, disabled: &str) -> Capabilities {
        for name in disabled.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name.to_ascii_lowercase().as_str() {
                "all" => self = Capabilities::BASELINE,
                "xackdel" | "acked" => self.xackdel = false,
                "idmp" => self.xadd_idmp = false,
                other => {
                    tracing::warn!(name = other, env = DISABLE_CAPABILITIES_ENV, "unknown capability name; ignored")
                }
            }
        }
        self
    }

    /// These capabilities with `XACKDEL` / `ACKED` set to `on`.
    pub fn with_xackdel(mut self, on: bool) -> Capabilities {
        self.xackdel = on;
        self
    }

    /// These capabilities with `XADD ... IDMP` set to `on`.
    pub fn with_xadd_idmp(mut self, on: bool) -> Capabilities {
        self.xadd_idmp = on;
        self
    }
}

/// `COMMAND INFO <name>`: an array holding the command's description, or a nil for an unknown
/// command.
async fn command_exists(client: &Client, name: &str) -> bool {
    let command = CustomCommand::new_static("COMMAND", ClusterHash::Random, false);
    match client.custom::<Value, _>(command, vec![Value::from("INFO"), Value::from(name)]).await {
        Ok(Value::Array(items)) => items.first().is_some_and(|item| !item.is_null()),
        Ok(_) => false,
        Err(e) => {
            tracing::debug!(command = name, error = %e, "cannot ask the server about a command; taken as absent");
            false
        }
    }
}

/// `COMMAND DOCS XADD` names an `IDMP` token among XADD's arguments on a server that has it.
async fn xadd_has_idmp(client: &Client) -> bool {
    let command = CustomCommand::new_static("COMMAND", ClusterHash::Random, false);
    match client.custom::<Value, _>(command, vec![Value::from("DOCS"), Value::from("XADD")]).await {
        Ok(reply) => mentions(reply, b"IDMP"),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read XADD's documentation from the server; IDMP taken as absent");
            false
        }
    }
}

/// Whether any string in `value` (nested arrays and maps included) equals `word`, ignoring case.
fn mentions(value: Value, word: &[u8]) -> bool {
    match value {
        Value::Array(items) => items.into_iter().any(|v| mentions(v, word)),
        Value::Map(map) => {
            map.inner().into_iter().any(|(k, v)| k.as_bytes().eq_ignore_ascii_case(word) || mentions(v, word))
        }
        other => value_bytes(other).is_some_and(|b| b.eq_ignore_ascii_case(word)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_token_is_found_and_a_longer_one_is_not() {
        let docs = Value::Array(vec![
            Value::from("XADD"),
            Value::Array(vec![Value::from("arguments"), Value::Array(vec![Value::from("token"), Value::from("idmp")])]),
        ]);
        assert!(mentions(docs, b"IDMP"));
        let auto_only = Value::Array(vec![Value::from("IDMPAUTO")]);
        assert!(!mentions(auto_only, b"IDMP"));
    }
}
