//! One module per group of commands.

pub mod dlq;
pub mod dlq_overview;
pub mod group;
pub mod inspect;
pub mod pause;
pub mod publish;
pub mod retries;
pub mod scheduled;
pub mod tail;
pub mod top;
pub mod topics;
