//! `GET /api/timeseries?metric=events|visitors|signups&bucket=hour|day`:
//! the metric per UTC hour or per local day of the campaign, with the
//! phases for the chart's bands.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use ensemble_core::figures::{self, Figure, ALL};
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, count, of};
use crate::csv::{csv, Export};
use crate::error::ApiError;
use crate::filters::{FilterError, Filters, Format};
use crate::state::Shared;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// `YYYY-MM-DDTHH:00:00Z` or a local date `YYYY-MM-DD`.
    pub bucket: String,
    pub value: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseBand {
    pub id: String,
    pub label: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Timeseries {
    pub metric: String,
    pub points: Vec<Point>,
    pub phases: Vec<PhaseBand>,
}

pub async fn timeseries(
    State(state): State<Shared>,
    axum::extract::Query(mut q): Params,
) -> Result<Response, ApiError> {
    let metric = q.remove("metric").unwrap_or_else(|| "events".into());
    if !matches!(metric.as_str(), "events" | "visitors" | "signups") {
        return Err(FilterError {
            parameter: "metric",
            message: "metric is `events`, `visitors` or `signups`".into(),
        }
        .into());
    }
    let f = Filters::parse_with(&state.campaign, &q, &["bucket"])?;
    let hourly = match q.get("bucket").map(String::as_str) {
        None | Some("day") => false,
        Some("hour") => true,
        Some(_) => {
            return Err(FilterError {
                parameter: "bucket",
                message: "bucket is `hour` or `day`".into(),
            }
            .into())
        }
    };
    let figure = match (metric.as_str(), hourly) {
        ("events", true) => Figure::EventsHourly,
        ("events", false) => Figure::Events,
        ("visitors", true) => Figure::VisitorsHourly,
        ("visitors", false) => Figure::VisitorsDaily,
        ("signups", true) => Figure::SignupsHourly,
        _ => Figure::SignupsDaily,
    };
    let a = answers::ask(&state, &f, &[figure], false).await?;
    // Events are per channel; the distinct counts also hold every channel (`*`).
    let channel = f.channel.as_deref().unwrap_or(ALL);
    let mut points: BTreeMap<String, u64> = BTreeMap::new();
    for (d, v) in of(&a.whole, figure) {
        let kept = if metric == "events" {
            f.channel.as_ref().is_none_or(|c| *c == d.channel)
        } else {
            d.channel == channel
        };
        if !kept {
            continue;
        }
        let label = if hourly {
            DateTime::from_timestamp(i64::from(d.hour), 0)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:00:00Z")
                .to_string()
        } else {
            figures::date_of(d.day).format("%Y-%m-%d").to_string()
        };
        *points.entry(label).or_default() += count(v);
    }
    let points: Vec<Point> = points
        .into_iter()
        .filter(|(_, value)| *value > 0)
        .map(|(bucket, value)| Point { bucket, value })
        .collect();
    if f.format == Format::Csv {
        let rows: Vec<Vec<String>> = points
            .iter()
            .map(|p| vec![p.bucket.clone(), p.value.to_string()])
            .collect();
        return Ok(csv(
            &Export::new(
                &state.campaign,
                &f,
                &format!(
                    "timeseries-{metric}-{}",
                    if hourly { "hour" } else { "day" }
                ),
            ),
            &["bucket", &metric],
            &rows,
        ));
    }
    Ok(json(&Timeseries {
        metric,
        points,
        phases: state
            .campaign
            .phases
            .iter()
            .map(|p| PhaseBand {
                id: p.id.clone(),
                label: p.label.clone(),
                starts_at: p.starts_at,
                ends_at: p.ends_at,
            })
            .collect(),
    }))
}
