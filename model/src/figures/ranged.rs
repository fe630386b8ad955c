//! A batch's change summed over the campaign's summed ranges, as
//! `figures_ranges` and `paths_delays_ranges` store it: every row whose
//! visitors' span of days fits a range counts once more on that range, and
//! the rows of a batch that land on the same range and key are summed
//! here, before they are written (a returning visitor's rows, spread over
//! many spans, mostly land on a few ranges). The paths' delays are summed
//! again by each rounding of their seconds.
//!
//! These are the rules ClickHouse applied itself when its views expanded
//! each change row ("a row of days `first`..`last` fits the range `a`..`b`
//! when `first >= a` and `last <= b`"; "a delay rounded down to a multiple
//! of the rounding"); `ensemble-processor rebuild-ranges` still applies
//! them in SQL to the whole of `figures`, and the exactness tests compare
//! the two.

use std::collections::HashMap;

use super::*;

/// The roundings `paths_delays_ranges` keeps each delay by: the figure's
/// own step, the minute (nothing lost), and the hour (a median's hour is
/// found among a path's few hours, then its minutes in that hour).
pub const DELAY_ROUNDINGS: [u32; 2] = [crate::paths::DELAY_STEP_S as u32, DELAY_HOUR_S];
/// The coarser rounding of [`DELAY_ROUNDINGS`].
pub const DELAY_HOUR_S: u32 = 3600;

type Map<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// The ranges of `ranges` a row of days `first..=last` fits.
pub fn fitting(ranges: &[Days], first: Day, last: Day) -> impl Iterator<Item = Days> + '_ {
    ranges
        .iter()
        .copied()
        .filter(move |(a, b)| first >= *a && last <= *b)
}

/// `rows` (a batch's summed change) summed over each range they fit: the
/// rows' days are the range's, equal keys summed, zeros dropped, sorted.
pub fn by_range(rows: &[(Key, Value)], ranges: &[Days]) -> Rows {
    let mut map: Map<Key, Value> = Map::default();
    for (k, v) in rows {
        for (a, b) in fitting(ranges, k.first_day, k.last_day) {
            map.entry(Key {
                first_day: a,
                last_day: b,
                ..*k
            })
            .or_default()
            .add(*v, 1);
        }
    }
    merge(map.into_iter().collect())
}

/// What a row of `paths_delays_ranges` is about (ids into the
/// [`Strings`] of the rows it was made from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DelayKey {
    pub first_day: Day,
    pub last_day: Day,
    pub bots: u8,
    pub device_filter: u32,
    pub placement_filter: u32,
    pub rounding: u32,
    pub path: u32,
    /// The delay rounded down to a multiple of `rounding`.
    pub delay_seconds: u32,
}

/// The paths' delays among `ranged` (rows [`by_range`] gave), by each of
/// [`DELAY_ROUNDINGS`]: equal keys summed, zeros dropped, sorted.
pub fn delays_by_range(ranged: &[(Key, Value)]) -> Vec<(DelayKey, i64)> {
    let mut map: Map<DelayKey, i64> = Map::default();
    for (k, v) in ranged
        .iter()
        .filter(|(k, _)| k.figure == Figure::PathsDelays)
    {
        for rounding in DELAY_ROUNDINGS {
            *map.entry(DelayKey {
                first_day: k.first_day,
                last_day: k.last_day,
                bots: k.bots,
                device_filter: k.device_filter,
                placement_filter: k.placement_filter,
                rounding,
                path: k.path,
                delay_seconds: k.delay_seconds / rounding * rounding,
            })
            .or_default() += v.n;
        }
    }
    let mut out: Vec<(DelayKey, i64)> = map.into_iter().filter(|(_, n)| *n != 0).collect();
    out.sort_unstable_by_key(|(k, _)| *k);
    out
}

/// A row of `paths_delays_ranges` with its strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayRow<'s> {
    pub first_day: Day,
    pub last_day: Day,
    pub bots: u8,
    pub device_filter: &'s str,
    pub placement_filter: &'s str,
    pub rounding: u32,
    pub path: &'s str,
    pub delay_seconds: u32,
    pub n: i64,
}

/// Delay rows with their strings.
pub fn delay_rows_of<'s>(
    strings: &'s Strings<'_>,
    rows: &'s [(DelayKey, i64)],
) -> impl Iterator<Item = DelayRow<'s>> + 's {
    rows.iter().map(move |(k, n)| DelayRow {
        first_day: k.first_day,
        last_day: k.last_day,
        bots: k.bots,
        device_filter: strings.get(k.device_filter),
        placement_filter: strings.get(k.placement_filter),
        rounding: k.rounding,
        path: strings.get(k.path),
        delay_seconds: k.delay_seconds,
        n: *n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(figure: Figure, first_day: Day, last_day: Day, seconds: u32) -> Key {
        Key {
            figure,
            bots: 0,
            device_filter: 0,
            placement_filter: 0,
            first_day,
            last_day,
            phase: 0,
            channel: 1,
            placement: 0,
            event_type: 0,
            action: 0,
            step: 0,
            model: 0,
            conversion_phase: 0,
            other_channel: 0,
            device_class: 0,
            os_family: 0,
            frequency: 0,
            hour: 0,
            local_hour: 0,
            day: 0,
            path: 1,
            delay_seconds: seconds,
        }
    }

    fn value(n: i64) -> Value {
        Value { n, credit: 0.0 }
    }

    #[test]
    fn a_row_counts_on_every_range_it_fits_and_rows_on_one_range_are_summed() {
        // The campaign 10..=30, its phases 10..=19 and 20..=30.
        let ranges = [(10, 30), (10, 19), (20, 30)];
        let rows = vec![
            (key(Figure::Visitors, 12, 15, 0), value(1)),
            (key(Figure::Visitors, 11, 19, 0), value(2)),
            // Across both phases: the campaign only.
            (key(Figure::Visitors, 18, 21, 0), value(4)),
            // Before the campaign: no range.
            (key(Figure::Visitors, 5, 12, 0), value(8)),
            // Cancels on the second phase, not on the campaign.
            (key(Figure::Scanners, 20, 20, 0), value(3)),
            (key(Figure::Scanners, 21, 22, 0), value(-3)),
            (key(Figure::Scanners, 12, 12, 0), value(5)),
        ];
        let got: Vec<(Figure, Days, i64)> = by_range(&rows, &ranges)
            .into_iter()
            .map(|(k, v)| (k.figure, (k.first_day, k.last_day), v.n))
            .collect();
        let mut want = vec![
            (Figure::Visitors, (10, 30), 7),
            (Figure::Visitors, (10, 19), 3),
            (Figure::Scanners, (10, 30), 5),
            (Figure::Scanners, (10, 19), 5),
        ];
        want.sort_by_key(|(f, d, _)| (*f, *d));
        let mut got_sorted = got.clone();
        got_sorted.sort_by_key(|(f, d, _)| (*f, *d));
        assert_eq!(got_sorted, want);
    }

    #[test]
    fn delays_are_summed_by_each_rounding_of_their_seconds() {
        let ranged = vec![
            (key(Figure::PathsDelays, 10, 30, 61), value(1)),
            (key(Figure::PathsDelays, 10, 30, 119), value(2)),
            (key(Figure::PathsDelays, 10, 30, 3_700), value(4)),
            (key(Figure::Visitors, 10, 30, 0), value(9)),
        ];
        let got: Vec<(u32, u32, i64)> = delays_by_range(&ranged)
            .into_iter()
            .map(|(k, n)| (k.rounding, k.delay_seconds, n))
            .collect();
        assert_eq!(
            got,
            vec![
                (60, 60, 3),
                (60, 3_660, 4),
                (3_600, 0, 3),
                (3_600, 3_600, 4)
            ]
        );
    }
}
