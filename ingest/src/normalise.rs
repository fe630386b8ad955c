//! From a validated event to the Kafka message: event id, server time and
//! clamping, visitor id, contact hash (the raw e-mail stops here), bot flag,
//! and personal data typed into free text replaced by markers
//! (`ensemble_model::redact`).

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use ensemble_core::event::{EventMessage, RejectReason, Rejection, ValidEvent, SCHEMA_VERSION};
use ensemble_model::privacy::ContactHasher;
use ensemble_model::redact::{is_personal_id, redact_message, Field};
use uuid::Uuid;

use crate::guard::Adoptions;
use crate::visitor::{TokenError, VisitorIds};

/// Where an event came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `/v1/events`: client time kept unless skewed, then clamped and flagged.
    RealTime,
    /// `/r/{code}`, `/p.gif`: server time always.
    ServerTime,
    /// `/v1/import`: `ts` and `visitor_id` required and kept as given; marked imported.
    Import,
}

/// What the request tells about its sender.
#[derive(Debug, Clone)]
pub struct Context {
    pub now: DateTime<Utc>,
    pub client_ip: IpAddr,
    pub user_agent: Option<String>,
    /// The bot verdict on `user_agent`, worked out once per request.
    pub user_agent_is_bot: bool,
    pub mode: Mode,
}

pub struct Normaliser {
    hasher: ContactHasher,
    visitors: VisitorIds,
    adoptions: Adoptions,
    bots: isbot::Bots,
    max_future: Duration,
    max_past: Duration,
    visit_token_ttl_s: u64,
}

/// A message ready for Kafka, and what normalising it did.
#[derive(Debug)]
pub struct Normalised {
    pub message: EventMessage,
    /// Fields where personal data was replaced by a marker.
    pub redacted: Vec<Field>,
    /// What became of the event's visit token, if it had one: honoured
    /// (the message is the token's visitor's) or why not.
    pub token: Option<Result<(), TokenError>>,
}

impl std::fmt::Debug for Normaliser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Normaliser").finish_non_exhaustive()
    }
}

impl Normaliser {
    pub fn new(
        hasher: ContactHasher,
        visitors: VisitorIds,
        max_future_s: u64,
        max_past_s: u64,
        visit_token_ttl_s: u64,
    ) -> Self {
        // A token is remembered as long as it is honoured, and a little
        // longer for the clocks of several collectors.
        let adoptions = Adoptions::new(
            std::time::Duration::from_secs(visit_token_ttl_s + 60),
            100_000,
        );
        Self {
            hasher,
            visitors,
            adoptions,
            bots: isbot::Bots::default(),
            max_future: Duration::seconds(i64::try_from(max_future_s).unwrap_or(i64::MAX / 1000)),
            max_past: Duration::seconds(i64::try_from(max_past_s).unwrap_or(i64::MAX / 1000)),
            visit_token_ttl_s,
        }
    }

    /// The token the redirect puts in the landing URL (see [`VisitorIds::visit_token`]).
    pub fn visit_token(&self, vid: &str, plc: &str, now: DateTime<Utc>) -> String {
        self.visitors.visit_token(vid, plc, now)
    }

    /// The visitor id of the redirect's cookie, if the collector signed it.
    pub fn open_cookie(&self, header: &str) -> Option<String> {
        self.visitors.open_cookie(header)
    }

    /// The redirect's cookie value for `vid`.
    pub fn cookie(&self, vid: &str) -> String {
        self.visitors.cookie(vid)
    }

    pub fn is_bot(&self, user_agent: Option<&str>) -> bool {
        user_agent.is_some_and(|ua| self.bots.is_bot(ua))
    }

    /// The context of one request; the bot list (a large regex) is asked once here.
    pub fn context(
        &self,
        now: DateTime<Utc>,
        client_ip: IpAddr,
        user_agent: Option<String>,
        mode: Mode,
    ) -> Context {
        Context {
            now,
            client_ip,
            user_agent_is_bot: self.is_bot(user_agent.as_deref()),
            user_agent,
            mode,
        }
    }

    /// The Kafka message of a valid event.
    pub fn normalise(&self, e: ValidEvent, ctx: &Context) -> Result<Normalised, Rejection> {
        let (ts, ts_clamped) = match (ctx.mode, e.ts) {
            (Mode::Import, Some(ts)) => {
                // History is taken as given, within what the store can hold.
                ensemble_core::event::check_event_time(ts, ctx.now + self.max_future)?;
                (ts, false)
            }
            (Mode::Import, None) => {
                return Err(Rejection::new(
                    RejectReason::MissingField,
                    "ts",
                    "imported events keep their own time: `ts` is required",
                ))
            }
            (Mode::ServerTime, _) | (Mode::RealTime, None) => (ctx.now, false),
            (Mode::RealTime, Some(ts)) => {
                if ts > ctx.now + self.max_future || ts < ctx.now - self.max_past {
                    (ctx.now, true)
                } else {
                    (ts, false)
                }
            }
        };
        // Real-time: the browser's own User-Agent header; import: the one recorded.
        let user_agent = match ctx.mode {
            Mode::Import => e.user_agent.clone(),
            _ => ctx.user_agent.clone().or(e.user_agent.clone()),
        };
        // A fresh, genuine visit token makes the event its visitor's (the
        // scan that led here); anything else leaves the event to the
        // client's own id. Imports carry history, not tokens.
        let opened = e
            .visit_token
            .as_deref()
            .filter(|_| ctx.mode != Mode::Import)
            .map(|t| {
                let opened = self
                    .visitors
                    .open_visit_token(t, ctx.now, self.visit_token_ttl_s)?;
                // The first browser to present the token adopts it: its own
                // id (the tracker's), else its address and User-Agent.
                let browser = e
                    .visitor_id
                    .clone()
                    .filter(|v| !is_personal_id(v))
                    .unwrap_or_else(|| {
                        self.visitors.derive(
                            ctx.client_ip,
                            user_agent.as_deref().unwrap_or(""),
                            ctx.now,
                        )
                    });
                if self.adoptions.adopt(t, &browser, std::time::Instant::now()) {
                    Ok(opened)
                } else {
                    Err(TokenError::Replayed)
                }
            });
        let (token_visitor, token_placement) = match &opened {
            Some(Ok((vid, plc))) => (Some(vid.clone()), Some(plc.clone())),
            _ => (None, None),
        };
        let visitor_id = match (token_visitor.or(e.visitor_id), ctx.mode) {
            // A phone number or an e-mail where a pseudonymous id belongs:
            // never stored; live events get the derived id instead.
            (Some(v), Mode::Import) if is_personal_id(&v) => return Err(Rejection::new(
                RejectReason::InvalidValue,
                "visitor_id",
                "looks like a phone number, e-mail or IP address: visitor ids must be pseudonymous",
            )),
            (Some(v), _) if !is_personal_id(&v) => v,
            (Some(_), _) => {
                self.visitors
                    .derive(ctx.client_ip, user_agent.as_deref().unwrap_or(""), ctx.now)
            }
            (None, Mode::Import) => {
                return Err(Rejection::new(
                    RejectReason::MissingField,
                    "visitor_id",
                    "imported events need a well-formed visitor_id (8-64 of [A-Za-z0-9_-])",
                ))
            }
            (None, _) => {
                self.visitors
                    .derive(ctx.client_ip, user_agent.as_deref().unwrap_or(""), ctx.now)
            }
        };
        let mut m = EventMessage {
            v: SCHEMA_VERSION,
            event_id: e.event_id.unwrap_or_else(Uuid::new_v4),
            event_type: e.event_type,
            ts,
            received_at: ctx.now,
            ts_clamped,
            imported: ctx.mode == Mode::Import,
            visitor_id,
            placement: e.placement.or(token_placement),
            utm: e.utm,
            url: e.url,
            referrer_host: e.referrer_host,
            bot: if user_agent == ctx.user_agent {
                ctx.user_agent_is_bot
            } else {
                self.is_bot(user_agent.as_deref())
            },
            user_agent,
            repeat: false,
            action: e.action,
            contact_hash: e.email.as_deref().map(|m| self.hasher.contact_hash(m)),
            consent: e.consent,
            custom_name: e.custom_name,
            props: e.props,
        };
        let redacted = redact_message(&mut m);
        Ok(Normalised {
            message: m,
            redacted,
            token: opened.map(|o| o.map(|_| ())),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ensemble_core::event::validate;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef-test";

    fn norm() -> Normaliser {
        Normaliser::new(
            ContactHasher::new(SECRET).unwrap(),
            VisitorIds::new(SECRET, chrono_tz::Europe::Paris),
            300,
            86_400,
            300,
        )
    }

    fn ctx(mode: Mode) -> Context {
        ctx_with(
            mode,
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
        )
    }

    fn ctx_with(mode: Mode, ua: &str) -> Context {
        norm().context(
            DateTime::parse_from_rfc3339("2025-02-14T12:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            "198.51.100.23".parse().unwrap(),
            Some(ua.into()),
            mode,
        )
    }

    fn run(v: serde_json::Value, mode: Mode) -> Result<EventMessage, Rejection> {
        norm()
            .normalise(validate(&v).unwrap(), &ctx(mode))
            .map(|n| n.message)
    }

    #[test]
    fn skewed_real_time_events_are_clamped_and_flagged() {
        let m = run(
            json!({"type":"page_view","ts":"2025-02-14T11:59:00Z"}),
            Mode::RealTime,
        )
        .unwrap();
        assert_eq!(m.ts.to_rfc3339(), "2025-02-14T11:59:00+00:00");
        assert!(!m.ts_clamped);
        for skewed in ["2025-02-14T12:10:00Z", "2025-01-01T00:00:00Z"] {
            let m = run(json!({"type":"page_view","ts": skewed}), Mode::RealTime).unwrap();
            assert_eq!(m.ts, ctx(Mode::RealTime).now, "{skewed}");
            assert!(m.ts_clamped);
        }
        let m = run(
            json!({"type":"page_view","ts":"2025-01-01T00:00:00Z"}),
            Mode::ServerTime,
        )
        .unwrap();
        assert_eq!(m.ts, ctx(Mode::RealTime).now);
        assert!(!m.ts_clamped);
    }

    #[test]
    fn import_keeps_time_and_needs_visitor() {
        let m = run(
            json!({"type":"qr_scan","ts":"2025-01-20T08:00:00Z","visitor_id":"v_12345678"}),
            Mode::Import,
        )
        .unwrap();
        assert_eq!(m.ts.to_rfc3339(), "2025-01-20T08:00:00+00:00");
        assert!(m.imported && !m.ts_clamped);
        for (ts, hint) in [
            ("1960-05-01T00:00:00Z", "before 2000-01-01"),
            ("2150-01-01T00:00:00Z", "in the future"),
            ("2025-02-14T12:30:00Z", "in the future"),
        ] {
            let r = run(
                json!({"type":"qr_scan","ts": ts,"visitor_id":"v_12345678"}),
                Mode::Import,
            )
            .unwrap_err();
            assert_eq!(
                (r.reason, r.field.as_deref()),
                (RejectReason::InvalidValue, Some("ts")),
                "{ts}"
            );
            assert!(r.message.contains(hint), "{ts}: {}", r.message);
        }
        let r = run(
            json!({"type":"qr_scan","visitor_id":"v_12345678"}),
            Mode::Import,
        )
        .unwrap_err();
        assert_eq!(
            (r.reason, r.field.as_deref()),
            (RejectReason::MissingField, Some("ts"))
        );
        let r = run(
            json!({"type":"qr_scan","ts":"2025-01-20T08:00:00Z"}),
            Mode::Import,
        )
        .unwrap_err();
        assert_eq!(r.field.as_deref(), Some("visitor_id"));
    }

    #[test]
    fn signup_message_has_the_hash_and_no_trace_of_the_contact() {
        let m = run(
            json!({"type":"signup","email":"Jeanne.Dupont@example.fr","phone":"+33612345678",
                   "consents":{"results":true,"newsletter":true}}),
            Mode::RealTime,
        )
        .unwrap();
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(m.contact_hash.as_ref().is_some_and(|h| h.len() == 64));
        for needle in [
            "jeanne",
            "Jeanne",
            "example.fr",
            "612345678",
            "198.51.100.23",
        ] {
            assert!(!text.contains(needle), "{needle} leaked into {text}");
        }
        assert!(
            m.visitor_id.starts_with("h_"),
            "derived from IP and UA: {}",
            m.visitor_id
        );
    }

    #[test]
    fn personal_data_in_free_text_and_ids_never_leaves() {
        let Normalised {
            message: m,
            redacted: mut hits,
            ..
        } = norm()
            .normalise(
                validate(&json!({"type":"custom","name":"share","visitor_id":"0612345678",
                    "url":"https://user:secret@x.org/merci/jeanne@exemple.fr?utm_term=jeanne@exemple.fr&utm_content=%2B33%206%2012%2034%2056%2078",
                    "props":{"note":"contact me jeanne@exemple.fr","tel":"+33 6 12 34 56 78"}}))
                .unwrap(),
                &ctx(Mode::RealTime),
            )
            .unwrap();
        hits.sort();
        assert_eq!(
            hits,
            vec![
                Field::Url,
                Field::UtmContent,
                Field::UtmTerm,
                Field::PropValue,
                Field::PropValue
            ]
        );
        let text = String::from_utf8(m.encode()).unwrap();
        for needle in ["jeanne", "612345678", "6 12 34", "secret", "user:"] {
            assert!(!text.contains(needle), "{needle} in {text}");
        }
        assert!(
            m.visitor_id.starts_with("h_"),
            "a phone as visitor id is replaced: {}",
            m.visitor_id
        );
        let r = run(
            json!({"type":"qr_scan","ts":"2025-01-20T08:00:00Z","visitor_id":"jeanne@exemple.fr"}),
            Mode::Import,
        )
        .unwrap_err();
        assert_eq!(
            r.field.as_deref(),
            Some("visitor_id"),
            "not a well-formed id: treated as absent, and import requires one"
        );
        let r = run(
            json!({"type":"qr_scan","ts":"2025-01-20T08:00:00Z","visitor_id":"0612345678"}),
            Mode::Import,
        )
        .unwrap_err();
        assert_eq!(
            (r.reason, r.field.as_deref()),
            (RejectReason::InvalidValue, Some("visitor_id"))
        );
    }

    #[test]
    fn a_fresh_visit_token_makes_the_event_the_scanners_and_nothing_else_does() {
        let n = norm();
        let c = ctx(Mode::RealTime);
        let scanner = "v_5c4nn3r5c4nn3r5c4nn3r";
        let token = n.visit_token(scanner, "M-CHATELET", c.now - chrono::Duration::seconds(20));
        let landing = |token: &str, c: &Context| {
            n.normalise(
                validate(&json!({"type":"page_view","visitor_id":"v_my0wnbr0ws3r1d","visit_token": token}))
                    .unwrap(),
                c,
            )
            .unwrap()
        };
        let fresh = landing(&token, &c);
        assert_eq!(fresh.token, Some(Ok(())));
        assert_eq!(fresh.message.visitor_id, scanner);
        assert_eq!(fresh.message.placement.as_deref(), Some("M-CHATELET"));
        let mut later = c.clone();
        later.now = c.now + chrono::Duration::minutes(15);
        let stale = landing(&token, &later);
        assert_eq!(stale.token, Some(Err(TokenError::Expired)));
        assert_eq!(
            stale.message.visitor_id, "v_my0wnbr0ws3r1d",
            "the opener's own id"
        );
        assert_eq!(
            stale.message.placement, None,
            "and no poster of someone else's"
        );
        let forged = landing(&token.replace(scanner, "v_s0m30n33ls3xx"), &c);
        assert_eq!(forged.token, Some(Err(TokenError::Forged)));
        assert_eq!(forged.message.visitor_id, "v_my0wnbr0ws3r1d");
        // The same fresh token from another browser: a replay, not the scanner.
        let again = landing(&token, &c);
        assert_eq!(
            again.token,
            Some(Ok(())),
            "its adopter's retries are honoured"
        );
        let elsewhere = n
            .normalise(
                validate(&json!({"type":"page_view","visitor_id":"v_an0th3rbr0ws3r","visit_token": token}))
                    .unwrap(),
                &c,
            )
            .unwrap();
        assert_eq!(elsewhere.token, Some(Err(TokenError::Replayed)));
        assert_eq!(elsewhere.message.visitor_id, "v_an0th3rbr0ws3r");
        assert_eq!(elsewhere.message.placement, None);
    }

    #[test]
    fn bots_are_flagged_not_dropped() {
        let c = ctx_with(
            Mode::RealTime,
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        );
        let m = norm()
            .normalise(validate(&json!({"type":"page_view"})).unwrap(), &c)
            .unwrap()
            .message;
        assert!(m.bot);
        assert!(
            !run(json!({"type":"page_view"}), Mode::RealTime)
                .unwrap()
                .bot
        );
    }
}
