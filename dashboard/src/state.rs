//! The API's state and who is asking: access tokens (analysts see
//! everything, the agency aggregates), read from the `Authorization`
//! header only, and the admission of questions the stored figures do not
//! answer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ensemble_core::Campaign;

use crate::error::ApiError;
use crate::filters::Filters;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sees everything.
    Analyst,
    /// Aggregates only.
    Agency,
}

#[derive(Debug)]
pub struct ApiState {
    pub campaign: Campaign,
    /// The collector's public address: what QR codes open.
    pub collector_url: url::Url,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: std::time::Duration,
    pub client: clickhouse::Client,
    /// Cluster mode: the tables read are `Distributed` (no PREWHERE).
    pub cluster: bool,
    pub analyst_tokens: Vec<String>,
    pub agency_tokens: Vec<String>,
    /// The processor group's progress on the events topic (`/api/live`'s
    /// pending events), over one client for the life of the service.
    pub lag: Arc<ensemble_core::kafka::LagReader>,
    /// Slots for questions the pre-summed figures do not answer.
    pub gate: crate::admission::Gate,
    /// Whether the figures summed by range answer this campaign's default
    /// questions.
    pub summed: Summed,
    /// The last reconciliation of the figures against the raw events.
    pub reconciliation: crate::reconciliation::Latest,
}

/// How often the dashboard asks again whether `figures_ranges` is whole
/// for its campaign (a `rebuild-ranges` is picked up within this).
const SUMMED_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// The campaign's summed ranges (`figures::summed_ranges`) and whether
/// `figures_ranges` holds them whole (`ensemble_core::ranges`), checked
/// again at most every [`SUMMED_RECHECK`].
#[derive(Debug)]
pub struct Summed {
    ranges: Vec<ensemble_core::figures::Days>,
    /// Their text, as the table's state records it.
    text: String,
    /// `ensemble_core::ranges::kept`.
    kept: bool,
    checked: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

impl Summed {
    pub fn new(campaign: &Campaign, store: &ensemble_core::StoreConfig) -> Self {
        let (ranges, text) = ensemble_core::ranges::ranges_of(campaign);
        Self {
            kept: ensemble_core::ranges::kept(store, &ranges),
            ranges,
            text,
            checked: std::sync::Mutex::new(None),
        }
    }

    /// Whether every range of `days` is a summed range.
    pub fn covers(&self, days: &[ensemble_core::figures::Days]) -> bool {
        self.kept && days.iter().all(|d| self.ranges.contains(d))
    }

    /// Whether the summed table may be read now (false when ClickHouse
    /// cannot say: the unsummed figures give the same answers).
    pub async fn usable(&self, client: &clickhouse::Client) -> bool {
        if !self.kept {
            return false;
        }
        let cached = *self
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, ok)) = cached {
            if at.elapsed() < SUMMED_RECHECK {
                return ok;
            }
        }
        let ok = match ensemble_core::ranges::whole_for(client, &self.text).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::debug!(error = %e, "figures by range: state unreadable, reading the figures");
                false
            }
        };
        *self
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), ok));
        ok
    }
}

pub type Shared = Arc<ApiState>;

/// Who is asking: the role of the request's token and the token's index
/// among the configured ones (analysts first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    pub token: usize,
}

/// The caller of a request, from `Authorization: Bearer <token>` only: a
/// token in a URL ends up in browser histories, proxy logs and Referer
/// headers, so `?token=` is not read.
pub fn caller_of(state: &ApiState, req: &Request) -> Option<Caller> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)?;
    let analysts = state.analyst_tokens.iter().map(|t| (t, Role::Analyst));
    let agency = state.agency_tokens.iter().map(|t| (t, Role::Agency));
    analysts
        .chain(agency)
        .enumerate()
        .find(|(_, (t, _))| ensemble_core::privacy::same_secret(t.as_bytes(), token.as_bytes()))
        .map(|(i, (_, role))| Caller { role, token: i })
}

/// Refuses requests without a known token; passes the role on; lets in
/// questions that recount raw events only while a slot is free
/// (`crate::admission`).
pub async fn require_token(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    let Some(caller) = caller_of(&state, &req) else {
        return ApiError::Unauthorized.into_response();
    };
    req.extensions_mut().insert(caller.role);
    req.extensions_mut().insert(caller);
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    // A malformed query is the handler's to refuse (400 naming the parameter).
    let heavy = Filters::parse_with(&state.campaign, &q, &crate::filters::ENDPOINT_PARAMS)
        .ok()
        .filter(|f| !crate::answers::stored(&state.campaign, f));
    let _slot = match heavy {
        None => None,
        Some(f) if f.from_events && caller.role == Role::Agency => {
            return ApiError::AuditAnalystOnly.into_response()
        }
        Some(_) => match state.gate.admit(caller.token) {
            Ok(slot) => Some(slot),
            Err(refusal) => {
                return ApiError::Busy {
                    refusal,
                    retry_after_s: 2,
                }
                .into_response()
            }
        },
    };
    next.run(req).await
}
