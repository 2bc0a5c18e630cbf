//! Fencing: what stops a process that lost a shard's lease (paused past it, cut off from
//! Redis) from acting on the shard after another process took it.
//!
//! The owner of a shard holds its lease (`KeyKind::ShardLease`), whose value
//! `<epoch>:<member>` is the fencing token: the epoch counter goes up by one each time any
//! process takes the lease, so no two owners ever hold the same token. Every script of the
//! consumer loop that acknowledges, claims, parks for a retry or dead-letters an entry of a
//! shard is called with the lease key and the token appended ([`Fence::append`]) and begins
//! with [`FENCE`]: if the lease no longer holds the token, it changes nothing and fails with
//! `STREAMX_FENCED`, and the loop stops ([`is_fenced`]). Reads cannot run in a script (they
//! block), so they are fenced by time instead: a read is sent only while the lease is known
//! to hold for longer than the read may block ([`Fence::holds_for`]), measured from when the
//! renewal was sent, so Redis's own expiry is never earlier than the process thinks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use fred::types::scripts::Script;
use std::time::{Duration, Instant};

/// The marker that starts the last argument of a fenced script call: the rest is the token.
pub(crate) const FENCE_MARKER: &str = "streamx-fence:";

/// What a read leaves between the end of its BLOCK and the lease's expiry (the server-side
/// read may end that much after the client sent it, on a busy machine).
pub(crate) const READ_MARGIN: Duration = Duration::from_millis(250);

/// The error code a fenced script answers with.
pub(crate) const FENCED_CODE: &str = "STREAMX_FENCED";

/// The fence check, first in every script that may be called by a shard's loop: when the last
/// argument is [`FENCE_MARKER`]`<token>`, it and the last key (the lease) are taken off
/// `ARGV` and `KEYS`, and the script goes on only if the lease holds the token. A script
/// called without a fence (a stream's loop) runs as before. `fenced_owner` tells the rest of
/// the script that the caller owns the shard (the take-over then treats every other member
/// as stopped: only the owner may hold the shard's entries).
pub(crate) const FENCE: &str = r#"
local fenced_owner = false
do
  local last = ARGV[#ARGV]
  if last and string.sub(last, 1, 14) == 'streamx-fence:' then
    table.remove(ARGV)
    local lease = table.remove(KEYS)
    if redis.call('GET', lease) ~= string.sub(last, 15) then
      return redis.error_reply('STREAMX_FENCED the lease of this shard has moved to another process')
    end
    fenced_owner = true
  end
end
"#;

/// The fence of one owned shard: its lease key, the token, and until when the lease is known
/// to hold.
#[derive(Debug)]
pub(crate) struct Fence {
    lease: String,
    token: String,
    /// Woken by each renewal.
    renewals: tokio::sync::Notify,
    /// Milliseconds since [`EPOCH`] until which the lease holds (the last renewal's send time
    /// plus the lease time).
    holds_until: AtomicU64,
}

/// The process's own clock origin for [`Fence::holds_until`].
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Fence {
    /// The fence of a lease taken with `token`, its request sent at `sent` and lasting `ttl`.
    pub(crate) fn new(lease: String, token: String, sent: Instant, ttl: Duration) -> Self {
        let fence = Fence { lease, token, renewals: tokio::sync::Notify::new(), holds_until: AtomicU64::new(0) };
        fence.renewed(sent, ttl);
        fence
    }

    /// The lease was renewed by a request sent at `sent`, for `ttl`.
    pub(crate) fn renewed(&self, sent: Instant, ttl: Duration) {
        let sent_ms = u64::try_from(sent.saturating_duration_since(*EPOCH).as_millis()).unwrap_or(u64::MAX);
        let until = sent_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        self.holds_until.fetch_max(until, Ordering::AcqRel);
        self.renewals.notify_waiters();
    }

    /// Waits until the lease is known to hold for at least `wanted`; `false` if `stop` came
    /// first (a lease that is not renewed in time is given up by its owner, which stops the
    /// loop).
    pub(crate) async fn wait_holds(&self, wanted: Duration, stop: &tokio_util::sync::CancellationToken) -> bool {
        loop {
            let renewed = self.renewals.notified();
            if self.holds_for() >= wanted {
                return true;
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = renewed => {}
            }
        }
    }

    /// How long the lease is known to hold from now (zero once it may have expired).
    pub(crate) fn holds_for(&self) -> Duration {
        Duration::from_millis(self.holds_until.load(Ordering::Acquire).saturating_sub(now_ms()))
    }

    /// The token (the lease's value).
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Appends the lease to a script's keys and the marked token to its arguments (see
    /// [`FENCE`]).
    pub(crate) fn append<A: From<String>>(&self, keys: &mut Vec<String>, args: &mut Vec<A>) {
        keys.push(self.lease.clone());
        args.push(A::from(format!("{FENCE_MARKER}{}", self.token)));
    }
}

/// The read of a topic shard's loop: `XREADGROUP ... >` without BLOCK, in a script behind
/// the fence, so no read of a loop whose lease moved (a paused process, a read a stopped
/// loop left behind) ever delivers an entry: entries reach only the shard's owner. Returns
/// `{entries, last}`: the entries read (`[id, fields]` each) and, when there were none, the
/// stream's last id (what [`wait_for_entries`] blocks after). Crash safety: a read; if the
/// reply is lost, what it delivered is pending under the loop's name and taken up again.
pub(crate) static FENCED_READ: LazyLock<Script> = LazyLock::new(|| {
    crate::scripts::assemble(
        &[FENCE],
        r#"
-- KEYS: stream; ARGV: group, me, count
local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if read and read[1] and #read[1][2] > 0 then return {read[1][2], ''} end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
return {{}, last and last[1] or '0-0'}
"#,
    )
});

/// One fenced read of `count` entries of `stream` for `member` of `group` (see
/// [`FENCED_READ`]); when it finds none and `block` is given, waits (`XREAD BLOCK`, no group:
/// it delivers nothing) until an entry is added after the stream's last one or `block`
/// passed, then returns nothing (the caller reads again).
pub(crate) async fn read(
    client: &fred::clients::Client,
    fence: &Fence,
    stream: &str,
    group: &str,
    member: &str,
    count: usize,
    block: Option<Duration>,
) -> Result<Vec<crate::wire::RawEntry>, fred::error::Error> {
    use fred::interfaces::ClientLike;
    use fred::types::{ClusterHash, CustomCommand, Value};
    let mut keys = vec![stream.to_string()];
    let mut args = vec![group.to_string(), member.to_string(), count.max(1).to_string()];
    fence.append(&mut keys, &mut args);
    let reply: Value = FENCED_READ.evalsha_with_reload(client, keys, args).await?;
    let mut parts = reply.into_array().into_iter();
    let entries: Vec<crate::wire::RawEntry> = parts
        .next()
        .map(|v| v.into_array().into_iter().filter_map(crate::wire::parse_entry).collect())
        .unwrap_or_default();
    if !entries.is_empty() {
        return Ok(entries);
    }
    let (Some(block), Some(last)) = (block, parts.next().and_then(|v| v.into_string())) else { return Ok(entries) };
    let slot = ClusterHash::Custom(crate::keys::slot(stream));
    let ms = i64::try_from(block.as_millis().max(1)).unwrap_or(i64::MAX);
    let wait = CustomCommand::new_static("XREAD", slot, true);
    let args = vec![
        Value::from_static_str("BLOCK"),
        Value::Integer(ms),
        Value::from_static_str("COUNT"),
        Value::Integer(1),
        Value::from_static_str("STREAMS"),
        Value::from(stream),
        Value::from(last),
    ];
    let _: Value = client.custom(wait, args).await?;
    Ok(Vec::new())
}

/// Whether a script failed because the loop's shard moved to another process.
pub(crate) fn is_fenced(e: &fred::error::Error) -> bool {
    e.details().contains(FENCED_CODE)
}

/// `append` for an optional fence.
pub(crate) fn append_opt<A: From<String>>(fence: Option<&Fence>, keys: &mut Vec<String>, args: &mut Vec<A>) {
    if let Some(fence) = fence {
        fence.append(keys, args);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_in_the_script_is_the_one_appended() {
        assert!(FENCE.contains(&format!("'{FENCE_MARKER}'")));
        assert!(FENCE.contains(&format!("string.sub(last, 1, {})", FENCE_MARKER.len())));
        assert!(FENCE.contains(&format!("string.sub(last, {})", FENCE_MARKER.len() + 1)));
        assert!(FENCE.contains(FENCED_CODE));
    }

    #[test]
    fn a_fence_holds_from_the_send_time() {
        let sent = Instant::now();
        let fence = Fence::new("l".into(), "1:m".into(), sent, Duration::from_secs(10));
        assert!(fence.holds_for() > Duration::from_secs(9));
        let old = sent.checked_sub(Duration::from_secs(20)).unwrap_or(sent);
        fence.renewed(old, Duration::from_secs(10));
        assert!(fence.holds_for() > Duration::from_secs(9), "an older renewal never shortens it");
    }
}
