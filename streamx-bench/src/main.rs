//! Run with: cargo run --release -p streamx-bench -- --help
//!
//! Benchmarks streamx against a raw baseline written directly with fred, on the same Redis
//! and the same workload, in one run: produce (against the fastest of several raw producer
//! designs, SeaStreamer's producer and redis-benchmark as the ceiling), concurrent (1,000
//! tasks awaiting `publish` one message at a time, against `publish_batch` and a raw fred
//! client), consume (concurrency 1, 8, 64; and batch-sizes: explicit `batch_size` against
//! the raw loop's COUNT), with the client's and the server's CPU time per
//! message and the server's time per command, latency at steady rates, an I/O-bound
//! handler, the peak RSS of a consume-only process (small and ~1 MiB entries), and (scale)
//! the Redis cost of idle consumers with a large pending entries list and the take-over
//! rate, and (takeover) the time and Redis CPU of a 20,000-entry take-over by a batch
//! consumer and of the drain of 3,000 crash suspects, and (topic) a sharded topic against
//! one stream on a 3-master Redis Cluster it starts itself. Prints each figure with its ratio
//! streamx/raw and the project's targets with PASS/MISS.
//!
//! Server figures count every client of the server: use a dedicated Redis.
//!
//! Every run uses fresh, uniquely named streams and deletes them at the end (also on
//! Ctrl-C). See BENCHMARKS.md for the figures of a full run.

mod args;
mod batch_sizes;
mod ceiling;
mod codecs;
mod concurrent;
mod cost;
mod features;
mod latency;
mod memory;
mod middleware;
mod ordered;
mod phases;
mod progress;
mod rate_limit;
mod raw;
mod raw_producer;
mod redis_stats;
mod references;
mod report;
mod scale;
mod seastreamer;
mod streamx_side;
mod takeover;
mod topic;
mod workload;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

use args::{BenchArgs, Cli, Command, Phase, Settings};
use workload::Keys;

/// How a run ended.
enum Ended {
    Done,
    Interrupted,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // No logging unless asked for with RUST_LOG (e.g. RUST_LOG=streamx=debug).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let ended = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(anyhow::Error::from).and_then(
        |runtime| match cli.command {
            Some(Command::ConsumeOnly(args)) => runtime.block_on(memory::consume_only(args)).map(|()| Ended::Done),
            None => runtime.block_on(bench(cli.bench)),
        },
    );
    match ended {
        Ok(Ended::Done) => ExitCode::SUCCESS,
        Ok(Ended::Interrupted) => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(args: BenchArgs) -> Result<Ended> {
    let settings = Settings::resolve(&args)?;
    let keys = Keys::new();
    let mut results = phases::new_results(&settings);
    // The topic phase starts a cluster of its own: `--only topic` needs no Redis at `--url`.
    if settings.phases.iter().any(|p| *p != Phase::Topic) {
        let admin = raw::connect(&settings.url).await?;
        let outcome = tokio::select! {
            outcome = phases::run(&settings, &keys, &admin, &mut results) => outcome,
            _ = tokio::signal::ctrl_c() => {
                progress::note("\ninterrupted: deleting this run's keys");
                cleanup(&admin, &keys).await;
                // A consumer loop cut off mid-read may still touch a key: delete once more.
                tokio::time::sleep(Duration::from_millis(300)).await;
                cleanup(&admin, &keys).await;
                return Ok(Ended::Interrupted);
            }
        };
        cleanup(&admin, &keys).await;
        outcome?;
    }
    if settings.runs(Phase::Topic) {
        // Interrupted, the phase's future is dropped, and with it the cluster (its nodes
        // are killed): nothing to delete.
        tokio::select! {
            row = topic::run(&settings) => results.topic = Some(row?),
            _ = tokio::signal::ctrl_c() => {
                progress::note("\ninterrupted: stopping the topic phase's cluster");
                return Ok(Ended::Interrupted);
            }
        }
    }
    results.load_after = phases::loadavg();
    results.check_targets();
    let table = results.table();
    if args.json {
        eprint!("\n{table}");
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("\n{table}");
    }
    Ok(Ended::Done)
}

/// Deletes every key this run created, and the ones the engine derived from them (best
/// effort: a failure is reported, not fatal).
async fn cleanup(admin: &fred::clients::Client, keys: &Keys) {
    let mut outcome = raw::delete(admin, keys.all()).await;
    for pattern in keys.patterns() {
        outcome = outcome.and(raw::delete_matching(admin, &pattern).await);
    }
    if let Err(e) = outcome {
        progress::note(&format!("warning: could not delete this run's keys: {e:#}"));
    }
}
