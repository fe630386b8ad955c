//! The collector's endpoints: `POST /v1/events`, `POST /v1/import`,
//! `GET /r/{code}`, `GET /p.gif`, `GET /t.js`.
//!
//! Status codes of the event endpoints: 200 every event accepted; 207 some
//! accepted, some rejected (the accepted ones are in Kafka, the body lists
//! the rejected with index and reason); 400 none accepted; 413/415/400 for a
//! body that cannot be read as events; 429 rate limited; 503 Kafka did not
//! confirm (resend the whole request with the same event ids).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use ensemble_core::event::{validate, EventMessage, EventType, Rejection, TinderAction};
use ensemble_core::Campaigns;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::body::{self, BodyLimits};
use crate::client::ClientResolver;
use crate::error::IngestError;
use crate::guard::RepeatScans;
use crate::metrics::Metrics;
use crate::normalise::{Context, Mode, Normalised, Normaliser};
use crate::producer::EventProducer;
use crate::ratelimit::{ClientKey, RateLimiter};
use crate::visitor::{VisitorIds, COOKIE, COOKIE_MAX_AGE_S};

/// Everything a handler needs.
#[derive(Debug)]
pub struct AppState {
    pub campaigns: Campaigns,
    /// What every served campaign declares: the free text stored as sent.
    pub declared: ensemble_model::declared::Declared,
    pub normaliser: Normaliser,
    pub producer: EventProducer,
    pub metrics: Metrics,
    pub limiter: RateLimiter,
    /// Failed authentications per client (wrong import token).
    pub auth_failures: RateLimiter,
    /// Scans per client and placement within the repeat window.
    pub repeats: RepeatScans,
    pub limits: BodyLimits,
    pub import_token: Option<String>,
    pub clients: ClientResolver,
    pub retry_after_s: u64,
    pub redirect_wait: Duration,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
}

pub type Shared = Arc<AppState>;

/// One rejected event of a request.
#[derive(Debug, Serialize)]
pub struct IndexedRejection {
    pub index: usize,
    #[serde(flatten)]
    pub rejection: Rejection,
}

/// The answer of the event endpoints.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub accepted: usize,
    /// Ids of the accepted events, in request order.
    pub event_ids: Vec<uuid::Uuid>,
    pub rejected: Vec<IndexedRejection>,
    /// Set when the request carried a fresh visit token: the visitor (and
    /// placement) the landing page continues as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visitor_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
}

fn client_ip(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    state.clients.client(peer, headers)
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.chars()
                .take(ensemble_core::event::MAX_USER_AGENT_LEN)
                .collect()
        })
}

/// Counts visit tokens by what became of them.
fn count_token(state: &AppState, outcome: Result<(), crate::visitor::TokenError>) {
    let result = match outcome {
        Ok(()) => "honoured",
        Err(e) => e.as_str(),
    };
    state
        .metrics
        .visit_tokens
        .with_label_values(&[result])
        .inc();
}

/// Counts the values where personal data was replaced, by field.
fn count_redacted(state: &AppState, fields: &[ensemble_model::redact::Field]) {
    for f in fields {
        state
            .metrics
            .values_redacted
            .with_label_values(&[f.as_str()])
            .inc();
    }
}

/// One event of a request, as every event endpoint takes it: validated,
/// normalised, kept to the free text the campaigns declare
/// (`ensemble_model::declared`: an undeclared custom event or property is
/// refused, undeclared `utm_*` values and URL paths replaced), flagged when
/// it repeats a scan; what was redacted, undeclared, tokens and refusals
/// counted.
fn prepare(state: &AppState, v: &Value, ctx: &Context) -> Result<Normalised, Rejection> {
    let prepared = validate(v)
        .and_then(|e| state.normaliser.normalise(e, ctx))
        .and_then(|mut n| {
            for field in state.declared.apply(&mut n.message)? {
                state
                    .metrics
                    .values_undeclared
                    .with_label_values(&[field])
                    .inc();
            }
            Ok(n)
        });
    match prepared {
        Ok(mut n) => {
            count_redacted(state, &n.redacted);
            if let Some(t) = n.token {
                count_token(state, t);
            }
            flag_repeat(state, ctx.client_ip, &mut n.message);
            Ok(n)
        }
        Err(rejection) => {
            state
                .metrics
                .events_rejected
                .with_label_values(&[rejection.reason.as_str()])
                .inc();
            Err(rejection)
        }
    }
}

/// Flags `m` as a repeated scan when the client scanned (or clicked the
/// card of) the same placement within the window.
fn flag_repeat(state: &AppState, client: IpAddr, m: &mut EventMessage) {
    let action = m.action.map_or("", TinderAction::as_str);
    let scan = ensemble_model::rules::is_scan(m.event_type.as_str(), action);
    let Some(placement) = m.placement.as_deref().filter(|_| scan && !m.imported) else {
        return;
    };
    if state
        .repeats
        .is_repeat(ClientKey::of(client), placement, Instant::now())
    {
        m.repeat = true;
        state.metrics.repeat_scans.inc();
    }
}

fn reject_request(state: &AppState, e: IngestError) -> Response {
    state
        .metrics
        .events_rejected
        .with_label_values(&[e.code()])
        .inc();
    e.into_response()
}

/// Produces `messages` and waits for Kafka; records metrics. On failure, the
/// 503 carries the event ids for the client's resend.
async fn produce(state: &AppState, messages: &[EventMessage]) -> Result<(), IngestError> {
    let result = state.producer.send_all(messages).await;
    state
        .metrics
        .queue_depth
        .set(i64::from(state.producer.queue_depth()));
    match result {
        Ok(took) => {
            state.metrics.produce_duration.observe(took.as_secs_f64());
            for m in messages {
                state
                    .metrics
                    .events_accepted
                    .with_label_values(&[m.event_type.as_str()])
                    .inc();
            }
            Ok(())
        }
        Err(e) => {
            state
                .metrics
                .produce_failures
                .with_label_values(&[e.kind()])
                .inc();
            tracing::warn!(error = %e, events = messages.len(), "kafka did not confirm; answering 503");
            Err(IngestError::Unavailable {
                cause: e.to_string(),
                retry_after_s: state.retry_after_s,
                event_ids: messages.iter().map(|m| m.event_id).collect(),
            })
        }
    }
}

/// Validates and normalises each event, produces the good ones, answers.
async fn accept(state: &AppState, values: Vec<Value>, ctx: &Context) -> Response {
    let mut messages = Vec::with_capacity(values.len());
    let mut rejected = Vec::new();
    // The visitor (and placement) of an honoured visit token: the tracker adopts it.
    let mut visitor: Option<(String, Option<String>)> = None;
    for (index, v) in values.iter().enumerate() {
        match prepare(state, v, ctx) {
            Ok(n) => {
                if n.token.is_some_and(|t| t.is_ok()) {
                    visitor = Some((n.message.visitor_id.clone(), n.message.placement.clone()));
                }
                messages.push(n.message);
            }
            Err(rejection) => rejected.push(IndexedRejection { index, rejection }),
        }
    }
    if !messages.is_empty() {
        if let Err(e) = produce(state, &messages).await {
            return e.into_response();
        }
    }
    let status = match (messages.is_empty(), rejected.is_empty()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::MULTI_STATUS,
        (true, _) => StatusCode::BAD_REQUEST,
    };
    let (visitor_id, placement) = visitor.map_or((None, None), |(v, p)| (Some(v), p));
    let body = Accepted {
        accepted: messages.len(),
        event_ids: messages.iter().map(|m| m.event_id).collect(),
        rejected,
        visitor_id,
        placement,
    };
    (status, Json(body)).into_response()
}

async fn read_events(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<Value>, IngestError> {
    let raw = body::read_limited(body, &state.limits).await?;
    let bytes = body::decode(headers, raw, &state.limits)?;
    body::events(&bytes, &state.limits)
}

/// `POST /v1/events`
pub async fn post_events(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ip = client_ip(&state, peer, &headers);
    // A client with no token left is refused before its body is read; then
    // the request costs one token per event.
    if let Err(retry_after_s) = state.limiter.peek(ip, Instant::now()) {
        return reject_request(&state, IngestError::RateLimited { retry_after_s });
    }
    let values = match read_events(&state, &headers, body).await {
        Ok(v) => v,
        Err(e) => {
            // A body that cannot be read costs its sender like an event.
            state.limiter.spend(ip, 1, Instant::now());
            return reject_request(&state, e);
        }
    };
    if let Err(retry_after_s) = state.limiter.check(ip, values.len(), Instant::now()) {
        return reject_request(&state, IngestError::RateLimited { retry_after_s });
    }
    let ctx = state
        .normaliser
        .context(Utc::now(), ip, user_agent(&headers), Mode::RealTime);
    accept(&state, values, &ctx).await
}

/// `POST /v1/import` (Bearer token)
pub async fn post_import(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ip = client_ip(&state, peer, &headers);
    // A client that failed to authenticate too often waits, right or wrong
    // token: guessing costs time.
    if let Err(retry_after_s) = state.auth_failures.peek(ip, Instant::now()) {
        return reject_request(&state, IngestError::RateLimited { retry_after_s });
    }
    let Some(expected) = state.import_token.as_deref() else {
        state.auth_failures.spend(ip, 1, Instant::now());
        return reject_request(&state, IngestError::ImportDisabled);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !ensemble_model::privacy::same_secret(given.trim().as_bytes(), expected.as_bytes()) {
        state.auth_failures.spend(ip, 1, Instant::now());
        return reject_request(&state, IngestError::Unauthorized);
    }
    // An authenticated import is the campaign's own history: not limited
    // per client (Kafka's 503 is its back-pressure).
    let values = match read_events(&state, &headers, body).await {
        Ok(v) => v,
        Err(e) => return reject_request(&state, e),
    };
    let ctx = state.normaliser.context(Utc::now(), ip, None, Mode::Import);
    accept(&state, values, &ctx).await
}

/// A placement code as recorded: the characters a code may have, at most 64;
/// `unknown` when nothing is left. Never an error: it came from a poster.
fn recorded_code(code: &str) -> String {
    let kept: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    if kept.is_empty() {
        "unknown".into()
    } else {
        kept
    }
}

/// `GET /r/{code}`: records the scan (or card click) and answers 302 to the
/// placement's landing page with a visit token, whatever happens to the
/// record; 429 (with a link to the page) only for a client over its rate.
///
/// The token is signed for this browser's visitor id: the one in the
/// collector's own signed cookie, else a fresh one (the cookie is then
/// set). No query parameter chooses it. A scan of a placement the client
/// scanned within the window is recorded flagged `repeat`.
pub async fn redirect(
    State(state): State<Shared>,
    Path(code): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let now = Utc::now();
    let ip = client_ip(&state, peer, &headers);
    let found = state.campaigns.placement(now, &code);
    let placement = found.map(|(_, p)| p);
    let known = if placement.is_some() {
        "known"
    } else {
        "unknown"
    };
    let mut landing = placement.map_or_else(
        || {
            let current = state.campaigns.current(now);
            state.campaigns.get(current).default_landing_url.clone()
        },
        |p| p.landing_url.clone(),
    );
    if let Err(retry_after_s) = state.limiter.check(ip, 1, Instant::now()) {
        state
            .metrics
            .redirects
            .with_label_values(&[known, "rate_limited"])
            .inc();
        return over_rate(&landing, retry_after_s);
    }
    let cookie_vid = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| state.normaliser.open_cookie(c));
    let vid = cookie_vid.clone().unwrap_or_else(VisitorIds::fresh);
    // An unknown code is recorded as typed, minus personal data (a phone
    // number or an address typed after /r/), before its odd characters go.
    let code = placement.map_or_else(
        || match ensemble_model::redact::redact(&code, ensemble_model::redact::Kinds::ALL) {
            Some(r) => {
                count_redacted(&state, &[ensemble_model::redact::Field::Placement]);
                recorded_code(&r)
            }
            None => recorded_code(&code),
        },
        |p| p.code.clone(),
    );
    let card_click = found
        .and_then(|(c, p)| c.channel(&p.channel))
        .is_some_and(|c| c.redirect_is_card_click);
    // Not the bare visitor id: a signed token the collector honours only for
    // minutes, which the tracker removes from the address bar.
    landing
        .query_pairs_mut()
        .append_pair("ens", &state.normaliser.visit_token(&vid, &code, now));

    let ua = user_agent(&headers);
    let referrer_host = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| url::Url::parse(r).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    let kind = if card_click {
        EventType::TinderCard
    } else {
        EventType::QrScan
    };
    let mut message = EventMessage::new(kind, vid.clone(), now);
    message.placement = Some(code);
    message.referrer_host = referrer_host;
    message.bot = state.normaliser.is_bot(ua.as_deref());
    message.user_agent = ua;
    message.action = card_click.then_some(TinderAction::Click);
    flag_repeat(&state, ip, &mut message);
    // A code typed by hand (`/r/0612345678`), a User-Agent: no personal data.
    count_redacted(
        &state,
        &ensemble_model::redact::redact_message(&mut message),
    );
    let recorded = match tokio::time::timeout(
        state.redirect_wait,
        produce(&state, std::slice::from_ref(&message)),
    )
    .await
    {
        Ok(Ok(())) => "yes",
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(
                placement = known,
                "redirect served without a confirmed scan record"
            );
            "no"
        }
    };
    state
        .metrics
        .redirects
        .with_label_values(&[known, recorded])
        .inc();
    let mut resp = (StatusCode::FOUND, [(header::CACHE_CONTROL, "no-store")]).into_response();
    if let Ok(v) = HeaderValue::from_str(landing.as_str()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if cookie_vid.is_none() {
        // Secure when a trusted proxy says the scan came over HTTPS (the
        // collector itself speaks plain HTTP behind it).
        let secure = headers
            .get("x-forwarded-proto")
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
            && state.clients.trust_forwarded_for
            && state.clients.is_trusted(peer.ip());
        let cookie = format!(
            "{COOKIE}={}; Path=/r/; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Lax{}",
            state.normaliser.cookie(&vid),
            if secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The redirect's answer to a client over its rate: 429, and a page with the
/// link a person can still follow (without a visit token: nothing recorded).
fn over_rate(landing: &url::Url, retry_after_s: u64) -> Response {
    let href = landing
        .as_str()
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Too many requests</title>\
         <p>Too many requests from your network: this visit was not counted. \
         <a href=\"{href}\">Continue to the page</a>.</p>"
    );
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    r
}

/// The smallest transparent GIF.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Query names of the pixel and the event fields they fill.
const PIXEL_FIELDS: &[(&str, &str)] = &[
    ("type", "type"),
    ("event_id", "event_id"),
    ("vid", "visitor_id"),
    ("ens", "visit_token"),
    ("placement", "placement"),
    ("plc", "placement"),
    ("url", "url"),
    ("ref", "referrer"),
    ("action", "action"),
    ("utm_source", "utm_source"),
    ("utm_medium", "utm_medium"),
    ("utm_campaign", "utm_campaign"),
    ("utm_content", "utm_content"),
    ("utm_term", "utm_term"),
];

/// `GET /p.gif?type=page_view&vid=…&url=…`: one event from the query, server
/// time. Always answers the GIF; the status tells what happened.
pub async fn pixel(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let gif = |status: StatusCode, reason: &str| {
        let mut r = (
            status,
            [
                (header::CONTENT_TYPE, "image/gif"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            PIXEL_GIF,
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(reason) {
            r.headers_mut().insert("x-ensemble-reason", v);
        }
        r
    };
    let ip = client_ip(&state, peer, &headers);
    if let Err(retry_after_s) = state.limiter.check(ip, 1, Instant::now()) {
        state
            .metrics
            .events_rejected
            .with_label_values(&["rate_limited"])
            .inc();
        let mut r = gif(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        return r;
    }
    let mut obj = Map::new();
    obj.insert("type".into(), Value::String("page_view".into()));
    for (param, field) in PIXEL_FIELDS {
        if let Some(v) = query.get(*param) {
            obj.insert((*field).into(), Value::String(v.clone()));
        }
    }
    let ctx = state
        .normaliser
        .context(Utc::now(), ip, user_agent(&headers), Mode::ServerTime);
    let message = match prepare(&state, &Value::Object(obj), &ctx) {
        Ok(n) => n.message,
        Err(r) => return gif(StatusCode::BAD_REQUEST, &r.to_string()),
    };
    match produce(&state, std::slice::from_ref(&message)).await {
        Ok(()) => gif(StatusCode::OK, "accepted"),
        Err(e) => {
            let mut r = gif(e.status(), e.code());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(state.retry_after_s));
            r
        }
    }
}

/// The OpenAPI 3.1 description of these endpoints (checked against the
/// routes, validated and fuzzed by the tests).
pub const OPENAPI: &str = include_str!("../assets/openapi.json");

/// `GET /openapi.json`
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The landing-page tracker.
pub const TRACKER_JS: &str = include_str!("../assets/t.js");

/// `GET /t.js`
pub async fn tracker() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        TRACKER_JS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_codes_are_safe_and_never_empty() {
        assert_eq!(recorded_code("M-CHATELET"), "M-CHATELET");
        assert_eq!(recorded_code("<script>"), "script");
        assert_eq!(recorded_code("💥"), "unknown");
        assert_eq!(recorded_code(&"a".repeat(100)).len(), 64);
    }
}
