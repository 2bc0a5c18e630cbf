//! The batch-sizes phase (issue 26): the consume phase's drain of the backlog, streamx at
//! concurrency 8 with `.batch_size(b)` for each of `--batch-sizes` (default read loops,
//! 8 at this concurrency) and once with `.readers(2).batch_size(100)`, each against the raw
//! loop reading `COUNT b` with as many readers. Alternating sides as the consume phase does;
//! ratios streamx/raw and the cost per message of each side.

use anyhow::Result;
use fred::clients::Client;
use serde::Serialize;

use crate::args::{Settings, Side};
use crate::cost::{Cost, CostSummary};
use crate::phases::{drain_raw, drain_streamx, order, split, ConsumerShape};
use crate::progress::note;
use crate::raw::{ReadPlan, MAX_READERS};
use crate::report::Throughput;
use crate::streamx_side::{ReadTuning, Work};
use crate::workload::Keys;

/// Handler concurrency of the streamx consumer.
pub const CONCURRENCY: usize = 8;
/// The extra row: `.readers(READERS_ROW.0).batch_size(READERS_ROW.1)`.
const READERS_ROW: (usize, usize) = (2, 100);

#[derive(Debug, Clone, Serialize)]
pub struct BatchSizeRow {
    pub concurrency: usize,
    /// `.batch_size(n)` of the streamx consumer (the raw loop's COUNT).
    pub batch_size: usize,
    /// `.readers(n)` of the streamx consumer; `None`: the default (8 at concurrency 8).
    pub readers: Option<usize>,
    /// Reader tasks of the raw consumer.
    pub raw_readers: usize,
    #[serde(flatten)]
    pub throughput: Throughput,
    pub streamx_cost: Option<CostSummary>,
    pub raw_cost: Option<CostSummary>,
}

impl BatchSizeRow {
    /// How the row reads in the report.
    pub fn name(&self) -> String {
        describe(self.batch_size, self.readers)
    }

    /// [`BatchSizeRow::name`], short (`r=2 b=100`), for the report's sub-rows.
    pub fn short_name(&self) -> String {
        match self.readers {
            Some(r) => format!("r={r} b={}", self.batch_size),
            None => format!("b={}", self.batch_size),
        }
    }
}

/// The rows' streamx tuning and the raw plan each is compared with.
fn configurations(batch_sizes: &[usize]) -> Vec<(ReadTuning, ReadPlan)> {
    let mut rows: Vec<(ReadTuning, ReadPlan)> = batch_sizes
        .iter()
        .map(|&b| {
            let tuning = ReadTuning { batch_size: Some(b), readers: None };
            (tuning, ReadPlan { readers: CONCURRENCY.min(MAX_READERS), count: b as u64 })
        })
        .collect();
    let (readers, b) = READERS_ROW;
    rows.push((ReadTuning { batch_size: Some(b), readers: Some(readers) }, ReadPlan { readers, count: b as u64 }));
    rows
}

/// Runs the phase on `backlog` (`--messages` entries).
pub async fn run(s: &Settings, keys: &Keys, admin: &Client, backlog: &str) -> Result<Vec<BatchSizeRow>> {
    let configs = configurations(&s.batch_sizes);
    note(&format!(
        "== batch-sizes: drain {} messages, streamx c={CONCURRENCY} with batch_size {:?} (default readers) and \
         readers {} batch_size {}, vs raw readers reading COUNT batch_size, best of {}",
        s.messages, s.batch_sizes, READERS_ROW.0, READERS_ROW.1, s.repeat
    ));
    let mut sx_runs: Vec<Vec<(f64, Cost)>> = vec![Vec::new(); configs.len()];
    let mut raw_runs: Vec<Vec<(f64, Cost)>> = vec![Vec::new(); configs.len()];
    for r in 0..s.repeat {
        for side in order(r) {
            for (i, (tuning, plan)) in configs.iter().enumerate() {
                let what = describe(plan.count as usize, tuning.readers);
                match side {
                    Side::Streamx => {
                        let label = format!("batch-sizes streamx c={CONCURRENCY} {what} run {}/{}", r + 1, s.repeat);
                        let shape = ConsumerShape { read: *tuning, ..ConsumerShape::new(CONCURRENCY, Work::None) };
                        sx_runs[i].push(drain_streamx(s, keys, admin, backlog, &label, shape, s.messages).await?);
                    }
                    Side::Raw => {
                        let label = format!(
                            "batch-sizes raw {} readers COUNT {} run {}/{}",
                            plan.readers,
                            plan.count,
                            r + 1,
                            s.repeat
                        );
                        raw_runs[i].push(drain_raw(s, keys, admin, backlog, &label, *plan).await?);
                    }
                }
            }
        }
    }
    let rows = configs
        .iter()
        .zip(sx_runs.iter().zip(&raw_runs))
        .map(|((tuning, plan), (sx, raw))| {
            let ((sx_rates, streamx_cost), (raw_rates, raw_cost)) = (split(sx), split(raw));
            BatchSizeRow {
                concurrency: CONCURRENCY,
                batch_size: plan.count as usize,
                readers: tuning.readers,
                raw_readers: plan.readers,
                throughput: Throughput::new(sx_rates, raw_rates),
                streamx_cost,
                raw_cost,
            }
        })
        .collect();
    Ok(rows)
}

fn describe(batch_size: usize, readers: Option<usize>) -> String {
    match readers {
        Some(r) => format!("readers={r} batch_size={batch_size}"),
        None => format!("batch_size={batch_size}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_batch_size_meets_raw_with_as_many_readers_and_count() {
        let configs = configurations(&[10, 500]);
        assert_eq!(configs.len(), 3);
        assert_eq!(configs[0].0, ReadTuning { batch_size: Some(10), readers: None });
        assert_eq!(configs[0].1, ReadPlan { readers: 8, count: 10 });
        assert_eq!(configs[2].0, ReadTuning { batch_size: Some(100), readers: Some(2) });
        assert_eq!(configs[2].1, ReadPlan { readers: 2, count: 100 });
    }
}
