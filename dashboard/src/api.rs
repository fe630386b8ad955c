//! The JSON / CSV API: access tokens, filters, and the endpoints built so
//! far — `/api/overview` and `/api/attribution`. Every count is over
//! distinct event ids, so duplicate deliveries never change a number.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use clickhouse::Row;
use ensemble_core::event::TinderAction;
use ensemble_core::Campaign;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::admission::Refusal;
use crate::attribution::{self, Contact, Conversion, Credits};
use crate::figures::{self, count};
use crate::filters::{bind_all, CsvDialect, FilterError, Filters, Format};
use ensemble_core::facts::{self as fact, ALL};

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
    pub analyst_tokens: Vec<String>,
    pub agency_tokens: Vec<String>,
    /// The processor group's progress on the events topic (`/api/live`'s
    /// pending events), over one client for the life of the service.
    pub lag: ensemble_core::kafka::LagReader,
    /// Slots for questions the pre-summed figures do not answer.
    pub gate: crate::admission::Gate,
}

pub type Shared = Arc<ApiState>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("missing or unknown access token: send `Authorization: Bearer <token>` (a token in the URL is not read)")]
    Unauthorized,
    #[error("this token sees aggregates only")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error(
        "source=events (an audit of the figures against the raw events) is for analyst tokens"
    )]
    AuditAnalystOnly,
    #[error(
        "{} questions that recount raw events (a custom from/to, a device or placement filter) \
         run at once: wait for them and retry after {retry_after_s} s, or ask for the campaign's \
         whole range without device or placement filter (answered from the pre-summed figures at once)",
        match refusal { Refusal::TokenBusy => "this token's share of", Refusal::AllBusy => "the dashboard's share of" }
    )]
    Busy {
        refusal: Refusal,
        retry_after_s: u64,
    },
    /// The store's own message is logged with the request id, never sent.
    #[error("the analytics store did not answer; try again shortly (give the request id to your administrator if it persists)")]
    Store(#[from] clickhouse::error::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, parameter) = match &self {
            ApiError::Filter(f) => (
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                Some(f.parameter),
            ),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::AuditAnalystOnly => (StatusCode::FORBIDDEN, "forbidden", Some("source")),
            ApiError::Busy { retry_after_s, .. } => {
                let body =
                    json!({ "error": "too_many_heavy_requests", "message": self.to_string() });
                let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    axum::http::HeaderValue::from(*retry_after_s),
                );
                return r;
            }
            ApiError::Store(e) => {
                tracing::warn!(error = %e, "clickhouse query failed");
                if is_too_large(&e.to_string()) {
                    let body = json!({
                        "error": "query_too_large",
                        "message": "this question needs more memory or time than the dashboard allows one query; \
                                    narrow it with a shorter from/to, a phase or a channel, or ask for the campaign's \
                                    whole range without device or placement filter (answered from the pre-summed figures)",
                    });
                    return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
                }
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", None)
            }
        };
        let mut body = json!({ "error": code, "message": self.to_string() });
        if let Some(p) = parameter {
            body["parameter"] = json!(p);
        }
        (status, Json(body)).into_response()
    }
}

/// ClickHouse refused the query for its size, not for being down:
/// MEMORY_LIMIT_EXCEEDED (241), TIMEOUT_EXCEEDED (159), TOO_SLOW (160),
/// TOO_MANY_ROWS_OR_BYTES (396).
fn is_too_large(message: &str) -> bool {
    ["Code: 241,", "Code: 159,", "Code: 160,", "Code: 396,"]
        .iter()
        .any(|c| message.contains(c))
}

/// Constant-time token comparison.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

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
        .find(|(_, (t, _))| same(t, token))
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
    let heavy = Filters::parse(&state.campaign, &q)
        .ok()
        .filter(|f| !figures::covers(&state, f));
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

/// How one CSV download is written and named (from the request's filters).
#[derive(Debug, Clone)]
pub struct Export {
    pub dialect: CsvDialect,
    pub file_name: String,
}

impl Export {
    pub fn new(campaign: &Campaign, f: &Filters, endpoint: &str) -> Self {
        Self {
            dialect: f.csv,
            file_name: f.file_name(campaign, endpoint),
        }
    }
}

/// One field: quoted when it holds the separator, a quote or a line break
/// (RFC 4180); a decimal number written with a comma in the French dialect.
fn csv_field(s: &str, d: CsvDialect) -> String {
    let s = if d.decimal_comma && s.contains('.') && s.parse::<f64>().is_ok() {
        s.replace('.', ",")
    } else {
        s.to_owned()
    };
    if s.contains([d.sep, '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The CSV text: a UTF-8 byte-order mark (so Excel reads accents right),
/// the header, the rows, CRLF line ends.
pub fn csv_text(d: CsvDialect, header_row: &[&str], rows: &[Vec<String>]) -> String {
    let sep = d.sep.to_string();
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let mut l = cells.collect::<Vec<_>>().join(&sep);
        l.push_str("\r\n");
        l
    };
    let mut out = String::from("\u{feff}");
    out.push_str(&line(&mut header_row.iter().map(|h| csv_field(h, d))));
    for r in rows {
        out.push_str(&line(&mut r.iter().map(|c| csv_field(c, d))));
    }
    out
}

/// Rows as a CSV download, header first (see [`csv_text`]), named by
/// campaign, endpoint and filters.
pub fn csv(export: &Export, header_row: &[&str], rows: &[Vec<String>]) -> Response {
    let disposition = format!("attachment; filename=\"{}\"", export.file_name);
    let mut resp = (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        csv_text(export.dialect, header_row, rows),
    )
        .into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// CSV of serialisable rows: the listed fields of each, in order (null → empty).
pub fn csv_of<T: Serialize>(export: &Export, fields: &[&str], items: &[T]) -> Response {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            let v = serde_json::to_value(item).unwrap_or(Value::Null);
            fields
                .iter()
                .map(|k| match &v[*k] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    csv(export, fields, &rows)
}

// ---------------------------------------------------------------- overview

#[derive(Debug, Row, Deserialize)]
struct PhaseTypeRow {
    phase: String,
    event_type: String,
    events: u64,
}

#[derive(Debug, Row, Deserialize)]
struct PhaseTotalsRow {
    ph: String,
    visitors: u64,
    signups: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    /// Distinct events (touches and exposures) per type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Landing visits: page views.
    pub visits: u64,
    pub visitors: u64,
    /// Distinct contacts who signed up (a repeat sign-up counts once).
    pub signups: u64,
    /// signups / visitors.
    pub conversion_rate: f64,
}

impl Totals {
    fn rate(mut self) -> Self {
        self.visits = self.events_by_type.get("page_view").copied().unwrap_or(0);
        self.conversion_rate = if self.visitors == 0 {
            0.0
        } else {
            self.signups as f64 / self.visitors as f64
        };
        self
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub totals: Totals,
    pub by_phase: BTreeMap<String, Totals>,
}

async fn period(state: &ApiState, f: &Filters) -> Result<Period, ApiError> {
    let (cond, binds) = f.conditions(false);
    let by_type: Vec<PhaseTypeRow> = bind_all(
        state.client.query(&format!(
            "SELECT phase, event_type, uniqExact(event_id) AS events FROM events WHERE {cond} \
             GROUP BY phase, event_type ORDER BY phase, event_type"
        )),
        &binds,
    )
    .fetch_all()
    .await?;
    let totals_sql = |group: &str| {
        format!(
            // `ph`, not `phase`: 18.16 would read a `phase = ?` filter as the alias.
            "SELECT {group} AS ph, uniqExact(visitor_id) AS visitors, \
             uniqExactIf(contact_hash, event_type = 'signup') AS signups FROM events WHERE {cond} {}",
            if group == "phase" { "GROUP BY phase ORDER BY phase" } else { "" }
        )
    };
    let per_phase: Vec<PhaseTotalsRow> = bind_all(state.client.query(&totals_sql("phase")), &binds)
        .fetch_all()
        .await?;
    let all: Vec<PhaseTotalsRow> = bind_all(state.client.query(&totals_sql("''")), &binds)
        .fetch_all()
        .await?;
    let mut by_phase: BTreeMap<String, Totals> = BTreeMap::new();
    let mut totals = Totals::default();
    for r in &by_type {
        by_phase
            .entry(r.phase.clone())
            .or_default()
            .events_by_type
            .insert(r.event_type.clone(), r.events);
        *totals
            .events_by_type
            .entry(r.event_type.clone())
            .or_default() += r.events;
    }
    for r in per_phase {
        let t = by_phase.entry(r.ph).or_default();
        t.visitors = r.visitors;
        t.signups = r.signups;
    }
    if let Some(r) = all.first() {
        totals.visitors = r.visitors;
        totals.signups = r.signups;
    }
    Ok(Period {
        from: f.from,
        to: f.to,
        totals: totals.rate(),
        by_phase: by_phase.into_iter().map(|(k, v)| (k, v.rate())).collect(),
    })
}

/// [`period`] from the facts.
async fn period_from_facts(state: &ApiState, f: &Filters) -> Result<Period, ApiError> {
    let facts = figures::load(state, f, &[fact::EVENTS, fact::VISITORS, fact::SIGNUPS]).await?;
    let channel = f.channel.as_deref().unwrap_or(ALL);
    let mut by_phase: BTreeMap<String, Totals> = BTreeMap::new();
    let mut totals = Totals::default();
    for (k, v) in facts.iter().filter(|(k, _)| k.metric == fact::EVENTS) {
        if f.phase.as_ref().is_some_and(|p| *p != k.phase)
            || f.channel.as_ref().is_some_and(|c| *c != k.channel)
        {
            continue;
        }
        *by_phase
            .entry(k.phase.clone())
            .or_default()
            .events_by_type
            .entry(k.event_type.clone())
            .or_default() += count(v);
        *totals
            .events_by_type
            .entry(k.event_type.clone())
            .or_default() += count(v);
    }
    for (k, v) in facts
        .iter()
        .filter(|(k, _)| k.metric != fact::EVENTS && k.channel == channel)
    {
        let visitors = k.metric == fact::VISITORS;
        if k.scope == figures::scope(f) {
            if visitors {
                totals.visitors = count(v);
            } else {
                totals.signups = count(v);
            }
        }
        if k.scope != ALL && f.phase.as_ref().is_none_or(|p| *p == k.scope) {
            let t = by_phase.entry(k.scope.clone()).or_default();
            if visitors {
                t.visitors = count(v);
            } else {
                t.signups = count(v);
            }
        }
    }
    Ok(Period {
        from: f.from,
        to: f.to,
        totals: totals.rate(),
        by_phase: by_phase.into_iter().map(|(k, v)| (k, v.rate())).collect(),
    })
}

/// `GET /api/overview`: events by type, visitors, sign-ups and conversion
/// rate, overall and per phase, with the period of equal length just before.
pub async fn overview(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let current = if figures::covers(&state, &f) {
        period_from_facts(&state, &f).await?
    } else {
        period(&state, &f).await?
    };
    let len = f.to - f.from;
    let prev_filters = Filters {
        from: f.from - len,
        to: f.from,
        ..f.clone()
    };
    let previous = period(&state, &prev_filters).await?;
    if f.format == Format::Csv {
        let mut rows = Vec::new();
        for (label, p) in [("current", &current), ("previous", &previous)] {
            for (phase, t) in &p.by_phase {
                for (ty, n) in &t.events_by_type {
                    rows.push(vec![label.into(), phase.clone(), ty.clone(), n.to_string()]);
                }
                rows.push(vec![
                    label.into(),
                    phase.clone(),
                    "visitors".into(),
                    t.visitors.to_string(),
                ]);
                rows.push(vec![
                    label.into(),
                    phase.clone(),
                    "signups".into(),
                    t.signups.to_string(),
                ]);
            }
        }
        return Ok(csv(
            &Export::new(&state.campaign, &f, "overview"),
            &["period", "phase", "metric", "value"],
            &rows,
        ));
    }
    Ok(Json(json!({ "current": current, "previous": previous })).into_response())
}

// ------------------------------------------------------------- attribution

#[derive(Debug, Row, Deserialize)]
struct ConversionRow {
    visitor_id: String,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    ms: u64,
}

#[derive(Debug, Row, Deserialize)]
struct ContactRow {
    visitor_id: String,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    ms: u64,
    ch: String,
    act: String,
}

fn from_ms(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default()
}

/// First sign-up of each contact (ties by event id), with the columns the
/// filters test (`ts`, `phase`, `device_class`, `is_bot`) so the outer query
/// can keep the ones that fall in the filters. (Inner aliases differ from the
/// column names: 18.16 would read `is_bot` in the WHERE as the aggregate.)
const FIRST_SIGNUPS: &str = "SELECT contact_hash, visitor_id, event_id, ms, \
       s_ts AS ts, s_phase AS phase, s_device AS device_class, s_bot AS is_bot FROM ( \
     SELECT contact_hash, any(visitor_id) AS visitor_id, event_id, any(toUInt64(ts) * 1000 + ts_ms) AS ms, \
       any(ts) AS s_ts, any(phase) AS s_phase, any(device_class) AS s_device, any(is_bot) AS s_bot \
     FROM events WHERE event_type = 'signup' AND contact_hash != '' {bots} GROUP BY contact_hash, event_id \
   ) ORDER BY contact_hash, ms, event_id LIMIT 1 BY contact_hash";

/// Credits under the five models for the conversions in the filters.
pub async fn credits(state: &ApiState, f: &Filters) -> Result<Credits, ApiError> {
    let bots = if f.include_bots { "" } else { "AND is_bot = 0" };
    let first = FIRST_SIGNUPS.replace("{bots}", bots);
    let (cond, binds) = f.conditions(true);
    // The conversion itself must match the filters (time, phase, device,
    // bots): tested on the first sign-up's own columns (every delivery of
    // an event carries the same ones).
    let conversions_sql = format!("SELECT visitor_id, event_id, ms FROM ({first}) WHERE {cond}");
    let conversions: Vec<ConversionRow> = bind_all(state.client.query(&conversions_sql), &binds)
        .fetch_all()
        .await?;
    // Conversions by visitor, in visitor order: credit is added in the same
    // order on every run and every topology, so sums agree to the last bit.
    let mut by_visitor: BTreeMap<String, Vec<Conversion>> = BTreeMap::new();
    for c in &conversions {
        by_visitor
            .entry(c.visitor_id.clone())
            .or_default()
            .push(Conversion {
                ts: from_ms(c.ms),
                event_id: c.event_id,
            });
    }
    let lookback_start = f.from - state.campaign.attribution.lookback;
    // Only what can be part of a touch (touch channels, no exposure; the
    // same rules `attribution::touches` applies; aliases differ from the
    // column names the WHERE reads, for 18.16), streamed in visitor order:
    // memory holds one visitor's contacts at a time, not every contact of
    // every converting visitor (1.1 GB at 10 M events).
    let contacts_sql = format!(
        "SELECT visitor_id, event_id, any(toUInt64(ts) * 1000 + ts_ms) AS ms, any(channel) AS ch, \
         any(action) AS act FROM events \
         WHERE ts >= toDateTime(?) AND ts < toDateTime(?) {bots} \
         AND has(?, channel) AND action NOT IN ('impression', 'pass') \
         AND visitor_id IN (SELECT visitor_id FROM ({conversions_sql})) \
         GROUP BY visitor_id, event_id ORDER BY visitor_id"
    );
    let lookback = [
        crate::filters::Bind::U32(u32::try_from(lookback_start.timestamp().max(0)).unwrap_or(0)),
        crate::filters::Bind::U32(u32::try_from(f.to.timestamp().max(0)).unwrap_or(u32::MAX)),
    ];
    let q = bind_all(state.client.query(&contacts_sql), &lookback)
        .bind(touch_channels(&state.campaign));
    let mut cursor = bind_all(q, &binds).fetch::<ContactRow>()?;
    let gap = state.campaign.attribution.touch_gap;
    let mut out = Credits::default();
    let credit = |out: &mut Credits, conversions: &[Conversion], contacts: &[Contact]| {
        let touches = attribution::touches(&state.campaign, gap, contacts);
        for c in conversions {
            out.add(&state.campaign, c, &touches);
        }
    };
    let mut current: Option<String> = None;
    let mut contacts: Vec<Contact> = Vec::new();
    while let Some(r) = cursor.next().await? {
        if current.as_deref() != Some(r.visitor_id.as_str()) {
            if let Some(v) = current.take() {
                if let Some(list) = by_visitor.remove(&v) {
                    credit(&mut out, &list, &contacts);
                }
            }
            contacts.clear();
            current = Some(r.visitor_id.clone());
        }
        contacts.push(Contact {
            ts: from_ms(r.ms),
            event_id: r.event_id,
            channel: r.ch,
            action: TinderAction::parse(&r.act),
        });
    }
    if let Some(v) = current.take() {
        if let Some(list) = by_visitor.remove(&v) {
            credit(&mut out, &list, &contacts);
        }
    }
    // Conversions without any touch event: credited to `direct`.
    for list in by_visitor.values() {
        credit(&mut out, list, &[]);
    }
    narrow_to_channel(&mut out, f);
    Ok(out)
}

/// The channel filter narrows what is shown, not how credit is shared.
fn narrow_to_channel(out: &mut Credits, f: &Filters) {
    if f.channel.is_some() {
        let keep = |ch: &str| f.channel.as_deref().is_none_or(|want| want == ch);
        for m in out.by_channel.values_mut() {
            m.retain(|ch, _| keep(ch));
        }
        for m in out.by_channel_phase.values_mut() {
            m.retain(|(ch, _), _| keep(ch));
        }
        for m in out.by_conversion_phase.values_mut() {
            m.retain(|(_, ch), _| keep(ch));
        }
    }
}

/// [`credits`] from the facts.
async fn credits_from_facts(state: &ApiState, f: &Filters) -> Result<Credits, ApiError> {
    let facts = figures::load(state, f, &[fact::CONVERSIONS, fact::CREDITS]).await?;
    let mut out = Credits::default();
    for (_, v) in figures::select(&facts, f, fact::CONVERSIONS) {
        out.conversions += count(v);
    }
    for (k, v) in figures::select(&facts, f, fact::CREDITS) {
        let Some(model) = attribution::Model::ALL.iter().find(|m| m.as_str() == k.k) else {
            continue;
        };
        out.add_share(&attribution::Share {
            model: model.as_str(),
            channel: k.channel.clone(),
            touch_phase: k.phase.clone(),
            conversion_phase: k.k2.clone(),
            credit: v.credit,
        });
    }
    narrow_to_channel(&mut out, f);
    Ok(out)
}

/// `GET /api/attribution`: credited sign-ups per channel, per channel × phase
/// of the touch and per phase of the conversion, under all five models.
pub async fn attribution(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    if f.placement.is_some() {
        return Err(FilterError {
            parameter: "placement",
            message: "attribution does not take a placement filter yet: filter by channel".into(),
        }
        .into());
    }
    let c = if figures::covers(&state, &f) {
        credits_from_facts(&state, &f).await?
    } else {
        credits(&state, &f).await?
    };
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
        return Ok(csv(
            &Export::new(&state.campaign, &f, "attribution"),
            &["model", "channel", "touch_phase", "credited_signups"],
            &rows,
        ));
    }
    let pairs = |m: &BTreeMap<&'static str, BTreeMap<(String, String), f64>>, a: &str, b: &str| {
        m.iter()
            .map(|(model, v)| {
                let list: Vec<_> = v
                    .iter()
                    .map(|((x, y), credit)| json!({ a: x, b: y, "credit": credit }))
                    .collect();
                ((*model).to_owned(), json!(list))
            })
            .collect::<serde_json::Map<_, _>>()
    };
    Ok(Json(json!({
        "conversions": c.conversions,
        "lookback_days": state.campaign.attribution.lookback.num_days(),
        "models": attribution::Model::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "by_channel": c.by_channel,
        "by_channel_phase": pairs(&c.by_channel_phase, "channel", "phase"),
        "by_conversion_phase": pairs(&c.by_conversion_phase, "phase", "channel"),
    }))
    .into_response())
}

// ---------------------------------------------------------------- channels

/// Visit-level touches per channel × phase of the touch's first event (the
/// gap rule of DESIGN §2 in SQL: a touch starts at a visitor's event of a
/// touch channel more than the gap after the visitor's previous event of
/// that channel). Exposures (card impressions, passes) are left out.
/// Aggregates in the dedup step get their own names (`vid`, `ch`, `ph`):
/// 18.16 resolves a WHERE column to a same-named SELECT alias.
const TOUCHES_SQL: &str = "SELECT ch AS channel, tupleElement(s, 2) AS phase, count() AS touches FROM ( \
   SELECT ch, arrayJoin(arrayFilter((x, i) -> i = 1 OR tupleElement(x, 1) - tupleElement(a[i - 1], 1) >= ?, \
          a, arrayEnumerate(a))) AS s FROM ( \
     SELECT vid, ch, arraySort(groupArray((ms, ph))) AS a FROM ( \
       SELECT event_id, any(visitor_id) AS vid, any(channel) AS ch, \
              any(toUInt64(ts) * 1000 + ts_ms) AS ms, any(phase) AS ph \
       FROM events WHERE {cond} AND has(?, channel) \
         AND NOT (event_type = 'tinder_card' AND (action = 'impression' OR action = 'pass')) \
       GROUP BY event_id) \
     GROUP BY vid, ch)) \
 GROUP BY channel, phase ORDER BY channel, phase";

#[derive(Debug, Row, Deserialize)]
struct TouchRow {
    channel: String,
    phase: String,
    touches: u64,
}

#[derive(Debug, Row, Deserialize)]
struct ReachRow {
    channel: String,
    phase: String,
    visitors: u64,
    visits: u64,
    signups: u64,
}

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
    /// Media cost of the channel's placements ÷ sign-ups, all phases, when costs are configured.
    pub cost_per_signup_eur: Option<f64>,
}

/// The campaign's touch channels, as a bound array.
fn touch_channels(campaign: &Campaign) -> Vec<String> {
    campaign
        .channels
        .iter()
        .filter(|c| c.touch)
        .map(|c| c.id.clone())
        .collect()
}

/// Touches and reach per channel × phase, from the events.
async fn channel_rows(
    state: &ApiState,
    f: &Filters,
) -> Result<(Vec<TouchRow>, Vec<ReachRow>), ApiError> {
    let (cond, binds) = f.conditions(false);
    let gap_ms =
        u32::try_from(state.campaign.attribution.touch_gap.num_milliseconds()).unwrap_or(u32::MAX);
    let mut touch_binds = vec![crate::filters::Bind::U32(gap_ms)];
    touch_binds.extend(binds.iter().cloned());
    let touches: Vec<TouchRow> = bind_all(
        state.client.query(&TOUCHES_SQL.replace("{cond}", &cond)),
        &touch_binds,
    )
    .bind(touch_channels(&state.campaign))
    .fetch_all()
    .await?;
    let reach: Vec<ReachRow> = bind_all(
        state.client.query(&format!(
            "SELECT channel, phase, uniqExact(visitor_id) AS visitors, \
             uniqExactIf(event_id, event_type = 'page_view') AS visits, \
             uniqExactIf(contact_hash, event_type = 'signup') AS signups \
             FROM events WHERE {cond} GROUP BY channel, phase ORDER BY channel, phase"
        )),
        &binds,
    )
    .fetch_all()
    .await?;
    Ok((touches, reach))
}

/// [`channel_rows`] from the facts.
async fn channel_rows_from_facts(
    state: &ApiState,
    f: &Filters,
) -> Result<(Vec<TouchRow>, Vec<ReachRow>), ApiError> {
    let facts = figures::load(
        state,
        f,
        &[fact::TOUCHES, fact::VISITORS, fact::EVENTS, fact::SIGNUPS],
    )
    .await?;
    let wanted = |channel: &str| f.channel.as_deref().is_none_or(|c| c == channel);
    let touches = figures::select(&facts, f, fact::TOUCHES)
        .filter(|(k, _)| wanted(&k.channel))
        .map(|(k, v)| TouchRow {
            channel: k.channel.clone(),
            phase: k.phase.clone(),
            touches: count(v),
        })
        .collect();
    let mut reach: BTreeMap<(String, String), ReachRow> = BTreeMap::new();
    for (k, v) in facts.iter().filter(|(k, _)| {
        k.metric == fact::VISITORS && k.scope != ALL && k.channel != ALL && wanted(&k.channel)
    }) {
        if f.phase.as_ref().is_some_and(|p| *p != k.scope) {
            continue;
        }
        reach.insert(
            (k.channel.clone(), k.scope.clone()),
            ReachRow {
                channel: k.channel.clone(),
                phase: k.scope.clone(),
                visitors: count(v),
                visits: 0,
                signups: 0,
            },
        );
    }
    for (k, v) in &facts {
        if k.metric == fact::EVENTS && k.event_type == "page_view" {
            if let Some(r) = reach.get_mut(&(k.channel.clone(), k.phase.clone())) {
                r.visits += count(v);
            }
        }
        if k.metric == fact::SIGNUPS && k.scope != ALL {
            if let Some(r) = reach.get_mut(&(k.channel.clone(), k.scope.clone())) {
                r.signups = count(v);
            }
        }
    }
    Ok((touches, reach.into_values().collect()))
}

/// `GET /api/channels`: per channel × phase — touches, visitors reached,
/// landing visits, sign-ups, conversion rate, cost per sign-up.
pub async fn channels(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let (touches, reach) = if figures::covers(&state, &f) {
        channel_rows_from_facts(&state, &f).await?
    } else {
        channel_rows(&state, &f).await?
    };
    let mut rows: BTreeMap<(String, String), ChannelPhase> = BTreeMap::new();
    for r in reach {
        rows.insert(
            (r.channel.clone(), r.phase.clone()),
            ChannelPhase {
                channel: r.channel,
                phase: r.phase,
                visitors: r.visitors,
                visits: r.visits,
                signups: r.signups,
                ..Default::default()
            },
        );
    }
    for t in touches {
        let row = rows
            .entry((t.channel.clone(), t.phase.clone()))
            .or_insert_with(|| ChannelPhase {
                channel: t.channel.clone(),
                phase: t.phase.clone(),
                ..Default::default()
            });
        row.touches = t.touches;
    }
    let mut signups_by_channel: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows.values() {
        *signups_by_channel.entry(r.channel.clone()).or_default() += r.signups;
    }
    let cost = |channel: &str| -> Option<f64> {
        let costs: Vec<f64> = state
            .campaign
            .placements
            .iter()
            .filter(|p| p.channel == channel)
            .filter_map(|p| p.media_cost_eur)
            .collect();
        let n = *signups_by_channel.get(channel)?;
        (!costs.is_empty() && n > 0).then(|| costs.iter().sum::<f64>() / n as f64)
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
    Ok(Json(json!({ "rows": out })).into_response())
}

// -------------------------------------------------------------------- live

#[derive(Debug, Row, Deserialize)]
struct MinuteRow {
    m: u32,
    n: u64,
}

/// Where the pipeline stands: what the processor has not written yet and
/// how old the newest processed event is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Progress {
    /// Events the collector accepted (in Kafka) that the processor has not
    /// committed yet, i.e. not yet in ClickHouse; `None` when the broker
    /// could not be asked (`pending_error` says why).
    pub pending_events: Option<i64>,
    pub pending_error: Option<String>,
    /// Every partition is up to date: nothing pending and no committed
    /// offset past a partition's end (which would read as 0 pending while
    /// the processor skips what arrives). False when the broker cannot be asked.
    pub up_to_date: bool,
    /// Partitions in each state (`up_to_date`, `behind`, `no_commit`,
    /// `ahead_of_end`); empty when the broker cannot be asked.
    pub partitions: BTreeMap<&'static str, usize>,
    /// The partitions that are not up to date, with their offsets.
    pub lagging: Vec<ensemble_core::kafka::PartitionLag>,
    /// now − receipt of the newest event processed in the last hour.
    pub freshness_seconds: Option<i64>,
    /// Receipt time of the newest sign-up in ClickHouse (bots excluded).
    pub last_signup: Option<DateTime<Utc>>,
}

/// Reads the processor group's lag from the broker and the newest rows from
/// ClickHouse.
pub async fn progress(state: &ApiState, now: DateTime<Utc>) -> Result<Progress, ApiError> {
    let since = u32::try_from((now - chrono::Duration::hours(1)).timestamp().max(0)).unwrap_or(0);
    // From the per-minute rollup (a max per processing minute), not the events.
    let (newest, last_signup): (u32, u32) = state
        .client
        .query(
            "SELECT toUInt32(maxMerge(newest_received)), toUInt32(0) FROM events_minutely \
             WHERE minute >= toStartOfMinute(toDateTime(?)) \
             UNION ALL SELECT toUInt32(0), toUInt32(maxMerge(last_signup)) FROM events_minutely",
        )
        .bind(since)
        .fetch_all::<(u32, u32)>()
        .await?
        .into_iter()
        .fold((0, 0), |acc, (a, b)| (acc.0.max(a), acc.1.max(b)));
    let lag = state.lag.read(std::time::Duration::from_secs(2)).await;
    let at = |t: u32| {
        (t > 0)
            .then(|| DateTime::from_timestamp(i64::from(t), 0))
            .flatten()
    };
    if let Err(e) = &lag {
        tracing::warn!(error = %format!("{e:#}"), "cannot read the processor group's lag from the broker");
    }
    Ok(Progress {
        pending_events: lag
            .as_ref()
            .ok()
            .map(ensemble_core::kafka::GroupLag::pending),
        up_to_date: lag
            .as_ref()
            .is_ok_and(ensemble_core::kafka::GroupLag::up_to_date),
        partitions: lag.as_ref().map(|l| l.states()).unwrap_or_default(),
        lagging: lag
            .as_ref()
            .map(|l| {
                l.partitions
                    .iter()
                    .filter(|p| p.state() != ensemble_core::kafka::PartitionState::UpToDate)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
        // The broker's own words stay in the log.
        pending_error: lag
            .err()
            .map(|_| "the broker could not be asked for the processor's progress".to_owned()),
        freshness_seconds: at(newest).map(|t| (now - t).num_seconds().max(0)),
        last_signup: at(last_signup),
    })
}

/// `GET /api/live`: events per minute over the last hour (by processing
/// time), events not yet processed, freshness.
pub async fn live(State(state): State<Shared>) -> Result<Response, ApiError> {
    let now = Utc::now();
    let since = u32::try_from((now - chrono::Duration::hours(1)).timestamp().max(0)).unwrap_or(0);
    let per_minute: Vec<MinuteRow> = state
        .client
        .query(
            "SELECT toUInt32(minute) AS m, toUInt64(sum(events)) AS n FROM ledger_minutely \
             WHERE minute >= toDateTime(?) GROUP BY m HAVING n > 0 ORDER BY m",
        )
        .bind(since)
        .fetch_all()
        .await?;
    let p = progress(&state, now).await?;
    Ok(Json(json!({
        "now": now,
        "pending_events": p.pending_events,
        "pending_error": p.pending_error,
        "up_to_date": p.up_to_date,
        "partitions": p.partitions,
        "lagging_partitions": p.lagging.iter().map(|l| json!({
            "partition": l.partition, "state": l.state(), "committed": l.committed, "low": l.low, "end": l.end,
        })).collect::<Vec<_>>(),
        "freshness_seconds": p.freshness_seconds,
        "last_signup": p.last_signup,
        "per_minute": per_minute.iter().map(|m| json!({"minute": DateTime::from_timestamp(i64::from(m.m), 0), "events": m.n})).collect::<Vec<_>>(),
    }))
    .into_response())
}

// -------------------------------------------------------------- placements

#[derive(Debug, Row, Deserialize)]
struct PlacementRow {
    placement: String,
    scans: u64,
    scanners: u64,
    visits: u64,
    signups: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PlacementStats {
    pub code: String,
    pub channel: String,
    pub label: String,
    /// QR scans and card clicks through the redirect.
    pub scans: u64,
    pub unique_scanners: u64,
    pub visits: u64,
    pub signups: u64,
    /// signups / unique scanners.
    pub rate: f64,
    pub cost_per_signup_eur: Option<f64>,
}

/// Scans, scanners, visits and sign-ups per placement, from the events.
async fn placement_rows(state: &ApiState, f: &Filters) -> Result<Vec<PlacementRow>, ApiError> {
    let (cond, binds) = f.conditions(false);
    let scan = "(event_type = 'qr_scan' OR (event_type = 'tinder_card' AND action = 'click'))";
    Ok(bind_all(
        state.client.query(&format!(
            "SELECT placement, uniqExactIf(event_id, {scan}) AS scans, uniqExactIf(visitor_id, {scan}) AS scanners, \
             uniqExactIf(event_id, event_type = 'page_view') AS visits, \
             uniqExactIf(contact_hash, event_type = 'signup') AS signups \
             FROM events WHERE {cond} AND placement != '' GROUP BY placement"
        )),
        &binds,
    )
    .fetch_all()
    .await?)
}

/// [`placement_rows`] from the facts.
async fn placement_rows_from_facts(
    state: &ApiState,
    f: &Filters,
) -> Result<Vec<PlacementRow>, ApiError> {
    let facts = figures::load(
        state,
        f,
        &[fact::EVENTS, fact::SCANNERS, fact::SIGNUPS_BY_PLACEMENT],
    )
    .await?;
    let channel = f.channel.as_deref().unwrap_or(ALL);
    let mut rows: BTreeMap<String, PlacementRow> = BTreeMap::new();
    for (k, v) in facts
        .iter()
        .filter(|(k, _)| k.metric == fact::EVENTS && !k.placement.is_empty())
    {
        if f.phase.as_ref().is_some_and(|p| *p != k.phase)
            || f.channel.as_ref().is_some_and(|c| *c != k.channel)
        {
            continue;
        }
        let r = rows
            .entry(k.placement.clone())
            .or_insert_with(|| PlacementRow {
                placement: k.placement.clone(),
                scans: 0,
                scanners: 0,
                visits: 0,
                signups: 0,
            });
        if k.event_type == "qr_scan" || (k.event_type == "tinder_card" && k.action == "click") {
            r.scans += count(v);
        }
        if k.event_type == "page_view" {
            r.visits += count(v);
        }
    }
    for (k, v) in figures::select(&facts, f, fact::SCANNERS).chain(figures::select(
        &facts,
        f,
        fact::SIGNUPS_BY_PLACEMENT,
    )) {
        if k.channel != channel {
            continue;
        }
        if let Some(r) = rows.get_mut(&k.placement) {
            if k.metric == fact::SCANNERS {
                r.scanners = count(v);
            } else {
                r.signups = count(v);
            }
        }
    }
    Ok(rows.into_values().collect())
}

/// `GET /api/placements`: every configured placement (and any unknown code
/// seen), ranked by scans.
pub async fn placements(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let rows = if figures::covers(&state, &f) {
        placement_rows_from_facts(&state, &f).await?
    } else {
        placement_rows(&state, &f).await?
    };
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
    for r in rows {
        let known = state.campaign.placement(&r.placement);
        let entry = out
            .entry(r.placement.clone())
            .or_insert_with(|| PlacementStats {
                code: r.placement.clone(),
                channel: known.map_or_else(
                    || state.campaign.channel_rules.unknown.clone(),
                    |p| p.channel.clone(),
                ),
                label: known.map_or_else(|| "(unknown code)".into(), |p| p.label.clone()),
                ..Default::default()
            });
        entry.scans = r.scans;
        entry.unique_scanners = r.scanners;
        entry.visits = r.visits;
        entry.signups = r.signups;
    }
    let mut list: Vec<PlacementStats> = out
        .into_values()
        .map(|mut p| {
            p.rate = if p.unique_scanners == 0 {
                0.0
            } else {
                p.signups as f64 / p.unique_scanners as f64
            };
            p.cost_per_signup_eur = state
                .campaign
                .placement(&p.code)
                .and_then(|c| c.media_cost_eur)
                .filter(|_| p.signups > 0)
                .map(|cost| cost / p.signups as f64);
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
                "unique_scanners",
                "visits",
                "signups",
                "rate",
                "cost_per_signup_eur",
            ],
            &list,
        ));
    }
    Ok(Json(json!({ "rows": list })).into_response())
}

// ------------------------------------------------------------------ funnel

#[derive(Debug, Row, Deserialize)]
struct FunnelRow {
    channel: String,
    touched: u64,
    visited: u64,
    signed: u64,
    seconds: Vec<u32>,
}

/// Funnel steps per touch channel, from the events.
async fn funnel_rows(state: &ApiState, f: &Filters) -> Result<Vec<FunnelRow>, ApiError> {
    let (cond, binds) = f.conditions(false);
    let (cond_all, binds_all) = f.conditions(true);
    let sql = format!(
        "SELECT ch AS channel, count() AS touched, countIf(is_visit) AS visited, countIf(is_visit AND is_conv) AS signed, \
           groupArrayIf(toUInt32(toUInt32(signup_ts) - toUInt32(first_touch)), is_visit AND is_conv) AS seconds FROM ( \
           SELECT ch, first_touch, signup_ts, arrayExists(x -> x >= first_touch, views) AS is_visit, \
                  signup_ts >= first_touch AND toUInt32(signup_ts) > 0 AS is_conv FROM ( \
             SELECT visitor_id, ch, first_touch, views FROM ( \
               SELECT visitor_id, channel AS ch, min(ts) AS first_touch FROM events WHERE {cond} AND has(?, channel) \
                 AND NOT (event_type = 'tinder_card' AND (action = 'impression' OR action = 'pass')) \
               GROUP BY visitor_id, channel \
             ) AS touched_by ANY LEFT JOIN ( \
               SELECT visitor_id, groupArray(ts) AS views FROM events WHERE {cond_all} AND event_type = 'page_view' \
               GROUP BY visitor_id \
             ) AS landing_views USING visitor_id \
           ) AS with_views ANY LEFT JOIN ( \
             SELECT visitor_id, min(ts) AS signup_ts FROM events WHERE {cond_all} AND event_type = 'signup' \
             GROUP BY visitor_id \
           ) AS first_signups USING visitor_id \
         ) GROUP BY ch ORDER BY ch"
    );
    let q = bind_all(state.client.query(&sql), &binds).bind(touch_channels(&state.campaign));
    let q = bind_all(bind_all(q, &binds_all), &binds_all);
    Ok(q.fetch_all().await?)
}

/// [`funnel_rows`] from the facts. Of the seconds to sign-up only the one
/// or two around the median are read (found through the hourly histogram):
/// the median the answer shows is the same.
async fn funnel_rows_from_facts(state: &ApiState, f: &Filters) -> Result<Vec<FunnelRow>, ApiError> {
    let mut rows: BTreeMap<String, FunnelRow> = BTreeMap::new();
    let mut hours: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
    let figures = figures::by_channel(state, f, &[fact::FUNNEL, fact::FUNNEL_HOURS]).await?;
    for ((metric, channel, step, bucket), n) in figures {
        if f.channel.as_ref().is_some_and(|c| *c != channel) {
            continue;
        }
        let n = u64::try_from(n).unwrap_or(0);
        if metric == fact::FUNNEL_HOURS {
            hours.entry(channel).or_default().push((bucket, n));
            continue;
        }
        let r = rows.entry(channel.clone()).or_insert_with(|| FunnelRow {
            channel,
            touched: 0,
            visited: 0,
            signed: 0,
            seconds: Vec::new(),
        });
        match step.as_str() {
            "touched" => r.touched = n,
            "visited" => r.visited = n,
            "signed" => r.signed = n,
            _ => {}
        }
    }
    // (channel, hour, rank wanted, signed visitors in earlier hours).
    let mut wanted: Vec<(String, u32, u64, u64)> = Vec::new();
    for (channel, by_hour) in &hours {
        let n: u64 = by_hour.iter().map(|(_, c)| c).sum();
        let ranks: Vec<u64> = match n {
            0 => Vec::new(),
            n if n % 2 == 1 => vec![n.div_ceil(2)],
            n => vec![n / 2, n / 2 + 1],
        };
        for rank in ranks {
            let mut below = 0u64;
            for &(hour, c) in by_hour {
                if below + c >= rank {
                    wanted.push((channel.clone(), hour, rank, below));
                    break;
                }
                below += c;
            }
        }
    }
    let ranges: Vec<(String, u32, u32)> = wanted
        .iter()
        .map(|(c, h, _, _)| {
            (
                c.clone(),
                h.saturating_mul(3600),
                h.saturating_add(1).saturating_mul(3600),
            )
        })
        .collect();
    let secs = figures::load_buckets(state, f, fact::FUNNEL_SECONDS, &ranges).await?;
    for (channel, hour, rank, below) in wanted {
        let Some(row) = rows.get_mut(&channel) else {
            continue;
        };
        let mut seen = below;
        for (k, v) in secs
            .iter()
            .filter(|(k, _)| k.channel == channel && k.bucket / 3600 == hour)
        {
            seen += count(v);
            if seen >= rank {
                row.seconds.push(k.bucket);
                break;
            }
        }
    }
    Ok(rows.into_values().filter(|r| r.touched > 0).collect())
}

/// `GET /api/funnel`: per touch channel, visitors touched → of them, those
/// with a landing page view at or after their first touch → of those, those
/// who signed up after it; and the median time from first touch to sign-up.
pub async fn funnel(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let rows = if figures::covers(&state, &f) {
        funnel_rows_from_facts(&state, &f).await?
    } else {
        funnel_rows(&state, &f).await?
    };
    let out: Vec<_> = rows
        .into_iter()
        .map(|r| {
            let mut s = r.seconds.clone();
            s.sort_unstable();
            let median = match s.len() {
                0 => None,
                n if n % 2 == 1 => Some(f64::from(s[n / 2])),
                n => Some((f64::from(s[n / 2 - 1]) + f64::from(s[n / 2])) / 2.0),
            };
            json!({
                "channel": r.channel, "touched": r.touched, "visited": r.visited, "signed_up": r.signed,
                "median_seconds_to_signup": median,
            })
        })
        .collect();
    if f.format == Format::Csv {
        return Ok(csv_of(
            &Export::new(&state.campaign, &f, "funnel"),
            &[
                "channel",
                "touched",
                "visited",
                "signed_up",
                "median_seconds_to_signup",
            ],
            &out,
        ));
    }
    Ok(Json(json!({ "rows": out })).into_response())
}

// ------------------------------------------------------------------- reach

#[derive(Debug, Row, Deserialize)]
struct FrequencyRow {
    channel: String,
    contacts: u64,
    visitors: u64,
}

#[derive(Debug, Row, Deserialize)]
struct OverlapRow {
    a: String,
    b: String,
    visitors: u64,
}

/// Frequency and overlap rows, from the events.
async fn reach_rows(
    state: &ApiState,
    f: &Filters,
) -> Result<(Vec<FrequencyRow>, Vec<OverlapRow>), ApiError> {
    let (cond, binds) = f.conditions(false);
    let channels = touch_channels(&state.campaign);
    let freq: Vec<FrequencyRow> = bind_all(
        state.client.query(&format!(
            "SELECT ch AS channel, least(n, 5) AS contacts, count() AS visitors FROM ( \
               SELECT visitor_id, channel AS ch, uniqExact(event_id) AS n FROM events \
               WHERE {cond} AND has(?, channel) GROUP BY visitor_id, channel \
             ) GROUP BY channel, contacts ORDER BY channel, contacts"
        )),
        &binds,
    )
    .bind(&channels)
    .fetch_all()
    .await?;
    let reached =
        format!("SELECT DISTINCT visitor_id, channel FROM events WHERE {cond} AND has(?, channel)");
    let overlap_sql = format!(
        "SELECT a, b, count() AS visitors FROM ( \
           SELECT visitor_id, channel AS a FROM ({reached}) AS left_side \
         ) AS l ALL INNER JOIN ( \
           SELECT visitor_id, channel AS b FROM ({reached}) AS right_side \
         ) AS r USING visitor_id GROUP BY a, b ORDER BY a, b"
    );
    let q = bind_all(state.client.query(&overlap_sql), &binds).bind(&channels);
    let overlap: Vec<OverlapRow> = bind_all(q, &binds).bind(&channels).fetch_all().await?;
    Ok((freq, overlap))
}

/// [`reach_rows`] from the facts.
async fn reach_rows_from_facts(
    state: &ApiState,
    f: &Filters,
) -> Result<(Vec<FrequencyRow>, Vec<OverlapRow>), ApiError> {
    let facts = figures::load(state, f, &[fact::FREQUENCY, fact::OVERLAP]).await?;
    let wanted = |channel: &str| f.channel.as_deref().is_none_or(|c| c == channel);
    let mut freq = Vec::new();
    for (k, v) in figures::select(&facts, f, fact::FREQUENCY).filter(|(k, _)| wanted(&k.channel)) {
        if let Ok(contacts) = k.k.parse::<u64>() {
            freq.push(FrequencyRow {
                channel: k.channel.clone(),
                contacts,
                visitors: count(v),
            });
        }
    }
    freq.sort_by(|a, b| (&a.channel, a.contacts).cmp(&(&b.channel, b.contacts)));
    let overlap = figures::select(&facts, f, fact::OVERLAP)
        .filter(|(k, _)| wanted(&k.channel) && wanted(&k.k))
        .map(|(k, v)| OverlapRow {
            a: k.channel.clone(),
            b: k.k.clone(),
            visitors: count(v),
        })
        .collect();
    Ok((freq, overlap))
}

/// `GET /api/reach`: visitors reached per channel (any contact, exposures
/// included), how many contacts each had (1, 2, 3, 4, 5+), and the overlap
/// matrix: visitors reached by both channels.
pub async fn reach(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let f = Filters::parse(&state.campaign, &q)?;
    let (freq, overlap) = if figures::covers(&state, &f) {
        reach_rows_from_facts(&state, &f).await?
    } else {
        reach_rows(&state, &f).await?
    };
    let mut per_channel: BTreeMap<String, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    for r in &freq {
        let e = per_channel.entry(r.channel.clone()).or_default();
        e.0 += r.visitors;
        let bucket = if r.contacts >= 5 {
            "5+".to_owned()
        } else {
            r.contacts.to_string()
        };
        e.1.insert(bucket, r.visitors);
    }
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
    Ok(Json(json!({
        "channels": per_channel.iter().map(|(ch, (n, fq))| json!({"channel": ch, "visitors": n, "frequency": fq})).collect::<Vec<_>>(),
        "overlap": overlap.iter().map(|o| json!({"a": o.a, "b": o.b, "visitors": o.visitors})).collect::<Vec<_>>(),
    }))
    .into_response())
}

// -------------------------------------------------------------- timeseries

#[derive(Debug, Row, Deserialize)]
struct BucketRow {
    bucket: String,
    value: u64,
}

/// `GET /api/timeseries?metric=events|visitors|signups&bucket=hour|day`: the
/// metric per hour (UTC) or per day (the campaign's local days), with the
/// phase boundaries for the chart's bands.
pub async fn timeseries(
    State(state): State<Shared>,
    Query(mut q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let metric = q.remove("metric").unwrap_or_else(|| "events".into());
    let value = match metric.as_str() {
        "events" => "uniqExact(event_id)",
        "visitors" => "uniqExact(visitor_id)",
        "signups" => "uniqExactIf(contact_hash, event_type = 'signup')",
        _ => {
            return Err(FilterError {
                parameter: "metric",
                message: "metric is `events`, `visitors` or `signups`".into(),
            }
            .into())
        }
    };
    let f = Filters::parse(&state.campaign, &q)?;
    let bucket = match q.get("bucket").map(String::as_str) {
        None | Some("day") => "toString(toDate(ts, ?))",
        Some("hour") => "formatDateTime(toStartOfHour(ts), '%Y-%m-%dT%H:00:00Z', 'UTC')",
        Some(_) => {
            return Err(FilterError {
                parameter: "bucket",
                message: "bucket is `hour` or `day`".into(),
            }
            .into())
        }
    };
    let hourly = q.get("bucket").map(String::as_str) == Some("hour");
    let rows = if figures::covers(&state, &f) {
        buckets_from_facts(&state, &f, &metric, hourly).await?
    } else {
        let (cond, binds) = f.conditions(false);
        // Sign-ups: each contact once, in the bucket of its first sign-up (a
        // repeat sign-up is not another conversion).
        let source = if metric == "signups" {
            format!(
                "(SELECT first_ts AS ts FROM (SELECT contact_hash, min(ts) AS first_ts FROM events \
                 WHERE {cond} AND event_type = 'signup' AND contact_hash != '' GROUP BY contact_hash))"
            )
        } else {
            format!("(SELECT event_id, visitor_id, ts FROM events WHERE {cond})")
        };
        let value = if metric == "signups" {
            "count()"
        } else {
            value
        };
        let mut query = state.client.query(&format!(
            "SELECT {bucket} AS bucket, {value} AS value FROM {source} GROUP BY bucket ORDER BY bucket"
        ));
        if bucket.contains('?') {
            query = query.bind(state.campaign.timezone.name());
        }
        bind_all(query, &binds).fetch_all().await?
    };
    if f.format == Format::Csv {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| vec![r.bucket.clone(), r.value.to_string()])
            .collect();
        return Ok(csv(
            &Export::new(
                &state.campaign,
                &f,
                &format!(
                    "timeseries-{metric}-{}",
                    if hourly { "hour" } else { "day" }
                ),
            ),
            &["bucket", &metric],
            &rows,
        ));
    }
    let phases: Vec<_> = state
        .campaign
        .phases
        .iter()
        .map(|p| json!({"id": p.id, "label": p.label, "starts_at": p.starts_at, "ends_at": p.ends_at}))
        .collect();
    Ok(Json(json!({
        "metric": metric,
        "points": rows.iter().map(|r| json!({"bucket": r.bucket, "value": r.value})).collect::<Vec<_>>(),
        "phases": phases,
    }))
    .into_response())
}

/// The timeseries points from the facts: hours as `YYYY-MM-DDTHH:00:00Z`,
/// days as the campaign's local dates.
async fn buckets_from_facts(
    state: &ApiState,
    f: &Filters,
    metric: &str,
    hourly: bool,
) -> Result<Vec<BucketRow>, ApiError> {
    let name = match (metric, hourly) {
        ("events", _) => fact::EVENTS_HOURLY,
        ("visitors", true) => fact::VISITORS_HOURLY,
        ("visitors", false) => fact::VISITORS_DAILY,
        ("signups", true) => fact::SIGNUPS_HOURLY,
        _ => fact::SIGNUPS_DAILY,
    };
    let tz = state.campaign.timezone;
    let label = |bucket: u32| {
        let t = DateTime::from_timestamp(i64::from(bucket), 0).unwrap_or_default();
        if hourly {
            t.format("%Y-%m-%dT%H:00:00Z").to_string()
        } else {
            t.with_timezone(&tz).format("%Y-%m-%d").to_string()
        }
    };
    let mut points: BTreeMap<String, u64> = BTreeMap::new();
    for (bucket, n) in figures::series(state, f, name, name != fact::EVENTS_HOURLY).await? {
        *points.entry(label(bucket)).or_default() += u64::try_from(n).unwrap_or(0);
    }
    Ok(points
        .into_iter()
        .filter(|(_, value)| *value > 0)
        .map(|(bucket, value)| BucketRow { bucket, value })
        .collect())
}

// ----------------------------------------------------------------- journey

#[derive(Debug, Row, Deserialize, Serialize)]
struct JourneyRow {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    ms: u64,
    event_type: String,
    action: String,
    channel: String,
    placement: String,
    phase: String,
}

/// `GET /api/journey?visitor_id=…`: one visitor's events — visitor-level
/// data, for analyst tokens only (agency tokens get 403).
pub async fn journey(
    State(state): State<Shared>,
    axum::Extension(role): axum::Extension<Role>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if role != Role::Analyst {
        return Err(ApiError::Forbidden);
    }
    let visitor = q
        .get("visitor_id")
        .filter(|v| ensemble_core::event::is_valid_visitor_id(v))
        .ok_or_else(|| FilterError {
            parameter: "visitor_id",
            message: "a visitor id of 8-64 [A-Za-z0-9_-] is required".into(),
        })?;
    let rows: Vec<JourneyRow> = state
        .client
        .query(
            "SELECT event_id, any(toUInt64(ts) * 1000 + ts_ms) AS ms, any(event_type) AS event_type, \
             any(action) AS action, any(channel) AS channel, any(placement) AS placement, any(phase) AS phase \
             FROM events WHERE visitor_id = ? GROUP BY event_id ORDER BY ms, event_id",
        )
        .bind(visitor)
        .fetch_all()
        .await?;
    Ok(Json(json!({
        "visitor_id": visitor,
        "events": rows.iter().map(|r| json!({
            "event_id": r.event_id, "ts": from_ms(r.ms), "type": r.event_type, "action": r.action,
            "channel": r.channel, "placement": r.placement, "phase": r.phase,
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

// --------------------------------------------------------------- QR codes

/// `GET /api/placements/{code}/qr.svg` (or `qr.png`), `?size=&margin=`:
/// the placement's QR code, opening the collector's `/r/{code}`.
pub async fn placement_qr(
    State(state): State<Shared>,
    axum::extract::Path((code, file)): axum::extract::Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let placement = state
        .campaign
        .placement(&code)
        .ok_or_else(|| ApiError::NotFound(format!("no placement `{code}` in the campaign file")))?;
    if let Some(k) = q.keys().find(|k| !matches!(k.as_str(), "size" | "margin")) {
        return Err(FilterError {
            parameter: "query",
            message: format!("unknown parameter `{k}`; known: size, margin"),
        }
        .into());
    }
    let drawing = crate::qr::Drawing::parse(
        q.get("size").map(String::as_str),
        q.get("margin").map(String::as_str),
    )
    .map_err(|e| FilterError {
        parameter: if e == crate::qr::QrError::Margin {
            "margin"
        } else {
            "size"
        },
        message: e.to_string(),
    })?;
    let url = crate::qr::scan_url(&state.collector_url, &placement.code);
    let drawn = match file.as_str() {
        "qr.svg" => crate::qr::svg(&url, drawing).map(|s| ("image/svg+xml", "svg", s.into_bytes())),
        "qr.png" => crate::qr::png(&url, drawing).map(|b| ("image/png", "png", b)),
        _ => {
            return Err(ApiError::NotFound(format!(
                "`{file}`: a placement's QR code is qr.svg or qr.png"
            )))
        }
    };
    let (content_type, ext, bytes) = drawn.map_err(|e| ApiError::NotFound(e.to_string()))?;
    let name = format!(
        "inline; filename=\"{}_{}.{ext}\"",
        state.campaign.id, placement.code
    );
    let mut resp = ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&name) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_clickhouse_finds_too_large_is_told_apart_from_an_outage() {
        let memory = "bad response: Code: 241, e.displayText() = DB::Exception: Memory limit (for query) exceeded";
        assert!(is_too_large(memory));
        assert!(is_too_large(
            "Code: 159, e.displayText() = DB::Exception: Timeout exceeded"
        ));
        assert!(!is_too_large("network error: connection refused"));
        assert!(!is_too_large(
            "Code: 60, e.displayText() = DB::Exception: Table x.events doesn't exist"
        ));
        assert!(!is_too_large("Code: 2410, something else"));
    }
}
