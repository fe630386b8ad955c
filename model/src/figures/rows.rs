//! The stored rows: a figure's key and value, the interned strings they
//! point into, summing sets of rows (per visitor, then per batch), and
//! turning rows into answers.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::Campaign;

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

    /// Takes in `other`'s strings (those of a computation over the same
    /// events, on another thread): returns, for each of its ids, the id
    /// of the same string here ([`Key::renamed`]).
    pub fn absorb(&mut self, other: Strings<'a>) -> Vec<u32> {
        other
            .list
            .into_iter()
            .map(|s| match self.index.get(s.as_ref()) {
                Some(i) => *i,
                None => self.insert(s),
            })
            .collect()
    }

    pub fn get(&self, id: u32) -> &str {
        self.list.get(id as usize).map(|s| s.as_ref()).unwrap_or("")
    }

    pub(crate) fn day(&mut self, campaign: &Campaign, ms: u64) -> Day {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
    pub frequency: u8,
    pub hour: u32,
    /// The local wall-clock hour, 0–23 (`scans_by_local_hour`).
    pub local_hour: u8,
    pub day: Day,
    /// The path of a conversion (`paths_*` figures): the channels of its
    /// touches, `metro > tinder`, or `direct`.
    pub path: u32,
    /// A delay in seconds (from the first touch to the sign-up).
    pub delay_seconds: u32,
}

impl Key {
    /// The same key with each string's id `id` replaced by `ids[id]`
    /// (from [`Strings::absorb`]).
    pub fn renamed(self, ids: &[u32]) -> Key {
        let id = |i: u32| ids.get(i as usize).copied().unwrap_or(i);
        Key {
            device_filter: id(self.device_filter),
            placement_filter: id(self.placement_filter),
            phase: id(self.phase),
            channel: id(self.channel),
            placement: id(self.placement),
            event_type: id(self.event_type),
            action: id(self.action),
            step: id(self.step),
            model: id(self.model),
            conversion_phase: id(self.conversion_phase),
            other_channel: id(self.other_channel),
            device_class: id(self.device_class),
            os_family: id(self.os_family),
            path: id(self.path),
            ..self
        }
    }
}

/// Two fields to a word, and the ten words mixed in five independent
/// lanes, two words to a 128-bit multiply (folded), then written once:
/// hashing keys was a tenth of the live processor's time, most of it
/// waiting on one long chain of multiplies. Equal keys hash alike, as
/// `Eq` needs.
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let pair = |a: u32, b: u32| (u64::from(a) << 32) | u64::from(b);
        let fold = |a: u64, b: u64| {
            let p = u128::from(a) * u128::from(b);
            (p as u64) ^ ((p >> 64) as u64)
        };
        let small = u32::from(self.figure as u8)
            | (u32::from(self.bots) << 8)
            | (u32::from(self.frequency) << 16)
            | (u32::from(self.local_hour) << 24);
        let words = [
            pair(small, self.device_filter),
            pair(self.placement_filter, self.first_day),
            pair(self.last_day, self.phase),
            pair(self.channel, self.placement),
            pair(self.event_type, self.action),
            pair(self.step, self.model),
            pair(self.conversion_phase, self.other_channel),
            pair(self.device_class, self.os_family),
            pair(self.hour, self.day),
            pair(self.path, self.delay_seconds),
        ];
        // One constant of mixed bits per word (digits of π); each lane
        // rotated apart, so that lanes holding the same pair differ.
        const MIX: [u64; 10] = [
            0x243f_6a88_85a3_08d3,
            0x1319_8a2e_0370_7344,
            0xa409_3822_299f_31d0,
            0x082e_fa98_ec4e_6c89,
            0x4528_21e6_38d0_1377,
            0xbe54_66cf_34e9_0c6c,
            0xc0ac_29b7_c97c_50dd,
            0x3f84_d5b5_b547_0917,
            0x9216_d5d9_8979_fb1b,
            0xd131_0ba6_98df_b5ac,
        ];
        let mut h = 0;
        for lane in 0..5 {
            let (a, b) = (2 * lane, 2 * lane + 1);
            h ^= fold(words[a] ^ MIX[a], words[b] ^ MIX[b]).rotate_left(13 * lane as u32);
        }
        state.write_u64(h);
    }
}

/// Rows sorted by key, equal keys merged, zeros dropped.
pub type Rows = Vec<(Key, Value)>;

/// Sorts and merges rows with equal keys; drops zeros.
pub fn merge(rows: Rows) -> Rows {
    summed(rows)
}

/// Values sorted by key, equal keys summed, zeros dropped: one sort, not
/// a search per value (the processor's rows and the dashboard's answers),
/// in place (the processor sums thousands of rows per visitor: a second
/// vector or a sort's scratch space each time kept the allocator busy).
pub(crate) fn summed<K: Ord>(mut values: Vec<(K, Value)>) -> Vec<(K, Value)> {
    values.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut kept = 0;
    for i in 0..values.len() {
        if kept > 0 && values[kept - 1].0 == values[i].0 {
            let v = values[i].1;
            values[kept - 1].1.add(v, 1);
        } else {
            values.swap(kept, i);
            kept += 1;
        }
    }
    values.truncate(kept);
    values.retain(|(_, v)| !v.is_zero());
    values
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

type KeyMap = HashMap<Key, Value, std::hash::BuildHasherDefault<KeyHasher>>;

/// Rows of many visitors summed as they come.
#[derive(Debug, Default)]
pub struct Sum {
    map: KeyMap,
    /// One visitor's rows, summed before they join `map` (kept between
    /// visitors, so that it is allocated once).
    visitor: KeyMap,
    /// The vectors a visitor's rows after and before are made in, kept
    /// between visitors likewise.
    scratch: (Rows, Rows),
}

/// The most rows a scratch vector or the visitor's map keeps between
/// visitors (~7 MB each): a visitor with years of events (a rebuild)
/// must not leave the processor holding its rows' memory.
const KEPT_ROWS: usize = 1 << 16;

/// The largest visitor's map kept for the next visitor. Emptying a map
/// walks all its buckets, so one large visitor (years of events) would
/// make every later visitor of the batch pay for its capacity; an
/// ordinary visitor has a few hundred rows.
const KEPT_VISITOR_ROWS: usize = 1 << 12;

impl Sum {
    /// Adds one visitor's rows, `plus` minus `minus`, in any order and
    /// with equal keys not yet summed: they are summed among themselves
    /// first, so that what cancels out (most of a returning visitor's
    /// rows) never reaches the batch's map.
    /// Then each row of the default scope that does not cancel
    /// (`unfiltered`: its device and placement filters), conversions
    /// aside, is added again to the copies the rows were given without
    /// ([`Left`]): with the sole device's filter, with the sole
    /// placement's.
    pub(crate) fn add_visitor(
        &mut self,
        plus: &[(Key, Value)],
        minus: &[(Key, Value)],
        left: Left,
        unfiltered: u32,
    ) {
        for (rows, sign) in [(plus, 1), (minus, -1)] {
            for (k, v) in rows {
                self.visitor.entry(*k).or_default().add(*v, sign);
            }
        }
        for (k, v) in self.visitor.drain() {
            if v.is_zero() {
                continue;
            }
            let scope_row = k.device_filter == unfiltered
                && k.placement_filter == unfiltered
                && !of_conversions(k.figure);
            let device = left.device.filter(|_| scope_row).map(|d| Key {
                device_filter: d,
                ..k
            });
            let placement = left.placement.filter(|_| scope_row).map(|p| Key {
                placement_filter: p,
                ..k
            });
            for key in std::iter::once(k).chain(device).chain(placement) {
                self.map.entry(key).or_default().add(v, 1);
            }
        }
        if self.visitor.capacity() > KEPT_VISITOR_ROWS {
            self.visitor = KeyMap::default();
        }
    }

    /// The vectors to make the next visitor's rows in, after and before
    /// (empty, with the capacity the last visitors needed).
    pub(crate) fn take_scratch(&mut self) -> (Rows, Rows) {
        std::mem::take(&mut self.scratch)
    }

    /// Gives the vectors back for the next visitor, unless one is larger
    /// than is worth keeping.
    pub(crate) fn keep_scratch(&mut self, after: Rows, before: Rows) {
        let keep = |rows: Rows| {
            if rows.capacity() > KEPT_ROWS {
                Rows::new()
            } else {
                rows
            }
        };
        self.scratch = (keep(after), keep(before));
    }

    /// Adds `sign ×` each row.
    pub fn add(&mut self, rows: &[(Key, Value)], sign: i64) {
        for (k, v) in rows {
            self.map.entry(*k).or_default().add(*v, sign);
        }
    }

    /// Adds the sums of `other`, whose keys point into `theirs`, to
    /// these, whose keys point into `strings`: the two halves of a batch
    /// summed on two threads become one set of rows, so that a key both
    /// halves changed is written once (a third of a live batch's figure
    /// rows were such twins).
    pub fn absorb<'a>(&mut self, strings: &mut Strings<'a>, other: Sum, theirs: Strings<'a>) {
        let ids = strings.absorb(theirs);
        for (k, v) in other.map {
            self.map.entry(k.renamed(&ids)).or_default().add(v, 1);
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
    pub frequency: u8,
    pub hour: u32,
    /// The local wall-clock hour, 0–23 (`scans_by_local_hour`).
    pub local_hour: u8,
    pub day: Day,
    pub path: &'s str,
    pub delay_seconds: u32,
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
        frequency: k.frequency,
        hour: k.hour,
        local_hour: k.local_hour,
        day: k.day,
        path: strings.get(k.path),
        delay_seconds: k.delay_seconds,
        value: *v,
    })
}

/// What an answer is about: a figure and its dimensions, with owned
/// strings. The question's own filters (range, device, placement, bots)
/// are not part of it.
// `==` is field by field (through `Ord`), as the derived hash reads them.
#[allow(clippy::derived_hash_with_manual_eq)]
#[derive(Debug, Clone, Default, Eq, Hash)]
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
    pub frequency: u8,
    pub hour: u32,
    /// The local wall-clock hour, 0–23 (`scans_by_local_hour`).
    pub local_hour: u8,
    pub day: Day,
    pub path: String,
    pub delay_seconds: u32,
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
            .then_with(|| self.frequency.cmp(&o.frequency))
            .then_with(|| self.hour.cmp(&o.hour))
            .then_with(|| self.local_hour.cmp(&o.local_hour))
            .then_with(|| self.day.cmp(&o.day))
            .then_with(|| text(&self.path, &o.path))
            .then_with(|| self.delay_seconds.cmp(&o.delay_seconds))
    }
}

/// Equal when [`Ord`] says so: the same fields, but two empty strings
/// compared without a call to `memcmp` (a derived `==` made one per field,
/// and a path, near the end, was reached after thirteen empty ones: half
/// of `/api/attribution`'s time at 10 M events went to summing its
/// answer's paths).
impl PartialEq for Dims {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
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
            frequency: self.frequency,
            hour: self.hour,
            local_hour: self.local_hour,
            day: self.day,
            path: self.path.to_owned(),
            delay_seconds: self.delay_seconds,
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
