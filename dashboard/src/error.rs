//! The API's errors: a status, a machine-readable code, a message a person
//! can act on; the store's own words stay in the log.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::admission::Refusal;
use crate::filters::FilterError;

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
    /// A stored figure the code does not know (a newer processor's?).
    #[error("the stored figures hold something this dashboard does not know; upgrade the dashboard (the log says what)")]
    Internal(String),
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
            ApiError::Internal(what) => {
                tracing::error!(what = %what, "stored figures this dashboard cannot read");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
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
