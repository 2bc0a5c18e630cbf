//! The dead-letter endpoints: a page of letters (a cursor, filters by group and kind, a
//! custom dead-letter stream), the count a filtered replay-all or purge-all will act on, and
//! those actions, per letter and for every matching letter up to the one counted last.
//!
//! Every query takes `dlq_stream` (the consumer's own dead-letter stream, as the CLI's
//! `--dlq-stream`: refused unless it holds dead letters, or nothing), `group` and `kind`; an
//! empty value means "any".

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use streamx_runtime::{DeadLetter, DeadLetters, FailureKind, MessageId};

use super::api::{stream_segment, ApiError};
use super::Shared;
use crate::commands::dlq::LetterView;
use crate::error::CliError;

/// Letters shown per page unless `limit` says otherwise.
const DEFAULT_ROWS: u64 = 50;
/// At most this many letters per page.
const MAX_ROWS: u64 = 500;
/// Letters read per XRANGE while filtering.
const SCAN_PAGE: u64 = 500;
/// Letters a filtered page reads at most before answering with a cursor: a rare filter on a
/// big dead-letter stream costs bounded work per request; the page asks for the next.
const MAX_SCANNED: u64 = 5000;

type ApiResult = Result<Response, ApiError>;

/// Which letters, on which dead-letter stream.
#[derive(Debug, Default, Deserialize)]
pub struct Selection {
    /// The dead-letter stream, when a consumer names its own.
    dlq_stream: Option<String>,
    /// Only the letters of this group.
    group: Option<String>,
    /// Only the letters of this kind (`error`, `permanent`, ...).
    kind: Option<String>,
    /// Letters after this id (the previous page's `next`).
    after: Option<String>,
    /// At most this many letters.
    limit: Option<u64>,
    /// Act on no letter after this id (the `upto` the count answered).
    upto: Option<String>,
}

/// `group` and `kind` of a [`Selection`], parsed.
struct Filter {
    group: Option<String>,
    kind: Option<FailureKind>,
}

impl Filter {
    fn matches(&self, letter: &DeadLetter) -> bool {
        self.group.as_ref().is_none_or(|g| *g == letter.group) && self.kind.is_none_or(|k| letter.kind == Some(k))
    }

    fn is_everything(&self) -> bool {
        self.group.is_none() && self.kind.is_none()
    }
}

/// `Some` unless empty.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

fn id(what: &str, text: &str) -> Result<MessageId, CliError> {
    text.parse().map_err(|e| CliError::InvalidInput { what: format!("{what} `{text}`"), reason: format!("{e}") })
}

impl Selection {
    /// The dead letters selected; a `dlq_stream` that is the stream itself or holds no dead
    /// letters is refused (400), reads included, so that the page never offers to replay or
    /// purge a live stream.
    async fn dead_letters(&self, shared: &Shared, stream: &str) -> Result<DeadLetters, CliError> {
        shared.conn.dead_letters_to_change(stream, given(&self.dlq_stream)).await
    }

    fn filter(&self) -> Result<Filter, CliError> {
        let kind = match given(&self.kind) {
            Some(k) => Some(FailureKind::parse(k).ok_or_else(|| CliError::InvalidInput {
                what: format!("kind `{k}`"),
                reason: "not a failure kind (error, permanent, panic, timeout, ...)".to_string(),
            })?),
            None => None,
        };
        Ok(Filter { group: given(&self.group).map(str::to_string), kind })
    }

    fn after(&self) -> Result<Option<MessageId>, CliError> {
        given(&self.after).map(|a| id("after", a)).transpose()
    }

    fn upto(&self) -> Result<Option<MessageId>, CliError> {
        given(&self.upto).map(|u| id("upto", u)).transpose()
    }
}

/// `GET /api/streams/{stream}/dead-letters`: a page of matching letters, oldest first, with
/// the dead-letter stream's total and the cursor of the next page (`null` at the end).
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Path(stream): Path<String>,
    Query(selection): Query<Selection>,
) -> ApiResult {
    let stream = stream_segment(stream);
    let dead_letters = selection.dead_letters(&shared, &stream).await?;
    let filter = selection.filter()?;
    let limit = selection.limit.unwrap_or(DEFAULT_ROWS).clamp(1, MAX_ROWS);
    let read = if filter.is_everything() { limit } else { SCAN_PAGE };
    let mut after = selection.after()?;
    let (mut entries, mut scanned) = (Vec::new(), 0);
    let mut total;
    let next = loop {
        let page = dead_letters.list(after, read).await?;
        total = page.total;
        scanned += page.entries.len() as u64;
        for letter in page.entries {
            let id = letter.id;
            if filter.matches(&letter) {
                entries.push(LetterView::from(&letter));
                if entries.len() as u64 == limit {
                    // More may follow this one, in this page or the next.
                    break;
                }
            }
            after = Some(id);
        }
        if entries.len() as u64 == limit {
            break entries.last().map(|l| l.id);
        }
        match page.next {
            Some(_) if scanned >= MAX_SCANNED => break after,
            Some(_) => {}
            None => break None,
        }
    };
    Ok(Json(json!({
        "stream": stream,
        "dead_letter_stream": dead_letters.stream(),
        "total": total,
        "entries": entries,
        "next": next,
    }))
    .into_response())
}

/// The letters that match a filter, oldest first, up to `upto` (else to the end), a page
/// at a time.
struct Matching<'a> {
    dead_letters: &'a DeadLetters,
    filter: &'a Filter,
    upto: Option<MessageId>,
    after: Option<MessageId>,
    done: bool,
}

impl<'a> Matching<'a> {
    fn new(dead_letters: &'a DeadLetters, filter: &'a Filter, upto: Option<MessageId>) -> Self {
        Matching { dead_letters, filter, upto, after: None, done: false }
    }

    /// The next page's matching letters (maybe none); `None` after the last page.
    async fn next_page(&mut self) -> Result<Option<Vec<DeadLetter>>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let page = self.dead_letters.list(self.after, SCAN_PAGE).await?;
        self.after = page.entries.last().map(|l| l.id);
        let upto = self.upto;
        self.done = page.next.is_none() || page.entries.last().is_some_and(|l| upto.is_some_and(|u| l.id >= u));
        Ok(Some(
            page.entries.into_iter().filter(|l| upto.is_none_or(|u| l.id <= u) && self.filter.matches(l)).collect(),
        ))
    }
}

/// `GET /api/streams/{stream}/dead-letters/matching`: how many letters a replay-all or
/// purge-all with the same filter would act on now. With a filter, also `upto`, the newest
/// letter read: passed to the action, it acts on no letter that arrived after the count
/// (counting reads the whole dead-letter stream, 500 letters per XRANGE). Without one, the
/// count is XLEN and `upto` is `null`: the action then takes every letter there when it
/// runs (replay-all and purge read no further than that themselves).
pub async fn matching(
    State(shared): State<Arc<Shared>>,
    Path(stream): Path<String>,
    Query(selection): Query<Selection>,
) -> ApiResult {
    let stream = stream_segment(stream);
    let dead_letters = selection.dead_letters(&shared, &stream).await?;
    let filter = selection.filter()?;
    if filter.is_everything() {
        let count = dead_letters.count().await?;
        return Ok(Json(json!({ "dead_letter_stream": dead_letters.stream(), "matching": count, "upto": null }))
            .into_response());
    }
    let (mut count, mut upto) = (0u64, None);
    let mut after = None;
    loop {
        let page = dead_letters.list(after, SCAN_PAGE).await?;
        after = page.entries.last().map(|l| l.id);
        upto = after.or(upto);
        count += page.entries.iter().filter(|l| filter.matches(l)).count() as u64;
        if page.next.is_none() {
            break;
        }
    }
    Ok(Json(json!({ "dead_letter_stream": dead_letters.stream(), "matching": count, "upto": upto })).into_response())
}

/// `POST /api/streams/{stream}/dead-letters/replay`: replays the matching letters (every
/// letter when nothing narrows it), each back to the group that failed it.
pub async fn replay_all(
    State(shared): State<Arc<Shared>>,
    Path(stream): Path<String>,
    Query(selection): Query<Selection>,
) -> ApiResult {
    let stream = stream_segment(stream);
    let dead_letters = selection.dead_letters(&shared, &stream).await?;
    let (filter, upto) = (selection.filter()?, selection.upto()?);
    let done = if filter.is_everything() && upto.is_none() {
        dead_letters.replay_all().await?
    } else {
        let (mut done, mut letters) = (0, Matching::new(&dead_letters, &filter, upto));
        while let Some(page) = letters.next_page().await? {
            if page.is_empty() {
                continue;
            }
            let outcomes = dead_letters.replay_letters(&page).await?;
            done += outcomes.iter().filter(|o| o.id().is_some()).count() as u64;
        }
        done
    };
    Ok(Json(json!({ "done": done, "remaining": dead_letters.count().await? })).into_response())
}

/// `POST /api/streams/{stream}/dead-letters/purge`: deletes the matching letters (every
/// letter, atomically, when nothing narrows it; else page by page).
pub async fn purge(
    State(shared): State<Arc<Shared>>,
    Path(stream): Path<String>,
    Query(selection): Query<Selection>,
) -> ApiResult {
    let stream = stream_segment(stream);
    let dead_letters = selection.dead_letters(&shared, &stream).await?;
    let (filter, upto) = (selection.filter()?, selection.upto()?);
    let done = if filter.is_everything() && upto.is_none() {
        dead_letters.purge().await?
    } else {
        let (mut done, mut letters) = (0, Matching::new(&dead_letters, &filter, upto));
        while let Some(page) = letters.next_page().await? {
            if page.is_empty() {
                continue;
            }
            let ids: Vec<MessageId> = page.iter().map(|l| l.id).collect();
            done += dead_letters.delete(&ids).await?;
        }
        done
    };
    Ok(Json(json!({ "done": done, "remaining": dead_letters.count().await? })).into_response())
}

/// `POST /api/streams/{stream}/dead-letters/{id}/replay`: that letter, back to the group
/// that failed it.
pub async fn replay_one(
    State(shared): State<Arc<Shared>>,
    Path((stream, letter)): Path<(String, String)>,
    Query(selection): Query<Selection>,
) -> ApiResult {
    let stream = stream_segment(stream);
    let dead_letters = selection.dead_letters(&shared, &stream).await?;
    match dead_letters.replay(id("id", &letter)?).await? {
        Some(new_id) => {
            Ok(Json(json!({ "replayed_as": new_id, "remaining": dead_letters.count().await? })).into_response())
        }
        None => Err(CliError::UnknownDeadLetter { dlq_stream: dead_letters.stream().to_string(), id: letter }.into()),
    }
}

/// `POST /api/streams/{stream}/dead-letters/{id}/delete`: that letter, deleted.
pub async fn delete_one(
    State(shared): State<Arc<Shared>>,
    Path((stream, letter)): Path<(String, String)>,
    Query(selection): Query<Selection>,
) -> ApiResult {
    let stream = stream_segment(stream);
    let dead_letters = selection.dead_letters(&shared, &stream).await?;
    if dead_letters.delete(&[id("id", &letter)?]).await? == 0 {
        return Err(CliError::UnknownDeadLetter { dlq_stream: dead_letters.stream().to_string(), id: letter }.into());
    }
    Ok(Json(json!({ "deleted": letter, "remaining": dead_letters.count().await? })).into_response())
}
