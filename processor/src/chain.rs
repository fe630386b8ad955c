//! Two batches under way at once: while a batch's ledger INSERT runs in
//! ClickHouse, the next batch reads its visitors' history and computes its
//! accounting on the processor's cores, instead of waiting for it.
//!
//! The next batch cannot read the visitors the running INSERT changes from
//! the ledger (their rows may or may not have landed yet), so the batch
//! before hands them over as they will be once it is written
//! ([`ensemble_core::ledger::After`]), and the next batch reads only the
//! others, which that INSERT does not touch. That is exact only if the
//! batch before ends well, so the next batch writes nothing until it has:
//! if it gave up (shutdown, its partitions revoked or lost), the next one
//! gives up too, and both are read again by whoever owns the partitions.
//!
//! A batch hands nothing over (the next one then reads the ledger after it
//! ended, as before) when it spans several campaigns' databases, when
//! `events` refused some of its rows, or when its accounting had to be
//! read again after a failure.
//!
//! Each batch's writes still start only after the batch before ended, so
//! the ledger, the offsets and the figures move in batch order as before.

use std::sync::Arc;

use ensemble_core::ledger::After;
use tokio::sync::watch;

/// Where a batch's INSERT task is.
#[derive(Debug, Clone)]
enum Step {
    /// Reading its visitors' history and computing.
    Preparing,
    /// The batch before ended well; writing campaign `site`'s database,
    /// with what the next batch takes for the visitors it changes.
    Writing(usize, Arc<After>),
    /// Writing with nothing to hand over: the next batch reads the ledger
    /// once this one ended.
    Serial,
    /// Ended: all of it written (`true`), or given up.
    Done(bool),
}

/// The batch task's side: says where it is.
#[derive(Debug)]
pub struct Publisher(watch::Sender<Step>);

/// The next batch's side: waits for the batch before.
#[derive(Debug, Clone)]
pub struct Link(watch::Receiver<Step>);

/// A new batch's publisher and the link the next batch will wait on.
pub fn link() -> (Publisher, Link) {
    let (tx, rx) = watch::channel(Step::Preparing);
    (Publisher(tx), Link(rx))
}

impl Publisher {
    /// Writing `site`'s database; the visitors it changes are `after`.
    pub fn writing(&self, site: usize, after: Arc<After>) {
        self.0.send_replace(Step::Writing(site, after));
    }

    /// Writing, nothing handed over.
    pub fn serial(&self) {
        self.0.send_replace(Step::Serial);
    }

    /// Ended; `ok` when every row was written (or dead-lettered).
    pub fn done(&self, ok: bool) {
        self.0.send_replace(Step::Done(ok));
    }
}

impl Link {
    /// Waits until the batch before is writing or has ended: what it hands
    /// over when it is writing `site`'s database with something to hand
    /// over, `None` otherwise (then read the ledger after
    /// [`Link::ended_well`]).
    pub async fn after(&mut self, site: usize) -> Option<Arc<After>> {
        let step = self
            .0
            .wait_for(|s| !matches!(s, Step::Preparing))
            .await
            .ok()?;
        match &*step {
            Step::Writing(s, after) if *s == site => Some(after.clone()),
            _ => None,
        }
    }

    /// Waits until the batch before has ended; whether all of it was
    /// written. A task that died without saying (a panic) did not.
    pub async fn ended_well(&mut self) -> bool {
        match self.0.wait_for(|s| matches!(s, Step::Done(_))).await {
            Ok(step) => matches!(*step, Step::Done(true)),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_next_batch_gets_what_is_handed_over_for_its_own_database_only() {
        let (p, mut l) = link();
        p.writing(1, Arc::default());
        assert!(l.after(1).await.is_some());
        assert!(l.after(0).await.is_none());
        p.done(true);
        assert!(l.after(1).await.is_none(), "ended: read the ledger");
        assert!(l.ended_well().await);
    }

    #[tokio::test]
    async fn a_batch_given_up_or_dead_is_not_an_end_to_build_on() {
        let (p, mut l) = link();
        p.serial();
        assert!(l.after(0).await.is_none());
        p.done(false);
        assert!(!l.ended_well().await);
        let (p, mut l) = link();
        drop(p);
        assert!(l.after(0).await.is_none());
        assert!(!l.ended_well().await);
    }

    #[tokio::test]
    async fn the_next_batch_waits_for_the_one_before() {
        let (p, mut l) = link();
        let waiting = tokio::spawn(async move { l.ended_well().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        p.writing(0, Arc::default());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "writing is not ended");
        p.done(true);
        assert!(waiting.await.unwrap_or(false));
    }
}
