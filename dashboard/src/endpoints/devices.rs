//! `GET /api/devices`: the device breakdown — per channel (and `*`, every
//! channel), visitors by device class × OS family, the share of the
//! channel's visitors they are, and how many of them signed up
//! (`ensemble_model::devices`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use ensemble_model::devices::{self, Counts, Line};
use ensemble_model::figures::{Figure, ALL, REACHED, SIGNED};
use serde::Serialize;

use super::{json, Params};
use crate::answers::{self, count, of};
use crate::csv::{csv, Export};
use crate::error::ApiError;
use crate::filters::{Filters, Format};
use crate::state::Shared;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Devices {
    pub lines: Vec<Line>,
}

pub async fn devices(State(state): State<Shared>, q: Params) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let a = answers::ask(&state, &f, &[Figure::Devices, Figure::Visitors], false).await?;
    let wanted = |c: &str| f.channel.as_deref().is_none_or(|w| w == c);
    let mut counts: BTreeMap<(String, String, String), Counts> = BTreeMap::new();
    for (d, v) in of(&a.whole, Figure::Devices) {
        if !wanted(&d.channel) {
            continue;
        }
        let c = counts
            .entry((
                d.channel.clone(),
                d.device_class.clone(),
                d.os_family.clone(),
            ))
            .or_default();
        match d.step.as_str() {
            REACHED => c.visitors += count(v),
            SIGNED => c.signed += count(v),
            _ => {}
        }
    }
    let visitors: BTreeMap<String, u64> = of(&a.whole, Figure::Visitors)
        .map(|(d, v)| (d.channel.clone(), count(v)))
        .collect();
    let mut order: Vec<&str> = vec![ALL];
    order.extend(state.campaign.channels.iter().map(|c| c.id.as_str()));
    let lines = devices::lines(&counts, &visitors, &order);
    if f.format == Format::Csv {
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|l| {
                vec![
                    l.channel.clone(),
                    l.device_class.clone(),
                    l.os_family.clone(),
                    l.visitors.to_string(),
                    l.signed.to_string(),
                    format!("{:.6}", l.signup_rate),
                    l.share.map(|s| format!("{s:.6}")).unwrap_or_default(),
                ]
            })
            .collect();
        return Ok(csv(
            &Export::new(&state.campaign, &f, "devices"),
            &[
                "channel",
                "device_class",
                "os_family",
                "visitors",
                "signed",
                "signup_rate",
                "share",
            ],
            &rows,
        ));
    }
    Ok(json(&Devices { lines }))
}
