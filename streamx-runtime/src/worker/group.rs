//! Creating consumer groups.

use fred::clients::Client;
use fred::interfaces::StreamsInterface;

use crate::error::{is_busy_group, Error, Result};

/// Creates `group` on `stream` (and the stream) starting at `start_id`, unless it exists.
pub(crate) async fn ensure_group(client: &Client, stream: &str, group: &str, start_id: &str) -> Result<()> {
    let result: Result<(), _> = client.xgroup_create(stream, group, start_id, true).await;
    match result {
        Ok(()) => {
            tracing::info!(stream, group, start = start_id, "created consumer group");
            Ok(())
        }
        Err(e) if is_busy_group(&e) => Ok(()),
        Err(e) => Err(Error::redis("XGROUP CREATE", stream, e)),
    }
}
