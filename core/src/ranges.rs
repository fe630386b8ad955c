//! `figures_ranges` (migration 0008): every figure summed over each of the
//! campaign's summed ranges (`figures::summed_ranges`: the campaign, each
//! phase, the piece between phases), so that the default questions read a
//! row per value instead of one per visitors' span of days.
//!
//! The view that fills it from `ledger` (beside `figures_mv`, in the same
//! INSERT) names the ranges, which come from the campaign file; so it is
//! made here rather than by a migration, named after a hash of its ranges
//! (`figures_ranges_mv_…`). `figures_ranges_state` records for which
//! ranges the table holds every figure row (`whole`); the dashboard uses
//! the table only then, and reads `figures` otherwise (the same answers).
//!
//! `paths_delays_ranges` (migration 0009) holds the conversion paths'
//! delays of the same ranges again, by the hour and by the minute in small
//! granules, for the paths' medians (`/api/paths`). A second view fills it
//! from `ledger` beside the first (ClickHouse 18.16 does not pass a view's
//! rows on to the views of its target table), named after the same hash
//! (`paths_delays_ranges_mv_…`); both tables are whole, or not, together.
//!
//! Not kept in cluster mode (the dashboard reads `figures` there).

use sha2::{Digest, Sha256};

use crate::store::StoreConfig;
use crate::Campaign;
use ensemble_model::figures::{self, Days};

/// The summed table.
pub const TABLE: &str = "figures_ranges";
/// Its views' names start so; a hash of the ranges follows.
const VIEW_PREFIX: &str = "figures_ranges_mv_";

/// The paths' delays of the summed ranges, by the hour and by the minute.
pub const DELAYS_TABLE: &str = "paths_delays_ranges";
/// Its view's name starts so; the same hash as the summed table's follows.
const DELAYS_VIEW_PREFIX: &str = "paths_delays_ranges_mv_";
/// What `paths_delays_ranges.rounding` holds: each delay rounded down to
/// the hour (a median's hour is found among a path's few hours) and to the
/// figure's own step, the minute (that hour's minutes, then).
pub const DELAY_HOUR_S: u32 = 3600;
pub const DELAY_ROUNDINGS: [u32; 2] = [ensemble_model::paths::DELAY_STEP_S as u32, DELAY_HOUR_S];

/// The columns of `figures` other than its days, in both tables.
const COLUMNS: [&str; 19] = [
    "figure",
    "bots",
    "device_filter",
    "placement_filter",
    "phase",
    "channel",
    "placement",
    "event_type",
    "action",
    "step",
    "model",
    "conversion_phase",
    "other_channel",
    "contacts",
    "hour",
    "day",
    "seconds",
    "device_class",
    "os_family",
];

/// How far `figures_ranges` can be trusted for a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It holds every figure row, summed over this campaign's ranges.
    Whole,
    /// Its view sums over this campaign's ranges, but it was made on a
    /// database that already had events: `rebuild-ranges` fills it.
    Partial,
    /// Its view sums over other ranges (the calendar changed):
    /// `rebuild-figures` makes it again.
    OtherRanges,
    /// Cluster mode, or a campaign without phases: not kept.
    NotKept,
}

impl Status {
    /// What to tell an operator.
    pub fn describe(self) -> &'static str {
        match self {
            Status::Whole => "the default questions read the figures summed by range",
            Status::Partial => {
                "the dashboard reads the unsummed figures (same answers, slower) until \
                 `ensemble-processor rebuild-ranges` runs once with the processors stopped (seconds)"
            }
            Status::OtherRanges => {
                "the figures were summed over another calendar's ranges: the dashboard reads the \
                 unsummed figures until `ensemble-processor rebuild-figures` runs with the processors stopped"
            }
            Status::NotKept => "not kept (cluster mode or no phases): the dashboard reads the figures",
        }
    }
}

/// The ranges kept for `campaign` and their text (`figures::ranges_text`).
pub fn ranges_of(campaign: &Campaign) -> (Vec<Days>, String) {
    let ranges = figures::summed_ranges(campaign);
    let text = figures::ranges_text(&ranges);
    (ranges, text)
}

fn view_name(text: &str) -> String {
    format!("{VIEW_PREFIX}{}", hash_of(text))
}

/// The delays' view passes the batch markers on (`crate::batches`) since
/// it is named after the ranges *and* this: a database whose view is the
/// one before ([`legacy_delays_view_name`]) gets the new one from
/// [`ensure`], and is partial until `rebuild-ranges`.
const DELAYS_VIEW_VERSION: &str = "\nwith batch markers";

fn delays_view_name(text: &str) -> String {
    format!(
        "{DELAYS_VIEW_PREFIX}{}",
        hash_of(&format!("{text}{DELAYS_VIEW_VERSION}"))
    )
}

/// The delays' view of these ranges before it passed the batch markers on.
fn legacy_delays_view_name(text: &str) -> String {
    format!("{DELAYS_VIEW_PREFIX}{}", hash_of(text))
}

fn hash_of(text: &str) -> String {
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    hash[..12].to_owned()
}

/// The views a campaign's ranges need: the summed table's, the delays'.
fn view_names(text: &str) -> [String; 2] {
    [view_name(text), delays_view_name(text)]
}

/// The delays' rows of `source` rows (`paths_delays` figure rows with
/// columns named `{p}bots`, `{p}channel`, … and days `first`, `last`): one
/// per rounding. With `marked`, the rows' figure column: a batch marker
/// (`crate::batches`) gets one row, of rounding
/// [`crate::batches::MARKER_ROUNDING`] (no reader asks for it), its
/// seconds as they are.
fn delays_select(p: &str, first: &str, last: &str, marked: Option<&str>) -> String {
    let roundings: Vec<String> = DELAY_ROUNDINGS
        .iter()
        .map(|r| format!("toUInt32({r})"))
        .collect();
    let roundings = format!("[{}]", roundings.join(", "));
    let rounding = match marked {
        Some(figure) => format!(
            "if({figure} = '{}', [toUInt32({})], {roundings})",
            crate::batches::MARKER,
            crate::batches::MARKER_ROUNDING
        ),
        None => roundings,
    };
    // `greatest`: ClickHouse computes both sides of an `if`, and the
    // marker's rounding is 0 (seconds kept as they are).
    format!(
        "{first} AS first_day, {last} AS last_day, {p}bots AS bots, \
         {p}device_filter AS device_filter, {p}placement_filter AS placement_filter, \
         arrayJoin({rounding}) AS rounding, {p}channel AS channel, \
         toUInt32(intDiv({p}seconds, greatest(rounding, 1)) * greatest(rounding, 1)) AS seconds"
    )
}

/// The ranges a row of days `first_day`..`last_day` fits, one per output
/// row (ClickHouse computes one `arrayJoin` for the two identical
/// expressions).
fn fitting(ranges: &[Days], first: &str, last: &str) -> String {
    let list: Vec<String> = ranges
        .iter()
        .map(|(a, b)| {
            format!(
                "(toDate('{}'), toDate('{}'))",
                figures::date_of(*a),
                figures::date_of(*b)
            )
        })
        .collect();
    format!(
        "arrayJoin(arrayFilter(r -> {first} >= r.1 AND {last} <= r.2, [{}]))",
        list.join(", ")
    )
}

/// The SELECT that fills the table from `ledger`'s changes.
fn select_sql(ranges: &[Days]) -> String {
    let fit = fitting(ranges, "change.first_day", "change.last_day");
    let columns: Vec<String> = COLUMNS
        .iter()
        .chain(&["n", "credit"])
        .map(|c| format!("change.{c} AS {c}"))
        .collect();
    format!(
        "SELECT tupleElement({fit}, 1) AS first_day, tupleElement({fit}, 2) AS last_day, {} \
         FROM ledger ARRAY JOIN change",
        columns.join(", ")
    )
}

/// The view filling the table from `ledger`'s changes.
fn view_sql(ranges: &[Days], name: &str) -> String {
    format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {name} TO {TABLE} AS {}",
        select_sql(ranges)
    )
}

/// The SELECT that fills the delays' table from `ledger`'s changes: the
/// paths' delays and the batch markers.
fn delays_select_sql(ranges: &[Days]) -> String {
    let fit = fitting(ranges, "change.first_day", "change.last_day");
    format!(
        "SELECT {}, change.n AS n FROM ledger ARRAY JOIN change \
         WHERE change.figure IN ('{}', '{}')",
        delays_select(
            "change.",
            &format!("tupleElement({fit}, 1)"),
            &format!("tupleElement({fit}, 2)"),
            Some("change.figure")
        ),
        figures::Figure::PathsDelays.name(),
        crate::batches::MARKER
    )
}

/// The view filling the delays' table from `ledger`'s changes.
fn delays_view_sql(ranges: &[Days], name: &str) -> String {
    format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {name} TO {DELAYS_TABLE} AS {}",
        delays_select_sql(ranges)
    )
}

/// The delays' table's columns as [`delays_select`] gives them (with `n`).
const DELAYS_COLUMNS: &str =
    "first_day, last_day, bots, device_filter, placement_filter, rounding, channel, seconds, n";

/// For each summed table whose view for `campaign`'s ranges exists in
/// `database`: (table, the condition its batch markers meet, the view's
/// SELECT as an INSERT for the ledger rows `{rows}`) — what
/// `crate::batches::complete` writes when a view did not run.
pub async fn batch_fills(
    client: &clickhouse::Client,
    database: &str,
    campaign: &Campaign,
) -> Result<Vec<(&'static str, String, String)>, clickhouse::error::Error> {
    let (ranges, text) = ranges_of(campaign);
    let existing = views(client, database).await?;
    let mut out = Vec::new();
    if existing.contains(&view_name(&text)) {
        let columns: Vec<&str> = ["first_day", "last_day"]
            .into_iter()
            .chain(COLUMNS)
            .chain(["n", "credit"])
            .collect();
        out.push((
            TABLE,
            format!(
                "figure = '{}' AND {}",
                crate::batches::MARKER,
                crate::batches::UNSCOPED
            ),
            format!(
                "INSERT INTO {TABLE} ({}) {} WHERE {{rows}}",
                columns.join(", "),
                select_sql(&ranges)
            ),
        ));
    }
    if existing.contains(&delays_view_name(&text)) {
        out.push((
            DELAYS_TABLE,
            format!(
                "rounding = {} AND {}",
                crate::batches::MARKER_ROUNDING,
                crate::batches::UNSCOPED
            ),
            format!(
                "INSERT INTO {DELAYS_TABLE} ({DELAYS_COLUMNS}) {} AND {{rows}}",
                delays_select_sql(&ranges)
            ),
        ));
    }
    Ok(out)
}

/// The table's state: its last recorded ranges and whether it was whole.
pub async fn state(
    client: &clickhouse::Client,
) -> Result<Option<(String, bool)>, clickhouse::error::Error> {
    let row: Option<(String, u8)> = client
        .query("SELECT ranges, whole FROM figures_ranges_state ORDER BY written_ms DESC LIMIT 1")
        .fetch_optional()
        .await?;
    Ok(row.map(|(r, w)| (r, w == 1)))
}

/// Records the summed tables partial, for the ranges they were whole for
/// (a migration added one of them): nothing when they were not whole.
pub async fn outdated(
    client: &clickhouse::Client,
    note: &str,
) -> Result<(), clickhouse::error::Error> {
    if let Some((text, true)) = state(client).await? {
        record(client, &text, false, note).await?;
    }
    Ok(())
}

async fn record(
    client: &clickhouse::Client,
    text: &str,
    whole: bool,
    note: &str,
) -> Result<(), clickhouse::error::Error> {
    let ms = u64::try_from(chrono::Utc::now().timestamp_millis().max(0)).unwrap_or(0);
    // After the last row, even if this clock is behind the one that wrote it.
    let last: u64 = client
        .query("SELECT max(written_ms) FROM figures_ranges_state")
        .fetch_one()
        .await?;
    client
        .query("INSERT INTO figures_ranges_state (written_ms, ranges, whole, note) VALUES (?, ?, ?, ?)")
        .bind(ms.max(last + 1))
        .bind(text)
        .bind(u8::from(whole))
        .bind(note)
        .execute()
        .await
}

async fn views(
    client: &clickhouse::Client,
    db: &str,
) -> Result<Vec<String>, clickhouse::error::Error> {
    client
        .query(
            "SELECT name FROM system.tables WHERE database = ? \
             AND (startsWith(name, ?) OR startsWith(name, ?))",
        )
        .bind(db)
        .bind(VIEW_PREFIX)
        .bind(DELAYS_VIEW_PREFIX)
        .fetch_all()
        .await
}

/// Whether `ranges` can be kept here: not in cluster mode, and only when
/// the campaign has ranges to sum.
pub fn kept(store: &StoreConfig, ranges: &[Days]) -> bool {
    !store.is_cluster() && !ranges.is_empty()
}

/// Makes the view for `campaign`'s ranges when there is none (the
/// processor at start, `migrate`): safe while other processors run, as it
/// never drops a view. On a database without accounted events the table is
/// then whole; with events, partial until `rebuild-ranges`. A view over
/// other ranges is left alone (`Status::OtherRanges`).
pub async fn ensure(
    store: &StoreConfig,
    campaign: &Campaign,
) -> Result<Status, clickhouse::error::Error> {
    let (ranges, text) = ranges_of(campaign);
    if !kept(store, &ranges) {
        return Ok(Status::NotKept);
    }
    let client = store.client();
    let names = view_names(&text);
    let mut existing = views(&client, &store.database).await?;
    // The delays' view of before the batch markers: made anew, and the
    // table partial until `rebuild-ranges` (its rows written meanwhile by
    // neither view would be missing; the dashboard reads `figures`).
    let legacy = legacy_delays_view_name(&text);
    if existing.contains(&legacy) {
        client
            .query(&delays_view_sql(&ranges, &names[1]))
            .execute()
            .await?;
        client
            .query(&format!("DROP TABLE IF EXISTS {legacy}"))
            .execute()
            .await?;
        record(
            &client,
            &text,
            false,
            "the paths' delays view now passes batch markers on: run ensemble-processor rebuild-ranges",
        )
        .await?;
        existing = views(&client, &store.database).await?;
    }
    if existing.iter().any(|v| !names.contains(v)) {
        return Ok(Status::OtherRanges);
    }
    let now = state(&client).await?;
    // Both views there: whole as recorded. A database summed before the
    // delays' table existed gets its view here, and is partial until
    // `rebuild-ranges` if it holds events.
    let both = names.iter().all(|n| existing.contains(n));
    if both && now == Some((text.clone(), true)) {
        return Ok(Status::Whole);
    }
    let [name, delays] = &names;
    client.query(&view_sql(&ranges, name)).execute().await?;
    client
        .query(&delays_view_sql(&ranges, delays))
        .execute()
        .await?;
    // Every INSERT into the ledger from here on reaches the tables: when
    // none came before, they hold everything.
    let accounted: u64 = client
        .query("SELECT count() FROM (SELECT 1 FROM ledger LIMIT 1)")
        .fetch_one()
        .await?;
    if accounted == 0 {
        record(&client, &text, true, "made on a database without events").await?;
        return Ok(Status::Whole);
    }
    if now != Some((text.clone(), false)) {
        let note = if both {
            "made on a database with events: run ensemble-processor rebuild-ranges"
        } else {
            "the paths' delays by range are new: run ensemble-processor rebuild-ranges"
        };
        record(&client, &text, false, note).await?;
    }
    Ok(Status::Partial)
}

/// Empties the table and makes its view for `campaign`'s ranges anew,
/// dropping any other (processors stopped: `rebuild-figures` then refills it
/// through the ledger, and calls [`rebuilt`]). False when not kept.
pub async fn remake(
    store: &StoreConfig,
    campaign: &Campaign,
) -> Result<bool, clickhouse::error::Error> {
    if !set_aside(store, campaign).await? {
        return Ok(false);
    }
    let (ranges, text) = ranges_of(campaign);
    let [name, delays] = view_names(&text);
    let client = store.client();
    client.query(&view_sql(&ranges, &name)).execute().await?;
    client
        .query(&delays_view_sql(&ranges, &delays))
        .execute()
        .await?;
    Ok(true)
}

/// Both tables emptied and their views dropped, so that what is written
/// next (a rebuild's figures) is not summed by range row by row: a rebuild
/// then [`refill`]s them from `figures` once, in one pass. Whether they are
/// kept for `campaign` (when not, they stay empty and without views).
pub async fn set_aside(
    store: &StoreConfig,
    campaign: &Campaign,
) -> Result<bool, clickhouse::error::Error> {
    let (ranges, text) = ranges_of(campaign);
    let client = store.client();
    for v in views(&client, &store.database).await? {
        client
            .query(&format!("DROP TABLE IF EXISTS {v}"))
            .execute()
            .await?;
    }
    for table in [TABLE, DELAYS_TABLE] {
        client
            .query(&format!("TRUNCATE TABLE {}", store.ddl_target(table)))
            .execute()
            .await?;
    }
    if !kept(store, &ranges) {
        return Ok(false);
    }
    record(&client, &text, false, "being rebuilt").await?;
    Ok(true)
}

/// Records the table whole for `campaign`'s ranges after a rebuild.
pub async fn rebuilt(
    store: &StoreConfig,
    campaign: &Campaign,
) -> Result<(), clickhouse::error::Error> {
    let (_, text) = ranges_of(campaign);
    record(&store.client(), &text, true, "rebuilt").await
}

/// `ensemble-processor rebuild-ranges` (processors stopped): the table made
/// anew from `figures` as they are, in seconds. The status after.
pub async fn refill(
    store: &StoreConfig,
    campaign: &Campaign,
) -> Result<Status, clickhouse::error::Error> {
    if !remake(store, campaign).await? {
        return Ok(Status::NotKept);
    }
    let (ranges, text) = ranges_of(campaign);
    // ClickHouse 18.16 reads only the columns named outside a lambda: the
    // days are named in the WHERE (always true) so that the lambda sees them.
    let fit = fitting(&ranges, "first_day", "last_day");
    let keys = COLUMNS.join(", ");
    store
        .client()
        .query(&format!(
            "INSERT INTO {TABLE} (first_day, last_day, {keys}, n, credit) \
             SELECT tupleElement({fit}, 1), tupleElement({fit}, 2), {keys}, sum(n), sum(credit) \
             FROM figures WHERE first_day >= toDate('1970-01-01') AND last_day >= toDate('1970-01-01') \
             GROUP BY tupleElement({fit}, 1), tupleElement({fit}, 2), {keys}"
        ))
        .with_setting("max_bytes_before_external_group_by", "1000000000")
        .execute()
        .await?;
    // The delays from the summed table (a view does not pass its rows on).
    store
        .client()
        .query(&format!(
            "INSERT INTO {DELAYS_TABLE} ({DELAYS_COLUMNS}) \
             SELECT {}, sum(f_n) FROM (SELECT first_day AS f_first, last_day AS f_last, \
             bots AS f_bots, device_filter AS f_device_filter, \
             placement_filter AS f_placement_filter, channel AS f_channel, \
             seconds AS f_seconds, n AS f_n FROM {TABLE} WHERE figure = '{}') \
             GROUP BY first_day, last_day, bots, device_filter, placement_filter, rounding, \
             channel, seconds",
            delays_select("f_", "f_first", "f_last", None),
            figures::Figure::PathsDelays.name()
        ))
        .with_setting("max_bytes_before_external_group_by", "1000000000")
        .execute()
        .await?;
    // Processors still writing would have put their batches in twice (by
    // the view and by this copy): the table is whole only if each range's
    // totals equal those of `figures`.
    if let Some(difference) = totals_differ(store, &ranges).await? {
        record(&store.client(), &text, false, &difference).await?;
        tracing::error!(
            database = %store.database,
            "figures by range: {difference} after the refill (were processors running?); \
             stop every processor and run ensemble-processor rebuild-ranges again"
        );
        return Ok(Status::Partial);
    }
    rebuilt(store, campaign).await?;
    crate::compact::compact_after_fill(store, &[TABLE, DELAYS_TABLE]).await;
    Ok(Status::Whole)
}

/// The first figure whose total over a range differs between `figures`
/// (rows fitting the range) and the table (the range's rows), if any.
async fn totals_differ(
    store: &StoreConfig,
    ranges: &[Days],
) -> Result<Option<String>, clickhouse::error::Error> {
    let client = store.client();
    for (a, b) in ranges {
        let (a, b) = (figures::date_of(*a), figures::date_of(*b));
        let totals = |table: &str, days: String| {
            client
                .query(&format!(
                    "SELECT figure, sum(n) FROM {table} WHERE {days} GROUP BY figure ORDER BY figure"
                ))
                .fetch_all::<(String, i64)>()
        };
        let base = totals(
            "figures",
            format!("first_day >= toDate('{a}') AND last_day <= toDate('{b}')"),
        )
        .await?;
        let summed = totals(
            TABLE,
            format!("first_day = toDate('{a}') AND last_day = toDate('{b}')"),
        )
        .await?;
        let nonzero = |t: Vec<(String, i64)>| -> Vec<(String, i64)> {
            t.into_iter().filter(|(_, n)| *n != 0).collect()
        };
        let delays = summed
            .iter()
            .find(|(f, _)| f == figures::Figure::PathsDelays.name())
            .map_or(0, |(_, n)| *n);
        if nonzero(base) != nonzero(summed) {
            return Ok(Some(format!("the totals of {a}..{b} differ from figures")));
        }
        let by_rounding: Vec<(u32, i64)> = client
            .query(&format!(
                "SELECT rounding, sum(n) FROM {DELAYS_TABLE} WHERE first_day = toDate('{a}') \
                 AND last_day = toDate('{b}') GROUP BY rounding"
            ))
            .fetch_all()
            .await?;
        for r in DELAY_ROUNDINGS {
            let n = by_rounding.iter().find(|(x, _)| *x == r).map_or(0, |x| x.1);
            if n != delays {
                return Ok(Some(format!(
                    "the paths' delays of {a}..{b} by {r} s differ from the summed figures"
                )));
            }
        }
    }
    Ok(None)
}

/// Whether the dashboard may answer `campaign`'s summed ranges from the
/// table.
pub async fn usable(
    client: &clickhouse::Client,
    campaign: &Campaign,
) -> Result<bool, clickhouse::error::Error> {
    let (ranges, text) = ranges_of(campaign);
    if ranges.is_empty() {
        return Ok(false);
    }
    whole_for(client, &text).await
}

/// Whether the state says the table is whole for the ranges of `text`
/// (`ranges_of`).
pub async fn whole_for(
    client: &clickhouse::Client,
    text: &str,
) -> Result<bool, clickhouse::error::Error> {
    Ok(state(client)
        .await?
        .is_some_and(|(t, whole)| whole && t == text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_lists_every_range_and_every_column() {
        let sql = view_sql(&[(10, 20), (12, 15)], "v");
        assert!(sql.contains("[(toDate('1970-01-11'), toDate('1970-01-21')), (toDate('1970-01-13'), toDate('1970-01-16'))]"));
        for c in COLUMNS {
            assert!(sql.contains(&format!("change.{c} AS {c}")), "{c}");
        }
        assert!(sql.contains("change.n AS n") && sql.contains("change.credit AS credit"));
    }

    #[test]
    fn views_are_named_after_their_ranges() {
        assert_eq!(view_name("a"), view_name("a"));
        assert_ne!(view_name("a"), view_name("b"));
        assert!(view_name("a").starts_with(VIEW_PREFIX));
        let [summed, delays] = view_names("a");
        assert_eq!(summed, view_name("a"));
        assert_eq!(delays, delays_view_name("a"));
        assert!(delays.starts_with(DELAYS_VIEW_PREFIX));
        // The view before the batch markers had the summed view's hash;
        // the one passing them on has its own, so `ensure` tells them apart.
        let legacy = legacy_delays_view_name("a");
        assert_eq!(
            legacy[DELAYS_VIEW_PREFIX.len()..],
            summed[VIEW_PREFIX.len()..]
        );
        assert_ne!(delays, legacy);
        assert_ne!(delays_view_name("a"), delays_view_name("b"));
    }

    #[test]
    fn the_delays_view_keeps_the_paths_delays_by_each_rounding() {
        let sql = delays_view_sql(&[(10, 20)], "v");
        assert!(sql.contains("TO paths_delays_ranges AS SELECT"), "{sql}");
        assert!(
            sql.contains("WHERE change.figure IN ('paths_delays', 'batch')"),
            "{sql}"
        );
        // Each delay by each rounding; a batch marker once, of rounding 0.
        assert!(sql.contains(
            "arrayJoin(if(change.figure = 'batch', [toUInt32(0)], [toUInt32(60), toUInt32(3600)])) AS rounding"
        ));
        assert!(sql.contains(
            "toUInt32(intDiv(change.seconds, greatest(rounding, 1)) * greatest(rounding, 1)) AS seconds"
        ));
        assert!(sql.contains("[(toDate('1970-01-11'), toDate('1970-01-21'))]"));
        // The finest rounding is the figure's own step: nothing is lost.
        assert_eq!(
            u64::from(DELAY_ROUNDINGS[0]),
            ensemble_model::paths::DELAY_STEP_S
        );
    }
}
