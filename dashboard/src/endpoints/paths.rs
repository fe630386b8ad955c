//! `GET /api/paths`: the most frequent conversion paths (channel sequences
//! of touches, `ensemble_model::paths`), with their conversions, visitors
//! who followed them without signing up, conversion rate and time to
//! sign-up, and the path length distribution. The same table feeds the
//! data-driven models of `/api/attribution`.

use axum::extract::State;
use axum::response::Response;
use ensemble_core::attribution::DIRECT;
use ensemble_core::figures::Figure;
use ensemble_core::paths::{LengthLine, PathLine, Table};
use serde::Serialize;

use super::{json, Params};
use crate::answers;
use crate::csv::{csv, Export};
use crate::error::ApiError;
use crate::filters::{FilterError, Filters, Format};
use crate::state::{ApiState, Shared};

/// Paths listed unless `limit` says otherwise, and the most it may ask.
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100_000;

/// Every path of the filters' question with its counts and summed delays
/// (the channel filter is not applied: it narrows what is shown, not the
/// models computed over the table). Without the delays' minutes: one row
/// per path, not per conversion.
pub async fn table(state: &ApiState, f: &Filters) -> Result<Table, ApiError> {
    let a = answers::ask_without_seconds(
        state,
        f,
        &[Figure::PathsConverted, Figure::PathsNotConverted],
    )
    .await?;
    let mut t = Table::default();
    for ((figure, d), v) in &a {
        match figure {
            Figure::PathsConverted => t.add_converted(&d.channel, v.n, v.credit),
            Figure::PathsNotConverted => t.add_not_converted(&d.channel, v.n),
            _ => {}
        }
    }
    Ok(t)
}

/// Asking for the delays' minutes of these paths only, one by one, is
/// cheaper up to this many; above, every path's are read at once.
const NARROWED_PATHS: usize = 200;

/// The delays (to the minute) of the listed paths' conversions, for their
/// medians.
async fn add_delays(
    state: &ApiState,
    f: &Filters,
    t: &mut Table,
    listed: &[String],
) -> Result<(), ApiError> {
    let rows = if listed.len() <= NARROWED_PATHS {
        let ranges: Vec<(String, u32, u32)> = listed
            .iter()
            .filter(|p| p.as_str() != DIRECT)
            .map(|p| (p.clone(), 0, u32::MAX))
            .collect();
        answers::ask_seconds(state, f, Figure::PathsConverted, &ranges).await?
    } else {
        answers::ask(state, f, &[Figure::PathsConverted], false)
            .await?
            .whole
    };
    for ((figure, d), v) in &rows {
        if *figure == Figure::PathsConverted && d.channel != DIRECT {
            t.add_delay(&d.channel, u64::from(d.seconds), v.n);
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Paths {
    /// Conversions and visitors without sign-up over every path kept (the
    /// channel filter keeps the paths through the channel).
    pub conversions: u64,
    pub without_signup: u64,
    /// Distinct paths kept; `paths` lists the first `limit`.
    pub distinct_paths: usize,
    pub limit: usize,
    pub max_steps: usize,
    pub paths: Vec<PathLine>,
    pub lengths: Vec<LengthLine>,
}

fn limit(q: &Params) -> Result<usize, FilterError> {
    match q.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| FilterError {
                parameter: "limit",
                message: format!("`{raw}` is not a number of paths from 1 to {MAX_LIMIT}"),
            }),
    }
}

pub async fn paths(State(state): State<Shared>, q: Params) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let limit = limit(&q)?;
    if f.placement.is_some() {
        return Err(FilterError {
            parameter: "placement",
            message:
                "paths do not take a placement filter: a path crosses placements; filter by channel"
                    .into(),
        }
        .into());
    }
    let mut t = table(&state, &f).await?;
    if let Some(c) = &f.channel {
        t = t.through(c);
    }
    let listed = t.top_paths(limit);
    add_delays(&state, &f, &mut t, &listed).await?;
    let top = t.top(limit);
    if f.format == Format::Csv {
        let rows: Vec<Vec<String>> = top
            .iter()
            .map(|p| {
                vec![
                    p.path.clone(),
                    p.steps.len().to_string(),
                    p.truncated.to_string(),
                    p.conversions.to_string(),
                    p.without_signup.to_string(),
                    format!("{:.6}", p.conversion_rate),
                    p.mean_time_to_signup_s
                        .map(|s| format!("{s:.1}"))
                        .unwrap_or_default(),
                    p.median_time_to_signup_s
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        return Ok(csv(
            &Export::new(&state.campaign, &f, "paths"),
            &[
                "path",
                "steps",
                "truncated",
                "conversions",
                "without_signup",
                "conversion_rate",
                "mean_time_to_signup_s",
                "median_time_to_signup_s",
            ],
            &rows,
        ));
    }
    Ok(json(&Paths {
        conversions: t.conversions(),
        without_signup: t
            .paths
            .values()
            .map(|c| u64::try_from(c.without_signup).unwrap_or(0))
            .sum(),
        distinct_paths: t.paths.len(),
        limit,
        max_steps: ensemble_core::paths::MAX_STEPS,
        paths: top,
        lengths: t.lengths(),
    }))
}
