//! `GET /api/uplift?metric=signups|visits|visitors&baseline=before|between`:
//! each phase's daily figure against a baseline's days — the difference of
//! the daily means with Welch's 95 % interval, and what it adds up to over
//! the phase (`ensemble_model::uplift`, which also says what it assumes).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use ensemble_model::figures::{day_of, day_start, Day, Figure};
use ensemble_model::rules::PAGE_VIEW;
use ensemble_model::uplift::{
    self, Baseline, Missing, Sample, DEFAULT_BEFORE_DAYS, MAX_BEFORE_DAYS,
};
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, count, date, in_channel, of};
use crate::csv::{csv_of, Export};
use crate::error::ApiError;
use crate::filters::{bad, FilterError, Filters, Format};
use crate::state::Shared;

/// One day's figure.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DayValue {
    pub day: String,
    pub value: u64,
}

/// The days every phase is compared with.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BaselineDays {
    /// `before` or `between`.
    pub kind: String,
    /// `baseline=before`: the days asked for (fewer count when the first
    /// event recorded is later).
    pub asked_days: Option<u32>,
    /// First and last day counted (local dates), when any.
    pub first_day: Option<String>,
    pub last_day: Option<String>,
    #[serde(flatten)]
    pub sample: Sample,
    pub daily: Vec<DayValue>,
}

/// A phase against the baseline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseUplift {
    pub phase: String,
    pub label: String,
    pub first_day: Option<String>,
    pub last_day: Option<String>,
    #[serde(flatten)]
    pub sample: Sample,
    pub baseline_mean: f64,
    /// Phase mean − baseline mean, per day, with its 95 % interval (none
    /// without two days on each side: `reason` says why).
    pub uplift_per_day: Option<f64>,
    pub low_95: Option<f64>,
    pub high_95: Option<f64>,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: Option<f64>,
    /// The uplift over the baseline mean (none when the baseline mean is 0).
    pub relative: Option<f64>,
    /// The uplift over the phase's days: what the phase added in all.
    pub extra: Option<f64>,
    pub extra_low_95: Option<f64>,
    pub extra_high_95: Option<f64>,
    /// Why there is no interval: `no_baseline_days`, `baseline_one_day`,
    /// `phase_no_days`, `phase_one_day`.
    pub reason: Option<Missing>,
    pub daily: Vec<DayValue>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Uplift {
    pub metric: String,
    pub level: f64,
    pub baseline: BaselineDays,
    pub phases: Vec<PhaseUplift>,
}

fn parse_baseline(q: &std::collections::HashMap<String, String>) -> Result<Baseline, FilterError> {
    let days = match q.get("baseline_days") {
        None => None,
        Some(v) => Some(
            v.parse::<u32>()
                .ok()
                .filter(|d| (2..=MAX_BEFORE_DAYS).contains(d))
                .ok_or_else(|| {
                    bad(
                        "baseline_days",
                        format!(
                            "baseline_days is a whole number of days from 2 to {MAX_BEFORE_DAYS}"
                        ),
                    )
                })?,
        ),
    };
    match q.get("baseline").map(String::as_str) {
        None | Some("before") => Ok(Baseline::Before {
            days: days.unwrap_or(DEFAULT_BEFORE_DAYS),
        }),
        Some("between") if days.is_some() => Err(bad(
            "baseline_days",
            "baseline_days sets the length of `baseline=before`; `between` takes every day between the phases",
        )),
        Some("between") => Ok(Baseline::Between),
        Some(_) => Err(bad(
            "baseline",
            "baseline is `before` (the days before the first phase) or `between` (the days between phases)",
        )),
    }
}

pub async fn uplift(
    State(state): State<Shared>,
    axum::extract::Query(mut q): Params,
) -> Result<Response, ApiError> {
    let metric = q.remove("metric").unwrap_or_else(|| "signups".into());
    let figure = match metric.as_str() {
        "signups" => Figure::SignupsDaily,
        "visitors" => Figure::VisitorsDaily,
        "visits" => Figure::Events,
        _ => {
            return Err(bad("metric", "metric is `signups`, `visits` or `visitors`").into());
        }
    };
    let f = Filters::parse_with(&state.campaign, &q, &["baseline", "baseline_days"])?;
    if let Some(p) = ["from", "to"].into_iter().find(|p| q.contains_key(*p)) {
        return Err(bad(
            p,
            "uplift compares whole phases with a baseline: choose a phase with `phase=` and the baseline with `baseline=`",
        )
        .into());
    }
    if f.phase.as_deref() == Some(ensemble_model::campaign::HORS_PHASE) {
        return Err(bad(
            "phase",
            "uplift is measured for a phase; the days outside the phases are `baseline=between`",
        )
        .into());
    }
    let baseline = parse_baseline(&q)?;
    let campaign = &state.campaign;
    let today = day_of(
        campaign,
        u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0),
    );
    let days = |first: Day, end: Day| Filters {
        from: day_start(campaign, first),
        to: day_start(campaign, end),
        phase: None,
        ..f.clone()
    };
    let span = uplift::span(campaign, baseline);
    let (mut daily, mut first_data) = match span {
        Some((first, last)) => {
            let a = answers::ask(
                &state,
                &days(first, last + 1),
                &[Figure::Events, figure],
                false,
            )
            .await?;
            daily_values(&a.whole, figure, &f)
        }
        None => (BTreeMap::new(), None),
    };
    // In a deployment with several campaigns the days before this one
    // belong to the campaign before it (`Campaigns::preceding`), except the
    // events carrying this campaign's placement codes: both are read.
    if let (Some(before), Some((first, _)), Some(start)) =
        (state.preceding.as_ref(), span, uplift::first_day(campaign))
    {
        if first < start {
            let a = answers::ask(
                before,
                &days(first, start),
                &[Figure::Events, figure],
                false,
            )
            .await?;
            let (theirs, their_first) = daily_values(&a.whole, figure, &f);
            for (d, v) in theirs.into_iter().filter(|(d, _)| *d < start) {
                *daily.entry(d).or_default() += v;
            }
            first_data = match (first_data, their_first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    let plan = uplift::plan(campaign, baseline, first_data, today);
    let values = |days: &[Day]| -> Vec<DayValue> {
        days.iter()
            .map(|d| DayValue {
                day: date(*d),
                value: daily.get(d).copied().unwrap_or(0),
            })
            .collect()
    };
    let sample = |v: &[DayValue]| Sample::of(&v.iter().map(|d| d.value as f64).collect::<Vec<_>>());
    let bounds = |days: &[Day]| {
        (
            days.first().map(|d| date(*d)),
            days.last().map(|d| date(*d)),
        )
    };
    let base_daily = values(&plan.baseline);
    let base = sample(&base_daily);
    let (first_day, last_day) = bounds(&plan.baseline);
    let mut phases = Vec::new();
    for (id, days) in &plan.phases {
        if f.phase.as_ref().is_some_and(|p| p != id) {
            continue;
        }
        let daily = values(days);
        let s = sample(&daily);
        let (u, reason) = match uplift::welch(&s, &base) {
            Ok(u) => (Some(u), None),
            Err(why) => (None, Some(why)),
        };
        let n = s.days as f64;
        let (first_day, last_day) = bounds(days);
        phases.push(PhaseUplift {
            phase: id.clone(),
            label: campaign
                .phases
                .iter()
                .find(|p| &p.id == id)
                .map(|p| p.label.clone())
                .unwrap_or_default(),
            first_day,
            last_day,
            sample: s,
            baseline_mean: base.mean,
            uplift_per_day: u.map(|u| u.per_day),
            low_95: u.map(|u| u.low),
            high_95: u.map(|u| u.high),
            df: u.map(|u| u.df),
            relative: u.filter(|_| base.mean > 0.0).map(|u| u.per_day / base.mean),
            extra: u.map(|u| u.per_day * n),
            extra_low_95: u.map(|u| u.low * n),
            extra_high_95: u.map(|u| u.high * n),
            reason,
            daily,
        });
    }
    let answer = Uplift {
        metric: metric.clone(),
        level: uplift::LEVEL,
        baseline: BaselineDays {
            kind: match baseline {
                Baseline::Before { .. } => "before",
                Baseline::Between => "between",
            }
            .into(),
            asked_days: match baseline {
                Baseline::Before { days } => Some(days),
                Baseline::Between => None,
            },
            first_day,
            last_day,
            sample: base,
            daily: base_daily,
        },
        phases,
    };
    if f.format == Format::Csv {
        return Ok(csv_of(
            &Export::new(campaign, &f, &format!("uplift-{metric}")),
            &[
                "phase",
                "first_day",
                "last_day",
                "days",
                "mean",
                "sd",
                "baseline_mean",
                "uplift_per_day",
                "low_95",
                "high_95",
                "df",
                "relative",
                "extra",
                "extra_low_95",
                "extra_high_95",
                "reason",
            ],
            &answer.phases,
        ));
    }
    Ok(json(&answer))
}

/// The metric per local day (the filters' channel, or every channel), and
/// the first day with any event at all (the collectors ran from then on).
fn daily_values(
    a: &ensemble_model::figures::Answer,
    figure: Figure,
    f: &Filters,
) -> (BTreeMap<Day, u64>, Option<Day>) {
    let mut daily: BTreeMap<Day, u64> = BTreeMap::new();
    let mut first_data: Option<Day> = None;
    for (d, v) in of(a, Figure::Events) {
        if count(v) > 0 {
            first_data = Some(first_data.map_or(d.day, |x| x.min(d.day)));
        }
        if figure == Figure::Events && d.event_type == PAGE_VIEW && in_channel(f, d, true) {
            *daily.entry(d.day).or_default() += count(v);
        }
    }
    if figure != Figure::Events {
        for (d, v) in of(a, figure).filter(|(d, _)| in_channel(f, d, false)) {
            *daily.entry(d.day).or_default() += count(v);
        }
    }
    (daily, first_data)
}
