//! Batch markers: how a ledger INSERT whose views did not all run is found
//! and completed, so that every figure counts each accounted event exactly
//! once whatever fails between two writes.
//!
//! ClickHouse writes an INSERT's own part first, then runs the table's
//! materialised views one after another, each writing its own part. A view
//! that fails (memory, a restart, a kill) fails the INSERT, but the
//! ledger's rows and the views already run stay. The events are then
//! accounted in the ledger, and a retry that reads the ledger finds nothing
//! new to count: without more, the figures stayed short for good.
//!
//! So each ledger INSERT carries a marker — the first record of each set
//! it carries (`crate::ledger::carried`), keyed by a unique batch key — which every
//! view copies into its target in the same block as the batch's rows
//! (one part: all or nothing). A target holds a batch's marker exactly when
//! it holds the batch's rows. When a batch's head event (the ledger row
//! carrying `change`) comes back to the processor already accounted — a
//! retry after a failed INSERT, a redelivery after a crash — the processor
//! checks each target for the marker and writes the missing ones from the
//! ledger's own sets, with the view's own SELECT ([`complete`]). Only the
//! member that owns the head event's partition does it, so no two members
//! complete the same batch.

use std::collections::BTreeSet;

use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use crate::ledger::carried;
use crate::sql::lit;
use crate::Campaign;
use ensemble_model::figures;

/// What a marker's `figure` (and a journeys marker's `kind`) holds.
pub const MARKER: &str = "batch";

/// The rounding a marker gets in `paths_delays_ranges` (no reader asks for it).
pub const MARKER_ROUNDING: u32 = 0;

/// The scope every marker row has (bots 0, every device and placement): named in each lookup so that the tables' sorting keys, which
/// start with it, find the marker without a scan.
pub const UNSCOPED: &str = "bots = 0 AND device_filter = '*' AND placement_filter = '*'";

/// One ledger INSERT's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// `batch-<written_ms>-<random>`: unique across processors.
    pub key: String,
    pub written_ms: u64,
    /// The day its `figures` row sits on: the first of the campaign's
    /// summed ranges.
    pub day: figures::Day,
    /// The summed ranges that day fits (those that start the campaign):
    /// its `figures_ranges` and `paths_delays_ranges` rows, one on each,
    /// as for any figures row.
    pub ranges: Vec<figures::Days>,
}

/// The query id of the ledger INSERT that carries the marker `key`.
fn query_id(key: &str) -> String {
    format!("ensemble-ledger-{key}")
}

impl Marker {
    /// The marker of a write at `written_ms`, given the campaign's summed
    /// `ranges`: on the first day of them (day 0 without ranges).
    pub fn new(written_ms: u64, ranges: &[figures::Days]) -> Self {
        let nonce = Uuid::new_v4().simple().to_string();
        let day = ranges.iter().map(|(a, _)| *a).min().unwrap_or(0);
        Self {
            key: format!("{MARKER}-{written_ms}-{}", &nonce[..16]),
            written_ms,
            day,
            ranges: figures::fitting(ranges, day, day).collect(),
        }
    }

    /// The ClickHouse query id of the INSERT that carries it.
    pub fn query_id(&self) -> String {
        query_id(&self.key)
    }

    /// Its record in `change`, in the catalogue's order
    /// (`figures::COLUMNS`), on the day markers sit on.
    pub fn change_values(&self) -> Vec<String> {
        self.figure_values(self.day, self.day)
    }

    /// Its records in `ranged` (as [`Marker::change_values`], on each of
    /// its ranges).
    pub fn ranged_values(&self) -> Vec<Vec<String>> {
        self.ranges
            .iter()
            .map(|(a, b)| self.figure_values(*a, *b))
            .collect()
    }

    /// Its field of each column of the catalogue (`figures::COLUMNS`):
    /// the marker in `figure`, the key in `path`, the write's Unix time
    /// in `delay_seconds`, `n` 1, days `first`, `last`, every other column its
    /// type's zero.
    fn figure_values(&self, first: figures::Day, last: figures::Day) -> Vec<String> {
        figures::COLUMNS
            .iter()
            .map(|c| match c.name {
                "figure" => MARKER.into(),
                "first_day" => date(first),
                "last_day" => date(last),
                "device_filter" | "placement_filter" => figures::ALL.into(),
                "path" => self.key.clone(),
                "delay_seconds" => (self.written_ms / 1000).to_string(),
                "n" => "1".into(),
                _ => match c.sql_type {
                    "String" => String::new(),
                    "Date" => "1970-01-01".into(),
                    "Float64" => "0.0".into(),
                    _ => "0".into(),
                },
            })
            .collect()
    }

    /// Its records in `delayed` (first_day, last_day, bots,
    /// device_filter, placement_filter, rounding, path, delay_seconds, n):
    /// of rounding [`MARKER_ROUNDING`], the key in `path`, `delay_seconds`
    /// the write's Unix time.
    pub fn delayed_values(&self) -> Vec<Vec<String>> {
        let all = || figures::ALL.to_owned();
        self.ranges
            .iter()
            .map(|(a, b)| {
                vec![
                    date(*a),
                    date(*b),
                    "0".into(),
                    all(),
                    all(),
                    MARKER_ROUNDING.to_string(),
                    self.key.clone(),
                    (self.written_ms / 1000).to_string(),
                    "1".into(),
                ]
            })
            .collect()
    }

    /// Its record in `journey`, in the ledger writer's order
    /// (visitor_id, kind, ms, event_id, day, phase, channel, placement,
    /// device, contact, credits, n, n_events, n_exposures, n_scans,
    /// n_visits, n_signups). The key is in `visitor_id`
    /// (no visitor's id: erasure has nothing to find there).
    pub fn journey_values(&self) -> Vec<String> {
        let empty = String::new;
        vec![
            self.key.clone(),
            MARKER.into(),
            self.written_ms.to_string(),
            "00000000-0000-0000-0000-000000000000".into(),
            "1970-01-01".into(),
            empty(),
            empty(),
            empty(),
            empty(),
            empty(),
            empty(),
            "1".into(),
            "0".into(),
            "0".into(),
            "0".into(),
            "0".into(),
            "0".into(),
        ]
    }
}

/// A `Date` field.
fn date(day: figures::Day) -> String {
    figures::date_of(day).format("%Y-%m-%d").to_string()
}

/// A ledger row carrying a batch's figures' change (its head).
#[derive(Debug, Row, Deserialize)]
struct Head {
    written_ms: u64,
    visitor_id: String,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    key: String,
}

/// Which ledger row a fill reads: the head (the `change` set), or the
/// row carrying another set, found by the marker's key in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carried {
    Head,
    Set(&'static str),
}

/// A table a view fills from the ledger, and how to fill it for a batch.
struct Target {
    table: String,
    /// Its markers' rows, without the key (`… AND <key column> = <key>`).
    marker: String,
    /// The column holding the key.
    key_column: &'static str,
    /// The view's SELECT as an INSERT, for the ledger rows `{rows}`.
    fill: String,
    reads: Carried,
}

/// The columns of `table` (in `database`), in order.
async fn columns(
    client: &clickhouse::Client,
    database: &str,
    table: &str,
) -> Result<Vec<String>, clickhouse::error::Error> {
    client
        .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
        .bind(database)
        .bind(table)
        .fetch_all()
        .await
}

/// `INSERT INTO table (columns) SELECT … FROM ledger ARRAY JOIN … WHERE
/// {rows}`: what a view that copies `columns` of the carried set `set`
/// writes (`carried::Set::select_sql`, as the views). Selected as
/// `<set>_<column>` (an INSERT takes them by position): named as the
/// column, the journeys' `… AS visitor_id` would stand for the ledger's own
/// `visitor_id` in the WHERE that picks the batch's row, and pick the
/// wrong records.
fn copy_fill(table: &str, columns: &[String], set: &str) -> String {
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    format!(
        "INSERT INTO {table} ({}) {} WHERE {{rows}}",
        columns.join(", "),
        carried::set(set).select_sql(&names, |c| format!("{set}_{c}"))
    )
}

/// Every table the ledger's views fill in this database.
async fn targets(
    client: &clickhouse::Client,
    campaign: &Campaign,
) -> Result<Vec<Target>, clickhouse::error::Error> {
    let database: String = client.query("SELECT currentDatabase()").fetch_one().await?;
    let journeys = format!("{database}_sql.journeys");
    // `figures` (figures_mv) and the journeys (journeys_mv) copy their
    // columns from their set; the summed ranges' tables are filled when
    // their views for this campaign's ranges exist.
    let mut out = vec![Target {
        table: "figures".into(),
        marker: format!("figure = '{MARKER}' AND {UNSCOPED}"),
        key_column: "path",
        fill: copy_fill(
            "figures",
            &columns(client, &database, "figures").await?,
            "change",
        ),
        reads: Carried::Head,
    }];
    for (table, marker, set) in crate::ranges::batch_fills(client, &database, campaign).await? {
        out.push(Target {
            table: table.into(),
            marker,
            key_column: "path",
            fill: copy_fill(table, &columns(client, &database, table).await?, set),
            reads: Carried::Set(set),
        });
    }
    out.push(Target {
        fill: copy_fill(
            &journeys,
            &columns(client, &format!("{database}_sql"), "journeys").await?,
            "journey",
        ),
        table: journeys,
        marker: format!("kind = '{MARKER}'"),
        key_column: "visitor_id",
        reads: Carried::Set("journey"),
    });
    Ok(out)
}

/// How long [`complete`] waits for a batch's INSERT still running on the
/// server (its connection dropped, the server carries on) before it
/// completes the batch itself.
const STILL_RUNNING_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The head rows among the ledger rows `again` ((visitor, `written_ms`)):
/// a batch's head row is a row of its head event's visitor, so the
/// ledger's sorting key finds them. In chunks, under ClickHouse's
/// `max_query_size` (a replay brings a whole batch back).
async fn heads(
    client: &clickhouse::Client,
    again: &BTreeSet<(&str, u64)>,
) -> Result<Vec<Head>, clickhouse::error::Error> {
    let again: Vec<&(&str, u64)> = again.iter().collect();
    let mut heads: Vec<Head> = Vec::new();
    // The head row's `change` begins with the marker's record.
    let change = carried::set("change");
    for chunk in again.chunks(2000) {
        let pairs: Vec<String> = chunk
            .iter()
            .map(|(v, w)| format!("({}, toUInt64({w}))", lit(v)))
            .collect();
        let visitors: BTreeSet<String> = chunk.iter().map(|(v, _)| lit(v)).collect();
        let visitors: Vec<String> = visitors.into_iter().collect();
        heads.extend(
            client
                .query(&format!(
                    "SELECT written_ms, visitor_id, event_id, {} AS key \
                     FROM ledger WHERE visitor_id IN ({}) AND (visitor_id, written_ms) IN ({}) \
                     AND {}",
                    change.field_sql("path", &change.first_record_sql()),
                    visitors.join(","),
                    pairs.join(","),
                    change.begins_with_sql(MARKER),
                ))
                .fetch_all::<Head>()
                .await?,
        );
    }
    Ok(heads)
}

/// Completes the ledger batches of `again` ((visitor, `written_ms`) of
/// already-accounted events just read again) whose head event is one of
/// `mine` (events this member holds: it owns their partition): each table
/// a view fills from the ledger that lacks the batch's marker gets the
/// batch's rows, from the ledger's sets. Batches whose sets were
/// emptied (`compact`) are long complete and are not looked at. A whole
/// batch costs a marker lookup per table, by each table's sorting key.
/// Returns how many tables' rows were written (0 when every view had run).
pub async fn complete(
    client: &clickhouse::Client,
    campaign: &Campaign,
    again: &BTreeSet<(&str, u64)>,
    mine: &BTreeSet<Uuid>,
) -> Result<usize, clickhouse::error::Error> {
    if again.is_empty() {
        return Ok(0);
    }
    let heads: Vec<Head> = heads(client, again)
        .await?
        .into_iter()
        .filter(|h| mine.contains(&h.event_id))
        .collect();
    if heads.is_empty() {
        return Ok(0);
    }
    let targets = targets(client, campaign).await?;
    let mut written = 0;
    for head in heads {
        wait_while_running(client, &head.key).await?;
        let key = lit(&head.key);
        let written_ms = head.written_ms;
        for t in &targets {
            let present: u64 = client
                .query(&format!(
                    "SELECT count() FROM {} WHERE {} AND {} = {key}",
                    t.table, t.marker, t.key_column
                ))
                .fetch_one()
                .await?;
            if present > 0 {
                continue;
            }
            let visitor = match t.reads {
                Carried::Head => Some(head.visitor_id.clone()),
                // The row carrying the set (one of the batch's first
                // rows): found by the marker's key in it (unique: it ends
                // with 16 random hex digits).
                Carried::Set(set) => {
                    client
                        .query(&format!(
                            "SELECT visitor_id FROM ledger WHERE written_ms = {written_ms} \
                             AND position({set}, {key}) > 0 LIMIT 1"
                        ))
                        .fetch_optional()
                        .await?
                }
            };
            let Some(visitor) = visitor else {
                continue;
            };
            let rows = format!(
                "written_ms = {written_ms} AND visitor_id = {}",
                lit(&visitor)
            );
            client
                .query(&t.fill.replace("{rows}", &rows))
                .execute()
                .await?;
            written += 1;
            tracing::warn!(
                table = %t.table,
                batch = %head.key,
                "a view of the ledger had not written this batch: written now from the ledger"
            );
        }
    }
    Ok(written)
}

/// Waits (bounded) while the INSERT that carried `key` still runs.
async fn wait_while_running(
    client: &clickhouse::Client,
    key: &str,
) -> Result<(), clickhouse::error::Error> {
    let query_id = query_id(key);
    let deadline = std::time::Instant::now() + STILL_RUNNING_WAIT;
    loop {
        let running: u64 = client
            .query("SELECT count() FROM system.processes WHERE query_id = ?")
            .bind(&query_id)
            .fetch_one()
            .await?;
        if running == 0 || std::time::Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// How old a batch marker must be before `compact` deletes it: its batch is
/// long complete (written, or completed by the processor that owns it).
pub const RETIRE_AFTER_S: u64 = 86_400;

/// Deletes the markers older than [`RETIRE_AFTER_S`] from every table
/// (`ensemble-processor compact`, daily): one row per batch and table
/// would otherwise pile up. A mutation: ClickHouse does it in the background.
pub async fn retire(store: &crate::StoreConfig) -> Result<(), clickhouse::error::Error> {
    let now = u64::try_from(chrono::Utc::now().timestamp().max(0)).unwrap_or(0);
    let cutoff = now.saturating_sub(RETIRE_AFTER_S);
    let client = store.client();
    for (table, marker, seconds) in [
        ("figures", format!("figure = '{MARKER}'"), "delay_seconds"),
        (
            crate::ranges::TABLE,
            format!("figure = '{MARKER}'"),
            "delay_seconds",
        ),
        (
            crate::ranges::DELAYS_TABLE,
            format!("rounding = {MARKER_ROUNDING}"),
            "delay_seconds",
        ),
        ("journeys", format!("kind = '{MARKER}'"), "intDiv(ms, 1000)"),
    ] {
        client
            .query(&format!(
                "ALTER TABLE {} DELETE WHERE {marker} AND {seconds} < {cutoff}",
                store.ddl_target(table)
            ))
            .execute()
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// What a batch's fill writes is what the migration's views write: the
    /// same SELECT of the same set (here generated, there spelled out).
    #[test]
    fn the_migrations_views_read_the_sets_as_the_fills_do() {
        for (view, target, set) in [
            ("figures_mv", "figures", "change"),
            ("journeys_mv", "{sql_database}.journeys", "journey"),
        ] {
            let s = carried::set(set);
            // The analysts' journeys keep no contact.
            let columns: Vec<&str> = s
                .columns
                .iter()
                .map(|(c, _)| *c)
                .filter(|c| !(set == "journey" && *c == "contact"))
                .collect();
            let want = format!(
                "INSERT INTO {target} {}",
                s.select_sql(&columns, str::to_owned)
            );
            let got = crate::migrate::view_fill(view).unwrap_or_default();
            assert_eq!(words(&got), words(&want), "{view}");
            // The fill selects the same, under its own names.
            let names: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
            let fill = copy_fill(target, &names, set);
            let renamed = s.select_sql(&columns, |c| format!("{set}_{c}"));
            assert!(fill.contains(&renamed), "{fill}");
        }
    }
}
