//! Procedural macros for [streamx](https://docs.rs/streamx).
//!
//! Do not depend on this crate directly: use the `streamx` facade, which re-exports
//! [`macro@stream_consumer`] from its prelude together with the runtime items the generated
//! code refers to (`streamx::__private`).
//!
//! The crate is a thin shell: `args` parses and validates the attribute arguments,
//! `signature` checks the shape of the annotated function, and `expand` writes the
//! registration.

mod args;
mod expand;
mod periodic;
mod signature;

use proc_macro::TokenStream;

/// Registers an `async fn` as a consumer of a Redis stream through a consumer group.
///
/// ```
/// use streamx::prelude::*;
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// #[stream_consumer(stream = "orders", group = "billing", concurrency = 8)]
/// async fn charge(msg: Message<Order>) -> Result<(), HandlerError> {
///     println!("charging order {}", msg.payload().id);
///     Ok(())
/// }
///
/// #[stream_consumer(
///     stream = "orders",
///     group = "audit",
///     start = "new",
///     max_retries = 5,
///     backoff(initial = "500ms", max = "1m"),
///     dlq = "orders-audit-dead",
///     claim_idle = "5m",
///     timeout = "30s",
/// )]
/// async fn audit(_msg: Message<Order>) {}
/// ```
///
/// The function is emitted unchanged (it stays callable from your own tests); next to it
/// the macro adds a registration that `streamx::run()` picks up at startup.
///
/// # The function
///
/// It must be a free `async fn` without generics or `self`, taking exactly one argument
/// (`Message<T>` where `T: serde::de::DeserializeOwned`) and returning `()` or
/// `Result<(), E>` where `E` converts into `HandlerError` (any
/// `std::error::Error + Send + Sync + 'static`, `String`, `&str`). The argument and return
/// types are checked by trait bounds, so a wrong type is reported on the type itself with a
/// note saying what is accepted.
///
/// # Batch handlers
///
/// A function whose argument is written `Vec<...>` is a batch handler: it takes
/// `Vec<Message<T>>` and returns `()`, `Result<(), E>` (every message of the batch succeeds
/// or fails together), `BatchOutcome` (per message) or `Result<BatchOutcome, E>`. Each
/// message is still acknowledged, retried and dead-lettered on its own, with its own attempt
/// count; an entry that does not decode is dead-lettered alone and never reaches the
/// handler. `concurrency` counts calls; `max_batch` and `batch_wait` size the batches.
///
/// ```
/// use streamx::prelude::*;
/// use streamx::BatchOutcome;
///
/// #[derive(serde::Deserialize)]
/// struct Click { page: String }
///
/// #[stream_consumer(stream = "clicks", group = "warehouse", max_batch = 500, batch_wait = "200ms")]
/// async fn store(batch: Vec<Message<Click>>) -> BatchOutcome {
///     let mut outcome = BatchOutcome::new();
///     for msg in &batch {
///         if msg.payload().page.is_empty() {
///             outcome.fail(msg.id(), HandlerError::permanent("no page"));
///         }
///     }
///     outcome
/// }
/// ```
///
/// # Arguments
///
/// All values are literals, validated at compile time. A setting left out keeps the
/// runtime's default (listed here as of this version). The last column is the equivalent
/// call on the runtime's `Registration`/`Consumer` builder.
///
/// | key | value | default | builder call |
/// |---|---|---|---|
/// | `stream` | stream key, non-empty string (**required**) | — | `Registration::new(.., stream, ..)` |
/// | `group` | consumer group, non-empty string (**required**) | — | `Registration::new(.., group, ..)` |
/// | `consumer` | consumer name within the group | `<hostname>-<pid>-<n>` chosen by the runtime | `.consumer_name("x")` |
/// | `name` | registration name, used in logs and to detect duplicates | `module_path!()::fn_name` | `Registration::new(name, ..)` |
/// | `concurrency` | handlers running at once, integer `>= 1` | `1` | `.concurrency(n)` |
/// | `batch_size` | the `COUNT` of each `XREADGROUP` of each read loop (not shared by the readers), integer `>= 1` | chosen by the runtime | `.batch_size(n)` |
/// | `readers` | read loops, each on a connection of its own, integer `>= 1` (at most `concurrency`) | 1 below concurrency 8, 8 from 8 | `.readers(n)` |
/// | `block` | how long one `XREADGROUP` blocks, duration `> 0` | `"2s"` | `.block(Duration)` |
/// | `start` | where a newly created group starts: `"begin"`, `"new"` or an entry id such as `"1700000000000-0"` | `"begin"` | `.start(StartFrom::..)` |
/// | `max_retries` | retries after a failure before dead-lettering, integer `>= 0` | `3` | `.max_retries(n)` |
/// | `backoff(initial = "1s", multiplier = 2.0, max = "30s")` | delays between retries; each sub-key is optional and one left out keeps the runtime's default (`Backoff::DEFAULT`); `multiplier >= 1.0`, `max >= initial` (a single bound is checked at compile time against the runtime's default for the other) | `1s`, `2.0`, `30s` | `.backoff(Backoff::DEFAULT.with_multiplier(3.0))` |
/// | `dlq` | `true` (the stream's default dead-letter stream), `false` (drop after the last retry) or a stream name | `true` | `.dlq(DeadLetterTarget::..)` |
/// | `dlq_max_len` | the dead-letter stream's length cap: each dead letter written trims it to about this many letters, oldest first (`XTRIM MAXLEN ~`, with a warning and `streamx_dead_letters_trimmed_total`); an integer `>= 1`, or `"unbounded"` | `100000` | `.dlq_max_len(Some(n))` / `.dlq_max_len(None)` |
/// | `claim_idle` | how long this member promises to stay alive after each heartbeat (every `claim_idle / 3`); past it, its pending entries are claimed by the others, duration `> 0` | `"30s"` | `.claim_idle(Duration)` |
/// | `max_buffered_bytes` | byte budget of the entries fetched but not yet handled (waiting or running), a size `>= 1` byte | the runtime's: `"64MiB"` unless `RuntimeBuilder::max_buffered_bytes` changes it | `.max_buffered_bytes(n)` |
/// | `max_payload_bytes` | payloads larger than this are dead-lettered unread, a size `>= 1` byte | the runtime's: `"4MiB"` unless `RuntimeBuilder::max_payload_bytes` changes it | `.max_payload_bytes(n)` |
/// | `timeout` | a handler run longer than this is cancelled and counts as a failure of kind `timeout` (retried, then dead-lettered), duration `> 0` | none: handlers may run as long as they like | `.timeout(Duration)` |
/// | `max_batch` | batch handlers only: the most messages one call gets, integer `>= 1` | `100` | `.max_batch(n)` |
/// | `batch_wait` | batch handlers only: how long a batch waits to fill before its call starts, duration (`"0ms"` allowed) | `"50ms"` | `.batch_wait(Duration)` |
/// | `crate` | path to the `streamx` crate when it is renamed, e.g. `crate = my_streamx` | `::streamx` | — |
///
/// Durations use [humantime](https://docs.rs/humantime) syntax (`"500ms"`, `"2s"`,
/// `"1m 30s"`) and have millisecond resolution.
///
/// Sizes are an integer literal, in bytes (`1048576`), or a string of a whole number and a
/// unit, optionally separated by spaces: `B`, `kB`/`MB`/`GB` (powers of 1000) or
/// `KiB`/`MiB`/`GiB` (powers of 1024), case-sensitive: `"64MiB"`, `"512 KiB"`, `"100kB"`.
///
/// Every problem is reported at once, each on the offending token; the function is still
/// emitted so the rest of the crate keeps compiling.
#[proc_macro_attribute]
pub fn stream_consumer(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::stream_consumer(args.into(), item.into()).into()
}

/// Registers an `async fn` as a periodic job: at each tick of a cron schedule (UTC), its
/// result is published to a stream, **once per tick across every process running it**.
///
/// ```
/// use streamx::prelude::*;
///
/// #[derive(serde::Serialize)]
/// struct Report { at_ms: u64, orders: u64 }
///
/// #[periodic(cron = "0 */5 * * * *", stream = "reports")]
/// async fn report(tick: Tick) -> Result<Report, String> {
///     Ok(Report { at_ms: tick.unix_ms(), orders: 42 })
/// }
///
/// #[periodic(cron = "0 0 * * *", stream = "daily", name = "daily", catch_up = true)]
/// async fn daily() -> &'static str {
///     "a new day"
/// }
/// ```
///
/// The function is emitted unchanged; next to it the macro adds a registration that
/// `streamx::run()` picks up at startup (`RuntimeBuilder::periodic(PeriodicJob::new(..))` is
/// the equivalent by hand).
///
/// # The function
///
/// A free `async fn` without generics or `self`, taking nothing or the [`Tick`] (when it was
/// due), returning the payload (any `serde::Serialize`, published as JSON) or
/// `Result<T, E>` (`T: Serialize`, `E: Display`): an `Err` publishes nothing for the tick and
/// is logged. A return type written `Result<..>` (any path ending in `Result`) is the
/// fallible form. It runs in every process that finds the tick unpublished when it is due:
/// keep it cheap and free of side effects.
///
/// # Arguments
///
/// | key | value | default | builder call |
/// |---|---|---|---|
/// | `cron` | cron expression, checked at compile time: 5 fields (`min hour dom month dow`), 6 with seconds first, 7 with a year last; UTC (**required**) | — | `PeriodicJob::new(.., cron, ..)` |
/// | `stream` | the stream the ticks are published to, non-empty (**required**) | — | `PeriodicJob::new(.., stream, ..)` |
/// | `name` | the job's name: logs, metrics, `only`, its state key | `module_path!()::fn_name` | `PeriodicJob::new(name, ..)` |
/// | `catch_up` | publish ticks missed while no process ran (at most the latest 100), in order | `false` (skipped) | `.catch_up(true)` |
/// | `crate` | path to the `streamx` crate when it is renamed | `::streamx` | — |
///
/// [`Tick`]: https://docs.rs/streamx/latest/streamx/struct.Tick.html
#[proc_macro_attribute]
pub fn periodic(args: TokenStream, item: TokenStream) -> TokenStream {
    periodic::periodic(args.into(), item.into()).into()
}

/// Accumulates errors so that every problem is reported in one compilation.
///
/// Errors are merged with [`syn::Error::combine`]; each keeps its own span.
#[derive(Default)]
struct Errors {
    /// All errors pushed so far, combined into one.
    inner: Option<syn::Error>,
}

impl Errors {
    /// Records an error.
    fn push(&mut self, error: syn::Error) {
        match &mut self.inner {
            Some(inner) => inner.combine(error),
            None => self.inner = Some(error),
        }
    }

    /// Records the error of `result`, if any, and returns its value otherwise.
    fn record<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    /// `Ok(())` when nothing was recorded, else all recorded errors.
    fn finish(self) -> syn::Result<()> {
        self.inner.map_or(Ok(()), Err)
    }
}
