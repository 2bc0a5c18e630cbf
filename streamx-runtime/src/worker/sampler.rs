//! The gauge sampler of a consumer loop: every `metrics_interval` (jittered), one script on
//! the loop's command client reads the group's lag, pending count, oldest pending entry and
//! dead-letter length, O(1) in the size of the stream and of the PEL, and sets the gauges
//! (see [`crate::observe::gauges`]), with the handlers in flight here.
//!
//! Every process samples the groups it consumes: a sample costs the server about 30 µs
//! (`XINFO GROUPS` is O(groups), `XPENDING - + 1` O(log n), `XLEN` O(1);
//! measured with a PEL of 100,000 entries: see the README's "Monitoring"), so 100 processes
//! sampling every 5 s add 20 cheap scripts a second. No lease is taken, so no process shows
//! a gauge frozen at the value it had when it lost one; dashboards aggregate with
//! `max by (stream, group)`.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use fred::types::scripts::Script;
use fred::types::Value;

use super::shared::Shared;
use super::ticker::Ticker;
use crate::inspect::{estimate_lag, GroupInfo, StreamCounters};
use crate::message::MessageId;
use crate::observe::{GroupSample, LoopGauges};
use crate::scripts::{assemble, NOW_MS};

/// `{lag or -1, pending, oldest pending age ms, dead-letter length or -1, entries read or -1,
/// last delivered id, entries added or -1, length, last generated id}` (the last five only
/// when the lag is -1, for [`estimate_lag`]); nil when the group does not exist.
pub(super) static SAMPLE: LazyLock<Script> = LazyLock::new(|| {
    assemble(
        &[NOW_MS],
        r#"
-- KEYS: stream, [dead letters]; ARGV: group
local function fields(flat)
  local row = {}
  for i = 1, #flat, 2 do row[flat[i]] = flat[i + 1] end
  return row
end
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local group = false
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local row = fields(g)
  if row['name'] == ARGV[1] then group = row end
end
if not group then return false end
-- Redis cannot tell the lag when `lag` is nil (entries deleted inside the unread range, or
-- the group's read counter unknown): the stream's counters go back for the estimate
-- (streamx_runtime::estimate_lag, the one place it is made).
local lag, read, delivered, added, length, generated = group['lag'], -1, '', -1, -1, ''
if not lag then
  lag = -1
  local s = fields(redis.call('XINFO', 'STREAM', KEYS[1]))
  read = group['entries-read'] or -1
  delivered = group['last-delivered-id'] or ''
  added = s['entries-added'] or -1
  length = s['length']
  generated = s['last-generated-id'] or ''
end
local oldest = 0
local first = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1)[1]
if first then
  oldest = math.max(0, now_ms() - tonumber(string.match(first[1], '^(%d+)')))
end
local dlq = -1
if KEYS[2] then dlq = redis.call('XLEN', KEYS[2]) end
return {lag, group['pending'], oldest, dlq, read, delivered, added, length, generated}
"#,
    )
});

/// Samples the group every `every` until the loop stops.
pub(crate) async fn run(shared: Arc<Shared>, every: Duration) {
    let gauges = LoopGauges::new(shared.stream(), shared.group(), &shared.name);
    let mut ticker = Ticker::new(every);
    while ticker.wait(&shared.stopping).await {
        gauges.set_in_flight(shared.slots.saturating_sub(shared.permits.available_permits()));
        match sample(&shared).await {
            Ok(Some(sample)) => gauges.set_group(&sample),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(consumer = %shared.name, error = %e, "cannot sample the group's gauges");
            }
        }
    }
}

/// One sample of the group; `None` when the stream or the group does not exist.
pub(crate) async fn sample(shared: &Shared) -> Result<Option<GroupSample>, fred::error::Error> {
    let mut keys = vec![shared.stream().to_string()];
    keys.extend(shared.keys.dead_letters.clone());
    let client = shared.command.get();
    let reply: Value = match SAMPLE.evalsha_with_reload(&client, keys, vec![shared.group().to_string()]).await {
        Ok(reply) => reply,
        Err(e) => {
            shared.command_failed(&client, &e).await;
            return Err(e);
        }
    };
    Ok(parse(reply))
}

fn parse(reply: Value) -> Option<GroupSample> {
    if reply.is_null() {
        return None;
    }
    let fields = reply.into_array();
    let [lag, pending, oldest, dlq, read, delivered, added, length, generated] = &fields[..] else { return None };
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let id = |v: &Value| v.as_str().and_then(|s| s.parse::<MessageId>().ok());
    let (lag, lag_estimated) = match u64::try_from(n(lag)) {
        Ok(lag) => (lag, false),
        Err(_) => {
            let group = GroupInfo {
                entries_read: u64::try_from(n(read)).ok(),
                last_delivered_id: id(delivered),
                ..GroupInfo::default()
            };
            let stream = StreamCounters {
                length: n(length).max(0) as u64,
                entries_added: u64::try_from(n(added)).ok(),
                last_generated_id: id(generated),
            };
            (estimate_lag(&group, &stream), true)
        }
    };
    Some(GroupSample {
        lag,
        lag_estimated,
        pending: n(pending).max(0) as u64,
        oldest_pending_age_ms: n(oldest).max(0) as u64,
        dead_letters: u64::try_from(n(dlq)).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_reply_parses() {
        let int = Value::Integer;
        let reply =
            Value::Array(vec![int(7), int(3), int(1500), int(-1), int(-1), "".into(), int(-1), int(-1), "".into()]);
        let sample = parse(reply).unwrap();
        assert_eq!(
            sample,
            GroupSample { lag: 7, lag_estimated: false, pending: 3, oldest_pending_age_ms: 1500, dead_letters: None }
        );
        // Unknown lag, the group behind the last entry with no read counter: the stream's length.
        let reply =
            Value::Array(vec![int(-1), int(0), int(0), int(2), int(-1), "5-0".into(), int(12), int(9), "8-0".into()]);
        let sample = parse(reply).unwrap();
        assert_eq!((sample.lag, sample.lag_estimated, sample.dead_letters), (9, true, Some(2)));
        assert_eq!(parse(Value::Null), None);
        assert_eq!(parse(Value::Array(vec![Value::Integer(1)])), None);
    }
}
