//! Shared bits of the streamx examples (see the files beside this one).

/// The order payload the examples publish and consume.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Order {
    /// Order number.
    pub id: u64,
    /// Amount to charge, in cents.
    pub amount_cents: i64,
}

/// Logs to stderr, `RUST_LOG` style filtering (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
}
