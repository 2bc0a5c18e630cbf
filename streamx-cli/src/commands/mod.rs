//! One module per group of commands.

pub mod dlq;
pub mod inspect;
pub mod publish;
pub mod tail;
pub mod top;
