//! Request bodies: size limits (compressed and inflated — a gzip bomb is
//! stopped while inflating), content types, JSON nesting depth, and the
//! `{"batch":[...]}` envelope.

use std::io::Read;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use serde_json::Value;

use crate::error::IngestError;

/// Limits on one request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_batch_events: usize,
    pub max_json_depth: usize,
}

/// Reads the body, at most `max_body_bytes` of it.
pub async fn read_limited(body: Body, limits: &BodyLimits) -> Result<Vec<u8>, IngestError> {
    match axum::body::to_bytes(body, limits.max_body_bytes).await {
        Ok(b) => Ok(b.to_vec()),
        Err(e) => {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                Err(IngestError::BodyTooLarge {
                    limit: limits.max_body_bytes,
                })
            } else {
                Err(IngestError::BodyUnreadable(inner.to_string()))
            }
        }
    }
}

/// Checks `Content-Type` (JSON, or `text/plain` from `navigator.sendBeacon`)
/// and undoes `Content-Encoding: gzip` within `max_decompressed_bytes`.
pub fn decode(
    headers: &HeaderMap,
    raw: Vec<u8>,
    limits: &BodyLimits,
) -> Result<Vec<u8>, IngestError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !matches!(essence.as_str(), "application/json" | "text/plain" | "") {
        return Err(IngestError::UnsupportedMediaType(essence));
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(raw),
        "gzip" | "x-gzip" => gunzip_limited(&raw, limits.max_decompressed_bytes),
        other => Err(IngestError::UnsupportedEncoding(other.to_owned())),
    }
}

/// Inflates at most `limit + 1` bytes: a body that would inflate further is
/// refused without ever holding more than that in memory.
pub fn gunzip_limited(raw: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    let mut decoder = flate2::read::GzDecoder::new(raw).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| IngestError::InvalidGzip(e.to_string()))?;
    if out.len() > limit {
        return Err(IngestError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

/// Depth of the deepest `{`/`[` nesting, scanning outside strings. Stops
/// early once `max` is exceeded.
pub fn json_depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses the JSON body into its events: one object, or `{"batch":[...]}`.
pub fn events(bytes: &[u8], limits: &BodyLimits) -> Result<Vec<Value>, IngestError> {
    if json_depth_exceeds(bytes, limits.max_json_depth) {
        return Err(IngestError::TooDeep {
            limit: limits.max_json_depth,
        });
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| IngestError::InvalidJson(e.to_string()))?;
    match value {
        Value::Object(mut obj) if obj.contains_key("batch") => {
            if obj.len() != 1 {
                return Err(IngestError::InvalidEnvelope(
                    "a batch body is {\"batch\": [...]} with no other key".into(),
                ));
            }
            match obj.remove("batch") {
                Some(Value::Array(events)) => {
                    if events.is_empty() {
                        return Err(IngestError::InvalidEnvelope("the batch is empty".into()));
                    }
                    if events.len() > limits.max_batch_events {
                        return Err(IngestError::TooManyEvents {
                            count: events.len(),
                            limit: limits.max_batch_events,
                        });
                    }
                    Ok(events)
                }
                _ => Err(IngestError::InvalidEnvelope(
                    "`batch` must be an array of events".into(),
                )),
            }
        }
        Value::Object(obj) => Ok(vec![Value::Object(obj)]),
        _ => Err(IngestError::InvalidEnvelope(
            "the body is one event object or {\"batch\": [...]}".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    const LIMITS: BodyLimits = BodyLimits {
        max_body_bytes: 1024,
        max_decompressed_bytes: 4096,
        max_batch_events: 3,
        max_json_depth: 4,
    };

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn depth_counts_only_outside_strings() {
        assert!(!json_depth_exceeds(br#"{"a":{"b":[1,{"c":2}]}}"#, 4));
        assert!(json_depth_exceeds(br#"{"a":{"b":[1,{"c":[2]}]}}"#, 4));
        assert!(!json_depth_exceeds(br#"{"a":"[[[[[[{{{{\"[[["}"#, 1));
    }

    #[test]
    fn envelope_shapes() {
        assert_eq!(events(br#"{"type":"qr_scan"}"#, &LIMITS).unwrap().len(), 1);
        assert_eq!(events(br#"{"batch":[{},{}]}"#, &LIMITS).unwrap().len(), 2);
        assert!(matches!(
            events(br#"[{}]"#, &LIMITS),
            Err(IngestError::InvalidEnvelope(_))
        ));
        assert!(matches!(
            events(br#"{"batch":[]}"#, &LIMITS),
            Err(IngestError::InvalidEnvelope(_))
        ));
        assert!(matches!(
            events(br#"{"batch":{}}"#, &LIMITS),
            Err(IngestError::InvalidEnvelope(_))
        ));
        assert!(matches!(
            events(br#"{"batch":[{},{},{},{}]}"#, &LIMITS),
            Err(IngestError::TooManyEvents { count: 4, limit: 3 })
        ));
        assert!(matches!(
            events(b"{not json", &LIMITS),
            Err(IngestError::InvalidJson(_))
        ));
        assert!(matches!(
            events(br#"{"a":[[[[[1]]]]]}"#, &LIMITS),
            Err(IngestError::TooDeep { limit: 4 })
        ));
    }

    #[test]
    fn gzip_bomb_is_stopped_while_inflating() {
        let bomb = gzip(&vec![b' '; 10_000_000]);
        assert!(bomb.len() < 20_000, "a small body that inflates to 10 MB");
        assert!(matches!(
            gunzip_limited(&bomb, 4096),
            Err(IngestError::DecompressedTooLarge { limit: 4096 })
        ));
        assert_eq!(gunzip_limited(&gzip(b"{}"), 4096).unwrap(), b"{}");
        assert!(matches!(
            gunzip_limited(b"not gzip", 4096),
            Err(IngestError::InvalidGzip(_))
        ));
    }

    #[test]
    fn content_type_and_encoding() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "text/plain;charset=UTF-8".parse().unwrap(),
        );
        assert!(decode(&h, b"{}".to_vec(), &LIMITS).is_ok());
        h.insert(header::CONTENT_TYPE, "application/xml".parse().unwrap());
        assert!(matches!(
            decode(&h, b"{}".to_vec(), &LIMITS),
            Err(IngestError::UnsupportedMediaType(_))
        ));
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        h.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert!(matches!(
            decode(&h, b"{}".to_vec(), &LIMITS),
            Err(IngestError::UnsupportedEncoding(_))
        ));
    }
}
