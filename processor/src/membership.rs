//! Group membership watchdog: partitions of the events topic with messages
//! waiting and nobody consuming them make this member leave and rejoin its
//! group, which starts a new assignment.
//!
//! Why: a group member that dies (SIGKILL, power loss) is dropped by the
//! broker after `session.timeout.ms`, and on Apache Kafka the group then
//! rebalances by itself. The broker we run locally (tansu 0.6.0) drops the
//! member but may never start a new generation: the survivors keep their
//! old partitions and the dead member's sit unread; a member that joins
//! just as the dead leader expires can even be handed an empty assignment
//! for good (its coordinator turns an empty follower SyncGroup into the
//! group's assignment). Rejoining is plain Kafka protocol (LeaveGroup,
//! JoinGroup), so this works on any broker; on Kafka the broker's own
//! rebalance comes first and the watchdog stays quiet.
//!
//! Static membership (`group.instance.id`) was not chosen: it helps a
//! member restarted with the same id, but tansu never expires a static
//! member, so a dead one would hold its partitions forever.
//!
//! The rule, checked every few seconds: a partition not assigned to this
//! member whose committed offset is behind its end and has not moved for
//! `stall` is orphaned (a live owner commits after every batch). While
//! ClickHouse is not ready nobody can make progress, so nothing is decided.
//! After a rejoin the group gets `stall` again to settle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ensemble_core::kafka::PartitionLag;
use ensemble_core::service::Readiness;
use ensemble_core::Shutdown;

use crate::handover::EventsConsumer;
use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;

/// What the watchdog remembers of each partition it does not own.
#[derive(Debug, Default)]
pub struct Watch {
    /// partition → (committed offset, since when it has not moved).
    seen: HashMap<i32, (Option<i64>, Instant)>,
    /// No decision before this (start-up, after a rejoin).
    quiet_until: Option<Instant>,
}

impl Watch {
    /// Feeds one look at the partitions this member does not own; true
    /// when one of them has waited `stall` for a consumer.
    pub fn orphaned(&mut self, others: &[PartitionLag], now: Instant, stall: Duration) -> bool {
        let quiet = *self.quiet_until.get_or_insert(now + stall);
        self.seen
            .retain(|p, _| others.iter().any(|o| o.partition == *p));
        let mut orphaned = false;
        for p in others {
            let entry = self.seen.entry(p.partition).or_insert((p.committed, now));
            if entry.0 != p.committed || p.pending() == 0 {
                *entry = (p.committed, now);
                continue;
            }
            orphaned |= now.duration_since(entry.1) >= stall;
        }
        orphaned && now >= quiet
    }

    /// A rejoin was asked for: give the group `stall` to settle.
    pub fn rejoined(&mut self, now: Instant, stall: Duration) {
        self.quiet_until = Some(now + stall);
        self.seen.clear();
    }
}

/// The partitions of `topic` not assigned to this member, with the group's
/// committed offsets and the partitions' bounds.
fn unowned(
    c: &EventsConsumer,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<PartitionLag>> {
    let assigned = c.assignment()?;
    let md = c.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(Vec::new());
    };
    let mut tpl = TopicPartitionList::new();
    let mut out = Vec::new();
    for p in t.partitions() {
        if assigned.find_partition(topic, p.id()).is_some() {
            continue;
        }
        let (low, end) = c.fetch_watermarks(topic, p.id(), timeout)?;
        tpl.add_partition(topic, p.id());
        out.push(PartitionLag {
            partition: p.id(),
            committed: None,
            low,
            end,
        });
    }
    if out.is_empty() {
        return Ok(out);
    }
    for e in c.committed_offsets(tpl, timeout)?.elements() {
        if let Some(p) = out.iter_mut().find(|p| p.partition == e.partition()) {
            p.committed = e.offset().to_raw().filter(|o| *o >= 0);
        }
    }
    Ok(out)
}

/// Looks every `every`; sets `rejoin` when this member should leave and
/// rejoin (the consume loop does it between batches).
pub fn spawn_watchdog(
    consumer: Arc<EventsConsumer>,
    topic: String,
    readiness: Readiness,
    rejoin: Arc<AtomicBool>,
    every: Duration,
    stall: Duration,
    shutdown: Shutdown,
) {
    tokio::spawn(async move {
        let watch = Arc::new(std::sync::Mutex::new(Watch::default()));
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let store_ready = readiness.snapshot().get("clickhouse").copied() == Some(true);
            if !store_ready || rejoin.load(Ordering::Relaxed) {
                continue;
            }
            let (c, topic, watch, rejoin) = (
                consumer.clone(),
                topic.clone(),
                watch.clone(),
                rejoin.clone(),
            );
            let _ = tokio::task::spawn_blocking(move || {
                let others = match unowned(&c, &topic, Duration::from_secs(5)) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::debug!(error = %e, "membership check skipped");
                        return;
                    }
                };
                let Ok(mut w) = watch.lock() else { return };
                let now = Instant::now();
                if w.orphaned(&others, now, stall) {
                    tracing::warn!(
                        partitions = ?others.iter().filter(|p| p.pending() > 0).map(|p| p.partition).collect::<Vec<_>>(),
                        stalled_s = stall.as_secs(),
                        "partitions with waiting messages have no consumer; leaving and rejoining the group"
                    );
                    w.rejoined(now, stall);
                    rejoin.store(true, Ordering::Relaxed);
                }
            })
            .await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(partition: i32, committed: Option<i64>, end: i64) -> PartitionLag {
        PartitionLag {
            partition,
            committed,
            low: 0,
            end,
        }
    }

    #[test]
    fn a_partition_waiting_without_progress_for_the_stall_time_is_orphaned() {
        let stall = Duration::from_secs(30);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = Watch::default();
        assert!(!w.orphaned(&[lag(0, Some(10), 50)], at(0), stall));
        assert!(!w.orphaned(&[lag(0, Some(10), 50)], at(29), stall));
        assert!(
            w.orphaned(&[lag(0, Some(10), 60)], at(31), stall),
            "no progress for 30 s"
        );
        w.rejoined(at(31), stall);
        assert!(
            !w.orphaned(&[lag(0, Some(10), 60)], at(40), stall),
            "the group settles"
        );
        assert!(
            !w.orphaned(&[lag(0, Some(10), 60)], at(62), stall),
            "watched again from 31 s"
        );
        assert!(w.orphaned(&[lag(0, Some(10), 60)], at(71), stall));
    }

    #[test]
    fn progress_or_an_empty_partition_is_not_orphaned() {
        let stall = Duration::from_secs(30);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = Watch::default();
        for s in (0..120).step_by(5) {
            let committed = Some(i64::try_from(s).unwrap_or(0));
            assert!(
                !w.orphaned(&[lag(1, committed, 500)], at(s), stall),
                "committing"
            );
            assert!(
                !w.orphaned(&[lag(2, Some(500), 500)], at(s), stall),
                "caught up"
            );
        }
        let mut fresh = Watch::default();
        assert!(!fresh.orphaned(&[lag(0, None, 0)], at(0), stall));
        assert!(
            !fresh.orphaned(&[lag(0, None, 0)], at(100), stall),
            "nothing to read"
        );
        assert!(
            !fresh.orphaned(&[lag(0, None, 5)], at(101), stall),
            "new messages: watched from now"
        );
        assert!(
            fresh.orphaned(&[lag(0, None, 5)], at(131), stall),
            "and then orphaned"
        );
    }
}
