//! Parsing and validation of the `#[stream_consumer(...)]` arguments.
//!
//! The arguments are a comma-separated list of [`syn::Meta`]: `key = literal` pairs plus
//! the nested `backoff(...)` list. Every value is a typed literal and is validated here, at
//! compile time, so a mistake is reported on the token that caused it. All problems are
//! collected and returned together.

use std::fmt;
use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Expr, ExprLit, ExprUnary, Lit, LitStr, Meta, MetaNameValue, Path, Token, UnOp};

use crate::Errors;

/// The arguments of one `#[stream_consumer(...)]`, validated.
///
/// Optional settings are `None` when the user did not write them: the generated code then
/// leaves the runtime's default in place. The macro knows no default values, only the
/// ranges it validates.
pub(crate) struct ConsumerArgs {
    /// `crate = path`: where the `streamx` facade is; `None` means `::streamx`.
    pub(crate) krate: Option<Path>,
    /// `stream = "..."` (or `topic = "..."`): the stream key, or the topic's name.
    pub(crate) stream: LitStr,
    /// Whether the source was given as `topic = "..."`.
    pub(crate) topic: bool,
    /// `shards = n`, 1 to 1024 (topics only).
    pub(crate) shards: Option<Spanned<u32>>,
    /// `ordered = true | false`.
    pub(crate) ordered: Option<Spanned<bool>>,
    /// `group = "..."`: the consumer group.
    pub(crate) group: LitStr,
    /// `consumer = "..."`: the consumer name within the group.
    pub(crate) consumer: Option<LitStr>,
    /// `name = "..."`: the registration name.
    pub(crate) name: Option<LitStr>,
    /// `concurrency = n`, at least 1.
    pub(crate) concurrency: Option<Spanned<usize>>,
    /// `batch_size = n`, at least 1.
    pub(crate) batch_size: Option<Spanned<usize>>,
    /// `readers = n`, at least 1.
    pub(crate) readers: Option<Spanned<usize>>,
    /// `block = "2s"`, in whole milliseconds, at least 1.
    pub(crate) block: Option<Spanned<u64>>,
    /// `start = "begin" | "new" | "<id>"`.
    pub(crate) start: Option<Spanned<Start>>,
    /// `max_retries = n`.
    pub(crate) max_retries: Option<Spanned<u32>>,
    /// `backoff(...)`, with the sub-keys that were written.
    pub(crate) backoff: Option<Spanned<Backoff>>,
    /// `dlq = true | false | "stream"`.
    pub(crate) dlq: Option<Spanned<Dlq>>,
    /// `claim_idle = "30s"`, in whole milliseconds, at least 1.
    pub(crate) claim_idle: Option<Spanned<u64>>,
    /// `max_buffered_bytes = "64MiB"` (or a number of bytes), at least 1.
    pub(crate) max_buffered_bytes: Option<Spanned<usize>>,
    /// `max_payload_bytes = "4MiB"` (or a number of bytes), at least 1.
    pub(crate) max_payload_bytes: Option<Spanned<usize>>,
    /// `timeout = "30s"`, in whole milliseconds, at least 1.
    pub(crate) timeout: Option<Spanned<u64>>,
    /// `dedupe = "24h"`, in whole milliseconds, at least 1.
    pub(crate) dedupe: Option<Spanned<u64>>,
    /// `rate_limit = "500/s"`: `(max, period in ms)`, max at least 1, period 1 ms to 24 h.
    pub(crate) rate_limit: Option<Spanned<(u32, u64)>>,
    /// `dlq_max_len = n` (at least 1) or `dlq_max_len = "unbounded"` (`None`).
    pub(crate) dlq_max_len: Option<Spanned<Option<u64>>>,
    /// `max_batch = n`, at least 1 (batch handlers only).
    pub(crate) max_batch: Option<Spanned<usize>>,
    /// `batch_wait = "50ms"`, in whole milliseconds, zero allowed (batch handlers only).
    pub(crate) batch_wait: Option<Spanned<u64>>,
    /// `retention(max_len = n, max_age = "7d", drop_unread = false)`.
    pub(crate) retention: Option<Spanned<RetentionArgs>>,
    /// `delete_on_ack = true | false`.
    pub(crate) delete_on_ack: Option<Spanned<bool>>,
    /// `codec = "json" | "msgpack"`: the codec of entries without a `content-type` header.
    pub(crate) codec: Option<Spanned<CodecArg>>,
    /// `middleware = [path, ..]`: the consumer's middleware, outermost first.
    pub(crate) middleware: Option<Spanned<Vec<Path>>>,
}

/// The codec named by `codec = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodecArg {
    /// `"json"`
    Json,
    /// `"msgpack"` (feature `msgpack`)
    MsgPack,
}

/// How the stream is trimmed (`retention(...)`): each sub-key is `None` when left out; at
/// least one of `max_len` and `max_age` is given.
#[derive(Debug, Clone)]
pub(crate) struct RetentionArgs {
    /// `max_len`: entries kept (besides those a group needs); zero allowed.
    pub(crate) max_len: Option<Spanned<u64>>,
    /// `max_age`: in whole milliseconds, at least 1.
    pub(crate) max_age_ms: Option<Spanned<u64>>,
    /// `drop_unread`: trim entries groups still need too.
    pub(crate) drop_unread: Option<Spanned<bool>>,
}

/// A validated value together with the span of the literal it came from, so generated
/// code that uses it points back at the user's token.
#[derive(Debug, Clone)]
pub(crate) struct Spanned<T> {
    /// The validated value.
    pub(crate) value: T,
    /// Span of the literal (or list) the value was read from.
    pub(crate) span: Span,
}

impl<T> Spanned<T> {
    /// Pairs `value` with `span`.
    fn new(value: T, span: Span) -> Self {
        Self { value, span }
    }
}

/// Where a newly created consumer group starts reading (`start = ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    /// `"begin"`: the whole stream, from its first entry.
    Beginning,
    /// `"new"`: only entries added after the group is created.
    New,
    /// An explicit entry id, `<ms>` or `<ms>-<seq>`, kept as written.
    Id(String),
}

/// Retry delays (`backoff(...)`): each sub-key is `None` when it was left out, so the
/// runtime's default applies.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// `initial`: first delay, in milliseconds.
    pub(crate) initial_ms: Option<Spanned<u64>>,
    /// `multiplier`: growth factor between attempts; finite and at least 1.
    pub(crate) multiplier: Option<Spanned<f64>>,
    /// `max`: largest delay, in milliseconds; at least `initial_ms` when both are given.
    pub(crate) max_ms: Option<Spanned<u64>>,
}

/// What happens to an entry that exhausted its retries (`dlq = ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dlq {
    /// `true`: the runtime's default dead-letter stream.
    Default,
    /// `false`: no dead-letter stream.
    Disabled,
    /// `"name"`: this dead-letter stream.
    Stream(String),
}

/// The keys `#[stream_consumer(...)]` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// `stream = "..."`
    Stream,
    /// `topic = "..."`
    Topic,
    /// `shards = n`
    Shards,
    /// `ordered = bool`
    Ordered,
    /// `group = "..."`
    Group,
    /// `consumer = "..."`
    Consumer,
    /// `name = "..."`
    Name,
    /// `concurrency = n`
    Concurrency,
    /// `batch_size = n`
    BatchSize,
    /// `readers = n`
    Readers,
    /// `block = "..."`
    Block,
    /// `start = "..."`
    Start,
    /// `max_retries = n`
    MaxRetries,
    /// `backoff(...)`
    Backoff,
    /// `dlq = ...`
    Dlq,
    /// `claim_idle = "..."`
    ClaimIdle,
    /// `max_buffered_bytes = ...`
    MaxBufferedBytes,
    /// `max_payload_bytes = ...`
    MaxPayloadBytes,
    /// `timeout = "..."`
    Timeout,
    /// `dedupe = "..."`
    Dedupe,
    /// `dlq_max_len = n | "unbounded"`
    DlqMaxLen,
    /// `max_batch = n`
    MaxBatch,
    /// `batch_wait = "..."`
    BatchWait,
    /// `retention(...)`
    Retention,
    /// `delete_on_ack = bool`
    DeleteOnAck,
    /// `codec = "..."`
    Codec,
    /// `middleware = [path, ..]`
    Middleware,
    /// `rate_limit = "..."`
    RateLimit,
    /// `crate = path`
    Crate,
}

impl Key {
    /// Every key, in the order they are listed in error messages.
    const ALL: [Key; 29] = [
        Key::Stream,
        Key::Topic,
        Key::Shards,
        Key::Group,
        Key::Consumer,
        Key::Name,
        Key::Concurrency,
        Key::BatchSize,
        Key::Readers,
        Key::Block,
        Key::Start,
        Key::MaxRetries,
        Key::Backoff,
        Key::Dlq,
        Key::DlqMaxLen,
        Key::ClaimIdle,
        Key::MaxBufferedBytes,
        Key::MaxPayloadBytes,
        Key::Timeout,
        Key::Dedupe,
        Key::Ordered,
        Key::MaxBatch,
        Key::BatchWait,
        Key::Retention,
        Key::DeleteOnAck,
        Key::Codec,
        Key::Middleware,
        Key::RateLimit,
        Key::Crate,
    ];

    /// The key as written in the attribute.
    fn as_str(self) -> &'static str {
        match self {
            Key::Stream => "stream",
            Key::Topic => "topic",
            Key::Shards => "shards",
            Key::Ordered => "ordered",
            Key::Group => "group",
            Key::Consumer => "consumer",
            Key::Name => "name",
            Key::Concurrency => "concurrency",
            Key::BatchSize => "batch_size",
            Key::Readers => "readers",
            Key::Block => "block",
            Key::Start => "start",
            Key::MaxRetries => "max_retries",
            Key::Backoff => "backoff",
            Key::Dlq => "dlq",
            Key::ClaimIdle => "claim_idle",
            Key::MaxBufferedBytes => "max_buffered_bytes",
            Key::MaxPayloadBytes => "max_payload_bytes",
            Key::Timeout => "timeout",
            Key::Dedupe => "dedupe",
            Key::RateLimit => "rate_limit",
            Key::DlqMaxLen => "dlq_max_len",
            Key::MaxBatch => "max_batch",
            Key::BatchWait => "batch_wait",
            Key::Retention => "retention",
            Key::DeleteOnAck => "delete_on_ack",
            Key::Codec => "codec",
            Key::Middleware => "middleware",
            Key::Crate => "crate",
        }
    }

    /// An example of correct usage, quoted in error messages.
    fn example(self) -> &'static str {
        match self {
            Key::Stream => "stream = \"orders\"",
            Key::Topic => "topic = \"orders\"",
            Key::Shards => "shards = 16",
            Key::Ordered => "ordered = true",
            Key::Group => "group = \"billing\"",
            Key::Consumer => "consumer = \"worker-1\"",
            Key::Name => "name = \"billing::charge\"",
            Key::Concurrency => "concurrency = 8",
            Key::BatchSize => "batch_size = 100",
            Key::Readers => "readers = 2",
            Key::Block => "block = \"2s\"",
            Key::Start => "start = \"begin\"",
            Key::MaxRetries => "max_retries = 5",
            Key::Backoff => "backoff(initial = \"1s\", multiplier = 2.0, max = \"30s\")",
            Key::Dlq => "dlq = true",
            Key::ClaimIdle => "claim_idle = \"30s\"",
            Key::MaxBufferedBytes => "max_buffered_bytes = \"64MiB\"",
            Key::MaxPayloadBytes => "max_payload_bytes = \"4MiB\"",
            Key::Timeout => "timeout = \"30s\"",
            Key::Dedupe => "dedupe = \"24h\"",
            Key::RateLimit => "rate_limit = \"500/s\"",
            Key::DlqMaxLen => "dlq_max_len = 10000",
            Key::MaxBatch => "max_batch = 500",
            Key::BatchWait => "batch_wait = \"50ms\"",
            Key::Retention => "retention(max_len = 1000000, max_age = \"7d\")",
            Key::DeleteOnAck => "delete_on_ack = true",
            Key::Codec => "codec = \"msgpack\"",
            Key::Middleware => "middleware = [audit, tenant::require]",
            Key::Crate => "crate = my_streamx",
        }
    }

    /// Looks a key up by the path written before `=` or `(`.
    fn from_path(path: &Path) -> Option<Key> {
        let ident = path.get_ident()?;
        Key::ALL.into_iter().find(|key| ident == key.as_str())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses the tokens inside `#[stream_consumer(...)]`.
pub(crate) fn parse(args: TokenStream) -> syn::Result<ConsumerArgs> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
    ConsumerArgs::from_metas(metas)
}

impl ConsumerArgs {
    /// Validates already-split arguments, reporting every problem at once.
    pub(crate) fn from_metas(metas: Punctuated<Meta, Token![,]>) -> syn::Result<Self> {
        let mut errors = Errors::default();
        let mut seen: Vec<Key> = Vec::new();
        let mut krate = None;
        let mut stream = None;
        let mut topic = None;
        let mut shards = None;
        let mut ordered = None;
        let mut group = None;
        let mut consumer = None;
        let mut name = None;
        let mut concurrency = None;
        let mut batch_size = None;
        let mut readers = None;
        let mut block = None;
        let mut start = None;
        let mut max_retries = None;
        let mut backoff = None;
        let mut dlq = None;
        let mut claim_idle = None;
        let mut max_buffered_bytes = None;
        let mut max_payload_bytes = None;
        let mut timeout = None;
        let mut dedupe = None;
        let mut rate_limit = None;
        let mut dlq_max_len = None;
        let mut max_batch = None;
        let mut batch_wait = None;
        let mut retention = None;
        let mut delete_on_ack = None;
        let mut codec = None;
        let mut middleware = None;

        for meta in &metas {
            let path = meta.path();
            let Some(key) = Key::from_path(path) else {
                errors.push(unknown_key(path, &Key::ALL.map(Key::as_str)));
                continue;
            };
            if seen.contains(&key) {
                errors.push(syn::Error::new_spanned(path, format!("duplicate argument `{key}`")));
                continue;
            }
            seen.push(key);

            if key == Key::Backoff {
                backoff = errors.record(parse_backoff(meta));
                continue;
            }
            if key == Key::Retention {
                retention = errors.record(parse_retention(meta));
                continue;
            }
            let Some(value) = errors.record(name_value(meta, key)) else {
                continue;
            };
            match key {
                Key::Stream => stream = errors.record(non_empty_str(value, key)),
                Key::Topic => topic = errors.record(topic_name(value)),
                Key::Shards => shards = errors.record(shard_count(value)),
                Key::Ordered => ordered = errors.record(boolean(value, key)),
                Key::Group => group = errors.record(non_empty_str(value, key)),
                Key::Consumer => consumer = errors.record(non_empty_str(value, key)),
                Key::Name => name = errors.record(non_empty_str(value, key)),
                Key::Concurrency => concurrency = errors.record(positive_usize(value, key)),
                Key::BatchSize => batch_size = errors.record(positive_usize(value, key)),
                Key::Readers => readers = errors.record(positive_usize(value, key)),
                Key::Block => block = errors.record(duration_ms(value, key, false)),
                Key::Start => start = errors.record(parse_start(value)),
                Key::MaxRetries => max_retries = errors.record(int::<u32>(value, key)),
                Key::Dlq => dlq = errors.record(parse_dlq(value)),
                Key::ClaimIdle => claim_idle = errors.record(duration_ms(value, key, false)),
                Key::MaxBufferedBytes => max_buffered_bytes = errors.record(size_bytes(value, key)),
                Key::MaxPayloadBytes => max_payload_bytes = errors.record(size_bytes(value, key)),
                Key::Timeout => timeout = errors.record(duration_ms(value, key, false)),
                Key::Dedupe => dedupe = errors.record(duration_ms(value, key, false)),
                Key::RateLimit => rate_limit = errors.record(parse_rate_limit(value)),
                Key::DlqMaxLen => dlq_max_len = errors.record(parse_dlq_max_len(value)),
                Key::MaxBatch => max_batch = errors.record(positive_usize(value, key)),
                Key::BatchWait => batch_wait = errors.record(duration_ms(value, key, true)),
                Key::DeleteOnAck => delete_on_ack = errors.record(boolean(value, key)),
                Key::Codec => codec = errors.record(parse_codec(value)),
                Key::Middleware => middleware = errors.record(parse_middleware(value)),
                Key::Crate => krate = errors.record(parse_crate(value)),
                Key::Backoff | Key::Retention => {}
            }
        }

        if seen.contains(&Key::Stream) && seen.contains(&Key::Topic) {
            if let Some(topic) = &topic {
                errors.push(syn::Error::new(
                    topic.span(),
                    "`stream` and `topic` are exclusive: a consumer reads one stream or one sharded topic",
                ));
            }
        }
        if let (Some(shards), false) = (&shards, seen.contains(&Key::Topic)) {
            errors.push(syn::Error::new(shards.span, "`shards` applies to a topic only: add `topic = \"...\"`"));
        }
        if !seen.contains(&Key::Stream) && !seen.contains(&Key::Topic) {
            errors.push(syn::Error::new(
                Span::call_site(),
                "missing required argument `stream` (or `topic`), e.g. `#[stream_consumer(stream = \"orders\")]`",
            ));
        }
        if !seen.contains(&Key::Group) {
            errors.push(syn::Error::new(
                Span::call_site(),
                format!("missing required argument `group`, e.g. `#[stream_consumer({})]`", Key::Group.example()),
            ));
        }

        errors.finish()?;
        let is_topic = topic.is_some();
        match (stream.or(topic), group) {
            (Some(stream), Some(group)) => Ok(ConsumerArgs {
                krate,
                stream,
                topic: is_topic,
                shards,
                ordered,
                group,
                consumer,
                name,
                concurrency,
                batch_size,
                readers,
                block,
                start,
                max_retries,
                backoff,
                dlq,
                claim_idle,
                max_buffered_bytes,
                max_payload_bytes,
                timeout,
                dedupe,
                rate_limit,
                dlq_max_len,
                max_batch,
                batch_wait,
                retention,
                delete_on_ack,
                codec,
                middleware,
            }),
            // Unreachable: a missing or invalid `stream`/`group` has recorded an error above.
            _ => Err(syn::Error::new(Span::call_site(), "`stream` and `group` are required")),
        }
    }
}

/// `topic = "..."`: a non-empty name without braces (a hash tag would put every shard in
/// one slot).
fn topic_name(value: &Expr) -> syn::Result<LitStr> {
    let name = non_empty_str(value, Key::Topic)?;
    if name.value().contains(['{', '}']) {
        return Err(syn::Error::new(
            name.span(),
            "a topic name may not contain `{` or `}`: its shards must hash to different slots",
        ));
    }
    Ok(name)
}

/// `shards = n`, from 1 to 1024.
fn shard_count(value: &Expr) -> syn::Result<Spanned<u32>> {
    let n = int::<u32>(value, Key::Shards)?;
    if n.value == 0 || n.value > 1024 {
        return Err(syn::Error::new(n.span, format!("`shards` must be from 1 to 1024, not {}", n.value)));
    }
    Ok(n)
}

/// The error for a key that is not in `allowed`, listing every allowed key.
pub(crate) fn unknown_key(path: &Path, allowed: &[&str]) -> syn::Error {
    let written = path.segments.iter().map(|segment| segment.ident.to_string()).collect::<Vec<_>>().join("::");
    let list = allowed.iter().map(|key| format!("`{key}`")).collect::<Vec<_>>().join(", ");
    syn::Error::new_spanned(path, format!("unknown argument `{written}`; expected one of: {list}"))
}

/// The value of a `key = value` argument, or an error showing the expected form.
fn name_value(meta: &Meta, key: Key) -> syn::Result<&Expr> {
    match meta {
        Meta::NameValue(MetaNameValue { value, .. }) => Ok(strip_groups(value)),
        _ => Err(syn::Error::new_spanned(meta, format!("expected `{}`", key.example()))),
    }
}

/// Looks through invisible groups, which appear when a `macro_rules!` macro passes a
/// `$value:expr` or `$value:literal` on to this attribute.
pub(crate) fn strip_groups(mut expr: &Expr) -> &Expr {
    while let Expr::Group(group) = expr {
        expr = &group.expr;
    }
    expr
}

/// The literal of `expr`, if it is one.
pub(crate) fn literal(expr: &Expr) -> Option<&Lit> {
    match expr {
        Expr::Lit(ExprLit { lit, attrs }) if attrs.is_empty() => Some(lit),
        _ => None,
    }
}

/// A string literal.
fn string(value: &Expr, key: Key) -> syn::Result<LitStr> {
    match literal(value) {
        Some(Lit::Str(lit)) => Ok(lit.clone()),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("expected string literal for `{key}`, e.g. `{}`", key.example()),
        )),
    }
}

/// A string literal that is not empty.
fn non_empty_str(value: &Expr, key: Key) -> syn::Result<LitStr> {
    let lit = string(value, key)?;
    if lit.value().is_empty() {
        return Err(syn::Error::new(lit.span(), format!("`{key}` must not be empty")));
    }
    Ok(lit)
}

/// An integer literal of type `N`, unsuffixed or with `N`'s own suffix.
fn int<N>(value: &Expr, key: Key) -> syn::Result<Spanned<N>>
where
    N: std::str::FromStr,
    N::Err: fmt::Display,
{
    let Some(Lit::Int(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            format!("expected integer literal for `{key}`, e.g. `{}`", key.example()),
        ));
    };
    let ty = std::any::type_name::<N>();
    if !lit.suffix().is_empty() && lit.suffix() != ty {
        return Err(syn::Error::new(lit.span(), format!("`{key}` is a `{ty}`; remove the `{}` suffix", lit.suffix())));
    }
    let parsed =
        lit.base10_parse::<N>().map_err(|error| syn::Error::new(lit.span(), format!("invalid `{key}`: {error}")))?;
    Ok(Spanned::new(parsed, lit.span()))
}

/// An integer literal of type `usize` that is at least 1.
fn positive_usize(value: &Expr, key: Key) -> syn::Result<Spanned<usize>> {
    let parsed = int::<usize>(value, key)?;
    if parsed.value == 0 {
        return Err(syn::Error::new(parsed.span, format!("`{key}` must be at least 1")));
    }
    Ok(parsed)
}

/// `rate_limit = "500/s"`: `<count>/<period>`, the period a unit (`s`, `min`/`m`, `h`/`hour`)
/// or a duration (`"500ms"`, `"2s"`), 1 ms to 24 h in whole milliseconds; the count at
/// least 1. The runtime's `RateLimit::from_str` reads the same texts.
fn parse_rate_limit(value: &Expr) -> syn::Result<Spanned<(u32, u64)>> {
    let lit = string(value, Key::RateLimit)?;
    let text = lit.value();
    let fail = |why: String| syn::Error::new(lit.span(), format!("invalid rate limit {text:?}: {why}"));
    let (count, period) = text.split_once('/').ok_or_else(|| {
        fail("expected `<count>/<period>`, e.g. \"500/s\", \"30/min\", \"1000/h\" or \"10/500ms\"".into())
    })?;
    let max: u32 =
        count.trim().parse().map_err(|_| fail(format!("the count `{}` is not a whole number", count.trim())))?;
    if max == 0 {
        return Err(fail("the count must be at least 1 (leave `rate_limit` out for none)".into()));
    }
    let period = period.trim();
    let ms = match period {
        "s" | "sec" | "second" => 1_000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        other => humantime::parse_duration(other)
            .ok()
            .filter(|d| d.subsec_nanos() % 1_000_000 == 0)
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .unwrap_or(0),
    };
    if !(1..=86_400_000).contains(&ms) {
        return Err(fail(format!(
            "the period `{period}` is not one of s, min (or m), h (or hour) or a duration such as \"500ms\", \
             between 1ms and 24h in whole milliseconds"
        )));
    }
    Ok(Spanned::new((max, ms), lit.span()))
}

/// A duration string such as `"2s"`, in whole milliseconds.
fn duration_ms(value: &Expr, key: Key, allow_zero: bool) -> syn::Result<Spanned<u64>> {
    let lit = string(value, key)?;
    let ms = lit_duration_ms(&lit, key.as_str(), allow_zero)?;
    Ok(Spanned::new(ms, lit.span()))
}

/// Parses a duration literal with `humantime`, in whole milliseconds. `what` names the
/// setting in error messages.
fn lit_duration_ms(lit: &LitStr, what: &str, allow_zero: bool) -> syn::Result<u64> {
    let text = lit.value();
    let duration = humantime::parse_duration(&text).map_err(|error| {
        syn::Error::new(
            lit.span(),
            format!(
                "invalid duration {text:?} for `{what}`: {error}; \
                 expected e.g. \"500ms\", \"2s\" or \"1m 30s\""
            ),
        )
    })?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "`{what}` has millisecond resolution, but {text:?} is not a whole number \
                 of milliseconds"
            ),
        ));
    }
    let ms = u64::try_from(duration.as_millis()).map_err(|_| {
        syn::Error::new(lit.span(), format!("`{what}` = {text:?} is too large: at most u64::MAX milliseconds"))
    })?;
    if ms == 0 && !allow_zero {
        return Err(syn::Error::new(lit.span(), format!("`{what}` must be greater than zero")));
    }
    Ok(ms)
}

/// A size in bytes, at least 1: an integer literal (`67108864`) or a string with a unit
/// (`"64MiB"`, `"512 KiB"`, `"100kB"`, `"123B"`).
fn size_bytes(value: &Expr, key: Key) -> syn::Result<Spanned<usize>> {
    let at_least_one = format!("`{key}` must be at least 1 byte");
    if is_negative_number(value) {
        return Err(syn::Error::new_spanned(value, at_least_one));
    }
    let parsed = match literal(value) {
        Some(Lit::Int(_)) => int::<usize>(value, key)?,
        Some(Lit::Str(lit)) => {
            let text = lit.value();
            let bytes = parse_size(&text).map_err(|error| {
                let message = match error {
                    SizeError::TooLarge => format!("`{key}` = {text:?} is {error}"),
                    error => format!("invalid size {text:?} for `{key}`: {error}"),
                };
                syn::Error::new(lit.span(), message)
            })?;
            Spanned::new(bytes, lit.span())
        }
        _ => {
            return Err(syn::Error::new_spanned(
                value,
                format!(
                    "expected a size like \"64MiB\" or a number of bytes for `{key}`, e.g. `{}` \
                     or `{key} = 1048576`",
                    key.example()
                ),
            ))
        }
    };
    if parsed.value == 0 {
        return Err(syn::Error::new(parsed.span, at_least_one));
    }
    Ok(parsed)
}

/// Whether `expr` is a negative integer or float: a negation of a literal, or the single
/// negative literal syn makes of `-1` in some token streams.
fn is_negative_number(expr: &Expr) -> bool {
    match expr {
        Expr::Unary(ExprUnary { op: UnOp::Neg(_), expr, attrs }) if attrs.is_empty() => {
            matches!(literal(strip_groups(expr)), Some(Lit::Int(_) | Lit::Float(_)))
        }
        _ => match literal(expr) {
            Some(Lit::Int(lit)) => lit.base10_digits().starts_with('-'),
            Some(Lit::Float(lit)) => lit.base10_digits().starts_with('-'),
            _ => false,
        },
    }
}

/// The units of a size string, case-sensitive, with their value in bytes.
const SIZE_UNITS: [(&str, u64); 7] = [
    ("B", 1),
    ("kB", 1000),
    ("MB", 1000 * 1000),
    ("GB", 1000 * 1000 * 1000),
    ("KiB", 1024),
    ("MiB", 1024 * 1024),
    ("GiB", 1024 * 1024 * 1024),
];

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SizeError {
    /// It does not start with a digit (empty, a sign, leading whitespace, a unit alone).
    NoNumber,
    /// The number has a fractional part.
    Fraction,
    /// A number without a unit.
    MissingUnit,
    /// A unit that is not in [`SIZE_UNITS`], as written.
    UnknownUnit(String),
    /// More than `usize::MAX` bytes.
    TooLarge,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = SIZE_UNITS.map(|(unit, _)| unit).join(", ");
        match self {
            SizeError::NoNumber => f.write_str("expected a size like \"64MiB\" or a number of bytes"),
            SizeError::Fraction => {
                f.write_str("sizes are whole numbers; use a smaller unit, e.g. \"1536KiB\" instead of \"1.5MiB\"")
            }
            SizeError::MissingUnit => {
                write!(f, "missing unit (one of {units}); for a number of bytes, remove the quotes")
            }
            SizeError::UnknownUnit(unit) => {
                // A unit in the wrong case, or without the `i` of a binary one: "KB", "mib".
                let near = SIZE_UNITS
                    .iter()
                    .filter(|(known, _)| {
                        known.eq_ignore_ascii_case(unit) || known.replace('i', "").eq_ignore_ascii_case(unit)
                    })
                    .map(|(known, bytes)| format!("{known:?} ({bytes} bytes)"))
                    .collect::<Vec<_>>();
                if near.is_empty() {
                    write!(f, "unknown unit {unit:?}; expected one of {units}")
                } else {
                    write!(f, "unknown unit {unit:?}; units are case-sensitive, did you mean {}?", near.join(" or "))
                }
            }
            SizeError::TooLarge => f.write_str("too large: at most usize::MAX bytes"),
        }
    }
}

/// Parses `<digits>[whitespace]<unit>`, e.g. `"64MiB"` or `"100 kB"`, into bytes. Zero is
/// returned as is; the caller rejects it.
fn parse_size(text: &str) -> Result<usize, SizeError> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, rest) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::NoNumber);
    }
    if rest.starts_with(['.', ',']) {
        return Err(SizeError::Fraction);
    }
    let unit = rest.trim_start();
    if unit.is_empty() {
        return Err(SizeError::MissingUnit);
    }
    let Some(&(_, factor)) = SIZE_UNITS.iter().find(|(known, _)| *known == unit) else {
        return Err(SizeError::UnknownUnit(unit.to_owned()));
    };
    let number = digits.parse::<u64>().map_err(|_| SizeError::TooLarge)?;
    let bytes = number.checked_mul(factor).ok_or(SizeError::TooLarge)?;
    usize::try_from(bytes).map_err(|_| SizeError::TooLarge)
}

/// `codec = "json" | "msgpack"`; `"msgpack"` only with the `msgpack` feature (which the
/// facade's feature of that name turns on), else an error naming the feature.
fn parse_codec(value: &Expr) -> syn::Result<Spanned<CodecArg>> {
    let lit = string(value, Key::Codec)?;
    let codec = match lit.value().as_str() {
        "json" => CodecArg::Json,
        "msgpack" if cfg!(feature = "msgpack") => CodecArg::MsgPack,
        "msgpack" => {
            return Err(syn::Error::new(
                lit.span(),
                "`codec = \"msgpack\"` needs streamx's `msgpack` feature: \
                 streamx = { version = \"...\", features = [\"msgpack\"] }",
            ))
        }
        other => {
            return Err(syn::Error::new(
                lit.span(),
                format!("unknown `codec` {other:?}; expected \"json\" (the default) or \"msgpack\""),
            ))
        }
    };
    Ok(Spanned::new(codec, lit.span()))
}

/// `middleware = [path, ..]`: each item a path to a middleware value or fn (its type is
/// checked by the generated code); every item that is not a path is reported.
fn parse_middleware(value: &Expr) -> syn::Result<Spanned<Vec<Path>>> {
    let Expr::Array(array) = value else {
        return Err(syn::Error::new_spanned(
            value,
            format!("expected a list of paths for `middleware`, e.g. `{}`", Key::Middleware.example()),
        ));
    };
    let mut paths = Vec::new();
    let mut errors: Option<syn::Error> = None;
    for item in &array.elems {
        match strip_groups(item) {
            Expr::Path(expr) if expr.attrs.is_empty() && expr.qself.is_none() => paths.push(expr.path.clone()),
            other => {
                let error = syn::Error::new_spanned(
                    other,
                    "expected a path to a middleware (an async fn `(Delivery, Next) -> Outcome`, or a const or \
                     static of a type implementing `streamx::Middleware`)",
                );
                match &mut errors {
                    Some(all) => all.combine(error),
                    None => errors = Some(error),
                }
            }
        }
    }
    match errors {
        Some(errors) => Err(errors),
        None => Ok(Spanned::new(paths, array.span())),
    }
}

/// `start = "begin" | "new" | "<ms>" | "<ms>-<seq>"`.
fn parse_start(value: &Expr) -> syn::Result<Spanned<Start>> {
    let lit = string(value, Key::Start)?;
    let text = lit.value();
    let start = match text.as_str() {
        "begin" => Start::Beginning,
        "new" => Start::New,
        id if is_entry_id(id) => Start::Id(text.clone()),
        _ => {
            return Err(syn::Error::new(
                lit.span(),
                format!(
                    "invalid `start` value {text:?}; expected \"begin\" (the whole stream), \
                     \"new\" (only entries added after the group is created), or an entry id \
                     like \"1700000000000-0\" or \"1700000000000\""
                ),
            ))
        }
    };
    Ok(Spanned::new(start, lit.span()))
}

/// Whether `id` is a Redis stream entry id: `<ms>` or `<ms>-<seq>`, each a `u64`.
fn is_entry_id(id: &str) -> bool {
    let is_u64 =
        |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) && part.parse::<u64>().is_ok();
    match id.split_once('-') {
        Some((ms, seq)) => is_u64(ms) && is_u64(seq),
        None => is_u64(id),
    }
}

/// `dlq = true | false | "stream"`.
fn parse_dlq(value: &Expr) -> syn::Result<Spanned<Dlq>> {
    match literal(value) {
        Some(Lit::Bool(lit)) => Ok(Spanned::new(if lit.value { Dlq::Default } else { Dlq::Disabled }, lit.span)),
        Some(Lit::Str(lit)) if lit.value().is_empty() => Err(syn::Error::new(
            lit.span(),
            "`dlq` stream name must not be empty; use `dlq = false` to disable dead-lettering",
        )),
        Some(Lit::Str(lit)) => Ok(Spanned::new(Dlq::Stream(lit.value()), lit.span())),
        _ => Err(syn::Error::new_spanned(
            value,
            "expected `true`, `false` or a stream name string literal for `dlq`, \
             e.g. `dlq = true` or `dlq = \"orders-dead\"`",
        )),
    }
}

/// `dlq_max_len = n` (at least 1) or `dlq_max_len = "unbounded"`.
fn parse_dlq_max_len(value: &Expr) -> syn::Result<Spanned<Option<u64>>> {
    let key = Key::DlqMaxLen;
    match literal(value) {
        Some(Lit::Int(_)) => {
            let len = int::<u64>(value, key)?;
            if len.value == 0 {
                return Err(syn::Error::new(
                    len.span,
                    "`dlq_max_len` must be at least 1; use `dlq_max_len = \"unbounded\"` to keep every dead letter",
                ));
            }
            Ok(Spanned::new(Some(len.value), len.span))
        }
        Some(Lit::Str(lit)) if lit.value() == "unbounded" => Ok(Spanned::new(None, lit.span())),
        _ => Err(syn::Error::new_spanned(
            value,
            "expected a number of dead letters (at least 1) or \"unbounded\" for `dlq_max_len`, \
             e.g. `dlq_max_len = 10000`",
        )),
    }
}

/// `crate = path` (or `crate = "path"`, as serde and tokio accept).
pub(crate) fn parse_crate(value: &Expr) -> syn::Result<Path> {
    match value {
        Expr::Path(expr) if expr.attrs.is_empty() && expr.qself.is_none() => Ok(expr.path.clone()),
        Expr::Lit(ExprLit { lit: Lit::Str(lit), attrs }) if attrs.is_empty() => lit.parse::<Path>().map_err(|error| {
            syn::Error::new(lit.span(), format!("`crate` must be a path such as `my_streamx`: {error}"))
        }),
        _ => Err(syn::Error::new_spanned(value, "expected a path for `crate`, e.g. `crate = my_streamx`")),
    }
}

/// A `true` / `false` literal.
fn boolean(value: &Expr, key: Key) -> syn::Result<Spanned<bool>> {
    match literal(value) {
        Some(Lit::Bool(lit)) => Ok(Spanned::new(lit.value, lit.span)),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("expected `true` or `false` for `{key}`, e.g. `{}`", key.example()),
        )),
    }
}

/// The sub-keys of `retention(...)`.
const RETENTION_KEYS: [&str; 3] = ["max_len", "max_age", "drop_unread"];

/// `retention(max_len = 1000000, max_age = "7d", drop_unread = false)`: each sub-key
/// optional, but one of `max_len` and `max_age` is required (a retention without a bound
/// trims nothing).
fn parse_retention(meta: &Meta) -> syn::Result<Spanned<RetentionArgs>> {
    let Meta::List(list) = meta else {
        return Err(syn::Error::new_spanned(meta, format!("expected `{}`", Key::Retention.example())));
    };
    let entries = list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)?;
    let mut errors = Errors::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut out = RetentionArgs { max_len: None, max_age_ms: None, drop_unread: None };
    for entry in &entries {
        let path = entry.path();
        let Some(key) = RETENTION_KEYS.into_iter().find(|key| path.get_ident().is_some_and(|ident| ident == key))
        else {
            errors.push(unknown_key(path, &RETENTION_KEYS).with_context("in `retention(...)`"));
            continue;
        };
        if seen.contains(&key) {
            errors.push(syn::Error::new_spanned(path, format!("duplicate `{key}` in `retention(...)`")));
            continue;
        }
        seen.push(key);
        let Meta::NameValue(MetaNameValue { value, .. }) = entry else {
            errors.push(syn::Error::new_spanned(entry, format!("expected `{key} = ...` in `retention(...)`")));
            continue;
        };
        let value = strip_groups(value);
        match key {
            "max_len" if is_negative_number(value) => {
                errors.push(syn::Error::new_spanned(value, "retention `max_len` is a number of entries: 0 or more"))
            }
            "max_len" => {
                out.max_len = errors.record(match literal(value) {
                    Some(Lit::Int(lit)) if lit.suffix().is_empty() || lit.suffix() == "u64" => lit
                        .base10_parse::<u64>()
                        .map(|n| Spanned::new(n, lit.span()))
                        .map_err(|e| syn::Error::new(lit.span(), format!("invalid retention `max_len`: {e}"))),
                    _ => Err(syn::Error::new_spanned(
                        value,
                        "expected integer literal for retention `max_len`, e.g. `max_len = 1000000`",
                    )),
                })
            }
            "max_age" => {
                out.max_age_ms = errors.record(match literal(value) {
                    Some(Lit::Str(lit)) => {
                        lit_duration_ms(lit, "retention max_age", false).map(|ms| Spanned::new(ms, lit.span()))
                    }
                    _ => Err(syn::Error::new_spanned(
                        value,
                        "expected duration string literal for retention `max_age`, e.g. `max_age = \"7d\"`",
                    )),
                })
            }
            _ => {
                out.drop_unread = errors.record(match literal(value) {
                    Some(Lit::Bool(lit)) => Ok(Spanned::new(lit.value, lit.span)),
                    _ => Err(syn::Error::new_spanned(
                        value,
                        "expected `true` or `false` for retention `drop_unread`, e.g. `drop_unread = true`",
                    )),
                })
            }
        }
    }
    errors.finish()?;
    if out.max_len.is_none() && out.max_age_ms.is_none() {
        return Err(syn::Error::new_spanned(
            list,
            format!("`retention(...)` needs `max_len` or `max_age` (or both), e.g. `{}`", Key::Retention.example()),
        ));
    }
    Ok(Spanned::new(out, list.path.span()))
}

/// The sub-keys of `backoff(...)`.
const BACKOFF_KEYS: [&str; 3] = ["initial", "multiplier", "max"];

/// `backoff(initial = "1s", multiplier = 2.0, max = "30s")`, each sub-key optional.
fn parse_backoff(meta: &Meta) -> syn::Result<Spanned<Backoff>> {
    let Meta::List(list) = meta else {
        return Err(syn::Error::new_spanned(meta, format!("expected `{}`", Key::Backoff.example())));
    };
    let entries = list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)?;
    let mut errors = Errors::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut initial: Option<Spanned<u64>> = None;
    let mut multiplier: Option<Spanned<f64>> = None;
    let mut max: Option<Spanned<u64>> = None;

    for entry in &entries {
        let path = entry.path();
        let Some(key) = BACKOFF_KEYS.into_iter().find(|key| path.get_ident().is_some_and(|ident| ident == key)) else {
            errors.push(unknown_key(path, &BACKOFF_KEYS).with_context("in `backoff(...)`"));
            continue;
        };
        if seen.contains(&key) {
            errors.push(syn::Error::new_spanned(path, format!("duplicate `{key}` in `backoff(...)`")));
            continue;
        }
        seen.push(key);
        let Meta::NameValue(MetaNameValue { value, .. }) = entry else {
            errors.push(syn::Error::new_spanned(entry, format!("expected `{key} = ...` in `backoff(...)`")));
            continue;
        };
        let value = strip_groups(value);
        match key {
            "multiplier" => multiplier = errors.record(parse_multiplier(value)),
            "initial" => initial = errors.record(backoff_duration(value, key)),
            _ => max = errors.record(backoff_duration(value, key)),
        }
    }
    errors.finish()?;

    // Only a pair the user wrote is compared here. When one bound is left out, the
    // generated code checks the other against the runtime's default at compile time
    // (see `expand::backoff_bound_check`).
    if let (Some(initial), Some(max)) = (&initial, &max) {
        if max.value < initial.value {
            let show = |ms: u64| humantime::format_duration(Duration::from_millis(ms));
            return Err(syn::Error::new(
                max.span,
                format!(
                    "backoff `max` ({}) must not be less than `initial` ({})",
                    show(max.value),
                    show(initial.value),
                ),
            ));
        }
    }
    Ok(Spanned::new(Backoff { initial_ms: initial, multiplier, max_ms: max }, list.path.span()))
}

/// `initial`/`max` inside `backoff(...)`: a duration literal; zero is allowed.
fn backoff_duration(value: &Expr, key: &str) -> syn::Result<Spanned<u64>> {
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            format!("expected duration string literal for backoff `{key}`, e.g. `{key} = \"1s\"`"),
        ));
    };
    let what = format!("backoff {key}");
    let ms = lit_duration_ms(lit, &what, true)?;
    Ok(Spanned::new(ms, lit.span()))
}

/// `multiplier` inside `backoff(...)`: a float or integer literal, finite and at least 1.
fn parse_multiplier(value: &Expr) -> syn::Result<Spanned<f64>> {
    let (parsed, span) = match literal(value) {
        Some(Lit::Float(lit)) if matches!(lit.suffix(), "" | "f64" | "f32") => (lit.base10_parse::<f64>(), lit.span()),
        Some(Lit::Int(lit)) if lit.suffix().is_empty() => (lit.base10_parse::<f64>(), lit.span()),
        _ => {
            return Err(syn::Error::new_spanned(
                value,
                "expected float literal for backoff `multiplier`, e.g. `multiplier = 2.0`",
            ))
        }
    };
    let multiplier = parsed?;
    if !multiplier.is_finite() || multiplier < 1.0 {
        return Err(syn::Error::new(
            span,
            format!("backoff `multiplier` must be a finite number >= 1.0, found {multiplier}"),
        ));
    }
    Ok(Spanned::new(multiplier, span))
}

/// Adds `context` to the message of a single error.
trait WithContext {
    /// `"{message} {context}"`.
    fn with_context(self, context: &str) -> Self;
}

impl WithContext for syn::Error {
    fn with_context(self, context: &str) -> Self {
        syn::Error::new(self.span(), format!("{self} {context}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    /// Parses `metas` and returns the validated arguments or every error message.
    fn check(metas: Punctuated<Meta, Token![,]>) -> Result<ConsumerArgs, Vec<String>> {
        ConsumerArgs::from_metas(metas).map_err(|error| error.into_iter().map(|e| e.to_string()).collect())
    }

    /// Parses `metas`, which must be valid.
    fn ok(metas: Punctuated<Meta, Token![,]>) -> ConsumerArgs {
        match check(metas) {
            Ok(args) => args,
            Err(errors) => panic!("unexpected errors: {errors:#?}"),
        }
    }

    /// Parses `metas`, which must be invalid, and returns the messages.
    fn err(metas: Punctuated<Meta, Token![,]>) -> Vec<String> {
        match check(metas) {
            Ok(_) => panic!("expected errors, the arguments parsed"),
            Err(errors) => errors,
        }
    }

    /// The values of the `backoff(...)` sub-keys that were written: `(initial, multiplier,
    /// max)`, each `None` when left out.
    fn backoff_values(backoff: Option<Spanned<Backoff>>) -> Option<(Option<u64>, Option<f64>, Option<u64>)> {
        backoff.map(|b| {
            let Backoff { initial_ms, multiplier, max_ms } = b.value;
            (initial_ms.map(|s| s.value), multiplier.map(|s| s.value), max_ms.map(|s| s.value))
        })
    }

    /// Asserts that exactly one error was reported and that it contains `needle`.
    #[track_caller]
    fn assert_one(errors: &[String], needle: &str) {
        assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
        assert!(errors[0].contains(needle), "{:?} does not contain {needle:?}", errors[0]);
    }

    #[test]
    fn minimal() {
        let args = ok(parse_quote!(stream = "orders", group = "billing"));
        assert_eq!(args.stream.value(), "orders");
        assert_eq!(args.group.value(), "billing");
        assert!(args.krate.is_none());
        assert!(args.consumer.is_none());
        assert!(args.name.is_none());
        assert!(args.concurrency.is_none());
        assert!(args.batch_size.is_none());
        assert!(args.block.is_none());
        assert!(args.start.is_none());
        assert!(args.max_retries.is_none());
        assert!(args.backoff.is_none());
        assert!(args.dlq.is_none());
        assert!(args.claim_idle.is_none());
        assert!(args.max_buffered_bytes.is_none());
        assert!(args.max_payload_bytes.is_none());
        assert!(args.timeout.is_none());
        assert!(args.dlq_max_len.is_none());
        assert!(args.max_batch.is_none());
        assert!(args.batch_wait.is_none());
    }

    #[test]
    fn trailing_comma_and_any_order() {
        let args = ok(parse_quote!(group = "g", stream = "s",));
        assert_eq!(args.stream.value(), "s");
        assert_eq!(args.group.value(), "g");
    }

    #[test]
    fn every_key() {
        let args = ok(parse_quote!(
            stream = "orders",
            group = "billing",
            consumer = "worker-1",
            name = "billing::charge",
            concurrency = 8,
            batch_size = 100,
            block = "2s",
            start = "1700000000000-0",
            max_retries = 5,
            backoff(initial = "500ms", multiplier = 1.5, max = "1m"),
            dlq = "orders-dead",
            claim_idle = "30s",
            max_buffered_bytes = "16MiB",
            max_payload_bytes = 65536,
            timeout = "45s",
            dlq_max_len = 5000,
            crate = ::my_streamx,
        ));
        assert_eq!(args.consumer.map(|c| c.value()).as_deref(), Some("worker-1"));
        assert_eq!(args.name.map(|c| c.value()).as_deref(), Some("billing::charge"));
        assert_eq!(args.concurrency.map(|c| c.value), Some(8));
        assert_eq!(args.batch_size.map(|c| c.value), Some(100));
        assert_eq!(args.block.map(|c| c.value), Some(2000));
        assert_eq!(args.start.map(|c| c.value), Some(Start::Id("1700000000000-0".into())));
        assert_eq!(args.max_retries.map(|c| c.value), Some(5));
        assert_eq!(args.dlq.map(|c| c.value), Some(Dlq::Stream("orders-dead".into())));
        assert_eq!(args.claim_idle.map(|c| c.value), Some(30_000));
        assert_eq!(args.max_buffered_bytes.map(|c| c.value), Some(16 << 20));
        assert_eq!(args.max_payload_bytes.map(|c| c.value), Some(65_536));
        assert_eq!(args.timeout.map(|c| c.value), Some(45_000));
        assert_eq!(args.dlq_max_len.map(|c| c.value), Some(Some(5000)));
        assert_eq!(backoff_values(args.backoff), Some((Some(500), Some(1.5), Some(60_000))));
        let krate = args.krate.expect("crate was given");
        assert_eq!(quote::quote!(#krate).to_string(), ":: my_streamx");
    }

    #[test]
    fn empty_attribute_reports_both_missing_keys() {
        let errors = err(parse_quote!());
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].contains("missing required argument `stream`"));
        assert!(errors[1].contains("missing required argument `group`"));
    }

    #[test]
    fn missing_stream() {
        assert_one(
            &err(parse_quote!(group = "billing")),
            "missing required argument `stream` (or `topic`), e.g. `#[stream_consumer(stream = \"orders\")]`",
        );
    }

    #[test]
    fn topic_with_shards_and_order() {
        let args = ok(parse_quote!(topic = "orders", shards = 16, group = "billing", ordered = false));
        assert!(args.topic);
        assert_eq!(args.stream.value(), "orders");
        assert_eq!(args.shards.map(|s| s.value), Some(16));
        assert_eq!(args.ordered.map(|o| o.value), Some(false));
    }

    #[test]
    fn topic_errors_point_at_their_argument() {
        assert_one(
            &err(parse_quote!(stream = "a", topic = "b", group = "g")),
            "`stream` and `topic` are exclusive: a consumer reads one stream or one sharded topic",
        );
        assert_one(&err(parse_quote!(stream = "a", shards = 4, group = "g")), "`shards` applies to a topic only");
        assert_one(&err(parse_quote!(topic = "a", shards = 0, group = "g")), "`shards` must be from 1 to 1024, not 0");
        assert_one(&err(parse_quote!(topic = "{a}", group = "g")), "a topic name may not contain `{` or `}`");
    }

    #[test]
    fn missing_group() {
        assert_one(&err(parse_quote!(stream = "orders")), "missing required argument `group`");
    }

    #[test]
    fn invalid_required_key_is_not_also_missing() {
        assert_one(&err(parse_quote!(stream = "", group = "g")), "`stream` must not be empty");
    }

    #[test]
    fn middleware_is_a_list_of_paths() {
        let args: ConsumerArgs = ConsumerArgs::from_metas(syn::parse_quote!(
            stream = "s",
            group = "g",
            middleware = [audit, tenant::require]
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let paths = args.middleware.unwrap().value;
        let paths: Vec<String> = paths.iter().map(|p| quote::quote!(#p).to_string().replace(' ', "")).collect();
        assert_eq!(paths, ["audit", "tenant::require"]);
        let bad = ConsumerArgs::from_metas(syn::parse_quote!(stream = "s", group = "g", middleware = ["a", 1]));
        let message = bad.err().map(|e| e.into_iter().count());
        assert_eq!(message, Some(2), "each item that is not a path is reported");
        let not_a_list = ConsumerArgs::from_metas(syn::parse_quote!(stream = "s", group = "g", middleware = audit));
        assert!(not_a_list.err().unwrap().to_string().contains("expected a list of paths for `middleware`"));
    }

    #[test]
    fn unknown_key_lists_every_key() {
        let errors = err(parse_quote!(stream = "s", group = "g", concurency = 8));
        assert_one(
            &errors,
            "unknown argument `concurency`; expected one of: `stream`, `topic`, `shards`, `group`, `consumer`, \
             `name`, `concurrency`, `batch_size`, `readers`, `block`, `start`, `max_retries`, `backoff`, \
             `dlq`, `dlq_max_len`, `claim_idle`, `max_buffered_bytes`, `max_payload_bytes`, `timeout`, \
             `dedupe`, `ordered`, `max_batch`, `batch_wait`, `retention`, `delete_on_ack`, `codec`, \
             `middleware`, `rate_limit`, `crate`",
        );
    }

    #[test]
    fn codec_is_json_or_msgpack_with_the_feature() {
        let args = ok(parse_quote!(stream = "s", group = "g", codec = "json"));
        assert_eq!(args.codec.map(|c| c.value), Some(CodecArg::Json));
        let msgpack = parse_quote!(stream = "s", group = "g", codec = "msgpack");
        if cfg!(feature = "msgpack") {
            assert_eq!(ok(msgpack).codec.map(|c| c.value), Some(CodecArg::MsgPack));
        } else {
            assert_one(&err(msgpack), "needs streamx's `msgpack` feature");
        }
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", codec = "protobuf")),
            "unknown `codec` \"protobuf\"; expected \"json\" (the default) or \"msgpack\"",
        );
        assert_one(&err(parse_quote!(stream = "s", group = "g", codec = 1)), "expected string literal for `codec`");
    }

    #[test]
    fn retention_keeps_the_sub_keys_written() {
        let args =
            ok(parse_quote!(stream = "s", group = "g", retention(max_len = 0, max_age = "7d"), delete_on_ack = true));
        let r = args.retention.unwrap().value;
        assert_eq!(r.max_len.map(|l| l.value), Some(0));
        assert_eq!(r.max_age_ms.map(|a| a.value), Some(7 * 24 * 3600 * 1000));
        assert!(r.drop_unread.is_none());
        assert_eq!(args.delete_on_ack.map(|d| d.value), Some(true));
        let args = ok(parse_quote!(stream = "s", group = "g", retention(max_age = "1h", drop_unread = true)));
        assert_eq!(args.retention.unwrap().value.drop_unread.map(|d| d.value), Some(true));
    }

    #[test]
    fn bad_retention_values_are_errors_at_the_argument() {
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", retention())),
            "`retention(...)` needs `max_len` or `max_age` (or both)",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", retention(max_len = "1000"))),
            "expected integer literal for retention `max_len`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", retention(max_len = 10, max_age = "0s"))),
            "`retention max_age` must be greater than zero",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", retention(max_len = 10, keep = 3))),
            "unknown argument `keep`; expected one of: `max_len`, `max_age`, `drop_unread` in `retention(...)`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", delete_on_ack = "yes")),
            "expected `true` or `false` for `delete_on_ack`",
        );
    }

    #[test]
    fn unknown_path_key() {
        assert_one(&err(parse_quote!(stream = "s", group = "g", a::b = 1)), "unknown argument `a::b`");
    }

    #[test]
    fn duplicate_key() {
        assert_one(&err(parse_quote!(stream = "a", group = "g", stream = "b")), "duplicate argument `stream`");
        assert_one(
            &err(parse_quote!(stream = "a", group = "g", backoff(), backoff(max = "1m"))),
            "duplicate argument `backoff`",
        );
    }

    #[test]
    fn wrong_form() {
        assert_one(&err(parse_quote!(stream, group = "g")), "expected `stream = \"orders\"`");
        assert_one(&err(parse_quote!(stream("s"), group = "g")), "expected `stream = \"orders\"`");
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", backoff = "1s")),
            "expected `backoff(initial = \"1s\", multiplier = 2.0, max = \"30s\")`",
        );
    }

    #[test]
    fn wrong_literal_types() {
        assert_one(&err(parse_quote!(stream = orders, group = "g")), "expected string literal for `stream`");
        assert_one(&err(parse_quote!(stream = "s", group = 1)), "expected string literal for `group`");
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", concurrency = "8")),
            "expected integer literal for `concurrency`, e.g. `concurrency = 8`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", batch_size = 1.0)),
            "expected integer literal for `batch_size`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", max_retries = true)),
            "expected integer literal for `max_retries`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", block = 2)),
            "expected string literal for `block`, e.g. `block = \"2s\"`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", claim_idle = 30)),
            "expected string literal for `claim_idle`",
        );
        assert_one(&err(parse_quote!(stream = "s", group = "g", start = 0)), "expected string literal for `start`");
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", consumer = c)),
            "expected string literal for `consumer`",
        );
        assert_one(&err(parse_quote!(stream = "s", group = "g", name = 1)), "expected string literal for `name`");
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", dlq = 1)),
            "expected `true`, `false` or a stream name string literal for `dlq`",
        );
        assert_one(&err(parse_quote!(stream = "s", group = "g", crate = 1)), "expected a path for `crate`");
    }

    #[test]
    fn empty_strings() {
        assert_one(&err(parse_quote!(stream = "s", group = "")), "`group` must not be empty");
        assert_one(&err(parse_quote!(stream = "s", group = "g", consumer = "")), "`consumer` must not be empty");
        assert_one(&err(parse_quote!(stream = "s", group = "g", name = "")), "`name` must not be empty");
        assert_one(&err(parse_quote!(stream = "s", group = "g", dlq = "")), "`dlq` stream name must not be empty");
    }

    #[test]
    fn integers() {
        let args =
            ok(parse_quote!(stream = "s", group = "g", concurrency = 1usize, batch_size = 0x10, max_retries = 0));
        assert_eq!(args.concurrency.map(|c| c.value), Some(1));
        assert_eq!(args.batch_size.map(|c| c.value), Some(16));
        assert_eq!(args.max_retries.map(|c| c.value), Some(0));
        let args = ok(parse_quote!(stream = "s", group = "g", max_retries = 4294967295u32));
        assert_eq!(args.max_retries.map(|c| c.value), Some(u32::MAX));
    }

    #[test]
    fn zero_concurrency_and_batch_size() {
        assert_one(&err(parse_quote!(stream = "s", group = "g", concurrency = 0)), "`concurrency` must be at least 1");
        assert_one(&err(parse_quote!(stream = "s", group = "g", batch_size = 0)), "`batch_size` must be at least 1");
    }

    #[test]
    fn integer_out_of_range_or_wrong_suffix() {
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", max_retries = 4294967296)),
            "invalid `max_retries`: number too large to fit in target type",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", concurrency = 8u8)),
            "`concurrency` is a `usize`; remove the `u8` suffix",
        );
    }

    #[test]
    fn durations() {
        let args = ok(parse_quote!(stream = "s", group = "g", block = "1500ms", claim_idle = "1m 30s"));
        assert_eq!(args.block.map(|c| c.value), Some(1500));
        assert_eq!(args.claim_idle.map(|c| c.value), Some(90_000));
        let args = ok(parse_quote!(stream = "s", group = "g", timeout = "200ms"));
        assert_eq!(args.timeout.map(|c| c.value), Some(200));
    }

    #[test]
    fn rate_limit_is_a_count_per_period() {
        let limit = |text: &str| {
            let lit = LitStr::new(text, Span::call_site());
            ok(parse_quote!(stream = "s", group = "g", rate_limit = #lit)).rate_limit.map(|r| r.value)
        };
        assert_eq!(limit("500/s"), Some((500, 1_000)));
        assert_eq!(limit("30/min"), Some((30, 60_000)));
        assert_eq!(limit("30/m"), Some((30, 60_000)));
        assert_eq!(limit("1000/h"), Some((1000, 3_600_000)));
        assert_eq!(limit("10/500ms"), Some((10, 500)));
        assert!(ok(parse_quote!(stream = "s", group = "g")).rate_limit.is_none());
        assert_one(&err(parse_quote!(stream = "s", group = "g", rate_limit = "500")), "expected `<count>/<period>`");
        assert_one(&err(parse_quote!(stream = "s", group = "g", rate_limit = "0/s")), "the count must be at least 1");
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", rate_limit = "x/s")),
            "the count `x` is not a whole number",
        );
        assert_one(&err(parse_quote!(stream = "s", group = "g", rate_limit = "5/week")), "the period `week` is not");
        assert_one(&err(parse_quote!(stream = "s", group = "g", rate_limit = "5/2d")), "the period `2d` is not");
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", rate_limit = 5)),
            "expected string literal for `rate_limit`",
        );
    }

    #[test]
    fn dedupe_window() {
        let args = ok(parse_quote!(stream = "s", group = "g", dedupe = "24h"));
        assert_eq!(args.dedupe.map(|d| d.value), Some(86_400_000));
        assert!(ok(parse_quote!(stream = "s", group = "g")).dedupe.is_none());
        assert_one(&err(parse_quote!(stream = "s", group = "g", dedupe = "0s")), "`dedupe` must be greater than zero");
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", dedupe = true)),
            "expected string literal for `dedupe`, e.g. `dedupe = \"24h\"`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", dedupe = "a day")),
            "invalid duration \"a day\" for `dedupe`",
        );
    }

    #[test]
    fn timeout_errors() {
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", timeout = "0s")),
            "`timeout` must be greater than zero",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", timeout = 30)),
            "expected string literal for `timeout`, e.g. `timeout = \"30s\"`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", timeout = "soon")),
            "invalid duration \"soon\" for `timeout`",
        );
    }

    #[test]
    fn unparseable_duration_includes_humantime_reason() {
        let errors = err(parse_quote!(stream = "s", group = "g", block = "2 parsecs"));
        assert_one(&errors, "invalid duration \"2 parsecs\" for `block`: unknown time unit");
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", claim_idle = "")),
            "invalid duration \"\" for `claim_idle`: value was empty",
        );
    }

    #[test]
    fn zero_sub_millisecond_and_huge_durations() {
        assert_one(&err(parse_quote!(stream = "s", group = "g", block = "0s")), "`block` must be greater than zero");
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", claim_idle = "0ms")),
            "`claim_idle` must be greater than zero",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", block = "1500us")),
            "`block` has millisecond resolution",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", block = "18446744073709551615s")),
            "`block` = \"18446744073709551615s\" is too large",
        );
    }

    #[test]
    fn sizes() {
        let sizes = |metas| {
            let args = ok(metas);
            (args.max_buffered_bytes.map(|s| s.value), args.max_payload_bytes.map(|s| s.value))
        };
        assert_eq!(
            sizes(parse_quote!(stream = "s", group = "g", max_buffered_bytes = "64MiB", max_payload_bytes = 1)),
            (Some(64 * 1024 * 1024), Some(1))
        );
        assert_eq!(
            sizes(parse_quote!(stream = "s", group = "g", max_buffered_bytes = 1_048_576usize)),
            (Some(1_048_576), None)
        );
        for (text, bytes) in [
            ("123B", 123),
            ("1 B", 1),
            ("100kB", 100_000),
            ("512KiB", 512 * 1024),
            ("64MB", 64_000_000),
            ("64 MiB", 64 << 20),
            ("2\tMiB", 2 << 20),
            ("1GB", 1_000_000_000),
            ("1GiB", 1 << 30),
            ("007kB", 7000),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text:?}");
            assert_eq!(sizes(parse_quote!(stream = "s", group = "g", max_payload_bytes = #text)), (None, Some(bytes)));
        }
    }

    #[test]
    fn size_string_errors() {
        for (text, error) in [
            ("", SizeError::NoNumber),
            ("MiB", SizeError::NoNumber),
            ("-1MiB", SizeError::NoNumber),
            ("+1MiB", SizeError::NoNumber),
            (" 1MiB", SizeError::NoNumber),
            (".5MiB", SizeError::NoNumber),
            ("1.5MiB", SizeError::Fraction),
            ("1,5MiB", SizeError::Fraction),
            ("64", SizeError::MissingUnit),
            ("64 ", SizeError::MissingUnit),
            ("64MiB ", SizeError::UnknownUnit("MiB ".into())),
            ("64 MiB B", SizeError::UnknownUnit("MiB B".into())),
            ("64mib", SizeError::UnknownUnit("mib".into())),
            ("64KB", SizeError::UnknownUnit("KB".into())),
            ("64Kib", SizeError::UnknownUnit("Kib".into())),
            ("64TiB", SizeError::UnknownUnit("TiB".into())),
            ("64bytes", SizeError::UnknownUnit("bytes".into())),
            ("1_000kB", SizeError::UnknownUnit("_000kB".into())),
            ("18446744073709551616B", SizeError::TooLarge),
            ("18446744073709551615KiB", SizeError::TooLarge),
            ("17179869184GiB", SizeError::TooLarge),
        ] {
            assert_eq!(parse_size(text), Err(error), "{text:?}");
        }
        // u64::MAX rounded down to whole GiB (on a 64-bit host).
        assert_eq!(parse_size("17179869183GiB").map(|bytes| bytes as u64), Ok(17_179_869_183 << 30));
    }

    #[test]
    fn size_error_messages() {
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", max_buffered_bytes = "64 parsecs")),
            "invalid size \"64 parsecs\" for `max_buffered_bytes`: unknown unit \"parsecs\"; expected one of B, \
             kB, MB, GB, KiB, MiB, GiB",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", max_payload_bytes = "4mib")),
            "unknown unit \"mib\"; units are case-sensitive, did you mean \"MiB\" (1048576 bytes)?",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", max_payload_bytes = "4KB")),
            "did you mean \"kB\" (1000 bytes) or \"KiB\" (1024 bytes)?",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", max_payload_bytes = "1.5MiB")),
            "invalid size \"1.5MiB\" for `max_payload_bytes`: sizes are whole numbers; use a smaller unit, e.g. \
             \"1536KiB\" instead of \"1.5MiB\"",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", max_payload_bytes = "4096")),
            "invalid size \"4096\" for `max_payload_bytes`: missing unit (one of B, kB, MB, GB, KiB, MiB, GiB); \
             for a number of bytes, remove the quotes",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", max_payload_bytes = "")),
            "invalid size \"\" for `max_payload_bytes`: expected a size like \"64MiB\" or a number of bytes",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", max_buffered_bytes = "99999999999GiB")),
            "`max_buffered_bytes` = \"99999999999GiB\" is too large: at most usize::MAX bytes",
        );
    }

    #[test]
    fn size_values_that_are_not_sizes() {
        for key in ["max_buffered_bytes", "max_payload_bytes"] {
            let key = syn::Ident::new(key, Span::call_site());
            let expected = |example: &str| {
                format!(
                    "expected a size like \"64MiB\" or a number of bytes for `{key}`, e.g. `{key} = \"{example}\"` \
                     or `{key} = 1048576`"
                )
            };
            let example = if key == "max_buffered_bytes" { "64MiB" } else { "4MiB" };
            for value in [quote::quote!(1.5), quote::quote!(true), quote::quote!(MiB), quote::quote!(-MiB)] {
                assert_one(&err(parse_quote!(stream = "s", group = "g", #key = #value)), &expected(example));
            }
            for zero_or_negative in [quote::quote!(0), quote::quote!(-1), quote::quote!(-0x10), quote::quote!(-1.5)] {
                assert_one(
                    &err(parse_quote!(stream = "s", group = "g", #key = #zero_or_negative)),
                    &format!("`{key}` must be at least 1 byte"),
                );
            }
            assert_one(
                &err(parse_quote!(stream = "s", group = "g", #key = "0MiB")),
                &format!("`{key}` must be at least 1 byte"),
            );
            assert_one(
                &err(parse_quote!(stream = "s", group = "g", #key = 18446744073709551616)),
                &format!("invalid `{key}`: number too large to fit in target type"),
            );
            assert_one(
                &err(parse_quote!(stream = "s", group = "g", #key = 64u32)),
                &format!("`{key}` is a `usize`; remove the `u32` suffix"),
            );
            assert_one(
                &err(parse_quote!(stream = "s", group = "g", #key = 1, #key = 2)),
                &format!("duplicate argument `{key}`"),
            );
        }
    }

    #[test]
    fn negative_sizes_in_either_form() {
        // As an expression `-1` is a negation; in attribute arguments syn may read it as one
        // negative literal (see `size_values_that_are_not_sizes`). Both are "at least 1".
        let message = |value: Expr| size_bytes(&value, Key::MaxPayloadBytes).err().map(|e| e.to_string());
        let at_least_one = Some("`max_payload_bytes` must be at least 1 byte".to_owned());
        assert_eq!(message(parse_quote!(-1)), at_least_one);
        assert_eq!(message(parse_quote!(-1.5)), at_least_one);
        let not_a_size = message(parse_quote!(-(8)));
        assert!(not_a_size.as_deref().is_some_and(|e| e.starts_with("expected a size like")), "{not_a_size:?}");
    }

    #[test]
    fn start_values() {
        let start = |metas| ok(metas).start.map(|s| s.value);
        assert_eq!(start(parse_quote!(stream = "s", group = "g", start = "begin")), Some(Start::Beginning));
        assert_eq!(start(parse_quote!(stream = "s", group = "g", start = "new")), Some(Start::New));
        assert_eq!(
            start(parse_quote!(stream = "s", group = "g", start = "1700000000000")),
            Some(Start::Id("1700000000000".into()))
        );
        assert_eq!(start(parse_quote!(stream = "s", group = "g", start = "0-0")), Some(Start::Id("0-0".into())));
    }

    #[test]
    fn bad_start_values_list_the_accepted_forms() {
        for bad in ["$", "beginning", "", "12-", "-3", "1-2-3", "12a", "99999999999999999999"] {
            let errors = err(parse_quote!(stream = "s", group = "g", start = #bad));
            assert_one(
                &errors,
                "expected \"begin\" (the whole stream), \"new\" (only entries added after the \
                 group is created), or an entry id like \"1700000000000-0\" or \"1700000000000\"",
            );
        }
    }

    #[test]
    fn max_retries_zero_is_allowed() {
        let args = ok(parse_quote!(stream = "s", group = "g", max_retries = 0));
        assert_eq!(args.max_retries.map(|c| c.value), Some(0));
    }

    #[test]
    fn backoff_keeps_only_the_sub_keys_written() {
        let backoff = |metas| backoff_values(ok(metas).backoff);
        assert_eq!(backoff(parse_quote!(stream = "s", group = "g")), None);
        assert_eq!(backoff(parse_quote!(stream = "s", group = "g", backoff())), Some((None, None, None)));
        assert_eq!(
            backoff(parse_quote!(stream = "s", group = "g", backoff(multiplier = 3))),
            Some((None, Some(3.0), None))
        );
        assert_eq!(
            backoff(parse_quote!(stream = "s", group = "g", backoff(initial = "0s"))),
            Some((Some(0), None, None))
        );
        assert_eq!(
            backoff(parse_quote!(stream = "s", group = "g", backoff(max = "2m", multiplier = 1.0f64,))),
            Some((None, Some(1.0), Some(120_000)))
        );
        // A single bound is not compared with a default the macro would have to copy: the
        // generated code compares it with the runtime's (see `expand`).
        assert_eq!(backoff(parse_quote!(stream = "s", group = "g", backoff(max = "1ms"))), Some((None, None, Some(1))));
        assert_eq!(
            backoff(parse_quote!(stream = "s", group = "g", backoff(initial = "1h"))),
            Some((Some(3_600_000), None, None))
        );
    }

    #[test]
    fn backoff_errors() {
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", backoff(factor = 2.0))),
            "unknown argument `factor`; expected one of: `initial`, `multiplier`, `max` in \
             `backoff(...)`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", backoff(max = "1m", max = "2m"))),
            "duplicate `max` in `backoff(...)`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", backoff(multiplier = 0.5))),
            "backoff `multiplier` must be a finite number >= 1.0, found 0.5",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", backoff(multiplier = 1e999))),
            "backoff `multiplier` must be a finite number >= 1.0, found inf",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", backoff(multiplier = "2"))),
            "expected float literal for backoff `multiplier`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", backoff(initial = 1))),
            "expected duration string literal for backoff `initial`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", backoff(initial = "soon"))),
            "invalid duration \"soon\" for `backoff initial`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", backoff(max))),
            "expected `max = ...` in `backoff(...)`",
        );
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", backoff(initial = "10s", max = "5s"))),
            "backoff `max` (5s) must not be less than `initial` (10s)",
        );
    }

    #[test]
    fn backoff_reports_all_sub_key_errors() {
        let errors =
            err(parse_quote!(stream = "s", group = "g", backoff(initial = "x", multiplier = 0.0, jitter = true)));
        assert_eq!(errors.len(), 3, "{errors:#?}");
    }

    #[test]
    fn dlq_values() {
        let dlq = |metas| ok(metas).dlq.map(|d| d.value);
        assert_eq!(dlq(parse_quote!(stream = "s", group = "g", dlq = true)), Some(Dlq::Default));
        assert_eq!(dlq(parse_quote!(stream = "s", group = "g", dlq = false)), Some(Dlq::Disabled));
        assert_eq!(dlq(parse_quote!(stream = "s", group = "g", dlq = "dead")), Some(Dlq::Stream("dead".into())));
    }

    #[test]
    fn batch_keys() {
        let args = ok(parse_quote!(stream = "s", group = "g", max_batch = 500, batch_wait = "0ms"));
        assert_eq!(args.max_batch.map(|m| m.value), Some(500));
        assert_eq!(args.batch_wait.map(|w| w.value), Some(0));
        assert_one(&err(parse_quote!(stream = "s", group = "g", max_batch = 0)), "`max_batch` must be at least 1");
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", batch_wait = 50)),
            "expected string literal for `batch_wait`, e.g. `batch_wait = \"50ms\"`",
        );
    }

    #[test]
    fn dlq_max_len_values() {
        let cap = |metas| ok(metas).dlq_max_len.map(|d| d.value);
        assert_eq!(cap(parse_quote!(stream = "s", group = "g", dlq_max_len = 1)), Some(Some(1)));
        assert_eq!(cap(parse_quote!(stream = "s", group = "g", dlq_max_len = 10_000u64)), Some(Some(10_000)));
        assert_eq!(cap(parse_quote!(stream = "s", group = "g", dlq_max_len = "unbounded")), Some(None));
        assert_one(&err(parse_quote!(stream = "s", group = "g", dlq_max_len = 0)), "`dlq_max_len` must be at least 1");
        for bad in [quote::quote!("10k"), quote::quote!(true), quote::quote!(1.5)] {
            assert_one(
                &err(parse_quote!(stream = "s", group = "g", dlq_max_len = #bad)),
                "expected a number of dead letters (at least 1) or \"unbounded\" for `dlq_max_len`",
            );
        }
    }

    #[test]
    fn crate_paths() {
        let krate = |metas| {
            let path = ok(metas).krate.expect("crate was given");
            quote::quote!(#path).to_string()
        };
        assert_eq!(krate(parse_quote!(stream = "s", group = "g", crate = sx)), "sx");
        assert_eq!(krate(parse_quote!(stream = "s", group = "g", crate = ::a::b)), ":: a :: b");
        assert_eq!(krate(parse_quote!(stream = "s", group = "g", crate = "::sx")), ":: sx");
        assert_one(
            &err(parse_quote!(stream = "s", group = "g", crate = "not a path")),
            "`crate` must be a path such as `my_streamx`",
        );
    }

    #[test]
    fn every_error_is_reported_together() {
        let errors = err(parse_quote!(
            group = "",
            concurrency = 0,
            batch_size = "10",
            block = "forever",
            start = "latest",
            retries = 3,
            dlq = true,
            dlq = false,
        ));
        assert_eq!(errors.len(), 8, "{errors:#?}");
        let expected = [
            "`group` must not be empty",
            "`concurrency` must be at least 1",
            "expected integer literal for `batch_size`",
            "invalid duration \"forever\" for `block`",
            "invalid `start` value \"latest\"",
            "unknown argument `retries`",
            "duplicate argument `dlq`",
            "missing required argument `stream`",
        ];
        for (error, needle) in errors.iter().zip(expected) {
            assert!(error.contains(needle), "{error:?} does not contain {needle:?}");
        }
    }

    #[test]
    fn parse_from_tokens() {
        let args = parse(quote::quote!(stream = "s", group = "g", backoff(max = "1m"))).expect("valid arguments");
        assert_eq!(args.stream.value(), "s");
        let Err(error) = parse(quote::quote!(stream "s")) else {
            panic!("`stream \"s\"` lacks `=`");
        };
        assert_eq!(error.to_string(), "expected `,`");
    }

    #[test]
    fn entry_ids() {
        assert!(is_entry_id("0"));
        assert!(is_entry_id("1-1"));
        assert!(is_entry_id("18446744073709551615-18446744073709551615"));
        assert!(!is_entry_id("18446744073709551616"));
        assert!(!is_entry_id("+1"));
        assert!(!is_entry_id("1 -1"));
        assert!(!is_entry_id("*"));
    }
}
