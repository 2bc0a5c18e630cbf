//! Reading a topic's history: every shard's entries merged into one sequence by id, or one
//! shard alone.

use std::ops::RangeBounds;

use futures_util::stream::{self, BoxStream, Peekable, StreamExt};
use serde::de::DeserializeOwned;

use super::History;
use crate::error::{Error, Result};
use crate::message::{Message, MessageId};

impl History {
    /// The entries of topic `topic` whose ids fall in `range`, from all its shards merged by
    /// id (oldest first; entries of two shards with the same id come in shard order), as
    /// messages of `T`. Each message's [`stream`](Message::stream) is its shard's stream.
    /// Memory stays flat: one page per shard is read ahead. The topic's record is read first;
    /// an unknown topic yields one [`Error::UnknownTopic`] item.
    ///
    /// Ids are given by each shard's master clock, so the merged order is the order of
    /// publishing only as far as those clocks agree; within one shard (so within one key) it
    /// is exactly the stream's order.
    ///
    /// ```no_run
    /// # async fn demo(history: streamx_runtime::History) -> Result<(), streamx_runtime::Error> {
    /// use futures_util::TryStreamExt;
    /// let all: Vec<streamx_runtime::Message<serde_json::Value>> = history.read_topic("orders", ..).try_collect().await?;
    /// // One shard only:
    /// let shard_3: Vec<streamx_runtime::Message<serde_json::Value>> =
    ///     history.read_topic_shard("orders", 3, ..).try_collect().await?;
    /// # let _ = (all, shard_3); Ok(()) }
    /// ```
    pub fn read_topic<T>(
        &self,
        topic: &str,
        range: impl RangeBounds<MessageId> + Clone + Send + 'static,
    ) -> BoxStream<'static, Result<Message<T>>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let history = self.clone();
        let topic = topic.to_string();
        stream::once(async move {
            let layout = match crate::topic::layout::lookup(&history.client, &topic).await {
                Ok(Some(layout)) => layout,
                Ok(None) => return stream::iter([Err(Error::UnknownTopic { topic })]).boxed(),
                Err(e) => return stream::iter([Err(e)]).boxed(),
            };
            let shards = layout
                .shard_streams()
                .iter()
                .map(|stream| history.read::<T>(stream, range.clone()).peekable())
                .collect::<Vec<_>>();
            merge_by_id(shards)
        })
        .flatten()
        .boxed()
    }

    /// The entries of shard `shard` of topic `topic` in `range` (see
    /// [`read_topic`](Self::read_topic)); [`Error::UnknownTopic`] for an unknown topic or a
    /// shard index at or beyond its shard count.
    pub fn read_topic_shard<T>(
        &self,
        topic: &str,
        shard: u32,
        range: impl RangeBounds<MessageId> + Send + 'static,
    ) -> BoxStream<'static, Result<Message<T>>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let history = self.clone();
        let topic = topic.to_string();
        stream::once(async move {
            match crate::topic::layout::lookup(&history.client, &topic).await {
                Ok(Some(layout)) if shard < layout.shards() => history.read::<T>(layout.shard_stream(shard), range),
                Ok(_) => stream::iter([Err(Error::UnknownTopic { topic })]).boxed(),
                Err(e) => stream::iter([Err(e)]).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

type Shard<T> = Peekable<BoxStream<'static, Result<Message<T>>>>;

/// The shards' sequences as one, smallest id first (the first shard's on a tie); an error
/// of a shard is yielded as soon as it is at the head of that shard.
fn merge_by_id<T: Send + 'static>(shards: Vec<Shard<T>>) -> BoxStream<'static, Result<Message<T>>> {
    stream::unfold(shards, |mut shards| async move {
        let mut best: Option<(usize, MessageId)> = None;
        for (i, shard) in shards.iter_mut().enumerate() {
            match std::pin::Pin::new(shard).peek().await {
                None => {}
                Some(Err(_)) => {
                    best = Some((i, MessageId::MIN));
                    break;
                }
                Some(Ok(msg)) if best.is_none_or(|(_, id)| msg.id() < id) => best = Some((i, msg.id())),
                Some(Ok(_)) => {}
            }
        }
        let (i, _) = best?;
        let item = shards[i].next().await?;
        Some((item, shards))
    })
    .boxed()
}
