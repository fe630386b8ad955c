//! Visitors' histories kept between batches, so that a batch reads from
//! the ledger only the visitors this process has not seen lately.
//!
//! The history read searches the whole ledger for a batch's visitors: at
//! 10 M events, 18 000 visitors among 1.95 M took 0.64–0.78 s
//! (`docs/processor.md`), ten times what the same read costs at 300 000.
//! A visitor's events all come through one Kafka partition, owned by one
//! member at a time, and every batch already knows its visitors' whole
//! history once it is written (the ledger's rows and its own): kept here,
//! the next batch of the same visitor reads nothing.
//!
//! An entry is exactly what [`super::read_written`] would return, so it is
//! only ever put by a batch whose ledger INSERT ended well on its first
//! attempt, with the history it computed from (the batch before's, this
//! cache's, or the ledger's), and the cache is emptied whenever that may no
//! longer hold:
//!
//! - the member's partitions were revoked or lost, or it rejoined its
//!   group (another member may have written its visitors meanwhile);
//! - a batch was given up, its ledger INSERT had to be tried again (it may
//!   have landed or not), or `events` refused some of its rows;
//! - another process rewrote visitors' ledger: erasure, retention and
//!   rebuilds note themselves in `ledger_rewrites` before and after, and
//!   every batch looks at that table first ([`Histories::check_rewrites`]).
//!
//! Each emptying bumps an epoch; a batch that took its histories before
//! it puts nothing back.
//!
//! Bounded by events: entries go into a young map; when it holds half the
//! capacity it becomes the old map (the previous old map is dropped), so
//! the visitors seen least lately go first. Each event is kept in 72 bytes
//! (its strings interned), not the ~230 of an [`Event`].

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use ensemble_model::figures::{Event, Text};

/// A visitor's accounted events, each with its ledger row's `written_ms`.
pub type History = Vec<(u64, Event)>;

/// One event as the cache keeps it: its strings as indices into the
/// cache's table of strings.
#[derive(Debug, Clone, Copy)]
struct Kept {
    event_id: Uuid,
    ms: u64,
    written_ms: u64,
    /// type, action, channel, placement, phase, device, os, contact.
    texts: [u32; 8],
    bot: bool,
}

#[derive(Debug, Default)]
struct Inner {
    epoch: u64,
    young: HashMap<Box<str>, Vec<Kept>>,
    old: HashMap<Box<str>, Vec<Kept>>,
    young_events: usize,
    old_events: usize,
    strings: Vec<Text>,
    index: HashMap<Text, u32>,
    /// `ledger_rewrites` as last seen: rows and latest `at_ms`.
    rewrites: Option<(u64, u64)>,
    /// Every visitor the ledger may hold (`None`: not built since the
    /// last emptying).
    known: Option<Known>,
    /// The visitors put while `known` is being built (`Some` then).
    put_while_building: Option<Vec<Box<str>>>,
}

impl Inner {
    fn clear(&mut self) {
        let epoch = self.epoch + 1;
        let rewrites = self.rewrites;
        *self = Inner {
            epoch,
            rewrites,
            ..Inner::default()
        };
    }

    fn intern(&mut self, t: &Text) -> u32 {
        if let Some(&i) = self.index.get(t) {
            return i;
        }
        let i = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        self.strings.push(t.clone());
        self.index.insert(t.clone(), i);
        i
    }

    fn keep(&mut self, written_ms: u64, e: &Event) -> Kept {
        Kept {
            event_id: e.event_id,
            ms: e.ms,
            written_ms,
            texts: [
                self.intern(&e.event_type),
                self.intern(&e.action),
                self.intern(&e.channel),
                self.intern(&e.placement),
                self.intern(&e.phase),
                self.intern(&e.device),
                self.intern(&e.os),
                self.intern(&e.contact),
            ],
            bot: e.bot,
        }
    }

    fn event(&self, k: &Kept) -> (u64, Event) {
        let s = |i: usize| self.strings[k.texts[i] as usize].clone();
        (
            k.written_ms,
            Event {
                event_id: k.event_id,
                ms: k.ms,
                event_type: s(0),
                action: s(1),
                channel: s(2),
                placement: s(3),
                phase: s(4),
                device: s(5),
                os: s(6),
                bot: k.bot,
                contact: s(7),
            },
        )
    }
}

/// The histories of one database's visitors, as its ledger holds them
/// (see the module's documentation).
#[derive(Debug)]
pub struct Histories {
    inner: Mutex<Inner>,
    /// Events kept at most; 0 keeps nothing.
    capacity: usize,
}

/// What [`Histories::take`] found.
#[derive(Debug, Default)]
pub struct Taken {
    /// The epoch to [`Histories::put`] back with.
    pub epoch: u64,
    /// The visitors found, with their histories.
    pub found: HashMap<String, History>,
}

impl Histories {
    /// A cache of at most `capacity` events (0: a cache that keeps nothing).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves maps that are still whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the histories of `visitors` out of the cache (they come back
    /// with [`Histories::put`] once the batch is written).
    pub fn take(&self, visitors: &[&str]) -> Taken {
        let mut inner = self.lock();
        let mut found = HashMap::new();
        for v in visitors {
            let kept = match inner.young.remove(*v) {
                Some(k) => {
                    inner.young_events -= k.len();
                    Some(k)
                }
                None => inner
                    .old
                    .remove(*v)
                    .inspect(|k| inner.old_events -= k.len()),
            };
            if let Some(kept) = kept {
                let history = kept.iter().map(|k| inner.event(k)).collect();
                found.insert((*v).to_owned(), history);
            }
        }
        Taken {
            epoch: inner.epoch,
            found,
        }
    }

    /// Puts a written batch's visitors back, each with its whole history,
    /// unless the cache was emptied since they were taken at `epoch`.
    /// Whether they were.
    pub fn put<'a>(
        &self,
        epoch: u64,
        histories: impl Iterator<Item = (&'a str, &'a [(u64, Event)])>,
    ) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return false;
        }
        for (v, history) in histories {
            if inner.known.as_mut().is_some_and(|k| !k.insert(v)) {
                // Past what it was sized for: built again.
                inner.known = None;
            }
            if let Some(put) = &mut inner.put_while_building {
                put.push(v.into());
            }
            let kept: Vec<Kept> = history.iter().map(|(w, e)| inner.keep(*w, e)).collect();
            inner.young_events += kept.len();
            if let Some(before) = inner.old.remove(v) {
                inner.old_events -= before.len();
            }
            if let Some(before) = inner.young.insert(v.into(), kept) {
                inner.young_events -= before.len();
            }
            if inner.young_events >= self.capacity.div_ceil(2) {
                inner.old = std::mem::take(&mut inner.young);
                inner.old_events = std::mem::take(&mut inner.young_events);
                // The strings of visitors gone (mostly contact hashes) stay
                // in the table until it is as large as the cache.
                if inner.strings.len() > self.capacity {
                    inner.clear();
                    return false;
                }
            }
        }
        true
    }

    /// Forgets every history (the next batches read the ledger).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Of `visitors` (none in the cache), those the ledger may hold: the
    /// others are new to it and have no history to read. Builds the filter
    /// of known visitors first if this is the first batch since the cache
    /// was emptied (one pass over the ledger's visitor ids). Without a
    /// cache, all of them.
    pub async fn maybe_known<'a>(
        &self,
        client: &clickhouse::Client,
        visitors: Vec<&'a str>,
    ) -> Result<Vec<&'a str>, clickhouse::error::Error> {
        if self.capacity == 0 || visitors.is_empty() {
            return Ok(visitors);
        }
        if self.lock().known.is_none() {
            self.build_known(client).await?;
        }
        let inner = self.lock();
        Ok(match &inner.known {
            Some(known) => visitors.into_iter().filter(|v| known.may_hold(v)).collect(),
            // Emptied while it was built: read them all.
            None => visitors,
        })
    }

    /// The filter of every visitor id in the ledger, with the visitors put
    /// meanwhile (their INSERT may have landed after the read began).
    async fn build_known(
        &self,
        client: &clickhouse::Client,
    ) -> Result<(), clickhouse::error::Error> {
        let epoch = {
            let mut inner = self.lock();
            inner.put_while_building = Some(Vec::new());
            inner.epoch
        };
        let started = std::time::Instant::now();
        let n: u64 = client
            .query("SELECT uniq(visitor_id) FROM ledger")
            .fetch_one()
            .await?;
        let mut known = Known::for_visitors(usize::try_from(n).unwrap_or(usize::MAX));
        let mut cursor = client
            .query("SELECT DISTINCT visitor_id FROM ledger")
            .fetch::<String>()?;
        while let Some(v) = cursor.next().await? {
            known.insert(&v);
        }
        let mut inner = self.lock();
        let put = inner.put_while_building.take();
        if inner.epoch != epoch {
            return Ok(());
        }
        for v in put.iter().flatten() {
            known.insert(v);
        }
        tracing::info!(
            visitors = n,
            bytes = known.bytes(),
            ms = started.elapsed().as_millis() as u64,
            "read the ledger's visitor ids: new visitors are not looked for"
        );
        inner.known = Some(known);
        Ok(())
    }

    /// Events kept now.
    pub fn events(&self) -> usize {
        let inner = self.lock();
        inner.young_events + inner.old_events
    }

    /// Empties the cache if another process rewrote visitors' ledger since
    /// the last look (`ledger_rewrites` changed).
    pub async fn check_rewrites(
        &self,
        client: &clickhouse::Client,
    ) -> Result<(), clickhouse::error::Error> {
        if self.capacity == 0 {
            return Ok(());
        }
        let seen: (u64, u64) = client
            .query("SELECT count(), max(at_ms) FROM ledger_rewrites")
            .fetch_one()
            .await?;
        let mut inner = self.lock();
        if inner.rewrites != Some(seen) {
            if inner.rewrites.is_some() {
                tracing::info!(
                    rewrites = seen.0,
                    "another process rewrote visitors' ledger; their histories are read again"
                );
            }
            inner.clear();
            inner.rewrites = Some(seen);
        }
        Ok(())
    }
}

/// A Bloom filter of visitor ids: never says "not held" of an id inserted;
/// says "may be held" of ~1 % of the others.
#[derive(Debug)]
struct Known {
    bits: Vec<u64>,
    /// `bits`' length in bits, minus one (a power of two).
    mask: u64,
    inserted: usize,
    /// Insertions it was sized for (twice the visitors at its build).
    room: usize,
}

/// Bits per visitor at the filter's design size, and probes per id: ~1 %
/// false positives when full.
const KNOWN_BITS_PER_VISITOR: usize = 10;
const KNOWN_PROBES: u64 = 7;

impl Known {
    fn for_visitors(n: usize) -> Self {
        let room = n.saturating_mul(2).max(1 << 16);
        let bits = room
            .saturating_mul(KNOWN_BITS_PER_VISITOR)
            .next_power_of_two();
        Self {
            bits: vec![0; bits / 64],
            mask: bits as u64 - 1,
            inserted: 0,
            room,
        }
    }

    fn probes(&self, v: &str) -> impl Iterator<Item = u64> + use<> {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        v.hash(&mut h);
        let a = h.finish();
        let b = a.rotate_left(32) | 1;
        let mask = self.mask;
        (0..KNOWN_PROBES).map(move |i| a.wrapping_add(i.wrapping_mul(b)) & mask)
    }

    /// Inserts `v`; false once past its room (it still holds `v`).
    fn insert(&mut self, v: &str) -> bool {
        for bit in self.probes(v) {
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        self.inserted += 1;
        self.inserted <= self.room
    }

    fn may_hold(&self, v: &str) -> bool {
        self.probes(v)
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    fn bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

/// Notes a job that rewrites visitors' ledger outside the processors'
/// batches (`stage`: `start` or `done`), so that running processors forget
/// the histories they keep ([`Histories::check_rewrites`]).
pub(crate) async fn note_rewrite(
    client: &clickhouse::Client,
    job: &str,
    stage: &str,
) -> Result<(), clickhouse::error::Error> {
    client
        .query("INSERT INTO ledger_rewrites (at_ms, job, stage) VALUES (?, ?, ?)")
        .bind(super::write::now_ms())
        .bind(job)
        .bind(stage)
        .execute()
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(n: u128, contact: &str) -> Event {
        Event {
            event_id: Uuid::from_u128(n),
            ms: 1_700_000_000_000 + n as u64,
            event_type: "page_view".into(),
            action: "".into(),
            channel: "metro".into(),
            placement: "m-01".into(),
            phase: "launch".into(),
            device: "mobile".into(),
            os: "iOS".into(),
            bot: n.is_multiple_of(2),
            contact: contact.into(),
        }
    }

    fn history(from: u128, n: u128) -> History {
        (from..from + n)
            .map(|i| (i as u64 * 10, event(i, &format!("c{from}"))))
            .collect()
    }

    fn put(h: &Histories, epoch: u64, entries: &[(&str, History)]) -> bool {
        h.put(epoch, entries.iter().map(|(v, e)| (*v, e.as_slice())))
    }

    #[test]
    fn a_history_comes_back_as_it_was_put_and_only_once() {
        let h = Histories::new(100);
        let taken = h.take(&["a"]);
        assert!(taken.found.is_empty());
        let a = history(1, 3);
        assert!(put(&h, taken.epoch, &[("a", a.clone())]));
        assert_eq!(h.events(), 3);
        let again = h.take(&["a", "b"]);
        assert_eq!(again.found.len(), 1);
        assert_eq!(again.found["a"], a, "every field, written_ms included");
        assert!(h.take(&["a"]).found.is_empty(), "taken out until put back");
    }

    #[test]
    fn nothing_taken_before_an_emptying_is_put_back() {
        let h = Histories::new(100);
        let taken = h.take(&["a"]);
        h.clear();
        assert!(!put(&h, taken.epoch, &[("a", history(1, 2))]));
        assert!(h.take(&["a"]).found.is_empty());
        let fresh = h.take(&["a"]);
        assert!(put(&h, fresh.epoch, &[("a", history(1, 2))]));
        assert_eq!(h.take(&["a"]).found.len(), 1);
    }

    #[test]
    fn the_visitors_seen_least_lately_go_first_and_the_capacity_holds() {
        let h = Histories::new(20);
        let e = h.take(&[]).epoch;
        let visitors: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
        for (i, v) in visitors.iter().enumerate() {
            assert!(put(&h, e, &[(v, history(i as u128 * 10, 2))]));
            assert!(h.events() <= 20, "{}", h.events());
        }
        let ids: Vec<&str> = visitors.iter().map(String::as_str).collect();
        let found = h.take(&ids).found;
        assert!(!found.contains_key("v0"), "the oldest went");
        assert!(
            found.contains_key("v8") && found.contains_key("v9"),
            "the newest stay"
        );
        let off = Histories::new(0);
        assert!(!put(&off, 0, &[("a", history(1, 1))]));
        assert_eq!(off.events(), 0);
    }

    #[test]
    fn the_table_of_strings_stays_within_the_capacity() {
        // One contact hash per visitor: the strings of visitors gone
        // would pile up; the cache empties itself first.
        let h = Histories::new(8);
        let e = h.take(&[]).epoch;
        let mut emptied = false;
        for i in 0..20u128 {
            let v = format!("v{i}");
            if !put(&h, e, &[(&v, history(i * 10, 1))]) {
                emptied = true;
                break;
            }
        }
        assert!(emptied);
        assert_eq!(h.events(), 0);
        assert_eq!(
            h.take(&[]).epoch,
            e + 1,
            "what was taken before is not put back"
        );
    }

    #[test]
    fn the_filter_of_known_visitors_holds_every_one_inserted() {
        let mut known = Known::for_visitors(10_000);
        for i in 0..20_000 {
            assert!(known.insert(&format!("v_{i:08}")));
        }
        assert!((0..20_000).all(|i| known.may_hold(&format!("v_{i:08}"))));
        let false_positives = (0..100_000)
            .filter(|i| known.may_hold(&format!("w_{i:08}")))
            .count();
        assert!(false_positives < 2_000, "{false_positives} of 100 000");
        for i in 20_000..known.room {
            known.insert(&format!("v_{i:08}"));
        }
        assert!(!known.insert("one more"), "past its room");
    }

    #[test]
    fn a_visitor_put_again_replaces_its_history() {
        let h = Histories::new(100);
        let e = h.take(&[]).epoch;
        assert!(put(&h, e, &[("a", history(1, 2))]));
        assert!(put(&h, e, &[("a", history(1, 3))]));
        assert_eq!(h.events(), 3);
        assert_eq!(h.take(&["a"]).found["a"].len(), 3);
    }
}
