//! The JSON endpoints the page polls and the changes it asks for.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::history::{now_ms, Series};
use super::Shared;
use crate::error::{exit, CliError};
use crate::overview::{StreamOverview, REFRESH_TIMEOUT};

/// Entries shown in the pending table unless `limit` says otherwise.
const DEFAULT_ROWS: u64 = 100;
/// At most this many pending entries per request (one XPENDING of that many rows).
const MAX_ROWS: u64 = 1000;

/// A JSON error with a status: `{"error": "..."}`.
pub fn refusal(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Answers 504 (`{"error": ...}`) when the request is not done within [`REFRESH_TIMEOUT`]
/// (the time a sample may take): a dead Redis would otherwise hold every panel the page
/// polls for the client's own timeout.
pub async fn deadline(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REFRESH_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            refusal(StatusCode::GATEWAY_TIMEOUT, &format!("Redis did not answer within {}s", REFRESH_TIMEOUT.as_secs()))
        }
    }
}

/// A failed request, with the status its cause deserves.
pub struct ApiError(CliError);

impl From<CliError> for ApiError {
    fn from(e: CliError) -> Self {
        ApiError(e)
    }
}

impl From<streamx_runtime::Error> for ApiError {
    fn from(e: streamx_runtime::Error) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.code() {
            exit::NOT_FOUND => StatusCode::NOT_FOUND,
            exit::PERMISSION => StatusCode::FORBIDDEN,
            exit::USAGE => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        refusal(status, &self.0.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

/// A stream with its current rates.
#[derive(Serialize)]
struct StreamView<'a> {
    #[serde(flatten)]
    stream: &'a StreamOverview,
    published_per_sec: Option<f64>,
    consumed_per_sec: BTreeMap<&'a str, f64>,
    acknowledged_per_sec: BTreeMap<&'a str, f64>,
}

/// Figures older than this many sample periods (and than a sample may take) are `stale`.
const STALE_PERIODS: u32 = 3;

/// `GET /api/overview`: every stream and group now, and the series for the charts. `stale`
/// is true when the figures are older than a few sample periods without an `error` saying
/// why as well (samples stopped): the page warns either way.
pub async fn overview(State(shared): State<Arc<Shared>>) -> ApiResult {
    let history = shared.history.lock().await;
    let (time_ms, streams, series) = match history.latest() {
        Some((point, rates)) => {
            let streams: Vec<StreamView> = point
                .sample
                .streams
                .iter()
                .map(|s| StreamView {
                    stream: s,
                    published_per_sec: rates.published(&s.stream),
                    consumed_per_sec: s
                        .groups
                        .iter()
                        .filter_map(|g| rates.consumed(&s.stream, &g.name).map(|r| (g.name.as_str(), r)))
                        .collect(),
                    acknowledged_per_sec: s
                        .groups
                        .iter()
                        .filter_map(|g| rates.acknowledged(&s.stream, &g.name).map(|r| (g.name.as_str(), r)))
                        .collect(),
                })
                .collect();
            (point.time_ms, serde_json::to_value(streams).unwrap_or_default(), history.series())
        }
        None => (now_ms(), json!([]), Series::default()),
    };
    let now = now_ms();
    let age_ms = now.saturating_sub(time_ms);
    let stale_after = (shared.sample_every * STALE_PERIODS).max(REFRESH_TIMEOUT + shared.sample_every);
    Ok(Json(json!({
        "redis": shared.conn.redacted_url(),
        "read_only": shared.read_only,
        "time_ms": time_ms,
        "now_ms": now,
        "age_ms": age_ms,
        "sample_every_ms": shared.sample_every.as_millis() as u64,
        "stale": u128::from(age_ms) > stale_after.as_millis(),
        "error": history.last_error,
        "unreachable_since_ms": history.unreachable_since_ms,
        "streams": streams,
        "series": series,
    }))
    .into_response())
}

/// `?limit=N`.
#[derive(Deserialize)]
pub struct Rows {
    limit: Option<u64>,
}

/// `GET /api/streams/{stream}/groups/{group}/pending`: the oldest pending entries.
pub async fn pending(
    State(shared): State<Arc<Shared>>,
    Path((stream, group)): Path<(String, String)>,
    Query(rows): Query<Rows>,
) -> ApiResult {
    let (stream, group) = (stream_segment(stream), stream_segment(group));
    shared.conn.require_group(&stream, &group).await?;
    // The rows shown and the total: two commands, whatever the pending list's size.
    let inspector = shared.conn.inspector();
    let limit = rows.limit.unwrap_or(DEFAULT_ROWS).clamp(1, MAX_ROWS);
    let (summary, page) = tokio::try_join!(
        inspector.pending_summary(&stream, &group),
        inspector.pending_page(&stream, &group, None, None, limit)
    )?;
    let entries: Vec<_> = page
        .into_iter()
        .map(|e| json!({ "id": e.id, "consumer": e.consumer, "idle_ms": e.idle_ms, "deliveries": e.deliveries }))
        .collect();
    Ok(Json(json!({ "stream": stream, "group": group, "total": summary.total, "entries": entries })).into_response())
}

/// A stream or group name from a path segment. The page writes `.`, `..` and names that
/// start with `~` with one `~` in front (`~..`), since a browser removes the dot segments
/// `.` and `..` (even written `%2E`) from a URL's path; this takes it off again.
pub fn stream_segment(segment: String) -> String {
    match segment.strip_prefix('~') {
        Some(name) => name.to_string(),
        None => segment,
    }
}

/// `GET /api/streams/{stream}/groups/{group}/consumers`: the group's consumers with their
/// pending entries, idle time, heartbeat age and liveness deadline; the engine's
/// placeholders (retry schedule, suspects) marked as such.
pub async fn consumers(State(shared): State<Arc<Shared>>, Path((stream, group)): Path<(String, String)>) -> ApiResult {
    let (stream, group) = (stream_segment(stream), stream_segment(group));
    shared.conn.require_group(&stream, &group).await?;
    let members = shared.conn.inspector().members(&stream, &group).await?;
    let consumers: Vec<_> = members
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "role": m.role.as_str(),
                "pending": m.pending,
                "idle_ms": m.idle_ms,
                "heartbeat_age_ms": m.heartbeat_age_ms,
                "deadline_in_ms": m.deadline_in_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "stream": stream, "group": group, "consumers": consumers })).into_response())
}

/// `GET /api/topics`: every topic with its totals and its shards' figures (length, dead
/// letters, delayed messages, per group lag, pending and lease holder), read when asked
/// (a few commands per shard), in the shape of `streamx info <topic> --json`.
pub async fn topics(State(shared): State<Arc<Shared>>) -> ApiResult {
    let topics = shared.conn.inspector().topics().await?;
    let topics: Vec<_> = topics.iter().map(|t| crate::commands::topics::topic_json(t, true)).collect();
    Ok(Json(json!({ "topics": topics })).into_response())
}
