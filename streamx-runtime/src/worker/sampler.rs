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
use crate::observe::{GroupSample, LoopGauges};
use crate::scripts::{assemble, NOW_MS};

/// `{lag or -1, estimated 0/1, pending, oldest pending age ms, dead-letter length or -1}`;
/// nil when the group does not exist.
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
local lag, estimated = group['lag'], 0
if not lag then
  -- Redis cannot tell (entries deleted inside the unread range, or the group's read
  -- counter unknown): estimate from the stream's counters.
  estimated = 1
  local s = fields(redis.call('XINFO', 'STREAM', KEYS[1]))
  if group['entries-read'] then
    lag = math.max(0, s['entries-added'] - group['entries-read'])
  elseif group['last-delivered-id'] == s['last-generated-id'] then
    lag = 0
  else
    lag = s['length']
  end
end
local oldest = 0
local first = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1)[1]
if first then
  oldest = math.max(0, now_ms() - tonumber(string.match(first[1], '^(%d+)')))
end
local dlq = -1
if KEYS[2] then dlq = redis.call('XLEN', KEYS[2]) end
return {lag, estimated, group['pending'], oldest, dlq}
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
    let n: Vec<i64> = reply.into_array().into_iter().map(|v| v.as_i64().unwrap_or(0)).collect();
    let [lag, estimated, pending, oldest, dlq] = n[..] else { return None };
    Some(GroupSample {
        lag: lag.max(0) as u64,
        lag_estimated: estimated == 1,
        pending: pending.max(0) as u64,
        oldest_pending_age_ms: oldest.max(0) as u64,
        dead_letters: u64::try_from(dlq).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_reply_parses() {
        let reply = Value::Array([7, 1, 3, 1500, -1].into_iter().map(Value::Integer).collect());
        let sample = parse(reply).unwrap();
        assert_eq!(
            sample,
            GroupSample { lag: 7, lag_estimated: true, pending: 3, oldest_pending_age_ms: 1500, dead_letters: None }
        );
        assert_eq!(parse(Value::Null), None);
        assert_eq!(parse(Value::Array(vec![Value::Integer(1)])), None);
    }
}
