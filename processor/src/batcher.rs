//! The batch being built: rows and the Kafka messages they came from (for
//! a dead letter if the store refuses one), their size, age, and for each
//! partition the last offset handled, to store once ClickHouse has the rows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ensemble_core::EventRow;

/// When a batch is flushed: whichever limit is reached first.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

/// The Kafka message a row came from (what a dead letter carries) and the
/// campaign the row belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Index of the row's campaign among the processor's (`CampaignDatabases`).
    pub site: usize,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Source {
    /// What the message weighs against `max_bytes`: key and payload.
    fn bytes(&self) -> usize {
        self.payload.len() + self.key.as_ref().map_or(0, Vec::len)
    }
}

/// Rows waiting for one INSERT, and the offsets they cover.
#[derive(Debug, Default)]
pub struct Batch {
    pub rows: Vec<EventRow>,
    /// The message of each row, same order.
    pub sources: Vec<Source>,
    bytes: usize,
    started: Option<Instant>,
    /// (topic, partition) → offset of the last message handled.
    offsets: BTreeMap<(String, i32), i64>,
}

impl Batch {
    /// Adds a row. The first makes room for a full batch of rows at once:
    /// grown one doubling at a time, a batch held up to twice the room it
    /// needed, and a copy of half of it while it grew (a tenth of the
    /// processor's peak memory).
    pub fn push(&mut self, row: EventRow, source: Source, limits: &BatchLimits) {
        if self.rows.capacity() == 0 {
            // Bounded: the bytes may fill a batch long before a large
            // `max_rows` does.
            let room = limits.max_rows.min(1 << 16);
            self.rows.reserve_exact(room);
            self.sources.reserve_exact(room);
        }
        self.started.get_or_insert_with(Instant::now);
        self.bytes += source.bytes();
        self.rows.push(row);
        self.sources.push(source);
    }

    /// Records that everything up to `offset` of this partition is handled
    /// (in this batch, or dead-lettered, or skipped).
    pub fn handled(&mut self, topic: &str, partition: i32, offset: i64) {
        self.started.get_or_insert_with(Instant::now);
        let slot = self
            .offsets
            .entry((topic.to_owned(), partition))
            .or_insert(offset);
        *slot = (*slot).max(offset);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.offsets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_full(&self, limits: &BatchLimits) -> bool {
        self.rows.len() >= limits.max_rows || self.bytes >= limits.max_bytes
    }

    pub fn is_due(&self, limits: &BatchLimits, now: Instant) -> bool {
        self.is_full(limits)
            || self
                .started
                .is_some_and(|s| now.duration_since(s) >= limits.max_age)
    }

    /// Time left until the age limit (the consumer waits at most this long).
    pub fn time_left(&self, limits: &BatchLimits, now: Instant) -> Duration {
        self.started.map_or(limits.max_age, |s| {
            limits.max_age.saturating_sub(now.duration_since(s))
        })
    }

    pub fn offsets(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.offsets.iter().map(|((t, p), o)| (t.as_str(), *p, *o))
    }

    /// The partitions this batch holds messages of.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, i32)> {
        self.offsets.keys().map(|(t, p)| (t.as_str(), *p))
    }

    /// Drops everything of the `revoked` partitions (they were handed to
    /// another member, which reads those messages again); returns how many
    /// rows went.
    pub fn forget(&mut self, revoked: &[(String, i32)]) -> usize {
        let gone = |topic: &str, partition: i32| {
            revoked
                .iter()
                .any(|(t, p)| *p == partition && t.as_str() == topic)
        };
        self.offsets.retain(|(t, p), _| !gone(t, *p));
        let before = self.rows.len();
        let keep: Vec<bool> = self
            .sources
            .iter()
            .map(|s| !gone(&s.topic, s.partition))
            .collect();
        let (mut rows, mut sources) = (keep.iter(), keep.iter());
        self.rows.retain(|_| *rows.next().unwrap_or(&true));
        self.sources.retain(|_| *sources.next().unwrap_or(&true));
        self.bytes = self.sources.iter().map(Source::bytes).sum();
        if self.is_empty() {
            self.started = None;
        }
        before - self.rows.len()
    }

    /// Empties the batch for reuse.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.sources.clear();
        self.bytes = 0;
        self.started = None;
        self.offsets.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_offsets() {
        let limits = BatchLimits {
            max_rows: 2,
            max_bytes: 100,
            max_age: Duration::from_secs(1),
        };
        let mut b = Batch::default();
        assert!(b.is_empty() && !b.is_due(&limits, Instant::now()));
        b.push(
            EventRow::new(&sample(), Default::default(), chrono::Utc::now()),
            source(10),
            &limits,
        );
        b.handled("t", 0, 5);
        b.handled("t", 0, 3);
        b.handled("t", 1, 9);
        assert!(!b.is_full(&limits));
        assert!(
            b.is_due(&limits, Instant::now() + Duration::from_secs(2)),
            "age"
        );
        b.push(
            EventRow::new(&sample(), Default::default(), chrono::Utc::now()),
            source(10),
            &limits,
        );
        assert!(b.is_full(&limits), "rows");
        assert_eq!(b.sources.len(), b.rows.len(), "a source per row");
        let offs: Vec<_> = b.offsets().collect();
        assert_eq!(
            offs,
            vec![("t", 0, 5), ("t", 1, 9)],
            "last offset per partition, never backwards"
        );
        b.clear();
        assert!(b.is_empty());
        let mut big = Batch::default();
        big.push(
            EventRow::new(&sample(), Default::default(), chrono::Utc::now()),
            source(150),
            &limits,
        );
        assert!(big.is_full(&limits), "bytes");
    }

    #[test]
    fn a_revoked_partition_leaves_the_batch_and_the_others_stay() {
        let limits = BatchLimits {
            max_rows: 100,
            max_bytes: 10_000,
            max_age: Duration::from_secs(1),
        };
        let mut b = Batch::default();
        for (partition, offset) in [(0, 7), (1, 3), (0, 8), (2, 5), (1, 4)] {
            let mut s = source(10 + offset as usize);
            (s.partition, s.offset) = (partition, offset);
            b.push(
                EventRow::new(&sample(), Default::default(), chrono::Utc::now()),
                s,
                &limits,
            );
            b.handled("t", partition, offset);
        }
        b.handled("t", 3, 40); // a dead letter: an offset without a row
        assert_eq!(
            b.forget(&[("t".into(), 1), ("t".into(), 3), ("u".into(), 0)]),
            2
        );
        let kept: Vec<_> = b.sources.iter().map(|s| (s.partition, s.offset)).collect();
        assert_eq!(kept, vec![(0, 7), (0, 8), (2, 5)]);
        assert_eq!(b.rows.len(), 3, "a row per source still");
        assert_eq!(
            b.offsets().collect::<Vec<_>>(),
            vec![("t", 0, 8), ("t", 2, 5)]
        );
        assert_eq!(b.partitions().collect::<Vec<_>>(), vec![("t", 0), ("t", 2)]);
        let full = BatchLimits {
            max_rows: 100,
            max_bytes: 10 + 7 + 10 + 8 + 10 + 5,
            max_age: Duration::from_secs(60),
        };
        assert!(b.is_full(&full), "the bytes of the kept rows");
        assert_eq!(b.forget(&[("t".into(), 0), ("t".into(), 2)]), 3);
        assert!(b.is_empty());
        assert!(
            !b.is_due(&full, Instant::now() + Duration::from_secs(3600)),
            "no age once empty"
        );
    }

    fn source(payload_bytes: usize) -> Source {
        Source {
            site: 0,
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: vec![b'x'; payload_bytes],
        }
    }

    fn sample() -> ensemble_core::EventMessage {
        ensemble_core::EventMessage::new(
            ensemble_core::EventType::PageView,
            "v_12345678",
            chrono::Utc::now(),
        )
    }
}
