//! `GET /api/attribution`: credited sign-ups per channel, per channel ×
//! phase of the touch and per phase of the conversion, under the five
//! models side by side.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use ensemble_model::attribution::{Credits, Model, Share};
use ensemble_model::figures::Figure;
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

/// Credits of the filters' conversions (their channel filter narrows what
/// is shown, not how credit is shared).
pub async fn credits(state: &ApiState, f: &Filters) -> Result<Credits, ApiError> {
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
    out.by_channel.insert(MARKOV, paths::markov(&table));
    out.by_channel.insert(SHAPLEY, paths::shapley(&table));
    if let Some(want) = &f.channel {
        for m in out.by_channel.values_mut() {
            m.retain(|ch, _| ch == want);
        }
        for m in out.by_channel_phase.values_mut() {
            m.retain(|(ch, _), _| ch == want);
        }
        for m in out.by_conversion_phase.values_mut() {
            m.retain(|(_, ch), _| ch == want);
        }
    }
    Ok(out)
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
    let mut c = credits(&state, &f).await?;
    if let Some(model) = only {
        c.by_channel.retain(|m, _| *m == model);
        c.by_channel_phase.retain(|m, _| *m == model);
        c.by_conversion_phase.retain(|m, _| *m == model);
    }
    if f.format == Format::Csv {
        let mut rows = Vec::new();
        for (model, m) in &c.by_channel_phase {
            for ((channel, phase), credit) in m {
                rows.push(vec![
                    (*model).to_owned(),
                    channel.clone(),
                    phase.clone(),
                    format!("{credit:.12}"),
                ]);
            }
        }
        // The data-driven models credit channels over every phase.
        for model in [MARKOV, SHAPLEY] {
            for (channel, credit) in c.by_channel.get(model).into_iter().flatten() {
                rows.push(vec![
                    model.to_owned(),
                    channel.clone(),
                    String::new(),
                    format!("{credit:.12}"),
                ]);
            }
        }
        return Ok(csv(
            &Export::new(&state.campaign, &f, "attribution"),
            &["model", "channel", "touch_phase", "credited_signups"],
            &rows,
        ));
    }
    Ok(json(&Attribution {
        conversions: c.conversions,
        lookback_days: state.campaign.attribution.lookback.num_days(),
        models: model_names()
            .filter(|m| only.is_none_or(|o| o == *m))
            .collect(),
        by_channel: c.by_channel.clone(),
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
