//! The registry of stream names ([`STREAM_NAMES`], a set): the runtime adds each consumer's
//! stream when it starts and a [`Producer`](crate::Producer) each stream the first time it
//! publishes to it in a process, so tools list streams with one `SMEMBERS` instead of a `SCAN`
//! of the whole keyspace. Streams written by other clients are not in it: tools find those by
//! a slow, bounded scan in the background.
//!
//! Writing it is best effort: a stream missing from the registry is only found later by the
//! tools' scan, so a failed `SADD` never fails a publish or a start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::SetsInterface;

use crate::connection::HealingClient;
use crate::error::{Error, Result};
use crate::keys::STREAM_NAMES;

/// Adds `stream` to the registry (`SADD`).
pub(crate) async fn register(client: &Client, stream: &str) -> Result<()> {
    let _: u64 = client.sadd(STREAM_NAMES, stream).await.map_err(|e| Error::redis("SADD", STREAM_NAMES, e))?;
    Ok(())
}

/// Every stream name in the registry (`SMEMBERS`), sorted. A member that is not UTF-8 (a
/// stream name the tools cannot show as text; written by hand) is left out, not an error.
pub(crate) async fn registered(client: &Client) -> Result<Vec<String>> {
    let members: Vec<fred::types::Value> =
        client.smembers(STREAM_NAMES).await.map_err(|e| Error::redis("SMEMBERS", STREAM_NAMES, e))?;
    let mut names: Vec<String> = members
        .into_iter()
        .filter_map(|m| crate::wire::value_bytes(m).and_then(|b| String::from_utf8(b.to_vec()).ok()))
        .collect();
    names.sort();
    Ok(names)
}

/// The streams a producer has registered in this process, so each costs one `SADD` only:
/// per name, the registration, done once (publishes that arrive while it runs wait for the
/// same one, so none of them overtakes the first).
#[derive(Clone, Default)]
pub(crate) struct Registered {
    names: Arc<Mutex<HashMap<String, Arc<tokio::sync::OnceCell<()>>>>>,
}

/// How long a producer's first publish to a stream waits for the registry's `SADD`.
const REGISTER_WAIT: Duration = Duration::from_secs(1);

impl Registered {
    /// Registers `stream` unless this process did already, or tried: a failed `SADD` is not
    /// retried (the tools' scan finds the stream anyway). The first publish to a stream waits
    /// for it (a short-lived producer, `streamx publish`, must not exit before it is sent),
    /// at most [`REGISTER_WAIT`]: the registry's node may be slow or failing over while the
    /// stream's is fine.
    pub(crate) async fn once(&self, client: &HealingClient, stream: &str) {
        let registration = {
            // Every publish passes here: no allocation once the stream is known.
            let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
            match names.get(stream) {
                Some(done) if done.initialized() => return,
                Some(running) => running.clone(),
                None => {
                    let first = Arc::new(tokio::sync::OnceCell::new());
                    names.insert(stream.to_string(), first.clone());
                    first
                }
            }
        };
        registration
            .get_or_init(|| async {
                // The client is taken only here: every publish passes through `once`.
                match tokio::time::timeout(REGISTER_WAIT, register(&client.get(), stream)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(stream, error = %e, "cannot add the stream to the registry of stream names")
                    }
                    Err(_) => tracing::debug!(stream, "the registry of stream names did not answer in time"),
                }
            })
            .await;
    }
}
