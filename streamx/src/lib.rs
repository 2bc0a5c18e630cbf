#![doc = include_str!("../../README.md")]
//!
//! # Cargo features
#![doc = document_features::document_features!()]

pub use streamx_macros::stream_consumer;
pub use streamx_runtime::*;

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
