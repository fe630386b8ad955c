//! What repetition cannot buy: the collector's short memories, kept in
//! memory only (never produced), bounded, forgotten after their window.
//!
//! - [`RepeatScans`]: a scan of a placement by a client that scanned the
//!   same placement within the window is recorded but flagged `repeat`, and
//!   the figures leave it out like a bot's. The client is the rate limiter's
//!   (an IPv4 address or an IPv6 /64 behind the trusted proxies), so the
//!   figures move by at most one scan per placement, client and window.
//! - [`Adoptions`]: a visit token makes one browser the scanner. The first
//!   browser that presents it adopts it; the same token from another
//!   browser (a replayed or forwarded link) is refused and its sender stays
//!   themself.
//!
//! Each collector keeps its own memory: behind a balancer that does not
//! keep a client on one collector, a client may be counted once per
//! collector per window (see the operations docs: balance by client address).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ratelimit::ClientKey;

/// A bounded map of recent keys: entries older than `window` are forgotten;
/// when full of fresh entries, newcomers are not remembered.
#[derive(Debug)]
struct Recent<K, V> {
    window: Duration,
    capacity: usize,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq, V: Clone> Recent<K, V> {
    fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The value remembered for `key` within the window, or `None` after
    /// remembering `value` for it (when there is room).
    fn first_or_remember(&self, key: K, value: V, now: Instant) -> Option<V> {
        let Ok(mut map) = self.map.lock() else {
            return None; // a poisoned lock must not take the collector down
        };
        if let Some((at, v)) = map.get(&key) {
            if now.duration_since(*at) < self.window {
                return Some(v.clone());
            }
        }
        if map.len() >= self.capacity && !map.contains_key(&key) {
            let window = self.window;
            map.retain(|_, (at, _)| now.duration_since(*at) < window);
        }
        if map.len() < self.capacity || map.contains_key(&key) {
            map.insert(key, (now, value));
        }
        None
    }

    fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }
}

/// Scans remembered per (client, placement) for a window.
#[derive(Debug)]
pub struct RepeatScans(Recent<(ClientKey, String), ()>);

impl RepeatScans {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self(Recent::new(window, capacity))
    }

    /// Is this a repeat of a scan of `placement` by `client` within the
    /// window? The window counts from the first scan, so a client scanning
    /// without pause counts once per window.
    pub fn is_repeat(&self, client: ClientKey, placement: &str, now: Instant) -> bool {
        self.0
            .first_or_remember((client, placement.to_owned()), (), now)
            .is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which browser adopted each visit token, for as long as tokens are honoured.
#[derive(Debug)]
pub struct Adoptions(Recent<String, String>);

impl Adoptions {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self(Recent::new(window, capacity))
    }

    /// May `browser` (what identifies the sender: the tracker's own id, else
    /// its address and User-Agent) adopt `token`? Yes if it is the first to
    /// present it, or the one that did.
    pub fn adopt(&self, token: &str, browser: &str, now: Instant) -> bool {
        match self
            .0
            .first_or_remember(token.to_owned(), browser.to_owned(), now)
        {
            None => true,
            Some(first) => first == browser,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn client(s: &str) -> ClientKey {
        ClientKey::of(s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0])))
    }

    #[test]
    fn a_scan_counts_once_per_client_placement_and_window() {
        let r = RepeatScans::new(Duration::from_secs(600), 100);
        let t0 = Instant::now();
        let (a, b) = (client("192.0.2.1"), client("192.0.2.2"));
        assert!(!r.is_repeat(a, "M-CHATELET", t0));
        assert!(r.is_repeat(a, "M-CHATELET", t0 + Duration::from_secs(1)));
        assert!(!r.is_repeat(a, "G-LYON", t0), "another placement");
        assert!(!r.is_repeat(b, "M-CHATELET", t0), "another client");
        assert!(
            r.is_repeat(a, "M-CHATELET", t0 + Duration::from_secs(599)),
            "the window counts from the first scan"
        );
        assert!(!r.is_repeat(a, "M-CHATELET", t0 + Duration::from_secs(600)));
        // Two addresses of one IPv6 /64 are one client.
        assert!(!r.is_repeat(client("2001:db8::1"), "M-CHATELET", t0));
        assert!(r.is_repeat(client("2001:db8::ffff"), "M-CHATELET", t0));
    }

    #[test]
    fn memory_stays_bounded_and_forgets_what_is_old() {
        let r = RepeatScans::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(!r.is_repeat(client(&format!("192.0.2.{i}")), "P", t0));
        }
        // Full of fresh entries: a newcomer counts but is not remembered.
        assert!(!r.is_repeat(client("192.0.2.9"), "P", t0));
        assert!(!r.is_repeat(client("192.0.2.9"), "P", t0));
        assert_eq!(r.len(), 3);
        // Once the window has passed, old entries make room.
        let later = t0 + Duration::from_secs(11);
        assert!(!r.is_repeat(client("192.0.2.9"), "P", later));
        assert!(r.is_repeat(client("192.0.2.9"), "P", later));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_token_is_adopted_by_one_browser() {
        let a = Adoptions::new(Duration::from_secs(300), 100);
        let t0 = Instant::now();
        assert!(a.adopt("tok", "v_browser_a", t0));
        assert!(a.adopt("tok", "v_browser_a", t0), "its own retries");
        assert!(!a.adopt("tok", "v_browser_b", t0), "a replay elsewhere");
        assert!(a.adopt("other", "v_browser_b", t0));
    }
}
