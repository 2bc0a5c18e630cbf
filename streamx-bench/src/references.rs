//! The produce phase's references beside the raw fred designs (issue 26): SeaStreamer's
//! Redis producer, measured in this process like the others ([`crate::seastreamer`]), and
//! the ceiling, `redis-benchmark` ([`crate::ceiling`]). Either is skipped with a note when
//! it cannot run (crate left out of the build, cannot connect, binary absent), and the
//! phase goes on.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{Context, Result};
use fred::clients::Client;
use fred::interfaces::StreamsInterface;
use serde::Serialize;

use crate::args::Settings;
use crate::ceiling::{self, Shape};
use crate::cost::{Cost, CostSummary, Meter};
use crate::phases::timed_publish;
use crate::progress::{note, Progress};
use crate::raw;
use crate::report::{best, Throughput};
use crate::seastreamer;
use crate::workload::{Event, Keys};

/// A reference's figures, or why it was not measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reference<T> {
    Measured(T),
    Skipped(String),
}

impl<T> Reference<T> {
    pub fn measured(&self) -> Option<&T> {
        match self {
            Reference::Measured(t) => Some(t),
            Reference::Skipped(_) => None,
        }
    }
}

/// `publish_batch` against SeaStreamer's producer.
#[derive(Debug, Clone, Serialize)]
pub struct SeaStreamerRow {
    /// The entry field SeaStreamer writes the payload in (streamx and raw: `data`).
    pub message_field: &'static str,
    /// streamx's `publish_batch` (`streamx`) against SeaStreamer (`raw`).
    #[serde(flatten)]
    pub throughput: Throughput,
    pub cost: Option<CostSummary>,
}

/// `publish_batch` against `redis-benchmark` with one shape.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingRow {
    #[serde(flatten)]
    pub shape: Shape,
    /// requests/s as redis-benchmark reports them, best run.
    pub best: f64,
    pub runs: Vec<f64>,
    /// streamx's best `publish_batch` msg/s / [`CeilingRow::best`].
    pub ratio: f64,
    /// Redis CPU per XADD, µs, least of the runs.
    pub redis_cpu_us: f64,
}

/// SeaStreamer's runs so far, or why it stopped.
#[derive(Default)]
pub struct SeaStreamerRuns {
    runs: Vec<f64>,
    costs: Vec<Cost>,
    skipped: Option<String>,
}

impl SeaStreamerRuns {
    /// One run of `batch` (its label ends with `run`); a failure is noted and ends the
    /// reference's runs, not the phase (only deleting the stream can fail here).
    pub async fn measure(
        &mut self,
        s: &Settings,
        keys: &Keys,
        admin: &Client,
        batch: &Arc<Vec<Event>>,
        run: &str,
    ) -> Result<()> {
        if self.skipped.is_some() {
            return Ok(());
        }
        let stream = keys.plain_stream("produce-seastreamer");
        let label = format!("produce SeaStreamer {run}");
        let done = Arc::new(AtomicU64::new(0));
        let publish = seastreamer::publish(&s.url, &stream, batch.clone(), done.clone());
        match timed_publish(s, admin, &label, &done, publish).await {
            Ok((rate, cost)) => {
                self.runs.push(rate);
                self.costs.push(cost);
            }
            Err(e) => {
                note(&format!("{label}: skipped: {e:#}"));
                self.skipped = Some(format!("{e:#}"));
            }
        }
        raw::delete(admin, vec![stream]).await
    }

    /// The row against streamx's `publish_batch` runs.
    pub fn finish(self, streamx_runs: &[f64]) -> Reference<SeaStreamerRow> {
        if self.runs.is_empty() {
            return Reference::Skipped(self.skipped.unwrap_or_else(|| "not run".to_string()));
        }
        // A later run that failed leaves the earlier ones counted (and a note).
        Reference::Measured(SeaStreamerRow {
            message_field: seastreamer::MESSAGE_FIELD,
            throughput: Throughput::new(streamx_runs.to_vec(), self.runs),
            cost: CostSummary::of(self.costs),
        })
    }
}

/// The ceiling's runs so far, per [`Shape::ALL`], or why there are none.
pub struct CeilingRuns {
    binary: Result<PathBuf, String>,
    runs: Vec<Vec<(f64, f64)>>,
}

impl CeilingRuns {
    pub fn new() -> Self {
        let binary = ceiling::binary();
        if let Err(reason) = &binary {
            note(&format!("produce: no ceiling: {reason}"));
        }
        CeilingRuns { binary, runs: vec![Vec::new(); Shape::ALL.len()] }
    }

    /// One run of each shape (its label ends with `run`); a failure is noted and ends the
    /// reference's runs, not the phase.
    pub async fn measure(&mut self, s: &Settings, keys: &Keys, admin: &Client, run: &str) -> Result<()> {
        let Ok(binary) = self.binary.clone() else { return Ok(()) };
        for (i, shape) in Shape::ALL.into_iter().enumerate() {
            let stream = keys.stream("produce-ceiling");
            let label = format!("produce redis-benchmark {} {run}", shape.label());
            let progress = Progress::start(&label, s.messages, Arc::new(AtomicU64::new(0)));
            let measured = async {
                let meter = Meter::start(admin).await?;
                let rate = ceiling::run(&binary, &s.url, &stream, s.messages, shape).await?;
                // redis-benchmark rounds the requests up to whole pipelines per client.
                let added: u64 = admin.xlen(stream.as_str()).await.context("XLEN")?;
                Ok::<_, anyhow::Error>((rate, meter.finish(admin, added).await?))
            }
            .await;
            let deleted = raw::delete(admin, vec![stream]).await;
            match measured {
                Ok((rate, cost)) => {
                    progress.finish(&format!("{rate:.0} msg/s; Redis {:.2} us/msg", cost.redis_cpu_us)).await;
                    self.runs[i].push((rate, cost.redis_cpu_us));
                }
                Err(e) => {
                    progress.finish(&format!("skipped: {e:#}")).await;
                    self.binary = Err(format!("{e:#}"));
                    return deleted;
                }
            }
            deleted?;
        }
        Ok(())
    }

    /// The rows against streamx's best `publish_batch` msg/s.
    pub fn finish(self, streamx_best: f64) -> Reference<Vec<CeilingRow>> {
        if self.runs.iter().any(Vec::is_empty) {
            return Reference::Skipped(self.binary.err().unwrap_or_else(|| "not run".to_string()));
        }
        let rows = Shape::ALL
            .into_iter()
            .zip(self.runs)
            .map(|(shape, runs)| {
                let rates: Vec<f64> = runs.iter().map(|(rate, _)| *rate).collect();
                let top = best(&rates);
                CeilingRow {
                    shape,
                    best: top,
                    ratio: streamx_best / top,
                    redis_cpu_us: runs.iter().map(|(_, cpu)| *cpu).fold(f64::INFINITY, f64::min),
                    runs: rates,
                }
            })
            .collect();
        Reference::Measured(rows)
    }
}
