//! The ledger INSERT: a batch's rows, carrying (read by the materialised
//! views from the INSERT itself) the figures' change, the journeys' change,
//! and the change summed by range and the paths' delays by rounding (for
//! the summed tables), each set as text ([`super::carried`]) beginning with
//! the batch marker.

use std::fmt::Write as _;
use std::sync::LazyLock;

use chrono::Utc;

use super::carried::{self, push_date, push_float, push_number, push_set, push_text, SETS};
use crate::batches::Marker;
use crate::sql::push_tsv;
use crate::Campaign;
use ensemble_model::figures::{self, DelayRow, Event, Row as FigureRow};
use ensemble_model::journeys;

/// The event columns of a ledger row, before the carried sets.
const EVENT_COLUMNS: [&str; 14] = [
    "visitor_id",
    "written_ms",
    "tombstone",
    "event_id",
    "ms",
    "ev_type",
    "ev_action",
    "ev_channel",
    "ev_placement",
    "ev_phase",
    "ev_device",
    "ev_bot",
    "ev_contact",
    "ev_os",
];

/// TabSeparated, not VALUES: ClickHouse 18.16 parses VALUES several times
/// slower, and was the bottleneck of a rebuild.
static INSERT_HEAD: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<&str> = EVENT_COLUMNS
        .iter()
        .copied()
        .chain(carried::names())
        .collect();
    format!(
        "INSERT INTO ledger ({}) FORMAT TabSeparated",
        columns.join(", ")
    )
});

/// What a batch's ledger rows carry to the views.
#[derive(Debug, Clone, Copy, Default)]
pub struct Carried<'c> {
    /// The figures' change (the rows of `figures`).
    pub change: &'c [FigureRow<'c>],
    /// The analysts' journeys' change.
    pub journey: &'c [JourneyRow<'c>],
    /// The change summed over the campaign's summed ranges
    /// (`figures::by_range`; the rows of `figures_ranges`). Empty when
    /// no view writes them (a rebuild sums the ranges itself).
    pub ranged: &'c [FigureRow<'c>],
    /// The paths' delays of `ranged` by rounding (`paths_delays_ranges`).
    pub delayed: &'c [DelayRow<'c>],
}

/// Ledger rows being put together for one INSERT, carrying [`Carried`]:
/// one set per row, the head row (the first) the figures' change, the
/// second the journeys', the third the summed change, the fourth the
/// delays; a batch of fewer rows has its last row carry the rest. Not all
/// on one row: a materialised view's `ARRAY JOIN` copies the row's other
/// columns it still needs for each record, and one row's sets would
/// multiply each other's size (with arrays, a batch of 20 000 events ran
/// out of memory on ClickHouse 18.16).
///
/// Each set begins with the INSERT's batch marker
/// ([`crate::batches::Marker`]), so that every table a view fills from it
/// gets the marker in the same block as the batch's rows.
#[derive(Debug)]
pub struct Writer<'c> {
    sql: String,
    rows: usize,
    carried: Carried<'c>,
    /// The first rows, written once it is known which sets each carries.
    first: Vec<(String, u64, Option<Event>)>,
    /// Made with the first row (its `written_ms`).
    marker: Option<Marker>,
    /// The campaign's summed ranges (the marker's).
    ranges: Vec<figures::Days>,
}

/// Empties the carried sets ([`carried::SETS`]) of every ledger row written
/// so far (a part written meanwhile keeps its own until the next call).
/// The figures and journeys are untouched: their views read the sets when
/// the rows were inserted, never again. Run by
/// erasure and retention (so no set keeps what they remove) and by
/// `ensemble-processor compact` (so the sets of a day at most take room).
/// A mutation or merge under way can write a part from before the call and
/// bring sets back: erasure and retention empty them once their deletes
/// are done, and check.
pub async fn clear_carried(
    client: &clickhouse::Client,
    ddl_target: impl Fn(&str) -> String,
) -> Result<(), clickhouse::error::Error> {
    let clauses: Vec<String> = carried::names()
        .map(|c| format!("CLEAR COLUMN `{c}` IN PARTITION tuple()"))
        .collect();
    client
        .query(&format!(
            "ALTER TABLE {} {}",
            ddl_target("ledger"),
            clauses.join(", ")
        ))
        .execute()
        .await
}

/// A row of the analysts' journeys (ensemble-model's `journeys`) with its visitor.
pub type JourneyRow<'a> = (&'a str, &'a journeys::Key<'a>, &'a journeys::Counts);

/// Every visitor's journeys rows of `sets` of (visitor, rows).
pub fn journey_rows<'a, V: AsRef<str> + 'a>(
    sets: impl IntoIterator<Item = &'a (V, journeys::Rows<'a>)>,
) -> Vec<JourneyRow<'a>> {
    sets.into_iter()
        .flat_map(|(v, rows)| rows.iter().map(move |(k, c)| (v.as_ref(), k, c)))
        .collect()
}

type FigureColumn = fn(&mut String, &FigureRow<'_>);

/// Each of [`carried::FIGURE_COLUMNS`] of a figures row (in its order: a test
/// checks the two against each other).
const FIGURE_FIELDS: [FigureColumn; 25] = [
    |o, f| push_text(o, f.figure.name()),
    |o, f| push_number(o, f.bots),
    |o, f| push_text(o, f.device_filter),
    |o, f| push_text(o, f.placement_filter),
    |o, f| push_date(o, f.first_day),
    |o, f| push_date(o, f.last_day),
    |o, f| push_text(o, f.phase),
    |o, f| push_text(o, f.channel),
    |o, f| push_text(o, f.placement),
    |o, f| push_text(o, f.event_type),
    |o, f| push_text(o, f.action),
    |o, f| push_text(o, f.step),
    |o, f| push_text(o, f.model),
    |o, f| push_text(o, f.conversion_phase),
    |o, f| push_text(o, f.other_channel),
    |o, f| push_text(o, f.device_class),
    |o, f| push_text(o, f.os_family),
    |o, f| push_number(o, f.frequency),
    |o, f| push_number(o, f.hour),
    |o, f| push_number(o, f.local_hour),
    |o, f| push_date(o, f.day),
    |o, f| push_text(o, f.path),
    |o, f| push_number(o, f.delay_seconds),
    |o, f| push_number(o, f.value.n),
    |o, f| push_float(o, f.value.credit),
];

type JourneyColumn = fn(&mut String, &JourneyRow<'_>);

/// Each of [`carried::JOURNEY_COLUMNS`] of a journeys row.
const JOURNEY_FIELDS: [JourneyColumn; 17] = [
    |o, (v, _, _)| push_text(o, v),
    |o, (_, k, _)| push_text(o, k.kind.name()),
    |o, (_, k, _)| push_number(o, k.ms),
    |o, (_, k, _)| push_number(o, k.event_id),
    |o, (_, k, _)| push_date(o, k.day),
    |o, (_, k, _)| push_text(o, k.phase),
    |o, (_, k, _)| push_text(o, k.channel),
    |o, (_, k, _)| push_text(o, k.placement),
    |o, (_, k, _)| push_text(o, k.device),
    |o, (_, k, _)| push_text(o, k.contact),
    |o, (_, k, _)| push_text(o, &k.credits),
    |o, (_, _, c)| push_number(o, c.n),
    |o, (_, _, c)| push_number(o, c.events),
    |o, (_, _, c)| push_number(o, c.exposures),
    |o, (_, _, c)| push_number(o, c.scans),
    |o, (_, _, c)| push_number(o, c.visits),
    |o, (_, _, c)| push_number(o, c.signups),
];

type DelayColumn = fn(&mut String, &DelayRow<'_>);

/// Each of [`carried::DELAY_COLUMNS`] of a delays row.
const DELAY_FIELDS: [DelayColumn; 9] = [
    |o, d| push_date(o, d.first_day),
    |o, d| push_date(o, d.last_day),
    |o, d| push_number(o, d.bots),
    |o, d| push_text(o, d.device_filter),
    |o, d| push_text(o, d.placement_filter),
    |o, d| push_number(o, d.rounding),
    |o, d| push_text(o, d.path),
    |o, d| push_number(o, d.delay_seconds),
    |o, d| push_number(o, d.n),
];

impl<'c> Writer<'c> {
    /// A writer whose rows carry `carried` (and a batch marker dated on
    /// `campaign`'s first summed range, so that the figures summed by
    /// range get it too).
    pub fn new(campaign: &Campaign, carried: Carried<'c>) -> Self {
        Self {
            sql: String::new(),
            rows: 0,
            carried,
            first: Vec::new(),
            marker: None,
            ranges: figures::summed_ranges(campaign),
        }
    }

    /// [`Writer::new`] with room for about `rows` rows and what `carried`
    /// holds, reserved at once: grown by doubling, a batch's text (12-18 MB
    /// for 20 000 live events) held up to twice its size, and both copies
    /// while it grew.
    pub fn for_rows(campaign: &Campaign, carried: Carried<'c>, rows: usize) -> Self {
        let room = rows * 300
            + carried.journey.len() * 300
            + (carried.change.len() + carried.ranged.len()) * 360
            + carried.delayed.len() * 150;
        let mut w = Self::new(campaign, carried);
        w.sql.reserve(room);
        w
    }

    /// One row: an event, or with `event = None` a tombstone.
    pub fn push(&mut self, visitor: &str, written_ms: u64, event: Option<&Event>) {
        if self.rows == 0 {
            self.marker = Some(Marker::new(written_ms, &self.ranges));
        }
        self.rows += 1;
        if self.rows <= SETS.len() {
            self.first
                .push((visitor.to_owned(), written_ms, event.cloned()));
            if self.rows == SETS.len() {
                self.write_first();
            }
        } else {
            self.write(visitor, written_ms, event, 0..0);
        }
    }

    /// Writes the first rows, each carrying its set, the last the rest.
    fn write_first(&mut self) {
        let first = std::mem::take(&mut self.first);
        let last = first.len().saturating_sub(1);
        for (i, (v, w, e)) in first.iter().enumerate() {
            let sets = if i == last { i..SETS.len() } else { i..i + 1 };
            self.write(v, *w, e.as_ref(), sets);
        }
    }

    /// One row, carrying the sets `sets` (indices into [`SETS`], each
    /// begun by the marker), the others empty.
    fn write(
        &mut self,
        visitor: &str,
        written_ms: u64,
        event: Option<&Event>,
        sets: std::ops::Range<usize>,
    ) {
        let out = &mut self.sql;
        push_tsv(out, visitor);
        let _ = write!(out, "\t{written_ms}\t{}\t", u8::from(event.is_none()));
        match event {
            Some(e) => {
                let _ = write!(out, "{}\t{}", e.event_id, e.ms);
                for s in [
                    &e.event_type,
                    &e.action,
                    &e.channel,
                    &e.placement,
                    &e.phase,
                    &e.device,
                ] {
                    out.push('\t');
                    push_tsv(out, s);
                }
                let _ = write!(out, "\t{}\t", u8::from(e.bot));
                push_tsv(out, &e.contact);
                out.push('\t');
                push_tsv(out, &e.os);
            }
            None => out.push_str("00000000-0000-0000-0000-000000000000\t0\t\t\t\t\t\t\t0\t\t"),
        }
        let c = self.carried;
        for i in 0..SETS.len() {
            out.push('\t');
            if !sets.contains(&i) {
                continue;
            }
            // The marker's records first (the head row is found by it).
            let m = self.marker.as_ref();
            match i {
                0 => {
                    let markers: Vec<_> = m.map(Marker::change_values).into_iter().collect();
                    push_set(out, &markers, c.change, &FIGURE_FIELDS);
                }
                1 => {
                    let markers: Vec<_> = m.map(Marker::journey_values).into_iter().collect();
                    push_set(out, &markers, c.journey, &JOURNEY_FIELDS);
                }
                2 => {
                    let markers = m.map(Marker::ranged_values).unwrap_or_default();
                    push_set(out, &markers, c.ranged, &FIGURE_FIELDS);
                }
                _ => {
                    let markers = m.map(Marker::delayed_values).unwrap_or_default();
                    push_set(out, &markers, c.delayed, &DELAY_FIELDS);
                }
            }
        }
        out.push('\n');
    }

    /// Sends the rows as one INSERT (nothing if there are none).
    pub async fn flush(self, client: &clickhouse::Client) -> Result<(), clickhouse::error::Error> {
        if let Some(insert) = self.into_insert() {
            insert.execute(client).await?;
        }
        Ok(())
    }

    /// The INSERT of the rows (`None` if there are none).
    pub fn into_insert(mut self) -> Option<Insert> {
        if !self.first.is_empty() {
            self.write_first();
        }
        let marker = self.marker.take()?;
        // Held until the INSERT is done, while the next batch is computed
        // (`processor/src/chain.rs`): not with the room doubling left.
        self.sql.shrink_to_fit();
        (self.rows > 0).then_some(Insert {
            rows: bytes::Bytes::from(self.sql),
            marker,
        })
    }
}

/// A ledger INSERT ready to send, and the marker its rows carry.
#[derive(Debug)]
pub struct Insert {
    /// The rows, TabSeparated ([`INSERT_HEAD`]'s columns).
    rows: bytes::Bytes,
    pub marker: Marker,
}

impl Insert {
    /// Sends it under the marker's query id (so that a repair can tell
    /// whether it is still running on the server), as one body: the
    /// statement in the URL, the rows (compressed as the client
    /// compresses) sent as they are. Sent as a query instead, the client
    /// copied a batch's rows twice over (tens of MB at the processor's
    /// peak).
    ///
    /// In **one** `send`, so one compressed block with its checksum: a
    /// body cut short (the processor killed while sending) is then refused
    /// whole. ClickHouse 18.16 takes a body that ends after a complete
    /// block and at a row's end as the whole INSERT, and answers 200: sent
    /// in two blocks, a cut between them landed the first half of a batch
    /// (its head row with all the batch's change) and its retry counted
    /// the rest twice (`a_ledger_insert_cut_on_its_way_lands_whole_or_not_at_all`
    /// in `tests/tests/clickhouse.rs`).
    pub async fn execute(
        &self,
        client: &clickhouse::Client,
    ) -> Result<(), clickhouse::error::Error> {
        let mut insert = client
            .insert_formatted_with(INSERT_HEAD.as_str())
            .with_setting("query_id", self.marker.query_id());
        insert.send(self.rows.clone()).await?;
        insert.end().await
    }
}

pub(crate) fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis().max(0)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use carried::{FIELD, FIGURE_COLUMNS, JOURNEY_COLUMNS, RECORD};
    use uuid::Uuid;

    #[test]
    fn the_insert_writes_the_event_columns_then_each_set() {
        let columns = INSERT_HEAD
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(list, _)| list)
            .unwrap_or_default();
        let columns: Vec<&str> = columns.split(',').map(str::trim).collect();
        assert_eq!(columns[..14], EVENT_COLUMNS);
        assert_eq!(columns[14..], ["change", "journey", "ranged", "delayed"]);
    }

    /// A set's records, each as its fields.
    fn records(set: &str) -> Vec<Vec<&str>> {
        set.split(RECORD)
            .filter(|r| !r.is_empty())
            .map(|r| r.split(FIELD).collect())
            .collect()
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn the_rows_carrying_the_sets_begin_them_with_the_batch_marker() {
        let campaign = Campaign::from_toml(include_str!("../../../deploy/campaign.toml")).unwrap();
        let e = |i: u128| Event {
            event_id: Uuid::from_u128(i),
            ms: 1_737_190_800_000,
            event_type: "page_view".into(),
            action: Default::default(),
            channel: "metro".into(),
            placement: Default::default(),
            phase: "p1-lancement".into(),
            device: "mobile".into(),
            os: "iOS".into(),
            bot: false,
            contact: Default::default(),
        };
        let mut w = Writer::new(&campaign, Carried::default());
        for (i, v) in ["v_a", "v_b", "v_c", "v_d", "v_e"].into_iter().enumerate() {
            w.push(v, 1_737_190_900_123, Some(&e(i as u128)));
        }
        let insert = w.into_insert().unwrap();
        let key = insert.marker.key.clone();
        assert!(key.starts_with("batch-1737190900123-"), "{key}");
        let text = std::str::from_utf8(&insert.rows).unwrap();
        let rows: Vec<Vec<&str>> = text.lines().map(|r| r.split('\t').collect()).collect();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0][0], "v_a", "rows in the order pushed");
        assert_eq!(rows[4][0], "v_e");
        // 14 event columns, then the change, journey, ranged and delayed
        // sets: each of the first four rows carries one.
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.len(), 18);
            for a in 0..4 {
                assert_eq!(row[14 + a].is_empty(), a != i, "row {i}, set {a}");
            }
        }
        let field = |name: &str| FIGURE_COLUMNS.iter().position(|c| *c == name).unwrap();
        let change = records(rows[0][14]);
        assert_eq!(change.len(), 1, "the marker only");
        assert_eq!(change[0].len(), FIGURE_COLUMNS.len());
        assert_eq!(change[0][field("figure")], "batch");
        assert_eq!(change[0][field("path")], key, "change.path: the key");
        assert_eq!(
            change[0][field("first_day")],
            "2025-01-17",
            "on the campaign's first day"
        );
        let journey = records(rows[1][15]);
        assert_eq!(journey.len(), 1);
        assert_eq!(journey[0].len(), JOURNEY_COLUMNS.len());
        assert_eq!(
            journey[0][..2],
            [key.as_str(), "batch"],
            "the key, the marker"
        );
        // On each summed range its day fits (the campaign, the first phase),
        // as a figures row of that day would be.
        let ranged = records(rows[2][16]);
        assert_eq!(ranged.len(), 2);
        for (r, last) in ranged.iter().zip(["2025-02-07", "2025-03-16"]) {
            assert_eq!(r[field("figure")], "batch");
            assert_eq!(r[field("path")], key);
            assert_eq!(r[field("first_day")], "2025-01-17");
            assert_eq!(
                r[field("last_day")],
                last,
                "the first phase's, the campaign's"
            );
        }
        let delayed = records(rows[3][17]);
        assert_eq!(delayed.len(), 2);
        for r in &delayed {
            assert_eq!(r.len(), 9);
            assert_eq!(r[5], "0", "rounding: the marker's");
            assert_eq!(r[6], key, "path: the key");
        }
        assert_eq!(insert.marker.query_id(), format!("ensemble-ledger-{key}"));

        // Fewer rows than sets: the last row carries the rest.
        let mut w = Writer::new(&campaign, Carried::default());
        for (i, v) in ["v_a", "v_b"].into_iter().enumerate() {
            w.push(v, 1_737_190_900_123, Some(&e(i as u128)));
        }
        let insert = w.into_insert().unwrap();
        let text = std::str::from_utf8(&insert.rows).unwrap();
        let rows: Vec<Vec<&str>> = text.lines().map(|r| r.split('\t').collect()).collect();
        assert_eq!(rows.len(), 2);
        assert!(!rows[0][14].is_empty() && rows[0][15..].iter().all(|x| x.is_empty()));
        assert!(rows[1][14].is_empty() && rows[1][15..].iter().all(|x| !x.is_empty()));
    }

    #[test]
    fn each_figures_column_is_written_from_its_field() {
        use ensemble_model::figures::{Figure, Value};
        let row = FigureRow {
            figure: Figure::Events,
            bots: 2,
            device_filter: "device_filter",
            placement_filter: "placement_filter",
            first_day: 1,
            last_day: 2,
            phase: "phase",
            channel: "channel",
            placement: "placement",
            event_type: "event_type",
            action: "action",
            step: "step",
            model: "model",
            conversion_phase: "conversion_phase",
            other_channel: "other_channel",
            device_class: "device_class",
            os_family: "os_family",
            frequency: 3,
            hour: 4,
            local_hour: 8,
            day: 3,
            path: "path",
            delay_seconds: 5,
            value: Value { n: 6, credit: 7.5 },
        };
        assert_eq!(FIGURE_FIELDS.len(), FIGURE_COLUMNS.len());
        for (field, name) in FIGURE_FIELDS.iter().zip(FIGURE_COLUMNS.iter()) {
            let mut out = String::new();
            field(&mut out, &row);
            let want = match *name {
                "figure" => "events".to_owned(),
                "bots" => "2".into(),
                "first_day" => "1970-01-02".into(),
                "last_day" => "1970-01-03".into(),
                "frequency" => "3".into(),
                "hour" => "4".into(),
                "local_hour" => "8".into(),
                "day" => "1970-01-04".into(),
                "delay_seconds" => "5".into(),
                "n" => "6".into(),
                "credit" => "7.5".into(),
                text => text.to_owned(),
            };
            assert_eq!(out, want, "{name}");
        }
        assert_eq!(JOURNEY_FIELDS.len(), carried::JOURNEY_COLUMNS.len());
        assert_eq!(DELAY_FIELDS.len(), carried::DELAY_COLUMNS.len());
    }
}
