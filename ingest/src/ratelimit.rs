//! Per-client rate limiting: a token bucket per client address, kept in
//! memory only (never produced), pruned when it grows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Entries kept before idle ones are pruned.
const PRUNE_ABOVE: usize = 100_000;

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `client`; `Err(seconds)` to wait when none is left.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(()); // a poisoned lock must not take the collector down
        };
        if buckets.len() > PRUNE_ABOVE {
            let idle = std::time::Duration::from_secs_f64(self.burst / self.per_second + 1.0);
            buckets.retain(|_, (_, t)| now.duration_since(*t) < idle);
        }
        let (tokens, last) = buckets.entry(client).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_per_client() {
        let rl = RateLimiter::new(2, 3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check(a, t0).is_ok());
        }
        assert_eq!(rl.check(a, t0), Err(1));
        assert!(rl.check(b, t0).is_ok(), "another client has its own bucket");
        assert!(
            rl.check(a, t0 + Duration::from_millis(500)).is_ok(),
            "one token back after 0.5 s at 2/s"
        );
        assert!(rl.check(a, t0 + Duration::from_millis(500)).is_err());
    }
}
