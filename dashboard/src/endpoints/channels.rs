//! `GET /api/channels`: per channel × phase — touches, visitors reached,
//! landing visits, sign-ups, conversion rate, cost per sign-up.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use ensemble_model::figures::{Figure, ALL};
use ensemble_model::media;
use ensemble_model::rules;
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, count, of};
use crate::csv::{csv_of, Export};
use crate::error::ApiError;
use crate::filters::{Filters, Format};
use crate::state::Shared;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChannelPhase {
    pub channel: String,
    pub phase: String,
    pub touches: u64,
    /// Distinct visitors with any event of the channel.
    pub visitors: u64,
    /// Landing visits: page views of the channel.
    pub visits: u64,
    /// Distinct contacts whose sign-up carried the channel.
    pub signups: u64,
    pub conversion_rate: f64,
    /// Media cost of the channel's placements over the question's days (its
    /// share of the campaign's time, as in the reach report) ÷ the
    /// channel's sign-ups in the question (every phase of it), when costs
    /// are configured.
    pub cost_per_signup_eur: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Channels {
    pub rows: Vec<ChannelPhase>,
}

fn entry<'r>(
    rows: &'r mut BTreeMap<(String, String), ChannelPhase>,
    channel: &str,
    phase: &str,
) -> &'r mut ChannelPhase {
    rows.entry((channel.to_owned(), phase.to_owned()))
        .or_insert_with(|| ChannelPhase {
            channel: channel.to_owned(),
            phase: phase.to_owned(),
            ..Default::default()
        })
}

pub async fn channels(State(state): State<Shared>, q: Params) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let a = answers::ask(
        &state,
        &f,
        &[
            Figure::Touches,
            Figure::Visitors,
            Figure::Events,
            Figure::Signups,
        ],
        true,
    )
    .await?;
    let wanted = |channel: &str| f.channel.as_deref().is_none_or(|c| c == channel);
    let mut rows: BTreeMap<(String, String), ChannelPhase> = BTreeMap::new();
    // Visitors reached, visits and sign-ups over each phase's part.
    for (phase, part) in &a.by_phase {
        for (d, v) in of(part, Figure::Visitors) {
            if d.channel != ALL && wanted(&d.channel) && count(v) > 0 {
                entry(&mut rows, &d.channel, phase).visitors = count(v);
            }
        }
        for (d, v) in of(part, Figure::Events) {
            if rules::is_visit(&d.event_type) {
                if let Some(r) = rows.get_mut(&(d.channel.clone(), phase.clone())) {
                    r.visits += count(v);
                }
            }
        }
        for (d, v) in of(part, Figure::Signups) {
            if let Some(r) = rows.get_mut(&(d.channel.clone(), phase.clone())) {
                r.signups = count(v);
            }
        }
    }
    // Touches by the phase of their first event.
    for (d, v) in of(&a.whole, Figure::Touches) {
        if wanted(&d.channel) && count(v) > 0 {
            entry(&mut rows, &d.channel, &d.phase).touches = count(v);
        }
    }
    let mut signups_by_channel: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows.values() {
        *signups_by_channel.entry(r.channel.clone()).or_default() += r.signups;
    }
    // The channel's media cost over the question's days (its share of the
    // campaign's time, as in the reach report) per sign-up of the question.
    let share = media::share(&state.campaign, f.from, f.to, f.phase.as_deref());
    let cost = |channel: &str| -> Option<f64> {
        media::cost_per(
            media::cost_in(
                media::channel_bought(&state.campaign, channel).media_cost_eur,
                share,
            ),
            signups_by_channel.get(channel).copied().unwrap_or(0),
        )
    };
    let out: Vec<ChannelPhase> = rows
        .into_values()
        .map(|mut r| {
            r.conversion_rate = if r.visitors == 0 {
                0.0
            } else {
                r.signups as f64 / r.visitors as f64
            };
            r.cost_per_signup_eur = cost(&r.channel);
            r
        })
        .collect();
    if f.format == Format::Csv {
        return Ok(csv_of(
            &Export::new(&state.campaign, &f, "channels"),
            &[
                "channel",
                "phase",
                "touches",
                "visitors",
                "visits",
                "signups",
                "conversion_rate",
                "cost_per_signup_eur",
            ],
            &out,
        ));
    }
    Ok(json(&Channels { rows: out }))
}
