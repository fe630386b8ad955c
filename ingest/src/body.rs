//! Request bodies: size limits (compressed and inflated — a gzip bomb is
//! stopped while inflating), content types, JSON nesting depth, and the
//! `{"batch":[...]}` envelope.

use std::io::Read;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

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

/// The top level of a body, read in one pass: an event object, or the
/// batch envelope whose events are kept up to the limit and only counted
/// past it (so an oversized batch is refused without building its events).
enum Envelope {
    One(Map<String, Value>),
    Batch {
        events: Vec<Value>,
        total: usize,
    },
    /// `batch` next to other keys.
    Mixed,
    /// `batch` is not an array.
    BatchNotArray,
    /// The body is not a JSON object.
    NotObject,
}

struct TopLevel {
    limit: usize,
}

impl<'de> Visitor<'de> for TopLevel {
    type Value = Envelope;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event object or {\"batch\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let mut obj = Map::new();
        let mut batch = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "batch" && batch.is_none() {
                batch = Some(map.next_value_seed(BatchSeed { limit: self.limit })?);
            } else {
                obj.insert(key, map.next_value::<Value>()?);
            }
        }
        Ok(match batch {
            None => Envelope::One(obj),
            Some(_) if !obj.is_empty() => Envelope::Mixed,
            Some(None) => Envelope::BatchNotArray,
            Some(Some((events, total))) => Envelope::Batch { events, total },
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Envelope, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Envelope::NotObject)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Envelope, E> {
        Ok(Envelope::NotObject)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Envelope, E> {
        Ok(Envelope::NotObject)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Envelope, E> {
        Ok(Envelope::NotObject)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Envelope, E> {
        Ok(Envelope::NotObject)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Envelope, E> {
        Ok(Envelope::NotObject)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Envelope, E> {
        Ok(Envelope::NotObject)
    }
}

/// The `batch` value: `Some((first `limit` events, how many in all))`, or
/// `None` when it is not an array.
struct BatchSeed {
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for BatchSeed {
    type Value = Option<(Vec<Value>, usize)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed {
    type Value = Option<(Vec<Value>, usize)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.limit));
        while events.len() < self.limit {
            match seq.next_element::<Value>()? {
                Some(v) => events.push(v),
                None => {
                    let n = events.len();
                    return Ok(Some((events, n)));
                }
            }
        }
        // Past the limit the events are counted, not built.
        let mut total = events.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            total += 1;
        }
        Ok(Some((events, total)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Parses the JSON body into its events: one object, or `{"batch":[...]}`.
/// A batch over `max_batch_events` is refused after counting its events,
/// without building more than the limit of them.
pub fn events(bytes: &[u8], limits: &BodyLimits) -> Result<Vec<Value>, IngestError> {
    if json_depth_exceeds(bytes, limits.max_json_depth) {
        return Err(IngestError::TooDeep {
            limit: limits.max_json_depth,
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let envelope = de
        .deserialize_any(TopLevel {
            limit: limits.max_batch_events,
        })
        .and_then(|e| de.end().map(|()| e))
        .map_err(|e| IngestError::InvalidJson(e.to_string()))?;
    match envelope {
        Envelope::One(obj) => Ok(vec![Value::Object(obj)]),
        Envelope::Batch { total: 0, .. } => {
            Err(IngestError::InvalidEnvelope("the batch is empty".into()))
        }
        Envelope::Batch { total, .. } if total > limits.max_batch_events => {
            Err(IngestError::TooManyEvents {
                count: total,
                limit: limits.max_batch_events,
            })
        }
        Envelope::Batch { events, .. } => Ok(events),
        Envelope::Mixed => Err(IngestError::InvalidEnvelope(
            "a batch body is {\"batch\": [...]} with no other key".into(),
        )),
        Envelope::BatchNotArray => Err(IngestError::InvalidEnvelope(
            "`batch` must be an array of events".into(),
        )),
        Envelope::NotObject => Err(IngestError::InvalidEnvelope(
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
        assert!(matches!(
            events(br#"{"batch":[{}],"type":"qr_scan"}"#, &LIMITS),
            Err(IngestError::InvalidEnvelope(_))
        ));
        assert!(matches!(
            events(br#"{"type":"qr_scan","batch":[{}]}"#, &LIMITS),
            Err(IngestError::InvalidEnvelope(_))
        ));
        assert!(matches!(
            events(br#"3"#, &LIMITS),
            Err(IngestError::InvalidEnvelope(_))
        ));
        assert!(matches!(
            events(br#"{"type":"qr_scan"} trailing"#, &LIMITS),
            Err(IngestError::InvalidJson(_))
        ));
        assert_eq!(
            events(br#"{"type":"page_view","url":"https://x.org/"}"#, &LIMITS).unwrap()[0]["url"],
            "https://x.org/"
        );
    }

    #[test]
    fn an_oversized_batch_is_counted_without_building_its_events() {
        let limits = BodyLimits {
            max_batch_events: 500,
            max_body_bytes: 1 << 24,
            max_decompressed_bytes: 1 << 24,
            max_json_depth: 8,
        };
        let one = br#"{"type":"page_view","url":"https://x.org/a/b/c","visitor_id":"v_12345678"}"#;
        let mut body = b"{\"batch\":[".to_vec();
        for i in 0..100_000 {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(one);
        }
        body.extend_from_slice(b"]}");
        assert!(matches!(
            events(&body, &limits),
            Err(IngestError::TooManyEvents {
                count: 100_000,
                limit: 500
            })
        ));
        let ok = events(&body[..body.len() - 2], &limits);
        assert!(matches!(ok, Err(IngestError::InvalidJson(_))), "truncated");
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
