//! Handing partitions over at a rebalance, so that two members never
//! account the same messages at once.
//!
//! The figures drop duplicates by reading a visitor's accounted events
//! before writing the new ones (`ensemble_core::ledger::account`). That is
//! exact when one member at a time writes a visitor — and a visitor's
//! events are all in one partition. It is not when the member losing a
//! partition still writes a batch of it while the member gaining it reads
//! the same messages again from the committed offset: both read the ledger
//! before either wrote, and both count the batch (seen in CI: 300 events,
//! one batch, counted twice when a second processor joined).
//!
//! So, when partitions are revoked (this member's rebalance callback, run
//! by librdkafka before the member rejoins, while the group waits for it):
//!
//! 1. the INSERTs under way (two at most, `crate::chain`) are waited for —
//!    told to give up if they are only retrying a failing store — and
//!    their offsets are stored and committed: the next owner starts after
//!    them;
//! 2. the consume loop drops what the batch it was filling holds of the
//!    revoked partitions (nothing of it is written yet; those messages are
//!    read again from the committed offset, by whoever owns them next).
//!
//! This relies on the eager rebalance protocol, which the processor sets:
//! every partition is revoked and each restarts from its committed offset.
//!
//! A member that lost its assignment without a rebalance callback (its
//! session expired, or it did not poll for `max.poll.interval.ms` while an
//! INSERT was retried) no longer writes figures: each INSERT checks
//! `assignment_lost` before its ledger step and abandons the batch.

use std::collections::VecDeque;
use std::sync::Mutex;

use ensemble_core::Shutdown;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

use crate::batcher::Batch;
use crate::chain::Link;
use crate::metrics::Metrics;

/// The events consumer, with the rebalance callback of this module.
pub type EventsConsumer = rdkafka::consumer::StreamConsumer<Handover>;

/// An INSERT under way: its task, which gives its batch back — `Ok` once
/// ClickHouse took it, `Err` if it gave up (nothing counted) — the token
/// that makes it stop retrying, and what the next batch waits on
/// (`crate::chain`).
#[derive(Debug)]
pub struct Inflight {
    pub task: tokio::task::JoinHandle<Result<Batch, Batch>>,
    pub give_up: Shutdown,
    pub link: Link,
}

/// Batches under way at most: one writing, the next one reading and
/// computing (`crate::chain`).
pub const MAX_INFLIGHT: usize = 2;

/// What the consume loop and its rebalance callback share.
#[derive(Debug)]
pub struct Handover {
    /// The INSERTs under way, oldest first.
    inflight: Mutex<VecDeque<Inflight>>,
    /// (topic, partition) revoked since the loop last looked.
    revoked: Mutex<Vec<(String, i32)>>,
    metrics: Metrics,
}

impl Handover {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            inflight: Mutex::default(),
            revoked: Mutex::default(),
            metrics,
        }
    }

    /// Records the INSERT just started (after those under way).
    pub fn put(&self, inflight: Inflight) {
        if let Ok(mut slot) = self.inflight.lock() {
            slot.push_back(inflight);
        }
    }

    /// Takes the oldest INSERT under way, if any.
    pub fn take(&self) -> Option<Inflight> {
        self.inflight
            .lock()
            .ok()
            .and_then(|mut slot| slot.pop_front())
    }

    /// Takes the oldest INSERT under way if there are `n` or more.
    pub fn take_if_at_least(&self, n: usize) -> Option<Inflight> {
        self.inflight
            .lock()
            .ok()
            .and_then(|mut slot| (slot.len() >= n).then(|| slot.pop_front()).flatten())
    }

    /// Whether an INSERT is under way.
    pub fn busy(&self) -> bool {
        self.inflight.lock().is_ok_and(|slot| !slot.is_empty())
    }

    /// Whether the oldest INSERT under way has ended.
    pub fn finished(&self) -> bool {
        self.inflight
            .lock()
            .is_ok_and(|slot| slot.front().is_some_and(|i| i.task.is_finished()))
    }

    /// What the next batch waits on: the newest INSERT under way's link.
    pub fn newest(&self) -> Option<Link> {
        self.inflight
            .lock()
            .ok()
            .and_then(|slot| slot.back().map(|i| i.link.clone()))
    }

    /// The partitions taken from this member since the last call: what the
    /// batch being filled holds of them is dropped.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        self.revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Waits for the INSERTs under way, stores their offsets, and commits
    /// every offset stored (an asynchronous commit may still be on its way).
    fn hand_over(&self, consumer: &BaseConsumer<Self>) {
        let mut waited = false;
        while self.wait_for_insert(consumer) {
            waited = true;
        }
        let insert = if waited { "waited" } else { "none" };
        self.metrics.revokes.with_label_values(&[insert]).inc();
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::info!(error = %e, "nothing committed before handing partitions over; the next owner starts at the last commit (duplicates are removed)");
        }
    }

    /// Waits for the oldest INSERT under way (the newer ones told to give
    /// up too); whether there was one to wait for. A batch that gave up
    /// makes the one after it give up (`crate::chain`), so the offsets
    /// stored here never skip a batch.
    fn wait_for_insert(&self, consumer: &BaseConsumer<Self>) -> bool {
        let Some(inflight) = self.take() else {
            return false;
        };
        // Off the async worker: the INSERT task may need this thread's queue.
        let waited = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                inflight.give_up.trigger();
                if let Ok(slot) = self.inflight.lock() {
                    slot.iter().for_each(|i| i.give_up.trigger());
                }
                tokio::task::block_in_place(|| h.block_on(inflight.task))
            }
            _ => {
                tracing::error!("partitions revoked outside a multi-threaded runtime; the INSERTs under way are not waited for");
                if let Ok(mut slot) = self.inflight.lock() {
                    slot.push_front(inflight);
                }
                return false;
            }
        };
        match waited {
            Ok(Ok(batch)) => {
                for (topic, partition, offset) in batch.offsets() {
                    if let Err(e) = consumer.store_offset(topic, partition, offset) {
                        tracing::warn!(error = %e, topic, partition, "offset not stored before handing the partition over");
                    }
                }
            }
            Ok(Err(_)) => {
                tracing::info!(
                    "the INSERT under way gave up; the next owner reads its messages again"
                )
            }
            Err(e) => tracing::error!(error = %e, "insert task failed"),
        }
        true
    }
}

impl ClientContext for Handover {}

impl ConsumerContext for Handover {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            tracing::info!(
                partitions = partitions.count(),
                lost = consumer.assignment_lost(),
                "partitions revoked: finishing the INSERT under way before rejoining"
            );
            self.hand_over(consumer);
            if let Ok(mut revoked) = self.revoked.lock() {
                revoked.extend(
                    partitions
                        .elements()
                        .iter()
                        .map(|e| (e.topic().to_owned(), e.partition())),
                );
            }
        }
    }
}
