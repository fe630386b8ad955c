//! Event model: the wire format clients send (validated field by field, in
//! `event/wire.rs`, into [`ValidEvent`] with a machine-readable [`Rejection`] per failure), the
//! Kafka message ([`EventMessage`], JSON with a schema version) and the
//! ClickHouse row ([`EventRow`]).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version written in every Kafka message (`"v"`); a reader refuses others.
pub const SCHEMA_VERSION: u8 = 1;

pub const MAX_ID_LEN: usize = 64;
pub const MAX_URL_LEN: usize = 2048;
pub const MAX_UTM_LEN: usize = 256;
pub const MAX_USER_AGENT_LEN: usize = 512;
pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_PHONE_LEN: usize = 32;
pub const MAX_PROPS: usize = 32;
pub const MAX_PROP_VALUE_LEN: usize = 256;
/// A visit token: visitor id, placement code, time and signature.
pub const MAX_VISIT_TOKEN_LEN: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    QrScan,
    PageView,
    TinderCard,
    Signup,
    Custom,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::QrScan,
        EventType::PageView,
        EventType::TinderCard,
        EventType::Signup,
        EventType::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::QrScan => "qr_scan",
            EventType::PageView => "page_view",
            EventType::TinderCard => "tinder_card",
            EventType::Signup => "signup",
            EventType::Custom => "custom",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a person did with a dating-app card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TinderAction {
    Impression,
    Like,
    Pass,
    Click,
}

impl TinderAction {
    pub const ALL: [TinderAction; 4] = [
        TinderAction::Impression,
        TinderAction::Like,
        TinderAction::Pass,
        TinderAction::Click,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TinderAction::Impression => "impression",
            TinderAction::Like => "like",
            TinderAction::Pass => "pass",
            TinderAction::Click => "click",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Machine-readable reason an event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The event is not a JSON object.
    NotAnObject,
    /// A required field is absent (or null).
    MissingField,
    /// A field has the wrong JSON type.
    InvalidType,
    /// A field has the right type but a malformed value.
    InvalidValue,
    /// `type` is not one of the known event types.
    UnknownEventType,
    /// A field that this event type does not take.
    UnknownField,
    /// A string longer than its limit.
    FieldTooLong,
    /// More custom properties than allowed.
    TooManyProperties,
    /// Free text the campaign file does not declare (a custom event, a
    /// property, or a property's value).
    Undeclared,
}

impl RejectReason {
    /// The code as it appears in answers and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidType => "invalid_type",
            RejectReason::InvalidValue => "invalid_value",
            RejectReason::UnknownEventType => "unknown_event_type",
            RejectReason::UnknownField => "unknown_field",
            RejectReason::FieldTooLong => "field_too_long",
            RejectReason::TooManyProperties => "too_many_properties",
            RejectReason::Undeclared => "undeclared",
        }
    }
}

/// One refused event: reason code, the field at fault, and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub reason: RejectReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, field: &str, message: impl Into<String>) -> Self {
        Self {
            reason,
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {} ({})", self.reason.as_str(), field, self.message),
            None => write!(f, "{}: {}", self.reason.as_str(), self.message),
        }
    }
}

/// UTM tags of a visit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Utm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
}

impl Utm {
    pub fn is_empty(&self) -> bool {
        *self == Utm::default()
    }
}

/// Consent flags given with a sign-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// Agrees to receive the survey results (the reason to sign up).
    pub results: bool,
    /// Agrees to receive the association's newsletter.
    pub newsletter: bool,
}

/// An event that passed validation. It still holds the normalised e-mail of a
/// sign-up: it must go through [`crate::privacy::ContactHasher`] into an
/// [`EventMessage`], which has no field that could carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    pub event_id: Option<Uuid>,
    pub event_type: EventType,
    /// Client-side event time, if given.
    pub ts: Option<DateTime<Utc>>,
    /// The client's visitor id, if given and well-formed.
    pub visitor_id: Option<String>,
    /// A visit token from the redirect (the landing page passes it on):
    /// the collector decides whether it stands for a visitor.
    pub visit_token: Option<String>,
    pub placement: Option<String>,
    pub utm: Utm,
    /// Page URL reduced to scheme, host, path and its `utm_*` query tags.
    pub url: Option<String>,
    /// Host of the referrer; the rest of the referrer URL is dropped.
    pub referrer_host: Option<String>,
    pub user_agent: Option<String>,
    pub action: Option<TinderAction>,
    /// Normalised (trimmed, lower-cased) e-mail of a sign-up.
    pub email: Option<String>,
    pub consent: Option<Consent>,
    pub custom_name: Option<String>,
    pub props: BTreeMap<String, String>,
}

/// The Kafka message (topic `events.v1`, key = visitor id). JSON; `v` is
/// [`SCHEMA_VERSION`]. Contains no raw e-mail, phone number or IP address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMessage {
    pub v: u8,
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Event time (clamped to `received_at` on real-time endpoints when skewed).
    pub ts: DateTime<Utc>,
    /// Server time at the collector.
    pub received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ts_clamped: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imported: bool,
    pub visitor_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    #[serde(default, skip_serializing_if = "Utm::is_empty")]
    pub utm: Utm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Set by the collector from its bot list; the processor may refine it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bot: bool,
    /// Set by the redirect: the same client scanned the same placement
    /// within the collector's window. Stored, left out of the figures like a bot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<TinderAction>,
    /// HMAC-SHA256 (hex) of the normalised e-mail, sign-ups only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub props: BTreeMap<String, String>,
}

/// Why a Kafka payload could not be read back as an [`EventMessage`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is not a JSON event message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported schema version {0} (this build reads {SCHEMA_VERSION})")]
    Version(u8),
}

impl DecodeError {
    /// Short code for dead-letter headers and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Json(_) => "undecodable",
            DecodeError::Version(_) => "unsupported_version",
        }
    }
}

impl EventMessage {
    /// A message of `event_type` for `visitor_id` at `ts` (received then
    /// too), with a fresh event id and every optional field empty.
    pub fn new(event_type: EventType, visitor_id: impl Into<String>, ts: DateTime<Utc>) -> Self {
        Self {
            v: SCHEMA_VERSION,
            event_id: Uuid::new_v4(),
            event_type,
            ts,
            received_at: ts,
            ts_clamped: false,
            imported: false,
            visitor_id: visitor_id.into(),
            placement: None,
            utm: Utm::default(),
            url: None,
            referrer_host: None,
            user_agent: None,
            bot: false,
            repeat: false,
            action: None,
            contact_hash: None,
            consent: None,
            custom_name: None,
            props: BTreeMap::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of strings, numbers and maps with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Versioned {
            v: u8,
        }
        let Versioned { v } = serde_json::from_slice(bytes)?;
        if v != SCHEMA_VERSION {
            return Err(DecodeError::Version(v));
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// The oldest event time the pipeline takes, imports of history included.
/// ClickHouse's `DateTime` holds 1970-01-01 to 2106-02-07; this margin also
/// keeps a careless backfill (`1960`, `0025`) from spreading one batch over
/// hundreds of monthly partitions.
pub const EARLIEST_EVENT_SECS: i64 = 946_684_800; // 2000-01-01T00:00:00Z

/// The latest instant a `DateTime` column can hold (2106-02-07T06:28:15Z).
pub const LATEST_STORABLE_SECS: i64 = u32::MAX as i64;

/// How far ahead of its receipt an event time may be. Live endpoints clamp
/// at `--max-future-skew-s` (5 min); this is the store's own bound, for
/// messages from any collector.
pub const MAX_AHEAD_OF_RECEIPT_SECS: i64 = 86_400;

fn rfc3339(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0).map_or_else(|| secs.to_string(), |t| t.to_rfc3339())
}

/// Checks that an event time lies in `[2000-01-01, latest]`: the window
/// every endpoint and the store accept. `latest` is the receipt time plus
/// the allowed skew.
pub fn check_event_time(ts: DateTime<Utc>, latest: DateTime<Utc>) -> Result<(), Rejection> {
    if ts.timestamp() < EARLIEST_EVENT_SECS {
        return Err(Rejection::new(
            RejectReason::InvalidValue,
            "ts",
            format!(
                "{} is before {}: events older than that are not taken (check the year)",
                ts.to_rfc3339(),
                rfc3339(EARLIEST_EVENT_SECS)
            ),
        ));
    }
    if ts > latest {
        return Err(Rejection::new(
            RejectReason::InvalidValue,
            "ts",
            format!(
                "{} is in the future (latest accepted: {}): check the year and the time zone offset",
                ts.to_rfc3339(),
                latest.to_rfc3339()
            ),
        ));
    }
    Ok(())
}

/// Checks that a message can become an `events` row: its times fit the
/// store's columns and the window above. The processor dead-letters a
/// message that fails, whichever collector produced it.
pub fn check_storable(m: &EventMessage) -> Result<(), Rejection> {
    let received = m.received_at.timestamp();
    if !(EARLIEST_EVENT_SECS..=LATEST_STORABLE_SECS - MAX_AHEAD_OF_RECEIPT_SECS).contains(&received)
    {
        return Err(Rejection::new(
            RejectReason::InvalidValue,
            "received_at",
            format!(
                "{} is outside what the store holds ({} to {})",
                m.received_at.to_rfc3339(),
                rfc3339(EARLIEST_EVENT_SECS),
                rfc3339(LATEST_STORABLE_SECS - MAX_AHEAD_OF_RECEIPT_SECS)
            ),
        ));
    }
    check_event_time(
        m.ts,
        m.received_at + chrono::Duration::seconds(MAX_AHEAD_OF_RECEIPT_SECS),
    )
}

/// Checks a decoded message once more: a message that does not hold
/// together, or that the store cannot hold (a time outside the window of
/// [`check_storable`]), goes to the dead-letter topic
/// rather than into the tables, whichever collector produced it (the
/// processor runs it on every message). Returns the reason code (a metric
/// label) and a sentence for the dead letter.
pub fn recheck(m: &EventMessage) -> Result<(), (&'static str, String)> {
    let refuse = |code: &'static str| Err((code, format!("message fails re-check: {code}")));
    if !is_valid_visitor_id(&m.visitor_id) {
        return refuse("invalid_visitor_id");
    }
    match m.event_type {
        EventType::TinderCard if m.action.is_none() => return refuse("tinder_card_without_action"),
        EventType::Signup
            if m.contact_hash
                .as_deref()
                .is_none_or(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit())) =>
        {
            return refuse("signup_without_contact_hash")
        }
        EventType::Custom if m.custom_name.is_none() => return refuse("custom_without_name"),
        _ => {}
    }
    check_storable(m).map_err(|r| ("out_of_range", r.to_string()))
}

/// What starts a visitor id the collector derived from (day, address,
/// User-Agent) for a client without a first-party id: everyone behind one
/// network with the same browser shares it that day.
pub const HASHED_VISITOR_PREFIX: &str = "h_";

/// A visitor id the collector derived ([`HASHED_VISITOR_PREFIX`]), not one
/// a browser kept: erasure never treats it as one person's.
pub fn is_hashed_visitor(id: &str) -> bool {
    id.starts_with(HASHED_VISITOR_PREFIX)
}

/// Well-formed visitor id: 8–64 of `[A-Za-z0-9_-]`.
pub fn is_valid_visitor_id(s: &str) -> bool {
    (8..=MAX_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

mod wire;
pub use wire::{fold_email, normalise_email, validate};

/// What the processor adds to a message before it becomes a row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enrichment {
    pub channel: String,
    pub phase: String,
    pub device_class: String,
    pub os_family: String,
    pub is_bot: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{json, Map, Value};

    fn reject(v: Value) -> (RejectReason, Option<String>) {
        let r = validate(&v).unwrap_err();
        (r.reason, r.field)
    }

    fn f(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn minimal_events_of_each_type_validate() {
        let e = validate(&json!({"type": "qr_scan", "placement": "M-CHATELET"})).unwrap();
        assert_eq!(e.event_type, EventType::QrScan);
        assert_eq!(e.placement, f("M-CHATELET"));
        let e = validate(&json!({"type": "tinder_card", "action": "like"})).unwrap();
        assert_eq!(e.action, Some(TinderAction::Like));
        let e = validate(
            &json!({"type": "custom", "name": "video_play", "props": {"pct": 50, "ok": true}}),
        )
        .unwrap();
        assert_eq!(e.props["pct"], "50");
        assert_eq!(e.props["ok"], "true");
        let e = validate(&json!({
            "type": "signup", "email": "  Jeanne.Dupont@Example.FR ", "phone": "+33 6 12 34 56 78",
            "consents": {"results": true, "newsletter": false}
        }))
        .unwrap();
        assert_eq!(e.email, f("jeanne.dupont@example.fr"));
        assert_eq!(
            e.consent,
            Some(Consent {
                results: true,
                newsletter: false
            })
        );
    }

    #[test]
    fn page_view_keeps_only_utm_query_and_referrer_host() {
        let e = validate(&json!({
            "type": "page_view",
            "event_id": "9b2f3c1e-8f0a-4d52-9d8e-3a1c2b4d5e6f",
            "ts": "2025-02-14T09:30:00+01:00",
            "visitor_id": "v_abcdefgh12345",
            "url": "https://vivre-ensemble.example.org/barometre?utm_source=tinder&email=a%40b.fr&utm_content=t-voeux#top",
            "referrer": "https://www.facebook.com/some/path?id=12345"
        }))
        .unwrap();
        assert_eq!(
            e.url.as_deref(),
            Some("https://vivre-ensemble.example.org/barometre?utm_source=tinder&utm_content=t-voeux")
        );
        assert_eq!(e.utm.source, f("tinder"));
        assert_eq!(e.utm.content, f("t-voeux"));
        assert_eq!(e.referrer_host, f("www.facebook.com"));
        assert_eq!(e.ts.unwrap().to_rfc3339(), "2025-02-14T08:30:00+00:00");
        assert_eq!(e.visitor_id, f("v_abcdefgh12345"));
    }

    #[test]
    fn explicit_utm_fields_win_over_url_tags() {
        let e = validate(&json!({
            "type": "page_view", "utm_source": "presse",
            "url": "https://vivre-ensemble.example.org/?utm_source=tinder&utm_medium=carte"
        }))
        .unwrap();
        assert_eq!(e.utm.source, f("presse"));
        assert_eq!(e.utm.medium, f("carte"));
    }

    #[test]
    fn malformed_visitor_id_is_dropped_for_the_collector_to_derive() {
        let e = validate(&json!({"type": "page_view", "visitor_id": "short"})).unwrap();
        assert_eq!(e.visitor_id, None);
        let e = validate(&json!({"type": "page_view", "visitor_id": "has spaces in it"})).unwrap();
        assert_eq!(e.visitor_id, None);
    }

    #[test]
    fn each_failure_has_its_reason_and_field() {
        use RejectReason::*;
        assert_eq!(reject(json!([1])), (NotAnObject, None));
        assert_eq!(reject(json!({})), (MissingField, f("type")));
        assert_eq!(reject(json!({"type": null})), (MissingField, f("type")));
        assert_eq!(reject(json!({"type": 3})), (InvalidType, f("type")));
        assert_eq!(
            reject(json!({"type": "purchase"})),
            (UnknownEventType, f("type"))
        );
        assert_eq!(
            reject(json!({"type": "qr_scan", "colour": "red"})),
            (UnknownField, f("colour"))
        );
        assert_eq!(
            reject(json!({"type": "page_view", "action": "like"})),
            (UnknownField, f("action"))
        );
        assert_eq!(
            reject(json!({"type": "page_view", "email": "a@b.fr"})),
            (UnknownField, f("email"))
        );
        assert_eq!(
            reject(json!({"type": "qr_scan", "event_id": "123"})),
            (InvalidValue, f("event_id"))
        );
        assert_eq!(
            reject(json!({"type": "qr_scan", "ts": "yesterday"})),
            (InvalidValue, f("ts"))
        );
        assert_eq!(
            reject(json!({"type": "qr_scan", "ts": "2025-01-20T10:00:00"})),
            (InvalidValue, f("ts"))
        );
        assert_eq!(
            reject(json!({"type": "qr_scan", "placement": "a b"})),
            (InvalidValue, f("placement"))
        );
        assert_eq!(
            reject(json!({"type": "page_view", "url": "javascript:alert(1)"})),
            (InvalidValue, f("url"))
        );
        assert_eq!(
            reject(json!({"type": "page_view", "referrer": "nope"})),
            (InvalidValue, f("referrer"))
        );
        assert_eq!(
            reject(
                json!({"type": "page_view", "url": format!("https://x.org/{}", "a".repeat(3000))})
            ),
            (FieldTooLong, f("url"))
        );
        assert_eq!(
            reject(json!({"type": "page_view", "utm_source": "s".repeat(300)})),
            (FieldTooLong, f("utm_source"))
        );
        assert_eq!(
            reject(json!({"type": "tinder_card"})),
            (MissingField, f("action"))
        );
        assert_eq!(
            reject(json!({"type": "tinder_card", "action": "superlike"})),
            (InvalidValue, f("action"))
        );
        assert_eq!(
            reject(json!({"type": "signup", "consents": {"results": true}})),
            (MissingField, f("email"))
        );
        assert_eq!(
            reject(
                json!({"type": "signup", "email": "not-an-email", "consents": {"results": true}})
            ),
            (InvalidValue, f("email"))
        );
        assert_eq!(
            reject(json!({"type": "signup", "email": "a@b.fr"})),
            (MissingField, f("consents"))
        );
        assert_eq!(
            reject(json!({"type": "signup", "email": "a@b.fr", "consents": {"newsletter": true}})),
            (MissingField, f("consents.results"))
        );
        assert_eq!(
            reject(json!({"type": "signup", "email": "a@b.fr", "consents": {"results": "yes"}})),
            (InvalidType, f("consents.results"))
        );
        assert_eq!(reject(json!({"type": "custom"})), (MissingField, f("name")));
        assert_eq!(
            reject(json!({"type": "custom", "name": "x", "props": {"a": {"b": 1}}})),
            (InvalidType, f("props.a"))
        );
        let many: Map<String, Value> = (0..40).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(
            reject(json!({"type": "custom", "name": "x", "props": many})),
            (TooManyProperties, f("props"))
        );
    }

    #[test]
    fn event_times_outside_the_window_are_refused_with_a_reason() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let now = t("2025-02-14T12:00:00Z");
        assert!(check_event_time(t("2000-01-01T00:00:00Z"), now).is_ok());
        assert!(check_event_time(now, now).is_ok());
        for bad in [
            "1960-05-01T00:00:00Z",
            "1999-12-31T23:59:59Z",
            "2025-02-14T12:00:01Z",
            "2150-01-01T00:00:00Z",
        ] {
            let r = check_event_time(t(bad), now).unwrap_err();
            assert_eq!(
                (r.reason, r.field.as_deref()),
                (RejectReason::InvalidValue, Some("ts")),
                "{bad}"
            );
            assert!(r.message.contains(&t(bad).to_rfc3339()), "{}", r.message);
        }

        let mut m = sample_message();
        assert!(check_storable(&m).is_ok());
        m.ts = t("1960-05-01T00:00:00Z");
        assert_eq!(check_storable(&m).unwrap_err().field.as_deref(), Some("ts"));
        m.ts = m.received_at + chrono::Duration::hours(25);
        assert_eq!(check_storable(&m).unwrap_err().field.as_deref(), Some("ts"));
        m.ts = m.received_at + chrono::Duration::hours(23);
        assert!(
            check_storable(&m).is_ok(),
            "a day of skew is the store's bound"
        );
        m.received_at = t("2106-02-07T00:00:00Z");
        m.ts = m.received_at;
        assert_eq!(
            check_storable(&m).unwrap_err().field.as_deref(),
            Some("received_at"),
            "a DateTime column cannot hold it with the skew allowed"
        );
        m.received_at = t("1969-12-31T00:00:00Z");
        assert_eq!(
            check_storable(&m).unwrap_err().field.as_deref(),
            Some("received_at")
        );
    }

    #[test]
    fn rejection_serialises_machine_readable() {
        let r = validate(&json!({"type": "qr_scan", "ts": 5})).unwrap_err();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["reason"], "invalid_type");
        assert_eq!(v["field"], "ts");
        assert!(v["message"].as_str().unwrap().contains("string"));
    }

    #[test]
    fn a_long_tag_is_redacted_before_it_is_cut() {
        let long = format!("{}jeanne.dupont@exemple.fr", "x".repeat(240));
        let e = validate(&json!({"type": "page_view",
            "url": format!("https://x.org/?utm_content={long}")}))
        .unwrap();
        let content = e.utm.content.unwrap();
        assert!(content.chars().count() <= MAX_UTM_LEN);
        assert!(!content.contains("jeanne"), "{content}");
        assert!(
            content.ends_with("redacted-email") || !content.contains('@'),
            "{content}"
        );
    }

    fn sample_message() -> EventMessage {
        EventMessage {
            v: SCHEMA_VERSION,
            event_id: Uuid::new_v4(),
            event_type: EventType::Signup,
            ts: DateTime::parse_from_rfc3339("2025-02-14T08:30:00.123Z")
                .unwrap()
                .with_timezone(&Utc),
            received_at: Utc::now(),
            ts_clamped: false,
            imported: true,
            visitor_id: "v_abcdefgh12345".into(),
            placement: f("T-VOEUX"),
            utm: Utm {
                source: f("tinder"),
                ..Utm::default()
            },
            url: None,
            referrer_host: None,
            user_agent: f("Mozilla/5.0"),
            bot: false,
            repeat: false,
            action: None,
            contact_hash: f("ab12"),
            consent: Some(Consent {
                results: true,
                newsletter: true,
            }),
            custom_name: None,
            props: BTreeMap::new(),
        }
    }

    #[test]
    fn recheck_refuses_incoherent_and_unstorable_messages() {
        let code = |m: &EventMessage| recheck(m).map_err(|(c, _)| c);
        let ts = DateTime::parse_from_rfc3339("2025-02-14T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut m = EventMessage::new(EventType::PageView, "v_12345678", ts);
        m.received_at = m.ts;
        assert_eq!(code(&m), Ok(()));
        m.event_type = EventType::Signup;
        assert_eq!(code(&m), Err("signup_without_contact_hash"));
        m.contact_hash = Some("z".repeat(64));
        assert_eq!(code(&m), Err("signup_without_contact_hash"), "not hex");
        m.contact_hash = Some("ab".repeat(32));
        assert_eq!(code(&m), Ok(()));
        m.event_type = EventType::TinderCard;
        assert_eq!(code(&m), Err("tinder_card_without_action"));
        m.event_type = EventType::PageView;
        m.visitor_id = "bad id".into();
        assert_eq!(code(&m), Err("invalid_visitor_id"));
        m.visitor_id = "v_12345678".into();
        for ts in ["1960-05-01T00:00:00Z", "2150-01-01T00:00:00Z"] {
            m.ts = DateTime::parse_from_rfc3339(ts)
                .unwrap()
                .with_timezone(&Utc);
            let (c, detail) = recheck(&m).unwrap_err();
            assert_eq!(c, "out_of_range", "{ts}");
            assert!(detail.contains("ts"), "{detail}");
        }
    }

    #[test]
    fn message_round_trips_with_schema_version() {
        let m = sample_message();
        let bytes = m.encode();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("{\"v\":1,"), "{text}");
        assert_eq!(EventMessage::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn decode_refuses_other_versions_and_garbage() {
        let mut v: Value = serde_json::from_slice(&sample_message().encode()).unwrap();
        v["v"] = json!(2);
        let err = EventMessage::decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(err.code(), "unsupported_version");
        assert_eq!(
            EventMessage::decode(b"\x00\x01garbage").unwrap_err().code(),
            "undecodable"
        );
        assert_eq!(
            EventMessage::decode(b"{\"v\":1}").unwrap_err().code(),
            "undecodable"
        );
    }
}
