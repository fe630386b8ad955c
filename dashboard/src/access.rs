//! The door of the API, before anything else reads the request: a request
//! without a known token is refused 401 before its filters or comparison
//! are looked at (so a stranger learns no campaign or channel name from a
//! 400; `campaigns::dispatch` does not read `campaign=` for it either), and
//! a client that keeps failing waits (429).
//!
//! A client is its peer address (an IPv6 /64 as one). Behind a reverse
//! proxy every client shares the proxy's address: the limit then holds for
//! all of them together, which is why it counts failures only.
//!
//! Past the door, [`require_token`] says who is asking (the token's
//! [`Role`]: analysts see everything, the agency aggregates), read from the
//! `Authorization` header only, and lets in questions the stored figures
//! do not answer only while `crate::admission` has a slot.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::ApiError;
use crate::filters::Filters;
use crate::state::{ApiState, Shared};

/// What a token may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sees everything.
    Analyst,
    /// Aggregates only.
    Agency,
}

/// Wrong tokens a client may send per minute before it waits: enough for
/// a person mistyping, nothing for a guesser (tokens are ≥ 16 bytes).
pub const FAILURES_PER_MINUTE: u32 = 30;

/// Most clients remembered; past it the oldest window is forgotten first.
const MAX_CLIENTS: usize = 100_000;
const WINDOW: Duration = Duration::from_secs(60);

/// Failed authentications per client in the current minute.
#[derive(Debug)]
pub struct Failures {
    per_minute: u32,
    seen: Mutex<HashMap<u128, (Instant, u32)>>,
}

fn client_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => (u128::from(v6) >> 64) << 64,
        },
    }
}

impl Failures {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds `ip` must wait, if it failed too often this minute.
    fn wait(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let seen = self.seen.lock().ok()?;
        let (start, n) = seen.get(&client_key(ip))?;
        let left = WINDOW
            .checked_sub(now.duration_since(*start))
            .filter(|d| !d.is_zero())?;
        (*n >= self.per_minute).then(|| left.as_secs().max(1))
    }

    fn fail(&self, ip: IpAddr, now: Instant) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        if seen.len() >= MAX_CLIENTS {
            seen.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        if seen.len() >= MAX_CLIENTS {
            return;
        }
        let e = seen.entry(client_key(ip)).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

/// The state the door needs: the campaign's tokens and the failures (one
/// memory for every campaign).
#[derive(Debug, Clone)]
pub struct Door {
    pub state: Shared,
    pub failures: Arc<Failures>,
}

/// Lets a request through only with a known token; counts and throttles
/// failures. The outermost layer of each campaign's API routes (only the
/// request metrics wrap it, so refusals are counted per route).
pub async fn door(State(door): State<Door>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let now = Instant::now();
    if let Some(retry_after_s) = door.failures.wait(ip, now) {
        let body = json!({
            "error": "too_many_failed_logins",
            "message": format!("too many requests with a wrong token from this address: retry after {retry_after_s} s"),
        });
        let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        return r;
    }
    if caller_of(&door.state, &req).is_none() {
        door.failures.fail(ip, now);
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
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
        .find(|(_, (t, _))| ensemble_model::privacy::same_secret(t.as_bytes(), token.as_bytes()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_client_and_forgotten_after_a_minute() {
        let f = Failures::new(3);
        let t0 = Instant::now();
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        for _ in 0..3 {
            assert_eq!(f.wait(a, t0), None);
            f.fail(a, t0);
        }
        assert_eq!(f.wait(a, t0), Some(60));
        assert_eq!(f.wait(b, t0), None, "another client");
        assert_eq!(f.wait(a, t0 + Duration::from_secs(45)), Some(15));
        assert_eq!(f.wait(a, t0 + Duration::from_secs(60)), None);
        // One /64 is one client.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap_or(a);
        let v6b: IpAddr = "2001:db8::2".parse().unwrap_or(b);
        for _ in 0..3 {
            f.fail(v6a, t0);
        }
        assert!(f.wait(v6b, t0).is_some());
    }
}
