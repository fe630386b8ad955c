//! Request-level errors of the collector and their HTTP answers: one status
//! per error (an exhaustive match), a machine-readable `error` code and a
//! message a person can act on.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body inflates to more than {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("request body could not be read: {0}")]
    BodyUnreadable(String),
    #[error("content type `{0}` is not accepted: send application/json or text/plain")]
    UnsupportedMediaType(String),
    #[error("content encoding `{0}` is not accepted: send gzip or no encoding")]
    UnsupportedEncoding(String),
    #[error("body is not valid gzip: {0}")]
    InvalidGzip(String),
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("JSON is nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("{0}")]
    InvalidEnvelope(String),
    #[error("batch has {count} events, limit {limit}: split it")]
    TooManyEvents { count: usize, limit: usize },
    #[error("missing or wrong import token: send `Authorization: Bearer <token>`")]
    Unauthorized,
    #[error("import is disabled: the collector has no import token configured")]
    ImportDisabled,
    #[error("too many requests from this client: retry after {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    /// Kafka's own words (`cause`) go to the log with the request id, not to the client.
    #[error(
        "events were not confirmed by Kafka; nothing in this request is guaranteed stored: \
         resend the whole request with the same event_ids after {retry_after_s} s (duplicates are removed downstream)"
    )]
    Unavailable {
        cause: String,
        retry_after_s: u64,
        /// The ids the collector gave the request's events, so a client that
        /// sent none can resend with them.
        event_ids: Vec<Uuid>,
    },
}

impl IngestError {
    /// Stable code for answers and the `reason` label of the rejected-events metric.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::BodyTooLarge { .. } => "body_too_large",
            IngestError::DecompressedTooLarge { .. } => "decompressed_too_large",
            IngestError::BodyUnreadable(_) => "body_unreadable",
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::UnsupportedEncoding(_) => "unsupported_encoding",
            IngestError::InvalidGzip(_) => "invalid_gzip",
            IngestError::InvalidJson(_) => "invalid_json",
            IngestError::TooDeep { .. } => "too_deep",
            IngestError::InvalidEnvelope(_) => "invalid_envelope",
            IngestError::TooManyEvents { .. } => "too_many_events",
            IngestError::Unauthorized => "unauthorized",
            IngestError::ImportDisabled => "import_disabled",
            IngestError::RateLimited { .. } => "rate_limited",
            IngestError::Unavailable { .. } => "unavailable",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::BodyTooLarge { .. } | IngestError::DecompressedTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            IngestError::TooManyEvents { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::BodyUnreadable(_)
            | IngestError::InvalidGzip(_)
            | IngestError::InvalidJson(_)
            | IngestError::TooDeep { .. }
            | IngestError::InvalidEnvelope(_) => StatusCode::BAD_REQUEST,
            IngestError::UnsupportedMediaType(_) | IngestError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            IngestError::Unauthorized => StatusCode::UNAUTHORIZED,
            IngestError::ImportDisabled => StatusCode::FORBIDDEN,
            IngestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn retry_after_s(&self) -> Option<u64> {
        match self {
            IngestError::RateLimited { retry_after_s }
            | IngestError::Unavailable { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        if let IngestError::Unavailable { event_ids, .. } = &self {
            body["event_ids"] = json!(event_ids);
        }
        let mut resp = (self.status(), Json(body)).into_response();
        if let Some(s) = self.retry_after_s() {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
