//! The rows behind the analysts' SQL views (docs/figures.md "SQL access for analysts"): per
//! visitor, its touches, its conversions (the first sign-up of each of its
//! contacts), each with its credit under every model (on the conversion's
//! own row, [`Key::credits`]), and its events per placement and local day — the same rules as the figures
//! ([`crate::rules`], [`crate::attribution`]), written out one row per
//! thing instead of summed.
//!
//! Bot events are left out, as on the dashboard's default.
//!
//! Stored like the figures, as changes: a batch adds a visitor's new rows
//! and subtracts its old ones ([`change`]), so the sum of `n` over a key's
//! stored rows is 1 while the thing holds and 0 once it no longer does; the
//! views keep the keys whose sum is positive.
//!
//! A contact that signed up on several visitors has a conversion row on
//! each (each visitor alone cannot know which sign-up was first);
//! [`later_conversions`] names all but the earliest, ties broken by event
//! id, as [`crate::figures`] does when it computes those visitors together,
//! and the `conversions` view leaves those out.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use uuid::Uuid;

use crate::attribution::{self, Conversion, Touch};
use crate::figures::{campaign_str, day_of, ChangeSets, Day, Event};
use crate::rules;
use crate::Campaign;

/// What a row is. [`Kind::name`] is what ClickHouse stores in `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A touch (gap rule), at the event that starts it.
    Touch,
    /// The first sign-up of one of the visitor's contacts, with its
    /// credit under every model ([`Key::credits`]).
    Conversion,
    /// The visitor's events at one placement on one local day.
    PlacementDay,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Touch, Kind::Conversion, Kind::PlacementDay];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Touch => "touch",
            Kind::Conversion => "conversion",
            Kind::PlacementDay => "placement_day",
        }
    }
}

/// Parts one credit of [`Key::credits`] from the next.
pub const CREDIT_SEPARATOR: char = '\x1D';
/// Parts the fields of one credit.
pub const CREDIT_FIELD_SEPARATOR: char = '\x1C';

/// One credit of a conversion ([`Key::credits`]): under `model`, the
/// share `credit` to `channel` (`direct` without a touch) for its
/// touches in `phase`; `conversion_phase` is the sign-up's.
#[derive(Debug, Clone, PartialEq)]
pub struct Credit<'a> {
    pub model: &'a str,
    pub channel: &'a str,
    pub phase: &'a str,
    pub conversion_phase: &'a str,
    pub credit: f64,
}

impl Credit<'_> {
    /// What a credit is of, in the order [`Key::credits`] lists them.
    fn names(&self) -> (&str, &str, &str, &str) {
        (self.model, self.channel, self.phase, self.conversion_phase)
    }
}

/// A conversion's [`Key::credits`]: `shares` summed by model, channel
/// and phases, sorted, each share the shortest text that reads back as
/// the same number ([`credits_of`] reads it).
fn credits_text<'a>(shares: impl IntoIterator<Item = Credit<'a>>) -> String {
    let mut credits: Vec<Credit<'_>> = Vec::new();
    for c in shares {
        match credits.iter_mut().find(|o| o.names() == c.names()) {
            Some(o) => o.credit += c.credit,
            None => credits.push(c),
        }
    }
    credits.sort_by(|a, b| a.names().cmp(&b.names()));
    let mut text = String::new();
    for c in credits {
        if !text.is_empty() {
            text.push(CREDIT_SEPARATOR);
        }
        for f in [c.model, c.channel, c.phase, c.conversion_phase] {
            text.push_str(f);
            text.push(CREDIT_FIELD_SEPARATOR);
        }
        text.push_str(&c.credit.to_string());
    }
    text
}

/// The credits a conversion's [`Key::credits`] holds, in its order.
pub fn credits_of(text: &str) -> Vec<Credit<'_>> {
    text.split(CREDIT_SEPARATOR)
        .filter(|r| !r.is_empty())
        .map(|r| {
            let mut f = r.split(CREDIT_FIELD_SEPARATOR);
            let mut next = || f.next().unwrap_or("");
            Credit {
                model: next(),
                channel: next(),
                phase: next(),
                conversion_phase: next(),
                credit: next().parse().unwrap_or(0.0),
            }
        })
        .collect()
}

/// What identifies a row. Fields a kind does not use are empty / zero.
/// Names borrow from the events and the campaign (no copy per row).
/// Ordered field by field in declaration order, as a derived order would.
#[derive(Debug, Clone, Hash)]
pub struct Key<'a> {
    pub kind: Kind,
    /// Time of the touch's first event / of the sign-up (ms since the epoch).
    pub ms: u64,
    /// The touch's first event / the sign-up.
    pub event_id: Uuid,
    /// Local day of `ms`, or the placement day.
    pub day: Day,
    /// Touch: of its first event; conversion: of the sign-up; credit: of
    /// the touches credited; placement day: of the events.
    pub phase: &'a str,
    /// Touch, placement day: of the events; conversion: of the sign-up;
    /// credit: the channel credited (`direct` without a touch).
    pub channel: &'a str,
    pub placement: &'a str,
    pub device: &'a str,
    /// Conversion: the contact hash. Carried in the ledger,
    /// never stored where analysts read ([`later_conversions`] tells the
    /// `conversions` view which visitors' conversions are not the first).
    pub contact: &'a str,
    /// Conversion: its credits under every model, as text ([`credits_of`]
    /// reads it; the analysts' `credits` view splits it). Part of the
    /// key, so that a conversion whose credits move (a touch before it
    /// arrives late) is its old row taken away and its new one added:
    /// one row per conversion, not one per model, channel and phase
    /// (those were a quarter of the journeys' rows).
    pub credits: std::borrow::Cow<'a, str>,
}

/// Two names, the same slice (the same event's or the campaign's, as
/// most are when a visitor's rows before and after a batch are compared)
/// equal without reading their bytes; comparing them byte by byte was a
/// tenth of the processor's time.
fn by_name(a: &str, b: &str) -> std::cmp::Ordering {
    if std::ptr::eq(a, b) {
        std::cmp::Ordering::Equal
    } else {
        a.cmp(b)
    }
}

impl Ord for Key<'_> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.kind
            .cmp(&o.kind)
            .then(self.ms.cmp(&o.ms))
            // A UUID's bytes in order are its number, big-endian.
            .then_with(|| self.event_id.as_u128().cmp(&o.event_id.as_u128()))
            .then(self.day.cmp(&o.day))
            .then_with(|| by_name(self.phase, o.phase))
            .then_with(|| by_name(self.channel, o.channel))
            .then_with(|| by_name(self.placement, o.placement))
            .then_with(|| by_name(self.device, o.device))
            .then_with(|| by_name(self.contact, o.contact))
            .then_with(|| by_name(&self.credits, &o.credits))
    }
}

impl PartialOrd for Key<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Key<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}

impl Eq for Key<'_> {}

/// A row's values. `n` is 1 for every row (its presence); placement days
/// also count events by what they are.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub n: i64,
    pub events: i64,
    pub exposures: i64,
    pub scans: i64,
    pub visits: i64,
    pub signups: i64,
}

impl Counts {
    fn add(&mut self, o: &Counts, sign: i64) {
        self.n += sign * o.n;
        self.events += sign * o.events;
        self.exposures += sign * o.exposures;
        self.scans += sign * o.scans;
        self.visits += sign * o.visits;
        self.signups += sign * o.signups;
    }

    fn is_zero(&self) -> bool {
        *self == Counts::default()
    }

    fn neg(&mut self) {
        let mut zero = Counts::default();
        zero.add(self, -1);
        *self = zero;
    }
}

/// Rows sorted by key, each key once. A sorted vector, not a map: a
/// visitor has a handful of rows, and the processor builds them for every
/// visitor of every batch on two threads (maps cost an allocation per
/// visitor and held the processor's memory up).
pub type Rows<'a> = Vec<(Key<'a>, Counts)>;

/// `rows` sorted, equal keys added up, keys that cancel dropped (callers
/// negate the rows to subtract before they pass them).
fn settle(mut rows: Vec<(Key<'_>, Counts)>) -> Rows<'_> {
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out: Rows<'_> = Vec::with_capacity(rows.len());
    for (k, c) in rows {
        match out.last_mut() {
            Some((last, sum)) if *last == k => sum.add(&c, 1),
            _ => out.push((k, c)),
        }
    }
    out.retain(|(_, c)| !c.is_zero());
    // Most of a returning visitor's rows cancel: the room they took is
    // not held until the batch is written.
    out.shrink_to_fit();
    out
}

fn one() -> Counts {
    Counts {
        n: 1,
        ..Counts::default()
    }
}

fn key<'a>(kind: Kind) -> Key<'a> {
    Key {
        kind,
        ms: 0,
        event_id: Uuid::nil(),
        day: 0,
        phase: "",
        channel: "",
        placement: "",
        device: "",
        contact: "",
        credits: std::borrow::Cow::Borrowed(""),
    }
}

/// One visitor's rows, from its events (any order, redeliveries allowed).
pub fn rows<'a>(campaign: &'a Campaign, events: &'a [Event]) -> Rows<'a> {
    rows_cut(campaign, events, Cut::default())
}

/// The rows a batch cannot change, left out of both sides of its change
/// ([`change_of`]). Its new events are all at `ms` or later, and on `day`
/// or later (the least of their days), so a touch or a sign-up before `ms` is the same on both sides
/// (the gap rule and a contact's first sign-up look back only; a
/// conversion's credit goes to touches up to its time), and so is a
/// placement day before `day`. Ties in time are not cut: order in the
/// same millisecond goes by event id.
#[derive(Debug, Clone, Copy, Default)]
struct Cut {
    ms: u64,
    day: Day,
}

/// [`rows`] without those `cut` leaves out.
fn rows_cut<'a>(campaign: &'a Campaign, events: &'a [Event], cut: Cut) -> Rows<'a> {
    let mut evs: Vec<&'a Event> = events.iter().filter(|e| !e.bot).collect();
    evs.sort_unstable_by_key(|e| (e.event_id, e.ms));
    evs.dedup_by_key(|e| e.event_id);
    evs.sort_unstable_by_key(|e| (e.ms, e.event_id));
    let mut out: Rows<'a> = Vec::new();
    let add = |out: &mut Rows<'a>, k: Key<'a>, c: Counts| out.push((k, c));

    // Touches: the gap rule over the touch candidates.
    let candidates: Vec<&'a Event> = evs
        .iter()
        .copied()
        .filter(|e| rules::is_touch_candidate(campaign, &e.channel, &e.event_type, &e.action))
        .collect();
    let starts = rules::touch_starts(
        rules::gap_ms(campaign),
        candidates.iter().map(|e| (e.ms, e.channel.as_str())),
    );
    let mut touches: Vec<Touch> = Vec::new();
    for (e, _) in candidates.iter().zip(starts).filter(|(_, s)| *s) {
        if e.ms >= cut.ms {
            add(&mut out, at_event(campaign, Kind::Touch, e), one());
        }
        touches.push(Touch {
            ts: ts(e.ms),
            event_id: e.event_id,
            channel: e.channel.to_string(),
        });
    }

    // Conversions and their credit.
    let first = rules::first_signups(
        evs.iter()
            .map(|e| (e.event_type.as_str(), e.contact.as_str(), *e)),
    );
    for e in first.into_values().filter(|e| e.ms >= cut.ms) {
        let mut k = at_event(campaign, Kind::Conversion, e);
        k.contact = &e.contact;
        let conversion = Conversion {
            ts: ts(e.ms),
            event_id: e.event_id,
        };
        let shares = attribution::shares(campaign, &conversion, &touches);
        let text = credits_text(shares.iter().map(|s| Credit {
            model: s.model,
            channel: campaign_str(campaign, &s.channel),
            phase: campaign_str(campaign, &s.touch_phase),
            conversion_phase: campaign_str(campaign, &s.conversion_phase),
            credit: s.credit,
        }));
        k.credits = std::borrow::Cow::Owned(text);
        add(&mut out, k, one());
    }

    // Placement days: the events that carry a placement (summed by `settle`).
    for e in evs.iter().filter(|e| !e.placement.is_empty()) {
        let mut k = key(Kind::PlacementDay);
        k.day = day_of(campaign, e.ms);
        if k.day < cut.day {
            continue;
        }
        k.phase = &e.phase;
        k.channel = &e.channel;
        k.placement = &e.placement;
        let c = Counts {
            n: 0,
            events: 1,
            exposures: i64::from(rules::is_exposure(&e.event_type, &e.action)),
            scans: i64::from(rules::is_scan(&e.event_type, &e.action)),
            visits: i64::from(rules::is_visit(&e.event_type)),
            signups: i64::from(rules::is_signup(&e.event_type)),
        };
        add(&mut out, k, c);
    }
    let mut out = settle(out);
    // A placement day is there once (n = 1), however many events it has.
    for (k, c) in &mut out {
        if k.kind == Kind::PlacementDay {
            c.n = 1;
        }
    }
    out
}

/// The key of a row about one event (a touch's first, a sign-up): its
/// time, id, local day, phase, channel, placement and device.
fn at_event<'a>(campaign: &Campaign, kind: Kind, e: &'a Event) -> Key<'a> {
    let mut k = key(kind);
    k.ms = e.ms;
    k.event_id = e.event_id;
    k.day = day_of(campaign, e.ms);
    k.phase = &e.phase;
    k.channel = &e.channel;
    k.placement = &e.placement;
    k.device = &e.device;
    k
}

fn ts(ms: u64) -> DateTime<chrono::Utc> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default()
}

/// What a visitor's rows become when its events go from `old` to `new`:
/// the rows of `new` minus those of `old`, rows that cancel left out.
pub fn change<'a>(campaign: &'a Campaign, old: &'a [Event], new: &'a [Event]) -> Rows<'a> {
    change_cut(campaign, old, new, Cut::default())
}

/// [`change`] of a batch: the visitor's rows after it minus before,
/// without computing the rows the batch cannot change ([`Cut`]: on a
/// returning visitor, most of them).
pub fn change_of<'a>(campaign: &'a Campaign, sets: &'a ChangeSets) -> Rows<'a> {
    let fresh = sets.fresh();
    let (Some(ms), Some(day)) = (
        fresh.iter().map(|e| e.ms).min(),
        // Each new event's day, not the earliest one's: a time past what a
        // date holds is on day 0 ([`day_of`]), before the others' days.
        fresh.iter().map(|e| day_of(campaign, e.ms)).min(),
    ) else {
        return Rows::new();
    };
    let cut = Cut { ms, day };
    change_cut(campaign, sets.known(), sets.all_events(), cut)
}

/// [`change`] without the rows `cut` leaves out of both sides.
fn change_cut<'a>(
    campaign: &'a Campaign,
    old: &'a [Event],
    new: &'a [Event],
    cut: Cut,
) -> Rows<'a> {
    let out = rows_cut(campaign, new, cut);
    if old.is_empty() {
        return out;
    }
    minus(out, rows_cut(campaign, old, cut))
}

/// `plus − minus` of two settled (sorted) sets of rows, merged in one
/// pass: sorting them together again took a tenth of the processor's time.
fn minus<'a>(plus: Rows<'a>, minus: Rows<'a>) -> Rows<'a> {
    use std::cmp::Ordering;
    let mut out: Rows<'a> = Vec::with_capacity(plus.len() + minus.len());
    let mut plus = plus.into_iter().peekable();
    let mut minus = minus.into_iter().peekable();
    loop {
        let order = match (plus.peek(), minus.peek()) {
            (Some((p, _)), Some((m, _))) => p.cmp(m),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => break,
        };
        let next = match order {
            Ordering::Less => plus.next(),
            Ordering::Greater => minus.next().map(|(k, mut c)| {
                c.neg();
                (k, c)
            }),
            Ordering::Equal => plus.next().zip(minus.next()).map(|((k, mut c), (_, m))| {
                c.add(&m, -1);
                (k, c)
            }),
        };
        if let Some((k, c)) = next.filter(|(_, c)| !c.is_zero()) {
            out.push((k, c));
        }
    }
    out.shrink_to_fit();
    out
}

/// Adds `rows` to `sum` (`sign` −1 subtracts), dropping keys that cancel.
pub fn add<'a>(sum: &mut Rows<'a>, rows: &Rows<'a>, sign: i64) {
    let mut both = std::mem::take(sum);
    both.extend(rows.iter().map(|(k, c)| {
        let mut c = *c;
        if sign < 0 {
            c.neg();
        }
        (k.clone(), c)
    }));
    *sum = settle(both);
}

/// The conversions that are not their person's first. A contact seen on
/// several visitors has a conversion row on each (each visitor alone
/// cannot know which sign-up came first); every one of them but the
/// earliest (ties broken by event id, as [`crate::figures`] chooses) is
/// returned, as (visitor, sign-up event id). The processor keeps these in
/// the analysts' `later_conversions`, which their `conversions` view
/// leaves out, so that no table they read holds a contact hash.
///
/// `visitors`: every visitor of the contacts `in_scope` keeps (all of
/// them when it is `None`), with its events; contacts outside the scope
/// are not judged.
pub fn later_conversions<'a>(
    campaign: &'a Campaign,
    visitors: impl IntoIterator<Item = (&'a str, &'a [Event])>,
    in_scope: Option<&BTreeSet<&str>>,
) -> BTreeSet<(&'a str, Uuid)> {
    let mut by_contact: BTreeMap<&'a str, Vec<(u64, Uuid, &'a str)>> = BTreeMap::new();
    for (visitor, events) in visitors {
        for (k, _) in rows(campaign, events) {
            if k.kind == Kind::Conversion && in_scope.is_none_or(|s| s.contains(k.contact)) {
                by_contact
                    .entry(k.contact)
                    .or_default()
                    .push((k.ms, k.event_id, visitor));
            }
        }
    }
    let mut later = BTreeSet::new();
    for mut conversions in by_contact.into_values() {
        conversions.sort_unstable();
        later.extend(conversions.into_iter().skip(1).map(|(_, e, v)| (v, e)));
    }
    later
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn campaign() -> Campaign {
        Campaign::from_toml(include_str!("../../deploy/campaign.toml")).unwrap()
    }

    /// 10 February 2025, 10:00 Paris (phase 2), plus `min` minutes.
    fn at(min: u64) -> u64 {
        1_739_178_000_000 + min * 60_000
    }

    fn ev(
        n: u128,
        min: u64,
        event_type: &str,
        action: &str,
        channel: &str,
        placement: &str,
    ) -> Event {
        let c = campaign();
        Event {
            event_id: Uuid::from_u128(n),
            ms: at(min),
            event_type: event_type.into(),
            action: action.into(),
            channel: channel.into(),
            placement: placement.into(),
            phase: c.phase_at(ts(at(min))).into(),
            device: "mobile".into(),
            os: "iOS".into(),
            bot: false,
            contact: if event_type == "signup" {
                "c1".into()
            } else {
                Default::default()
            },
        }
    }

    #[test]
    fn keys_are_ordered_field_by_field_whatever_their_names_point_into() {
        // Equal names in two buffers, and names that differ, in every field.
        let texts = ["", "a", "b", "metro", "tinder"];
        let copies: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
        let name = |i: usize, copy: bool| -> &str {
            if copy {
                copies[i % 5].as_str()
            } else {
                texts[i % 5]
            }
        };
        let mut keys = Vec::new();
        for i in 0..400_usize {
            let copy = i % 3 == 0;
            keys.push(Key {
                kind: Kind::ALL[i % 3],
                ms: (i % 2) as u64,
                event_id: Uuid::from_u128((i % 3) as u128 * (1 << 120) + (i % 2) as u128),
                day: (i % 2) as u32,
                phase: name(i / 2, copy),
                channel: name(i / 3, !copy),
                placement: name(i / 5, copy),
                device: name(i / 7, copy),
                contact: name(i / 11, !copy),
                credits: if i % 2 == 0 {
                    std::borrow::Cow::Borrowed(name(i / 13, copy))
                } else {
                    std::borrow::Cow::Owned(name(i / 17, copy).to_owned())
                },
            });
        }
        let tuple = |k: &Key<'_>| {
            (
                k.kind,
                k.ms,
                *k.event_id.as_bytes(),
                k.day,
                k.phase.to_owned(),
                k.channel.to_owned(),
                k.placement.to_owned(),
                k.device.to_owned(),
                k.contact.to_owned(),
                k.credits.to_string(),
            )
        };
        for a in &keys {
            for b in keys.iter().step_by(7) {
                assert_eq!(a.cmp(b), tuple(a).cmp(&tuple(b)), "{a:?} {b:?}");
                assert_eq!(a == b, tuple(a) == tuple(b));
            }
        }
    }

    fn of<'r, 'a>(rows: &'r Rows<'a>, kind: Kind) -> Vec<(&'r Key<'a>, &'r Counts)> {
        rows.iter()
            .filter(|(k, _)| k.kind == kind)
            .map(|(k, c)| (k, c))
            .collect()
    }

    /// A metro scan, its page view, a dating-app impression, a second metro
    /// scan 40 minutes later (a new touch), a sign-up, and a second sign-up
    /// of the same contact (not a second conversion).
    fn journey() -> Vec<Event> {
        vec![
            ev(1, 0, "qr_scan", "", "metro", "M-CHATELET"),
            ev(2, 1, "page_view", "", "metro", "M-CHATELET"),
            ev(3, 5, "tinder_card", "impression", "tinder", "T-VOEUX"),
            ev(4, 41, "qr_scan", "", "metro", "M-CHATELET"),
            ev(5, 50, "signup", "", "site", ""),
            ev(6, 90, "signup", "", "site", ""),
        ]
    }

    #[test]
    fn a_journey_in_rows() {
        let cp = campaign();
        let events = journey();
        let got = rows(&cp, &events);
        let touches = of(&got, Kind::Touch);
        assert_eq!(touches.len(), 2, "{touches:?}");
        assert_eq!(touches[0].0.event_id, Uuid::from_u128(1));
        assert_eq!(touches[1].0.event_id, Uuid::from_u128(4));
        assert!(touches
            .iter()
            .all(|(k, c)| k.channel == "metro" && c.n == 1));
        let conversions = of(&got, Kind::Conversion);
        assert_eq!(conversions.len(), 1);
        assert_eq!(conversions[0].0.event_id, Uuid::from_u128(5));
        assert_eq!(conversions[0].0.contact, "c1");
        // Both touches are metro in one phase: every model gives metro 1.
        let credits = credits_of(&conversions[0].0.credits);
        assert_eq!(credits.len(), 5);
        for c in credits {
            assert_eq!(c.channel, "metro");
            assert_eq!(c.credit, 1.0, "{c:?}");
        }
        let days = of(&got, Kind::PlacementDay);
        assert_eq!(days.len(), 2);
        let metro = days
            .iter()
            .find(|(k, _)| k.placement == "M-CHATELET")
            .unwrap()
            .1;
        assert_eq!(
            (
                metro.events,
                metro.scans,
                metro.visits,
                metro.exposures,
                metro.signups
            ),
            (3, 2, 1, 0, 0)
        );
        let card = days
            .iter()
            .find(|(k, _)| k.placement == "T-VOEUX")
            .unwrap()
            .1;
        assert_eq!((card.events, card.exposures, card.scans), (1, 1, 0));
    }

    #[test]
    fn two_channels_share_the_credit_by_model() {
        let cp = campaign();
        let mut events = journey();
        // A card click between the scans: a tinder touch.
        events.push(ev(7, 20, "tinder_card", "click", "tinder", "T-VOEUX"));
        let got = rows(&cp, &events);
        let conversions = of(&got, Kind::Conversion);
        let credits = credits_of(&conversions[0].0.credits);
        let credit = |model: &str, channel: &str| -> f64 {
            credits
                .iter()
                .filter(|c| c.model == model && c.channel == channel)
                .map(|c| c.credit)
                .sum()
        };
        assert!((credit("first_touch", "metro") - 1.0).abs() < 1e-12);
        assert!((credit("last_touch", "metro") - 1.0).abs() < 1e-12);
        assert!((credit("linear", "tinder") - 1.0 / 3.0).abs() < 1e-12);
        assert!((credit("linear", "metro") - 2.0 / 3.0).abs() < 1e-12);
        for model in attribution::Model::ALL.map(attribution::Model::as_str) {
            let total = credit(model, "metro") + credit(model, "tinder");
            assert!((total - 1.0).abs() < 1e-12, "{model}: {total}");
        }
    }

    #[test]
    fn bots_and_redeliveries_are_left_out() {
        let cp = campaign();
        let mut events = journey();
        events.push(events[0].clone());
        let mut bot = ev(8, 3, "qr_scan", "", "gares", "G-NATIONAL");
        bot.bot = true;
        events.push(bot);
        let clean = journey();
        assert_eq!(rows(&cp, &events), rows(&cp, &clean));
    }

    #[test]
    fn the_change_of_a_batch_turns_the_old_rows_into_the_new() {
        let cp = campaign();
        let all = journey();
        let mut sum = Rows::new();
        for cut in [0, 2, 4, 6] {
            let (before, upto) = (&all[..cut.max(2) - 2], &all[..cut]);
            add(&mut sum, &change(&cp, before, upto), 1);
            assert_eq!(sum, rows(&cp, upto), "after {cut} events");
        }
        // Credits that move (a new touch before the sign-up): the
        // conversion's old row taken away, its new one added.
        let mut more = all.clone();
        more.push(ev(7, 20, "tinder_card", "click", "tinder", "T-VOEUX"));
        let d = change(&cp, &all, &more);
        let conversions = of(&d, Kind::Conversion);
        assert_eq!(conversions.len(), 2, "{conversions:?}");
        let n: Vec<i64> = conversions.iter().map(|(_, c)| c.n).collect();
        assert_eq!(n.iter().sum::<i64>(), 0);
        let (old, new) = if n[0] < 0 {
            (conversions[0].0, conversions[1].0)
        } else {
            (conversions[1].0, conversions[0].0)
        };
        let linear_metro = |k: &Key<'_>| -> f64 {
            credits_of(&k.credits)
                .iter()
                .find(|c| c.model == "linear" && c.channel == "metro")
                .unwrap()
                .credit
        };
        assert_eq!(linear_metro(old), 1.0);
        assert!((linear_metro(new) - 2.0 / 3.0).abs() < 1e-12);
        // Nothing new, nothing changed.
        assert!(change(&cp, &all, &all).is_empty());
    }

    /// One person on a phone and a laptop (the laptop's sign-up first),
    /// a second contact signed up on the phone only, and a bot's earlier
    /// sign-up of the first contact (bots convert nobody).
    #[test]
    fn only_a_persons_first_conversion_is_not_later() {
        let cp = campaign();
        let with = |mut e: Event, contact: &str, bot: bool| {
            e.contact = contact.into();
            e.bot = bot;
            e
        };
        let phone = vec![
            ev(1, 0, "qr_scan", "", "metro", "M-CHATELET"),
            with(ev(2, 30, "signup", "", "site", ""), "c1", false),
            with(ev(3, 31, "signup", "", "site", ""), "c2", false),
        ];
        let laptop = vec![with(ev(4, 20, "signup", "", "site", ""), "c1", false)];
        let bot = vec![with(ev(5, 1, "signup", "", "site", ""), "c1", true)];
        let visitors = [
            ("phone", phone.as_slice()),
            ("laptop", laptop.as_slice()),
            ("bot", bot.as_slice()),
        ];
        let later = later_conversions(&cp, visitors, None);
        assert_eq!(
            later.into_iter().collect::<Vec<_>>(),
            [("phone", Uuid::from_u128(2))]
        );
        // Out of scope, c1 is not judged; c2 has one conversion.
        let scope: BTreeSet<&str> = ["c2"].into();
        assert!(later_conversions(&cp, visitors, Some(&scope)).is_empty());
        // Same minute: the lower event id is the first.
        let laptop = vec![with(ev(9, 30, "signup", "", "site", ""), "c1", false)];
        let later = later_conversions(
            &cp,
            [("phone", phone.as_slice()), ("laptop", laptop.as_slice())],
            None,
        );
        assert_eq!(
            later.into_iter().collect::<Vec<_>>(),
            [("laptop", Uuid::from_u128(9))]
        );
    }

    #[test]
    fn every_kind_has_a_name() {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["touch", "conversion", "placement_day"]);
    }

    #[test]
    fn credits_read_back_as_they_were_written() {
        let cp = campaign();
        let mut events = journey();
        events.push(ev(7, 20, "tinder_card", "click", "tinder", "T-VOEUX"));
        let got = rows(&cp, &events);
        let conversion = of(&got, Kind::Conversion)[0].0;
        let credits = credits_of(&conversion.credits);
        // Every model's shares, channels apart, sorted; each model's sum 1.
        let models: BTreeSet<&str> = credits.iter().map(|c| c.model).collect();
        assert_eq!(models.len(), attribution::Model::ALL.len(), "{credits:?}");
        let mut sorted = credits.clone();
        sorted.sort_by(|a, b| (a.model, a.channel, a.phase).cmp(&(b.model, b.channel, b.phase)));
        assert_eq!(sorted, credits);
        let linear: f64 = credits
            .iter()
            .filter(|c| c.model == "linear")
            .map(|c| c.credit)
            .sum();
        assert!((linear - 1.0).abs() < 1e-12);
        let third = credits
            .iter()
            .find(|c| c.model == "linear" && c.channel == "tinder")
            .unwrap();
        assert_eq!(third.credit, 1.0 / 3.0, "the exact number back");
        assert_eq!(third.conversion_phase, conversion.phase);
    }
}
