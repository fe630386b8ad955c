//! `GET /api/journey?visitor_id=…`: one visitor's events — visitor-level
//! data, for analyst tokens only (agency tokens get 403).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::DateTime;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::Params;
use crate::access::Role;
use crate::error::ApiError;
use crate::filters::FilterError;
use crate::state::Shared;

#[derive(Debug, Row, Deserialize, Serialize)]
struct JourneyRow {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    ms: u64,
    event_type: String,
    action: String,
    channel: String,
    placement: String,
    phase: String,
}

/// `GET /api/journey?visitor_id=…`: one visitor's events — visitor-level
/// data, for analyst tokens only (agency tokens get 403).
pub async fn journey(
    State(state): State<Shared>,
    axum::Extension(role): axum::Extension<Role>,
    q: Params,
) -> Result<Response, ApiError> {
    if role != Role::Analyst {
        return Err(ApiError::Forbidden);
    }
    let visitor = q
        .get("visitor_id")
        .filter(|v| ensemble_core::event::is_valid_visitor_id(v))
        .ok_or_else(|| FilterError {
            parameter: "visitor_id",
            message: "a visitor id of 8-64 [A-Za-z0-9_-] is required".into(),
        })?;
    let rows: Vec<JourneyRow> = state
        .client
        .query(
            "SELECT event_id, any(toUInt64(ts) * 1000 + ts_ms) AS ms, any(event_type) AS event_type, \
             any(action) AS action, any(channel) AS channel, any(placement) AS placement, any(phase) AS phase \
             FROM events WHERE visitor_id = ? GROUP BY event_id ORDER BY ms, event_id",
        )
        .bind(visitor)
        .fetch_all()
        .await?;
    Ok(Json(json!({
        "visitor_id": visitor,
        "events": rows.iter().map(|r| json!({
            "event_id": r.event_id, "ts": DateTime::from_timestamp_millis(i64::try_from(r.ms).unwrap_or(i64::MAX)).unwrap_or_default(), "type": r.event_type, "action": r.action,
            "channel": r.channel, "placement": r.placement, "phase": r.phase,
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}
