//! Visitor ids: the client's first-party id when well-formed, else a
//! daily-rotating salted hash of (IP, User-Agent). The salt changes at local
//! midnight of the campaign's time zone, so a hashed visitor cannot be
//! followed across days; the raw IP never leaves this module.
//!
//! Visit tokens: the redirect hands the landing page a short-lived signed
//! token of (visitor id, placement) instead of the bare id. The collector
//! honours it only while fresh and only with a valid signature, and the
//! tracker removes it from the address bar: a landing URL shared later, or
//! copied from the bar, cannot make its opener the scanner. A query
//! parameter never chooses the id a token is signed for: the redirect signs
//! for the id of its own signed cookie (`ens_vid`, HttpOnly, on the
//! collector's origin, path `/r/`), or for a fresh one.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use ensemble_model::privacy::same_secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Clone)]
pub struct VisitorIds {
    key: Hmac<Sha256>,
    token_key: Hmac<Sha256>,
    cookie_key: Hmac<Sha256>,
    tz: Tz,
}

/// The redirect's cookie: the visitor id the collector gave this browser.
pub const COOKIE: &str = "ens_vid";
/// How long the redirect's cookie lasts: 13 months, the most the CNIL allows
/// an audience-measurement cookie.
pub const COOKIE_MAX_AGE_S: u64 = 395 * 86_400;

/// Why a visit token was not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not of the token's shape.
    Malformed,
    /// The signature does not match: made or edited by someone else.
    Forged,
    /// Older than the time a token is honoured (or from the future).
    Expired,
    /// Already adopted by another browser: a replayed or forwarded link.
    Replayed,
}

impl TokenError {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::Forged => "forged",
            TokenError::Expired => "expired",
            TokenError::Replayed => "replayed",
        }
    }
}

impl std::fmt::Debug for VisitorIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VisitorIds(<secret>)")
    }
}

impl VisitorIds {
    /// `secret` is the collector's secret (domain-separated from the contact HMAC).
    /// Built at start-up. HMAC takes keys of any length, so this cannot fail.
    pub fn new(secret: &[u8], tz: Tz) -> Self {
        #[allow(clippy::expect_used)]
        let base = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
        let mut key = base.clone();
        key.update(b"ensemble/visitor-salt/v1\n");
        let mut token_key = base.clone();
        token_key.update(b"ensemble/visit-token/v1\n");
        let mut cookie_key = base;
        cookie_key.update(b"ensemble/visitor-cookie/v1\n");
        Self {
            key,
            token_key,
            cookie_key,
            tz,
        }
    }

    fn cookie_mac(&self, vid: &str) -> String {
        let mut mac = self.cookie_key.clone();
        mac.update(vid.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The value of the redirect's cookie for `vid`: `<vid>.<signature>`.
    pub fn cookie(&self, vid: &str) -> String {
        format!("{vid}.{}", self.cookie_mac(vid))
    }

    /// The visitor id of a `Cookie:` header's `ens_vid`, if the collector signed it.
    pub fn open_cookie(&self, header: &str) -> Option<String> {
        header
            .split(';')
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .find_map(|value| {
                let (vid, mac) = value.split_once('.')?;
                (ensemble_core::event::is_valid_visitor_id(vid)
                    && same_secret(self.cookie_mac(vid).as_bytes(), mac.as_bytes()))
                .then(|| vid.to_owned())
            })
    }

    fn token_mac(&self, vid: &str, plc: &str, issued: i64) -> String {
        let mut mac = self.token_key.clone();
        mac.update(format!("{vid}\n{plc}\n{issued}").as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// `<visitor id>.<placement>.<issued, Unix s>.<signature>`: ids and codes
    /// are `[A-Za-z0-9_-]`, so `.` separates; the signature is 128 bits of
    /// HMAC under the collector's secret.
    pub fn visit_token(&self, vid: &str, plc: &str, now: DateTime<Utc>) -> String {
        let issued = now.timestamp();
        format!("{vid}.{plc}.{issued}.{}", self.token_mac(vid, plc, issued))
    }

    /// The (visitor id, placement) of a token issued at most `ttl_s` ago.
    pub fn open_visit_token(
        &self,
        token: &str,
        now: DateTime<Utc>,
        ttl_s: u64,
    ) -> Result<(String, String), TokenError> {
        let parts: Vec<&str> = token.split('.').collect();
        let [vid, plc, issued, mac] = parts[..] else {
            return Err(TokenError::Malformed);
        };
        let issued: i64 = issued.parse().map_err(|_| TokenError::Malformed)?;
        if !ensemble_core::event::is_valid_visitor_id(vid)
            || !ensemble_model::campaign::is_placement_code(plc)
        {
            return Err(TokenError::Malformed);
        }
        if !same_secret(self.token_mac(vid, plc, issued).as_bytes(), mac.as_bytes()) {
            return Err(TokenError::Forged);
        }
        let age = now.timestamp() - issued;
        // A little slack for clocks of several collectors behind one balancer.
        if age > i64::try_from(ttl_s).unwrap_or(i64::MAX) || age < -30 {
            return Err(TokenError::Expired);
        }
        Ok((vid.to_owned(), plc.to_owned()))
    }

    /// `h_` + 30 hex digits of HMAC(secret, day ‖ ip ‖ ua), the day read in
    /// the campaign's zone: the day is the rotating salt.
    pub fn derive(&self, ip: IpAddr, user_agent: &str, now: DateTime<Utc>) -> String {
        let day = now.with_timezone(&self.tz).date_naive();
        let mut mac = self.key.clone();
        mac.update(day.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(ip.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(user_agent.as_bytes());
        let digest = hex::encode(mac.finalize().into_bytes());
        format!(
            "{}{}",
            ensemble_core::event::HASHED_VISITOR_PREFIX,
            &digest[..30]
        )
    }

    /// A fresh random first-party id (`v_` + 32 hex digits), as the redirect hands out.
    pub fn fresh() -> String {
        format!("v_{}", uuid::Uuid::new_v4().simple())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ensemble_core::event::is_valid_visitor_id;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn same_day_same_id_rotates_at_paris_midnight() {
        let v = VisitorIds::new(b"0123456789abcdef0123", chrono_tz::Europe::Paris);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let a = v.derive(ip, "UA", at("2025-02-07T08:00:00Z"));
        assert!(is_valid_visitor_id(&a), "{a}");
        assert!(!a.contains("203"));
        assert_eq!(a, v.derive(ip, "UA", at("2025-02-07T22:59:59Z")));
        // 23:00 UTC is midnight in Paris: a new salt.
        assert_ne!(a, v.derive(ip, "UA", at("2025-02-07T23:00:00Z")));
        assert_ne!(a, v.derive(ip, "Other UA", at("2025-02-07T08:00:00Z")));
        assert_ne!(
            a,
            v.derive(
                "203.0.113.8".parse().unwrap(),
                "UA",
                at("2025-02-07T08:00:00Z")
            )
        );
        let other_secret = VisitorIds::new(b"another-secret-xyz-123", chrono_tz::Europe::Paris);
        assert_ne!(a, other_secret.derive(ip, "UA", at("2025-02-07T08:00:00Z")));
        assert!(is_valid_visitor_id(&VisitorIds::fresh()));
    }

    #[test]
    fn visit_tokens_are_honoured_fresh_and_signed_only() {
        let v = VisitorIds::new(b"0123456789abcdef0123", chrono_tz::Europe::Paris);
        let t0 = at("2025-02-07T08:00:00Z");
        let vid = "v_0123456789abcdef0123456789abcdef";
        let token = v.visit_token(vid, "M-CHATELET", t0);
        assert!(token.starts_with(&format!("{vid}.M-CHATELET.")), "{token}");
        let ok = Ok((vid.to_owned(), "M-CHATELET".to_owned()));
        assert_eq!(v.open_visit_token(&token, t0, 300), ok);
        assert_eq!(
            v.open_visit_token(&token, t0 + chrono::Duration::seconds(300), 300),
            ok
        );
        assert_eq!(
            v.open_visit_token(&token, t0 + chrono::Duration::minutes(15), 300),
            Err(TokenError::Expired),
            "the same link opened 15 minutes later"
        );
        let other = VisitorIds::new(b"another-secret-xyz-123", chrono_tz::Europe::Paris);
        assert_eq!(
            other.open_visit_token(&token, t0, 300),
            Err(TokenError::Forged)
        );
        // Someone else's id, or a later time, with the scanner's signature.
        let edited = token.replacen("v_0123", "v_9999", 1);
        assert_eq!(
            v.open_visit_token(&edited, t0, 300),
            Err(TokenError::Forged)
        );
        let issued = t0.timestamp();
        let later = token.replace(&issued.to_string(), &(issued + 3600).to_string());
        assert_eq!(
            v.open_visit_token(&later, t0 + chrono::Duration::minutes(30), 300),
            Err(TokenError::Forged)
        );
        for bad in [
            "",
            "a.b",
            "v_x.M.1.2.3",
            "bad id.M-CHATELET.1.ab",
            &format!("{vid}.M-CHATELET.soon.ab"),
        ] {
            assert_eq!(
                v.open_visit_token(bad, t0, 300),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_a_cookie_the_collector_signed_names_a_visitor() {
        let v = VisitorIds::new(b"0123456789abcdef0123", chrono_tz::Europe::Paris);
        let vid = "v_0123456789abcdef0123456789abcdef";
        let cookie = v.cookie(vid);
        assert_eq!(
            v.open_cookie(&format!("a=b; {COOKIE}={cookie}")),
            Some(vid.to_owned())
        );
        assert_eq!(
            v.open_cookie(&format!("{COOKIE}=v_victim0000000000.00")),
            None
        );
        assert_eq!(v.open_cookie(&format!("{COOKIE}=v_victim0000000000")), None);
        let other = VisitorIds::new(b"another-secret-0123456", chrono_tz::Europe::Paris);
        assert_eq!(other.open_cookie(&format!("{COOKIE}={cookie}")), None);
        assert_eq!(v.open_cookie("x_ens_vid=abc"), None);
    }
}
