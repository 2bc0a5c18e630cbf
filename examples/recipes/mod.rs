//! The recipes: one module per use case, each a `run(url, prefix)` that performs a bounded
//! workload against Redis (streams named under `prefix`) and returns a report of what
//! happened. Consumers are built with [`streamx::Consumer::new`] (not the attribute) so
//! their stream names can be chosen at run time, and the library registers nothing that
//! another example's `streamx::run()` would pick up.

pub mod analytics;
pub mod audit_log;
pub mod dead_letters;
pub mod event_sourcing;
pub mod notifications;
pub mod order_workflow;
pub mod task_queue;
pub mod webhooks;
