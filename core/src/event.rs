//! The event vocabulary ([`ensemble_model::event`]) and its ClickHouse row.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use ensemble_model::event::*;

/// One row of `events` in ClickHouse. Column order matches
/// `deploy/clickhouse/0001_events.sql` (RowBinary without validation on 18.16).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct EventRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    pub event_type: String,
    pub action: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub ts: DateTime<Utc>,
    pub ts_ms: u16,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub received_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub processed_at: DateTime<Utc>,
    pub visitor_id: String,
    pub channel: String,
    pub placement: String,
    pub phase: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_content: String,
    pub utm_term: String,
    pub url: String,
    pub referrer_host: String,
    pub device_class: String,
    pub os_family: String,
    pub is_bot: u8,
    pub contact_hash: String,
    pub consent_results: u8,
    pub consent_newsletter: u8,
    pub custom_name: String,
    pub props: String,
    pub ts_clamped: u8,
    pub imported: u8,
    /// A repeated scan (see `EventMessage::repeat`): kept, not counted.
    pub repeat_scan: u8,
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

impl EventRow {
    /// Builds the row of a message with what the processor worked out.
    pub fn new(msg: &EventMessage, e: Enrichment, processed_at: DateTime<Utc>) -> Self {
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        Self {
            event_id: msg.event_id,
            event_type: msg.event_type.as_str().to_owned(),
            action: msg
                .action
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
            // DateTime columns hold whole seconds; the milliseconds of the
            // event time go to ts_ms.
            ts: whole_seconds(msg.ts),
            ts_ms: u16::try_from(msg.ts.timestamp_subsec_millis()).unwrap_or(0),
            received_at: whole_seconds(msg.received_at),
            processed_at: whole_seconds(processed_at),
            visitor_id: msg.visitor_id.clone(),
            channel: e.channel,
            placement: s(&msg.placement),
            phase: e.phase,
            utm_source: s(&msg.utm.source),
            utm_medium: s(&msg.utm.medium),
            utm_campaign: s(&msg.utm.campaign),
            utm_content: s(&msg.utm.content),
            utm_term: s(&msg.utm.term),
            url: s(&msg.url),
            referrer_host: s(&msg.referrer_host),
            device_class: e.device_class,
            os_family: e.os_family,
            is_bot: u8::from(e.is_bot || msg.bot),
            contact_hash: s(&msg.contact_hash),
            consent_results: u8::from(msg.consent.is_some_and(|c| c.results)),
            consent_newsletter: u8::from(msg.consent.is_some_and(|c| c.newsletter)),
            custom_name: s(&msg.custom_name),
            props: if msg.props.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&msg.props).unwrap_or_default()
            },
            ts_clamped: u8::from(msg.ts_clamped),
            imported: u8::from(msg.imported),
            repeat_scan: u8::from(msg.repeat),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn row_carries_millis_flags_and_enrichment() {
        let ts = DateTime::parse_from_rfc3339("2025-02-14T08:30:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut m = EventMessage::new(EventType::Signup, "v_abcdefgh12345", ts);
        m.imported = true;
        m.contact_hash = Some("ab12".into());
        m.consent = Some(Consent {
            results: true,
            newsletter: true,
        });
        let row = EventRow::new(
            &m,
            Enrichment {
                channel: "tinder".into(),
                phase: "p2-saint-valentin".into(),
                ..Default::default()
            },
            Utc::now(),
        );
        assert_eq!(row.ts_ms, 123);
        assert_eq!(row.event_type, "signup");
        assert_eq!(row.channel, "tinder");
        assert_eq!(row.imported, 1);
        assert_eq!(row.consent_newsletter, 1);
        assert_eq!(row.contact_hash, "ab12");
    }
}
