//! `GET /api/timeseries?metric=events|visitors|signups&bucket=hour|day`:
//! the metric per UTC hour or per local day of the campaign, with the
//! phases for the chart's bands.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use ensemble_model::figures::Figure;
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, count, in_channel, of};
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

/// A bucket's label: `YYYY-MM-DDTHH:00:00Z` for an hour (its start, in
/// seconds since the epoch), `YYYY-MM-DD` for a local day number. Both
/// sort as their numbers do.
fn label(bucket: u32, hourly: bool) -> String {
    if hourly {
        DateTime::from_timestamp(i64::from(bucket), 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:00:00Z")
            .to_string()
    } else {
        answers::date(bucket)
    }
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
    // Summed by the bucket's number (an hour's start in seconds, a day's
    // number), formatted once per point: the events by the hour are one
    // row per channel and hour (~12 700 at 10 M events), and formatting
    // each row's label was a third of the dashboard's time on that question.
    let mut sums: BTreeMap<u32, u64> = BTreeMap::new();
    for (d, v) in of(&a.whole, figure) {
        if in_channel(&f, d, metric == "events") {
            // An hour is stored as its start; rounded anyway, so that two
            // buckets never share a label (the label shows no minutes).
            let bucket = if hourly { d.hour / 3600 * 3600 } else { d.day };
            *sums.entry(bucket).or_default() += count(v);
        }
    }
    let points: Vec<Point> = sums
        .into_iter()
        .filter(|(_, value)| *value > 0)
        .map(|(bucket, value)| Point {
            bucket: label(bucket, hourly),
            value,
        })
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

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels_read_as_the_buckets_and_sort_as_their_numbers() {
        assert_eq!(label(0, true), "1970-01-01T00:00:00Z");
        // 2025-02-14T09:00:00Z
        assert_eq!(label(1_739_523_600, true), "2025-02-14T09:00:00Z");
        assert_eq!(label(0, false), "1970-01-01");
        assert_eq!(label(20_133, false), "2025-02-14");
        for hourly in [true, false] {
            let step = if hourly { 3600 } else { 1 };
            let numbers: Vec<u32> = (0..500u32).map(|i| i * 7919 % 100_000 * step).collect();
            let mut by_number = numbers.clone();
            by_number.sort_unstable();
            let mut by_label = numbers;
            by_label.sort_by_key(|n| label(*n, hourly));
            assert_eq!(by_label, by_number, "hourly: {hourly}");
        }
    }
}
