//! `figures_ranges` (migration 0008): every figure summed over each of the
//! campaign's summed ranges (`figures::summed_ranges`: the campaign, each
//! phase, the piece between phases), so that the default questions read a
//! row per value instead of one per visitors' span of days.
//!
//! The processor sums each batch's change by range itself
//! (`figures::by_range`) and the ledger INSERT carries it (`ranged`); a
//! view beside `figures_mv`, in the same INSERT, copies it into the table.
//! The ranges come from the campaign file, so the view is made here
//! rather than by a migration, named after a hash of the ranges
//! (`figures_ranges_mv_…`): a processor started with another calendar
//! finds a view of other ranges and says the figures must be rebuilt.
//! `figures_ranges_state` records for which ranges the table holds every
//! figure row (`whole`); the dashboard uses the table only then, and reads
//! `figures` otherwise (the same answers).
//!
//! `paths_delays_ranges` (migration 0009) holds the conversion paths'
//! delays of the same ranges again, by the hour and by the minute in small
//! granules, for the paths' medians (`/api/paths`): summed by the
//! processor too (`figures::delays_by_range`, carried as `delayed`), copied
//! by a second view (`paths_delays_ranges_mv_…`, the same hash); both
//! tables are whole, or not, together.
//!
//! Not kept in cluster mode (the dashboard reads `figures` there).

use sha2::{Digest, Sha256};

use crate::store::StoreConfig;
use crate::Campaign;
use ensemble_model::figures::{self, Days, Role};

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
pub use ensemble_model::figures::{DELAY_HOUR_S, DELAY_ROUNDINGS};

/// The columns of `figures` other than its days and values, in both
/// tables (the catalogue's, `figures::COLUMNS`).
fn keys() -> Vec<&'static str> {
    figures::columns_of(&[Role::Figure, Role::Scope, Role::Dimension]).collect()
}

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

/// The views are named after the ranges *and* what they copy: a
/// database whose views are of an earlier kind ([`legacy_view_names`])
/// gets the current ones from [`ensure`], and is partial until
/// `rebuild-ranges`.
const VIEW_VERSION: &str = "\nsummed by the processor, carried as text";

fn view_name(text: &str) -> String {
    format!("{VIEW_PREFIX}{}", hash_of(&format!("{text}{VIEW_VERSION}")))
}

fn delays_view_name(text: &str) -> String {
    format!(
        "{DELAYS_VIEW_PREFIX}{}",
        hash_of(&format!("{text}{VIEW_VERSION}"))
    )
}

/// The views of these ranges of earlier versions: the copies of the
/// processor's sums that read them from the ledger's arrays (before 0014),
/// those which summed each ledger row's `change` by range themselves (the
/// summed table's, the delays' before it passed batch markers on, and
/// after), and the copies of the processor's sums that read the paths'
/// delays from `channel` and `seconds`.
fn legacy_view_names(text: &str) -> [String; 7] {
    let copies = hash_of(&format!("{text}\nsummed by the processor"));
    let arrays = hash_of(&format!(
        "{text}\nsummed by the processor, paths in their own columns"
    ));
    [
        format!("{VIEW_PREFIX}{arrays}"),
        format!("{DELAYS_VIEW_PREFIX}{arrays}"),
        format!("{VIEW_PREFIX}{copies}"),
        format!("{DELAYS_VIEW_PREFIX}{copies}"),
        format!("{VIEW_PREFIX}{}", hash_of(text)),
        format!("{DELAYS_VIEW_PREFIX}{}", hash_of(text)),
        format!(
            "{DELAYS_VIEW_PREFIX}{}",
            hash_of(&format!("{text}\nwith batch markers"))
        ),
    ]
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
/// columns named `{p}bots`, `{p}path`, … and days `first`, `last`): one
/// per rounding (`figures::delays_by_range`, in SQL).
fn delays_select(p: &str, first: &str, last: &str) -> String {
    let roundings: Vec<String> = DELAY_ROUNDINGS
        .iter()
        .map(|r| format!("toUInt32({r})"))
        .collect();
    format!(
        "{first} AS first_day, {last} AS last_day, {p}bots AS bots, \
         {p}device_filter AS device_filter, {p}placement_filter AS placement_filter, \
         arrayJoin([{}]) AS rounding, {p}path AS path, \
         toUInt32(intDiv({p}delay_seconds, rounding) * rounding) AS delay_seconds",
        roundings.join(", ")
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

/// A view copying every column of the ledger's carried set `set` into
/// `table`.
fn copy_view_sql(name: &str, table: &str, set: &str) -> String {
    let set = crate::ledger::carried::set(set);
    let columns: Vec<&str> = set.columns.iter().map(|(c, _)| *c).collect();
    format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {name} TO {table} AS {}",
        set.select_sql(&columns, str::to_owned)
    )
}

/// The view filling the table from `ledger`'s summed changes.
fn view_sql(name: &str) -> String {
    copy_view_sql(name, TABLE, "ranged")
}

/// The view filling the delays' table from `ledger`'s delays.
fn delays_view_sql(name: &str) -> String {
    copy_view_sql(name, DELAYS_TABLE, "delayed")
}

/// For each summed table whose view for `campaign`'s ranges exists in
/// `database`: (table, the condition its batch markers meet, the ledger
/// set its view copies) — what `crate::batches::complete` writes from
/// when a view did not run.
pub async fn batch_fills(
    client: &clickhouse::Client,
    database: &str,
    campaign: &Campaign,
) -> Result<Vec<(&'static str, String, &'static str)>, clickhouse::error::Error> {
    let (_, text) = ranges_of(campaign);
    let existing = views(client, database).await?;
    let mut out = Vec::new();
    if existing.contains(&view_name(&text)) {
        out.push((
            TABLE,
            format!(
                "figure = '{}' AND {}",
                crate::batches::MARKER,
                crate::batches::UNSCOPED
            ),
            "ranged",
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
            "delayed",
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
    // Views of an earlier kind (they summed each ledger row's `change` by
    // range themselves): made anew, and the tables partial until
    // `rebuild-ranges` (rows written meanwhile by both kinds, or by
    // neither, would be off; the dashboard reads `figures`).
    let legacy: Vec<String> = legacy_view_names(&text)
        .into_iter()
        .filter(|v| existing.contains(v))
        .collect();
    if !legacy.is_empty() {
        make_views(&client, &names).await?;
        for v in &legacy {
            client
                .query(&format!("DROP TABLE IF EXISTS {v}"))
                .execute()
                .await?;
        }
        record(
            &client,
            &text,
            false,
            "the processor now sums the figures by range itself: run ensemble-processor rebuild-ranges",
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
    make_views(&client, &names).await?;
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
    let (_, text) = ranges_of(campaign);
    make_views(&store.client(), &view_names(&text)).await?;
    Ok(true)
}

/// Makes the summed table's and the delays' views, named `names`
/// ([`view_names`]), if they are not there.
async fn make_views(
    client: &clickhouse::Client,
    [name, delays]: &[String; 2],
) -> Result<(), clickhouse::error::Error> {
    client.query(&view_sql(name)).execute().await?;
    client.query(&delays_view_sql(delays)).execute().await
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
    let keys = keys().join(", ");
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
    let delays_columns: Vec<&str> = crate::ledger::DELAY_COLUMNS
        .iter()
        .map(|(c, _)| *c)
        .collect();
    let delays_columns = delays_columns.join(", ");
    store
        .client()
        .query(&format!(
            "INSERT INTO {DELAYS_TABLE} ({delays_columns}) \
             SELECT {}, sum(f_n) FROM (SELECT first_day AS f_first, last_day AS f_last, \
             bots AS f_bots, device_filter AS f_device_filter, \
             placement_filter AS f_placement_filter, path AS f_path, \
             delay_seconds AS f_delay_seconds, n AS f_n FROM {TABLE} WHERE figure = '{}') \
             GROUP BY first_day, last_day, bots, device_filter, placement_filter, rounding, \
             path, delay_seconds",
            delays_select("f_", "f_first", "f_last"),
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
    fn the_views_copy_what_the_ledger_carries_summed() {
        let sql = view_sql("v");
        let ranged = crate::ledger::carried::set("ranged");
        assert!(sql.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS v TO figures_ranges AS SELECT carried_record[1] AS figure, toUInt8(carried_record[2]) AS bots, "), "{sql}");
        assert_eq!(
            keys().len(),
            figures::COLUMNS.len() - 4,
            "all but the days and values"
        );
        for c in keys()
            .iter()
            .chain(&["first_day", "last_day", "n", "credit"])
        {
            let field = ranged.field_sql(c, "carried_record");
            assert!(sql.contains(&format!("{field} AS {c}")), "{c}");
            assert!(crate::ledger::FIGURE_COLUMNS.contains(c), "{c} is carried");
        }
        assert!(
            sql.ends_with(&format!(
                "FROM ledger ARRAY JOIN {} AS carried_record",
                ranged.records_sql()
            )),
            "{sql}"
        );
        let sql = delays_view_sql("d");
        assert!(
            sql.contains("TO paths_delays_ranges AS SELECT toDate(carried_record[1]) AS first_day"),
            "{sql}"
        );
        assert!(sql.contains("toUInt32(carried_record[6]) AS rounding, carried_record[7] AS path, toUInt32(carried_record[8]) AS delay_seconds, toInt64(carried_record[9]) AS n FROM ledger ARRAY JOIN"), "{sql}");
        // The refill inserts `delays_select`'s columns, then the sum, under
        // the carried columns' names: the same order.
        let select = delays_select("f_", "a", "b");
        let aliases: Vec<&str> = select
            .split(" AS ")
            .skip(1)
            .map(|rest| rest.split(',').next().unwrap_or_default().trim())
            .collect();
        let carried: Vec<&str> = crate::ledger::DELAY_COLUMNS
            .iter()
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(aliases, carried[..8]);
        assert_eq!(carried[8], "n");
    }

    #[test]
    fn views_are_named_after_their_ranges_and_their_kind() {
        assert_eq!(view_name("a"), view_name("a"));
        assert_ne!(view_name("a"), view_name("b"));
        assert!(view_name("a").starts_with(VIEW_PREFIX));
        let [summed, delays] = view_names("a");
        assert_eq!(summed, view_name("a"));
        assert_eq!(delays, delays_view_name("a"));
        assert!(delays.starts_with(DELAYS_VIEW_PREFIX));
        assert_ne!(delays_view_name("a"), delays_view_name("b"));
        // The views that summed `change` themselves have other names, so
        // `ensure` tells them apart and replaces them.
        let legacy = legacy_view_names("a");
        for v in &legacy {
            assert!(v != &summed && v != &delays, "{v}");
        }
        assert!(legacy.contains(&format!("{VIEW_PREFIX}{}", hash_of("a"))));
    }

    #[test]
    fn the_refill_rounds_each_delay_as_the_processor_does() {
        let sql = delays_select("f_", "a", "b");
        assert!(
            sql.contains("arrayJoin([toUInt32(60), toUInt32(3600)]) AS rounding"),
            "{sql}"
        );
        assert!(
            sql.contains("toUInt32(intDiv(f_delay_seconds, rounding) * rounding) AS delay_seconds"),
            "{sql}"
        );
        // The finest rounding is the figure's own step: nothing is lost.
        assert_eq!(
            u64::from(DELAY_ROUNDINGS[0]),
            ensemble_model::paths::DELAY_STEP_S
        );
    }
}
