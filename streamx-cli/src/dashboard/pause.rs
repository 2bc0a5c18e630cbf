//! The pause endpoints, on the runtime's `Inspector::pause_as` / `resume`: pause or resume a
//! consumer group (see the README's "Pausing a group").

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::api::{stream_segment, ApiError};
use super::Shared;

/// Who a pause from the dashboard is recorded as.
const BY: &str = "dashboard";

/// `POST /api/streams/{stream}/groups/{group}/pause`.
pub async fn pause(
    State(shared): State<Arc<Shared>>,
    Path((stream, group)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (stream, group) = (stream_segment(stream), stream_segment(group));
    shared.conn.require_group(&stream, &group).await?;
    shared.conn.inspector().pause_as(&stream, &group, BY).await?;
    Ok(Json(json!({ "stream": stream, "group": group, "paused": true })).into_response())
}

/// `POST /api/streams/{stream}/groups/{group}/resume`.
pub async fn resume(
    State(shared): State<Arc<Shared>>,
    Path((stream, group)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (stream, group) = (stream_segment(stream), stream_segment(group));
    let was_paused = shared.conn.inspector().resume(&stream, &group).await?;
    Ok(Json(json!({ "stream": stream, "group": group, "paused": false, "was_paused": was_paused })).into_response())
}
