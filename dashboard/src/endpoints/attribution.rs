//! `GET /api/attribution`: credited sign-ups per channel, per channel ×
//! phase of the touch and per phase of the conversion, under the five
//! models side by side, each channel's credit with its 95 % interval
//! (`ensemble_model::intervals`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use ensemble_model::attribution::{Credits, Model, Share};
use ensemble_model::figures::Figure;
use ensemble_model::intervals::{self, Interval};
use ensemble_model::paths;
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, count, of};
use crate::csv::{csv, Export};
use crate::error::ApiError;
use crate::filters::{FilterError, Filters, Format};
use crate::state::{ApiState, Shared};

/// The data-driven models' names (`ensemble_model::paths`), beside
/// `Model::ALL`'s rule-based ones.
pub const MARKOV: &str = "markov";
pub const SHAPLEY: &str = "shapley";

/// model → channel → the credit's 95 % interval.
pub type Intervals = BTreeMap<&'static str, BTreeMap<String, Interval>>;

/// Credits of the filters' conversions (their channel filter narrows what
/// is shown, not how credit is shared), their intervals, and the people
/// the intervals count (the path table's conversions and visitors without
/// sign-up).
pub async fn credits(state: &ApiState, f: &Filters) -> Result<(Credits, Intervals, u64), ApiError> {
    let (a, table) = tokio::try_join!(
        answers::ask(state, f, &[Figure::Conversions, Figure::Credits], false),
        super::paths::table(state, f)
    )?;
    let mut out = Credits {
        conversions: of(&a.whole, Figure::Conversions)
            .map(|(_, v)| count(v))
            .sum(),
        ..Credits::default()
    };
    for (d, v) in of(&a.whole, Figure::Credits) {
        let Some(model) = Model::ALL.iter().find(|m| m.as_str() == d.model) else {
            return Err(ApiError::Internal(format!("unknown model `{}`", d.model)));
        };
        out.add_share(&Share {
            model: model.as_str(),
            channel: d.channel.clone(),
            touch_phase: d.phase.clone(),
            conversion_phase: d.conversion_phase.clone(),
            credit: v.credit,
        });
    }
    // The data-driven models, over every path of the same question (they
    // credit channels, not phases).
    // The rule-based models' intervals (Wilson), before the data-driven
    // models' credits join `by_channel`.
    let people = intervals::people(&table);
    let mut bounds: Intervals = BTreeMap::new();
    for (model, m) in &out.by_channel {
        bounds.insert(
            model,
            m.iter()
                .map(|(ch, v)| (ch.clone(), intervals::wilson(*v, people)))
                .collect(),
        );
    }
    let chain = paths::Chain::of(&table);
    out.by_channel.insert(MARKOV, chain.markov());
    out.by_channel.insert(SHAPLEY, paths::shapley(&table));
    let drawn = intervals::bootstrap(&chain, intervals::REPLICATES, intervals::SEED);
    bounds.insert(MARKOV, drawn.markov);
    bounds.insert(SHAPLEY, drawn.shapley);
    if let Some(want) = &f.channel {
        for m in out.by_channel.values_mut() {
            m.retain(|ch, _| ch == want);
        }
        for m in bounds.values_mut() {
            m.retain(|ch, _| ch == want);
        }
        for m in out.by_channel_phase.values_mut() {
            m.retain(|(ch, _), _| ch == want);
        }
        for m in out.by_conversion_phase.values_mut() {
            m.retain(|(_, ch), _| ch == want);
        }
    }
    Ok((out, bounds, people))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelPhaseCredit {
    pub channel: String,
    pub phase: String,
    pub credit: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseChannelCredit {
    pub phase: String,
    pub channel: String,
    pub credit: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attribution {
    pub conversions: u64,
    pub lookback_days: i64,
    pub models: Vec<&'static str>,
    pub by_channel: BTreeMap<&'static str, BTreeMap<String, f64>>,
    /// model → channel → 95 % interval of `by_channel`'s credit.
    pub intervals: Intervals,
    /// Of each model, the pairs of channels whose intervals overlap (the
    /// data cannot tell their credits apart), each pair once, in order.
    pub overlapping: BTreeMap<&'static str, Vec<(String, String)>>,
    pub by_channel_phase: BTreeMap<&'static str, Vec<ChannelPhaseCredit>>,
    pub by_conversion_phase: BTreeMap<&'static str, Vec<PhaseChannelCredit>>,
}

/// Every model's name: the rule-based ones, then the data-driven ones.
fn model_names() -> impl Iterator<Item = &'static str> {
    Model::ALL
        .iter()
        .map(|m| m.as_str())
        .chain([MARKOV, SHAPLEY])
}

/// `model=`: one model only (the page's switch), or every model.
fn only_model(q: &Params) -> Result<Option<&'static str>, FilterError> {
    let Some(raw) = q.get("model") else {
        return Ok(None);
    };
    model_names()
        .find(|m| m == raw)
        .map(Some)
        .ok_or_else(|| FilterError {
            parameter: "model",
            message: format!(
                "unknown model `{raw}`; the models are {}",
                model_names().collect::<Vec<_>>().join(", ")
            ),
        })
}

pub async fn attribution(State(state): State<Shared>, q: Params) -> Result<Response, ApiError> {
    let f = Filters::parse_with(&state.campaign, &q, &["model"])?;
    let only = only_model(&q)?;
    if f.placement.is_some() {
        return Err(FilterError {
            parameter: "placement",
            message: "attribution does not take a placement filter yet: filter by channel".into(),
        }
        .into());
    }
    let (mut c, mut bounds, people) = credits(&state, &f).await?;
    if let Some(model) = only {
        bounds.retain(|m, _| *m == model);
        c.by_channel.retain(|m, _| *m == model);
        c.by_channel_phase.retain(|m, _| *m == model);
        c.by_conversion_phase.retain(|m, _| *m == model);
    }
    if f.format == Format::Csv {
        let mut rows = Vec::new();
        for (model, m) in &c.by_channel_phase {
            for ((channel, phase), credit) in m {
                let i = intervals::wilson(*credit, people);
                rows.push(vec![
                    (*model).to_owned(),
                    channel.clone(),
                    phase.clone(),
                    format!("{credit:.12}"),
                    format!("{:.12}", i.low),
                    format!("{:.12}", i.high),
                ]);
            }
        }
        // The data-driven models credit channels over every phase.
        for model in [MARKOV, SHAPLEY] {
            for (channel, credit) in c.by_channel.get(model).into_iter().flatten() {
                let i = bounds.get(model).and_then(|b| b.get(channel));
                let bound = |v: Option<f64>| v.map(|v| format!("{v:.12}")).unwrap_or_default();
                rows.push(vec![
                    model.to_owned(),
                    channel.clone(),
                    String::new(),
                    format!("{credit:.12}"),
                    bound(i.map(|i| i.low)),
                    bound(i.map(|i| i.high)),
                ]);
            }
        }
        return Ok(csv(
            &Export::new(&state.campaign, &f, "attribution"),
            &[
                "model",
                "channel",
                "touch_phase",
                "credited_signups",
                "low_95",
                "high_95",
            ],
            &rows,
        ));
    }
    let overlapping = bounds
        .iter()
        .map(|(m, by)| {
            let list: Vec<(&String, &Interval)> = by.iter().collect();
            let mut pairs = Vec::new();
            for (k, (a, ia)) in list.iter().enumerate() {
                for (b, ib) in &list[k + 1..] {
                    if ia.overlaps(ib) {
                        pairs.push(((*a).clone(), (*b).clone()));
                    }
                }
            }
            (*m, pairs)
        })
        .collect();
    Ok(json(&Attribution {
        conversions: c.conversions,
        lookback_days: state.campaign.attribution.lookback.num_days(),
        models: model_names()
            .filter(|m| only.is_none_or(|o| o == *m))
            .collect(),
        by_channel: c.by_channel.clone(),
        intervals: bounds,
        overlapping,
        by_channel_phase: c
            .by_channel_phase
            .iter()
            .map(|(m, v)| {
                (
                    *m,
                    v.iter()
                        .map(|((channel, phase), credit)| ChannelPhaseCredit {
                            channel: channel.clone(),
                            phase: phase.clone(),
                            credit: *credit,
                        })
                        .collect(),
                )
            })
            .collect(),
        by_conversion_phase: c
            .by_conversion_phase
            .iter()
            .map(|(m, v)| {
                (
                    *m,
                    v.iter()
                        .map(|((phase, channel), credit)| PhaseChannelCredit {
                            phase: phase.clone(),
                            channel: channel.clone(),
                            credit: *credit,
                        })
                        .collect(),
                )
            })
            .collect(),
    }))
}
