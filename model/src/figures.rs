//! Every dashboard figure, defined once, as a sum of per-visitor
//! contributions — pre-summed by the processor and computed on demand from
//! the same code.
//!
//! A visitor's contribution to a question (a range of local days, a device,
//! a placement, bots in or out) is a pure function of the visitor's events
//! that the question keeps. For the processor to keep every such answer
//! summed in advance, each visitor contributes rows over **its own active
//! days**: with `d₁ < … < d_k` the local days on which it has events (of the
//! scope: every device / one device, every placement / one placement), let
//! `F(i, j)` be its contribution computed over the events of days `dᵢ…dⱼ`.
//! A question on days `[a, b]` keeps exactly the events of one such run
//! (the active days inside `[a, b]`), and it gets `F` of that run by summing
//! the rows
//!
//! `G(i, j) = F(i, j) − F(i+1, j) − F(i, j−1) + F(i+1, j−1)`
//!
//! stamped `first_day = dᵢ`, `last_day = dⱼ`, over every row with
//! `first_day ≥ a` and `last_day ≤ b` (the sum telescopes to `F` of the run
//! inside `[a, b]`). Most `G` are zero and are not stored: a figure that
//! only asks "was the visitor there" has rows on single days and on pairs
//! of consecutive active days only; per-day sums have rows on single days
//! only ([`Figure::per_day`]). A phase is a range of days too, so one set of
//! rows answers the campaign, each phase, any day-aligned range, each
//! device and each placement.
//!
//! Conversions and their credit do not depend on the question's range (a
//! conversion is the first sign-up of a contact, ever; its credit goes to
//! the touches of the 30 days before it): they sit on the conversion's day.
//! Under a device filter the conversion's device is tested, the touches are
//! all the visitor's, as before.
//!
//! Contacts are counted once per computation: the processor computes one
//! visitor at a time, so the rare contact that signed up on two visitors
//! counts twice in the sums; the dashboard adds, at question time, those
//! visitors computed together minus computed separately (the
//! "correction").

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

use crate::attribution::{self, Conversion, Touch};
use crate::paths;
use crate::rules;
use crate::Campaign;

/// The value of `channel` (and of the scope filters' `*`) in figures over
/// every channel.
pub const ALL: &str = "*";

/// One accounted event, as far as the figures care.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: Uuid,
    /// Event time, milliseconds since the epoch.
    pub ms: u64,
    pub event_type: String,
    pub action: String,
    pub channel: String,
    pub placement: String,
    pub phase: String,
    /// Device class (`desktop`, `mobile`, …); empty if unknown to the ledger.
    pub device: String,
    /// OS family (`iOS`, `Android`, `Windows 10`, … as the processor's
    /// User-Agent parser names it); empty if unknown.
    pub os: String,
    pub bot: bool,
    /// The sign-up's contact hash.
    pub contact: String,
}

/// What a figure counts. Its [`Figure::name`] is what ClickHouse stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Figure {
    /// Events per local `day`: `phase` × `channel` × `placement` ×
    /// `event_type` × `action`.
    Events,
    /// Events per UTC `hour`: `phase` × `channel`.
    EventsHourly,
    /// Distinct visitors per `channel` (or `*`).
    Visitors,
    /// Distinct visitors per UTC `hour` × `channel` (or `*`).
    VisitorsHourly,
    /// Distinct visitors per local `day` × `channel` (or `*`).
    VisitorsDaily,
    /// Distinct visitors with a scan, per `placement` × `channel` (or `*`).
    Scanners,
    /// Touches (gap rule) per `channel` × `phase` of the touch's first event.
    Touches,
    /// Visitors per touch `channel` and funnel `step`: `touched`, `visited`
    /// (a page view at or after the first touch), `signed` (a sign-up too).
    Funnel,
    /// Visitors who signed after a touch of `channel`, by `seconds` from
    /// the first touch to the sign-up.
    FunnelSeconds,
    /// The same by whole hours (`seconds` rounded down to the hour).
    FunnelHours,
    /// Visitors per touch `channel` by their number of events of it
    /// (`contacts` 1…5, 5 meaning five or more).
    ContactsPerVisitor,
    /// Visitors reached by both `channel` and `other_channel`.
    Overlap,
    /// Distinct contacts who signed up, per `channel` (or `*`) of the sign-up.
    Signups,
    /// Distinct contacts who signed up, per `placement` × `channel` (or `*`).
    SignupsByPlacement,
    /// Contacts by the UTC `hour` of their first sign-up, per `channel` (or `*`).
    SignupsHourly,
    /// Contacts by the local `day` of their first sign-up, per `channel` (or `*`).
    SignupsDaily,
    /// Conversions (first sign-up of a contact) by `phase`.
    Conversions,
    /// Credit under `model` to `channel` for touches in `phase`, of
    /// conversions in `conversion_phase`.
    Credits,
    /// Conversions by their path (`channel`: the channels of the touches
    /// credited, `crate::paths`); `credit` holds the exact seconds from the
    /// path's first touch to the sign-up (0 for `direct`).
    PathsConverted,
    /// The same conversions (but `direct`) by path (`channel`) and
    /// `seconds` from the first touch to the sign-up rounded down to the
    /// minute: read only for the medians of the paths shown.
    PathsDelays,
    /// Visitors without a sign-up in the question's days, by the path
    /// (`channel`) of their touches in those days.
    PathsNotConverted,
    /// Scans (QR scans and card clicks) per local `day`, local `hour` of
    /// the day (0–23, the wall clock: the scan heatmap by weekday × hour)
    /// and `channel`.
    ScansByLocalHour,
    /// Visitors per `channel` (or `*`) of their events × `device_class` ×
    /// `os_family` of those events, `step` `reached`; and of them, those
    /// with a sign-up in the question's days, `step` `signed`.
    Devices,
}

/// A figure name that is not one of [`Figure::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown figure `{0}`")]
pub struct UnknownFigure(pub String);

impl Figure {
    pub const ALL: [Figure; 23] = [
        Figure::Events,
        Figure::EventsHourly,
        Figure::Visitors,
        Figure::VisitorsHourly,
        Figure::VisitorsDaily,
        Figure::Scanners,
        Figure::Touches,
        Figure::Funnel,
        Figure::FunnelSeconds,
        Figure::FunnelHours,
        Figure::ContactsPerVisitor,
        Figure::Overlap,
        Figure::Signups,
        Figure::SignupsByPlacement,
        Figure::SignupsHourly,
        Figure::SignupsDaily,
        Figure::Conversions,
        Figure::Credits,
        Figure::PathsConverted,
        Figure::PathsDelays,
        Figure::PathsNotConverted,
        Figure::ScansByLocalHour,
        Figure::Devices,
    ];

    /// The name stored in ClickHouse's `figures.figure`.
    pub fn name(self) -> &'static str {
        match self {
            Figure::Events => "events",
            Figure::EventsHourly => "events_hourly",
            Figure::Visitors => "visitors",
            Figure::VisitorsHourly => "visitors_hourly",
            Figure::VisitorsDaily => "visitors_daily",
            Figure::Scanners => "scanners",
            Figure::Touches => "touches",
            Figure::Funnel => "funnel",
            Figure::FunnelSeconds => "funnel_seconds",
            Figure::FunnelHours => "funnel_hours",
            Figure::ContactsPerVisitor => "contacts_per_visitor",
            Figure::Overlap => "overlap",
            Figure::Signups => "signups",
            Figure::SignupsByPlacement => "signups_by_placement",
            Figure::SignupsHourly => "signups_hourly",
            Figure::SignupsDaily => "signups_daily",
            Figure::Conversions => "conversions",
            Figure::Credits => "credits",
            Figure::PathsConverted => "paths_converted",
            Figure::PathsDelays => "paths_delays",
            Figure::PathsNotConverted => "paths_not_converted",
            Figure::ScansByLocalHour => "scans_by_local_hour",
            Figure::Devices => "devices",
        }
    }

    pub fn parse(name: &str) -> Result<Figure, UnknownFigure> {
        Figure::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| UnknownFigure(name.to_owned()))
    }

    /// The dimension columns (of [`Dims`]) its rows can hold: every other
    /// is the empty string or 0 in all of its rows, so a reader may leave
    /// those out of what it groups by.
    pub fn dimensions(self) -> &'static [&'static str] {
        match self {
            Figure::Events => &[
                "day",
                "phase",
                "channel",
                "placement",
                "event_type",
                "action",
            ],
            Figure::EventsHourly => &["hour", "phase", "channel"],
            Figure::Visitors | Figure::Signups => &["channel"],
            Figure::VisitorsHourly | Figure::SignupsHourly => &["hour", "channel"],
            Figure::VisitorsDaily | Figure::SignupsDaily => &["day", "channel"],
            Figure::Scanners | Figure::SignupsByPlacement => &["placement", "channel"],
            Figure::Touches => &["channel", "phase"],
            Figure::Funnel => &["channel", "step"],
            Figure::FunnelSeconds | Figure::FunnelHours | Figure::PathsDelays => {
                &["channel", "seconds"]
            }
            Figure::ContactsPerVisitor => &["channel", "contacts"],
            Figure::Overlap => &["channel", "other_channel"],
            Figure::Conversions => &["phase"],
            Figure::Credits => &["model", "channel", "phase", "conversion_phase"],
            Figure::PathsConverted | Figure::PathsNotConverted => &["channel"],
            Figure::ScansByLocalHour => &["day", "hour", "channel"],
            Figure::Devices => &["channel", "device_class", "os_family", "step"],
        }
    }

    /// Sums over days: a range's value is the sum of its days' values, so
    /// the rows sit on single days. The others depend on the visitor's
    /// whole run of days inside the range.
    pub fn per_day(self) -> bool {
        matches!(
            self,
            Figure::Events
                | Figure::EventsHourly
                | Figure::VisitorsHourly
                | Figure::VisitorsDaily
                | Figure::Conversions
                | Figure::Credits
                | Figure::PathsConverted
                | Figure::PathsDelays
                | Figure::ScansByLocalHour
        )
    }
}

/// The funnel's steps.
pub const TOUCHED: &str = "touched";
pub const VISITED: &str = "visited";
pub const SIGNED: &str = "signed";
/// The device breakdown's first step.
pub const REACHED: &str = "reached";

/// A count and a credit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Value {
    pub n: i64,
    pub credit: f64,
}

impl Value {
    fn add(&mut self, other: Value, sign: i64) {
        self.n += sign * other.n;
        self.credit += sign as f64 * other.credit;
    }

    fn is_zero(&self) -> bool {
        self.n == 0 && self.credit == 0.0
    }
}

/// A local date as days since 1970-01-01 (ClickHouse's `Date`).
pub type Day = u32;

/// The local day number of `ms` in the campaign's zone.
pub fn day_of(campaign: &Campaign, ms: u64) -> Day {
    let t =
        DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default();
    day_number(t.with_timezone(&campaign.timezone).date_naive())
}

/// Days since 1970-01-01 of a date (0 before it).
pub fn day_number(d: NaiveDate) -> Day {
    u32::try_from(d.num_days_from_ce() - EPOCH_DAYS_FROM_CE).unwrap_or(0)
}

/// The date of a day number.
pub fn date_of(day: Day) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(i32::try_from(day).unwrap_or(0) + EPOCH_DAYS_FROM_CE)
        .unwrap_or_default()
}

/// Days from 0001-01-01 (day 1) to 1970-01-01.
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Local midnight (UTC instant) starting a day.
pub fn day_start(campaign: &Campaign, day: Day) -> DateTime<Utc> {
    let d = date_of(day).and_time(chrono::NaiveTime::MIN);
    campaign
        .timezone
        .from_local_datetime(&d)
        .earliest()
        .map_or_else(|| Utc.from_utc_datetime(&d), |t| t.with_timezone(&Utc))
}

/// The strings of one computation, each stored once; keys hold their ids.
/// Most borrow from the events and the campaign; a few are made by the
/// computation (paths).
#[derive(Debug, Default)]
pub struct Strings<'a> {
    list: Vec<Cow<'a, str>>,
    index: HashMap<Cow<'a, str>, u32, std::hash::BuildHasherDefault<KeyHasher>>,
    /// Local day of each quarter hour seen (time-zone lookups are slow;
    /// every zone's offset is a whole number of quarter hours).
    days: HashMap<u64, Day, std::hash::BuildHasherDefault<KeyHasher>>,
}

impl<'a> Strings<'a> {
    pub fn id(&mut self, s: &'a str) -> u32 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        self.insert(Cow::Borrowed(s))
    }

    /// The id of a string the computation made.
    pub fn own(&mut self, s: String) -> u32 {
        if let Some(i) = self.index.get(s.as_str()) {
            return *i;
        }
        self.insert(Cow::Owned(s))
    }

    fn insert(&mut self, s: Cow<'a, str>) -> u32 {
        let i = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(s.clone());
        self.index.insert(s, i);
        i
    }

    pub fn get(&self, id: u32) -> &str {
        self.list.get(id as usize).map(|s| s.as_ref()).unwrap_or("")
    }

    fn day(&mut self, campaign: &Campaign, ms: u64) -> Day {
        let quarter = ms / 900_000;
        *self
            .days
            .entry(quarter)
            .or_insert_with(|| day_of(campaign, quarter * 900_000))
    }
}

/// What a row of figures is about, as ids into [`Strings`] (copied and
/// compared without allocating: the processor computes thousands per batch).
/// Dimensions a figure does not use are the empty string / 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub figure: Figure,
    pub bots: u8,
    pub device_filter: u32,
    pub placement_filter: u32,
    pub first_day: Day,
    pub last_day: Day,
    pub phase: u32,
    pub channel: u32,
    pub placement: u32,
    pub event_type: u32,
    pub action: u32,
    pub step: u32,
    pub model: u32,
    pub conversion_phase: u32,
    pub other_channel: u32,
    pub device_class: u32,
    pub os_family: u32,
    pub contacts: u8,
    pub hour: u32,
    pub day: Day,
    pub seconds: u32,
}

/// Rows sorted by key, equal keys merged, zeros dropped.
pub type Rows = Vec<(Key, Value)>;

/// Sorts and merges rows with equal keys; drops zeros.
pub fn merge(rows: Rows) -> Rows {
    summed(rows)
}

/// Values sorted by key, equal keys summed, zeros dropped: one sort, not
/// a search per value (the processor's rows and the dashboard's answers).
fn summed<K: Ord>(mut values: Vec<(K, Value)>) -> Vec<(K, Value)> {
    values.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(K, Value)> = Vec::with_capacity(values.len());
    for (k, v) in values {
        match out.last_mut() {
            Some((lk, lv)) if *lk == k => lv.add(v, 1),
            _ => out.push((k, v)),
        }
    }
    out.retain(|(_, v)| !v.is_zero());
    out
}

/// `new − old` of two merged row sets over the same [`Strings`].
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

/// A small, fast hasher for keys (FxHash's multiply-rotate).
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

/// Rows of many visitors summed as they come.
#[derive(Debug, Default)]
pub struct Sum {
    map: HashMap<Key, Value, std::hash::BuildHasherDefault<KeyHasher>>,
}

impl Sum {
    /// Adds `sign ×` each row.
    pub fn add(&mut self, rows: &[(Key, Value)], sign: i64) {
        for (k, v) in rows {
            self.map.entry(*k).or_default().add(*v, sign);
        }
    }

    /// The sums as merged rows, without zeros.
    pub fn rows(self) -> Rows {
        merge(self.map.into_iter().collect())
    }
}

/// A row with its strings, as written to ClickHouse and read by people.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row<'s> {
    pub figure: Figure,
    pub bots: u8,
    pub device_filter: &'s str,
    pub placement_filter: &'s str,
    pub first_day: Day,
    pub last_day: Day,
    pub phase: &'s str,
    pub channel: &'s str,
    pub placement: &'s str,
    pub event_type: &'s str,
    pub action: &'s str,
    pub step: &'s str,
    pub model: &'s str,
    pub conversion_phase: &'s str,
    pub other_channel: &'s str,
    pub device_class: &'s str,
    pub os_family: &'s str,
    pub contacts: u8,
    pub hour: u32,
    pub day: Day,
    pub seconds: u32,
    pub value: Value,
}

/// Rows with their strings.
pub fn rows_of<'s>(
    strings: &'s Strings<'_>,
    rows: &'s [(Key, Value)],
) -> impl Iterator<Item = Row<'s>> + 's {
    rows.iter().map(move |(k, v)| Row {
        figure: k.figure,
        bots: k.bots,
        device_filter: strings.get(k.device_filter),
        placement_filter: strings.get(k.placement_filter),
        first_day: k.first_day,
        last_day: k.last_day,
        phase: strings.get(k.phase),
        channel: strings.get(k.channel),
        placement: strings.get(k.placement),
        event_type: strings.get(k.event_type),
        action: strings.get(k.action),
        step: strings.get(k.step),
        model: strings.get(k.model),
        conversion_phase: strings.get(k.conversion_phase),
        other_channel: strings.get(k.other_channel),
        device_class: strings.get(k.device_class),
        os_family: strings.get(k.os_family),
        contacts: k.contacts,
        hour: k.hour,
        day: k.day,
        seconds: k.seconds,
        value: *v,
    })
}

/// What an answer is about: a figure and its dimensions, with owned
/// strings. The question's own filters (range, device, placement, bots)
/// are not part of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Dims {
    pub phase: String,
    pub channel: String,
    pub placement: String,
    pub event_type: String,
    pub action: String,
    pub step: String,
    pub model: String,
    pub conversion_phase: String,
    pub other_channel: String,
    pub device_class: String,
    pub os_family: String,
    pub contacts: u8,
    pub hour: u32,
    pub day: Day,
    pub seconds: u32,
}

/// Field by field in declaration order (what a derived order does), but
/// two empty strings — most of a figure's dimensions — compare without a
/// call to `memcmp`: answers of thousands of rows are sorted per question.
impl Ord for Dims {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        fn text(a: &str, b: &str) -> std::cmp::Ordering {
            if a.is_empty() && b.is_empty() {
                std::cmp::Ordering::Equal
            } else {
                a.cmp(b)
            }
        }
        text(&self.phase, &o.phase)
            .then_with(|| text(&self.channel, &o.channel))
            .then_with(|| text(&self.placement, &o.placement))
            .then_with(|| text(&self.event_type, &o.event_type))
            .then_with(|| text(&self.action, &o.action))
            .then_with(|| text(&self.step, &o.step))
            .then_with(|| text(&self.model, &o.model))
            .then_with(|| text(&self.conversion_phase, &o.conversion_phase))
            .then_with(|| text(&self.other_channel, &o.other_channel))
            .then_with(|| text(&self.device_class, &o.device_class))
            .then_with(|| text(&self.os_family, &o.os_family))
            .then_with(|| self.contacts.cmp(&o.contacts))
            .then_with(|| self.hour.cmp(&o.hour))
            .then_with(|| self.day.cmp(&o.day))
            .then_with(|| self.seconds.cmp(&o.seconds))
    }
}

impl PartialOrd for Dims {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// The answer to a question: every asked figure's values by dimensions.
pub type Answer = BTreeMap<(Figure, Dims), Value>;

impl Row<'_> {
    pub fn dims(&self) -> Dims {
        Dims {
            phase: self.phase.to_owned(),
            channel: self.channel.to_owned(),
            placement: self.placement.to_owned(),
            event_type: self.event_type.to_owned(),
            action: self.action.to_owned(),
            step: self.step.to_owned(),
            model: self.model.to_owned(),
            conversion_phase: self.conversion_phase.to_owned(),
            other_channel: self.other_channel.to_owned(),
            device_class: self.device_class.to_owned(),
            os_family: self.os_family.to_owned(),
            contacts: self.contacts,
            hour: self.hour,
            day: self.day,
            seconds: self.seconds,
        }
    }
}

/// Adds `sign ×` a value to an answer, dropping what comes to zero.
pub fn add_to(answer: &mut Answer, figure: Figure, dims: Dims, v: Value, sign: i64) {
    let key = (figure, dims);
    let e = answer.entry(key.clone()).or_default();
    e.add(v, sign);
    if e.is_zero() {
        answer.remove(&key);
    }
}

/// An answer from values in any order, equal keys summed, zeros dropped.
/// Sorted once rather than searched per value: a key is sixteen fields,
/// and a B-tree compares several keys per node on each insertion (the
/// dashboard reads thousands of rows per question).
pub fn answer_of(values: Vec<((Figure, Dims), Value)>) -> Answer {
    summed(values).into_iter().collect()
}

// ------------------------------------------------------------ computation

/// An event prepared for the computation.
#[derive(Debug, Clone, Copy)]
struct Ev<'a> {
    e: &'a Event,
    /// Index of its visitor in the computed set.
    visitor: u32,
    day: Day,
    /// Ids in [`Strings`] of its channel, placement, phase, device class
    /// and OS family, looked up once (runs of days read an event again).
    channel: u32,
    placement: u32,
    phase: u32,
    device: u32,
    os: u32,
}

impl Ev<'_> {
    fn secs(&self) -> u64 {
        self.e.ms / 1000
    }
}

/// The wall-clock hour (0–23) of `ms` in the campaign's zone.
pub fn local_hour(campaign: &Campaign, ms: u64) -> u32 {
    use chrono::Timelike;
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .with_timezone(&campaign.timezone)
        .hour()
}

fn hour_of(ms: u64) -> u32 {
    u32::try_from(ms / 1000 / 3600 * 3600).unwrap_or(u32::MAX)
}

const CONTACTS_CAP: usize = 5;

struct Builder<'c, 'a> {
    campaign: &'a Campaign,
    strings: &'c mut Strings<'a>,
    rows: Rows,
    /// The row being built's scope.
    bots: u8,
    device_filter: u32,
    placement_filter: u32,
    all: u32,
    empty: u32,
    gap_ms: u64,
}

impl<'a> Builder<'_, 'a> {
    fn key(&self, figure: Figure) -> Key {
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
            contacts: 0,
            hour: 0,
            day: 0,
            seconds: 0,
        }
    }

    fn id(&mut self, s: &'a str) -> u32 {
        self.strings.id(s)
    }
}

/// A visitor (or scope of it) active on more local days than this is
/// *wide*: its rows are stamped over runs of whole segments of the calendar
/// (phases and the pieces between them) instead of runs of days, so what it
/// costs to compute and store stays bounded (a run-of-days stamping grows
/// with the square of its active days: a shared NAT address active every
/// day would cost seconds per batch). Questions on whole segments (the
/// defaults, each phase) are answered from the stored rows as for anyone;
/// other ranges add [`range_correction`] for the wide visitors active in
/// them.
pub const WIDE_DAYS: usize = 8;

/// Pushes rows to `out`.
type Out = Vec<(Key, Value)>;

fn count(out: &mut Out, key: Key) {
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
    let all = strings.id(ALL);
    let empty = strings.id("");
    let mut b = Builder {
        campaign,
        strings,
        rows: Vec::new(),
        bots: 0,
        device_filter: empty,
        placement_filter: empty,
        all,
        empty,
        gap_ms: rules::gap_ms(campaign),
    };
    let prepared = prepare(&mut b, visitors);
    let no_bots = prepared.iter().all(|ev| !ev.e.bot);
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
        let evs: Vec<Ev<'a>> = prepared
            .iter()
            .copied()
            .filter(|ev| bots == 1 || !ev.e.bot)
            .collect();
        if evs.is_empty() {
            continue;
        }
        // Every device and placement.
        b.device_filter = empty;
        b.placement_filter = empty;
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
                copy_scope(&mut b, from..to, id, empty);
            } else {
                let kept: Vec<Ev<'a>> = evs.iter().copied().filter(|ev| ev.e.device == d).collect();
                b.device_filter = id;
                scope(&mut b, &kept);
                b.device_filter = empty;
            }
        }
        let mut placements: Vec<&'a str> = evs.iter().map(|ev| ev.e.placement.as_str()).collect();
        placements.sort_unstable();
        placements.dedup();
        for p in placements.into_iter().filter(|p| !p.is_empty()) {
            let id = b.id(p);
            if evs.iter().all(|ev| ev.e.placement == p) {
                copy_scope(&mut b, from..to, empty, id);
            } else {
                let kept: Vec<Ev<'a>> = evs
                    .iter()
                    .copied()
                    .filter(|ev| ev.e.placement == p)
                    .collect();
                b.placement_filter = id;
                scope(&mut b, &kept);
                b.placement_filter = empty;
            }
        }
        conversions(&mut b, &evs, None);
    }
    merge(b.rows)
}

/// Each visitor's events once (redeliveries), all in (time, event id) order.
fn prepare<'a>(b: &mut Builder<'_, 'a>, visitors: &'a [(String, Vec<Event>)]) -> Vec<Ev<'a>> {
    let mut out: Vec<Ev<'a>> = Vec::new();
    for (i, (_, events)) in visitors.iter().enumerate() {
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

fn copy_scope(b: &mut Builder<'_, '_>, range: std::ops::Range<usize>, device: u32, placement: u32) {
    let copies: Rows = b.rows[range]
        .iter()
        .map(|(k, v)| {
            (
                Key {
                    device_filter: device,
                    placement_filter: placement,
                    ..*k
                },
                *v,
            )
        })
        .collect();
    b.rows.extend(copies);
}

/// Every row of one scope's events (sorted by time): per-day figures on
/// their days, the others over every run of active days.
fn scope<'a>(b: &mut Builder<'_, 'a>, evs: &[Ev<'a>]) {
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
    for x in 0..k {
        for y in x..k {
            let run = &evs[starts[x]..starts[y + 1]];
            out.clear();
            over_run(b, run, &mut out);
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
            stamp(x, y, 1);
            if x > 0 {
                stamp(x - 1, y, -1);
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

/// The first local day of each segment of the calendar: each phase's
/// first day and the day after each phase (segments are the phases and
/// the pieces outside them).
fn boundaries(campaign: &Campaign) -> Vec<Day> {
    let mut out: Vec<Day> = campaign
        .phases
        .iter()
        .flat_map(|p| [day_number(p.start_date), day_number(p.end_date) + 1])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether the days `[first, last]` are whole segments (phases, pieces
/// outside them, or runs of them): the stored rows answer such ranges
/// exactly for every visitor, wide ones included. The campaign's default
/// range, each phase and each piece between phases are.
pub fn aligned(campaign: &Campaign, first: Day, last: Day) -> bool {
    let bounds = boundaries(campaign);
    bounds.binary_search(&first).is_ok() && bounds.binary_search(&(last + 1)).is_ok()
}

/// Inclusive local days.
pub type Days = (Day, Day);

fn intersect(a: Days, b: Days) -> Option<Days> {
    let d = (a.0.max(b.0), a.1.min(b.1));
    (d.0 <= d.1).then_some(d)
}

/// Each phase's days within `days` (by start), and the pieces of `days`
/// outside every phase: how a question on `days` is split by phase.
pub fn phase_parts(campaign: &Campaign, days: Days) -> (Vec<(String, Days)>, Vec<Days>) {
    let mut phases: Vec<(String, Days)> = campaign
        .phases
        .iter()
        .filter_map(|p| {
            let span = (day_number(p.start_date), day_number(p.end_date));
            intersect(span, days).map(|d| (p.id.clone(), d))
        })
        .collect();
    phases.sort_by_key(|(_, d)| *d);
    let mut outside = Vec::new();
    let mut next = days.0;
    for (_, (a, b)) in &phases {
        if *a > next {
            outside.push((next, a - 1));
        }
        next = next.max(b + 1);
    }
    if next <= days.1 {
        outside.push((next, days.1));
    }
    (phases, outside)
}

/// The ranges of days the default questions ask (the campaign from its
/// first phase's first day to its last phase's last day, each phase, and
/// the one piece between phases when there is exactly one), sorted,
/// without repeats. `figures_ranges` keeps every figure summed over each
/// of them, so that those questions read a row per value rather than one
/// per visitors' span of days.
pub fn summed_ranges(campaign: &Campaign) -> Vec<Days> {
    let first = campaign
        .phases
        .iter()
        .map(|p| day_number(p.start_date))
        .min();
    let last = campaign.phases.iter().map(|p| day_number(p.end_date)).max();
    let (Some(first), Some(last)) = (first, last) else {
        return Vec::new();
    };
    let (phases, outside) = phase_parts(campaign, (first, last));
    let mut out: Vec<Days> = std::iter::once((first, last))
        .chain(phases.into_iter().map(|(_, d)| d))
        .collect();
    if let [one] = outside.as_slice() {
        out.push(*one);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// [`summed_ranges`] as text (`YYYY-MM-DD..YYYY-MM-DD`, comma-separated):
/// what `figures_ranges_state` records, so that a reader can tell whether
/// the stored sums are over its own campaign's ranges.
pub fn ranges_text(ranges: &[Days]) -> String {
    ranges
        .iter()
        .map(|(a, b)| format!("{}..{}", date_of(*a), date_of(*b)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The first and last local days of a visitor's events when it is wide
/// (active on more than [`WIDE_DAYS`] days): the processor lists it, and a
/// question on days that are not [`aligned`] corrects its stored rows with
/// [`range_correction`].
pub fn wide_span(campaign: &Campaign, events: &[Event]) -> Option<(Day, Day)> {
    let mut days: Vec<Day> = events.iter().map(|e| day_of(campaign, e.ms)).collect();
    days.sort_unstable();
    days.dedup();
    (days.len() > WIDE_DAYS).then(|| (days[0], days[days.len() - 1]))
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
        q.device.as_deref().unwrap_or(""),
        q.placement.as_deref().unwrap_or(""),
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

/// Figures that sum over days, on their event's day.
fn per_day<'a>(b: &mut Builder<'_, 'a>, evs: &[Ev<'a>], out: &mut Out) {
    let mut hours: Vec<(u32, u32, u32, Day)> = Vec::new();
    for ev in evs {
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
            k.hour = local_hour(b.campaign, e.ms);
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

/// The figures of one run of days: each visitor's, then the contacts'.
fn over_run<'a>(b: &mut Builder<'_, 'a>, run: &[Ev<'a>], out: &mut Out) {
    let single = run.iter().all(|ev| ev.visitor == run[0].visitor);
    if single {
        visitor_figures(b, run, out);
    } else {
        let mut by_visitor: BTreeMap<u32, Vec<Ev<'a>>> = BTreeMap::new();
        for ev in run {
            by_visitor.entry(ev.visitor).or_default().push(*ev);
        }
        for evs in by_visitor.values() {
            visitor_figures(b, evs, out);
        }
    }
    contact_figures(b, run, out);
}

/// One visitor's figures over some of its events (time order).
fn visitor_figures<'a>(b: &mut Builder<'_, 'a>, evs: &[Ev<'a>], out: &mut Out) {
    if evs.is_empty() {
        return;
    }
    let campaign = b.campaign;
    // Presence: channels, placements scanned.
    let mut channels: Vec<u32> = vec![b.all];
    let mut scanned: Vec<(u32, u32)> = Vec::new();
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
    let candidates: Vec<&Ev<'a>> = evs
        .iter()
        .filter(|ev| {
            rules::is_touch_candidate(campaign, &ev.e.channel, &ev.e.event_type, &ev.e.action)
        })
        .collect();
    let starts = rules::touch_starts(
        b.gap_ms,
        candidates.iter().map(|ev| (ev.e.ms, ev.e.channel.as_str())),
    );
    let mut first_touch: Vec<(&'a str, u64)> = Vec::new();
    let mut path: Vec<&'a str> = Vec::new();
    for (ev, starts) in candidates.iter().zip(starts) {
        if starts {
            let mut k = b.key(Figure::Touches);
            k.channel = ev.channel;
            k.phase = ev.phase;
            count(out, k);
            path.push(&ev.e.channel);
        }
        if !first_touch.iter().any(|(c, _)| *c == ev.e.channel) {
            first_touch.push((&ev.e.channel, ev.secs()));
        }
    }
    if !path.is_empty() && !evs.iter().any(|ev| rules::is_signup(&ev.e.event_type)) {
        let mut k = b.key(Figure::PathsNotConverted);
        k.channel = b.strings.own(paths::path_of(path));
        count(out, k);
    }
    funnel(b, evs, &first_touch, out);
    reach(b, evs, out);
    devices(b, evs, out);
}

/// Per channel (and `*`) × device class × OS family of the visitor's
/// events: reached, and signed when it has a sign-up among `evs`.
fn devices<'a>(b: &mut Builder<'_, 'a>, evs: &[Ev<'a>], out: &mut Out) {
    let signed = evs.iter().any(|ev| rules::is_signup(&ev.e.event_type));
    let mut seen: Vec<(u32, u32, u32)> = Vec::with_capacity(2 * evs.len());
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
fn funnel<'a>(b: &mut Builder<'_, 'a>, evs: &[Ev<'a>], first: &[(&'a str, u64)], out: &mut Out) {
    if first.is_empty() {
        return;
    }
    let views: Vec<u64> = evs
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
                k.seconds = seconds;
                count(out, k);
            }
        }
    }
}

/// Events per touch channel (exposures included) and channel overlap.
fn reach<'a>(b: &mut Builder<'_, 'a>, evs: &[Ev<'a>], out: &mut Out) {
    let mut per_channel: Vec<(&'a str, usize)> = Vec::new();
    for ev in evs
        .iter()
        .filter(|ev| rules::is_touch_channel(b.campaign, &ev.e.channel))
    {
        match per_channel.iter_mut().find(|(c, _)| *c == ev.e.channel) {
            Some((_, n)) => *n += 1,
            None => per_channel.push((&ev.e.channel, 1)),
        }
    }
    let ids: Vec<(u32, usize)> = per_channel.iter().map(|(c, n)| (b.id(c), *n)).collect();
    for (channel, n) in &ids {
        let mut k = b.key(Figure::ContactsPerVisitor);
        k.channel = *channel;
        k.contacts = u8::try_from((*n).min(CONTACTS_CAP)).unwrap_or(5);
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
fn contact_figures<'a>(b: &mut Builder<'_, 'a>, run: &[Ev<'a>], out: &mut Out) {
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

/// Which conversions count, for a question asked on demand.
#[derive(Debug, Clone, Copy)]
struct ConversionFilter<'q> {
    start_ms: u64,
    end_ms: u64,
    device: Option<&'q str>,
    phase: Option<&'q str>,
}

/// Conversions (the first sign-up of each contact, across the set, ties by
/// event id) and their credit under every model, on the conversion's day,
/// for every device and for the sign-up's device. Touches are all the
/// converting visitor's (of this bot setting), whatever the question.
fn conversions<'a>(b: &mut Builder<'_, 'a>, evs: &[Ev<'a>], filter: Option<ConversionFilter<'_>>) {
    // `evs` is in (time, event id) order.
    let first = rules::first_signups(
        evs.iter()
            .map(|ev| (ev.e.event_type.as_str(), ev.e.contact.as_str(), *ev)),
    );
    let campaign = b.campaign;
    let mut touches_of: HashMap<u32, Vec<Touch>> = HashMap::new();
    let mut out: Out = Vec::new();
    for ev in first.into_values() {
        if let Some(f) = &filter {
            let kept = ev.e.ms >= f.start_ms
                && ev.e.ms < f.end_ms
                && f.device.is_none_or(|d| d == ev.e.device)
                && f.phase.is_none_or(|p| p == ev.e.phase);
            if !kept {
                continue;
            }
        }
        let touches = touches_of
            .entry(ev.visitor)
            .or_insert_with(|| visitor_touches(campaign, evs, ev.visitor));
        let conversion = Conversion {
            ts: DateTime::from_timestamp_millis(i64::try_from(ev.e.ms).unwrap_or(i64::MAX))
                .unwrap_or_default(),
            event_id: ev.e.event_id,
        };
        let shares = attribution::shares(campaign, &conversion, touches);
        out.clear();
        let mut k = b.key(Figure::Conversions);
        k.phase = ev.phase;
        count(&mut out, k);
        // Its path: the touches credited (the lookback window), or `direct`.
        let credited =
            attribution::in_window(touches, conversion.ts, campaign.attribution.lookback);
        let mut k = b.key(Figure::PathsConverted);
        let mut delay_s = 0.0;
        match credited.first() {
            Some(first) => {
                let ms = (conversion.ts - first.ts).num_milliseconds().max(0);
                delay_s = ms as f64 / 1000.0;
                let secs = u64::try_from(ms / 1000).unwrap_or(0);
                k.channel = b
                    .strings
                    .own(paths::path_of(credited.iter().map(|t| t.channel.as_str())));
                let mut d = b.key(Figure::PathsDelays);
                d.channel = k.channel;
                d.seconds = u32::try_from(secs / paths::DELAY_STEP_S * paths::DELAY_STEP_S)
                    .unwrap_or(u32::MAX);
                count(&mut out, d);
            }
            None => k.channel = b.id(attribution::DIRECT),
        }
        out.push((
            k,
            Value {
                n: 1,
                credit: delay_s,
            },
        ));
        for s in &shares {
            let mut k = b.key(Figure::Credits);
            k.model = b.id(s.model);
            k.channel = b.id(campaign_str(campaign, &s.channel));
            k.phase = b.id(campaign_str(campaign, &s.touch_phase));
            k.conversion_phase = b.id(campaign_str(campaign, &s.conversion_phase));
            out.push((
                k,
                Value {
                    n: 0,
                    credit: s.credit,
                },
            ));
        }
        let device = (filter.is_none() && !ev.e.device.is_empty()).then_some(ev.device);
        for (key, v) in &out {
            let mut key = *key;
            key.first_day = ev.day;
            key.last_day = ev.day;
            b.rows.push((key, *v));
            if let Some(d) = device {
                b.rows.push((
                    Key {
                        device_filter: d,
                        ..key
                    },
                    *v,
                ));
            }
        }
    }
}

/// One visitor's touches over all its events given.
fn visitor_touches(campaign: &Campaign, evs: &[Ev<'_>], visitor: u32) -> Vec<Touch> {
    let candidates: Vec<&Ev<'_>> = evs
        .iter()
        .filter(|ev| ev.visitor == visitor)
        .filter(|ev| {
            rules::is_touch_candidate(campaign, &ev.e.channel, &ev.e.event_type, &ev.e.action)
        })
        .collect();
    attribution::touches_of(
        rules::gap_ms(campaign),
        candidates
            .iter()
            .map(|ev| (ev.e.ms, ev.e.event_id, ev.e.channel.as_str())),
    )
}

/// The campaign's own copy of a channel or phase name (so the key can
/// borrow it for the computation's lifetime).
pub(crate) fn campaign_str<'a>(campaign: &'a Campaign, s: &str) -> &'a str {
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

// --------------------------------------------------------------- questions

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
        device_filter: empty,
        placement_filter: empty,
        all,
        empty,
        gap_ms: rules::gap_ms(campaign),
    };
    let prepared = prepare(&mut b, visitors);
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
    let mut out: Out = Vec::new();
    per_day(&mut b, &kept, &mut out);
    if !kept.is_empty() {
        over_run(&mut b, &kept, &mut out);
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
/// asks ClickHouse).
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
        r.bots == bots
            && r.device_filter == device
            && r.placement_filter == placement
            && r.first_day >= first
            && r.last_day <= last
    }) {
        add_to(&mut answer, r.figure, r.dims(), r.value, 1);
    }
    answer
}

/// What a batch changes in one visitor's rows: `known` are its events
/// already accounted, `batch` the batch's (redeliveries and duplicates
/// allowed). Returns the events new to the visitor and the rows to add
/// (all its events' rows minus the known ones').
pub fn change<'a>(campaign: &'a Campaign, sets: &'a ChangeSets, strings: &mut Strings<'a>) -> Rows {
    let all = compute(campaign, &sets.all, strings);
    if sets.old[0].1.is_empty() {
        // A new visitor (most of a batch's): its rows, already merged.
        return all;
    }
    diff(&compute(campaign, &sets.old, strings), &all)
}

/// One visitor's events before and after a batch (see [`ChangeSets::new`]).
#[derive(Debug, Clone)]
pub struct ChangeSets {
    old: [(String, Vec<Event>); 1],
    all: [(String, Vec<Event>); 1],
    fresh: Vec<Event>,
}

impl ChangeSets {
    /// `known`: the visitor's accounted events; `batch`: what arrived.
    /// `None` when the batch brings nothing new.
    pub fn new(visitor: &str, known: Vec<Event>, batch: &[Event]) -> Option<Self> {
        let mut seen: std::collections::BTreeSet<Uuid> = known.iter().map(|e| e.event_id).collect();
        let fresh: Vec<Event> = batch
            .iter()
            .filter(|e| seen.insert(e.event_id))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return None;
        }
        let mut all = known.clone();
        all.extend(fresh.iter().cloned());
        Some(Self {
            old: [(visitor.to_owned(), known)],
            all: [(visitor.to_owned(), all)],
            fresh,
        })
    }

    pub fn visitor(&self) -> &str {
        &self.all[0].0
    }

    /// The visitor's events accounted before the batch.
    pub fn known(&self) -> &[Event] {
        &self.old[0].1
    }

    /// Every event of the visitor once the batch is in.
    pub fn all_events(&self) -> &[Event] {
        &self.all[0].1
    }

    /// The events new to the visitor.
    pub fn fresh(&self) -> &[Event] {
        &self.fresh
    }
}

/// [`compute`] with owned strings: every row of the set of visitors.
pub fn contribution(campaign: &Campaign, visitors: &[(String, Vec<Event>)]) -> Vec<OwnedRow> {
    let mut strings = Strings::default();
    let rows = compute(campaign, visitors, &mut strings);
    rows_of(&strings, &rows).map(|r| OwnedRow::of(&r)).collect()
}

/// A [`Row`] with owned strings (the correction, tests).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedRow {
    pub figure: Figure,
    pub bots: u8,
    pub device_filter: String,
    pub placement_filter: String,
    pub first_day: Day,
    pub last_day: Day,
    pub dims: Dims,
    pub value: Value,
}

impl OwnedRow {
    pub fn of(r: &Row<'_>) -> Self {
        Self {
            figure: r.figure,
            bots: r.bots,
            device_filter: r.device_filter.to_owned(),
            placement_filter: r.placement_filter.to_owned(),
            first_day: r.first_day,
            last_day: r.last_day,
            dims: r.dims(),
            value: r.value,
        }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn campaign() -> Campaign {
        Campaign::from_toml(include_str!("../../deploy/campaign.toml")).unwrap()
    }

    /// The shipped campaign with its phases' dates replaced.
    fn with_phases(dates: &[(&str, &str)]) -> Campaign {
        let mut c = campaign();
        c.phases.truncate(dates.len());
        for (p, (a, b)) in c.phases.iter_mut().zip(dates) {
            p.start_date = NaiveDate::parse_from_str(a, "%Y-%m-%d").unwrap();
            p.end_date = NaiveDate::parse_from_str(b, "%Y-%m-%d").unwrap();
        }
        c
    }

    #[test]
    fn summed_ranges_are_the_default_questions_days() {
        // Back-to-back phases: the campaign and each phase.
        let r = summed_ranges(&campaign());
        assert_eq!(
            r,
            vec![
                (day("2025-01-17"), day("2025-02-07")),
                (day("2025-01-17"), day("2025-03-16")),
                (day("2025-02-08"), day("2025-02-28")),
                (day("2025-03-01"), day("2025-03-16")),
            ]
        );
        assert_eq!(
            ranges_text(&r[..1]),
            "2025-01-17..2025-02-07",
            "as figures_ranges_state records them"
        );
        // One gap between phases: it is a range too (`hors-phase`).
        let gap = with_phases(&[("2025-01-01", "2025-01-10"), ("2025-01-20", "2025-01-31")]);
        assert_eq!(
            summed_ranges(&gap),
            vec![
                (day("2025-01-01"), day("2025-01-10")),
                (day("2025-01-01"), day("2025-01-31")),
                (day("2025-01-11"), day("2025-01-19")),
                (day("2025-01-20"), day("2025-01-31")),
            ]
        );
        // Two gaps: no single range outside the phases.
        let gaps = with_phases(&[
            ("2025-01-01", "2025-01-05"),
            ("2025-01-10", "2025-01-15"),
            ("2025-01-20", "2025-01-25"),
        ]);
        assert_eq!(summed_ranges(&gaps).len(), 4);
        // One phase: the campaign is that phase, listed once.
        let one = with_phases(&[("2025-01-01", "2025-01-31")]);
        assert_eq!(
            summed_ranges(&one),
            vec![(day("2025-01-01"), day("2025-01-31"))]
        );
        // Every summed range is aligned: the stored rows answer it exactly.
        for c in [campaign(), gap, gaps, one] {
            for (a, b) in summed_ranges(&c) {
                assert!(aligned(&c, a, b));
            }
        }
    }

    /// An event at a Paris local time `YYYY-MM-DD HH:MM`.
    fn ev(
        c: &Campaign,
        local: &str,
        event_type: &str,
        action: &str,
        channel: &str,
        placement: &str,
        contact: &str,
    ) -> Event {
        let t = chrono::NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M").unwrap();
        let t = c
            .timezone
            .from_local_datetime(&t)
            .unwrap()
            .with_timezone(&Utc);
        Event {
            event_id: Uuid::new_v4(),
            ms: u64::try_from(t.timestamp_millis()).unwrap(),
            event_type: event_type.into(),
            action: action.into(),
            channel: channel.into(),
            placement: placement.into(),
            phase: c.phase_at(t).into(),
            device: "mobile".into(),
            os: "iOS".into(),
            bot: false,
            contact: contact.into(),
        }
    }

    fn day(s: &str) -> Day {
        day_number(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    /// The visitor of the module's worked example: a metro poster scanned
    /// twice in 20 minutes, a landing visit; two days later a card shown,
    /// clicked, a visit and a sign-up.
    fn scanner(c: &Campaign) -> Vec<Event> {
        vec![
            ev(
                c,
                "2025-02-10 10:00",
                "qr_scan",
                "",
                "metro",
                "M-CHATELET",
                "",
            ),
            ev(
                c,
                "2025-02-10 10:01",
                "page_view",
                "",
                "site",
                "M-CHATELET",
                "",
            ),
            ev(
                c,
                "2025-02-10 10:20",
                "qr_scan",
                "",
                "metro",
                "M-CHATELET",
                "",
            ),
            ev(
                c,
                "2025-02-12 20:00",
                "tinder_card",
                "impression",
                "tinder",
                "T-SAINT-VALENTIN",
                "",
            ),
            ev(
                c,
                "2025-02-12 20:05",
                "tinder_card",
                "click",
                "tinder",
                "T-SAINT-VALENTIN",
                "",
            ),
            ev(
                c,
                "2025-02-12 20:06",
                "page_view",
                "",
                "site",
                "T-SAINT-VALENTIN",
                "",
            ),
            ev(
                c,
                "2025-02-12 20:10",
                "signup",
                "",
                "site",
                "T-SAINT-VALENTIN",
                "c1",
            ),
        ]
    }

    fn stored(c: &Campaign, visitors: &[(String, Vec<Event>)]) -> Vec<OwnedRow> {
        contribution(c, visitors)
    }

    fn range(rows: &[OwnedRow], device: &str, placement: &str, first: &str, last: &str) -> Answer {
        let (first, last) = (day(first), day(last));
        let mut a = Answer::new();
        for r in rows.iter().filter(|r| {
            r.bots == 0
                && r.device_filter == device
                && r.placement_filter == placement
                && r.first_day >= first
                && r.last_day <= last
        }) {
            add_to(&mut a, r.figure, r.dims.clone(), r.value, 1);
        }
        a
    }

    fn n(a: &Answer, figure: Figure, pick: impl Fn(&Dims) -> bool) -> i64 {
        a.iter()
            .filter(|((f, d), _)| *f == figure && pick(d))
            .map(|(_, v)| v.n)
            .sum()
    }

    fn credit(a: &Answer, model: &str, channel: &str) -> f64 {
        a.iter()
            .filter(|((f, d), _)| *f == Figure::Credits && d.model == model && d.channel == channel)
            .map(|(_, v)| v.credit)
            .sum()
    }

    #[test]
    fn an_answer_of_values_sums_equal_keys_and_drops_zeros() {
        let d = |c: &str| Dims {
            channel: c.into(),
            ..Dims::default()
        };
        let v = |n: i64, credit: f64| Value { n, credit };
        let values = vec![
            ((Figure::Visitors, d("metro")), v(2, 0.0)),
            ((Figure::Visitors, d("tinder")), v(1, 0.0)),
            ((Figure::Visitors, d("metro")), v(3, 0.0)),
            ((Figure::Visitors, d("presse")), v(1, 0.5)),
            ((Figure::Visitors, d("presse")), v(-1, -0.5)),
        ];
        let mut by_insertion = Answer::new();
        for ((f, dims), x) in &values {
            add_to(&mut by_insertion, *f, dims.clone(), *x, 1);
        }
        let a = answer_of(values);
        assert_eq!(a, by_insertion);
        assert_eq!(a.len(), 2);
        assert_eq!(a[&(Figure::Visitors, d("metro"))], v(5, 0.0));
    }

    #[test]
    fn dims_order_field_by_field_in_declaration_order() {
        let key = |d: &Dims| {
            (
                (
                    d.phase.clone(),
                    d.channel.clone(),
                    d.placement.clone(),
                    d.event_type.clone(),
                    d.action.clone(),
                    d.step.clone(),
                ),
                (
                    d.model.clone(),
                    d.conversion_phase.clone(),
                    d.other_channel.clone(),
                    d.device_class.clone(),
                    d.os_family.clone(),
                ),
                (d.contacts, d.hour, d.day, d.seconds),
            )
        };
        let texts = ["", "a", "ab", "b"];
        let mut all = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            for (j, u) in texts.iter().enumerate() {
                let mut d = Dims {
                    channel: (*t).into(),
                    os_family: (*u).into(),
                    seconds: u32::try_from(i * j).unwrap(),
                    ..Dims::default()
                };
                all.push(d.clone());
                d.phase = (*u).into();
                d.hour = u32::try_from(i).unwrap();
                all.push(d.clone());
                d.model = (*t).into();
                d.contacts = u8::try_from(j).unwrap();
                all.push(d);
            }
        }
        for a in &all {
            for b in &all {
                assert_eq!(a.cmp(b), key(a).cmp(&key(b)), "{a:?} vs {b:?}");
                assert_eq!(a.cmp(b) == std::cmp::Ordering::Equal, a == b);
            }
        }
    }

    #[test]
    fn figure_names_round_trip_and_unknown_names_are_errors() {
        for f in Figure::ALL {
            assert_eq!(Figure::parse(f.name()), Ok(f));
        }
        assert_eq!(
            Figure::parse("vish"),
            Err(UnknownFigure("vish".into())),
            "an unknown name is an error, never an empty figure"
        );
    }

    #[test]
    fn day_numbers_are_local_dates() {
        let c = campaign();
        assert_eq!(date_of(day("2025-02-10")).to_string(), "2025-02-10");
        // 23:30 UTC on 9 February is 00:30 on the 10th in Paris.
        let ms = 1_739_143_800_000; // 2025-02-09T23:30:00Z
        assert_eq!(day_of(&c, ms), day("2025-02-10"));
        assert_eq!(
            day_start(&c, day("2025-02-10")).to_rfc3339(),
            "2025-02-09T23:00:00+00:00"
        );
    }

    /// Every row of a few visitors (bots, several devices, a shared
    /// contact, a wide visitor) holds '' / 0 outside its figure's
    /// `dimensions()`: the dashboard groups by those alone.
    #[test]
    fn rows_hold_nothing_outside_their_figures_dimensions() {
        let c = campaign();
        let mut two = scanner(&c);
        for e in two.iter_mut().take(2) {
            e.device = "desktop".into();
            e.os = "Windows 10".into();
            e.bot = true;
        }
        let mut wide = Vec::new();
        for d in 0..(WIDE_DAYS as i64 + 3) {
            let mut e = scanner(&c).remove(0);
            e.event_id = Uuid::new_v4();
            e.ms += u64::try_from(d * 86_400_000).unwrap();
            wide.push(e);
        }
        let visitors = vec![
            ("v1".to_owned(), scanner(&c)),
            ("v2".to_owned(), two),
            ("v3".to_owned(), wide),
        ];
        let rows = stored(&c, &visitors);
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows {
            let d = &r.dims;
            let used = r.figure.dimensions();
            let held: [(&str, bool); 15] = [
                ("phase", !d.phase.is_empty()),
                ("channel", !d.channel.is_empty()),
                ("placement", !d.placement.is_empty()),
                ("event_type", !d.event_type.is_empty()),
                ("action", !d.action.is_empty()),
                ("step", !d.step.is_empty()),
                ("model", !d.model.is_empty()),
                ("conversion_phase", !d.conversion_phase.is_empty()),
                ("other_channel", !d.other_channel.is_empty()),
                ("device_class", !d.device_class.is_empty()),
                ("os_family", !d.os_family.is_empty()),
                ("contacts", d.contacts != 0),
                ("hour", d.hour != 0),
                ("day", d.day != 0),
                ("seconds", d.seconds != 0),
            ];
            for (column, set) in held {
                assert!(
                    !set || used.contains(&column),
                    "{:?} holds {column}: {d:?}",
                    r.figure
                );
            }
            seen.insert(r.figure);
        }
        assert_eq!(
            seen.len(),
            Figure::ALL.len(),
            "every figure has rows: {seen:?}"
        );
    }

    #[test]
    fn devices_count_visitors_per_channel_device_and_os_and_those_who_signed() {
        let c = campaign();
        // The worked example's visitor on an iPhone, but its metro scans
        // from an Android phone; a second visitor on a Windows desktop who
        // only scans.
        let mut one = scanner(&c);
        for e in one.iter_mut().take(3) {
            e.os = "Android".into();
        }
        let mut two = vec![scanner(&c).remove(0)];
        two[0].device = "desktop".into();
        two[0].os = "Windows 10".into();
        let rows = stored(&c, &[("v1".into(), one), ("v2".into(), two)]);
        let a = range(&rows, "", "", "2025-01-17", "2025-03-16");
        let dev = |a: &Answer, ch: &str, class: &str, os: &str, step: &str| {
            n(a, Figure::Devices, |d| {
                d.channel == ch && d.device_class == class && d.os_family == os && d.step == step
            })
        };
        assert_eq!(dev(&a, "metro", "mobile", "Android", REACHED), 1);
        assert_eq!(dev(&a, "metro", "mobile", "Android", SIGNED), 1);
        assert_eq!(dev(&a, "metro", "desktop", "Windows 10", REACHED), 1);
        assert_eq!(dev(&a, "metro", "desktop", "Windows 10", SIGNED), 0);
        assert_eq!(dev(&a, "metro", "mobile", "iOS", REACHED), 0);
        assert_eq!(dev(&a, "tinder", "mobile", "iOS", SIGNED), 1);
        // Every channel: v1 on two OS families (counted in each), v2 on one.
        assert_eq!(dev(&a, ALL, "mobile", "iOS", REACHED), 1);
        assert_eq!(dev(&a, ALL, "mobile", "Android", REACHED), 1);
        assert_eq!(dev(&a, ALL, "desktop", "Windows 10", REACHED), 1);
        // v1 signed: metro, site and * on Android; tinder, site and * on iOS.
        assert_eq!(n(&a, Figure::Devices, |d| d.step == SIGNED), 6);
        // On 10 February alone v1 has not signed yet.
        let a = range(&rows, "", "", "2025-02-10", "2025-02-10");
        assert_eq!(dev(&a, "metro", "mobile", "Android", REACHED), 1);
        assert_eq!(dev(&a, "metro", "mobile", "Android", SIGNED), 0);
    }

    #[test]
    fn a_conversion_path_and_its_delay_to_the_minute() {
        let c = campaign();
        let rows = stored(&c, &[("v1".into(), scanner(&c))]);
        let a = range(&rows, "", "", "2025-01-17", "2025-03-16");
        let path = |d: &Dims| d.channel == "metro > tinder";
        assert_eq!(n(&a, Figure::PathsConverted, path), 1);
        // 10 Feb 10:00 → 12 Feb 20:10: 209 400 s exactly, on the minute.
        let exact: f64 = a
            .iter()
            .filter(|((f, d), _)| *f == Figure::PathsConverted && path(d))
            .map(|(_, v)| v.credit)
            .sum();
        assert!((exact - 209_400.0).abs() < 1e-9, "{exact}");
        assert_eq!(
            n(&a, Figure::PathsDelays, |d| path(d) && d.seconds == 209_400),
            1
        );
        assert_eq!(n(&a, Figure::PathsDelays, |_| true), 1);
    }

    #[test]
    fn the_worked_example_over_the_campaign() {
        let c = campaign();
        let rows = stored(&c, &[("v1".into(), scanner(&c))]);
        let a = range(&rows, "", "", "2025-01-17", "2025-03-16");
        assert_eq!(n(&a, Figure::Events, |_| true), 7);
        assert_eq!(n(&a, Figure::Events, |d| d.event_type == "qr_scan"), 2);
        for ch in [ALL, "metro", "site", "tinder"] {
            assert_eq!(n(&a, Figure::Visitors, |d| d.channel == ch), 1, "{ch}");
        }
        // Two metro scans 20 minutes apart are one touch; the card shown is
        // exposure, the click a touch.
        assert_eq!(
            n(&a, Figure::Touches, |d| d.channel == "metro"
                && d.phase == "p2-saint-valentin"),
            1
        );
        assert_eq!(n(&a, Figure::Touches, |d| d.channel == "tinder"), 1);
        for step in [TOUCHED, VISITED, SIGNED] {
            assert_eq!(
                n(&a, Figure::Funnel, |d| d.channel == "metro"
                    && d.step == step),
                1
            );
            assert_eq!(
                n(&a, Figure::Funnel, |d| d.channel == "tinder"
                    && d.step == step),
                1
            );
        }
        // 10 Feb 10:00 → 12 Feb 20:10; 20:05 → 20:10.
        assert_eq!(
            n(&a, Figure::FunnelSeconds, |d| d.channel == "metro"
                && d.seconds == 209_400),
            1
        );
        assert_eq!(
            n(&a, Figure::FunnelHours, |d| d.channel == "metro"
                && d.seconds == 208_800),
            1
        );
        assert_eq!(
            n(&a, Figure::FunnelSeconds, |d| d.channel == "tinder"
                && d.seconds == 300),
            1
        );
        assert_eq!(
            n(&a, Figure::ContactsPerVisitor, |d| d.channel == "metro"
                && d.contacts == 2),
            1
        );
        assert_eq!(
            n(&a, Figure::ContactsPerVisitor, |d| d.channel == "tinder"
                && d.contacts == 2),
            1
        );
        assert_eq!(
            n(&a, Figure::Overlap, |d| d.channel == "metro"
                && d.other_channel == "tinder"),
            1
        );
        assert_eq!(n(&a, Figure::Overlap, |_| true), 4);
        assert_eq!(
            n(&a, Figure::Scanners, |d| d.placement == "M-CHATELET"
                && d.channel == ALL),
            1
        );
        assert_eq!(
            n(&a, Figure::Scanners, |d| d.placement == "T-SAINT-VALENTIN"
                && d.channel == "tinder"),
            1
        );
        assert_eq!(n(&a, Figure::Signups, |d| d.channel == ALL), 1);
        assert_eq!(n(&a, Figure::Signups, |d| d.channel == "site"), 1);
        assert_eq!(
            n(&a, Figure::SignupsByPlacement, |d| d.placement
                == "T-SAINT-VALENTIN"),
            2
        );
        assert_eq!(
            n(&a, Figure::SignupsDaily, |d| d.channel == ALL
                && d.day == day("2025-02-12")),
            1
        );
        assert_eq!(
            n(&a, Figure::VisitorsDaily, |d| d.channel == ALL),
            2,
            "two days"
        );
        assert_eq!(
            n(&a, Figure::VisitorsHourly, |d| d.channel == ALL),
            2,
            "two hours"
        );
        assert_eq!(
            n(&a, Figure::Conversions, |d| d.phase == "p2-saint-valentin"),
            1
        );
        assert!((credit(&a, "first_touch", "metro") - 1.0).abs() < 1e-12);
        assert!((credit(&a, "last_touch", "tinder") - 1.0).abs() < 1e-12);
        assert!((credit(&a, "linear", "metro") - 0.5).abs() < 1e-12);
        assert!((credit(&a, "position_based", "tinder") - 0.5).abs() < 1e-12);
        // 2^(−age / 7 d), normalised: ages 2 d 10 h 10 min and 5 min.
        let (old, new) = (
            (-209_400.0_f64 / 604_800.0).exp2(),
            (-300.0_f64 / 604_800.0).exp2(),
        );
        assert!((credit(&a, "time_decay", "metro") - old / (old + new)).abs() < 1e-12);
    }

    #[test]
    fn a_range_keeps_the_visitors_events_inside_it() {
        let c = campaign();
        let rows = stored(&c, &[("v1".into(), scanner(&c))]);
        // The day of the click and the sign-up alone.
        let a = range(&rows, "", "", "2025-02-12", "2025-02-12");
        assert_eq!(n(&a, Figure::Visitors, |d| d.channel == "metro"), 0);
        assert_eq!(n(&a, Figure::Visitors, |d| d.channel == "tinder"), 1);
        assert_eq!(n(&a, Figure::Visitors, |d| d.channel == ALL), 1);
        assert_eq!(n(&a, Figure::Funnel, |d| d.channel == "metro"), 0);
        assert_eq!(
            n(&a, Figure::ContactsPerVisitor, |d| d.channel == "tinder"
                && d.contacts == 2),
            1
        );
        assert_eq!(n(&a, Figure::Signups, |d| d.channel == ALL), 1);
        // A conversion's credit does not depend on the question: the metro
        // touch two days before still gets its share.
        assert_eq!(n(&a, Figure::Conversions, |_| true), 1);
        assert!((credit(&a, "first_touch", "metro") - 1.0).abs() < 1e-12);
        // The scan day alone: touched and visited, no sign-up.
        let a = range(&rows, "", "", "2025-02-10", "2025-02-10");
        assert_eq!(
            n(&a, Figure::Funnel, |d| d.channel == "metro"
                && d.step == VISITED),
            1
        );
        assert_eq!(n(&a, Figure::Funnel, |d| d.step == SIGNED), 0);
        assert_eq!(n(&a, Figure::Signups, |_| true), 0);
        assert_eq!(n(&a, Figure::Conversions, |_| true), 0);
        // The day between: nothing.
        assert!(range(&rows, "", "", "2025-02-11", "2025-02-11").is_empty());
    }

    #[test]
    fn presence_is_stored_as_days_and_gaps() {
        let c = campaign();
        let rows = stored(&c, &[("v1".into(), scanner(&c))]);
        let visitors: Vec<&OwnedRow> = rows
            .iter()
            .filter(|r| {
                r.figure == Figure::Visitors
                    && r.bots == 0
                    && r.device_filter.is_empty()
                    && r.placement_filter.is_empty()
                    && r.dims.channel == ALL
            })
            .collect();
        // Present on each active day, minus once for the pair of them.
        let got: Vec<(Day, Day, i64)> = visitors
            .iter()
            .map(|r| (r.first_day, r.last_day, r.value.n))
            .collect();
        let (d10, d12) = (day("2025-02-10"), day("2025-02-12"));
        assert_eq!(got, vec![(d10, d10, 1), (d10, d12, -1), (d12, d12, 1)]);
    }

    #[test]
    fn device_and_placement_filters_keep_their_events() {
        let c = campaign();
        let mut events = scanner(&c);
        events[0].device = "desktop".into();
        let rows = stored(&c, &[("v1".into(), events)]);
        let desktop = range(&rows, "desktop", "", "2025-01-17", "2025-03-16");
        assert_eq!(n(&desktop, Figure::Events, |_| true), 1);
        assert_eq!(n(&desktop, Figure::Touches, |d| d.channel == "metro"), 1);
        assert_eq!(
            n(&desktop, Figure::Conversions, |_| true),
            0,
            "the sign-up was on mobile"
        );
        let mobile = range(&rows, "mobile", "", "2025-01-17", "2025-03-16");
        assert_eq!(n(&mobile, Figure::Events, |_| true), 6);
        assert_eq!(n(&mobile, Figure::Conversions, |_| true), 1);
        // The 10:20 scan alone starts the metro touch on mobile.
        assert_eq!(n(&mobile, Figure::Touches, |d| d.channel == "metro"), 1);
        assert!(
            (credit(&mobile, "first_touch", "metro") - 1.0).abs() < 1e-12,
            "touches of every device"
        );
        let poster = range(&rows, "", "M-CHATELET", "2025-01-17", "2025-03-16");
        assert_eq!(n(&poster, Figure::Events, |_| true), 3);
        assert_eq!(n(&poster, Figure::Visitors, |d| d.channel == "tinder"), 0);
        assert_eq!(
            n(&poster, Figure::Funnel, |d| d.channel == "metro"
                && d.step == VISITED),
            1
        );
        assert_eq!(n(&poster, Figure::Signups, |_| true), 0);
    }

    #[test]
    fn bots_are_left_out_unless_asked_for() {
        let c = campaign();
        let mut events = scanner(&c);
        let mut bot = ev(&c, "2025-02-11 03:00", "page_view", "", "site", "", "");
        bot.bot = true;
        events.push(bot);
        let rows = stored(&c, &[("v1".into(), events)]);
        let without = range(&rows, "", "", "2025-01-17", "2025-03-16");
        assert_eq!(n(&without, Figure::Events, |_| true), 7);
        let with: i64 = rows
            .iter()
            .filter(|r| r.bots == 1 && r.device_filter.is_empty() && r.placement_filter.is_empty())
            .filter(|r| r.figure == Figure::Events)
            .map(|r| r.value.n)
            .sum();
        assert_eq!(with, 8);
    }

    #[test]
    fn a_contact_on_two_visitors_counts_once_with_the_correction() {
        let c = campaign();
        let phone = vec![ev(&c, "2025-02-10 09:00", "signup", "", "site", "", "c1")];
        let laptop = vec![ev(&c, "2025-02-11 09:00", "signup", "", "site", "", "c1")];
        let both = vec![("a".to_owned(), phone), ("b".to_owned(), laptop)];
        let mut rows = stored(&c, &both[..1]);
        rows.extend(stored(&c, &both[1..]));
        let separately = range(&rows, "", "", "2025-01-17", "2025-03-16");
        assert_eq!(n(&separately, Figure::Signups, |d| d.channel == ALL), 2);
        assert_eq!(n(&separately, Figure::Conversions, |_| true), 2);
        rows.extend(correction(&c, &both));
        let fixed = range(&rows, "", "", "2025-01-17", "2025-03-16");
        assert_eq!(n(&fixed, Figure::Signups, |d| d.channel == ALL), 1);
        assert_eq!(n(&fixed, Figure::Conversions, |_| true), 1);
        assert_eq!(
            n(&fixed, Figure::Visitors, |d| d.channel == ALL),
            2,
            "two visitors still"
        );
        assert_eq!(
            fixed,
            range(&stored(&c, &both), "", "", "2025-01-17", "2025-03-16")
        );
    }

    #[test]
    fn the_on_demand_answer_is_the_stored_rows_answer() {
        let c = campaign();
        let visitors = [("v1".to_owned(), scanner(&c))];
        let rows = stored(&c, &visitors);
        for (first, last, device, placement) in [
            ("2025-01-17", "2025-03-16", None, None),
            ("2025-02-12", "2025-02-12", None, None),
            ("2025-02-10", "2025-02-11", Some("mobile"), None),
            ("2025-02-01", "2025-02-28", None, Some("M-CHATELET")),
        ] {
            let q = Question {
                start_ms: u64::try_from(day_start(&c, day(first)).timestamp_millis()).unwrap(),
                end_ms: u64::try_from(day_start(&c, day(last) + 1).timestamp_millis()).unwrap(),
                phase: None,
                device: device.map(str::to_owned),
                placement: placement.map(str::to_owned),
                include_bots: false,
            };
            let direct = answer(&c, &visitors, &q);
            let summed = range(
                &rows,
                device.unwrap_or(""),
                placement.unwrap_or(""),
                first,
                last,
            );
            assert_eq!(direct, summed, "{first} … {last} {device:?} {placement:?}");
        }
    }
}
