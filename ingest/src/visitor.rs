//! Visitor ids: the client's first-party id when well-formed, else a
//! daily-rotating salted hash of (IP, User-Agent). The salt changes at local
//! midnight of the campaign's time zone, so a hashed visitor cannot be
//! followed across days; the raw IP never leaves this module.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Clone)]
pub struct VisitorIds {
    key: Hmac<Sha256>,
    tz: Tz,
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
        let mut key = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
        key.update(b"ensemble/visitor-salt/v1\n");
        Self { key, tz }
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
        format!("h_{}", &digest[..30])
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
}
