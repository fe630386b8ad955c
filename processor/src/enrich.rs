//! Enrichment: what the processor adds to each message — channel (placement
//! code, UTM tags, referrer host rules of the campaign file), phase (campaign
//! calendar in its time zone), device class and OS family (woothee's UA
//! parser), bot flag (collector's list or the parser's crawler class).

use ensemble_core::event::{Enrichment, EventMessage};
use ensemble_core::Campaign;

/// Device classes, as stored.
pub const DESKTOP: &str = "desktop";
pub const MOBILE: &str = "mobile";
pub const TABLET: &str = "tablet";
pub const BOT: &str = "bot";
pub const UNKNOWN: &str = "unknown";

/// User-Agents seen recently and their (device class, OS family): the same
/// few thousand strings repeat across millions of events.
const UA_CACHE_MAX: usize = 10_000;

#[derive(Default)]
pub struct Enricher {
    parser: woothee::parser::Parser,
    cache: std::sync::Mutex<std::collections::HashMap<String, (&'static str, String)>>,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enricher")
    }
}

impl Enricher {
    pub fn new() -> Self {
        Self::default()
    }

    /// (device class, OS family) of a User-Agent.
    pub fn device(&self, user_agent: Option<&str>) -> (&'static str, String) {
        let Some(ua) = user_agent.filter(|u| !u.trim().is_empty()) else {
            return (UNKNOWN, String::new());
        };
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(ua).cloned()) {
            return hit;
        }
        let parsed = self.parse(ua);
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= UA_CACHE_MAX {
                c.clear();
            }
            c.insert(ua.to_owned(), parsed.clone());
        }
        parsed
    }

    fn parse(&self, ua: &str) -> (&'static str, String) {
        let Some(r) = self.parser.parse(ua) else {
            return (UNKNOWN, String::new());
        };
        let os = if r.os == woothee::woothee::VALUE_UNKNOWN {
            String::new()
        } else {
            r.os.to_string()
        };
        let tablet = ua.contains("iPad")
            || ua.contains("Tablet")
            || (ua.contains("Android") && !ua.contains("Mobile"));
        let class = match r.category {
            "crawler" => BOT,
            "smartphone" | "mobilephone" if tablet => TABLET,
            "smartphone" | "mobilephone" => MOBILE,
            "pc" if tablet => TABLET,
            "pc" => DESKTOP,
            _ => UNKNOWN,
        };
        (class, os)
    }

    pub fn enrich(&self, campaign: &Campaign, m: &EventMessage) -> Enrichment {
        let (device_class, os_family) = self.device(m.user_agent.as_deref());
        Enrichment {
            channel: campaign
                .resolve_channel(
                    m.placement.as_deref(),
                    m.utm.source.as_deref(),
                    m.referrer_host.as_deref(),
                )
                .to_owned(),
            phase: campaign.phase_at(m.ts).to_owned(),
            device_class: device_class.to_owned(),
            os_family,
            is_bot: m.bot || device_class == BOT,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::{DateTime, Utc};
    use ensemble_core::event::EventType;

    fn campaign() -> Campaign {
        Campaign::from_toml(include_str!("../../deploy/campaign.toml")).unwrap()
    }

    fn msg(ts: &str) -> EventMessage {
        let ts = DateTime::parse_from_rfc3339(ts)
            .unwrap()
            .with_timezone(&Utc);
        let mut m = EventMessage::new(EventType::PageView, "v_12345678", ts);
        m.received_at = Utc::now();
        m
    }

    #[test]
    fn channel_table() {
        let c = campaign();
        let e = Enricher::new();
        type Case = (
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            &'static str,
        );
        let cases: &[Case] = &[
            (Some("M-CHATELET"), None, None, "metro"),
            (Some("g-national"), None, None, "gares"),
            (Some("T-VOEUX"), Some("ratp"), None, "tinder"),
            (Some("NOT-A-CODE"), None, None, "inconnu"),
            (None, Some("abribus"), None, "abribus"),
            (None, Some("Presse"), None, "presse"),
            (None, Some("mystery"), None, "inconnu"),
            (None, None, Some("www.leparisien.fr"), "presse"),
            (None, None, Some("l.facebook.com"), "social"),
            (None, None, Some("partenaire.example.net"), "display"),
            (None, None, Some("blog.example.com"), "referral"),
            (None, None, Some("vivre-ensemble.example.org"), "site"),
            (None, None, None, "site"),
        ];
        for (placement, source, host, want) in cases {
            let mut m = msg("2025-02-14T10:00:00Z");
            m.placement = placement.map(str::to_owned);
            m.utm.source = source.map(str::to_owned);
            m.referrer_host = host.map(str::to_owned);
            assert_eq!(
                e.enrich(&c, &m).channel,
                *want,
                "{placement:?} {source:?} {host:?}"
            );
        }
    }

    #[test]
    fn phase_table() {
        let c = campaign();
        let e = Enricher::new();
        for (ts, want) in [
            ("2025-01-16T22:59:59Z", "hors-phase"),
            ("2025-01-16T23:00:00Z", "p1-lancement"),
            ("2025-02-07T23:30:00Z", "p2-saint-valentin"),
            ("2025-03-01T00:00:00Z", "p3-8-mars"),
            ("2025-03-16T23:00:00Z", "hors-phase"),
        ] {
            assert_eq!(e.enrich(&c, &msg(ts)).phase, want, "{ts}");
        }
    }

    #[test]
    fn device_table() {
        let e = Enricher::new();
        let cases = [
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1", MOBILE, "iPhone"),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36", MOBILE, "Android"),
            ("Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1", TABLET, "iPad"),
            ("Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36", TABLET, "Android"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36", DESKTOP, "Windows 10"),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15", DESKTOP, "Mac OSX"),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", BOT, ""),
        ];
        for (ua, class, os) in cases {
            let (c, o) = e.device(Some(ua));
            assert_eq!(c, class, "{ua}");
            assert_eq!(o, os, "{ua}");
        }
        assert_eq!(e.device(None).0, UNKNOWN);
        assert_eq!(e.device(Some("")).0, UNKNOWN);
        let mut m = msg("2025-02-14T10:00:00Z");
        m.user_agent = Some(cases[6].0.into());
        assert!(
            e.enrich(&campaign(), &m).is_bot,
            "crawler UA is a bot even unflagged"
        );
    }
}
