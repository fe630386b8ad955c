//! Per-client rate limiting: a token bucket per client, counting events (a
//! 500-event batch takes 500 tokens), kept in memory only (never produced).
//!
//! A client is an IPv4 address or an IPv6 /64 (one subscriber's network: a
//! host picks any address in it). The table holds at most `max_clients`
//! buckets: idle ones (full again) are pruned when it fills, and while a
//! flood of distinct addresses keeps it full, the newcomers share one
//! overflow bucket — memory stays bounded and the flood is limited as one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Who a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(u32::from(v4)),
                None => ClientKey::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
struct Table {
    buckets: HashMap<ClientKey, Bucket>,
    /// Shared by newcomers while `buckets` is full.
    overflow: Option<Bucket>,
    last_prune: Option<Instant>,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    max_clients: usize,
    table: Mutex<Table>,
}

impl RateLimiter {
    /// `per_second` events sustained and `burst` at once per client; at
    /// most `max_clients` clients tracked.
    pub fn new(per_second: u32, burst: u32, max_clients: usize) -> Self {
        Self::with_rate(f64::from(per_second.max(1)), burst, max_clients)
    }

    /// `per_minute` sustained and `burst` at once per client (slow limits:
    /// failed authentications).
    pub fn per_minute(per_minute: u32, burst: u32, max_clients: usize) -> Self {
        Self::with_rate(f64::from(per_minute.max(1)) / 60.0, burst, max_clients)
    }

    fn with_rate(per_second: f64, burst: u32, max_clients: usize) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
            max_clients: max_clients.max(1),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                overflow: None,
                last_prune: None,
            }),
        }
    }

    /// Clients tracked now (for tests and the gauge).
    pub fn clients(&self) -> usize {
        self.table.lock().map_or(0, |t| t.buckets.len())
    }

    /// A bucket left alone this long is full again: forgetting it changes nothing.
    fn idle(&self) -> Duration {
        Duration::from_secs_f64(self.burst / self.per_second)
    }

    /// The bucket `client` is counted in, made (and room made for it) if
    /// `create`; while the table stays full, the shared overflow bucket.
    fn bucket<'a>(
        &self,
        t: &'a mut Table,
        client: IpAddr,
        now: Instant,
        create: bool,
    ) -> Option<&'a mut Bucket> {
        let key = ClientKey::of(client);
        if create && !t.buckets.contains_key(&key) && t.buckets.len() >= self.max_clients {
            // Full: prune idle buckets, at most once a second (a scan of the table).
            if t.last_prune
                .is_none_or(|p| now.duration_since(p) >= Duration::from_secs(1))
            {
                let idle = self.idle();
                t.buckets.retain(|_, b| now.duration_since(b.last) < idle);
                t.last_prune = Some(now);
            }
        }
        let fresh = Bucket {
            tokens: self.burst,
            last: now,
        };
        let b = if t.buckets.contains_key(&key) || t.buckets.len() < self.max_clients {
            if create {
                Some(t.buckets.entry(key).or_insert(fresh))
            } else {
                t.buckets.get_mut(&key)
            }
        } else if create {
            Some(t.overflow.get_or_insert(fresh))
        } else {
            t.overflow.as_mut()
        }?;
        // Refill for the time since the bucket was last seen.
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * self.per_second).min(self.burst);
        b.last = now;
        Some(b)
    }

    /// Is there at least one token for `client`? Takes none: a cheap check
    /// before reading a request's body. `Err(seconds)` to wait.
    pub fn peek(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let Ok(mut t) = self.table.lock() else {
            return Ok(()); // a poisoned lock must not take the collector down
        };
        match self.bucket(&mut t, client, now, false) {
            Some(b) => self.verdict(b.tokens, 1.0),
            None => Ok(()),
        }
    }

    fn verdict(&self, tokens: f64, cost: f64) -> Result<(), u64> {
        if tokens >= cost {
            Ok(())
        } else {
            Err(((cost - tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }

    /// Takes `events` tokens for `client` (at most the burst: a request the
    /// collector accepts can always pass eventually); `Err(seconds)` to wait
    /// when there are not enough, and then none are taken.
    pub fn check(&self, client: IpAddr, events: usize, now: Instant) -> Result<(), u64> {
        let Ok(mut t) = self.table.lock() else {
            return Ok(());
        };
        let cost = (events.max(1) as f64).min(self.burst);
        let Some(b) = self.bucket(&mut t, client, now, true) else {
            return Ok(());
        };
        let tokens = b.tokens;
        self.verdict(tokens, cost)?;
        b.tokens -= cost;
        Ok(())
    }

    /// Takes up to `n` tokens for `client` whatever is left (never below
    /// none): what a refused or malformed request costs after the fact.
    pub fn spend(&self, client: IpAddr, n: usize, now: Instant) {
        let Ok(mut t) = self.table.lock() else {
            return;
        };
        if let Some(b) = self.bucket(&mut t, client, now, true) {
            b.tokens = (b.tokens - n as f64).max(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_refill_per_client() {
        let rl = RateLimiter::new(2, 3, 100);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check(a, 1, t0).is_ok());
        }
        assert_eq!(rl.check(a, 1, t0), Err(1));
        assert_eq!(rl.peek(a, t0), Err(1));
        assert!(
            rl.check(b, 1, t0).is_ok(),
            "another client has its own bucket"
        );
        assert!(
            rl.check(a, 1, t0 + Duration::from_millis(500)).is_ok(),
            "one token back after 0.5 s at 2/s"
        );
        assert!(rl.check(a, 1, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn spending_empties_the_bucket_and_slow_limits_refill_per_minute() {
        let rl = RateLimiter::new(1, 10, 100);
        let a = ip("10.0.0.3");
        let t0 = Instant::now();
        rl.spend(a, 7, t0);
        assert!(rl.check(a, 3, t0).is_ok());
        rl.spend(a, 5, t0);
        assert_eq!(rl.peek(a, t0), Err(1), "never below none, and refused");
        let slow = RateLimiter::per_minute(6, 2, 100);
        assert!(slow.check(a, 2, t0).is_ok());
        assert_eq!(slow.check(a, 1, t0), Err(10), "6 a minute: one every 10 s");
        assert!(slow.check(a, 1, t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn a_batch_costs_one_token_per_event() {
        let rl = RateLimiter::new(100, 500, 100);
        let a = ip("192.0.2.7");
        let t0 = Instant::now();
        assert!(
            rl.check(a, 500, t0).is_ok(),
            "a full batch within the burst"
        );
        assert_eq!(rl.check(a, 1, t0), Err(1), "nothing left after 500 events");
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            rl.check(a, 500, later),
            Err(3),
            "200 tokens back after 2 s: 300 more take 3 s"
        );
        assert!(
            rl.check(a, 200, later).is_ok(),
            "a refused batch takes nothing"
        );
        assert!(
            rl.check(ip("192.0.2.8"), 10_000, t0).is_ok(),
            "a cost above the burst is charged as the burst (it can pass)"
        );
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let rl = RateLimiter::new(1, 2, 100);
        let t0 = Instant::now();
        assert!(rl.check(ip("2001:db8:1:2::1"), 1, t0).is_ok());
        assert!(rl.check(ip("2001:db8:1:2:ffff::99"), 1, t0).is_ok());
        assert!(
            rl.check(ip("2001:db8:1:2:dead:beef::7"), 1, t0).is_err(),
            "the same /64 shares one bucket"
        );
        assert!(
            rl.check(ip("2001:db8:1:3::1"), 1, t0).is_ok(),
            "another /64"
        );
        assert_eq!(
            ClientKey::of(ip("::ffff:192.0.2.1")),
            ClientKey::of(ip("192.0.2.1")),
            "IPv4-mapped addresses are IPv4 clients"
        );
    }

    #[test]
    fn a_flood_of_distinct_addresses_keeps_the_table_bounded() {
        let rl = RateLimiter::new(1, 5, 1000);
        let t0 = Instant::now();
        for i in 0..50_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = rl.check(a, 1, t0 + Duration::from_micros(u64::from(i)));
        }
        assert!(rl.clients() <= 1000, "{} buckets", rl.clients());
        // The newcomers share the overflow bucket: 5 went through, the rest waits.
        let fresh = IpAddr::from(std::net::Ipv4Addr::new(172, 16, 0, 1));
        assert!(rl.check(fresh, 1, t0 + Duration::from_millis(60)).is_err());
        // Once the flood's buckets are idle (full again: 5 s at 1/s), they are pruned.
        let later = t0 + Duration::from_secs(10);
        assert!(rl.check(fresh, 1, later).is_ok());
        assert!(rl.clients() <= 3, "{} buckets after pruning", rl.clients());
    }
}
