//! The retry schedule endpoints, on the runtime's [`RetrySchedule`]: a page of a group's
//! scheduled retries (soonest due first, with their payloads), run one now, delete one.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use streamx_runtime::admin::RetrySchedule;
use streamx_runtime::MessageId;

use super::api::{stream_segment, ApiError};
use super::Shared;
use crate::error::CliError;

/// Retries shown per page unless `limit` says otherwise.
const DEFAULT_ROWS: u64 = 20;
/// At most this many per page (each costs an XPENDING and an XRANGE).
const MAX_ROWS: u64 = 200;

type ApiResult = Result<Response, ApiError>;

/// `?offset=N&limit=N`.
#[derive(Deserialize)]
pub struct Page {
    offset: Option<u64>,
    limit: Option<u64>,
}

fn schedule(shared: &Shared, stream: &str, group: &str) -> RetrySchedule {
    RetrySchedule::with_client(shared.conn.client(), stream, group)
}

fn id(text: &str) -> Result<MessageId, CliError> {
    text.parse().map_err(|e| CliError::InvalidInput { what: format!("id `{text}`"), reason: format!("{e}") })
}

/// `GET /api/streams/{stream}/groups/{group}/retries`: a page of the schedule, soonest due
/// first, with the total and the Redis clock it was read at.
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Path((stream, group)): Path<(String, String)>,
    Query(page): Query<Page>,
) -> ApiResult {
    let (stream, group) = (stream_segment(stream), stream_segment(group));
    shared.conn.require_group(&stream, &group).await?;
    let schedule = schedule(&shared, &stream, &group);
    let limit = page.limit.unwrap_or(DEFAULT_ROWS).clamp(1, MAX_ROWS);
    let read = schedule.list(page.offset.unwrap_or(0), limit, true).await?;
    let entries: Vec<_> = read
        .entries
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "due_at_ms": r.due_at_ms,
                "due_in_ms": r.due_at_ms as i64 - read.now_ms as i64,
                "attempts": r.attempts,
                "exists": r.exists,
                "payload": r.payload.as_ref().map(|p| String::from_utf8_lossy(p).into_owned()),
            })
        })
        .collect();
    Ok(Json(json!({
        "stream": stream,
        "group": group,
        "key": schedule.key(),
        "total": read.total,
        "now_ms": read.now_ms,
        "next_offset": read.next_offset,
        "entries": entries,
    }))
    .into_response())
}

/// `POST /api/streams/{stream}/groups/{group}/retries/{id}/run`: due now.
pub async fn run_now(
    State(shared): State<Arc<Shared>>,
    Path((stream, group, retry)): Path<(String, String, String)>,
) -> ApiResult {
    let (stream, group) = (stream_segment(stream), stream_segment(group));
    let schedule = schedule(&shared, &stream, &group);
    match schedule.run_now(id(&retry)?).await? {
        Some(due_at_ms) => Ok(Json(json!({ "id": retry, "due_at_ms": due_at_ms })).into_response()),
        None => Err(not_scheduled(&schedule, retry)),
    }
}

/// `POST /api/streams/{stream}/groups/{group}/retries/{id}/delete`: out of the schedule and
/// acknowledged: the group never handles that entry.
pub async fn delete(
    State(shared): State<Arc<Shared>>,
    Path((stream, group, retry)): Path<(String, String, String)>,
) -> ApiResult {
    let (stream, group) = (stream_segment(stream), stream_segment(group));
    let schedule = schedule(&shared, &stream, &group);
    if !schedule.delete(id(&retry)?).await? {
        return Err(not_scheduled(&schedule, retry));
    }
    Ok(Json(json!({ "deleted": retry, "remaining": schedule.count().await? })).into_response())
}

fn not_scheduled(schedule: &RetrySchedule, id: String) -> ApiError {
    CliError::NotFound { what: format!("no retry {id} scheduled in `{}`", schedule.key()) }.into()
}
