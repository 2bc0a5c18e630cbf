//! What a run costs per message: the CPU time of this process (the client) and of the
//! Redis server, and the server's time per command.
//!
//! streamx and the raw baseline run in this same process one after the other, so the
//! process's CPU time between the start and the end of a run is that run's client cost
//! (plus the benchmark's own bookkeeping, alike for both). The server figures come from
//! [`crate::redis_stats`] and are only meaningful on a dedicated Redis.

use std::time::Duration;

use anyhow::Result;
use fred::clients::Client;
use serde::Serialize;

use crate::redis_stats::{self, ServerSample};

/// CPU time this process has used so far, all threads (ns resolution).
pub fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Started before a run; [`Meter::finish`] after it gives the run's [`Cost`].
pub struct Meter {
    client_cpu: Duration,
    server: ServerSample,
}

impl Meter {
    pub async fn start(admin: &Client) -> Result<Meter> {
        let server = redis_stats::sample(admin).await?;
        Ok(Meter { client_cpu: process_cpu(), server })
    }

    /// The cost of the run since [`Meter::start`], which handled `messages` messages.
    pub async fn finish(self, admin: &Client, messages: u64) -> Result<Cost> {
        let client_cpu = process_cpu().saturating_sub(self.client_cpu);
        let server = redis_stats::sample(admin).await?;
        let n = messages.max(1) as f64;
        let commands: Vec<CommandCost> = server
            .commands_since(&self.server)
            .into_iter()
            .map(|d| CommandCost {
                calls_per_msg: d.calls as f64 / n,
                us_per_msg: d.usec as f64 / n,
                command: d.command,
            })
            .collect();
        Ok(Cost {
            messages,
            client_cpu_us: client_cpu.as_secs_f64() * 1e6 / n,
            redis_cpu_us: server.cpu_secs_since(&self.server) * 1e6 / n,
            redis_commands_us: commands.iter().fold(0.0, |sum, c| sum + c.us_per_msg),
            commands,
        })
    }
}

/// One run's cost, per message.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub messages: u64,
    /// CPU time of this process, µs per message.
    pub client_cpu_us: f64,
    /// CPU time of the Redis server (used_cpu_user + used_cpu_sys: commands, networking,
    /// event loop), µs per message.
    pub redis_cpu_us: f64,
    /// Sum of the commands' time (`INFO commandstats` usec), µs per message. Commands a
    /// script calls count twice (on their own and in the script's time).
    pub redis_commands_us: f64,
    /// Per command, most time first.
    pub commands: Vec<CommandCost>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandCost {
    pub command: String,
    pub calls_per_msg: f64,
    pub us_per_msg: f64,
}

/// The costs of the repeats of one measurement: the lowest of each figure (noise from
/// other processes only ever adds CPU time), and the run with the lowest Redis CPU (for its
/// per-command figures).
#[derive(Debug, Clone, Serialize)]
pub struct CostSummary {
    pub client_cpu_us: f64,
    pub redis_cpu_us: f64,
    pub redis_commands_us: f64,
    pub quietest: Cost,
    pub runs: Vec<Cost>,
}

impl CostSummary {
    pub fn of(runs: Vec<Cost>) -> Option<CostSummary> {
        let lowest = |f: fn(&Cost) -> f64| runs.iter().map(f).fold(f64::INFINITY, f64::min);
        let quietest = runs.iter().min_by(|a, b| a.redis_cpu_us.total_cmp(&b.redis_cpu_us))?;
        Some(CostSummary {
            client_cpu_us: lowest(|c| c.client_cpu_us),
            redis_cpu_us: lowest(|c| c.redis_cpu_us),
            redis_commands_us: lowest(|c| c.redis_commands_us),
            quietest: quietest.clone(),
            runs: runs.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(client: f64, redis: f64, command: &str) -> Cost {
        Cost {
            messages: 10,
            client_cpu_us: client,
            redis_cpu_us: redis,
            redis_commands_us: redis / 2.0,
            commands: vec![CommandCost { command: command.into(), calls_per_msg: 0.01, us_per_msg: redis / 2.0 }],
        }
    }

    #[test]
    fn summary_keeps_the_lowest_of_each_figure() {
        let s = CostSummary::of(vec![cost(5.0, 3.0, "a"), cost(4.0, 3.5, "b")]).unwrap();
        assert_eq!((s.client_cpu_us, s.redis_cpu_us, s.redis_commands_us), (4.0, 3.0, 1.5));
        assert_eq!(s.quietest.commands[0].command, "a");
        assert!(CostSummary::of(Vec::new()).is_none());
    }

    #[test]
    fn process_cpu_advances_with_work() {
        let before = process_cpu();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        std::hint::black_box(x);
        assert!(process_cpu() > before);
    }
}
