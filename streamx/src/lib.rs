#![doc = include_str!("../../README.md")]
//!
//! # Cargo features
#![doc = document_features::document_features!()]

pub use streamx_macros::stream_consumer;
pub use streamx_runtime::*;

/// Throwaway `redis-server` processes (AOF, TLS) and local Redis Clusters for tests
/// (feature `testing`): the [`streamx_testing`] crate.
///
/// Enable it for tests only, in `[dev-dependencies]`:
/// `streamx = { version = "0.1", features = ["testing"] }`.
///
/// ```no_run
/// use streamx::testing::{unique_name, RedisServer};
///
/// # fn main() -> Result<(), streamx::testing::TestingError> {
/// let server = RedisServer::start()?;
/// let stream = unique_name("orders");
/// // Point the runtime under test at `server.url()` and use `stream` as its stream name.
/// # let _ = (server.url(), stream);
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "testing")]
pub mod testing {
    pub use streamx_testing::*;
}

/// The names most programs need: `use streamx::prelude::*;`.
pub mod prelude {
    pub use streamx_macros::stream_consumer;
    pub use streamx_runtime::{HandlerError, Headers, Message, MessageId, Producer, PublishOptions};
}

/// Not public API: what `#[stream_consumer]` expands to.
#[doc(hidden)]
pub mod __private {
    pub use streamx_runtime::__private::*;
}
