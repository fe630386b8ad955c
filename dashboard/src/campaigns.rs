//! Several campaigns side by side (docs/operations.md "Several campaigns"): each
//! campaign's figures live in its own database and are answered by its own
//! copy of the API; `campaign=<id>` on any request picks one (without it,
//! the campaign running now, else the last one that started). Also the
//! list of campaigns (`/api/campaigns`) and the year-over-year view
//! aligned by phase (`/api/years`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use ensemble_core::Campaigns;
use serde::Serialize;
use tower::ServiceExt;

use crate::csv::{csv, Export};
use crate::endpoints::overview::{period, Totals};
use crate::endpoints::{json, Params};
use crate::error::ApiError;
use crate::filters::{bad, Filters, Format};
use crate::state::Shared;

/// The campaigns the dashboard serves and the API state of each (same order).
#[derive(Debug, Clone)]
pub struct Served {
    pub campaigns: Campaigns,
    pub states: Vec<Shared>,
}

impl Served {
    /// The campaign a request without `campaign=` is about.
    pub fn current(&self) -> usize {
        self.campaigns.current(Utc::now())
    }
}

/// Each campaign's API router, and the campaigns to pick from.
#[derive(Debug)]
pub struct Dispatch {
    pub campaigns: Campaigns,
    pub routers: Vec<Router>,
    /// Whose tokens open the API (every campaign is served with the same).
    pub tokens: Shared,
}

/// The campaign a query asks for (`campaign=`, at most once) and the
/// query without it; `None` when it names none.
pub fn pick(campaigns: &Campaigns, query: &str) -> Result<(Option<usize>, String), ApiError> {
    let mut chosen = None;
    let mut rest = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k != "campaign" {
            rest.append_pair(&k, &v);
            continue;
        }
        if chosen.is_some() {
            return Err(bad("campaign", "give `campaign` once").into());
        }
        let Some(i) = campaigns.index_of(&v) else {
            let known: Vec<&str> = campaigns.iter().map(|c| c.id.as_str()).collect();
            return Err(bad(
                "campaign",
                format!(
                    "unknown campaign `{v}`; this dashboard serves: {}",
                    known.join(", ")
                ),
            )
            .into());
        };
        chosen = Some(i);
    }
    Ok((chosen, rest.finish()))
}

/// Hands a request to its campaign's API, without the `campaign` parameter.
pub async fn dispatch(State(d): State<Arc<Dispatch>>, mut req: Request) -> Response {
    // Without a known token, `campaign=` is not read: the current
    // campaign's API answers 401 (and counts it) before naming anything.
    if crate::access::caller_of(&d.tokens, &req).is_none() {
        let i = d.campaigns.current(Utc::now());
        return match d.routers[i].clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
    }
    let (chosen, rest) = match pick(&d.campaigns, req.uri().query().unwrap_or("")) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let i = chosen.unwrap_or_else(|| d.campaigns.current(Utc::now()));
    let path = req.uri().path().to_owned();
    let uri = if rest.is_empty() {
        path
    } else {
        format!("{path}?{rest}")
    };
    match uri.parse::<Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => {
            return ApiError::from(bad("query", "the query string is not valid")).into_response()
        }
    }
    match d.routers[i].clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

#[derive(Debug, Serialize)]
pub struct PhaseInfo {
    pub id: String,
    pub label: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct CampaignInfo {
    pub id: String,
    pub name: String,
    /// The one answered when a request names none.
    pub current: bool,
    pub phases: Vec<PhaseInfo>,
}

/// `GET /api/campaigns`: the campaigns served, by calendar start.
pub async fn list(State(served): State<Arc<Served>>) -> Response {
    let current = served.current();
    let out: Vec<CampaignInfo> = served
        .campaigns
        .by_start()
        .into_iter()
        .map(|i| {
            let c = served.campaigns.get(i);
            CampaignInfo {
                id: c.id.clone(),
                name: c.name.clone(),
                current: i == current,
                phases: c
                    .phases
                    .iter()
                    .map(|p| PhaseInfo {
                        id: p.id.clone(),
                        label: p.label.clone(),
                        starts_at: p.starts_at,
                        ends_at: p.ends_at,
                    })
                    .collect(),
            }
        })
        .collect();
    json(&out)
}

/// One campaign's phase in the year-over-year view.
#[derive(Debug, Serialize, PartialEq)]
pub struct YearPhase {
    pub campaign: String,
    pub phase: String,
    pub label: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub totals: Totals,
}

/// The n-th phase of every campaign that has one.
#[derive(Debug, Serialize, PartialEq)]
pub struct AlignedPhase {
    /// 1 for every campaign's first phase, …
    pub index: usize,
    /// By calendar start (last year before this year).
    pub by_campaign: Vec<YearPhase>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Years {
    /// The campaigns' ids, by calendar start.
    pub campaigns: Vec<String>,
    pub phases: Vec<AlignedPhase>,
}

/// What `/api/years` reads: the filters that mean the same in every
/// campaign.
const YEARS_PARAMS: [&str; 5] = ["channel", "bots", "format", "sep", "lang"];

/// `GET /api/years`: the campaigns year over year, aligned by phase
/// (phase 1 of 2026 beside phase 1 of 2025): each phase's events, visits,
/// visitors, sign-ups and conversion rate, from each campaign's own
/// figures. `channel`, `bots` and the CSV settings apply to every campaign.
pub async fn years(State(served): State<Arc<Served>>, q: Params) -> Result<Response, ApiError> {
    if let Some(k) = q
        .keys()
        .filter(|k| !YEARS_PARAMS.contains(&k.as_str()))
        .min()
    {
        return Err(bad(
            "query",
            format!(
                "unknown parameter `{k}` for this endpoint; it takes: {}",
                YEARS_PARAMS.join(", ")
            ),
        )
        .into());
    }
    let order = served.campaigns.by_start();
    let mut asked = Vec::new();
    for &i in &order {
        let c = served.campaigns.get(i);
        let f = Filters::parse(c, &q).map_err(|mut e| {
            e.message = format!("campaign `{}`: {}", c.id, e.message);
            e
        })?;
        asked.push((i, f));
    }
    let mut answers = Vec::new();
    for (i, f) in &asked {
        answers.push(period(&served.states[*i], f).await?);
    }
    let mut aligned: BTreeMap<usize, Vec<YearPhase>> = BTreeMap::new();
    for ((i, _), p) in asked.iter().zip(&answers) {
        let c = served.campaigns.get(*i);
        for (n, ph) in c.phases.iter().enumerate() {
            aligned.entry(n + 1).or_default().push(YearPhase {
                campaign: c.id.clone(),
                phase: ph.id.clone(),
                label: ph.label.clone(),
                from: ph.starts_at,
                to: ph.ends_at,
                totals: p.by_phase.get(&ph.id).cloned().unwrap_or_default(),
            });
        }
    }
    let out = Years {
        campaigns: order
            .iter()
            .map(|&i| served.campaigns.get(i).id.clone())
            .collect(),
        phases: aligned
            .into_iter()
            .map(|(index, by_campaign)| AlignedPhase { index, by_campaign })
            .collect(),
    };
    let Some((latest, f)) = asked.last() else {
        return Ok(json(&out));
    };
    if f.format == Format::Csv {
        let mut rows = Vec::new();
        for a in &out.phases {
            for y in &a.by_campaign {
                let t = &y.totals;
                let mut metrics: Vec<(String, String)> = t
                    .events_by_type
                    .iter()
                    .map(|(k, n)| (k.clone(), n.to_string()))
                    .collect();
                metrics.push(("visits".into(), t.visits.to_string()));
                metrics.push(("visitors".into(), t.visitors.to_string()));
                metrics.push(("signups".into(), t.signups.to_string()));
                metrics.push(("conversion_rate".into(), t.conversion_rate.to_string()));
                for (m, v) in metrics {
                    rows.push(vec![
                        a.index.to_string(),
                        y.campaign.clone(),
                        y.phase.clone(),
                        m,
                        v,
                    ]);
                }
            }
        }
        let export = Export {
            dialect: f.csv,
            file_name: format!("ensemble-years-{}.csv", served.campaigns.get(*latest).id),
        };
        return Ok(csv(
            &export,
            &["phase_index", "campaign", "phase", "metric", "value"],
            &rows,
        ));
    }
    Ok(json(&out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    const SHIPPED: &str = include_str!("../../deploy/campaign.toml");

    fn map(q: &str) -> HashMap<String, String> {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    }

    fn two() -> Campaigns {
        let next = SHIPPED
            .replacen(
                "id = \"vivre-ensemble-2025\"",
                "id = \"vivre-ensemble-2026\"",
                1,
            )
            .replace("2025-0", "2026-0");
        Campaigns::new(vec![
            ensemble_core::Campaign::from_toml(SHIPPED).unwrap(),
            ensemble_core::Campaign::from_toml(&next).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn the_campaign_parameter_is_taken_out_and_checked() {
        let c = two();
        let (i, rest) = pick(&c, "phase=p1-lancement&campaign=vivre-ensemble-2026&bots=1").unwrap();
        assert_eq!(i, Some(1));
        assert_eq!(map(&rest), map("phase=p1-lancement&bots=1"));
        let (i, rest) = pick(&c, "limit=3").unwrap();
        assert_eq!((i, rest.as_str()), (None, "limit=3"));
        let e = pick(&c, "campaign=2024").unwrap_err().to_string();
        assert!(
            e.contains("unknown campaign `2024`") && e.contains("vivre-ensemble-2026"),
            "{e}"
        );
        let e = pick(
            &c,
            "campaign=vivre-ensemble-2025&campaign=vivre-ensemble-2026",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("once"), "{e}");
    }
}
