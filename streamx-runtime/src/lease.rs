//! Leases: one process at a time does a stream's periodic work (the retention trimmer, the
//! promotion of delayed messages), so a fleet of processes costs Redis what one does. A lease
//! is a string key in the stream's hash slot holding its holder's name, with an expiry; the
//! scripts that do the work take or renew it themselves (`GET`; another holder's → do nothing;
//! else `SET ... PX`), so holding it and working are one step. What the work guarantees never
//! rests on the lease (each script is safe when two processes run it): the lease only saves
//! Redis the others' calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

use fred::clients::Client;
use fred::types::scripts::Script;
use fred::types::Value;

/// `take_lease(key, holder, ms)` in a script: true when `holder` has the lease `key` (taken
/// or renewed for `ms`), false when another holder has it.
pub(crate) const TAKE_LEASE: &str = r#"
local function take_lease(key, holder, ms)
  local current = redis.call('GET', key)
  if current and current ~= holder then return false end
  redis.call('SET', key, holder, 'PX', ms)
  return true
end
"#;

/// Releases a lease if this holder has it (a graceful shutdown: another process takes over at
/// its next call instead of when the lease expires). Crash safety: if the process dies before
/// it, the lease expires on its own; re-sent after a reconnect, it deletes nothing more (the
/// lease is no longer this holder's, or already gone).
pub(crate) static RELEASE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
-- KEYS: lease; ARGV: holder
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

/// Releases `lease` if `holder` has it; a failure is logged (the lease expires on its own).
pub(crate) async fn release(client: &Client, lease: String, holder: &str) {
    let released: Result<Value, _> = RELEASE_LEASE.evalsha_with_reload(client, vec![lease.clone()], vec![holder]).await;
    if let Err(e) = released {
        tracing::debug!(lease, error = %e, "cannot release a lease; it expires on its own");
    }
}

/// A name for a lease holder, unique per call in this process: `<hostname>-<pid>-<what>-<n>`.
pub(crate) fn holder_name(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let host =
        gethostname::gethostname().into_string().ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "host".to_string());
    format!("{host}-{}-{what}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}
