//! Reading a stream's history: any id range, as typed messages, page by page; a topic's
//! shards merged by id in `History::read_topic` (the `topic` module).

mod topic;

use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use fred::clients::Client;
use fred::interfaces::StreamsInterface;
use fred::types::Value;
use futures_util::stream::{self, BoxStream, StreamExt};
use serde::de::DeserializeOwned;

use crate::connection::{tool_client, RedisUrl};
use crate::error::{Error, Result};
use crate::handler::{Delivery, HandlerArg};
use crate::message::{Message, MessageId};
use crate::wire::{parse_entries, RawEntry};

/// Entries fetched per XRANGE by default.
pub const DEFAULT_PAGE_SIZE: u64 = 500;

/// Reads stream history. Reading is independent of consumer groups and changes nothing.
///
/// ```no_run
/// # async fn demo() -> Result<(), streamx_runtime::Error> {
/// use futures_util::TryStreamExt;
/// use streamx_runtime::{History, MessageId};
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// let history = History::connect("redis://127.0.0.1:6379").await?;
/// // Everything, oldest first, 500 entries per round trip; memory stays flat.
/// let mut all = history.read::<Order>("orders", ..);
/// while let Some(msg) = all.try_next().await? {
///     println!("{} {}", msg.id(), msg.payload().id);
/// }
/// // A range of ids, inclusive.
/// let from: MessageId = "1700000000000-0".parse().unwrap();
/// let to: MessageId = "1700000001000-0".parse().unwrap();
/// let some: Vec<_> = history.read::<Order>("orders", from..=to).try_collect().await?;
/// # let _ = some; Ok(()) }
/// ```
#[derive(Clone)]
pub struct History {
    client: Client,
}

impl History {
    /// Connects to `url`. For a `rediss://` URL the CA file in
    /// `STREAMX_REDIS_TLS_CA` and the client certificate in `STREAMX_REDIS_TLS_CERT` /
    /// `STREAMX_REDIS_TLS_KEY` are used when set, as by the runtime (see [`RedisUrl`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(&RedisUrl::parse(url)?).await
    }

    /// Connects with a parsed URL (with TLS or credentials options). TLS files it does not
    /// set are taken from the environment, as for [`connect`](Self::connect); its own
    /// settings win.
    pub async fn connect_with(url: &RedisUrl) -> Result<Self> {
        Ok(History { client: tool_client(url).await? })
    }

    /// Uses an existing client.
    pub fn with_client(client: Client) -> Self {
        History { client }
    }

    /// The entries of `stream` whose ids fall in `range`, oldest first, as messages of `T`.
    /// An entry that does not decode yields an `Err` item ([`Error::Decode`]) and reading
    /// goes on. Messages read this way have `attempt() == 0`.
    pub fn read<T>(&self, stream: &str, range: impl RangeBounds<MessageId>) -> BoxStream<'static, Result<Message<T>>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        self.read_paged(stream, range, DEFAULT_PAGE_SIZE)
    }

    /// [`read`](Self::read) with an explicit page size (entries per XRANGE).
    pub fn read_paged<T>(
        &self,
        stream: &str,
        range: impl RangeBounds<MessageId>,
        page_size: u64,
    ) -> BoxStream<'static, Result<Message<T>>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let start = match range.start_bound() {
            Bound::Included(id) => Some(*id),
            Bound::Excluded(id) => id.successor(),
            Bound::Unbounded => Some(MessageId::MIN),
        };
        let end = match range.end_bound() {
            Bound::Included(id) => Some(*id),
            Bound::Excluded(id) => exclusive_end(*id),
            Bound::Unbounded => Some(MessageId::MAX),
        };
        let state = Pager {
            client: self.client.clone(),
            stream: Arc::from(stream),
            next: start.filter(|s| end.is_some_and(|e| *s <= e)),
            end: end.unwrap_or(MessageId::MIN),
            page_size: page_size.max(1),
            buffer: VecDeque::new(),
        };
        stream::unfold(state, |mut state| async move {
            loop {
                if let Some(entry) = state.buffer.pop_front() {
                    let item = decode::<T>(&state.stream, entry);
                    return Some((item, state));
                }
                let start = state.next?;
                match state.fetch(start).await {
                    Ok(()) => {}
                    Err(e) => {
                        state.next = None;
                        return Some((Err(e), state));
                    }
                }
            }
        })
        .boxed()
    }
}

fn exclusive_end(id: MessageId) -> Option<MessageId> {
    if id.sequence() > 0 {
        Some(MessageId::new(id.millis(), id.sequence() - 1))
    } else if id.millis() > 0 {
        Some(MessageId::new(id.millis() - 1, u64::MAX))
    } else {
        None
    }
}

struct Pager {
    client: Client,
    stream: Arc<str>,
    next: Option<MessageId>,
    end: MessageId,
    page_size: u64,
    buffer: VecDeque<RawEntry>,
}

impl Pager {
    async fn fetch(&mut self, start: MessageId) -> Result<()> {
        let reply: Value = self
            .client
            .xrange(&*self.stream, start.to_string(), self.end.to_string(), Some(self.page_size))
            .await
            .map_err(|e| Error::redis("XRANGE", &*self.stream, e))?;
        let entries = parse_entries(reply);
        self.next = match entries.last() {
            Some(last) if entries.len() as u64 >= self.page_size => last.id.successor().filter(|n| *n <= self.end),
            _ => None,
        };
        self.buffer.extend(entries);
        Ok(())
    }
}

fn decode<T: DeserializeOwned + Send + 'static>(stream: &Arc<str>, entry: RawEntry) -> Result<Message<T>> {
    let id = entry.id;
    Message::<T>::from_delivery(Delivery::new(stream.clone(), entry, 0, crate::state::State::new())).map_err(
        |(kind, reason)| Error::Decode {
            stream: stream.to_string(),
            id: id.to_string(),
            reason: format!("{kind}: {reason}"),
        },
    )
}
