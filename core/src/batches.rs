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
//! So each ledger INSERT carries a marker — one more element in its
//! `change` and `journey` arrays, keyed by a unique batch key — which every
//! view copies into its target in the same block as the batch's rows
//! (one part: all or nothing). A target holds a batch's marker exactly when
//! it holds the batch's rows. When a batch's head event (the ledger row
//! carrying the arrays) comes back to the processor already accounted — a
//! retry after a failed INSERT, a redelivery after a crash — the processor
//! checks each target for the marker and writes the missing ones from the
//! ledger's own arrays, with the view's own SELECT ([`complete`]). Only the
//! member that owns the head event's partition does it, so no two members
//! complete the same batch.

use std::collections::BTreeSet;

use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use crate::figures;
use crate::Campaign;

/// What a marker's `figure` (and a journeys marker's `kind`) holds.
pub const MARKER: &str = "batch";

/// The rounding a marker gets in `paths_delays_ranges` (no reader asks for it).
pub const MARKER_ROUNDING: u32 = 0;

/// One ledger INSERT's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// `batch-<written_ms>-<random>`: unique across processors.
    pub key: String,
    pub written_ms: u64,
    /// The day its `figures` row sits on (inside every summed range that
    /// starts the campaign, so that `figures_ranges` gets it too).
    pub day: figures::Day,
}

/// The day markers sit on: the first day of `campaign`'s summed ranges.
pub fn marker_day(campaign: &Campaign) -> figures::Day {
    figures::summed_ranges(campaign)
        .iter()
        .map(|(a, _)| *a)
        .min()
        .unwrap_or(0)
}

impl Marker {
    pub fn new(written_ms: u64, day: figures::Day) -> Self {
        let nonce = Uuid::new_v4().simple().to_string();
        Self {
            key: format!("{MARKER}-{written_ms}-{}", &nonce[..16]),
            written_ms,
            day,
        }
    }

    /// The ClickHouse query id of the INSERT that carries it.
    pub fn query_id(&self) -> String {
        format!("ensemble-ledger-{}", self.key)
    }

    /// Its element of each `change.*` array, in the ledger writer's order
    /// (figure, bots, device_filter, placement_filter, first_day, last_day,
    /// phase, channel, placement, event_type, action, step, model,
    /// conversion_phase, other_channel, device_class, os_family, contacts,
    /// hour, day, seconds, n, credit). The key is in `channel`; `seconds`
    /// holds the write's Unix time.
    pub fn change_values(&self) -> [String; 23] {
        let day = format!("'{}'", figures::date_of(self.day).format("%Y-%m-%d"));
        let empty = || "''".to_owned();
        [
            format!("'{MARKER}'"),
            "0".into(),
            empty(),
            empty(),
            day.clone(),
            day,
            empty(),
            format!("'{}'", self.key),
            empty(),
            empty(),
            empty(),
            empty(),
            empty(),
            empty(),
            empty(),
            empty(),
            empty(),
            "0".into(),
            "0".into(),
            "'1970-01-01'".into(),
            (self.written_ms / 1000).to_string(),
            "1".into(),
            "0.0".into(),
        ]
    }

    /// Its element of each `journey.*` array, in the ledger writer's order
    /// (visitor_id, kind, ms, event_id, day, phase, channel, placement,
    /// device, contact, model, conversion_phase, n, n_events, n_exposures,
    /// n_scans, n_visits, n_signups, credit). The key is in `visitor_id`
    /// (no visitor's id: erasure has nothing to find there).
    pub fn journey_values(&self) -> [String; 19] {
        let empty = || "''".to_owned();
        [
            format!("'{}'", self.key),
            format!("'{MARKER}'"),
            self.written_ms.to_string(),
            "'00000000-0000-0000-0000-000000000000'".into(),
            "'1970-01-01'".into(),
            empty(),
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
            "0.0".into(),
        ]
    }
}

/// A ledger row carrying a batch's arrays (its head).
#[derive(Debug, Row, Deserialize)]
struct Head {
    written_ms: u64,
    visitor_id: String,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    key: String,
}

/// What [`complete`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Completed {
    /// Batches whose markers were all there.
    pub whole: usize,
    /// (table, batch key) written from the ledger.
    pub written: Vec<(String, String)>,
}

/// A table a view fills from the ledger, and how to fill it for one batch.
struct Target {
    table: String,
    /// Rows of the batch's marker in `table` (SQL returning a count).
    marker: String,
    /// The view's SELECT over the batch's ledger row(s), as an INSERT.
    fill: String,
}

/// The columns of `table` (in `database`), in order. The fills below name
/// what they select `change_<column>` / `journey_<column>` (an INSERT
/// takes them by position): named as the column, `journey.visitor_id AS
/// visitor_id` would stand for the ledger's own `visitor_id` in the WHERE
/// that picks the batch's row, and pick the wrong elements.
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

/// Every table the ledger's views fill, for the batch `key` whose arrays
/// are on the rows of `head` (change) and `carrier` (journey) written at
/// `written_ms`.
async fn targets(
    client: &clickhouse::Client,
    campaign: &Campaign,
    key: &str,
    written_ms: u64,
    (head, carrier): (&str, Option<&str>),
) -> Result<Vec<Target>, clickhouse::error::Error> {
    let database: String = client.query("SELECT currentDatabase()").fetch_one().await?;
    let sql_database = format!("{database}_sql");
    let key_lit = crate::ledger::literal(key);
    let head_rows = format!(
        "written_ms = {written_ms} AND visitor_id = {}",
        crate::ledger::literal(head)
    );
    let mut out = Vec::new();
    // `figures` (figures_mv): every column is the change's of that name.
    let cols = columns(client, &database, "figures").await?;
    out.push(Target {
        table: "figures".into(),
        marker: format!(
            "SELECT count() FROM figures WHERE figure = '{MARKER}' AND channel = {key_lit}"
        ),
        fill: format!(
            "INSERT INTO figures ({}) SELECT {} FROM ledger ARRAY JOIN change WHERE {head_rows}",
            cols.join(", "),
            cols.iter()
                .map(|c| format!("change.{c} AS change_{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });
    // The summed ranges' tables, when their views for this campaign's
    // ranges exist.
    for (table, marker, fill) in crate::ranges::batch_fills(client, &database, campaign).await? {
        out.push(Target {
            table: table.into(),
            marker: format!("SELECT count() FROM {table} WHERE {marker} AND channel = {key_lit}"),
            fill: fill.replace("{rows}", &head_rows),
        });
    }
    // The analysts' journeys (journeys_mv), when the batch carried any.
    if let Some(carrier) = carrier {
        let cols = columns(client, &sql_database, "journeys").await?;
        out.push(Target {
            table: format!("{sql_database}.journeys"),
            marker: format!(
                "SELECT count() FROM {sql_database}.journeys WHERE kind = '{MARKER}' AND visitor_id = {key_lit}"
            ),
            fill: format!(
                "INSERT INTO {sql_database}.journeys ({}) SELECT {} FROM ledger ARRAY JOIN journey \
                 WHERE written_ms = {written_ms} AND visitor_id = {}",
                cols.join(", "),
                cols.iter()
                    .map(|c| format!("journey.{c} AS journey_{c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                crate::ledger::literal(carrier)
            ),
        });
    }
    Ok(out)
}

/// How long [`complete`] waits for a batch's INSERT still running on the
/// server (its connection dropped, the server carries on) before it
/// completes the batch itself.
const STILL_RUNNING_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Completes the ledger batches of `again` ((visitor, `written_ms`) of
/// already-accounted events just read again) whose head event is one of
/// `mine` (events this member holds: it owns their partition): each table
/// a view fills from the ledger that lacks the batch's marker gets the
/// batch's rows, from the ledger's arrays. Batches whose arrays were
/// emptied (`compact`) are long complete and are not looked at.
pub async fn complete(
    client: &clickhouse::Client,
    campaign: &Campaign,
    again: &BTreeSet<(&str, u64)>,
    mine: &BTreeSet<Uuid>,
) -> Result<Completed, clickhouse::error::Error> {
    let mut done = Completed::default();
    if again.is_empty() {
        return Ok(done);
    }
    // By the ledger's sorting key (visitor, written_ms): the head row of a
    // batch is a row of its head event's visitor. In chunks, under
    // ClickHouse's `max_query_size` (a replay brings a whole batch back).
    let again: Vec<&(&str, u64)> = again.iter().collect();
    let mut heads: Vec<Head> = Vec::new();
    for chunk in again.chunks(2000) {
        let pairs: Vec<String> = chunk
            .iter()
            .map(|(v, w)| format!("({}, toUInt64({w}))", crate::ledger::literal(v)))
            .collect();
        let visitors: BTreeSet<String> = chunk
            .iter()
            .map(|(v, _)| crate::ledger::literal(v))
            .collect();
        let visitors: Vec<String> = visitors.into_iter().collect();
        heads.extend(
            client
                .query(&format!(
                    "SELECT written_ms, visitor_id, event_id, \
                     arrayElement(arrayFilter((c, f) -> f = '{MARKER}', change.channel, change.figure), 1) AS key \
                     FROM ledger WHERE visitor_id IN ({}) AND (visitor_id, written_ms) IN ({}) \
                     AND notEmpty(change.figure) AND key != ''",
                    visitors.join(","),
                    pairs.join(",")
                ))
                .fetch_all::<Head>()
                .await?,
        );
    }
    for head in heads {
        let written_ms = head.written_ms;
        if !mine.contains(&head.event_id) {
            continue;
        }
        wait_while_running(client, &head.key).await?;
        let carrier: Option<String> = client
            .query(&format!(
                "SELECT visitor_id FROM ledger WHERE written_ms = {written_ms} \
                 AND has(journey.visitor_id, {}) LIMIT 1",
                crate::ledger::literal(&head.key)
            ))
            .fetch_optional()
            .await?;
        let targets = targets(
            client,
            campaign,
            &head.key,
            written_ms,
            (&head.visitor_id, carrier.as_deref()),
        )
        .await?;
        let mut missing = 0;
        for t in targets {
            let present: u64 = client.query(&t.marker).fetch_one().await?;
            if present == 0 {
                client.query(&t.fill).execute().await?;
                tracing::warn!(
                    table = %t.table,
                    batch = %head.key,
                    "a view of the ledger had not written this batch: written now from the ledger"
                );
                done.written.push((t.table, head.key.clone()));
                missing += 1;
            }
        }
        if missing == 0 {
            done.whole += 1;
        }
    }
    Ok(done)
}

/// Waits (bounded) while the INSERT that carried `key` still runs.
async fn wait_while_running(
    client: &clickhouse::Client,
    key: &str,
) -> Result<(), clickhouse::error::Error> {
    let query_id = Marker {
        key: key.to_owned(),
        written_ms: 0,
        day: 0,
    }
    .query_id();
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
        ("figures", format!("figure = '{MARKER}'"), "seconds"),
        (
            crate::ranges::TABLE,
            format!("figure = '{MARKER}'"),
            "seconds",
        ),
        (
            crate::ranges::DELAYS_TABLE,
            format!("rounding = {MARKER_ROUNDING}"),
            "seconds",
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
