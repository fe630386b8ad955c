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
//! `ledger::account` writes a batch: it reads the ledger of the batch's
//! visitors, computes each visitor's contribution before and after its new
//! events and inserts the new ledger rows carrying the summed difference, in
//! one INSERT (see `0003_facts.sql`). Redelivered events are already in the
//! ledger and change nothing; a crash before the INSERT leaves nothing,
//! after it leaves everything.
//!
//! Contacts are per visitor: the rare contact that signed up on two
//! visitors would count twice. Such contacts are listed in `shared_contacts`
//! and `ledger::correction` recomputes their visitors together, contacts
//! counted once, at question time.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use uuid::Uuid;

use crate::attribution::{self, Contact, Conversion};
use crate::event::TinderAction;
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
/// Seconds from first touch to sign-up (`bucket`), one per visitor who signed.
pub const FUNNEL_SECONDS: &str = "funs";
/// The same in whole hours (`bucket` = seconds / 3600): finds the hour that
/// holds the median without reading every second.
pub const FUNNEL_HOURS: &str = "funh";
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
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEvent {
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

const METRICS: [&str; 18] = [
    EVENTS,
    EVENTS_HOURLY,
    VISITORS,
    VISITORS_HOURLY,
    VISITORS_DAILY,
    SCANNERS,
    TOUCHES,
    FUNNEL,
    FUNNEL_SECONDS,
    FUNNEL_HOURS,
    FREQUENCY,
    OVERLAP,
    SIGNUPS,
    SIGNUPS_BY_PLACEMENT,
    SIGNUPS_HOURLY,
    SIGNUPS_DAILY,
    CONVERSIONS,
    CREDITS,
];

fn metric_id(m: &str) -> u8 {
    METRICS
        .iter()
        .position(|x| *x == m)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

/// The strings of one computation, each stored once; keys hold their ids.
#[derive(Debug, Default)]
pub struct Strings<'a> {
    list: Vec<&'a str>,
    index: HashMap<&'a str, u32, std::hash::BuildHasherDefault<KeyHasher>>,
    /// Local day start of each UTC hour seen (time-zone lookups are slow).
    days: HashMap<u32, u32, std::hash::BuildHasherDefault<KeyHasher>>,
}

impl<'a> Strings<'a> {
    fn id(&mut self, s: &'a str) -> u32 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(s);
        self.index.insert(s, i);
        i
    }

    fn get(&self, id: u32) -> &'a str {
        self.list.get(id as usize).copied().unwrap_or("")
    }
}

/// A [`FactKey`] as ids into [`Strings`]: copied and compared without
/// allocating (the processor computes hundreds per visitor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    metric: u8,
    bots: u8,
    scope: u32,
    phase: u32,
    channel: u32,
    placement: u32,
    event_type: u32,
    action: u32,
    k: u32,
    k2: u32,
    bucket: u32,
}

/// Facts as sorted, merged `(Key, Value)` rows, without zero rows.
pub type Rows = Vec<(Key, Value)>;

/// A fact with borrowed strings, as written to ClickHouse.
#[derive(Debug, Clone, Copy)]
pub struct FactRef<'s> {
    pub metric: &'static str,
    pub bots: u8,
    pub scope: &'s str,
    pub phase: &'s str,
    pub channel: &'s str,
    pub placement: &'s str,
    pub event_type: &'s str,
    pub action: &'s str,
    pub k: &'s str,
    pub k2: &'s str,
    pub bucket: u32,
    pub value: Value,
}

impl<'s> FactRef<'s> {
    pub fn of(key: &'s FactKey, value: Value) -> Self {
        Self {
            metric: key.metric,
            bots: key.bots,
            scope: &key.scope,
            phase: &key.phase,
            channel: &key.channel,
            placement: &key.placement,
            event_type: &key.event_type,
            action: &key.action,
            k: &key.k,
            k2: &key.k2,
            bucket: key.bucket,
            value,
        }
    }
}

/// Borrowed views of compact rows.
pub fn refs<'s>(
    strings: &'s Strings<'_>,
    rows: &'s [(Key, Value)],
) -> impl Iterator<Item = FactRef<'s>> + 's {
    rows.iter().map(move |(k, v)| FactRef {
        metric: METRICS.get(k.metric as usize).copied().unwrap_or(""),
        bots: k.bots,
        scope: strings.get(k.scope),
        phase: strings.get(k.phase),
        channel: strings.get(k.channel),
        placement: strings.get(k.placement),
        event_type: strings.get(k.event_type),
        action: strings.get(k.action),
        k: strings.get(k.k),
        k2: strings.get(k.k2),
        bucket: k.bucket,
        value: *v,
    })
}

/// Sorts and merges rows with equal keys; drops zeros.
pub fn merge(mut rows: Rows) -> Rows {
    rows.sort_unstable_by_key(|a| a.0);
    let mut out: Rows = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        match out.last_mut() {
            Some((lk, lv)) if *lk == k => {
                lv.n += v.n;
                lv.credit += v.credit;
            }
            _ => out.push((k, v)),
        }
    }
    out.retain(|(_, v)| v.n != 0 || v.credit != 0.0);
    out
}

/// A small, fast hasher for [`Key`]s (FxHash's multiply-rotate): the
/// processor sums hundreds of thousands of keys per batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(word));
        }
        for b in chunks.remainder() {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Rows of many visitors summed as they come (a hash map of the distinct
/// keys, not every row kept and sorted).
#[derive(Debug, Default)]
pub struct Sum {
    map: HashMap<Key, Value, std::hash::BuildHasherDefault<KeyHasher>>,
}

impl Sum {
    /// Adds `sign ×` each row.
    pub fn add(&mut self, rows: &[(Key, Value)], sign: i64) {
        for (k, v) in rows {
            let e = self.map.entry(*k).or_default();
            e.n += sign * v.n;
            e.credit += sign as f64 * v.credit;
        }
    }

    /// The sums as merged rows, without zeros.
    pub fn rows(self) -> Rows {
        merge(self.map.into_iter().collect())
    }
}

/// `new − old` of two merged row sets computed over the same [`Strings`].
pub fn diff(old: &[(Key, Value)], new: &[(Key, Value)]) -> Rows {
    let mut rows: Rows = new.to_vec();
    rows.extend(old.iter().map(|(k, v)| {
        (
            *k,
            Value {
                n: -v.n,
                credit: -v.credit,
            },
        )
    }));
    merge(rows)
}

/// Compact rows as public facts.
pub fn expand(strings: &Strings<'_>, rows: &[(Key, Value)]) -> Facts {
    refs(strings, rows)
        .map(|f| {
            (
                FactKey {
                    metric: f.metric,
                    bots: f.bots,
                    scope: f.scope.to_owned(),
                    phase: f.phase.to_owned(),
                    channel: f.channel.to_owned(),
                    placement: f.placement.to_owned(),
                    event_type: f.event_type.to_owned(),
                    action: f.action.to_owned(),
                    k: f.k.to_owned(),
                    k2: f.k2.to_owned(),
                    bucket: f.bucket,
                },
                f.value,
            )
        })
        .collect()
}

const NUMBERS: [&str; 6] = ["0", "1", "2", "3", "4", "5"];

struct Builder<'c, 'a> {
    rows: Rows,
    bots: u8,
    campaign: &'a Campaign,
    strings: &'c mut Strings<'a>,
    all: u32,
    empty: u32,
}

impl<'a> Builder<'_, 'a> {
    fn key(&self, metric: &str, scope: u32) -> Key {
        let e = self.empty;
        Key {
            metric: metric_id(metric),
            bots: self.bots,
            scope,
            phase: e,
            channel: e,
            placement: e,
            event_type: e,
            action: e,
            k: e,
            k2: e,
            bucket: 0,
        }
    }

    fn id(&mut self, s: &'a str) -> u32 {
        self.strings.id(s)
    }

    fn count(&mut self, key: Key, n: i64) {
        self.rows.push((key, Value { n, credit: 0.0 }));
    }

    fn credit(&mut self, key: Key, credit: f64) {
        self.rows.push((key, Value { n: 0, credit }));
    }

    fn touch_channel(&self, channel: &str) -> bool {
        self.campaign.channel(channel).is_some_and(|c| c.touch)
    }

    fn day(&mut self, ms: u64) -> u32 {
        let hour = hour_of(ms);
        let campaign = self.campaign;
        *self
            .strings
            .days
            .entry(hour)
            .or_insert_with(|| day_of(campaign, u64::from(hour) * 1000))
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
    let mut strings = Strings::default();
    let rows = compute(campaign, visitors, &mut strings);
    expand(&strings, &rows)
}

/// [`contribution`] as compact rows over `strings`.
pub fn compute<'a>(
    campaign: &'a Campaign,
    visitors: &'a [(String, Vec<LedgerEvent>)],
    strings: &mut Strings<'a>,
) -> Rows {
    let all = strings.id(ALL);
    let empty = strings.id("");
    let mut b = Builder {
        rows: Vec::new(),
        bots: 0,
        campaign,
        strings,
        all,
        empty,
    };
    let Some((start, end)) = range_secs(campaign) else {
        return Vec::new();
    };
    // Without any bot event, the figures with bots are those without.
    let no_bots = visitors
        .iter()
        .all(|(_, es)| es.iter().all(|e| e.ev_bot == 0));
    for bots in [0u8, 1] {
        b.bots = bots;
        if bots == 1 && no_bots {
            let copies: Rows = b
                .rows
                .iter()
                .map(|(k, v)| (Key { bots: 1, ..*k }, *v))
                .collect();
            b.rows.extend(copies);
            break;
        }
        let mut prepared: Vec<Vec<&'a LedgerEvent>> = Vec::new();
        for (_, events) in visitors {
            let mut evs: Vec<&LedgerEvent> = events
                .iter()
                .filter(|e| bots == 1 || e.ev_bot == 0)
                .collect();
            // Each event once (redeliveries), then in time order.
            evs.sort_unstable_by_key(|e| (e.event_id, e.ms));
            evs.dedup_by_key(|e| e.event_id);
            evs.sort_by_key(|e| (e.ms, e.event_id));
            prepared.push(evs);
        }
        for evs in &prepared {
            let in_range: Vec<&LedgerEvent> = evs
                .iter()
                .copied()
                .filter(|e| e.secs() >= start && e.secs() < end)
                .collect();
            visitor_facts(&mut b, &in_range);
        }
        contact_facts(&mut b, &prepared, start, end);
    }
    merge(b.rows)
}

fn visitor_facts<'a>(b: &mut Builder<'_, 'a>, events: &[&'a LedgerEvent]) {
    if events.is_empty() {
        return;
    }
    let empty = b.empty;
    for e in events {
        let (phase, channel) = (b.id(&e.ev_phase), b.id(&e.ev_channel));
        let mut k = b.key(EVENTS, empty);
        k.phase = phase;
        k.channel = channel;
        k.placement = b.id(&e.ev_placement);
        k.event_type = b.id(&e.ev_type);
        k.action = b.id(&e.ev_action);
        b.count(k, 1);
        let mut k = b.key(EVENTS_HOURLY, empty);
        k.phase = phase;
        k.channel = channel;
        k.bucket = hour_of(e.ms);
        b.count(k, 1);
    }
    // Every phase, then each phase seen; a visitor seen in one phase only
    // gets the same figures twice, computed once.
    let first_phase = events[0].ev_phase.as_str();
    if events.iter().all(|e| e.ev_phase == first_phase) {
        let from = b.rows.len();
        scoped(b, b.all, events);
        let phase = b.id(first_phase);
        let copies: Rows = b.rows[from..]
            .iter()
            .map(|(k, v)| (Key { scope: phase, ..*k }, *v))
            .collect();
        b.rows.extend(copies);
        return;
    }
    scoped(b, b.all, events);
    let mut phases: Vec<&'a str> = events.iter().map(|e| e.ev_phase.as_str()).collect();
    phases.sort_unstable();
    phases.dedup();
    for p in phases {
        let evs: Vec<&LedgerEvent> = events.iter().copied().filter(|e| e.ev_phase == p).collect();
        let scope = b.id(p);
        scoped(b, scope, &evs);
    }
}

fn scoped<'a>(b: &mut Builder<'_, 'a>, scope: u32, evs: &[&'a LedgerEvent]) {
    presence(b, scope, evs);
    touches(b, scope, evs);
    funnel(b, scope, evs);
    reach(b, scope, evs);
}

/// Distinct-visitor figures: per channel, per hour and day, per placement scanned.
fn presence<'a>(b: &mut Builder<'_, 'a>, scope: u32, evs: &[&'a LedgerEvent]) {
    let all = b.all;
    let mut channels: Vec<u32> = vec![all];
    let mut hours: Vec<(u32, u32)> = Vec::new();
    let mut days: Vec<(u32, u32)> = Vec::new();
    let mut scanned: Vec<(u32, u32)> = Vec::new();
    for e in evs {
        let c = b.id(&e.ev_channel);
        channels.push(c);
        let (h, d) = (hour_of(e.ms), b.day(e.ms));
        let placement = (e.is_scan() && !e.ev_placement.is_empty()).then(|| b.id(&e.ev_placement));
        for c in [all, c] {
            hours.push((h, c));
            days.push((d, c));
            if let Some(p) = placement {
                scanned.push((p, c));
            }
        }
    }
    for v in [&mut hours, &mut days, &mut scanned] {
        v.sort_unstable();
        v.dedup();
    }
    channels.sort_unstable();
    channels.dedup();
    for c in channels {
        let mut k = b.key(VISITORS, scope);
        k.channel = c;
        b.count(k, 1);
    }
    for (metric, set) in [(VISITORS_HOURLY, hours), (VISITORS_DAILY, days)] {
        for (bucket, c) in set {
            let mut k = b.key(metric, scope);
            k.channel = c;
            k.bucket = bucket;
            b.count(k, 1);
        }
    }
    for (p, c) in scanned {
        let mut k = b.key(SCANNERS, scope);
        k.placement = p;
        k.channel = c;
        b.count(k, 1);
    }
}

/// The events that can make a touch: touch channels, no exposure.
fn touch_events<'e>(b: &Builder<'_, '_>, evs: &[&'e LedgerEvent]) -> Vec<&'e LedgerEvent> {
    evs.iter()
        .copied()
        .filter(|e| b.touch_channel(&e.ev_channel) && !e.is_exposure())
        .collect()
}

/// The gap rule (DESIGN §2): per channel, an event more than the gap after
/// the visitor's previous event of the channel starts a touch.
fn touches<'a>(b: &mut Builder<'_, 'a>, scope: u32, evs: &[&'a LedgerEvent]) {
    let gap =
        u64::try_from(b.campaign.attribution.touch_gap.num_milliseconds()).unwrap_or(u64::MAX);
    let mut last: HashMap<&str, u64> = HashMap::new();
    for e in touch_events(b, evs) {
        let starts = last
            .get(e.ev_channel.as_str())
            .is_none_or(|prev| e.ms - prev >= gap);
        if starts {
            let mut k = b.key(TOUCHES, scope);
            k.channel = b.id(&e.ev_channel);
            k.phase = b.id(&e.ev_phase);
            b.count(k, 1);
        }
        last.insert(&e.ev_channel, e.ms);
    }
}

/// Per touch channel: touched → landing view at or after the first touch →
/// sign-up at or after it (whole seconds, as stored).
fn funnel<'a>(b: &mut Builder<'_, 'a>, scope: u32, evs: &[&'a LedgerEvent]) {
    let mut first: Vec<(&'a str, u64)> = Vec::new();
    for e in touch_events(b, evs) {
        if !first.iter().any(|(c, _)| *c == e.ev_channel) {
            first.push((&e.ev_channel, e.secs()));
        }
    }
    if first.is_empty() {
        return;
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
        let channel = b.id(channel);
        let step = |name: &'static str, b: &mut Builder<'_, 'a>| {
            let mut k = b.key(FUNNEL, scope);
            k.channel = channel;
            k.k = b.id(name);
            b.count(k, 1);
        };
        step("touched", b);
        if !views.iter().any(|v| *v >= ft) {
            continue;
        }
        step("visited", b);
        if let Some(s) = signup.filter(|s| *s >= ft && *s > 0) {
            step("signed", b);
            let secs = u32::try_from(s - ft).unwrap_or(u32::MAX);
            for (metric, bucket) in [(FUNNEL_SECONDS, secs), (FUNNEL_HOURS, secs / 3600)] {
                let mut k = b.key(metric, scope);
                k.channel = channel;
                k.bucket = bucket;
                b.count(k, 1);
            }
        }
    }
}

/// Contacts per touch channel (exposures included) and channel overlap.
fn reach<'a>(b: &mut Builder<'_, 'a>, scope: u32, evs: &[&'a LedgerEvent]) {
    let mut per_channel: Vec<(&'a str, usize)> = Vec::new();
    for e in evs.iter().filter(|e| b.touch_channel(&e.ev_channel)) {
        match per_channel.iter_mut().find(|(c, _)| *c == e.ev_channel) {
            Some((_, n)) => *n += 1,
            None => per_channel.push((&e.ev_channel, 1)),
        }
    }
    let ids: Vec<(u32, usize)> = per_channel.iter().map(|(c, n)| (b.id(c), *n)).collect();
    for (channel, n) in &ids {
        let mut k = b.key(FREQUENCY, scope);
        k.channel = *channel;
        k.k = b.id(NUMBERS[(*n).min(5)]);
        b.count(k, 1);
        for (other, _) in &ids {
            let mut k = b.key(OVERLAP, scope);
            k.channel = *channel;
            k.k = *other;
            b.count(k, 1);
        }
    }
}

/// Sign-up figures, contacts counted once across the set of visitors, and
/// the attribution credit of each conversion (first sign-up of a contact).
fn contact_facts<'a>(
    b: &mut Builder<'_, 'a>,
    visitors: &[Vec<&'a LedgerEvent>],
    start: u64,
    end: u64,
) {
    let all = b.all;
    // (group, contact) pairs; (scope, channel, contact, first sign-up).
    let mut groups: Vec<(Key, u32)> = Vec::new();
    let mut firsts: Vec<(u32, u32, u32, u64)> = Vec::new();
    for evs in visitors {
        for e in evs.iter().filter(|e| e.ev_type == "signup") {
            if e.secs() < start || e.secs() >= end {
                continue;
            }
            let contact = b.id(&e.ev_contact);
            let (phase, channel) = (b.id(&e.ev_phase), b.id(&e.ev_channel));
            let placement = (!e.ev_placement.is_empty()).then(|| b.id(&e.ev_placement));
            for scope in [all, phase] {
                for c in [all, channel] {
                    let mut k = b.key(SIGNUPS, scope);
                    k.channel = c;
                    groups.push((k, contact));
                    if let Some(p) = placement {
                        let mut k = b.key(SIGNUPS_BY_PLACEMENT, scope);
                        k.channel = c;
                        k.placement = p;
                        groups.push((k, contact));
                    }
                    if !e.ev_contact.is_empty() {
                        firsts.push((scope, c, contact, e.secs()));
                    }
                }
            }
        }
    }
    groups.sort_unstable();
    groups.dedup();
    for (k, _) in groups {
        b.count(k, 1);
    }
    firsts.sort_unstable();
    firsts.dedup_by(|later, earlier| {
        (later.0, later.1, later.2) == (earlier.0, earlier.1, earlier.2)
    });
    for (scope, c, _, secs) in firsts {
        for (metric, bucket) in [
            (SIGNUPS_HOURLY, hour_of(secs * 1000)),
            (SIGNUPS_DAILY, b.day(secs * 1000)),
        ] {
            let mut k = b.key(metric, scope);
            k.channel = c;
            k.bucket = bucket;
            b.count(k, 1);
        }
    }
    attribution_facts(b, visitors, start, end);
}

fn attribution_facts<'a>(
    b: &mut Builder<'_, 'a>,
    visitors: &[Vec<&'a LedgerEvent>],
    start: u64,
    end: u64,
) {
    // First sign-up of each contact over all time (ties by event id).
    let mut first: BTreeMap<&str, (u64, Uuid, usize, &LedgerEvent)> = BTreeMap::new();
    for (i, evs) in visitors.iter().enumerate() {
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
        let campaign = b.campaign;
        let touches = touches_of.entry(i).or_insert_with(|| {
            let contacts: Vec<Contact> = visitors[i]
                .iter()
                .filter(|c| c.secs() >= from && c.secs() < end)
                .filter(|c| campaign.channel(&c.ev_channel).is_some_and(|ch| ch.touch))
                .filter(|c| c.ev_action != "impression" && c.ev_action != "pass")
                .map(|c| Contact {
                    ts: DateTime::from_timestamp_millis(i64::try_from(c.ms).unwrap_or(i64::MAX))
                        .unwrap_or_default(),
                    event_id: c.event_id,
                    channel: c.ev_channel.clone(),
                    action: TinderAction::parse(&c.ev_action),
                })
                .collect();
            attribution::touches(campaign, campaign.attribution.touch_gap, &contacts)
        });
        let conversion = Conversion {
            ts: DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
                .unwrap_or_default(),
            event_id,
        };
        let shares = attribution::shares(campaign, &conversion, touches);
        let phase = b.id(&e.ev_phase);
        for scope in [b.all, phase] {
            let k = b.key(CONVERSIONS, scope);
            b.count(k, 1);
            for s in &shares {
                let mut k = b.key(CREDITS, scope);
                k.k = b.id(s.model);
                k.channel = b.id(campaign_str(campaign, &s.channel));
                k.phase = b.id(campaign_str(campaign, &s.touch_phase));
                k.k2 = b.id(campaign_str(campaign, &s.conversion_phase));
                b.credit(k, s.credit);
            }
        }
    }
}

/// The campaign's own copy of a channel or phase name (so the key can
/// borrow it for the computation's lifetime).
fn campaign_str<'a>(campaign: &'a Campaign, s: &str) -> &'a str {
    if s == attribution::DIRECT {
        return attribution::DIRECT;
    }
    if s == crate::campaign::HORS_PHASE {
        return crate::campaign::HORS_PHASE;
    }
    campaign
        .channels
        .iter()
        .map(|c| c.id.as_str())
        .chain(campaign.phases.iter().map(|p| p.id.as_str()))
        .find(|x| *x == s)
        .unwrap_or("")
}
