//! `GET /api/paths`: the most frequent conversion paths (channel sequences
//! of touches, `ensemble_model::paths`), with their conversions, visitors
//! who followed them without signing up, conversion rate and time to
//! sign-up, and the path length distribution. The same table feeds the
//! data-driven models of `/api/attribution`.

use axum::extract::State;
use axum::response::Response;
use ensemble_model::attribution::DIRECT;
use ensemble_model::figures::{Answer, Figure};
use ensemble_model::paths::{self, LengthLine, PathLine, Table};
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, DelayHours};
use crate::csv::{csv, Export};
use crate::error::ApiError;
use crate::filters::{FilterError, Filters, Format};
use crate::state::{ApiState, Shared};

/// Paths listed unless `limit` says otherwise, and the most it may ask.
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100_000;

/// Every path of the filters' question with its counts and summed delays
/// (the channel filter is not applied: it narrows what is shown, not the
/// models computed over the table). One row per path (the delays' minutes
/// are a figure of their own, `paths_delays`).
pub async fn table(state: &ApiState, f: &Filters) -> Result<Table, ApiError> {
    let a = answers::ask_rounded(
        state,
        f,
        &[Figure::PathsConverted, Figure::PathsNotConverted],
        Some(0),
        None,
    )
    .await?;
    let mut t = Table::default();
    add_paths(&mut t, &a, Figure::PathsConverted);
    add_paths(&mut t, &a, Figure::PathsNotConverted);
    Ok(t)
}

/// One of the path figures of an answer (conversions or visitors
/// without sign-up) into a table.
fn add_paths(t: &mut Table, a: &Answer, figure: Figure) {
    for ((_, d), v) in a.iter().filter(|((f, _), _)| *f == figure) {
        match figure {
            Figure::PathsConverted => t.add_converted(&d.path, v.n, v.credit),
            Figure::PathsNotConverted => t.add_not_converted(&d.path, v.n),
            _ => {}
        }
    }
}

/// Up to this many listed paths, their medians come from two small
/// questions (delays by the hour, then the median hour's minutes); above
/// (an export of every path), from every conversion's minute at once.
const NARROWED_PATHS: usize = 200;

const HOUR: u32 = 3600;

/// The delays the listed paths' medians need, into `t`: exact to the
/// minute, read without one row per conversion of every path.
async fn add_medians(
    state: &ApiState,
    f: &Filters,
    t: &mut Table,
    listed: &[String],
) -> Result<(), ApiError> {
    let timed: Vec<&String> = listed.iter().filter(|p| p.as_str() != DIRECT).collect();
    if timed.len() > NARROWED_PATHS {
        let a = answers::ask(state, f, &[Figure::PathsDelays], false).await?;
        for ((figure, d), v) in &a.whole {
            if *figure == Figure::PathsDelays {
                t.add_delay(&d.path, u64::from(d.delay_seconds), v.n);
            }
        }
        return Ok(());
    }
    let hours = delay_hours(state, f, &timed).await?;
    add_minutes(state, f, t, listed, &hours).await
}

/// How many paths' hours are read with the conversions for `limit` listed:
/// a margin for paths tied with the last listed one.
fn prefetched_paths(limit: usize) -> usize {
    limit + limit / 2 + 5
}

/// Each of `paths`' delays by the hour (to find the hour of its median).
async fn delay_hours<S: AsRef<str>>(
    state: &ApiState,
    f: &Filters,
    paths: &[S],
) -> Result<DelayHours, ApiError> {
    let every: Vec<(String, u32, u32)> = paths
        .iter()
        .map(|p| (p.as_ref().to_owned(), 0, u32::MAX))
        .collect();
    let by_hour =
        answers::ask_rounded(state, f, &[Figure::PathsDelays], Some(HOUR), Some(&every)).await?;
    let mut hours = DelayHours::new();
    for ((_, d), v) in &by_hour {
        *hours
            .entry(d.path.clone())
            .or_default()
            .entry(u64::from(d.delay_seconds))
            .or_default() += v.n;
    }
    Ok(hours)
}

/// The listed paths' delays into `t` from their `hours`: the delays before
/// the median's hour as one count, then that hour's minutes.
async fn add_minutes(
    state: &ApiState,
    f: &Filters,
    t: &mut Table,
    listed: &[String],
    hours: &DelayHours,
) -> Result<(), ApiError> {
    let mut inside: Vec<(String, u32, u32)> = Vec::new();
    let mut below: Vec<(String, u64, u64)> = Vec::new();
    for (path, h) in listed.iter().filter_map(|p| hours.get(p).map(|h| (p, h))) {
        let n = t
            .paths
            .get(path)
            .map_or(0, |c| u64::try_from(c.timed).unwrap_or(0));
        if let Some((hour, before)) = paths::median_bucket(h, n) {
            let hour_s = u32::try_from(hour).unwrap_or(u32::MAX);
            inside.push((path.clone(), hour_s, hour_s.saturating_add(HOUR)));
            below.push((path.clone(), hour, before));
        }
    }
    // The delays before the median's hour, as one count just below it,
    // then that hour's minutes: the lower median is the same.
    for (path, hour, before) in &below {
        if *before > 0 {
            t.add_delay(
                path,
                hour.saturating_sub(1),
                i64::try_from(*before).unwrap_or(i64::MAX),
            );
        }
    }
    let minutes = answers::ask_rounded(
        state,
        f,
        &[Figure::PathsDelays],
        Some(paths::DELAY_STEP_S as u32),
        Some(&inside),
    )
    .await?;
    for ((_, d), v) in &minutes {
        t.add_delay(&d.path, u64::from(d.delay_seconds), v.n);
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
    let f = Filters::parse_with(&state.campaign, &q, &["limit"])?;
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
    // Two reads at once: every path's conversions and visitors without
    // sign-up (one query: two would pay ClickHouse's cost per query twice
    // on the same rows), and the delays by the hour of the paths with most
    // stored conversions (the medians' first step; with a channel filter
    // the listed paths are others).
    let counted = answers::ask_rounded(
        &state,
        &f,
        &[Figure::PathsConverted, Figure::PathsNotConverted],
        Some(0),
        None,
    );
    let prefetched = async {
        if f.channel.is_none() && limit <= NARROWED_PATHS {
            answers::top_paths_delay_hours(&state, &f, prefetched_paths(limit)).await
        } else {
            Ok(None)
        }
    };
    let (counted, prefetched) = tokio::try_join!(counted, prefetched)?;
    // Conversions first: they decide which paths' medians are needed.
    let mut t = Table::default();
    add_paths(&mut t, &counted, Figure::PathsConverted);
    let candidates = match &f.channel {
        Some(c) => t.through(c).median_candidates(limit),
        None => t.median_candidates(limit),
    };
    let hours = if candidates.len() <= NARROWED_PATHS {
        // A listed path's hours read at once unless its corrected
        // conversions, not its stored ones, put it among the listed.
        let mut hours = prefetched.unwrap_or_default();
        let missing: Vec<&String> = candidates
            .iter()
            .filter(|p| !hours.contains_key(*p))
            .collect();
        if !missing.is_empty() {
            hours.extend(delay_hours(&state, &f, &missing).await?);
        }
        Some(hours)
    } else {
        None
    };
    add_paths(&mut t, &counted, Figure::PathsNotConverted);
    if let Some(c) = &f.channel {
        t = t.through(c);
    }
    let listed = t.top_paths(limit);
    match hours {
        Some(h) => add_minutes(&state, &f, &mut t, &listed, &h).await?,
        None => add_medians(&state, &f, &mut t, &listed).await?,
    }
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
        max_steps: ensemble_model::paths::MAX_STEPS,
        paths: top,
        lengths: t.lengths(),
    }))
}
