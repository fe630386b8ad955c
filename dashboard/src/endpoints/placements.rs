//! `GET /api/placements`: every configured placement (and any unknown code
//! seen), ranked by scans.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use ensemble_model::figures::Figure;
use ensemble_model::media;
use ensemble_model::rules;
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, count, in_channel, of};
use crate::csv::{csv_of, Export};
use crate::error::ApiError;
use crate::filters::{Filters, Format};
use crate::state::Shared;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PlacementStats {
    pub code: String,
    pub channel: String,
    pub label: String,
    /// QR scans and card clicks through the redirect.
    pub scans: u64,
    /// Repeated scans in the question's range: the same client scanned this
    /// placement within the collector's window. Stored, flagged, and left
    /// out of `scans` and every other figure unless bots are included.
    pub scans_filtered: u64,
    pub unique_scanners: u64,
    pub visits: u64,
    pub signups: u64,
    /// signups / unique scanners.
    pub rate: f64,
    /// The placement's media cost over the question's days (its share of
    /// the campaign's time, as in the reach report) ÷ sign-ups.
    pub cost_per_signup_eur: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Placements {
    pub rows: Vec<PlacementStats>,
}

/// (scans, scanners, visits, signups) of a placement seen in the events.
#[derive(Debug, Default)]
struct Seen {
    scans: u64,
    scanners: u64,
    visits: u64,
    signups: u64,
}

pub async fn placements(State(state): State<Shared>, q: Params) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let a = answers::ask(
        &state,
        &f,
        &[Figure::Events, Figure::Scanners, Figure::SignupsByPlacement],
        false,
    )
    .await?;
    let filtered = filtered_scans(&state, &f).await?;
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for (d, v) in of(&a.whole, Figure::Events) {
        if d.placement.is_empty() || !in_channel(&f, d, true) {
            continue;
        }
        let s = seen.entry(d.placement.clone()).or_default();
        if rules::is_scan(&d.event_type, &d.action) {
            s.scans += count(v);
        }
        if rules::is_visit(&d.event_type) {
            s.visits += count(v);
        }
    }
    for (d, v) in of(&a.whole, Figure::Scanners) {
        if let Some(s) = seen
            .get_mut(&d.placement)
            .filter(|_| in_channel(&f, d, false))
        {
            s.scanners = count(v);
        }
    }
    for (d, v) in of(&a.whole, Figure::SignupsByPlacement) {
        if let Some(s) = seen
            .get_mut(&d.placement)
            .filter(|_| in_channel(&f, d, false))
        {
            s.signups = count(v);
        }
    }
    let mut out: BTreeMap<String, PlacementStats> = state
        .campaign
        .placements
        .iter()
        .filter(|p| f.channel.as_deref().is_none_or(|c| c == p.channel))
        .filter(|p| f.placement.as_deref().is_none_or(|c| c == p.code))
        .map(|p| {
            (
                p.code.clone(),
                PlacementStats {
                    code: p.code.clone(),
                    channel: p.channel.clone(),
                    label: p.label.clone(),
                    ..Default::default()
                },
            )
        })
        .collect();
    for code in filtered.keys() {
        seen.entry(code.clone()).or_default();
    }
    for (code, s) in seen {
        let known = state.campaign.placement(&code);
        let entry = out.entry(code.clone()).or_insert_with(|| PlacementStats {
            code: code.clone(),
            channel: known.map_or_else(
                || state.campaign.channel_rules.unknown.clone(),
                |p| p.channel.clone(),
            ),
            label: known.map_or_else(|| "(unknown code)".into(), |p| p.label.clone()),
            ..Default::default()
        });
        entry.scans = s.scans;
        entry.scans_filtered = filtered.get(&code).copied().unwrap_or(0);
        entry.unique_scanners = s.scanners;
        entry.visits = s.visits;
        entry.signups = s.signups;
    }
    let share = media::share(&state.campaign, f.from, f.to, f.phase.as_deref());
    let mut list: Vec<PlacementStats> = out
        .into_values()
        .map(|mut p| {
            p.rate = if p.unique_scanners == 0 {
                0.0
            } else {
                p.signups as f64 / p.unique_scanners as f64
            };
            p.cost_per_signup_eur = media::cost_per(
                media::cost_in(
                    state
                        .campaign
                        .placement(&p.code)
                        .and_then(|c| c.media_cost_eur),
                    share,
                ),
                p.signups,
            );
            p
        })
        .collect();
    list.sort_by(|a, b| b.scans.cmp(&a.scans).then_with(|| a.code.cmp(&b.code)));
    if f.format == Format::Csv {
        return Ok(csv_of(
            &Export::new(&state.campaign, &f, "placements"),
            &[
                "code",
                "channel",
                "label",
                "scans",
                "scans_filtered",
                "unique_scanners",
                "visits",
                "signups",
                "rate",
                "cost_per_signup_eur",
            ],
            &list,
        ));
    }
    Ok(json(&Placements { rows: list }))
}

/// Repeated scans per placement in the question's range (and channel,
/// phase, device), read from the stored events: the figures leave them out.
async fn filtered_scans(
    state: &crate::state::ApiState,
    f: &Filters,
) -> Result<BTreeMap<String, u64>, ApiError> {
    let mut sql = String::from(
        "SELECT placement, uniqExact(event_id) FROM events \
         WHERE repeat_scan = 1 AND ts >= toDateTime(?) AND ts < toDateTime(?)",
    );
    let mut binds = Vec::new();
    for (column, value) in [
        ("channel", &f.channel),
        ("phase", &f.phase),
        ("device_class", &f.device),
        ("placement", &f.placement),
    ] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            binds.push(v.clone());
        }
    }
    sql.push_str(" GROUP BY placement");
    let mut q = state
        .client
        .query(&sql)
        .bind(f.from.timestamp())
        .bind(f.to.timestamp());
    for b in binds {
        q = q.bind(b);
    }
    let rows: Vec<(String, u64)> = q.fetch_all().await?;
    Ok(rows.into_iter().collect())
}
