//! `GET /api/reach`: visitors reached per channel (any event of it,
//! exposures included), how many events each had (1, 2, 3, 4, 5+), and the
//! overlap matrix: visitors reached by both channels.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use ensemble_model::figures::Figure;
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, count, of};
use crate::csv::{csv, Export};
use crate::error::ApiError;
use crate::filters::{Filters, Format};
use crate::state::Shared;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelReach {
    pub channel: String,
    pub visitors: u64,
    /// "1" … "4", "5+" → visitors.
    pub frequency: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Overlap {
    pub a: String,
    pub b: String,
    pub visitors: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reach {
    pub channels: Vec<ChannelReach>,
    pub overlap: Vec<Overlap>,
}

pub async fn reach(State(state): State<Shared>, q: Params) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let a = answers::ask(&state, &f, &[Figure::Frequency, Figure::Overlap], false).await?;
    let wanted = |channel: &str| f.channel.as_deref().is_none_or(|c| c == channel);
    let mut per_channel: BTreeMap<String, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    for (d, v) in of(&a.whole, Figure::Frequency) {
        if !wanted(&d.channel) || count(v) == 0 {
            continue;
        }
        let e = per_channel.entry(d.channel.clone()).or_default();
        e.0 += count(v);
        let bucket = if d.frequency >= 5 {
            "5+".to_owned()
        } else {
            d.frequency.to_string()
        };
        *e.1.entry(bucket).or_default() += count(v);
    }
    let overlap: Vec<Overlap> = of(&a.whole, Figure::Overlap)
        .filter(|(d, v)| wanted(&d.channel) && wanted(&d.other_channel) && count(v) > 0)
        .map(|(d, v)| Overlap {
            a: d.channel.clone(),
            b: d.other_channel.clone(),
            visitors: count(v),
        })
        .collect();
    if f.format == Format::Csv {
        let rows: Vec<Vec<String>> = overlap
            .iter()
            .map(|o| vec![o.a.clone(), o.b.clone(), o.visitors.to_string()])
            .collect();
        return Ok(csv(
            &Export::new(&state.campaign, &f, "reach"),
            &["channel_a", "channel_b", "visitors_reached_by_both"],
            &rows,
        ));
    }
    Ok(json(&Reach {
        channels: per_channel
            .into_iter()
            .map(|(channel, (visitors, frequency))| ChannelReach {
                channel,
                visitors,
                frequency,
            })
            .collect(),
        overlap,
    }))
}
