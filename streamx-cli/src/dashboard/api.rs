//! The JSON endpoints the page polls and the changes it asks for.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use streamx_runtime::MessageId;

use super::history::{now_ms, Series};
use super::Shared;
use crate::commands::dlq::LetterView;
use crate::error::{exit, CliError};
use crate::overview::StreamOverview;

/// Entries shown at most in the pending and dead-letter tables.
const DEFAULT_ROWS: u64 = 100;

/// A JSON error with a status: `{"error": "..."}`.
pub fn refusal(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
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

/// `GET /api/overview`: every stream and group now, and the series for the charts.
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
    Ok(Json(json!({
        "redis": shared.conn.redacted_url(),
        "read_only": shared.read_only,
        "time_ms": time_ms,
        "now_ms": now,
        "age_ms": now.saturating_sub(time_ms),
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
    shared.conn.require_group(&stream, &group).await?;
    // The rows shown and the total: two commands, whatever the pending list's size.
    let inspector = shared.conn.inspector();
    let limit = rows.limit.unwrap_or(DEFAULT_ROWS);
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

/// `GET /api/streams/{stream}/dead-letters`: the oldest dead letters with error and payload.
pub async fn dead_letters(
    State(shared): State<Arc<Shared>>,
    Path(stream): Path<String>,
    Query(rows): Query<Rows>,
) -> ApiResult {
    let dead_letters = shared.conn.dead_letters(&stream, None);
    let page = dead_letters.list(None, rows.limit.unwrap_or(DEFAULT_ROWS)).await?;
    let entries: Vec<LetterView> = page.entries.iter().map(LetterView::from).collect();
    Ok(Json(json!({
        "stream": stream,
        "dead_letter_stream": dead_letters.stream(),
        "total": page.total,
        "entries": entries,
    }))
    .into_response())
}

/// `POST /api/streams/{stream}/dead-letters/{id}/replay`.
pub async fn replay_one(State(shared): State<Arc<Shared>>, Path((stream, id)): Path<(String, String)>) -> ApiResult {
    let dead_letters = shared.conn.dead_letters(&stream, None);
    let parsed: MessageId =
        id.parse().map_err(|e| CliError::InvalidInput { what: format!("id `{id}`"), reason: format!("{e}") })?;
    match dead_letters.replay(parsed).await? {
        Some(new_id) => {
            Ok(Json(json!({ "replayed_as": new_id, "remaining": dead_letters.count().await? })).into_response())
        }
        None => Err(CliError::UnknownDeadLetter { dlq_stream: dead_letters.stream().to_string(), id }.into()),
    }
}

/// `POST /api/streams/{stream}/dead-letters/replay`: every letter there now.
pub async fn replay_all(State(shared): State<Arc<Shared>>, Path(stream): Path<String>) -> ApiResult {
    let dead_letters = shared.conn.dead_letters(&stream, None);
    let done = dead_letters.replay_all().await?;
    Ok(Json(json!({ "done": done, "remaining": dead_letters.count().await? })).into_response())
}

/// `POST /api/streams/{stream}/dead-letters/purge`: deletes them all.
pub async fn purge(State(shared): State<Arc<Shared>>, Path(stream): Path<String>) -> ApiResult {
    let dead_letters = shared.conn.dead_letters(&stream, None);
    let done = dead_letters.purge().await?;
    Ok(Json(json!({ "done": done, "remaining": dead_letters.count().await? })).into_response())
}
