//! `compare=previous|previous_phase` on every aggregate endpoint: the same
//! question asked for the period before (`filters::previous_period`), both
//! answers side by side — `{"current": …, "previous": …,
//! "previous_period": {compare, from, to, phase}}` — so the page can show
//! the change. Each of the two goes through the token check and the
//! admission like any request.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::filters::previous_period;
use crate::state::Shared;

/// The endpoints whose answers can be compared.
pub const AGGREGATES: [&str; 11] = [
    "/api/overview",
    "/api/channels",
    "/api/attribution",
    "/api/placements",
    "/api/funnel",
    "/api/reach",
    "/api/paths",
    "/api/media",
    "/api/scan-hours",
    "/api/devices",
    "/api/timeseries",
];

/// Largest answer read back to be merged (every path of a campaign as
/// JSON stays far below).
const MAX_BODY: usize = 256 << 20;

fn query_of(q: &HashMap<String, String>) -> String {
    let mut keys: Vec<&String> = q.keys().collect();
    keys.sort();
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for k in keys {
        out.append_pair(k, &q[k]);
    }
    out.finish()
}

fn again(req: &Request, q: &HashMap<String, String>) -> Option<Request> {
    let uri: Uri = format!("{}?{}", req.uri().path(), query_of(q))
        .parse()
        .ok()?;
    let mut r = Request::builder().method(req.method().clone()).uri(uri);
    for (k, v) in req.headers() {
        r = r.header(k, v);
    }
    let mut r = r.body(Body::empty()).ok()?;
    *r.extensions_mut() = req.extensions().clone();
    Some(r)
}

async fn json_of(r: Response) -> Result<Value, Response> {
    if r.status() != StatusCode::OK {
        return Err(r);
    }
    let bytes = axum::body::to_bytes(r.into_body(), MAX_BODY)
        .await
        .map_err(|e| {
            ApiError::Internal(format!("reading an answer to compare: {e}")).into_response()
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::Internal(format!("an answer to compare is not JSON: {e}")).into_response()
    })
}

pub async fn compare(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if !q.contains_key("compare") || !AGGREGATES.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let (previous_q, period) = match previous_period(&state.campaign, &q) {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut current_q = q;
    current_q.remove("compare");
    let (Some(current), Some(previous)) = (again(&req, &current_q), again(&req, &previous_q))
    else {
        return ApiError::Internal("cannot build the compared requests".into()).into_response();
    };
    let current = match json_of(next.clone().run(current).await).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let previous = match json_of(next.run(previous).await).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    axum::Json(json!({
        "current": current,
        "previous": previous,
        "previous_period": period,
    }))
    .into_response()
}
