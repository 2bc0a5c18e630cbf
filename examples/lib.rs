//! Shared bits of the streamx examples (see the files beside this one), and the cores of
//! the recipes in [`recipes`]: each `examples/<recipe>.rs` binary runs one against the
//! local Redis, and `examples/tests/recipes.rs` runs each against a throwaway server.

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod recipes;

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
    /// Something the recipe waits for did not happen in time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// A local resource (a file, the example's HTTP endpoint) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The recipe's workload did not turn out as it must (a bug in the recipe or Redis
    /// state it did not expect).
    #[error("{0}")]
    Unexpected(String),
    /// An entry could not be decoded or encoded.
    #[error("{what}: {source}")]
    Json {
        /// What was being decoded or encoded.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
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

/// How long a recipe waits for its workload before giving up.
pub const RECIPE_LIMIT: Duration = Duration::from_secs(60);

/// Polls `check` every 10 ms until it returns true, for at most `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<(), RecipeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, RecipeError>>,
{
    let started = Instant::now();
    loop {
        if check().await? {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(RecipeError::Timeout { what: what.to_string(), waited: started.elapsed() });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every consumer of `running` has settled `n` messages (succeeded or
/// dead-lettered), from the runtime's own counters.
pub async fn wait_settled(running: &streamx::RunningRuntime, n: u64, what: &str) -> Result<(), RecipeError> {
    wait_until(RECIPE_LIMIT, what, || {
        let settled = running.stats_all().values().all(|s| s.succeeded + s.dead_lettered >= n);
        async move { Ok(settled) }
    })
    .await
}

/// The dead letters of `stream`'s consumers (its default dead-letter stream, `{stream}:dlq`).
pub async fn dead_letters_of(url: &str, stream: &str) -> Result<streamx::DeadLetters, RecipeError> {
    let dlq = streamx::keys::dead_letter_stream(stream, &streamx::DeadLetterTarget::Default)
        .ok_or_else(|| RecipeError::Unexpected(format!("no dead-letter stream for `{stream}`")))?;
    Ok(streamx::DeadLetters::connect(url, &dlq).await?)
}

/// The original payload of a dead letter, decoded as `T`.
pub fn letter_payload<T: serde::de::DeserializeOwned>(letter: &streamx::DeadLetter) -> Result<T, RecipeError> {
    let data = letter.payload.as_deref().unwrap_or_default();
    serde_json::from_slice(data).map_err(RecipeError::json(format!("the payload of dead letter {}", letter.id)))
}

/// `STREAMX_REDIS_URL`, else `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var(streamx::REDIS_URL_ENV).unwrap_or_else(|_| streamx::DEFAULT_REDIS_URL.to_string())
}

/// The prefix of the keys one run of recipe `name` writes (`recipes.<name>.<unix ms>`), so
/// every run starts from empty streams.
pub fn run_prefix(name: &str) -> String {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    format!("recipes.{name}.{ms}")
}

/// The `main` of a recipe example: runs `recipe(url, prefix)` against the local Redis,
/// prints its report, and exits 0, or prints the error and exits 1.
pub async fn run_example<R, F, Fut>(name: &str, recipe: F) -> ExitCode
where
    R: std::fmt::Display,
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = Result<R, RecipeError>>,
{
    init_logging_at("warn");
    let (url, prefix) = (redis_url(), run_prefix(name));
    println!("recipe `{name}` against {} (keys under `{prefix}`)", streamx::redact(&url));
    match recipe(url, prefix).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name} failed: {e}");
            ExitCode::FAILURE
        }
    }
}
