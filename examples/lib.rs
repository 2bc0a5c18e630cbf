//! Shared bits of the streamx examples (see the files beside this one): logging, the
//! `Order` payload of the top-level examples, and the few lines every recipe's `main`
//! would otherwise repeat (reading its subcommand, exiting with a message, deleting its
//! keys). Each recipe (`examples/<recipe>.rs`) is otherwise a complete program: its
//! consumers are `#[stream_consumer]` functions, its start-up the runtime builder, and
//! `examples/tests/recipes.rs` runs it as processes against a throwaway Redis.

use std::process::ExitCode;

use fred::interfaces::{KeysInterface, SetsInterface};

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
    init_logging_at("info");
}

/// Logs to stderr, `RUST_LOG` style filtering (default `default`).
pub fn init_logging_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).init();
}

/// Why a recipe stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// A streamx call failed (Redis unreachable, a publish refused, ...).
    #[error(transparent)]
    Streamx(#[from] streamx::Error),
    /// The command line is not one the recipe knows.
    #[error("{0}")]
    Usage(String),
    /// A local resource (a file, the example's HTTP endpoint) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An entry could not be decoded or encoded.
    #[error("{what}: {source}")]
    Json {
        /// What was being decoded or encoded.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A Redis command the recipe sends itself (not through streamx) failed.
    #[error("{what}: {source}")]
    Redis {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: fred::error::Error,
    },
}

impl RecipeError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RecipeError {
        let what = what.into();
        move |source| RecipeError::Io { what, source }
    }

    /// A JSON error with what was being decoded or encoded.
    pub fn json(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> RecipeError {
        let what = what.into();
        move |source| RecipeError::Json { what, source }
    }
}

/// The command line after the program name: the subcommand (`default` when none is given)
/// and its arguments.
pub fn subcommand(default: &str) -> (String, Vec<String>) {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| default.to_string());
    (command, args.collect())
}

/// Whether `flag` (e.g. `--fixed`) is among `args`.
pub fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag)
}

/// The value after `option` (e.g. `--from 1700000000000`) among `args`.
pub fn option<'a>(args: &'a [String], option: &str) -> Option<&'a str> {
    args.iter().position(|a| a == option).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// The exit code of a recipe's `main`: 0, or 1 after printing the error (its `Display`, no
/// debug text) to stderr; 2 for a usage error.
pub fn exit(name: &str, result: Result<(), RecipeError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ RecipeError::Usage(_)) => {
            eprintln!("{name}: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Deletes every key streamx keeps for `stream` and its `groups` (the stream, its default
/// dead-letter stream, each group's retry schedule and bookkeeping), one `DEL` per stream (a
/// stream's keys share its hash slot, so this works on a cluster too). Prints and returns
/// how many keys existed.
///
/// The same by hand, for a stream `orders` and a group `billing`:
/// `redis-cli DEL orders {orders}:dlq {orders}:retries:billing {orders}:consumers:billing
/// {orders}:takeovers:billing {orders}:members:billing {orders}:replays:billing`, then
/// `redis-cli SREM streamx:streams orders`.
pub async fn delete_stream_keys(streams: &[(&str, &[&str])]) -> Result<u64, RecipeError> {
    let producer = streamx::Producer::from_env().await?;
    let mut deleted = 0;
    for (stream, groups) in streams {
        let dlq = streamx::keys::default_dead_letter_stream(stream);
        let mut keys = vec![stream.to_string(), dlq.clone()];
        for group in *groups {
            let derived = streamx::keys::KeyKind::all(group).map(|kind| streamx::keys::derived_key(stream, kind));
            keys.extend(derived);
        }
        keys.sort();
        keys.dedup();
        let n: u64 = producer
            .client()
            .del(keys)
            .await
            .map_err(|source| RecipeError::Redis { what: format!("deleting the keys of `{stream}`"), source })?;
        // And its name in the registry of stream names the tools read.
        let _: u64 = producer
            .client()
            .srem(streamx::keys::STREAM_NAMES, *stream)
            .await
            .map_err(|source| RecipeError::Redis { what: format!("forgetting `{stream}`"), source })?;
        println!("deleted `{stream}` and its streamx keys ({n} key(s))");
        deleted += n;
    }
    producer.close().await;
    Ok(deleted)
}
