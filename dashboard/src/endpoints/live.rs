//! `GET /api/live`: events accounted per minute over the last hour, events
//! the collector accepted that the processor has not committed yet, the
//! partitions' states, freshness, and the last reconciliation of the
//! figures against the raw events.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::ApiError;
use crate::state::{ApiState, Shared};

#[derive(Debug, Row, Deserialize)]
struct MinuteRow {
    m: u32,
    n: u64,
}

/// Where the pipeline stands: what the processor has not written yet and
/// how old the newest processed event is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Progress {
    /// Events the collector accepted (in Kafka) that the processor has not
    /// committed yet, i.e. not yet in ClickHouse; `None` when the broker
    /// could not be asked (`pending_error` says why).
    pub pending_events: Option<i64>,
    pub pending_error: Option<String>,
    /// Every partition is up to date: nothing pending and no committed
    /// offset past a partition's end (which would read as 0 pending while
    /// the processor skips what arrives). False when the broker cannot be asked.
    pub up_to_date: bool,
    /// Partitions in each state (`up_to_date`, `behind`, `no_commit`,
    /// `ahead_of_end`); empty when the broker cannot be asked.
    pub partitions: BTreeMap<&'static str, usize>,
    /// The partitions that are not up to date, with their offsets.
    pub lagging: Vec<ensemble_core::kafka::PartitionLag>,
    /// now − receipt of the newest event processed in the last hour.
    pub freshness_seconds: Option<i64>,
    /// Receipt time of the newest sign-up in ClickHouse (bots excluded).
    pub last_signup: Option<DateTime<Utc>>,
}

/// Reads the processor group's lag from the broker and the newest rows from
/// ClickHouse.
pub async fn progress(state: &ApiState, now: DateTime<Utc>) -> Result<Progress, ApiError> {
    let since = u32::try_from((now - chrono::Duration::hours(1)).timestamp().max(0)).unwrap_or(0);
    // From the per-minute rollup (a max per processing minute), not the events.
    let (newest, last_signup): (u32, u32) = state
        .client
        .query(
            "SELECT toUInt32(maxMerge(newest_received)), toUInt32(0) FROM events_minutely \
             WHERE minute >= toStartOfMinute(toDateTime(?)) \
             UNION ALL SELECT toUInt32(0), toUInt32(maxMerge(last_signup)) FROM events_minutely",
        )
        .bind(since)
        .fetch_all::<(u32, u32)>()
        .await?
        .into_iter()
        .fold((0, 0), |acc, (a, b)| (acc.0.max(a), acc.1.max(b)));
    let lag = state.lag.read(std::time::Duration::from_secs(2)).await;
    let at = |t: u32| {
        (t > 0)
            .then(|| DateTime::from_timestamp(i64::from(t), 0))
            .flatten()
    };
    if let Err(e) = &lag {
        tracing::warn!(error = %format!("{e:#}"), "cannot read the processor group's lag from the broker");
    }
    Ok(Progress {
        pending_events: lag
            .as_ref()
            .ok()
            .map(ensemble_core::kafka::GroupLag::pending),
        up_to_date: lag
            .as_ref()
            .is_ok_and(ensemble_core::kafka::GroupLag::up_to_date),
        partitions: lag.as_ref().map(|l| l.states()).unwrap_or_default(),
        lagging: lag
            .as_ref()
            .map(|l| {
                l.partitions
                    .iter()
                    .filter(|p| p.state() != ensemble_core::kafka::PartitionState::UpToDate)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
        // The broker's own words stay in the log.
        pending_error: lag
            .err()
            .map(|_| "the broker could not be asked for the processor's progress".to_owned()),
        freshness_seconds: at(newest).map(|t| (now - t).num_seconds().max(0)),
        last_signup: at(last_signup),
    })
}

/// `GET /api/live`: events per minute over the last hour (by processing
/// time), events not yet processed, freshness.
pub async fn live(State(state): State<Shared>) -> Result<Response, ApiError> {
    let now = Utc::now();
    let since = u32::try_from((now - chrono::Duration::hours(1)).timestamp().max(0)).unwrap_or(0);
    let per_minute: Vec<MinuteRow> = state
        .client
        .query(
            "SELECT toUInt32(minute) AS m, toUInt64(sum(events)) AS n FROM ledger_minutely \
             WHERE minute >= toDateTime(?) GROUP BY m HAVING n > 0 ORDER BY m",
        )
        .bind(since)
        .fetch_all()
        .await?;
    let p = progress(&state, now).await?;
    Ok(Json(json!({
        "now": now,
        "pending_events": p.pending_events,
        "pending_error": p.pending_error,
        "up_to_date": p.up_to_date,
        "partitions": p.partitions,
        "lagging_partitions": p.lagging.iter().map(|l| json!({
            "partition": l.partition, "state": l.state(), "committed": l.committed, "low": l.low, "end": l.end,
        })).collect::<Vec<_>>(),
        "freshness_seconds": p.freshness_seconds,
        "last_signup": p.last_signup,
        "reconciliation": crate::reconciliation::live_json(state.reconciliation.report().as_ref()),
        "per_minute": per_minute.iter().map(|m| json!({"minute": DateTime::from_timestamp(i64::from(m.m), 0), "events": m.n})).collect::<Vec<_>>(),
    }))
    .into_response())
}
