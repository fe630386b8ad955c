//! Where every answer comes from. One definition per figure
//! (`ensemble_model::figures`), served two ways:
//!
//! - **stored**: a question on whole local days, with at most one of a
//!   device and a placement filter, sums the processor's rows in the
//!   `figures` table (`first_day ≥ a AND last_day ≤ b` of its scope) — a
//!   few thousand rows, milliseconds at 10 M events;
//! - **on demand**: anything else (times that are not local midnights, a
//!   device *and* a placement, `phase=hors-phase` split in several pieces,
//!   `source=events`) runs the same definitions over the events of the
//!   visitors the question keeps, streamed from the ledger (or, to audit
//!   the stored rows, from `events`): exact too, seconds at 10 M events.
//!
//! Both add the correction for contacts seen on several visitors (those
//! visitors computed together instead of one by one).

use std::collections::BTreeMap;

use clickhouse::Row;
use ensemble_core::ledger::{self, Selection, Source};
use ensemble_core::ranges;
use ensemble_core::Campaign;
use ensemble_model::campaign::HORS_PHASE;
use ensemble_model::figures::{
    self, add_to, phase_parts, Answer, Day, Days, Dims, Figure, OwnedRow, Question, Value,
};
use serde::Deserialize;

use crate::error::ApiError;
use crate::filters::Filters;
use crate::state::ApiState;

mod delays;

use delays::{delays_of, delays_rounding, delays_sql, DelayRow};
pub use delays::{top_paths_delay_hours, DelayHours};

/// An answer for the whole question and, when asked, for each phase in it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Answers {
    pub whole: Answer,
    /// Phase id (or `hors-phase`) → the answer over that phase's part.
    pub by_phase: BTreeMap<String, Answer>,
}

/// How a question is answered.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    /// From the stored rows: the question's days, each phase's part.
    Stored {
        days: Option<Days>,
        parts: Vec<(String, Days)>,
    },
    OnDemand,
}

fn ms(t: chrono::DateTime<chrono::Utc>) -> u64 {
    u64::try_from(t.timestamp_millis().max(0)).unwrap_or(0)
}

/// The question's whole local days, if its bounds are local midnights.
fn whole_days(campaign: &Campaign, f: &Filters) -> Option<Days> {
    let first = figures::day_of(campaign, ms(f.from));
    let last = figures::day_of(campaign, ms(f.to).saturating_sub(1));
    (figures::day_start(campaign, first) == f.from
        && figures::day_start(campaign, last + 1) == f.to)
        .then_some((first, last))
}

fn plan(campaign: &Campaign, f: &Filters, by_phase: bool) -> Plan {
    if f.from_events || (f.device.is_some() && f.placement.is_some()) {
        return Plan::OnDemand;
    }
    let Some(days) = whole_days(campaign, f) else {
        return Plan::OnDemand;
    };
    let (phases, outside) = phase_parts(campaign, days);
    let mut parts: Vec<(String, Days)> = phases;
    match outside.as_slice() {
        [] => {}
        [one] => parts.push((HORS_PHASE.to_owned(), *one)),
        // Several pieces outside the phases: no single range of days.
        _ if by_phase || f.phase.as_deref() == Some(HORS_PHASE) => return Plan::OnDemand,
        _ => {}
    }
    match &f.phase {
        None => Plan::Stored {
            days: Some(days),
            parts: if by_phase { parts } else { Vec::new() },
        },
        Some(p) => {
            let part = parts.into_iter().find(|(id, _)| id == p);
            Plan::Stored {
                days: part.as_ref().map(|(_, d)| *d),
                parts: if by_phase {
                    part.into_iter().collect()
                } else {
                    Vec::new()
                },
            }
        }
    }
}

/// Whether the stored rows answer these filters (the others are let in a
/// few at a time: `crate::admission`).
pub fn stored(campaign: &Campaign, f: &Filters) -> bool {
    matches!(plan(campaign, f, true), Plan::Stored { .. })
}

/// The answer to the filters' question for `figures`, and per phase when
/// `by_phase`.
pub async fn ask(
    state: &ApiState,
    f: &Filters,
    asked: &[Figure],
    by_phase: bool,
) -> Result<Answers, ApiError> {
    match plan(&state.campaign, f, by_phase) {
        Plan::Stored { days, parts } => {
            let Some(days) = days else {
                return Ok(Answers::default());
            };
            stored_answer(state, f, asked, days, &parts, Seconds::default()).await
        }
        Plan::OnDemand => on_demand(state, f, asked, by_phase).await,
    }
}

/// As [`ask`] for the whole question, with `seconds` as stored (`None`),
/// rounded down to a multiple of `step` (`Some(step)`; 0: summed away)
/// and, with `only`, the rows of those
/// `(channel, seconds from, seconds to)`: per path, its conversions and
/// summed delays in one row rather than one per minute of delay (what the
/// path table and the data-driven models need), or a path's delays by the
/// hour (to find the hour of its median).
pub async fn ask_rounded(
    state: &ApiState,
    f: &Filters,
    asked: &[Figure],
    round: Option<u32>,
    only: Option<&[(String, u32, u32)]>,
) -> Result<Answer, ApiError> {
    if only.is_some_and(<[_]>::is_empty) {
        return Ok(Answer::new());
    }
    let answers = match plan(&state.campaign, f, false) {
        Plan::Stored { days: None, .. } => return Ok(Answer::new()),
        Plan::Stored {
            days: Some(days), ..
        } => stored_answer(state, f, asked, days, &[], Seconds { only, round }).await?,
        Plan::OnDemand => on_demand(state, f, asked, false).await?,
    };
    // Each path's ranges, looked up once per row (thousands of rows, tens
    // of paths: a scan of every range per row was most of the CPU time).
    let column = narrowed_column(asked);
    let mut by_name: BTreeMap<&str, Vec<(u32, u32)>> = BTreeMap::new();
    for (c, from, to) in only.unwrap_or_default() {
        by_name.entry(c.as_str()).or_default().push((*from, *to));
    }
    let kept = |d: &Dims| {
        only.is_none()
            || by_name.get(named(d, column)).is_some_and(|r| {
                r.iter()
                    .any(|(from, to)| d.delay_seconds >= *from && d.delay_seconds < *to)
            })
    };
    let rounded = |seconds: u32| match round {
        None => seconds,
        Some(0) => 0,
        Some(s) => seconds / s * s,
    };
    let mut whole = answers.whole;
    whole.retain(|(_, d), _| kept(d));
    // ClickHouse rounded the stored rows already: unless a correction
    // brought other seconds, the answer is the one read.
    if whole
        .keys()
        .all(|(_, d)| rounded(d.delay_seconds) == d.delay_seconds)
    {
        return Ok(whole);
    }
    let out = whole
        .into_iter()
        .map(|((figure, mut dims), v)| {
            dims.delay_seconds = rounded(dims.delay_seconds);
            ((figure, dims), v)
        })
        .collect();
    Ok(figures::answer_of(out))
}

/// Distinct visitors (bots as the filters say) with any event of each of
/// `codes`: the visitors figure of each placement's scope. On whole
/// phases or the campaign (no device, no placement filter) one query over
/// every placement's stored rows: visitors do not depend on contacts and
/// such days need no wide-visitor correction, so the plain sums are exact.
/// Otherwise each placement's own question, as `ask` answers it.
pub async fn visitors_per_placement(
    state: &ApiState,
    f: &Filters,
    codes: &[String],
) -> Result<BTreeMap<String, u64>, ApiError> {
    if let Plan::Stored { days, .. } = plan(&state.campaign, f, false) {
        let Some(days) = days else {
            return Ok(BTreeMap::new());
        };
        if f.device.is_none()
            && f.placement.is_none()
            && figures::aligned(&state.campaign, days.0, days.1)
        {
            let stored = Stored::of(state, &[days]).await;
            let sql = format!(
                "SELECT placement_filter, sum(n) FROM {} WHERE figure = '{}' AND channel = ? \
                 AND bots <= ? AND device_filter = ? AND placement_filter != ? \
                 AND {} GROUP BY placement_filter",
                stored.table(),
                Figure::Visitors.name(),
                stored.fits(days)
            );
            let rows: Vec<(String, i64)> = state
                .client
                .query(&sql)
                .bind(figures::ALL)
                .bind(u8::from(f.include_bots))
                .bind(figures::ALL)
                .bind(figures::ALL)
                .fetch_all()
                .await?;
            return Ok(rows
                .into_iter()
                .filter(|(code, _)| codes.contains(code))
                .map(|(code, n)| (code, u64::try_from(n).unwrap_or(0)))
                .collect());
        }
    }
    let mut out = BTreeMap::new();
    for code in codes {
        let one = Filters {
            placement: Some(code.clone()),
            ..f.clone()
        };
        let a = ask(state, &one, &[Figure::Visitors], false).await?;
        let n: u64 = of(&a.whole, Figure::Visitors)
            .filter(|(d, _)| d.channel == figures::ALL)
            .map(|(_, v)| count(v))
            .sum();
        out.insert(code.clone(), n);
    }
    Ok(out)
}

/// One figure of the whole question, only for the listed `(channel or
/// path, delay_seconds from, to)` (the funnel's delays around its median).
pub async fn ask_seconds(
    state: &ApiState,
    f: &Filters,
    figure: Figure,
    ranges: &[(String, u32, u32)],
) -> Result<Answer, ApiError> {
    ask_rounded(state, f, &[figure], None, Some(ranges)).await
}

/// A row of `stored_answer`'s SELECT, read by position: its fields in the
/// select list's order (the catalogue's dimensions, `figures::COLUMNS`,
/// then the delay and the sums).
#[derive(Debug, Row, Deserialize)]
struct StoredRow {
    part: u8,
    in_whole: u8,
    figure: String,
    phase: String,
    channel: String,
    placement: String,
    event_type: String,
    action: String,
    step: String,
    model: String,
    conversion_phase: String,
    other_channel: String,
    device_class: String,
    os_family: String,
    frequency: u8,
    hour_s: u32,
    local_hour: u8,
    day_n: u32,
    path: String,
    delay_seconds: u32,
    total: i64,
    cr: f64,
}

/// The widest span of seconds a narrowed question reads with a PREWHERE.
const NARROW_SPAN_S: u32 = 86_400;

/// No part: the row spans several parts (or there are none).
const NO_PART: u8 = u8::MAX;

/// A local day number as `YYYY-MM-DD` (in SQL and in the answers' labels).
pub(crate) fn date(day: Day) -> String {
    figures::date_of(day).format("%Y-%m-%d").to_string()
}

/// Where a question's stored rows are read: `figures_ranges` when every
/// range it asks is summed there and the table is whole, else `figures`.
/// Both give the same sums.
struct Stored {
    summed: bool,
}

impl Stored {
    async fn of(state: &ApiState, days: &[Days]) -> Self {
        Self {
            summed: state.summed.covers(days) && state.summed.usable(&state.client).await,
        }
    }

    fn table(&self) -> &'static str {
        if self.summed {
            ranges::TABLE
        } else {
            "figures"
        }
    }

    /// The rows that count for the days `[a, b]`: in `figures` those of
    /// visitors whose days fit them, in `figures_ranges` that range's.
    fn fits(&self, (a, b): Days) -> String {
        if self.summed {
            format!(
                "first_day = toDate('{}') AND last_day = toDate('{}')",
                date(a),
                date(b)
            )
        } else {
            format!(
                "first_day >= toDate('{}') AND last_day <= toDate('{}')",
                date(a),
                date(b)
            )
        }
    }

    /// The rows of the question on `days` with its `parts` (which lie
    /// within `days`): in `figures_ranges` each part is a range of its own.
    fn rows_of(&self, days: Days, parts: &[(String, Days)]) -> String {
        if !self.summed {
            return self.fits(days);
        }
        let mut all: Vec<String> = std::iter::once(days)
            .chain(parts.iter().map(|(_, d)| *d))
            .map(|d| format!("({})", self.fits(d)))
            .collect();
        all.dedup();
        format!("({})", all.join(" OR "))
    }
}

/// The column a narrowed question names its rows by: the paths' figures
/// by `path`, the funnel's delays by `channel`.
fn narrowed_column(asked: &[Figure]) -> &'static str {
    if asked.iter().any(|f| f.dimensions().contains(&"path")) {
        "path"
    } else {
        "channel"
    }
}

/// A row's name in [`narrowed_column`]'s column.
fn named<'d>(d: &'d Dims, column: &str) -> &'d str {
    if column == "path" {
        &d.path
    } else {
        &d.channel
    }
}

/// The rows of `(name, delay from, delay to)` (numbers inlined, names of
/// `column` bound in order): a set lookup when every range is whole
/// (`column IN`) or one aligned step (`(column, intDiv(delay_seconds,
/// step)) IN`, the medians' hours), rather than a chain of comparisons per
/// row (the paths' medians at 10 M events: ~65 → ~35 ms in ClickHouse).
fn narrowed(column: &str, r: &[(String, u32, u32)]) -> String {
    if r.iter().all(|(_, from, to)| *from == 0 && *to == u32::MAX) {
        return format!("{column} IN ({})", vec!["?"; r.len()].join(", "));
    }
    if let Some(step) = r.first().map(|(_, from, to)| to.saturating_sub(*from)) {
        if step > 0
            && r.iter()
                .all(|(_, from, to)| from % step == 0 && to.checked_sub(*from) == Some(step))
        {
            let set: Vec<String> = r
                .iter()
                .map(|(_, from, _)| format!("(?, {})", from / step))
                .collect();
            return format!(
                "({column}, intDiv(delay_seconds, {step})) IN ({})",
                set.join(", ")
            );
        }
    }
    r.iter()
        .map(|(_, from, to)| {
            format!("({column} = ? AND delay_seconds >= {from} AND delay_seconds < {to})")
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Whether a correction row counts for the filters' question on `days`
/// for `asked` figures.
fn in_scope(r: &OwnedRow, f: &Filters, (a, b): Days, asked: &[Figure]) -> bool {
    let (bots, device, placement) = f.scope();
    r.bots <= bots
        && r.device_filter == device
        && r.placement_filter == placement
        && r.first_day >= a
        && r.last_day <= b
        && asked.contains(&r.figure)
}

/// `(channel or path, delay from, delay to)`: the rows a narrowed question
/// keeps.
type SecondsOf = [(String, u32, u32)];

/// How a question reads the `delay_seconds` column: as
/// stored (`round: None`) or rounded down to a multiple of `round` (0:
/// summed away), and with `only`, the rows of those
/// `(channel or path, delay from, delay to)` alone.
#[derive(Clone, Copy, Default)]
struct Seconds<'a> {
    only: Option<&'a SecondsOf>,
    round: Option<u32>,
}

/// A figure's value, as answers are built from.
type AnswerRow = ((Figure, Dims), Value);

async fn stored_answer(
    state: &ApiState,
    f: &Filters,
    asked: &[Figure],
    days: Days,
    parts: &[(String, Days)],
    seconds: Seconds<'_>,
) -> Result<Answers, ApiError> {
    let narrow = seconds.only;
    let (bots, device, placement) = f.scope();
    // Figure names are our constants and dates our own numbers: inlined so
    // ClickHouse reads only those figures' marks; the rest is bound.
    let names = asked
        .iter()
        .map(|x| format!("'{}'", x.name()))
        .collect::<Vec<_>>()
        .join(", ");
    let asks: Vec<Days> = std::iter::once(days)
        .chain(parts.iter().map(|(_, d)| *d))
        .collect();
    let stored = Stored::of(state, &asks).await;
    let part = if parts.is_empty() {
        format!("toUInt8({NO_PART})")
    } else {
        let arms: Vec<String> = parts
            .iter()
            .enumerate()
            .map(|(i, (_, d))| format!("{}, {i}", stored.fits(*d)))
            .collect();
        format!("toUInt8(multiIf({}, {NO_PART}))", arms.join(", "))
    };
    // In `figures_ranges` the whole question's rows are its range's only.
    let in_whole = if stored.summed {
        format!("toUInt8({})", stored.fits(days))
    } else {
        "toUInt8(1)".to_owned()
    };
    let column = narrowed_column(asked);
    let narrow_sql = narrow.map_or_else(String::new, |r| format!(" AND ({})", narrowed(column, r)));
    // Seconds are not in the sort key after the channel: when the ranges
    // span at most a day (of a 30-day lookback), a PREWHERE on that span
    // reads the other columns of those rows only (the funnel's medians on
    // 10 M events: ~110 → ~70 ms in ClickHouse; over a wider span, as the
    // paths' medians, it costs more than it saves). Not on a Distributed
    // table, which ClickHouse 18.16 refuses PREWHERE on.
    let prewhere = match narrow {
        Some(r) if !state.cluster => {
            let from = r.iter().map(|x| x.1).min().unwrap_or(0);
            let to = r.iter().map(|x| x.2).max().unwrap_or(u32::MAX);
            if to.saturating_sub(from) <= NARROW_SPAN_S {
                format!(" PREWHERE delay_seconds >= {from} AND delay_seconds < {to}")
            } else {
                String::new()
            }
        }
        _ => String::new(),
    };
    // Only the dimensions the asked figures use are grouped by (the others
    // are '' / 0 in all their rows, `Figure::dimensions`): ClickHouse then
    // hashes a few columns, not sixteen.
    let used = |column: &str| asked.iter().any(|x| x.dimensions().contains(&column));
    let mut select: Vec<String> = vec![
        format!("{part} AS part"),
        format!("{in_whole} AS in_whole"),
        "figure".into(),
    ];
    let mut group: Vec<String> = vec!["part".into(), "in_whole".into(), "figure".into()];
    // The catalogue's dimensions in its order (`StoredRow`'s), the seconds
    // last, below; times as numbers.
    for c in figures::COLUMNS
        .iter()
        .filter(|c| c.role == figures::Role::Dimension && c.name != "delay_seconds")
    {
        let column = c.name;
        let (expr, zero) = match c.sql_type {
            "Date" | "DateTime" => (format!("toUInt32({column})"), "toUInt32(0)"),
            _ => (column.to_owned(), c.zero),
        };
        // Aliases of their own: a constant must not shadow a column the
        // WHERE clause reads.
        let alias = format!("d_{column}");
        if used(column) {
            select.push(format!("{expr} AS {alias}"));
            group.push(alias);
        } else {
            select.push(format!("{zero} AS {alias}"));
        }
    }
    // Rounded seconds are summed in ClickHouse (fewer rows to read back);
    // the rows corrected below are rounded by the caller.
    match seconds.round {
        _ if !used("delay_seconds") => select.push("toUInt32(0) AS d_delay_seconds".into()),
        None => {
            select.push("delay_seconds AS d_delay_seconds".into());
            group.push("d_delay_seconds".into());
        }
        Some(0) => select.push("toUInt32(0) AS d_delay_seconds".into()),
        Some(step) => {
            select.push(format!(
                "toUInt32(intDiv(delay_seconds, {step}) * {step}) AS d_delay_seconds"
            ));
            group.push("d_delay_seconds".into());
        }
    }
    // Not ordered by ClickHouse: an ORDER BY of the grouped columns cost it
    // more (8 ms for the 12 700 rows of events by the hour) than it saved
    // `figures::answer_of`, which sorts whatever comes.
    let group = group.join(", ");
    let delays = delays_rounding(&stored, asked, parts, seconds);
    let sql = match delays {
        // The paths' medians: their delays as laid out for them.
        Some((rounding, r)) => delays_sql(rounding, &stored.rows_of(days, parts), &delays_of(r)),
        None => format!(
            "SELECT {}, sum(n) AS total, sum(credit) AS cr FROM {}{prewhere} \
             WHERE figure IN ({names}) AND bots <= ? AND device_filter = ? AND placement_filter = ? \
             AND {}{narrow_sql} \
             GROUP BY {group} HAVING total != 0 OR cr != 0",
            select.join(", "),
            stored.table(),
            stored.rows_of(days, parts),
        ),
    };
    let mut q = state
        .client
        .query(&sql)
        .bind(bots)
        .bind(device)
        .bind(placement);
    for (channel, _, _) in narrow.unwrap_or_default() {
        q = q.bind(channel.as_str());
    }
    let mut by_part: Vec<Vec<((Figure, Dims), Value)>> = vec![Vec::new(); parts.len()];
    // The corrections for contacts on several visitors are read meanwhile.
    let fix = ledger::correction(&state.client, &state.campaign);
    let (mut whole, rows, fix): (Vec<AnswerRow>, Vec<StoredRow>, _) = if delays.is_some() {
        // Three columns rather than twenty: thousands of rows by the hour.
        let (rows, fix) = tokio::try_join!(q.fetch_all::<DelayRow>(), fix)?;
        let whole = rows.into_iter().map(DelayRow::into_value).collect();
        (whole, Vec::new(), fix)
    } else {
        let (rows, fix) = tokio::try_join!(q.fetch_all::<StoredRow>(), fix)?;
        (Vec::with_capacity(rows.len()), rows, fix)
    };
    for r in rows {
        let figure = Figure::parse(&r.figure).map_err(|e| ApiError::Internal(e.to_string()))?;
        let dims = Dims {
            phase: r.phase,
            channel: r.channel,
            placement: r.placement,
            event_type: r.event_type,
            action: r.action,
            step: r.step,
            model: r.model,
            conversion_phase: r.conversion_phase,
            other_channel: r.other_channel,
            device_class: r.device_class,
            os_family: r.os_family,
            frequency: r.frequency,
            hour: r.hour_s,
            local_hour: r.local_hour,
            day: r.day_n,
            path: r.path,
            delay_seconds: r.delay_seconds,
        };
        let value = Value {
            n: r.total,
            credit: r.cr,
        };
        if let Some(part) = by_part.get_mut(usize::from(r.part)) {
            part.push(((figure, dims.clone()), value));
        }
        if r.in_whole == 1 {
            whole.push(((figure, dims), value));
        }
    }
    let mut out = Answers {
        whole: figures::answer_of(whole),
        ..Answers::default()
    };
    for ((name, _), part) in parts.iter().zip(by_part) {
        out.by_phase.insert(name.clone(), figures::answer_of(part));
    }
    // Ranges that cut a phase: the stored rows of wide visitors are over
    // whole phases there, so those visitors (with every visitor sharing a
    // contact) are recomputed for them. Elsewhere only the contacts seen on
    // several visitors are corrected (counted once).
    let cut = |d: Days| !figures::aligned(&state.campaign, d.0, d.1);
    let recomputed: Vec<(String, Vec<figures::Event>)> =
        if cut(days) || parts.iter().any(|(_, d)| cut(*d)) {
            let mut ids = ledger::wide_visitors(&state.client, days).await?;
            if ids.is_empty() {
                Vec::new()
            } else {
                ids.extend(ledger::shared_visitors(&state.client).await?);
                ids.sort_unstable();
                ids.dedup();
                let mut set = Vec::new();
                let only = Selection {
                    visitors: Some(&ids),
                    ..Selection::default()
                };
                ledger::stream(&state.client, Source::Ledger, &only, |v, events| {
                    set.push((v, events));
                })
                .await?;
                set
            }
        } else {
            Vec::new()
        };
    let kept = |figure: Figure, dims: &Dims| {
        asked.contains(&figure)
            && narrow.is_none_or(|r| {
                r.iter().any(|(c, from, to)| {
                    named(dims, column) == c
                        && dims.delay_seconds >= *from
                        && dims.delay_seconds < *to
                })
            })
    };
    let recompute = |d: Days| -> Option<Answer> {
        (cut(d) && !recomputed.is_empty()).then(|| {
            let q = Question {
                start_ms: ms(figures::day_start(&state.campaign, d.0)),
                end_ms: ms(figures::day_start(&state.campaign, d.1 + 1)),
                phase: None,
                device: f.device.clone(),
                placement: f.placement.clone(),
                include_bots: f.include_bots,
            };
            let mut a = figures::range_correction(&state.campaign, &recomputed, &q, d);
            a.retain(|(figure, dims), _| kept(*figure, dims));
            a
        })
    };
    let in_scope = |r: &OwnedRow, d: Days| in_scope(r, f, d, asked);
    let correct = |into: &mut Answer, d: Days| match recompute(d) {
        Some(a) => {
            for ((figure, dims), v) in a {
                add_to(into, figure, dims, v, 1);
            }
        }
        None => {
            for r in fix.iter().filter(|r| in_scope(r, d)) {
                add_to(into, r.figure, r.dims.clone(), r.value, 1);
            }
        }
    };
    correct(&mut out.whole, days);
    for (name, part) in parts {
        if let Some(a) = out.by_phase.get_mut(name) {
            correct(a, *part);
        }
    }
    out.by_phase.retain(|_, a| !a.is_empty());
    Ok(out)
}

/// The same definitions over the events the question keeps.
async fn on_demand(
    state: &ApiState,
    f: &Filters,
    asked: &[Figure],
    by_phase: bool,
) -> Result<Answers, ApiError> {
    let source = if f.from_events {
        Source::Events
    } else {
        Source::Ledger
    };
    let question = |phase: Option<String>| Question {
        start_ms: ms(f.from),
        end_ms: ms(f.to),
        phase,
        device: f.device.clone(),
        placement: f.placement.clone(),
        include_bots: f.include_bots,
    };
    let mut questions: Vec<(Option<String>, Question)> = vec![(None, question(f.phase.clone()))];
    if by_phase {
        let labels: Vec<String> = match &f.phase {
            Some(p) => vec![p.clone()],
            None => state
                .campaign
                .phases
                .iter()
                .map(|p| p.id.clone())
                .chain([HORS_PHASE.to_owned()])
                .collect(),
        };
        for label in labels {
            questions.push((Some(label.clone()), question(Some(label))));
        }
    }
    let mut answers: Vec<Answer> = vec![Answer::new(); questions.len()];
    let campaign = &state.campaign;
    let add = |answers: &mut Vec<Answer>, set: &[(String, Vec<figures::Event>)]| {
        for ((_, q), into) in questions.iter().zip(answers.iter_mut()) {
            for ((figure, dims), v) in figures::answer(campaign, set, q) {
                if asked.contains(&figure) {
                    add_to(into, figure, dims, v, 1);
                }
            }
        }
    };
    let shared = ledger::shared_visitors(&state.client).await?;
    let selection = Selection {
        start_ms: ms(f.from),
        end_ms: ms(f.to),
        phase: f.phase.as_deref(),
        device: f.device.as_deref(),
        placement: f.placement.as_deref(),
        include_bots: f.include_bots,
        visitors: None,
        except: &shared,
    };
    ledger::stream(&state.client, source, &selection, |visitor, events| {
        add(&mut answers, &[(visitor, events)]);
    })
    .await?;
    // Visitors sharing a contact, together: each contact once.
    if !shared.is_empty() {
        let mut set: Vec<(String, Vec<figures::Event>)> = Vec::new();
        let only = Selection {
            visitors: Some(&shared),
            ..Selection::default()
        };
        ledger::stream(&state.client, source, &only, |v, events| {
            set.push((v, events))
        })
        .await?;
        add(&mut answers, &set);
    }
    let mut out = Answers::default();
    for ((label, _), answer) in questions.into_iter().zip(answers) {
        match label {
            None => out.whole = answer,
            Some(l) if !answer.is_empty() => {
                out.by_phase.insert(l, answer);
            }
            Some(_) => {}
        }
    }
    Ok(out)
}

/// A count as the API shows it (never negative).
pub fn count(v: &Value) -> u64 {
    u64::try_from(v.n).unwrap_or(0)
}

/// Whether a stored row counts for the filters' channel. The events are
/// one row per channel, so without `channel=` every row counts (`events`);
/// the distinct counts also hold every channel together under [`ALL`],
/// so one row counts: the asked channel's, else `*`.
pub fn in_channel(f: &Filters, d: &Dims, events: bool) -> bool {
    match (&f.channel, events) {
        (None, true) => true,
        (Some(c), _) => *c == d.channel,
        (None, false) => d.channel == figures::ALL,
    }
}

/// The values of one figure.
pub fn of<'a>(a: &'a Answer, figure: Figure) -> impl Iterator<Item = (&'a Dims, &'a Value)> + 'a {
    a.iter()
        .filter(move |((x, _), _)| *x == figure)
        .map(|((_, d), v)| (d, v))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn campaign() -> Campaign {
        Campaign::from_toml(include_str!("../../../deploy/campaign.toml")).unwrap()
    }

    fn filters(pairs: &[(&str, &str)]) -> Filters {
        let q: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Filters::parse(&campaign(), &q).unwrap()
    }

    fn day(s: &str) -> Day {
        figures::day_number(chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    #[test]
    fn whole_days_of_one_scope_are_stored_the_rest_on_demand() {
        let c = campaign();
        for stored_q in [
            vec![],
            vec![("phase", "p2-saint-valentin")],
            vec![("from", "2025-02-01"), ("to", "2025-02-14")],
            vec![("device", "mobile")],
            vec![("placement", "M-CHATELET"), ("channel", "metro")],
            vec![("from", "2024-12-01"), ("to", "2025-01-10")],
        ] {
            assert!(stored(&c, &filters(&stored_q)), "{stored_q:?}");
        }
        for on_demand_q in [
            vec![("from", "2025-02-01T10:00:00Z")],
            vec![("device", "mobile"), ("placement", "M-CHATELET")],
            vec![("source", "events")],
            // Before and after the campaign: two pieces outside the phases.
            vec![("from", "2025-01-01"), ("to", "2025-03-31")],
        ] {
            assert!(!stored(&c, &filters(&on_demand_q)), "{on_demand_q:?}");
        }
    }

    #[test]
    fn narrowed_rows_are_a_set_when_they_can_be() {
        let whole = [("a".to_owned(), 0, u32::MAX), ("b".to_owned(), 0, u32::MAX)];
        assert_eq!(narrowed("channel", &whole), "channel IN (?, ?)");
        assert_eq!(narrowed("path", &whole), "path IN (?, ?)");
        let hours = [("a".to_owned(), 7200, 10800), ("b".to_owned(), 0, 3600)];
        assert_eq!(
            narrowed("path", &hours),
            "(path, intDiv(delay_seconds, 3600)) IN ((?, 2), (?, 0))"
        );
        let odd = [("a".to_owned(), 100, 3700), ("b".to_owned(), 0, 3600)];
        assert_eq!(
            narrowed("channel", &odd),
            "(channel = ? AND delay_seconds >= 100 AND delay_seconds < 3700) OR (channel = ? AND delay_seconds >= 0 AND delay_seconds < 3600)"
        );
    }

    #[test]
    fn a_range_is_split_into_its_phases() {
        let c = campaign();
        let f = filters(&[("from", "2025-02-01"), ("to", "2025-03-20")]);
        let Plan::Stored { days, parts } = plan(&c, &f, true) else {
            panic!("stored");
        };
        assert_eq!(days, Some((day("2025-02-01"), day("2025-03-20"))));
        assert_eq!(
            parts,
            vec![
                (
                    "p1-lancement".to_owned(),
                    (day("2025-02-01"), day("2025-02-07"))
                ),
                (
                    "p2-saint-valentin".to_owned(),
                    (day("2025-02-08"), day("2025-02-28"))
                ),
                (
                    "p3-8-mars".to_owned(),
                    (day("2025-03-01"), day("2025-03-16"))
                ),
                (
                    HORS_PHASE.to_owned(),
                    (day("2025-03-17"), day("2025-03-20"))
                ),
            ]
        );
        // A phase filter narrows the days to the phase's.
        let f = filters(&[("from", "2025-02-10"), ("phase", "p2-saint-valentin")]);
        let Plan::Stored { days, .. } = plan(&c, &f, false) else {
            panic!("stored");
        };
        assert_eq!(days, Some((day("2025-02-10"), day("2025-02-28"))));
        // A phase outside the range: nothing to sum.
        let f = filters(&[("to", "2025-01-31"), ("phase", "p3-8-mars")]);
        assert_eq!(
            plan(&c, &f, false),
            Plan::Stored {
                days: None,
                parts: Vec::new()
            }
        );
    }
}
