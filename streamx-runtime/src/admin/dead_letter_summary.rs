//! A dead-letter stream's letters counted by origin stream, group and kind: what
//! `streamx dlq overview` shows for every stream.

use std::collections::BTreeMap;

use fred::clients::Client;

use crate::dead_letters::DeadLetters;
use crate::error::Result;

/// Letters read per XRANGE by [`DeadLetterSummary::read`].
pub const DEFAULT_SUMMARY_PAGE: u64 = 1000;

/// How many letters of one (origin stream, group, kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterCount {
    /// The stream the letters came from (`dlq:stream`).
    pub origin_stream: String,
    /// The group that gave up on them (`dlq:group`).
    pub group: String,
    /// Why (`dlq:kind`: `error`, `permanent`, ...; `unknown` for a kind this version does
    /// not know).
    pub kind: String,
    /// How many.
    pub count: u64,
}

/// The letters of one dead-letter stream, counted by origin stream, group and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSummary {
    /// The dead-letter stream.
    pub dead_letter_stream: String,
    /// Letters in it (XLEN).
    pub total: u64,
    /// Letters read to count them (oldest first).
    pub scanned: u64,
    /// Whether every letter was read (false when the scan stopped at its limit: the counts
    /// cover the oldest `scanned`).
    pub complete: bool,
    /// The counts, sorted by origin stream, group and kind.
    pub counts: Vec<DeadLetterCount>,
}

impl DeadLetterSummary {
    /// Counts the letters of `dead_letter_stream`, reading at most `limit` of them (all when
    /// `None`), oldest first. Costs O(letters read): XRANGE pages of
    /// [`DEFAULT_SUMMARY_PAGE`] letters (each with its XLEN), payloads included, so bound
    /// it with `limit` on a large dead-letter stream. Only reads.
    pub async fn read(client: &Client, dead_letter_stream: &str, limit: Option<u64>) -> Result<Self> {
        let dead_letters = DeadLetters::with_client(client.clone(), dead_letter_stream);
        let mut counts: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        let (mut scanned, mut total, mut after) = (0u64, 0u64, None);
        let complete = loop {
            let room = limit.map_or(DEFAULT_SUMMARY_PAGE, |l| l.saturating_sub(scanned).min(DEFAULT_SUMMARY_PAGE));
            if room == 0 {
                break scanned >= total;
            }
            let page = dead_letters.list(after, room).await?;
            total = page.total;
            for letter in &page.entries {
                let kind = letter.kind.map_or("unknown", |k| k.as_str()).to_string();
                *counts.entry((letter.origin_stream.clone(), letter.group.clone(), kind)).or_default() += 1;
            }
            scanned += page.entries.len() as u64;
            match page.next {
                Some(next) => after = Some(next),
                None => break true,
            }
        };
        let counts = counts
            .into_iter()
            .map(|((origin_stream, group, kind), count)| DeadLetterCount { origin_stream, group, kind, count })
            .collect();
        Ok(DeadLetterSummary { dead_letter_stream: dead_letter_stream.to_string(), total, scanned, complete, counts })
    }

    /// Whether the stream `key` holds dead letters: its first entry has a `dlq:stream` field
    /// (one XRANGE of one entry). Finds custom dead-letter streams (`dlq = "..."`) too.
    pub async fn is_dead_letter_stream(client: &Client, key: &str) -> Result<bool> {
        let page = DeadLetters::with_client(client.clone(), key).list(None, 1).await?;
        Ok(page.entries.first().is_some_and(|l| !l.origin_stream.is_empty()))
    }
}
