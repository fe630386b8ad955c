//! One visitor's contribution: every figure computed over a run of its
//! active days, per scope (bots, device, placement), as the rows `G(i, j)`
//! the module documentation describes.

use std::collections::BTreeMap;

use smallvec::SmallVec;

use super::*;
use crate::paths;
use crate::rules;
use crate::Campaign;

/// An event prepared for the computation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ev<'a> {
    pub(crate) e: &'a Event,
    /// Index of its visitor in the computed set.
    pub(crate) visitor: u32,
    pub(crate) day: Day,
    /// Ids in [`Strings`] of its channel, placement, phase, device class
    /// and OS family, looked up once (runs of days read an event again).
    pub(crate) channel: u32,
    pub(crate) placement: u32,
    pub(crate) phase: u32,
    pub(crate) device: u32,
    pub(crate) os: u32,
}

impl Ev<'_> {
    fn secs(&self) -> u64 {
        self.e.ms / 1000
    }
}

pub(crate) const FREQUENCY_CAP: usize = 5;

pub(crate) struct Builder<'c, 'a> {
    pub(crate) campaign: &'a Campaign,
    pub(crate) strings: &'c mut Strings<'a>,
    pub(crate) rows: Rows,
    /// The row being built's scope.
    pub(crate) bots: u8,
    pub(crate) device_filter: u32,
    pub(crate) placement_filter: u32,
    pub(crate) all: u32,
    pub(crate) empty: u32,
    pub(crate) gap_ms: u64,
    /// What both sides of a batch's change have alike, left out of each
    /// (see [`Cut`]).
    pub(crate) cut: Cut,
}

/// The rows a batch cannot change, left out of both sides of its change
/// ([`unmerged_into`]: the visitor's rows before the batch, and after it).
/// The batch's new events are all on `since` or later, so the two sides'
/// events on earlier days are the same events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cut {
    /// Per-day rows of days before this one: a day's rows depend on that
    /// day's events only. 0 keeps all.
    pub(crate) since: Day,
    /// The runs of days `x..=y` before this one: a run's figures depend
    /// on its days' events and the visitor's earlier ones, the same on
    /// both sides, and so do the two rows they are stamped on that end on
    /// `y` ([`scope`]); the two that end on the next active day `y + 1`
    /// are left out only when that day is before this one too (on the
    /// side before a batch, it may not exist). Only when neither side is
    /// wide (the caller's to know: runs of segments are not runs of days,
    /// and a side that turns wide changes them all). 0 keeps all.
    pub(crate) runs_since: Day,
}

impl<'a> Builder<'_, 'a> {
    pub(crate) fn key(&self, figure: Figure) -> Key {
        let e = self.empty;
        Key {
            figure,
            bots: self.bots,
            device_filter: self.device_filter,
            placement_filter: self.placement_filter,
            first_day: 0,
            last_day: 0,
            phase: e,
            channel: e,
            placement: e,
            event_type: e,
            action: e,
            step: e,
            model: e,
            conversion_phase: e,
            other_channel: e,
            device_class: e,
            os_family: e,
            frequency: 0,
            hour: 0,
            local_hour: 0,
            day: 0,
            path: e,
            delay_seconds: 0,
        }
    }

    pub(crate) fn id(&mut self, s: &'a str) -> u32 {
        self.strings.id(s)
    }
}

/// Pushes rows to `out`.
pub(crate) type Out = Vec<(Key, Value)>;

pub(crate) fn count(out: &mut Out, key: Key) {
    out.push((key, Value { n: 1, credit: 0.0 }));
}

/// The contribution of a set of visitors (their events, in any order,
/// duplicates allowed) to every figure, over every question the stored
/// figures answer (see the module documentation). Contacts are counted
/// once across the set. The processor calls it one visitor at a time.
pub fn compute<'a>(
    campaign: &'a Campaign,
    visitors: &'a [(String, Vec<Event>)],
    strings: &mut Strings<'a>,
) -> Rows {
    merge(unmerged(
        campaign,
        &events_of(visitors),
        strings,
        Left::default(),
    ))
}

/// The events of each visitor of a set.
pub(crate) fn events_of(visitors: &[(String, Vec<Event>)]) -> Vec<&[Event]> {
    visitors
        .iter()
        .map(|(_, events)| events.as_slice())
        .collect()
}

/// The copies [`unmerged`] leaves out, for a caller that adds them
/// ([`Sum::add_visitor`]): the rows of a set without bots for its sole
/// device, for its sole placement (ids in [`Strings`]), are its default
/// rows again (the scope's rows, without its conversions'). A change
/// between two sets that share that trait is then the same in the copy:
/// summed once, added again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Left {
    pub(crate) device: Option<u32>,
    pub(crate) placement: Option<u32>,
}

/// [`compute`]'s rows as they are made: in no order, equal keys not yet
/// summed (for a caller that sums many visitors' rows anyway).
pub(crate) fn unmerged<'a>(
    campaign: &'a Campaign,
    visitors: &[&'a [Event]],
    strings: &mut Strings<'a>,
    left: Left,
) -> Out {
    let mut rows = Vec::new();
    unmerged_into(campaign, visitors, strings, left, Cut::default(), &mut rows);
    rows
}

/// [`unmerged`] into `rows` (cleared first): the processor passes the
/// same two vectors for every visitor, so that a visitor's hundreds of
/// rows are not grown from nothing each time (reallocations and the page
/// faults of fresh memory were a sixth of the live processor's time).
///
/// `cut`: when the rows are one side of what a batch changes (the
/// visitor's events before it, or after it: the same plus the new ones),
/// the rows both sides have alike are left out of each: they would cancel
/// out ([`Cut`]). `Cut::default()` leaves nothing out.
pub(crate) fn unmerged_into<'a>(
    campaign: &'a Campaign,
    visitors: &[&'a [Event]],
    strings: &mut Strings<'a>,
    left: Left,
    cut: Cut,
    rows: &mut Out,
) {
    let all = strings.id(ALL);
    let empty = strings.id("");
    rows.clear();
    let mut b = Builder {
        campaign,
        strings,
        rows: std::mem::take(rows),
        bots: 0,
        device_filter: all,
        placement_filter: all,
        all,
        empty,
        gap_ms: rules::gap_ms(campaign),
        cut,
    };
    let prepared = prepare(&mut b, visitors);
    let no_bots = prepared.iter().all(|ev| !ev.e.bot);
    // `bots = 0`: the visitors without their bots' events. `bots = 1`:
    // what the bots' events change, their rows with them minus without
    // (nothing for visitors without a bot, most of them): a question with
    // the bots sums both scopes.
    let mut without_bots = 0..0;
    for bots in [0u8, 1] {
        b.bots = bots;
        if bots == 1 && no_bots {
            break;
        }
        let evs: Vec<Ev<'a>> = prepared
            .iter()
            .copied()
            .filter(|ev| bots == 1 || !ev.e.bot)
            .collect();
        if evs.is_empty() {
            continue;
        }
        let scope_from = b.rows.len();
        // Every device and placement.
        b.device_filter = all;
        b.placement_filter = all;
        let from = b.rows.len();
        scope(&mut b, &evs);
        let to = b.rows.len();
        // Each device, each placement: the same rows when every event is of it.
        let mut devices: Vec<&'a str> = evs.iter().map(|ev| ev.e.device.as_str()).collect();
        devices.sort_unstable();
        devices.dedup();
        for d in devices.into_iter().filter(|d| !d.is_empty()) {
            let id = b.id(d);
            if evs.iter().all(|ev| ev.e.device == d) {
                if left.device != Some(id) {
                    copy_scope(&mut b, from..to, id, all);
                }
            } else {
                let kept: Vec<Ev<'a>> = evs.iter().copied().filter(|ev| ev.e.device == d).collect();
                b.device_filter = id;
                scope(&mut b, &kept);
                b.device_filter = all;
            }
        }
        let mut placements: Vec<&'a str> = evs.iter().map(|ev| ev.e.placement.as_str()).collect();
        placements.sort_unstable();
        placements.dedup();
        for p in placements.into_iter().filter(|p| !p.is_empty()) {
            let id = b.id(p);
            if evs.iter().all(|ev| ev.e.placement == p) {
                if left.placement != Some(id) {
                    copy_scope(&mut b, from..to, all, id);
                }
            } else {
                let kept: Vec<Ev<'a>> = evs
                    .iter()
                    .copied()
                    .filter(|ev| ev.e.placement == p)
                    .collect();
                b.placement_filter = id;
                scope(&mut b, &kept);
                b.placement_filter = all;
            }
        }
        conversions(&mut b, &evs, None);
        if bots == 0 {
            without_bots = scope_from..b.rows.len();
        }
    }
    if !no_bots {
        b.rows.reserve(without_bots.len());
        for i in without_bots {
            let (k, v) = b.rows[i];
            b.rows.push((
                Key { bots: 1, ..k },
                Value {
                    n: -v.n,
                    credit: -v.credit,
                },
            ));
        }
    }
    *rows = b.rows;
}

/// Each visitor's events once (redeliveries), all in (time, event id) order.
pub(crate) fn prepare<'a>(b: &mut Builder<'_, 'a>, visitors: &[&'a [Event]]) -> Vec<Ev<'a>> {
    let mut out: Vec<Ev<'a>> = Vec::new();
    for (i, events) in visitors.iter().enumerate() {
        let mut evs: Vec<&'a Event> = events.iter().collect();
        evs.sort_unstable_by_key(|e| (e.event_id, e.ms));
        evs.dedup_by_key(|e| e.event_id);
        let visitor = u32::try_from(i).unwrap_or(u32::MAX);
        for e in evs {
            let day = b.strings.day(b.campaign, e.ms);
            out.push(Ev {
                e,
                visitor,
                day,
                channel: b.strings.id(&e.channel),
                placement: b.strings.id(&e.placement),
                phase: b.strings.id(&e.phase),
                device: b.strings.id(&e.device),
                os: b.strings.id(&e.os),
            });
        }
    }
    out.sort_by_key(|ev| (ev.e.ms, ev.e.event_id));
    out
}

pub(crate) fn copy_scope(
    b: &mut Builder<'_, '_>,
    range: std::ops::Range<usize>,
    device: u32,
    placement: u32,
) {
    b.rows.reserve(range.len());
    for i in range {
        let (k, v) = b.rows[i];
        b.rows.push((
            Key {
                device_filter: device,
                placement_filter: placement,
                ..k
            },
            v,
        ));
    }
}

/// Every row of one scope's events (sorted by time): per-day figures on
/// their days, the others over every run of active days.
pub(crate) fn scope<'a>(b: &mut Builder<'_, 'a>, evs: &[Ev<'a>]) {
    let mut out: Out = Vec::new();
    per_day(b, evs, &mut out);
    b.rows.append(&mut out);
    // Start of each active day's events, and the end.
    let mut starts: Vec<usize> = Vec::new();
    let mut days: Vec<Day> = Vec::new();
    for (i, ev) in evs.iter().enumerate() {
        if days.last() != Some(&ev.day) {
            days.push(ev.day);
            starts.push(i);
        }
    }
    starts.push(evs.len());
    // A wide visitor's runs are of whole segments (see [`WIDE_DAYS`]):
    // consecutive active days of one segment make one atom.
    let (mut firsts, mut lasts) = (days.clone(), days);
    if firsts.len() > WIDE_DAYS {
        let bounds = boundaries(b.campaign);
        let segment = |d: Day| bounds.partition_point(|x| *x <= d);
        let (mut f, mut l, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for (i, d) in firsts.iter().enumerate() {
            if l.last()
                .is_some_and(|prev: &Day| segment(*prev) == segment(*d))
            {
                if let Some(last) = l.last_mut() {
                    *last = *d;
                }
            } else {
                f.push(*d);
                l.push(*d);
                s.push(starts[i]);
            }
        }
        s.push(evs.len());
        (firsts, lasts, starts) = (f, l, s);
    }
    let k = firsts.len();
    let histories = Histories::new(evs);
    // What both sides of a batch's change have alike ([`Cut::runs_since`]):
    // a run before the cut, and its rows stamped on its own last day.
    let runs_since = b.cut.runs_since;
    let alike = |y: usize| lasts[y] < runs_since;
    for x in 0..k {
        let earlier = |v: u32| histories.before_day(v, firsts[x]);
        for y in x..k {
            if alike(y) && (y + 1 == k || alike(y + 1)) {
                continue;
            }
            let run = &evs[starts[x]..starts[y + 1]];
            out.clear();
            over_run(b, &earlier, run, &mut out);
            // F(x, y) is in G(x, y) (+), G(x−1, y) (−), G(x, y+1) (−) and G(x−1, y+1) (+).
            let mut stamp = |first: usize, last: usize, sign: i64| {
                for (key, v) in &out {
                    let mut key = *key;
                    key.first_day = firsts[first];
                    key.last_day = lasts[last];
                    b.rows.push((
                        key,
                        Value {
                            n: sign * v.n,
                            credit: sign as f64 * v.credit,
                        },
                    ));
                }
            };
            if !alike(y) {
                stamp(x, y, 1);
                if x > 0 {
                    stamp(x - 1, y, -1);
                }
            }
            if y + 1 < k {
                stamp(x, y + 1, -1);
            }
            if x > 0 && y + 1 < k {
                stamp(x - 1, y + 1, 1);
            }
        }
    }
}

/// Figures that sum over days, on their event's day.
pub(crate) fn per_day<'a>(b: &mut Builder<'_, 'a>, evs: &[Ev<'a>], out: &mut Out) {
    let mut hours: Vec<(u32, u32, u32, Day)> = Vec::new();
    let since = b.cut.since;
    for ev in evs.iter().filter(|ev| ev.day >= since) {
        let e = ev.e;
        let (phase, channel) = (ev.phase, ev.channel);
        let hour = hour_of(e.ms);
        let mut k = b.key(Figure::Events);
        k.first_day = ev.day;
        k.last_day = ev.day;
        k.day = ev.day;
        k.phase = phase;
        k.channel = channel;
        k.placement = ev.placement;
        k.event_type = b.id(&e.event_type);
        k.action = b.id(&e.action);
        count(out, k);
        let mut k = b.key(Figure::EventsHourly);
        k.first_day = ev.day;
        k.last_day = ev.day;
        k.phase = phase;
        k.channel = channel;
        k.hour = hour;
        count(out, k);
        if rules::is_scan(&e.event_type, &e.action) {
            let mut k = b.key(Figure::ScansByLocalHour);
            k.first_day = ev.day;
            k.last_day = ev.day;
            k.day = ev.day;
            k.channel = channel;
            k.local_hour = u8::try_from(local_hour(b.campaign, e.ms)).unwrap_or(u8::MAX);
            count(out, k);
        }
        for c in [b.all, channel] {
            hours.push((ev.visitor, hour, c, ev.day));
        }
    }
    hours.sort_unstable();
    hours.dedup();
    let mut days: Vec<(u32, Day, u32)> = Vec::new();
    for (visitor, hour, c, day) in hours {
        let mut k = b.key(Figure::VisitorsHourly);
        k.first_day = day;
        k.last_day = day;
        k.channel = c;
        k.hour = hour;
        count(out, k);
        days.push((visitor, day, c));
    }
    days.sort_unstable();
    days.dedup();
    for (_, day, c) in days {
        let mut k = b.key(Figure::VisitorsDaily);
        k.first_day = day;
        k.last_day = day;
        k.channel = c;
        k.day = day;
        count(out, k);
    }
}

/// Each visitor's events of a scope in time order: what a path without a
/// sign-up looks back into ([`path_without_signup`]), found per visitor
/// (a set of many visitors computed together must not scan the others').
pub(crate) struct Histories<'a> {
    /// The events by visitor, time order kept within each (a copy: one
    /// vector, where a map of vectors hashed every event of every scope).
    evs: Vec<Ev<'a>>,
    /// Each visitor's events in `evs`, by visitor: (visitor, start, end).
    spans: Vec<(u32, usize, usize)>,
}

impl<'a> Histories<'a> {
    pub(crate) fn new(evs: &[Ev<'a>]) -> Self {
        let mut evs = evs.to_vec();
        // Stable: time order stays within a visitor.
        evs.sort_by_key(|ev| ev.visitor);
        let mut spans: Vec<(u32, usize, usize)> = Vec::new();
        for (i, ev) in evs.iter().enumerate() {
            match spans.last_mut() {
                Some(span) if span.0 == ev.visitor => span.2 = i + 1,
                _ => spans.push((ev.visitor, i, i + 1)),
            }
        }
        Self { evs, spans }
    }

    fn of(&self, visitor: u32) -> &[Ev<'a>] {
        self.spans
            .binary_search_by_key(&visitor, |span| span.0)
            .map_or(&[], |i| &self.evs[self.spans[i].1..self.spans[i].2])
    }

    /// The visitor's events on days before `day` (a stored run's first day).
    pub(crate) fn before_day(&self, visitor: u32, day: Day) -> &[Ev<'a>] {
        let evs = self.of(visitor);
        &evs[..evs.partition_point(|ev| ev.day < day)]
    }

    /// The visitor's events before `(ms, event id)` (an on-demand
    /// question's first kept event of this visitor).
    pub(crate) fn before_event(&self, visitor: u32, first: (u64, Uuid)) -> &[Ev<'a>] {
        let evs = self.of(visitor);
        &evs[..evs.partition_point(|ev| (ev.e.ms, ev.e.event_id) < first)]
    }
}

/// The figures of one run of days: each visitor's, then the contacts'.
/// `earlier`: a visitor's events of the scope before the run (what a path
/// without a sign-up looks back into).
pub(crate) fn over_run<'h, 'a: 'h>(
    b: &mut Builder<'_, 'a>,
    earlier: &dyn Fn(u32) -> &'h [Ev<'a>],
    run: &[Ev<'a>],
    out: &mut Out,
) {
    let single = run.iter().all(|ev| ev.visitor == run[0].visitor);
    if single {
        visitor_figures(b, earlier(run[0].visitor), run, out);
    } else {
        let mut by_visitor: BTreeMap<u32, Vec<Ev<'a>>> = BTreeMap::new();
        for ev in run {
            by_visitor.entry(ev.visitor).or_default().push(*ev);
        }
        for evs in by_visitor.values() {
            visitor_figures(b, earlier(evs[0].visitor), evs, out);
        }
    }
    contact_figures(b, run, out);
}

/// One visitor's figures over some of its events (time order, one run
/// of days); `earlier`: its events of the scope before the run.
pub(crate) fn visitor_figures<'a>(
    b: &mut Builder<'_, 'a>,
    earlier: &[Ev<'a>],
    evs: &[Ev<'a>],
    out: &mut Out,
) {
    if evs.is_empty() {
        return;
    }
    let campaign = b.campaign;
    // Presence: channels, placements scanned.
    // A run's few events: these lists stay on the stack (allocating them
    // for every run of every scope was a sixth of the accounting).
    let mut channels: SmallVec<[u32; 8]> = SmallVec::new();
    channels.push(b.all);
    let mut scanned: SmallVec<[(u32, u32); 8]> = SmallVec::new();
    for ev in evs {
        let c = ev.channel;
        channels.push(c);
        if rules::is_scan(&ev.e.event_type, &ev.e.action) && !ev.e.placement.is_empty() {
            let p = ev.placement;
            scanned.push((p, b.all));
            scanned.push((p, c));
        }
    }
    channels.sort_unstable();
    channels.dedup();
    for c in channels {
        let mut k = b.key(Figure::Visitors);
        k.channel = c;
        count(out, k);
    }
    scanned.sort_unstable();
    scanned.dedup();
    for (p, c) in scanned {
        let mut k = b.key(Figure::Scanners);
        k.placement = p;
        k.channel = c;
        count(out, k);
    }
    // Touches (gap rule) and each touch channel's first touch.
    let candidates = touch_candidates(campaign, evs, evs[0].visitor);
    let starts = rules::touch_starts(
        b.gap_ms,
        candidates.iter().map(|ev| (ev.e.ms, ev.e.channel.as_str())),
    );
    let mut first_touch: SmallVec<[(&'a str, u64); 4]> = SmallVec::new();
    for (ev, starts) in candidates.iter().zip(starts) {
        if starts {
            let mut k = b.key(Figure::Touches);
            k.channel = ev.channel;
            k.phase = ev.phase;
            count(out, k);
        }
        if !first_touch.iter().any(|(c, _)| *c == ev.e.channel) {
            first_touch.push((&ev.e.channel, ev.secs()));
        }
    }
    if let Some(path) = path_without_signup(b, earlier, evs, &candidates) {
        let mut k = b.key(Figure::PathsNotConverted);
        k.path = b.strings.own(path);
        count(out, k);
    }
    funnel(b, evs, &first_touch, out);
    reach(b, evs, out);
    devices(b, evs, out);
}

/// The path of a visitor without a sign-up, by the window rule converting
/// paths follow (`paths`): the touches of the lookback window ending at
/// its last touch in the run (`candidates`: its touch candidates there),
/// earlier days included, the gap rule run over all of them. `None` when
/// it has a sign-up at or before the run's end — a conversion (its path is
/// the conversion's) or a repeat of an earlier one: either way it is no
/// longer a visitor who might still sign up — or no touch in the run.
pub(crate) fn path_without_signup<'a>(
    b: &Builder<'_, 'a>,
    earlier: &[Ev<'a>],
    evs: &[Ev<'a>],
    candidates: &[&Ev<'a>],
) -> Option<String> {
    let last = candidates.last()?;
    if earlier
        .iter()
        .chain(evs)
        .any(|ev| rules::is_signup(&ev.e.event_type))
    {
        return None;
    }
    let campaign = b.campaign;
    // The visitor's touches (as `visitor_touches`: the gap rule over its
    // candidates, earlier days included) in the window `attribution::in_window`
    // keeps, `[end − lookback, end]`, in milliseconds: no `Touch` (nor its
    // channel's `String`) made per touch, as this runs for every run of
    // days of every scope.
    let end = last.e.ms;
    let lookback = u64::try_from(campaign.attribution.lookback.num_milliseconds()).unwrap_or(0);
    let from = end.saturating_sub(lookback);
    let with_earlier = touch_candidates(campaign, earlier.iter().chain(evs), last.visitor);
    let starts = rules::touch_starts(
        b.gap_ms,
        with_earlier
            .iter()
            .map(|ev| (ev.e.ms, ev.e.channel.as_str())),
    );
    let path = paths::path_of(
        with_earlier
            .iter()
            .zip(starts)
            .filter(|(ev, starts)| *starts && ev.e.ms <= end && ev.e.ms >= from)
            .map(|(ev, _)| ev.e.channel.as_str()),
    );
    (!path.is_empty()).then_some(path)
}

/// Per channel (and `*`) × device class × OS family of the visitor's
/// events: reached, and signed when it has a sign-up among `evs`.
pub(crate) fn devices<'a>(b: &mut Builder<'_, 'a>, evs: &[Ev<'a>], out: &mut Out) {
    let signed = evs.iter().any(|ev| rules::is_signup(&ev.e.event_type));
    let mut seen: SmallVec<[(u32, u32, u32); 16]> = SmallVec::new();
    for ev in evs {
        seen.push((b.all, ev.device, ev.os));
        seen.push((ev.channel, ev.device, ev.os));
    }
    seen.sort_unstable();
    seen.dedup();
    let (reached, signed_step) = (b.id(REACHED), b.id(SIGNED));
    let steps: &[u32] = if signed {
        &[reached, signed_step]
    } else {
        &[reached]
    };
    for (channel, class, os) in seen {
        for step in steps {
            let mut k = b.key(Figure::Devices);
            k.channel = channel;
            k.device_class = class;
            k.os_family = os;
            k.step = *step;
            count(out, k);
        }
    }
}

/// Per touch channel: touched → a landing view at or after the first touch
/// → a sign-up at or after it (whole seconds, as stored).
pub(crate) fn funnel<'a>(
    b: &mut Builder<'_, 'a>,
    evs: &[Ev<'a>],
    first: &[(&'a str, u64)],
    out: &mut Out,
) {
    if first.is_empty() {
        return;
    }
    let views: SmallVec<[u64; 8]> = evs
        .iter()
        .filter(|ev| rules::is_visit(&ev.e.event_type))
        .map(Ev::secs)
        .collect();
    let signup = evs
        .iter()
        .filter(|ev| rules::is_signup(&ev.e.event_type))
        .map(Ev::secs)
        .min();
    for &(channel, ft) in first {
        let channel = b.id(channel);
        let mut step = |name: &'static str, b: &mut Builder<'_, 'a>| {
            let mut k = b.key(Figure::Funnel);
            k.channel = channel;
            k.step = b.id(name);
            count(out, k);
        };
        step(TOUCHED, b);
        if !views.iter().any(|v| *v >= ft) {
            continue;
        }
        step(VISITED, b);
        if let Some(s) = signup.filter(|s| *s >= ft && *s > 0) {
            step(SIGNED, b);
            let secs = u32::try_from(s - ft).unwrap_or(u32::MAX);
            for (figure, seconds) in [
                (Figure::FunnelSeconds, secs),
                (Figure::FunnelHours, secs / 3600 * 3600),
            ] {
                let mut k = b.key(figure);
                k.channel = channel;
                k.delay_seconds = seconds;
                count(out, k);
            }
        }
    }
}

/// Events per touch channel (exposures included) and channel overlap.
pub(crate) fn reach<'a>(b: &mut Builder<'_, 'a>, evs: &[Ev<'a>], out: &mut Out) {
    let mut per_channel: SmallVec<[(&'a str, usize); 4]> = SmallVec::new();
    for ev in evs
        .iter()
        .filter(|ev| rules::is_touch_channel(b.campaign, &ev.e.channel))
    {
        match per_channel.iter_mut().find(|(c, _)| *c == ev.e.channel) {
            Some((_, n)) => *n += 1,
            None => per_channel.push((&ev.e.channel, 1)),
        }
    }
    let ids: SmallVec<[(u32, usize); 4]> = per_channel.iter().map(|(c, n)| (b.id(c), *n)).collect();
    for (channel, n) in &ids {
        let mut k = b.key(Figure::Frequency);
        k.channel = *channel;
        k.frequency = u8::try_from((*n).min(FREQUENCY_CAP)).unwrap_or(5);
        count(out, k);
        for (other, _) in &ids {
            let mut k = b.key(Figure::Overlap);
            k.channel = *channel;
            k.other_channel = *other;
            count(out, k);
        }
    }
}

/// Sign-ups, each contact once across the run's visitors.
pub(crate) fn contact_figures<'a>(b: &mut Builder<'_, 'a>, run: &[Ev<'a>], out: &mut Out) {
    let all = b.all;
    let mut groups: Vec<(Key, u32)> = Vec::new();
    // (channel, contact) → first sign-up, in time order: the first seen.
    let mut firsts: Vec<(u32, u32, u64, Day)> = Vec::new();
    // A sign-up without a contact (none reaches the store: the collector
    // requires the address) counts for no contact.
    for ev in run
        .iter()
        .filter(|ev| rules::is_signup(&ev.e.event_type) && !ev.e.contact.is_empty())
    {
        let contact = b.id(&ev.e.contact);
        let channel = ev.channel;
        let placement = (!ev.e.placement.is_empty()).then_some(ev.placement);
        for c in [all, channel] {
            let mut k = b.key(Figure::Signups);
            k.channel = c;
            groups.push((k, contact));
            if let Some(p) = placement {
                let mut k = b.key(Figure::SignupsByPlacement);
                k.channel = c;
                k.placement = p;
                groups.push((k, contact));
            }
            firsts.push((c, contact, ev.e.ms, ev.day));
        }
    }
    groups.sort_unstable();
    groups.dedup();
    for (k, _) in groups {
        count(out, k);
    }
    // Stable sort: within a (channel, contact), time order stays.
    firsts.sort_by_key(|f| (f.0, f.1));
    firsts.dedup_by(|later, earlier| (later.0, later.1) == (earlier.0, earlier.1));
    for (c, _, ms, day) in firsts {
        let mut k = b.key(Figure::SignupsHourly);
        k.channel = c;
        k.hour = hour_of(ms);
        count(out, k);
        let mut k = b.key(Figure::SignupsDaily);
        k.channel = c;
        k.day = day;
        count(out, k);
    }
}
