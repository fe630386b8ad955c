//! `GET /api/overview`: events by type, visits, visitors, sign-ups and
//! conversion rate — overall and per phase, with the period of equal
//! length just before.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use ensemble_model::figures::{Answer, Figure};
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, count, in_channel, of};
use crate::csv::{csv, Export};
use crate::error::ApiError;
use crate::filters::{self, Filters, Format};
use crate::state::{ApiState, Shared};

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    /// Events (touches and exposures included) per type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Landing visits: page views.
    pub visits: u64,
    pub visitors: u64,
    /// Distinct contacts who signed up (a repeat sign-up counts once).
    pub signups: u64,
    /// signups / visitors.
    pub conversion_rate: f64,
}

impl Totals {
    /// The totals of an answer for the filters' channel (or every channel).
    fn of(a: &Answer, f: &Filters) -> Self {
        let mut t = Totals::default();
        for (d, v) in of(a, Figure::Events) {
            if in_channel(f, d, true) {
                *t.events_by_type.entry(d.event_type.clone()).or_default() += count(v);
            }
        }
        t.events_by_type.retain(|_, n| *n > 0);
        t.visitors = of(a, Figure::Visitors)
            .filter(|(d, _)| in_channel(f, d, false))
            .map(|(_, v)| count(v))
            .sum();
        t.signups = of(a, Figure::Signups)
            .filter(|(d, _)| in_channel(f, d, false))
            .map(|(_, v)| count(v))
            .sum();
        t.visits = t
            .events_by_type
            .get(ensemble_model::rules::PAGE_VIEW)
            .copied()
            .unwrap_or(0);
        t.conversion_rate = if t.visitors == 0 {
            0.0
        } else {
            t.signups as f64 / t.visitors as f64
        };
        t
    }

    fn is_empty(&self) -> bool {
        self.events_by_type.is_empty() && self.visitors == 0 && self.signups == 0
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub totals: Totals,
    pub by_phase: BTreeMap<String, Totals>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Overview {
    pub current: Period,
    pub previous: Period,
}

pub async fn period(state: &ApiState, f: &Filters) -> Result<Period, ApiError> {
    let a = answers::ask(
        state,
        f,
        &[Figure::Events, Figure::Visitors, Figure::Signups],
        true,
    )
    .await?;
    Ok(Period {
        from: f.from,
        to: f.to,
        totals: Totals::of(&a.whole, f),
        by_phase: a
            .by_phase
            .iter()
            .map(|(p, part)| (p.clone(), Totals::of(part, f)))
            .filter(|(_, t)| !t.is_empty())
            .collect(),
    })
}

pub async fn overview(State(state): State<Shared>, q: Params) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let (from, to) =
        filters::period_before(&state.campaign, f.from, f.to).instants(&state.campaign);
    let before = Filters {
        from,
        to,
        ..f.clone()
    };
    // Both periods are asked at once: two ClickHouse reads side by side.
    let (current, previous) = tokio::try_join!(period(&state, &f), period(&state, &before))?;
    if f.format == Format::Csv {
        let mut rows = Vec::new();
        for (label, p) in [("current", &current), ("previous", &previous)] {
            for (phase, t) in &p.by_phase {
                for (ty, n) in &t.events_by_type {
                    rows.push(vec![label.into(), phase.clone(), ty.clone(), n.to_string()]);
                }
                rows.push(vec![
                    label.into(),
                    phase.clone(),
                    "visitors".into(),
                    t.visitors.to_string(),
                ]);
                rows.push(vec![
                    label.into(),
                    phase.clone(),
                    "signups".into(),
                    t.signups.to_string(),
                ]);
            }
        }
        return Ok(csv(
            &Export::new(&state.campaign, &f, "overview"),
            &["period", "phase", "metric", "value"],
            &rows,
        ));
    }
    Ok(json(&Overview { current, previous }))
}
