//! The expansion names nothing the user's crate can shadow, and passes strict lints.
#![deny(unused_qualifications, unused_imports, dead_code, missing_docs)]
#![forbid(unsafe_code)]

use streamx::prelude::*;

/// A payload.
#[derive(serde::Deserialize)]
pub struct Order {}

/// Shadows every std name a careless expansion might use.
#[allow(dead_code, non_upper_case_globals, unused_macros)]
pub mod shadowed {
    use ::streamx::prelude::*;

    use super::Order;

    /// Shadows `Result`.
    pub struct Result;
    /// Shadows `Option`.
    pub struct Option;
    /// Shadows `Some`.
    pub struct Some;
    /// Shadows `None`.
    pub struct None;
    /// Shadows `Ok`.
    pub struct Ok;
    /// Shadows `Err`.
    pub struct Err;
    /// Shadows `Box`.
    pub struct Box;
    /// Shadows `Vec`.
    pub struct Vec;
    /// Shadows `String`.
    pub struct String;
    /// Shadows `Send`.
    pub struct Send;
    /// Shadows `Sync`.
    pub struct Sync;
    /// Shadows `Fn`.
    pub struct Fn;
    /// Shadows `Duration`.
    pub struct Duration;
    /// Shadows `Registration`.
    pub struct Registration;
    /// Shadows `inventory`.
    pub mod inventory {}
    /// Shadows `core`.
    pub mod core {}
    /// Shadows `std`.
    pub mod std {}
    /// Shadows `streamx` (only `::streamx` is meant).
    pub mod streamx {}
    /// Shadows `delivery`, the trampoline's parameter.
    pub const delivery: () = ();

    macro_rules! concat {
        ($($t:tt)*) => {
            compile_error!("the expansion used a shadowed `concat!`")
        };
    }
    macro_rules! module_path {
        () => {
            compile_error!("the expansion used a shadowed `module_path!`")
        };
    }
    macro_rules! file {
        () => {
            compile_error!("the expansion used a shadowed `file!`")
        };
    }
    macro_rules! line {
        () => {
            compile_error!("the expansion used a shadowed `line!`")
        };
    }
    macro_rules! column {
        () => {
            compile_error!("the expansion used a shadowed `column!`")
        };
    }

    /// A handler living next to all of the above.
    #[stream_consumer(stream = "orders", group = "hygiene", block = "1s", backoff(), dlq = "d")]
    pub async fn charge(_msg: Message<Order>) -> ::core::result::Result<(), HandlerError> {
        ::core::result::Result::Ok(())
    }
}

/// A module without the std prelude.
#[no_implicit_prelude]
pub mod no_prelude {
    use ::streamx::prelude::*;

    use super::Order;

    /// A handler without the std prelude in scope.
    #[stream_consumer(stream = "orders", group = "no-prelude", concurrency = 2)]
    pub async fn charge(_msg: Message<Order>) -> ::core::result::Result<(), HandlerError> {
        ::core::result::Result::Ok(())
    }
}

/// A handler with a raw identifier for a name.
#[stream_consumer(stream = "orders", group = "raw")]
pub async fn r#match(_msg: Message<Order>) {}

fn main() {
    assert_eq!(streamx::registered().len(), 3);
}
