//! Moving the keys of a stream whose derived names changed (issue 22): before, a name with
//! a `}` got `<name>:<suffix>` (`{shop}.orders:retries:billing`, `{shop}.orders:dlq`) or,
//! without a valid hash tag, `{<name>}:<suffix>`. Such names now get the escaped form (see
//! [`super`]), and a consumer's start moves what the old names hold, once per consumer:
//! above all the retry schedule, whose entries wait in the PEL under the placeholder
//! consumer and would never run again without it.
//!
//! Each move is one script: when only the old key exists it is renamed; when both exist
//! (an old version still ran beside a new one during a rolling upgrade) the schedule,
//! heartbeats and marks are merged into the new key, and a dead-letter stream, which cannot
//! be merged, is left where it is with a warning. Names without a `}` keep their keys: there
//! is nothing to move, and no command is sent.

use std::sync::LazyLock;

use fred::clients::Client;
use fred::types::scripts::Script;

use super::{derived_key, slot, KeyKind};
use crate::error::{Error, Result};
use crate::policy::DeadLetterTarget;

/// Moves `KEYS[1]` (old) to `KEYS[2]` (new): renamed when only the old exists; when both do,
/// merged by `ARGV[1]` (`min`/`max`: a sorted-set union keeping the lower/higher score,
/// `union`: a set union, `keep`: not merged) and the old deleted. Returns what it did.
static MOVE_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'absent' end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  return 'renamed'
end
if ARGV[1] == 'union' then
  redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[1])
elseif ARGV[1] == 'min' or ARGV[1] == 'max' then
  redis.call('ZUNIONSTORE', KEYS[2], 2, KEYS[2], KEYS[1], 'AGGREGATE', ARGV[1])
else
  return 'kept'
end
redis.call('DEL', KEYS[1])
return 'merged'
"#,
    )
});

/// How a key found at both names is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merge {
    /// The earliest due time of an id scheduled in both (retry schedule).
    LowerScore,
    /// The latest heartbeat of a consumer in both (heartbeats).
    HigherScore,
    /// Every id of both (take-over marks).
    Union,
    /// Not merged: both are left (a dead-letter stream).
    Keep,
}

impl Merge {
    fn arg(self) -> &'static str {
        match self {
            Merge::LowerScore => "min",
            Merge::HigherScore => "max",
            Merge::Union => "union",
            Merge::Keep => "keep",
        }
    }
}

/// One key to move: from its old name to its new one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Move {
    old: String,
    new: String,
    merge: Merge,
}

/// Moves the keys of `group` on `stream` (and its default dead-letter stream) from their
/// names before issue 22 to the current ones, where the names differ (see the module docs).
/// `cluster`: on Redis Cluster a move between two slots is skipped (the old key was in
/// another slot than its stream, so no script could have used it).
///
/// A move refused by an ACL (`NOPERM`) is logged and skipped: the consumer runs, and the
/// warning names what to move by hand. Any other failure fails the start.
pub(crate) async fn move_legacy_keys(
    client: &Client,
    cluster: bool,
    stream: &str,
    group: &str,
    dead_letter: &DeadLetterTarget,
) -> Result<()> {
    for Move { old, new, merge } in legacy_moves(stream, group, dead_letter) {
        if cluster && slot(&old) != slot(&new) {
            tracing::debug!(stream, group, old, new, "old key in another slot than its stream: nothing to move");
            continue;
        }
        let keys = vec![old.clone(), new.clone()];
        let result: Result<String, _> = MOVE_KEY.evalsha_with_reload(client, keys, vec![merge.arg()]).await;
        match result {
            Ok(outcome) => match outcome.as_str() {
                "absent" => {}
                "renamed" => tracing::info!(stream, group, old, new, "moved a key to its new name"),
                "merged" => tracing::info!(stream, group, old, new, "merged a key into the one at its new name"),
                _ => tracing::warn!(
                    stream,
                    group,
                    old,
                    new,
                    "a dead-letter stream exists under its old name and its new one; streamx writes to \
                     the new one (read the old one with `streamx dlq list <stream> --dlq-stream <old>`)"
                ),
            },
            Err(e) if e.details().contains("NOPERM") => tracing::warn!(
                stream, group, old, new, error = %e,
                "cannot move a key to its new name: not permitted; if the old key exists, move it \
                 by hand (RENAMENX old new), or let the consumer's user run EXISTS, RENAME, DEL, \
                 SUNIONSTORE and ZUNIONSTORE on both"
            ),
            Err(source) => {
                return Err(Error::KeyMove { old, new, source });
            }
        }
    }
    Ok(())
}

/// What to move for `group` on `stream`: each key whose old name differs from its new one.
fn legacy_moves(stream: &str, group: &str, dead_letter: &DeadLetterTarget) -> Vec<Move> {
    let mut kinds = vec![
        (KeyKind::RetrySchedule(group), Merge::LowerScore),
        (KeyKind::Heartbeats(group), Merge::HigherScore),
        (KeyKind::TakeoverMarks(group), Merge::Union),
    ];
    if matches!(dead_letter, DeadLetterTarget::Default) {
        kinds.push((KeyKind::DeadLetters, Merge::Keep));
    }
    kinds
        .into_iter()
        .map(|(kind, merge)| Move { old: legacy_key(stream, kind), new: derived_key(stream, kind), merge })
        .filter(|m| m.old != m.new)
        .collect()
}

/// The name the key of `kind` had before issue 22: `base:suffix` for a name with a valid
/// hash tag, else `{base}:suffix` (the `derived_key` of then, word for word).
fn legacy_key(stream: &str, kind: KeyKind<'_>) -> String {
    let suffix = match kind.group() {
        Some(group) => format!("{}:{group}", kind.word()),
        None => kind.word().to_string(),
    };
    if super::hash_tag(stream).len() != stream.len() {
        format!("{stream}:{suffix}")
    } else {
        format!("{{{stream}}}:{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_a_closing_brace_move_nothing() {
        for stream in ["orders", "foo{bar", "app:orders", "{", "100%"] {
            assert_eq!(legacy_moves(stream, "g", &DeadLetterTarget::Default), vec![], "{stream}");
        }
    }

    #[test]
    fn a_braced_names_old_keys_move_to_the_new_names() {
        let moves = legacy_moves("{shop}.orders", "billing", &DeadLetterTarget::Default);
        let pairs: Vec<(&str, &str, Merge)> = moves.iter().map(|m| (m.old.as_str(), m.new.as_str(), m.merge)).collect();
        assert_eq!(
            pairs,
            vec![
                ("{shop}.orders:retries:billing", "{shop}#{shop}.orders:retries:billing", Merge::LowerScore),
                ("{shop}.orders:consumers:billing", "{shop}#{shop}.orders:consumers:billing", Merge::HigherScore),
                ("{shop}.orders:takeovers:billing", "{shop}#{shop}.orders:takeovers:billing", Merge::Union),
                ("{shop}.orders:dlq", "{shop}#{shop}.orders:dlq", Merge::Keep),
            ]
        );
        for m in &moves {
            assert_eq!(slot(&m.old), slot(&m.new), "{m:?}: RENAME stays in the slot");
        }
    }

    #[test]
    fn a_custom_or_disabled_dead_letter_stream_is_not_moved() {
        for target in [DeadLetterTarget::Disabled, DeadLetterTarget::Stream("{shop}:dead")] {
            let moves = legacy_moves("{shop}.orders", "g", &target);
            assert_eq!(moves.len(), 3);
            assert!(moves.iter().all(|m| !m.old.ends_with(":dlq")));
        }
    }

    #[test]
    fn names_without_a_valid_tag_had_keys_in_another_slot() {
        let moves = legacy_moves("orders}", "g", &DeadLetterTarget::Default);
        assert_eq!(moves[0].old, "{orders}}:retries:g");
        assert_ne!(slot(&moves[0].old), slot("orders}"));
        assert_eq!(slot(&moves[0].new), slot("orders}"));
    }
}
