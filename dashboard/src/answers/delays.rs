//! The paths' delays (`/api/paths`' medians and time to sign-up): read
//! from `paths_delays_ranges` — a path's delays by the hour, then its
//! median hour's minutes — rather than one row per conversion. Only the
//! paths endpoint asks for them; the rest of [`super`] never does.

use std::collections::BTreeMap;

use clickhouse::Row;
use ensemble_core::ledger;
use ensemble_core::ranges;
use ensemble_model::figures::{self, Days, Dims, Figure, Value};
use serde::Deserialize;

use super::{in_scope, plan, AnswerRow, Plan, Seconds, SecondsOf, Stored};
use crate::error::ApiError;
use crate::filters::Filters;
use crate::state::ApiState;

/// Each path's delays by the hour, path by path.
pub type DelayHours = BTreeMap<String, BTreeMap<u64, i64>>;

/// The delays by the hour of the (at most) `k` timed paths with the most
/// stored conversions, read at once with those conversions rather than
/// after them (`/api/paths` asks its conversions first to know which
/// paths it lists): every delay of each path read, corrections included.
/// A path is in the map only if its stored rows were read, so a listed
/// path missing from it (its corrected conversions put it among the
/// listed, not its stored ones) is asked by the caller as before. `None`
/// when the summed tables do not answer the question on whole ranges.
pub async fn top_paths_delay_hours(
    state: &ApiState,
    f: &Filters,
    k: usize,
) -> Result<Option<DelayHours>, ApiError> {
    let Plan::Stored {
        days: Some(days), ..
    } = plan(&state.campaign, f, false)
    else {
        return Ok(None);
    };
    if !figures::aligned(&state.campaign, days.0, days.1) {
        return Ok(None);
    }
    let stored = Stored::of(state, &[days]).await;
    if !stored.summed {
        return Ok(None);
    }
    let rows = stored.fits(days);
    let top = format!(
        "SELECT path FROM {} WHERE figure = '{}' AND bots <= ? AND device_filter = ? \
         AND placement_filter = ? AND {rows} AND path != ? \
         GROUP BY path ORDER BY sum(n) DESC, path LIMIT {k}",
        ranges::TABLE,
        Figure::PathsConverted.name()
    );
    let sql = delay_arrays_sql(ranges::DELAY_HOUR_S, &rows, &format!("path IN ({top})"));
    let (bots, device, placement) = f.scope();
    let q = state
        .client
        .query(&sql)
        .bind(bots)
        .bind(device)
        .bind(placement)
        .bind(bots)
        .bind(device)
        .bind(placement)
        .bind(ensemble_model::attribution::DIRECT);
    let fix = ledger::correction(&state.client, &state.campaign);
    let (read, fix) = tokio::try_join!(q.fetch_all::<DelayArrays>(), fix)?;
    let mut hours = summed_delays(read);
    let hour = u64::from(ranges::DELAY_HOUR_S);
    for r in fix
        .iter()
        .filter(|r| in_scope(r, f, days, &[Figure::PathsDelays]))
    {
        if let Some(h) = hours.get_mut(&r.dims.path) {
            *h.entry(u64::from(r.dims.delay_seconds) / hour * hour)
                .or_default() += r.value.n;
        }
    }
    Ok(Some(hours))
}

/// [`delays_sql`] with one row per path, its delays and counts as two
/// arrays ([`DelayArrays`]): the top paths' hours are some 15 000 rows at
/// 10 M events, each with its path's name, where 35 rows do.
fn delay_arrays_sql(rounding: u32, days: &str, paths: &str) -> String {
    format!(
        "SELECT path, groupArray(delay_seconds), groupArray(n) \
         FROM {} WHERE rounding = {rounding} AND bots <= ? AND device_filter = ? \
         AND placement_filter = ? AND {days} AND ({paths}) GROUP BY path",
        ranges::DELAYS_TABLE
    )
}

/// A row of [`delay_arrays_sql`]: a path's stored delays, a delay possibly
/// more than once (summed by the reader, as [`delays_sql`]'s rows).
#[derive(Debug, Row, Deserialize)]
struct DelayArrays {
    path: String,
    delay_seconds: Vec<u32>,
    n: Vec<i64>,
}

/// The rows of [`delay_arrays_sql`] as each path's delays: a delay read
/// more than once (rows of parts ClickHouse has not merged yet, a path's
/// rows of each range making up the question's days) counts as their sum.
fn summed_delays(rows: Vec<DelayArrays>) -> DelayHours {
    let mut hours = DelayHours::new();
    for r in rows {
        let h = hours.entry(r.path).or_default();
        for (seconds, n) in r.delay_seconds.into_iter().zip(r.n) {
            *h.entry(u64::from(seconds)).or_default() += n;
        }
    }
    hours
}

/// When a question is the paths' delays of a few paths, by the hour or to
/// the minute, on a summed range: the rounding of `paths_delays_ranges` to
/// read (`ensemble_core::ranges::DELAYS_TABLE`) and the paths' seconds.
/// Its rows are `figures_ranges`' rows of that figure rounded down, so a
/// range of seconds keeps the same delays there when its ends are
/// multiples of the rounding (or the widest).
pub(super) fn delays_rounding<'a>(
    stored: &Stored,
    asked: &[Figure],
    parts: &[(String, Days)],
    seconds: Seconds<'a>,
) -> Option<(u32, &'a SecondsOf)> {
    let r = seconds.only.filter(|r| !r.is_empty())?;
    if !stored.summed || !parts.is_empty() || asked != [Figure::PathsDelays] {
        return None;
    }
    let rounding = match seconds.round {
        None => ranges::DELAY_ROUNDINGS[0],
        Some(s) if ranges::DELAY_ROUNDINGS.contains(&s) => s,
        Some(_) => return None,
    };
    let on = |x: u32| x == u32::MAX || x.is_multiple_of(rounding);
    r.iter()
        .all(|(_, from, to)| on(*from) && on(*to))
        .then_some((rounding, r))
}

/// The rows of [`DelayRow`] for the paths' delays of the paths `paths`
/// selects (its `?` bound after the bots, device and placement) at
/// `rounding`, from the range's rows `days`.
///
/// The stored rows as they are, not summed by ClickHouse: a key may come
/// back several times (parts not merged yet, several ranges making up
/// `days`) and every reader sums them (into its map of delays, or by
/// [`figures::answer_of`]). Grouping the thousands of rows of the top
/// paths' hours in ClickHouse took as long again as reading them (18 ms
/// against 11 at 10 M events), on the critical path of `/api/paths`.
pub(super) fn delays_sql(rounding: u32, days: &str, paths: &str) -> String {
    format!(
        "SELECT path AS d_path, delay_seconds AS d_delay_seconds, n AS total \
         FROM {} WHERE rounding = {rounding} AND bots <= ? AND device_filter = ? \
         AND placement_filter = ? AND {days} AND ({paths})",
        ranges::DELAYS_TABLE
    )
}

/// The paths' rows of `r` in the delays' table (channels bound in order).
/// Seconds are a key column after the path, so ranges of them are found
/// by the primary key, granules of 256 rows.
pub(super) fn delays_of(r: &[(String, u32, u32)]) -> String {
    if r.iter().all(|(_, from, to)| *from == 0 && *to == u32::MAX) {
        format!("path IN ({})", vec!["?"; r.len()].join(", "))
    } else {
        r.iter()
            .map(|(_, from, to)| {
                if *to == u32::MAX {
                    format!("(path = ? AND delay_seconds >= {from})")
                } else {
                    format!("(path = ? AND delay_seconds >= {from} AND delay_seconds < {to})")
                }
            })
            .collect::<Vec<_>>()
            .join(" OR ")
    }
}

/// A row of [`delays_sql`]: a path's delays at one rounded delay.
#[derive(Debug, Row, Deserialize)]
pub(super) struct DelayRow {
    path: String,
    delay_seconds: u32,
    total: i64,
}

impl DelayRow {
    pub(super) fn into_value(self) -> AnswerRow {
        let dims = Dims {
            path: self.path,
            delay_seconds: self.delay_seconds,
            ..Dims::default()
        };
        let value = Value {
            n: self.total,
            credit: 0.0,
        };
        ((Figure::PathsDelays, dims), value)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_delays_are_read_by_their_rounding_only_where_it_keeps_them() {
        let summed = Stored { summed: true };
        let pd = [Figure::PathsDelays];
        let whole = vec![("a".to_owned(), 0, u32::MAX), ("b".to_owned(), 0, u32::MAX)];
        let hour = vec![("a".to_owned(), 7200, 10_800)];
        let rounding = |only: &[(String, u32, u32)], round: Option<u32>| {
            let seconds = Seconds {
                only: Some(only),
                round,
            };
            delays_rounding(&summed, &pd, &[], seconds).map(|x| x.0)
        };
        // The medians' hours, then the median hour's minutes.
        assert_eq!(rounding(&whole, Some(3600)), Some(3600));
        assert_eq!(rounding(&hour, Some(60)), Some(60));
        assert_eq!(rounding(&hour, None), Some(60));
        // Not when the table is not summed, other figures are asked, the
        // range cuts an hour, the rounding is another one or nothing is
        // narrowed (an export of every path).
        let cut = vec![("a".to_owned(), 1800, 5400)];
        let phases = [("p".to_owned(), (1, 2))];
        for (stored, asked, parts, narrow, round) in [
            (false, &pd[..], &[][..], Some(&whole[..]), Some(3600)),
            (
                true,
                &[Figure::FunnelSeconds][..],
                &[][..],
                Some(&whole[..]),
                Some(3600),
            ),
            (
                true,
                &[Figure::PathsDelays, Figure::PathsConverted][..],
                &[][..],
                Some(&whole[..]),
                Some(3600),
            ),
            (true, &pd[..], &phases[..], Some(&whole[..]), Some(3600)),
            (true, &pd[..], &[][..], Some(&cut[..]), Some(3600)),
            (true, &pd[..], &[][..], Some(&whole[..]), Some(0)),
            (true, &pd[..], &[][..], Some(&whole[..]), Some(86_400)),
            (true, &pd[..], &[][..], None, Some(3600)),
            (true, &pd[..], &[][..], Some(&[][..]), Some(3600)),
        ] {
            let s = Stored { summed: stored };
            let seconds = Seconds {
                only: narrow,
                round,
            };
            assert_eq!(
                delays_rounding(&s, asked, parts, seconds),
                None,
                "{stored} {asked:?} {narrow:?} {round:?}"
            );
        }
        // A median's minutes in a half-hour: the figure's own step is 60 s.
        assert_eq!(rounding(&cut, None), Some(60));
    }

    #[test]
    fn paths_delays_sql_names_the_rounding_and_each_paths_seconds() {
        let whole = vec![("a".to_owned(), 0, u32::MAX), ("b".to_owned(), 0, u32::MAX)];
        let sql = delays_sql(3600, "(first_day = x)", &delays_of(&whole));
        assert!(
            sql.starts_with("SELECT path AS d_path, delay_seconds AS d_delay_seconds, n AS total")
        );
        assert!(sql.contains("FROM paths_delays_ranges WHERE rounding = 3600 AND bots <= ?"));
        assert!(
            sql.contains("AND (first_day = x) AND (path IN (?, ?))"),
            "{sql}"
        );
        let some = vec![
            ("a".to_owned(), 120, 3600),
            ("b".to_owned(), 7200, u32::MAX),
        ];
        let sql = delays_sql(60, "d", &delays_of(&some));
        assert!(
            sql.contains(
                "((path = ? AND delay_seconds >= 120 AND delay_seconds < 3600) OR (path = ? AND delay_seconds >= 7200))"
            ),
            "{sql}"
        );
        assert_eq!(
            sql.matches('?').count(),
            5,
            "bots, device, placement, two paths"
        );
    }

    #[test]
    fn a_delay_read_twice_counts_as_its_sum() {
        let row = |path: &str, seconds: &[u32], n: &[i64]| DelayArrays {
            path: path.to_owned(),
            delay_seconds: seconds.to_vec(),
            n: n.to_vec(),
        };
        // Not summed by ClickHouse: the same key in one path's array (two
        // parts) and again in a second row of the same path (two ranges).
        let hours = summed_delays(vec![
            row("metro", &[3600, 7200, 3600], &[2, 1, 3]),
            row("gares", &[0], &[4]),
            row("metro", &[7200, 10_800], &[5, -1]),
        ]);
        let expected: DelayHours = [
            ("gares".to_owned(), BTreeMap::from([(0, 4)])),
            (
                "metro".to_owned(),
                BTreeMap::from([(3600, 5), (7200, 6), (10_800, -1)]),
            ),
        ]
        .into();
        assert_eq!(hours, expected);
    }

    #[test]
    fn the_top_paths_hours_come_as_one_row_per_path() {
        let sql = delay_arrays_sql(3600, "(first_day = x)", "path IN (?)");
        assert_eq!(
            sql,
            "SELECT path, groupArray(delay_seconds), groupArray(n) FROM paths_delays_ranges \
             WHERE rounding = 3600 AND bots <= ? AND device_filter = ? AND placement_filter = ? \
             AND (first_day = x) AND (path IN (?)) GROUP BY path"
        );
    }
}
