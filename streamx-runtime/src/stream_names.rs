//! The registry of stream names ([`STREAM_NAMES`], a set): the runtime adds each consumer's
//! stream when it starts and a [`Producer`](crate::Producer) each stream the first time it
//! publishes to it in a process, so tools list streams with one `SMEMBERS` instead of a `SCAN`
//! of the whole keyspace. Streams written by other clients are not in it: tools find those by
//! a slow, bounded scan in the background.
//!
//! Writing it is best effort: a stream missing from the registry is only found later by the
//! tools' scan, so a failed `SADD` never fails a publish or a start.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use fred::clients::Client;
use fred::interfaces::SetsInterface;

use crate::error::{Error, Result};
use crate::keys::STREAM_NAMES;

/// Adds `stream` to the registry (`SADD`).
pub(crate) async fn register(client: &Client, stream: &str) -> Result<()> {
    let _: u64 = client.sadd(STREAM_NAMES, stream).await.map_err(|e| Error::redis("SADD", STREAM_NAMES, e))?;
    Ok(())
}

/// Every stream name in the registry (`SMEMBERS`), sorted.
pub(crate) async fn registered(client: &Client) -> Result<Vec<String>> {
    let mut names: Vec<String> =
        client.smembers(STREAM_NAMES).await.map_err(|e| Error::redis("SMEMBERS", STREAM_NAMES, e))?;
    names.sort();
    Ok(names)
}

/// The streams a producer has registered in this process, so each costs one `SADD` only.
#[derive(Clone, Default)]
pub(crate) struct Registered {
    names: Arc<Mutex<HashSet<String>>>,
}

impl Registered {
    /// Registers `stream` unless this process did already. A refusal (`NOPERM`: a user
    /// without the registry's key) is not retried; any other failure is, at the next publish.
    pub(crate) async fn once(&self, client: &Client, stream: &str) {
        {
            // Every publish passes here: no allocation once the stream is known.
            let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
            if names.contains(stream) {
                return;
            }
            names.insert(stream.to_string());
        }
        if let Err(e) = register(client, stream).await {
            let refused = e.to_string().contains("NOPERM");
            tracing::debug!(stream, error = %e, "cannot add the stream to the registry of stream names");
            if !refused {
                self.names.lock().unwrap_or_else(PoisonError::into_inner).remove(stream);
            }
        }
    }
}
