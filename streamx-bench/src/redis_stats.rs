//! Samples of the server's own figures: `INFO cpu` (the process's CPU time) and `INFO
//! commandstats` (calls and time per command), and the difference between two samples.
//!
//! Both are server-wide: every client's commands count. Run the benchmark against a
//! dedicated Redis, or the figures include whatever else the server does.
//!
//! Commands called from a Lua script (EVALSHA, FCALL) are counted twice by Redis: on their
//! own line, and inside the time of the script that called them.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Value};
use serde::Serialize;

/// One `INFO cpu commandstats` sample.
pub struct ServerSample {
    pub at: Instant,
    /// used_cpu_user + used_cpu_sys, s.
    pub cpu_secs: f64,
    /// command → (calls, usec).
    pub commands: HashMap<String, (u64, u64)>,
}

/// What one command did between two samples.
#[derive(Debug, Clone, Serialize)]
pub struct CommandDelta {
    pub command: String,
    pub calls: u64,
    pub usec: u64,
}

pub async fn sample(admin: &Client) -> Result<ServerSample> {
    let info: String = admin
        .custom(CustomCommand::new_static("INFO", ClusterHash::Random, false), vec!["cpu", "commandstats"])
        .await
        .context("INFO cpu commandstats")?;
    let at = Instant::now();
    parse(&info, at)
}

fn parse(info: &str, at: Instant) -> Result<ServerSample> {
    let mut cpu_secs = 0.0;
    let mut commands = HashMap::new();
    for line in info.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("used_cpu_user:").or_else(|| line.strip_prefix("used_cpu_sys:")) {
            cpu_secs += v.parse::<f64>().with_context(|| format!("INFO line {line:?}"))?;
        } else if let Some(rest) = line.strip_prefix("cmdstat_") {
            let (name, stats) = rest.split_once(':').with_context(|| format!("INFO line {line:?}"))?;
            let field = |key: &str| {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .with_context(|| format!("no {key} in INFO line {line:?}"))
            };
            commands.insert(name.to_string(), (field("calls")?, field("usec")?));
        }
    }
    Ok(ServerSample { at, cpu_secs, commands })
}

impl ServerSample {
    /// Server CPU time since `before`, s.
    pub fn cpu_secs_since(&self, before: &ServerSample) -> f64 {
        (self.cpu_secs - before.cpu_secs).max(0.0)
    }

    /// The commands called since `before` (INFO, the sampler's own, left out), most time
    /// first.
    pub fn commands_since(&self, before: &ServerSample) -> Vec<CommandDelta> {
        let mut deltas: Vec<CommandDelta> = self
            .commands
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .filter_map(|(name, &(calls, usec))| {
                let (calls0, usec0) = before.commands.get(name).copied().unwrap_or((0, 0));
                let (calls, usec) = (calls.saturating_sub(calls0), usec.saturating_sub(usec0));
                (calls > 0).then(|| CommandDelta { command: name.clone(), calls, usec })
            })
            .collect();
        deltas.sort_by(|a, b| b.usec.cmp(&a.usec).then(b.calls.cmp(&a.calls)).then(a.command.cmp(&b.command)));
        deltas
    }
}

/// The slow log, set up to catch scripts for a phase: `CONFIG SET slowlog-log-slower-than`
/// and `slowlog-max-len`, the previous values put back by [`SlowLog::restore`]. Entries are
/// told apart by id, so the log is never reset (other clients' entries stay).
pub struct SlowLog {
    previous: Vec<(String, String)>,
    threshold_us: u64,
    len: u64,
}

/// One command in the slow log.
#[derive(Debug, Clone, Serialize)]
pub struct SlowEntry {
    pub id: i64,
    /// Time inside the command (for a script, with the commands it called), µs.
    pub usec: u64,
    /// The command's name, lower case (`evalsha`).
    pub command: String,
}

impl SlowLog {
    /// Logs every command that takes at least `threshold_us`, keeping the last `len`.
    pub async fn enable(admin: &Client, threshold_us: u64, len: u64) -> Result<Self> {
        let mut previous = Vec::new();
        for name in ["slowlog-log-slower-than", "slowlog-max-len"] {
            let reply: Value = admin
                .custom(CustomCommand::new_static("CONFIG", ClusterHash::Random, false), vec!["GET", name])
                .await
                .with_context(|| format!("CONFIG GET {name}"))?;
            let value = config_value(reply, name).with_context(|| format!("CONFIG GET {name}: no value"))?;
            previous.push((name.to_string(), value));
        }
        let log = SlowLog { previous, threshold_us, len };
        log.set(admin, &[("slowlog-log-slower-than", threshold_us.to_string()), ("slowlog-max-len", len.to_string())])
            .await?;
        Ok(log)
    }

    /// The threshold set, µs.
    pub fn threshold_us(&self) -> u64 {
        self.threshold_us
    }

    /// The id of the newest entry (`None`: the log is empty).
    pub async fn last_id(&self, admin: &Client) -> Result<Option<i64>> {
        Ok(self.entries(admin, 1).await?.first().map(|e| e.id))
    }

    /// The entries newer than `after`, oldest first (at most the log's length).
    pub async fn since(&self, admin: &Client, after: Option<i64>) -> Result<Vec<SlowEntry>> {
        let mut entries = self.entries(admin, self.len as i64).await?;
        entries.retain(|e| after.is_none_or(|a| e.id > a));
        entries.reverse();
        Ok(entries)
    }

    /// Puts the previous settings back.
    pub async fn restore(self, admin: &Client) -> Result<()> {
        let previous: Vec<(&str, String)> = self.previous.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        self.set(admin, &previous).await
    }

    async fn set(&self, admin: &Client, settings: &[(&str, String)]) -> Result<()> {
        for (name, value) in settings {
            let _: Value = admin
                .custom(
                    CustomCommand::new_static("CONFIG", ClusterHash::Random, false),
                    vec!["SET".to_string(), name.to_string(), value.clone()],
                )
                .await
                .with_context(|| format!("CONFIG SET {name} {value}"))?;
        }
        Ok(())
    }

    /// `SLOWLOG GET count`, newest first.
    async fn entries(&self, admin: &Client, count: i64) -> Result<Vec<SlowEntry>> {
        let reply: Value = admin
            .custom(
                CustomCommand::new_static("SLOWLOG", ClusterHash::Random, false),
                vec!["GET".to_string(), count.to_string()],
            )
            .await
            .context("SLOWLOG GET")?;
        Ok(reply.into_array().into_iter().filter_map(slow_entry).collect())
    }
}

/// `[id, unix time, µs, [command, args...], client address, client name]`.
fn slow_entry(v: Value) -> Option<SlowEntry> {
    let mut parts = v.into_array().into_iter();
    let id = parts.next()?.as_i64()?;
    let _at = parts.next()?;
    let usec = parts.next()?.as_u64()?;
    let command = parts.next()?.into_array().into_iter().next()?.as_string()?.to_ascii_lowercase();
    Some(SlowEntry { id, usec, command })
}

/// The value of `name` in a CONFIG GET reply (RESP2 pairs or a RESP3 map).
fn config_value(reply: Value, name: &str) -> Option<String> {
    match reply {
        Value::Map(map) => {
            map.inner().into_iter().find(|(k, _)| k.as_str() == Some(name)).and_then(|(_, v)| v.as_string())
        }
        Value::Array(items) => {
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if k.as_string().as_deref() == Some(name) {
                    return v.as_string();
                }
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\n\r\n# Commandstats\r\n\
        cmdstat_xack:calls=10,usec=100,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=3,usec=90,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n";
    const AFTER: &str = "# CPU\r\nused_cpu_sys:2.000000\r\nused_cpu_user:3.000000\r\n\r\n# Commandstats\r\n\
        cmdstat_xack:calls=30,usec=300,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_xreadgroup:calls=4,usec=800,usec_per_call=200.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=4,usec=120,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn slow_log_entries_and_config_values() {
        let entry = Value::Array(vec![
            Value::Integer(7),
            Value::Integer(1_700_000_000),
            Value::Integer(14_230),
            Value::Array(vec![Value::from("EVALSHA"), Value::from("abc"), Value::from("5")]),
            Value::from("127.0.0.1:50000"),
            Value::from(""),
        ]);
        let e = slow_entry(entry).unwrap();
        assert_eq!((e.id, e.usec, e.command.as_str()), (7, 14_230, "evalsha"));
        assert!(slow_entry(Value::Array(vec![Value::Integer(1)])).is_none(), "a short entry is skipped");
        let reply = Value::Array(vec![Value::from("slowlog-max-len"), Value::from("128")]);
        assert_eq!(config_value(reply, "slowlog-max-len").as_deref(), Some("128"));
        let reply = Value::Array(vec![Value::from("slowlog-max-len"), Value::from("128")]);
        assert_eq!(config_value(reply, "slowlog-log-slower-than"), None);
    }

    #[test]
    fn differences_of_two_samples() {
        let now = Instant::now();
        let (before, after) = (parse(BEFORE, now).unwrap(), parse(AFTER, now).unwrap());
        assert!((after.cpu_secs_since(&before) - 1.25).abs() < 1e-9);
        let deltas = after.commands_since(&before);
        let got: Vec<(&str, u64, u64)> = deltas.iter().map(|d| (d.command.as_str(), d.calls, d.usec)).collect();
        assert_eq!(got, vec![("xreadgroup", 4, 800), ("xack", 20, 200)]);
    }
}
