#![doc = include_str!("../../README.md")]
//!
//! # Cargo features
#![doc = document_features::document_features!()]

pub use streamx_macros::{periodic, stream_consumer};
pub use streamx_runtime::*;

/// Test support (feature `testing`): [`TestRuntime`](testing::TestRuntime) runs your
/// consumers against a throwaway `redis-server`; throwaway servers (AOF, TLS) and local
/// Redis Clusters for lower-level tests. The [`streamx_testing`] crate.
///
/// Enable it for tests only, in `[dev-dependencies]`:
/// `streamx = { version = "0.1", features = ["testing"] }`. See the README's "Testing"
/// section for a complete test file.
///
/// ```no_run
/// # #[derive(serde::Serialize)] struct Order { id: u64 }
/// # async fn demo() -> Result<(), streamx::testing::TestingError> {
/// use streamx::testing::TestRuntime;
///
/// let app = TestRuntime::start().await?; // every #[stream_consumer] of the test binary
/// app.publish("orders", &Order { id: 1 }).await?;
/// app.wait_until_handled(1).await?;
/// # Ok(()) }
/// ```
#[cfg(feature = "testing")]
pub mod testing {
    pub use streamx_testing::*;
}

/// The names most programs need: `use streamx::prelude::*;`.
pub mod prelude {
    pub use streamx_macros::{periodic, stream_consumer};
    pub use streamx_runtime::{HandlerError, Headers, Message, MessageId, Producer, PublishOptions, Tick};
}

/// Not public API: what `#[stream_consumer]` and `#[periodic]` expand to.
#[doc(hidden)]
pub mod __private {
    pub use streamx_runtime::__private::*;
}
