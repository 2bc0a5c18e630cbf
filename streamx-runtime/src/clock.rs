//! The Redis server's clock, as the operator tools read it: every due time, heartbeat and
//! deadline of the engine is on it (scripts read it with `TIME`, see [`crate::scripts`]).

use fred::clients::Client;
use fred::interfaces::ClientLike as _;
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::error::{Error, Result};
use crate::wire::value_bytes;

/// `TIME` on the node that holds `key`'s slot, in Unix milliseconds. A user that may not run
/// `TIME` (the README's read-only ACL user: it is not in `@read`) gets this machine's clock
/// instead; any other failure is an error.
pub(crate) async fn redis_now_ms(client: &Client, key: &str) -> Result<u64> {
    let command = CustomCommand::new_static("TIME", ClusterHash::Custom(crate::keys::slot(key)), false);
    let reply: Value = match client.custom(command, Vec::<Value>::new()).await {
        Ok(reply) => reply,
        Err(e) if e.details().contains("NOPERM") => return Ok(local_now_ms()),
        Err(e) => return Err(Error::redis("TIME", key, e)),
    };
    let mut parts = reply
        .into_array()
        .into_iter()
        .map(|v| value_bytes(v).and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse::<u64>().ok())));
    let (secs, micros) = (parts.next().flatten(), parts.next().flatten());
    Ok(secs.unwrap_or(0) * 1000 + micros.unwrap_or(0) / 1000)
}

/// This machine's clock, in Unix milliseconds.
pub(crate) fn local_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
