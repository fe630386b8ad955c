//! Admission of expensive questions. A question the pre-summed figures
//! answer (the campaign's whole range, any phase / channel / bots filter)
//! costs milliseconds and is always let in. One they do not cover — a
//! custom `from`/`to`, a `device` or `placement` filter, `source=events` —
//! recounts raw events: seconds at campaign scale, on the same ClickHouse
//! the processor writes to. Those are let in a few at a time: at most
//! `per_analyst` at once per analyst token, 1 per agency token, and `total`
//! for everyone; past that the answer is 429 with `Retry-After`.
//!
//! Agency tokens may recount (the agency asks per placement) but not audit
//! the figures with `source=events`: that compares the two answer paths and
//! is the team's tool.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many expensive questions may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeavyLimits {
    pub per_analyst: usize,
    pub per_agency: usize,
    pub total: usize,
}

/// Why an expensive question was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This token already has its share running.
    TokenBusy,
    /// Every slot of the dashboard is taken.
    AllBusy,
}

/// The slots; one semaphore per configured token (tokens are fixed at
/// start-up, so the table never grows).
/// Clones share their slots.
#[derive(Debug, Clone)]
pub struct Gate {
    limits: HeavyLimits,
    total: Arc<Semaphore>,
    per_token: HashMap<usize, Arc<Semaphore>>,
}

/// Held while an expensive question runs.
#[derive(Debug)]
pub struct Admitted {
    _token: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl Gate {
    /// `tokens`: each configured token's index and its slots (what its
    /// role gets of `limits`: `per_analyst` or `per_agency`).
    pub fn new(limits: HeavyLimits, tokens: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let per_token = tokens
            .into_iter()
            .map(|(i, n)| (i, Arc::new(Semaphore::new(n))))
            .collect();
        Self {
            limits,
            total: Arc::new(Semaphore::new(limits.total)),
            per_token,
        }
    }

    /// A slot for token `token`, or why not.
    pub fn admit(&self, token: usize) -> Result<Admitted, Refusal> {
        let mine = self.per_token.get(&token).ok_or(Refusal::TokenBusy)?;
        let token_permit = mine
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::TokenBusy)?;
        let total_permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::AllBusy)?;
        Ok(Admitted {
            _token: token_permit,
            _total: total_permit,
        })
    }

    pub fn limits(&self) -> HeavyLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_get_their_share_and_everyone_the_total() {
        let gate = Gate::new(
            HeavyLimits {
                per_analyst: 2,
                per_agency: 1,
                total: 3,
            },
            [(0, 2), (1, 1), (2, 1)],
        );
        let a1 = gate.admit(0).unwrap();
        let _a2 = gate.admit(0).unwrap();
        assert!(matches!(gate.admit(0), Err(Refusal::TokenBusy)));
        let g1 = gate.admit(1).unwrap();
        assert!(
            matches!(gate.admit(1), Err(Refusal::TokenBusy)),
            "agency: one at a time"
        );
        assert!(
            matches!(gate.admit(2), Err(Refusal::AllBusy)),
            "the total is reached"
        );
        drop(g1);
        let _g2 = gate.admit(2).unwrap();
        drop(a1);
        assert!(
            gate.admit(0).is_ok(),
            "a slot comes back when its question ends"
        );
        assert!(gate.admit(9).is_err(), "an unknown token has no slot");
    }
}
