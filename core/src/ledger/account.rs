//! A batch's accounting: read the batch's visitors' ledger, complete the
//! ledger batches read again (`crate::batches`), compute the change the
//! new events make to the figures and journeys, and write it in one
//! INSERT with the wide visitors and contacts around it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use uuid::Uuid;

use super::cache::{Histories, History, Taken};
use super::lists::{insert_wide, note_contacts, wide_values};
use super::write::{journey_rows, now_ms, Carried, Insert, JourneyRow, Writer};
use super::{ledger_event, read_written};
use crate::{Campaign, EventRow};
use ensemble_model::figures::{self, ChangeSets, DelayRow, Event, Row as FigureRow, Strings};
use ensemble_model::journeys;

/// What [`account`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accounted {
    /// Events seen for the first time.
    pub new_events: usize,
    /// Visitors whose figures changed.
    pub visitors: usize,
    /// Tables of earlier ledger batches that a view had not written (it
    /// failed, or ClickHouse died mid-INSERT), written now from the
    /// ledger ([`crate::batches::complete`]).
    pub completed: usize,
    /// The batch's visitors whose history came from the cache of
    /// histories ([`Histories`]).
    pub cached: usize,
    /// … from the batch before (its [`After`]).
    pub handed_over: usize,
    /// … from the ledger.
    pub read: usize,
    /// … from nowhere: new to the ledger, as the cache's filter of known
    /// visitors tells.
    pub new: usize,
}

/// Accounts for a batch of rows (duplicates and already-accounted events
/// allowed): the new events go to the ledger with the change they make to
/// the figures, in one INSERT; then the batch's contacts are checked for
/// sharing. Idempotent: a batch accounted twice changes nothing the second
/// time.
pub async fn account(
    client: &clickhouse::Client,
    campaign: &Campaign,
    rows: &[EventRow],
) -> Result<Accounted, clickhouse::error::Error> {
    prepare(client, campaign, rows)
        .await?
        .write(client, campaign)
        .await
}

/// A batch's accounting read and computed, its statements ready, nothing
/// written yet ([`prepare`]).
#[derive(Debug)]
pub struct Prepared {
    /// `wide_visitors` rows, as VALUES tuples.
    wide: Vec<String>,
    ledger: Option<Insert>,
    signups: BTreeSet<(String, String)>,
    done: Accounted,
    after: After,
}

/// The visitors a batch changes, as the ledger holds them once its INSERT
/// is in: what the next batch of the same database takes for their
/// history instead of reading the ledger while that INSERT still runs
/// (`prepare_after`), and what goes back into the cache of histories
/// once it is written ([`Histories::put`]). Only for a batch whose INSERT
/// is certain to land before the next one's: the next batch writes only
/// after this one ended well, and gives its own batch up otherwise.
#[derive(Debug, Default)]
pub struct After {
    /// Each changed visitor's events, every one once, with the
    /// `written_ms` of its ledger row.
    events: HashMap<String, History>,
    /// The events the batch adds: its own to complete, not the next one's.
    fresh: HashSet<Uuid>,
    /// When the batch took its visitors out of the cache.
    epoch: u64,
}

impl After {
    /// Puts the batch's visitors back into `histories`, once it is written.
    pub fn put_into(&self, histories: &Histories) -> bool {
        histories.put(
            self.epoch,
            self.events.iter().map(|(v, h)| (v.as_str(), h.as_slice())),
        )
    }
}

impl Prepared {
    /// Writes what [`prepare`] computed: the wide visitors, the ledger
    /// (and so the figures), the contacts, and for contacts seen on
    /// several visitors their later conversions ([`crate::later`]). Only
    /// once, and only if no ledger row was written since `prepare` read
    /// it: after a failure, account again (a failed INSERT may still have
    /// landed; reading the ledger again is what keeps it from being
    /// counted twice).
    pub async fn write(
        self,
        client: &clickhouse::Client,
        campaign: &Campaign,
    ) -> Result<Accounted, clickhouse::error::Error> {
        // Listed before their rows land: a crash in between leaves a listed
        // visitor, which costs a little time, never a wrong figure.
        insert_wide(client, &self.wide).await?;
        if let Some(insert) = &self.ledger {
            insert.execute(client).await?;
        }
        // Also when every event was accounted already: a batch read again
        // after a crash between the ledger and these writes (its offsets
        // were not committed) notes and settles its contacts then.
        let shared = note_contacts(client, &self.signups).await?;
        crate::later::settle(client, campaign, &shared).await?;
        Ok(self.done)
    }

    /// Its visitors once it is written ([`After`]); taken once.
    pub fn take_after(&mut self) -> After {
        std::mem::take(&mut self.after)
    }
}

/// Reads the ledger of the batch's visitors and computes what accounting
/// for `rows` writes (see [`account`]), without writing it.
pub async fn prepare(
    client: &clickhouse::Client,
    campaign: &Campaign,
    rows: &[EventRow],
) -> Result<Prepared, clickhouse::error::Error> {
    prepare_after(client, campaign, rows, None, &Histories::new(0)).await
}

/// [`prepare`] while the previous batch's INSERT may still run: the
/// visitors it changes are taken from `before` (its [`After`]), the others
/// from `histories` or else from the ledger, which that INSERT does not
/// touch for them.
pub async fn prepare_after(
    client: &clickhouse::Client,
    campaign: &Campaign,
    rows: &[EventRow],
    before: Option<&After>,
    histories: &Histories,
) -> Result<Prepared, clickhouse::error::Error> {
    let mut batch: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for r in rows {
        batch
            .entry(&r.visitor_id)
            .or_default()
            .push(ledger_event(r));
    }
    let ids: Vec<&str> = batch.keys().copied().collect();
    // Each visitor's history: as the batch before leaves it, else as this
    // process last wrote it (`cache`), else from the ledger.
    histories.check_rewrites(client).await?;
    let Taken {
        epoch,
        found: mut known,
    } = histories.take(&ids);
    let (mut cached, mut handed_over) = (0, 0);
    let mut misses: Vec<&str> = Vec::new();
    for v in &ids {
        if let Some(after) = before.and_then(|b| b.events.get(*v)) {
            known.insert((*v).to_owned(), after.clone());
            handed_over += 1;
        } else if known.contains_key(*v) {
            cached += 1;
        } else {
            misses.push(*v);
        }
    }
    // Of the others, only those the ledger may hold are looked for.
    let missed = misses.len();
    let misses = histories.maybe_known(client, misses).await?;
    known.extend(read_written(client, &misses).await?);
    // Events of this batch already accounted: a client's retry, or a
    // batch read again after a failed INSERT or a crash. Their ledger
    // batches are completed first if a view did not write them
    // (`batches`): only when this batch holds the head event, so that
    // one member does it.
    let mine: BTreeSet<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let again: BTreeSet<(&str, u64)> = known
        .iter()
        .flat_map(|(v, events)| events.iter().map(move |(w, e)| (v.as_str(), *w, e)))
        .filter(|(_, _, e)| mine.contains(&e.event_id))
        // The previous batch's events, read before or after its INSERT
        // landed: that batch completes its own.
        .filter(|(_, _, e)| before.is_none_or(|b| !b.fresh.contains(&e.event_id)))
        .map(|(v, w, _)| (v, w))
        .collect();
    let completed = crate::batches::complete(client, campaign, &again, &mine).await?;
    let written_ms = now_ms();
    // Each changed visitor's events, and apart the `written_ms` of those
    // the ledger already holds (the others are written now).
    let mut sets: Vec<ChangeSets> = Vec::with_capacity(batch.len());
    let mut written: Vec<Vec<u64>> = Vec::with_capacity(batch.len());
    for (visitor, events) in &batch {
        let (w, history): (Vec<u64>, Vec<Event>) = known
            .remove(*visitor)
            .unwrap_or_default()
            .into_iter()
            .unzip();
        if let Some(set) = ChangeSets::new(visitor, history, events) {
            sets.push(set);
            written.push(w);
        }
    }
    // The change of every visitor, summed: carried by the INSERT's first
    // row. CPU work (a large batch takes a while): off the async workers,
    // on both cores.
    let ranges = figures::summed_ranges(campaign);
    let (change, journey_changes) = off_the_runtime(|| changes(campaign, &ranges, &sets));
    let journey = journey_rows(&journey_changes);
    let change_rows = ChangeRows::of(&change);
    let wide = wide_values(campaign, sets.iter().map(|s| (s.visitor(), s.all_events())));
    let fresh = sets.iter().map(|s| s.fresh().len()).sum();
    let mut writer = Writer::for_rows(campaign, change_rows.carried(&journey), fresh);
    let mut done = Accounted {
        completed,
        cached,
        handed_over,
        read: misses.len(),
        new: missed - misses.len(),
        ..Accounted::default()
    };
    for set in &sets {
        for e in set.fresh() {
            writer.push(set.visitor(), written_ms, Some(e));
        }
        done.new_events += set.fresh().len();
        done.visitors += 1;
    }
    let signups = rows
        .iter()
        .filter(|r| ensemble_model::rules::is_signup(&r.event_type) && !r.contact_hash.is_empty())
        .map(|r| (r.contact_hash.clone(), r.visitor_id.clone()))
        .collect();
    let ledger = writer.into_insert();
    let after = After {
        fresh: sets
            .iter()
            .flat_map(|s| s.fresh().iter().map(|e| e.event_id))
            .collect(),
        events: sets
            .into_iter()
            .zip(written)
            .map(|(set, w)| {
                let fresh = set.fresh().len();
                let (visitor, all) = set.into_all();
                let w = w.into_iter().chain(std::iter::repeat_n(written_ms, fresh));
                (visitor, w.zip(all).collect())
            })
            .collect(),
        epoch,
    };
    Ok(Prepared {
        wide,
        ledger,
        signups,
        done,
        after,
    })
}

/// The change some visitors make to the figures: summed over them (a
/// batch's, over both halves its two threads summed: one row per key;
/// keys repeated across batches are summed again by ClickHouse), then by range
/// and the paths' delays by rounding ([`figures::by_range`]), with the
/// strings the rows point into.
#[derive(Debug)]
pub(crate) struct Change<'a> {
    pub strings: Strings<'a>,
    pub rows: figures::Rows,
    pub ranged: figures::Rows,
    pub delayed: Vec<(figures::DelayKey, i64)>,
}

impl<'a> Change<'a> {
    /// `rows` (written with `strings`) and their sums by `ranges`.
    pub fn new(strings: Strings<'a>, rows: figures::Rows, ranges: &[figures::Days]) -> Self {
        let ranged = figures::by_range(&rows, ranges);
        let delayed = figures::delays_by_range(&ranged);
        Self {
            strings,
            rows,
            ranged,
            delayed,
        }
    }
}

/// The rows of a [`Change`] with their strings, as the ledger INSERT
/// carries them.
#[derive(Debug)]
pub(crate) struct ChangeRows<'a> {
    change: Vec<FigureRow<'a>>,
    ranged: Vec<FigureRow<'a>>,
    delayed: Vec<DelayRow<'a>>,
}

impl<'a> ChangeRows<'a> {
    pub fn of(c: &'a Change<'_>) -> Self {
        Self {
            change: figures::rows_of(&c.strings, &c.rows).collect(),
            ranged: figures::rows_of(&c.strings, &c.ranged).collect(),
            delayed: figures::delay_rows_of(&c.strings, &c.delayed).collect(),
        }
    }

    /// What the INSERT carries: these rows and the journeys' `journey`.
    pub fn carried(&'a self, journey: &'a [JourneyRow<'a>]) -> Carried<'a> {
        Carried {
            change: &self.change,
            journey,
            ranged: &self.ranged,
            delayed: &self.delayed,
        }
    }
}

/// Each changed visitor's journeys rows.
type JourneyChanges<'a> = Vec<(&'a str, journeys::Rows<'a>)>;

/// The change `sets` make to the figures and to each visitor's journeys.
type Changes<'a> = (Change<'a>, JourneyChanges<'a>);

/// The same, summed but not yet by range, with the strings of its keys.
type Summed<'a> = (Strings<'a>, figures::Sum, JourneyChanges<'a>);

/// Summed in two halves on two cores, then one half's sums taken into
/// the other's ([`figures::Sum::absorb`]), so that each key is one row.
fn changes<'a>(
    campaign: &'a Campaign,
    ranges: &[figures::Days],
    sets: &'a [ChangeSets],
) -> Changes<'a> {
    let (a, b) = sets.split_at(sets.len() / 2);
    let (strings, sum, journey) = if a.len() < 32 {
        summed(campaign, sets)
    } else {
        // Each half on its own core, then one sum of both.
        std::thread::scope(|s| {
            let second = s.spawn(|| summed(campaign, b));
            let (mut strings, mut sum, mut journey) = summed(campaign, a);
            let (theirs, more, more_journey) = second
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            sum.absorb(&mut strings, more, theirs);
            journey.extend(more_journey);
            (strings, sum, journey)
        })
    };
    (Change::new(strings, sum.rows(), ranges), journey)
}

/// The figures' and journeys' change of `sets`, summed.
fn summed<'a>(campaign: &'a Campaign, sets: &'a [ChangeSets]) -> Summed<'a> {
    let mut strings = Strings::default();
    let mut change = figures::Sum::default();
    let mut journey = Vec::new();
    for set in sets {
        figures::add_change(campaign, set, &mut strings, &mut change);
        let rows = journeys::change_of(campaign, set);
        if !rows.is_empty() {
            journey.push((set.visitor(), rows));
        }
    }
    (strings, change, journey)
}

/// Runs CPU-bound `work` where it does not hold up the async tasks (the
/// consume loop, the metrics server, shutdown): `block_in_place` on a
/// multi-threaded runtime, in place otherwise (tests).
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use uuid::Uuid;

    /// A batch large enough to be summed on two threads writes each
    /// figure key once: the same rows as one thread summing it all.
    #[test]
    fn a_batch_summed_in_halves_writes_each_key_once() {
        let campaign = Campaign::from_toml(include_str!("../../../deploy/campaign.toml")).unwrap();
        // 10 February 2025, 10:00 Paris: phase 2.
        let at = 1_739_178_000_000u64;
        let sets: Vec<ChangeSets> = (0..200u64)
            .filter_map(|v| {
                let scan = Event {
                    event_id: Uuid::from_u128(u128::from(v)),
                    ms: at + v * 1_000,
                    event_type: "qr_scan".into(),
                    action: "".into(),
                    channel: if v % 2 == 0 { "metro" } else { "gares" }.into(),
                    placement: "M-CHATELET".into(),
                    phase: "p2-saint-valentin".into(),
                    device: "mobile".into(),
                    os: "iOS".into(),
                    bot: false,
                    contact: Default::default(),
                };
                ChangeSets::new(&format!("v{v}"), Vec::new(), &[scan])
            })
            .collect();
        let ranges = figures::summed_ranges(&campaign);
        let (change, _) = changes(&campaign, &ranges, &sets);
        let text = |strings: &Strings<'_>, rows: &figures::Rows| {
            let mut t: Vec<String> = figures::rows_of(strings, rows)
                .map(|r| format!("{r:?}"))
                .collect();
            t.sort();
            t
        };
        let (strings, sum, _) = summed(&campaign, &sets);
        let want = text(&strings, &sum.rows());
        assert!(want.len() > 10, "{want:?}");
        assert_eq!(text(&change.strings, &change.rows), want);
    }
}
