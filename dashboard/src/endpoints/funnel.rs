//! `GET /api/funnel`: per touch channel, visitors touched → of them, those
//! with a landing page view at or after their first touch → of those,
//! those who signed up after it; and the median time from first touch to
//! sign-up.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use ensemble_model::figures::{self, Figure};
use ensemble_model::rules;
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, count, of};
use crate::csv::{csv_of, Export};
use crate::error::ApiError;
use crate::filters::{Filters, Format};
use crate::state::{ApiState, Shared};

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FunnelRow {
    pub channel: String,
    pub touched: u64,
    pub visited: u64,
    pub signed_up: u64,
    pub median_seconds_to_signup: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Funnel {
    pub rows: Vec<FunnelRow>,
}

/// The median (the lower one, `rules::median_rank`, as the paths'
/// medians) of a histogram read in two steps: the whole-hour histogram
/// finds the hour holding the median's rank, then only the seconds of
/// that hour are read.
async fn medians(
    state: &ApiState,
    f: &Filters,
    hours: &BTreeMap<String, Vec<(u32, u64)>>,
) -> Result<BTreeMap<String, f64>, ApiError> {
    // (channel, hour start in seconds, rank wanted, signed visitors in earlier hours).
    let mut wanted: Vec<(String, u32, u64, u64)> = Vec::new();
    for (channel, by_hour) in hours {
        let n: u64 = by_hour.iter().map(|(_, c)| c).sum();
        let ranks: Vec<u64> = match n {
            0 => Vec::new(),
            n => vec![rules::median_rank(n)],
        };
        for rank in ranks {
            let mut below = 0u64;
            for &(hour, c) in by_hour {
                if below + c >= rank {
                    wanted.push((channel.clone(), hour, rank, below));
                    break;
                }
                below += c;
            }
        }
    }
    let ranges: Vec<(String, u32, u32)> = wanted
        .iter()
        .map(|(c, h, _, _)| (c.clone(), *h, h.saturating_add(3600)))
        .collect();
    let secs = answers::ask_seconds(state, f, Figure::FunnelSeconds, &ranges).await?;
    let mut found: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (channel, hour, rank, below) in wanted {
        let mut seen = below;
        for (d, v) in of(&secs, Figure::FunnelSeconds)
            .filter(|(d, _)| d.channel == channel && d.delay_seconds / 3600 * 3600 == hour)
        {
            seen += count(v);
            if seen >= rank {
                found
                    .entry(channel.clone())
                    .or_default()
                    .push(d.delay_seconds);
                break;
            }
        }
    }
    Ok(found
        .into_iter()
        .filter_map(|(c, s)| match s[..] {
            [m] => Some((c, f64::from(m))),
            _ => None,
        })
        .collect())
}

pub async fn funnel(State(state): State<Shared>, q: Params) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let a = answers::ask(&state, &f, &[Figure::Funnel, Figure::FunnelHours], false).await?;
    let wanted = |channel: &str| f.channel.as_deref().is_none_or(|c| c == channel);
    let mut rows: BTreeMap<String, FunnelRow> = BTreeMap::new();
    for (d, v) in of(&a.whole, Figure::Funnel).filter(|(d, _)| wanted(&d.channel)) {
        let r = rows.entry(d.channel.clone()).or_insert_with(|| FunnelRow {
            channel: d.channel.clone(),
            ..Default::default()
        });
        match d.step.as_str() {
            figures::TOUCHED => r.touched = count(v),
            figures::VISITED => r.visited = count(v),
            figures::SIGNED => r.signed_up = count(v),
            other => return Err(ApiError::Internal(format!("unknown funnel step `{other}`"))),
        }
    }
    let mut hours: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
    for (d, v) in of(&a.whole, Figure::FunnelHours).filter(|(d, _)| wanted(&d.channel)) {
        hours
            .entry(d.channel.clone())
            .or_default()
            .push((d.delay_seconds, count(v)));
    }
    for by_hour in hours.values_mut() {
        by_hour.sort_unstable();
    }
    for (channel, m) in medians(&state, &f, &hours).await? {
        if let Some(r) = rows.get_mut(&channel) {
            r.median_seconds_to_signup = Some(m);
        }
    }
    let out: Vec<FunnelRow> = rows.into_values().filter(|r| r.touched > 0).collect();
    if f.format == Format::Csv {
        return Ok(csv_of(
            &Export::new(&state.campaign, &f, "funnel"),
            &[
                "channel",
                "touched",
                "visited",
                "signed_up",
                "median_seconds_to_signup",
            ],
            &out,
        ));
    }
    Ok(json(&Funnel { rows: out }))
}
