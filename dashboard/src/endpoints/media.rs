//! `GET /api/media`: the agency's reach report — per placement and per
//! channel, the campaign file's audience estimate and media cost (the
//! question's part of them) against what was measured: exposures, scans,
//! reached visitors, sign-ups, and the ratios of `ensemble_model::media`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use ensemble_model::figures::{Figure, ALL};
use ensemble_model::media::{self, Bought, Line, Measured};
use ensemble_model::rules;
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, count, of};
use crate::csv::{csv, Export};
use crate::error::ApiError;
use crate::filters::{FilterError, Filters, Format};
use crate::state::Shared;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlacementLine {
    pub code: String,
    pub channel: String,
    pub label: String,
    #[serde(flatten)]
    pub line: Line,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelLine {
    pub channel: String,
    #[serde(flatten)]
    pub line: Line,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Media {
    /// The question's share of the campaign's time: the part of each
    /// audience estimate and media cost it gets.
    pub share_of_campaign: f64,
    pub placements: Vec<PlacementLine>,
    pub channels: Vec<ChannelLine>,
}

/// Counts per key (a placement code or a channel).
#[derive(Debug, Default)]
struct Counts {
    exposures: u64,
    scans: u64,
}

fn measured(c: Option<&Counts>, reached: u64, signups: u64) -> Measured {
    Measured {
        exposures: c.map(|c| c.exposures).filter(|n| *n > 0),
        scans: c.map_or(0, |c| c.scans),
        reached_visitors: reached,
        signups,
    }
}

pub async fn media(State(state): State<Shared>, q: Params) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    for (parameter, given) in [("placement", &f.placement), ("device", &f.device)] {
        if given.is_some() {
            return Err(FilterError {
                parameter,
                message: format!(
                    "the reach report does not take a {parameter} filter: every placement is a line, \
                     and audience and cost are not split by {parameter}; filter by channel or phase"
                ),
            }
            .into());
        }
    }
    let campaign = &state.campaign;
    let wanted = |channel: &str| f.channel.as_deref().is_none_or(|c| c == channel);
    let codes: Vec<String> = campaign
        .placements
        .iter()
        .filter(|p| wanted(&p.channel))
        .map(|p| p.code.clone())
        .collect();
    let a = answers::ask(
        &state,
        &f,
        &[
            Figure::Events,
            Figure::Visitors,
            Figure::Signups,
            Figure::SignupsByPlacement,
        ],
        false,
    )
    .await?;
    let reached_placement = answers::visitors_per_placement(&state, &f, &codes).await?;
    let mut by_placement: BTreeMap<String, Counts> = BTreeMap::new();
    let mut by_channel: BTreeMap<String, Counts> = BTreeMap::new();
    for (d, v) in of(&a.whole, Figure::Events) {
        let exposure = rules::is_exposure(&d.event_type, &d.action);
        let scan = rules::is_scan(&d.event_type, &d.action);
        for (map, key) in [
            (&mut by_placement, &d.placement),
            (&mut by_channel, &d.channel),
        ] {
            if key.is_empty() {
                continue;
            }
            let c = map.entry(key.clone()).or_default();
            if exposure {
                c.exposures += count(v);
            }
            if scan {
                c.scans += count(v);
            }
        }
    }
    let per = |figure: Figure, placement: bool| -> BTreeMap<String, u64> {
        of(&a.whole, figure)
            .filter(|(d, _)| !placement || d.channel == ALL)
            .map(|(d, v)| {
                let key = if placement { &d.placement } else { &d.channel };
                (key.clone(), count(v))
            })
            .collect()
    };
    let (visitors, signups, signups_placement) = (
        per(Figure::Visitors, false),
        per(Figure::Signups, false),
        per(Figure::SignupsByPlacement, true),
    );
    let share = media::share(campaign, f.from, f.to, f.phase.as_deref());
    let placements: Vec<PlacementLine> = campaign
        .placements
        .iter()
        .filter(|p| wanted(&p.channel))
        .map(|p| PlacementLine {
            code: p.code.clone(),
            channel: p.channel.clone(),
            label: p.label.clone(),
            line: media::line(
                Bought {
                    audience_estimate: p.audience_estimate,
                    media_cost_eur: p.media_cost_eur,
                },
                share,
                measured(
                    by_placement.get(&p.code),
                    reached_placement.get(&p.code).copied().unwrap_or(0),
                    signups_placement.get(&p.code).copied().unwrap_or(0),
                ),
            ),
        })
        .collect();
    let channels: Vec<ChannelLine> = campaign
        .channels
        .iter()
        .filter(|c| wanted(&c.id))
        .map(|c| ChannelLine {
            channel: c.id.clone(),
            line: media::line(
                media::channel_bought(campaign, &c.id),
                share,
                measured(
                    by_channel.get(&c.id),
                    visitors.get(&c.id).copied().unwrap_or(0),
                    signups.get(&c.id).copied().unwrap_or(0),
                ),
            ),
        })
        .collect();
    if f.format == Format::Csv {
        let num = |x: Option<f64>| x.map(|v| format!("{v:.6}")).unwrap_or_default();
        let cells = |kind: &str, code: &str, channel: &str, l: &Line| -> Vec<String> {
            vec![
                kind.to_owned(),
                code.to_owned(),
                channel.to_owned(),
                num(l.audience),
                num(l.media_cost_eur),
                l.exposures.map(|n| n.to_string()).unwrap_or_default(),
                l.scans.to_string(),
                l.reached_visitors.to_string(),
                l.signups.to_string(),
                num(l.scans_per_1000_audience),
                num(l.cost_per_scan_eur),
                num(l.cpm_eur),
                num(l.cost_per_reached_visitor_eur),
                num(l.cost_per_signup_eur),
            ]
        };
        let rows: Vec<Vec<String>> = placements
            .iter()
            .map(|p| cells("placement", &p.code, &p.channel, &p.line))
            .chain(
                channels
                    .iter()
                    .map(|c| cells("channel", "", &c.channel, &c.line)),
            )
            .collect();
        return Ok(csv(
            &Export::new(campaign, &f, "media"),
            &[
                "level",
                "placement",
                "channel",
                "audience",
                "media_cost_eur",
                "exposures",
                "scans",
                "reached_visitors",
                "signups",
                "scans_per_1000_audience",
                "cost_per_scan_eur",
                "cpm_eur",
                "cost_per_reached_visitor_eur",
                "cost_per_signup_eur",
            ],
            &rows,
        ));
    }
    Ok(json(&Media {
        share_of_campaign: share,
        placements,
        channels,
    }))
}
