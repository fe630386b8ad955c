//! Local days and ranges of days: a time's local day in the campaign's
//! zone, the days the processor sums ranges for, the wide visitors' span,
//! the hour of day.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

use super::*;
use crate::Campaign;

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
pub(crate) const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Local midnight (UTC instant) starting a day.
pub fn day_start(campaign: &Campaign, day: Day) -> DateTime<Utc> {
    let d = date_of(day).and_time(chrono::NaiveTime::MIN);
    campaign
        .timezone
        .from_local_datetime(&d)
        .earliest()
        .map_or_else(|| Utc.from_utc_datetime(&d), |t| t.with_timezone(&Utc))
}

/// The first local day of each segment of the calendar: each phase's
/// first day and the day after each phase (segments are the phases and
/// the pieces outside them).
pub(crate) fn boundaries(campaign: &Campaign) -> Vec<Day> {
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

pub(crate) fn intersect(a: Days, b: Days) -> Option<Days> {
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

/// The wall-clock hour (0–23) of `ms` in the campaign's zone.
pub fn local_hour(campaign: &Campaign, ms: u64) -> u32 {
    use chrono::Timelike;
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .with_timezone(&campaign.timezone)
        .hour()
}

pub(crate) fn hour_of(ms: u64) -> u32 {
    u32::try_from(ms / 1000 / 3600 * 3600).unwrap_or(u32::MAX)
}
