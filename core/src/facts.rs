//! Facts: every dashboard figure as a sum of per-visitor contributions,
//! kept up to date by the processor so a question over 10 M events reads a
//! few thousand pre-summed rows instead of the events.
//!
//! A visitor's contribution is a pure function of its accounted events
//! ([`contribution`]): event counts, the visitor's presence per phase ×
//! channel, hour, day and placement, its touches (gap rule), funnel steps,
//! reach frequency and channel overlap, and — for its sign-ups — distinct
//! contacts and the attribution credit of each conversion under the five
//! models. Each is computed twice: with bot events (`bots = 1`) and without
//! (`bots = 0`, the dashboard's default), and for each phase filter
//! (`scope` = a phase id, or [`ALL`]). The figures cover the campaign's
//! range (first phase start → last phase end), the dashboard's default.
//!
//! [`account`] writes a batch: it reads the ledger of the batch's visitors,
//! computes each visitor's contribution before and after its new events and
//! inserts the new ledger rows carrying the difference, in one INSERT (see
//! `0003_facts.sql`). Redelivered events are already in the ledger and
//! change nothing; a crash before the INSERT leaves nothing, after it
//! leaves everything.
//!
//! Contacts are per visitor: the rare contact that signed up on two
//! visitors would count twice. Such contacts are listed in `shared_contacts`
//! and [`correction`] recomputes their visitors together, contacts counted
//! once, at question time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use crate::attribution::{self, Contact, Conversion};
use crate::event::{EventRow, TinderAction};
use crate::Campaign;

/// The scope of figures computed over every phase.
pub const ALL: &str = "*";

/// Event counts: phase × channel × placement × type × action.
pub const EVENTS: &str = "ev";
/// Event counts per UTC hour (`bucket`): phase × channel.
pub const EVENTS_HOURLY: &str = "evh";
/// Distinct visitors per `channel` (or [`ALL`]).
pub const VISITORS: &str = "vis";
/// Distinct visitors per hour / local day (`bucket`) × channel (or [`ALL`]).
pub const VISITORS_HOURLY: &str = "vish";
pub const VISITORS_DAILY: &str = "visd";
/// Distinct visitors with a scan (QR scan, card click) per placement × channel (or [`ALL`]).
pub const SCANNERS: &str = "scan";
/// Touches per channel × phase of the touch's first event.
pub const TOUCHES: &str = "touch";
/// Funnel steps per touch channel: `k` = touched / visited / signed.
pub const FUNNEL: &str = "fun";
/// Seconds from first touch to sign-up (`k`), one per visitor who signed.
pub const FUNNEL_SECONDS: &str = "funs";
/// Visitors per channel by their number of contacts with it (`k` = 1…5, 5 = 5+).
pub const FREQUENCY: &str = "freq";
/// Visitors reached by both `channel` and `k`.
pub const OVERLAP: &str = "ovl";
/// Distinct contacts who signed up, per channel (or [`ALL`]).
pub const SIGNUPS: &str = "sg";
/// Distinct contacts who signed up, per placement × channel (or [`ALL`]).
pub const SIGNUPS_BY_PLACEMENT: &str = "sgp";
/// Contacts by the hour / local day (`bucket`) of their first sign-up × channel (or [`ALL`]).
pub const SIGNUPS_HOURLY: &str = "sgh";
pub const SIGNUPS_DAILY: &str = "sgd";
/// Conversions (first sign-up of a contact) in the campaign's range.
pub const CONVERSIONS: &str = "conv";
/// Credit (`credit`) per model (`k`) × channel × touch phase × conversion phase (`k2`).
pub const CREDITS: &str = "cred";

/// One accounted event, as far as the figures care.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct LedgerEvent {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    /// Event time, milliseconds since the epoch.
    pub ms: u64,
    pub ev_type: String,
    pub ev_action: String,
    pub ev_channel: String,
    pub ev_placement: String,
    pub ev_phase: String,
    pub ev_bot: u8,
    pub ev_contact: String,
}

impl LedgerEvent {
    pub fn from_row(r: &EventRow) -> Self {
        Self {
            event_id: r.event_id,
            ms: u64::try_from(r.ts.timestamp().max(0)).unwrap_or(0) * 1000 + u64::from(r.ts_ms),
            ev_type: r.event_type.clone(),
            ev_action: r.action.clone(),
            ev_channel: r.channel.clone(),
            ev_placement: r.placement.clone(),
            ev_phase: r.phase.clone(),
            ev_bot: r.is_bot,
            ev_contact: r.contact_hash.clone(),
        }
    }

    fn secs(&self) -> u64 {
        self.ms / 1000
    }

    fn is_scan(&self) -> bool {
        self.ev_type == "qr_scan" || (self.ev_type == "tinder_card" && self.ev_action == "click")
    }

    fn is_exposure(&self) -> bool {
        self.ev_type == "tinder_card"
            && (self.ev_action == "impression" || self.ev_action == "pass")
    }
}

/// What a fact is about. Unused dimensions are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FactKey {
    pub metric: &'static str,
    pub bots: u8,
    pub scope: String,
    pub phase: String,
    pub channel: String,
    pub placement: String,
    pub event_type: String,
    pub action: String,
    pub k: String,
    pub k2: String,
    pub bucket: u32,
}

/// A count and a credit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Value {
    pub n: i64,
    pub credit: f64,
}

pub type Facts = BTreeMap<FactKey, Value>;

/// `into += sign × f`, dropping entries that come to zero.
pub fn add(into: &mut Facts, f: &Facts, sign: i64) {
    for (k, v) in f {
        let e = into.entry(k.clone()).or_default();
        e.n += sign * v.n;
        e.credit += sign as f64 * v.credit;
        if e.n == 0 && e.credit == 0.0 {
            into.remove(k);
        }
    }
}

/// `new − old`.
pub fn delta(old: &Facts, new: &Facts) -> Facts {
    let mut d = new.clone();
    add(&mut d, old, -1);
    d
}

struct Builder<'a> {
    out: Facts,
    bots: u8,
    campaign: &'a Campaign,
}

impl Builder<'_> {
    fn key(&self, metric: &'static str, scope: &str) -> FactKey {
        FactKey {
            metric,
            bots: self.bots,
            scope: scope.to_owned(),
            ..Default::default()
        }
    }

    fn count(&mut self, key: FactKey, n: i64) {
        self.out.entry(key).or_default().n += n;
    }

    fn credit(&mut self, key: FactKey, credit: f64) {
        self.out.entry(key).or_default().credit += credit;
    }

    fn touch_channel(&self, channel: &str) -> bool {
        self.campaign.channel(channel).is_some_and(|c| c.touch)
    }
}

fn hour_of(ms: u64) -> u32 {
    u32::try_from(ms / 1000 / 3600 * 3600).unwrap_or(u32::MAX)
}

/// Start (UTC epoch seconds) of the campaign's local day holding `ms`.
fn day_of(campaign: &Campaign, ms: u64) -> u32 {
    let t =
        DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default();
    let local = t.with_timezone(&campaign.timezone).date_naive();
    let start = campaign
        .timezone
        .from_local_datetime(&local.and_time(NaiveTime::MIN))
        .earliest()
        .map_or(t, |s| s.with_timezone(&Utc));
    u32::try_from(start.timestamp().max(0)).unwrap_or(u32::MAX)
}

/// The campaign's range in whole seconds: first phase start → last phase end.
pub fn range_secs(campaign: &Campaign) -> Option<(u64, u64)> {
    let s = campaign.phases.first()?.starts_at.timestamp();
    let t = campaign.phases.last()?.ends_at.timestamp();
    Some((u64::try_from(s).ok()?, u64::try_from(t).ok()?))
}

/// The contribution of a set of visitors (their events, in any order,
/// duplicates allowed) to every figure; contacts are counted once across
/// the set. The processor calls it with one visitor at a time.
pub fn contribution(campaign: &Campaign, visitors: &[(String, Vec<LedgerEvent>)]) -> Facts {
    let mut b = Builder {
        out: Facts::new(),
        bots: 0,
        campaign,
    };
    let Some((start, end)) = range_secs(campaign) else {
        return b.out;
    };
    for bots in [0u8, 1] {
        b.bots = bots;
        let mut prepared: Vec<(&str, Vec<&LedgerEvent>)> = Vec::new();
        for (visitor, events) in visitors {
            let mut seen = HashSet::new();
            let mut evs: Vec<&LedgerEvent> = events
                .iter()
                .filter(|e| bots == 1 || e.ev_bot == 0)
                .filter(|e| seen.insert(e.event_id))
                .collect();
            evs.sort_by_key(|e| (e.ms, e.event_id));
            prepared.push((visitor.as_str(), evs));
        }
        for (_, evs) in &prepared {
            let in_range: Vec<&LedgerEvent> = evs
                .iter()
                .copied()
                .filter(|e| e.secs() >= start && e.secs() < end)
                .collect();
            visitor_facts(&mut b, &in_range);
        }
        contact_facts(&mut b, &prepared, start, end);
    }
    b.out.retain(|_, v| v.n != 0 || v.credit != 0.0);
    b.out
}

/// The phase filters a set of events answers: every phase, and each phase seen.
fn scopes<'e>(events: &[&'e LedgerEvent]) -> Vec<(String, Vec<&'e LedgerEvent>)> {
    let mut out = vec![(ALL.to_owned(), events.to_vec())];
    let phases: BTreeSet<&str> = events.iter().map(|e| e.ev_phase.as_str()).collect();
    for p in phases {
        out.push((
            p.to_owned(),
            events.iter().copied().filter(|e| e.ev_phase == p).collect(),
        ));
    }
    out
}

fn visitor_facts(b: &mut Builder<'_>, events: &[&LedgerEvent]) {
    if events.is_empty() {
        return;
    }
    for e in events {
        let mut k = b.key(EVENTS, "");
        k.phase = e.ev_phase.clone();
        k.channel = e.ev_channel.clone();
        k.placement = e.ev_placement.clone();
        k.event_type = e.ev_type.clone();
        k.action = e.ev_action.clone();
        b.count(k, 1);
        let mut k = b.key(EVENTS_HOURLY, "");
        k.phase = e.ev_phase.clone();
        k.channel = e.ev_channel.clone();
        k.bucket = hour_of(e.ms);
        b.count(k, 1);
    }
    for (scope, evs) in scopes(events) {
        if evs.is_empty() {
            continue;
        }
        presence(b, &scope, &evs);
        touches(b, &scope, &evs);
        funnel(b, &scope, &evs);
        reach(b, &scope, &evs);
    }
}

/// Distinct-visitor figures: per channel, per hour and day, per placement scanned.
fn presence(b: &mut Builder<'_>, scope: &str, evs: &[&LedgerEvent]) {
    let mut channels: BTreeSet<&str> = BTreeSet::from([ALL]);
    let mut hours: BTreeSet<(u32, &str)> = BTreeSet::new();
    let mut days: BTreeSet<(u32, &str)> = BTreeSet::new();
    let mut scanned: BTreeSet<(&str, &str)> = BTreeSet::new();
    for e in evs {
        channels.insert(&e.ev_channel);
        let (h, d) = (hour_of(e.ms), day_of(b.campaign, e.ms));
        for c in [ALL, e.ev_channel.as_str()] {
            hours.insert((h, c));
            days.insert((d, c));
            if e.is_scan() && !e.ev_placement.is_empty() {
                scanned.insert((&e.ev_placement, c));
            }
        }
    }
    for c in channels {
        let mut k = b.key(VISITORS, scope);
        k.channel = c.to_owned();
        b.count(k, 1);
    }
    for (metric, set) in [(VISITORS_HOURLY, hours), (VISITORS_DAILY, days)] {
        for (bucket, c) in set {
            let mut k = b.key(metric, scope);
            k.channel = c.to_owned();
            k.bucket = bucket;
            b.count(k, 1);
        }
    }
    for (p, c) in scanned {
        let mut k = b.key(SCANNERS, scope);
        k.placement = p.to_owned();
        k.channel = c.to_owned();
        b.count(k, 1);
    }
}

/// The events that can make a touch: touch channels, no exposure.
fn touch_events<'e>(b: &Builder<'_>, evs: &[&'e LedgerEvent]) -> Vec<&'e LedgerEvent> {
    evs.iter()
        .copied()
        .filter(|e| b.touch_channel(&e.ev_channel) && !e.is_exposure())
        .collect()
}

/// The gap rule (DESIGN §2): per channel, an event more than the gap after
/// the visitor's previous event of the channel starts a touch.
fn touches(b: &mut Builder<'_>, scope: &str, evs: &[&LedgerEvent]) {
    let gap =
        u64::try_from(b.campaign.attribution.touch_gap.num_milliseconds()).unwrap_or(u64::MAX);
    let mut last: HashMap<&str, u64> = HashMap::new();
    for e in touch_events(b, evs) {
        let starts = last
            .get(e.ev_channel.as_str())
            .is_none_or(|prev| e.ms - prev >= gap);
        if starts {
            let mut k = b.key(TOUCHES, scope);
            k.channel = e.ev_channel.clone();
            k.phase = e.ev_phase.clone();
            b.count(k, 1);
        }
        last.insert(&e.ev_channel, e.ms);
    }
}

/// Per touch channel: touched → landing view at or after the first touch →
/// sign-up at or after it (whole seconds, as stored).
fn funnel(b: &mut Builder<'_>, scope: &str, evs: &[&LedgerEvent]) {
    let mut first: BTreeMap<&str, u64> = BTreeMap::new();
    for e in touch_events(b, evs) {
        first.entry(&e.ev_channel).or_insert(e.secs());
    }
    let views: Vec<u64> = evs
        .iter()
        .filter(|e| e.ev_type == "page_view")
        .map(|e| e.secs())
        .collect();
    let signup = evs
        .iter()
        .filter(|e| e.ev_type == "signup")
        .map(|e| e.secs())
        .min();
    for (channel, ft) in first {
        let step = |name: &str, b: &mut Builder<'_>| {
            let mut k = b.key(FUNNEL, scope);
            k.channel = channel.to_owned();
            k.k = name.to_owned();
            b.count(k, 1);
        };
        step("touched", b);
        if !views.iter().any(|v| *v >= ft) {
            continue;
        }
        step("visited", b);
        if let Some(s) = signup.filter(|s| *s >= ft && *s > 0) {
            step("signed", b);
            let mut k = b.key(FUNNEL_SECONDS, scope);
            k.channel = channel.to_owned();
            k.k = (s - ft).to_string();
            b.count(k, 1);
        }
    }
}

/// Contacts per touch channel (exposures included) and channel overlap.
fn reach(b: &mut Builder<'_>, scope: &str, evs: &[&LedgerEvent]) {
    let mut per_channel: BTreeMap<&str, i64> = BTreeMap::new();
    for e in evs.iter().filter(|e| b.touch_channel(&e.ev_channel)) {
        *per_channel.entry(&e.ev_channel).or_default() += 1;
    }
    for (channel, n) in &per_channel {
        let mut k = b.key(FREQUENCY, scope);
        k.channel = (*channel).to_owned();
        k.k = (*n).min(5).to_string();
        b.count(k, 1);
        for other in per_channel.keys() {
            let mut k = b.key(OVERLAP, scope);
            k.channel = (*channel).to_owned();
            k.k = (*other).to_owned();
            b.count(k, 1);
        }
    }
}

/// Sign-up figures, contacts counted once across the set of visitors, and
/// the attribution credit of each conversion (first sign-up of a contact).
fn contact_facts(
    b: &mut Builder<'_>,
    visitors: &[(&str, Vec<&LedgerEvent>)],
    start: u64,
    end: u64,
) {
    // Distinct contacts per scope × group; first sign-up per scope × channel.
    let mut groups: BTreeMap<FactKey, BTreeSet<&str>> = BTreeMap::new();
    let mut firsts: BTreeMap<(String, &str, &str), u64> = BTreeMap::new();
    for (_, evs) in visitors {
        for e in evs.iter().filter(|e| e.ev_type == "signup") {
            if e.secs() < start || e.secs() >= end {
                continue;
            }
            for scope in [ALL, e.ev_phase.as_str()] {
                for c in [ALL, e.ev_channel.as_str()] {
                    let mut k = b.key(SIGNUPS, scope);
                    k.channel = c.to_owned();
                    groups.entry(k).or_default().insert(&e.ev_contact);
                    if !e.ev_placement.is_empty() {
                        let mut k = b.key(SIGNUPS_BY_PLACEMENT, scope);
                        k.channel = c.to_owned();
                        k.placement = e.ev_placement.clone();
                        groups.entry(k).or_default().insert(&e.ev_contact);
                    }
                    if !e.ev_contact.is_empty() {
                        let f = firsts
                            .entry((scope.to_owned(), c, &e.ev_contact))
                            .or_insert(e.secs());
                        *f = (*f).min(e.secs());
                    }
                }
            }
        }
    }
    for (k, contacts) in groups {
        b.count(k, i64::try_from(contacts.len()).unwrap_or(i64::MAX));
    }
    for ((scope, c, _), secs) in firsts {
        for (metric, bucket) in [
            (SIGNUPS_HOURLY, hour_of(secs * 1000)),
            (SIGNUPS_DAILY, day_of(b.campaign, secs * 1000)),
        ] {
            let mut k = b.key(metric, &scope);
            k.channel = c.to_owned();
            k.bucket = bucket;
            b.count(k, 1);
        }
    }
    attribution_facts(b, visitors, start, end);
}

fn attribution_facts(
    b: &mut Builder<'_>,
    visitors: &[(&str, Vec<&LedgerEvent>)],
    start: u64,
    end: u64,
) {
    // First sign-up of each contact over all time (ties by event id).
    let mut first: BTreeMap<&str, (u64, Uuid, usize, &LedgerEvent)> = BTreeMap::new();
    for (i, (_, evs)) in visitors.iter().enumerate() {
        for e in evs
            .iter()
            .filter(|e| e.ev_type == "signup" && !e.ev_contact.is_empty())
        {
            let cand = (e.ms, e.event_id, i, *e);
            first
                .entry(&e.ev_contact)
                .and_modify(|cur| {
                    if (cand.0, cand.1) < (cur.0, cur.1) {
                        *cur = cand;
                    }
                })
                .or_insert(cand);
        }
    }
    let lookback = u64::try_from(b.campaign.attribution.lookback.num_seconds()).unwrap_or(0);
    let from = start.saturating_sub(lookback);
    let mut touches_of: HashMap<usize, Vec<attribution::Touch>> = HashMap::new();
    for (_, (ms, event_id, i, e)) in first {
        if e.secs() < start || e.secs() >= end {
            continue;
        }
        let touches = touches_of.entry(i).or_insert_with(|| {
            let contacts: Vec<Contact> = visitors[i]
                .1
                .iter()
                .filter(|c| c.secs() >= from && c.secs() < end)
                .filter(|c| b.touch_channel(&c.ev_channel))
                .filter(|c| c.ev_action != "impression" && c.ev_action != "pass")
                .map(|c| Contact {
                    ts: DateTime::from_timestamp_millis(i64::try_from(c.ms).unwrap_or(i64::MAX))
                        .unwrap_or_default(),
                    event_id: c.event_id,
                    channel: c.ev_channel.clone(),
                    action: TinderAction::parse(&c.ev_action),
                })
                .collect();
            attribution::touches(b.campaign, b.campaign.attribution.touch_gap, &contacts)
        });
        let conversion = Conversion {
            ts: DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
                .unwrap_or_default(),
            event_id,
        };
        let shares = attribution::shares(b.campaign, &conversion, touches);
        for scope in [ALL, e.ev_phase.as_str()] {
            b.count(b.key(CONVERSIONS, scope), 1);
            for s in &shares {
                let mut k = b.key(CREDITS, scope);
                k.k = s.model.to_owned();
                k.channel = s.channel.clone();
                k.phase = s.touch_phase.clone();
                k.k2 = s.conversion_phase.clone();
                b.credit(k, s.credit);
            }
        }
    }
}
