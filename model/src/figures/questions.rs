//! Questions and changes: a question answered from stored rows (or from
//! events on demand), the change a batch makes to the rows, and the
//! correction for contacts shared by several visitors.

use std::collections::HashMap;

use smallvec::SmallVec;
use uuid::Uuid;

use super::*;
use crate::rules;
use crate::Campaign;

/// A question about the figures: which events count.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// Inclusive start, milliseconds since the epoch.
    pub start_ms: u64,
    /// Exclusive end.
    pub end_ms: u64,
    /// Only events of this phase (their stored phase).
    pub phase: Option<String>,
    pub device: Option<String>,
    pub placement: Option<String>,
    pub include_bots: bool,
}

/// The answer to `q`, computed from the events of a set of visitors (the
/// on-demand path: the same definitions as [`compute`], over the events
/// the question keeps). Conversions are counted when their sign-up is kept
/// (and not under a placement filter); their credit goes to all the
/// visitor's touches.
pub fn answer(campaign: &Campaign, visitors: &[(String, Vec<Event>)], q: &Question) -> Answer {
    let mut strings = Strings::default();
    let all = strings.id(ALL);
    let empty = strings.id("");
    let mut b = Builder {
        campaign,
        strings: &mut strings,
        rows: Vec::new(),
        bots: u8::from(q.include_bots),
        device_filter: all,
        placement_filter: all,
        all,
        empty,
        gap_ms: rules::gap_ms(campaign),
        cut: Cut::default(),
    };
    let prepared = prepare(&mut b, &events_of(visitors));
    let evs: Vec<Ev<'_>> = prepared
        .iter()
        .copied()
        .filter(|ev| q.include_bots || !ev.e.bot)
        .collect();
    let kept: Vec<Ev<'_>> = evs
        .iter()
        .copied()
        .filter(|ev| {
            ev.e.ms >= q.start_ms
                && ev.e.ms < q.end_ms
                && q.phase.as_deref().is_none_or(|p| p == ev.e.phase)
                && q.device.as_deref().is_none_or(|d| d == ev.e.device)
                && q.placement.as_deref().is_none_or(|p| p == ev.e.placement)
        })
        .collect();
    // What a path without a sign-up looks back into: each visitor's events
    // of the scope before its first kept one (as the stored rows' runs of
    // days: the days before the question's, or before its phase's).
    let mut first_kept: HashMap<u32, (u64, Uuid)> = HashMap::new();
    for ev in &kept {
        first_kept
            .entry(ev.visitor)
            .or_insert((ev.e.ms, ev.e.event_id));
    }
    let scope: Vec<Ev<'_>> = evs
        .iter()
        .copied()
        .filter(|ev| {
            q.device.as_deref().is_none_or(|d| d == ev.e.device)
                && q.placement.as_deref().is_none_or(|p| p == ev.e.placement)
        })
        .collect();
    let histories = Histories::new(&scope);
    let earlier = |v: u32| {
        first_kept
            .get(&v)
            .map_or(&[][..], |first| histories.before_event(v, *first))
    };
    let mut out: Out = Vec::new();
    per_day(&mut b, &kept, &mut out);
    if !kept.is_empty() {
        over_run(&mut b, &earlier, &kept, &mut out);
    }
    b.rows.append(&mut out);
    if q.placement.is_none() {
        conversions(
            &mut b,
            &evs,
            Some(ConversionFilter {
                start_ms: q.start_ms,
                end_ms: q.end_ms,
                device: q.device.as_deref(),
                phase: q.phase.as_deref(),
            }),
        );
    }
    let rows = merge(b.rows);
    let mut answer = Answer::new();
    for r in rows_of(&strings, &rows) {
        add_to(&mut answer, r.figure, r.dims(), r.value, 1);
    }
    answer
}

/// The answer the stored rows give to the days `[first, last]` of the
/// scope `(bots, device, placement)`: every row of that scope with
/// `first_day ≥ first` and `last_day ≤ last`, summed (what the dashboard
/// asks ClickHouse); with the bots (`bots = 1`), the rows of both bots
/// scopes (`bots = 1` holds what the bots' events change).
pub fn sum_range(
    rows: &[Row<'_>],
    bots: u8,
    device: &str,
    placement: &str,
    first: Day,
    last: Day,
) -> Answer {
    let mut answer = Answer::new();
    for r in rows.iter().filter(|r| {
        r.bots <= bots
            && r.device_filter == device
            && r.placement_filter == placement
            && r.first_day >= first
            && r.last_day <= last
    }) {
        add_to(&mut answer, r.figure, r.dims(), r.value, 1);
    }
    answer
}

/// What the stored rows of `visitors` (each computed alone, as the
/// processor does) get wrong about `q` on the days `[first, last]` of its
/// scope: the exact answer for them together minus the sum of their stored
/// rows in that range. Zero for visitors that are not wide and share no
/// contact, or for an [`aligned`] range without shared contacts; adding
/// it to the stored sum gives the exact answer whenever `visitors` holds
/// every wide visitor active in the range and every visitor sharing a
/// contact.
pub fn range_correction(
    campaign: &Campaign,
    visitors: &[(String, Vec<Event>)],
    q: &Question,
    (first, last): (Day, Day),
) -> Answer {
    let mut out = answer(campaign, visitors, q);
    let (bots, device, placement) = (
        u8::from(q.include_bots),
        q.device.as_deref().unwrap_or(ALL),
        q.placement.as_deref().unwrap_or(ALL),
    );
    for v in visitors {
        let mut strings = Strings::default();
        let rows = compute(campaign, std::slice::from_ref(v), &mut strings);
        let rows: Vec<Row<'_>> = rows_of(&strings, &rows).collect();
        for ((figure, dims), v) in sum_range(&rows, bots, device, placement, first, last) {
            add_to(&mut out, figure, dims, v, -1);
        }
    }
    out.retain(|_, v| v.n != 0 || v.credit.abs() > 1e-9);
    out
}

/// What a batch changes in one visitor's rows (all its events' rows minus
/// the known ones'), added to `sum`: [`ChangeSets::new`] tells the events
/// new to the visitor from those already accounted.
pub fn add_change<'a>(
    campaign: &'a Campaign,
    sets: &'a ChangeSets,
    strings: &mut Strings<'a>,
    sum: &mut Sum,
) {
    let since = sets
        .fresh()
        .iter()
        .map(|e| strings.day(campaign, e.ms))
        .min()
        .unwrap_or(0);
    // Neither side wide: the side after the batch has every day the one
    // before has, and each scope's days are some of the visitor's.
    let mut days: SmallVec<[Day; 16]> = SmallVec::new();
    for e in sets.all_events() {
        let d = strings.day(campaign, e.ms);
        if !days.contains(&d) {
            days.push(d);
            if days.len() > WIDE_DAYS {
                break;
            }
        }
    }
    let runs_since = if days.len() > WIDE_DAYS { 0 } else { since };
    between(
        campaign,
        &[sets.known()],
        &[sets.all_events()],
        strings,
        sum,
        Cut { since, runs_since },
    );
}

/// `after − before` of one visitor's rows, added to `sum` without sorting
/// either (the processor's batches, the rebuild with nothing `before`, an
/// erasure with the kept events `after`): the rows are summed per visitor
/// in `sum`, and only what does not cancel joins its total.
pub fn add_between<'a>(
    campaign: &'a Campaign,
    before: &'a [(String, Vec<Event>)],
    after: &'a [(String, Vec<Event>)],
    strings: &mut Strings<'a>,
    sum: &mut Sum,
) {
    between(
        campaign,
        &events_of(before),
        &events_of(after),
        strings,
        sum,
        Cut::default(),
    );
}

/// [`add_between`] of the visitor's events before and after.
fn between<'a>(
    campaign: &'a Campaign,
    before: &[&'a [Event]],
    after: &[&'a [Event]],
    strings: &mut Strings<'a>,
    sum: &mut Sum,
    cut: Cut,
) {
    // What both sides share is copied alike in both: the change is
    // summed once and added to each copy ([`Left`]). Without a bot on
    // either side and with one device (or placement) on both, its scope
    // is the default one's rows.
    let events = || before.iter().chain(after).flat_map(|events| events.iter());
    let bots = events().all(|e| !e.bot);
    let sole = |of: fn(&'a Event) -> &'a str| {
        let mut values = events().map(of);
        let first = values.next().filter(|v| !v.is_empty())?;
        (bots && values.all(|v| v == first)).then_some(first)
    };
    let left = Left {
        device: sole(|e| &e.device).map(|d| strings.id(d)),
        placement: sole(|e| &e.placement).map(|p| strings.id(p)),
    };
    let (mut after_rows, mut before_rows) = sum.take_scratch();
    unmerged_into(campaign, after, strings, left, cut, &mut after_rows);
    unmerged_into(campaign, before, strings, left, cut, &mut before_rows);
    sum.add_visitor(&after_rows, &before_rows, left, strings.id(ALL));
    sum.keep_scratch(after_rows, before_rows);
}

/// One visitor's events before and after a batch (see [`ChangeSets::new`]):
/// one vector, the known events first (a copy of each, held for every
/// visitor of a batch, was the processor's largest memory).
#[derive(Debug, Clone)]
pub struct ChangeSets {
    visitor: String,
    all: Vec<Event>,
    known: usize,
}

impl ChangeSets {
    /// `known`: the visitor's accounted events; `batch`: what arrived.
    /// `None` when the batch brings nothing new.
    pub fn new(visitor: &str, known: Vec<Event>, batch: &[Event]) -> Option<Self> {
        let mut seen: std::collections::HashSet<Uuid> = known.iter().map(|e| e.event_id).collect();
        let mut all = known;
        let count = all.len();
        all.extend(batch.iter().filter(|e| seen.insert(e.event_id)).cloned());
        (all.len() > count).then(|| Self {
            visitor: visitor.to_owned(),
            all,
            known: count,
        })
    }

    pub fn visitor(&self) -> &str {
        &self.visitor
    }

    /// The visitor's events accounted before the batch.
    pub fn known(&self) -> &[Event] {
        &self.all[..self.known]
    }

    /// Every event of the visitor once the batch is in.
    pub fn all_events(&self) -> &[Event] {
        &self.all
    }

    /// The events new to the visitor.
    pub fn fresh(&self) -> &[Event] {
        &self.all[self.known..]
    }

    /// The visitor and every one of its events once the batch is in.
    pub fn into_all(self) -> (String, Vec<Event>) {
        (self.visitor, self.all)
    }
}

/// [`compute`] with owned strings: every row of the set of visitors.
pub fn contribution(campaign: &Campaign, visitors: &[(String, Vec<Event>)]) -> Vec<OwnedRow> {
    let mut strings = Strings::default();
    let rows = compute(campaign, visitors, &mut strings);
    rows_of(&strings, &rows).map(|r| OwnedRow::of(&r)).collect()
}

/// `together − Σ separately` for a set of visitors: what the per-visitor
/// rows get wrong about contacts the set shares, to add to them.
pub fn correction(campaign: &Campaign, visitors: &[(String, Vec<Event>)]) -> Vec<OwnedRow> {
    let mut strings = Strings::default();
    let mut sum = Sum::default();
    sum.add(&compute(campaign, visitors, &mut strings), 1);
    for v in visitors {
        // Each visitor's rows over the same strings.
        let one = std::slice::from_ref(v);
        let rows = compute(campaign, one, &mut strings);
        sum.add(&rows, -1);
    }
    let rows = sum.rows();
    rows_of(&strings, &rows).map(|r| OwnedRow::of(&r)).collect()
}
