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
use fred::types::{ClusterHash, CustomCommand};
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
    fn differences_of_two_samples() {
        let now = Instant::now();
        let (before, after) = (parse(BEFORE, now).unwrap(), parse(AFTER, now).unwrap());
        assert!((after.cpu_secs_since(&before) - 1.25).abs() < 1e-9);
        let deltas = after.commands_since(&before);
        let got: Vec<(&str, u64, u64)> = deltas.iter().map(|d| (d.command.as_str(), d.calls, d.usec)).collect();
        assert_eq!(got, vec![("xreadgroup", 4, 800), ("xack", 20, 200)]);
    }
}
