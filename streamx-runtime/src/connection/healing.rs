//! [`HealingClient`]: a fred client that is replaced by a fresh connection when it is stuck.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::ClientLike;

use super::client::{connect, is_wedged, ClientRole};
use super::redis_url::RedisUrl;
use crate::error::Result;

/// A client that is replaced by a fresh connection when it is wedged (see [`is_wedged`]).
/// Cheap to clone; clones share the current client.
#[derive(Clone)]
pub(crate) struct HealingClient {
    inner: Arc<HealingInner>,
}

struct HealingInner {
    url: RedisUrl,
    role: ClientRole,
    current: std::sync::RwLock<fred::clients::Client>,
    replacing: tokio::sync::Mutex<()>,
}

impl HealingClient {
    /// Connects (see [`connect`]).
    pub async fn connect(url: &RedisUrl, role: ClientRole, deadline: Duration) -> Result<Self> {
        let client = connect(url, role, deadline).await?;
        Ok(HealingClient {
            inner: Arc::new(HealingInner {
                url: url.clone(),
                role,
                current: std::sync::RwLock::new(client),
                replacing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The current client.
    pub fn get(&self) -> fred::clients::Client {
        self.inner.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// After `err` from `used` (a client obtained with [`get`](Self::get)): if the error
    /// means the client is wedged and it is still the current one, replaces it with a new
    /// connection. Returns true when the caller should retry on a new client.
    pub async fn heal(&self, used: &fred::clients::Client, err: &fred::error::Error) -> bool {
        if !is_wedged(err) {
            return false;
        }
        let _one_at_a_time = self.inner.replacing.lock().await;
        if self.get().id() != used.id() {
            return true; // someone else replaced it meanwhile
        }
        tracing::warn!(url = %self.inner.url, error = %err, "the Redis client is stuck; replacing it with a new connection");
        match connect(&self.inner.url, self.inner.role, Duration::ZERO).await {
            Ok(fresh) => {
                let old = std::mem::replace(
                    &mut *self.inner.current.write().unwrap_or_else(std::sync::PoisonError::into_inner),
                    fresh,
                );
                tokio::spawn(async move {
                    let _ = old.quit().await;
                });
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a new connection yet");
                false
            }
        }
    }

    /// Closes the current client.
    pub async fn quit(&self) {
        let _ = self.get().quit().await;
    }
}
