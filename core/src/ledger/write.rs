//! The ledger INSERT: a batch's rows, carrying (read by the materialised
//! views from the INSERT itself) the figures' change, the journeys' change,
//! and the change summed by range and the paths' delays by rounding (for
//! the summed tables), each array ending with the batch marker.

use std::fmt::Write as _;
use std::sync::LazyLock;

use chrono::Utc;

use crate::batches::Marker;
use crate::sql::{push_quoted, push_tsv};
use crate::Campaign;
use ensemble_model::figures::{self, DelayRow, Event, Row as FigureRow};
use ensemble_model::journeys;

/// The columns of a figures row, as `change` and `ranged` carry them and
/// [`Marker::change_values`] lists its own: the model's catalogue
/// (`figures::COLUMNS`), in its order.
pub static FIGURE_COLUMNS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| figures::column_names().collect());

/// The columns of an analysts' journeys row (`journey`).
pub const JOURNEY_COLUMNS: [&str; 19] = [
    "visitor_id",
    "kind",
    "ms",
    "event_id",
    "day",
    "phase",
    "channel",
    "placement",
    "device",
    "contact",
    "model",
    "conversion_phase",
    "n",
    "n_events",
    "n_exposures",
    "n_scans",
    "n_visits",
    "n_signups",
    "credit",
];

/// The columns of a paths' delays row (`delayed`, `paths_delays_ranges`).
pub const DELAY_COLUMNS: [&str; 9] = [
    "first_day",
    "last_day",
    "bots",
    "device_filter",
    "placement_filter",
    "rounding",
    "path",
    "delay_seconds",
    "n",
];

/// The arrays a ledger INSERT carries, in the order of its columns and of
/// the rows carrying them: the figures' change (on the batch's head row,
/// which `crate::batches` finds), the journeys', the change summed by
/// range, the paths' delays by range and rounding.
pub static ARRAYS: LazyLock<[(&str, &[&str]); 4]> = LazyLock::new(|| {
    [
        ("change", FIGURE_COLUMNS.as_slice()),
        ("journey", &JOURNEY_COLUMNS),
        ("ranged", FIGURE_COLUMNS.as_slice()),
        ("delayed", &DELAY_COLUMNS),
    ]
});

/// The event columns of a ledger row, before the arrays.
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

/// The arrays' columns (`change.figure`, …), in [`ARRAYS`]' order. The
/// views read them from the INSERT itself; kept in the table they are
/// dead weight (most of its bytes) and, in the journeys' arrays, the
/// visitor ids of other visitors of the batch, which an erasure of one of
/// them must not leave behind: [`clear_carried`] empties them.
pub static CARRIED: LazyLock<Vec<String>> = LazyLock::new(|| {
    ARRAYS
        .iter()
        .flat_map(|(array, columns)| columns.iter().map(move |c| format!("{array}.{c}")))
        .collect()
});

/// TabSeparated, not VALUES: ClickHouse 18.16 parses VALUES with arrays
/// several times slower, and was the bottleneck of a rebuild.
static INSERT_HEAD: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<&str> = EVENT_COLUMNS
        .iter()
        .copied()
        .chain(CARRIED.iter().map(String::as_str))
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
/// one array per row, the head row (the first) the figures' change, the
/// second the journeys', the third the summed change, the fourth the
/// delays; a batch of fewer rows has its last row carry the rest. Not all
/// on one row: a materialised view's `ARRAY JOIN change` copies every
/// other column of the row for each element — on ClickHouse 18.16 the
/// other arrays too, whose size then multiplies the change's (a batch of
/// 20 000 events ran out of memory).
///
/// Each array also carries the INSERT's batch marker
/// ([`crate::batches::Marker`]), so that every table a view fills from it
/// gets the marker in the same block as the batch's rows.
#[derive(Debug)]
pub struct Writer<'c> {
    sql: String,
    rows: usize,
    carried: Carried<'c>,
    /// The first rows, written once it is known which arrays each carries.
    first: Vec<(String, u64, Option<Event>)>,
    /// Made with the first row (its `written_ms`).
    marker: Option<Marker>,
    /// The campaign's summed ranges (the marker's).
    ranges: Vec<figures::Days>,
}

/// Empties the [`CARRIED`] arrays of every ledger row written so far (their
/// values read as defaults; a part written meanwhile keeps its own until
/// the next call). The figures and journeys are untouched: their views
/// read the arrays when the rows were inserted, never again. Run by
/// erasure and retention (so no array keeps what they remove) and by
/// `ensemble-processor compact` (so the arrays of a day at most take room).
/// A mutation or merge under way can write a part from before the call and
/// bring arrays back: erasure and retention empty them once their deletes
/// are done, and check.
pub async fn clear_carried(
    client: &clickhouse::Client,
    ddl_target: impl Fn(&str) -> String,
) -> Result<(), clickhouse::error::Error> {
    let clauses: Vec<String> = CARRIED
        .iter()
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

/// One TabSeparated array field per column of `columns`: the column of
/// each of `items`, then each marker element's value of that column (the
/// markers' elements each list every column); `[]` for every column when
/// the row carries no `items`.
fn push_arrays<T, F: Fn(&mut String, &T)>(
    out: &mut String,
    columns: &[F],
    items: Option<&[T]>,
    markers: &[Vec<String>],
) {
    for (c, column) in columns.iter().enumerate() {
        out.push_str("\t[");
        if let Some(items) = items {
            let mut first = true;
            for item in items {
                if !first {
                    out.push(',');
                }
                first = false;
                column(out, item);
            }
            for m in markers.iter().filter_map(|m| m.get(c)) {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(m);
            }
        }
        out.push(']');
    }
}

/// A `Date` array element: `'YYYY-MM-DD'`.
fn push_date(out: &mut String, day: figures::Day) {
    use chrono::Datelike;
    // Not `format("%Y-%m-%d")`: that parses its pattern on every call, three
    // times per figure row (a tenth of a large batch's formatting).
    let d = figures::date_of(day);
    let _ = write!(out, "'{:04}-{:02}-{:02}'", d.year(), d.month(), d.day());
}

/// A number as an array element.
fn push_number(out: &mut String, n: impl std::fmt::Display) {
    let _ = write!(out, "{n}");
}

type FigureColumn = fn(&mut String, &FigureRow<'_>);

/// Each of [`FIGURE_COLUMNS`] of a figures row (in its order: a test
/// checks the two against each other).
const FIGURE_FIELDS: [FigureColumn; 25] = [
    |o, f| push_quoted(o, f.figure.name(), false),
    |o, f| push_number(o, f.bots),
    |o, f| push_quoted(o, f.device_filter, false),
    |o, f| push_quoted(o, f.placement_filter, false),
    |o, f| push_date(o, f.first_day),
    |o, f| push_date(o, f.last_day),
    |o, f| push_quoted(o, f.phase, false),
    |o, f| push_quoted(o, f.channel, false),
    |o, f| push_quoted(o, f.placement, false),
    |o, f| push_quoted(o, f.event_type, false),
    |o, f| push_quoted(o, f.action, false),
    |o, f| push_quoted(o, f.step, false),
    |o, f| push_quoted(o, f.model, false),
    |o, f| push_quoted(o, f.conversion_phase, false),
    |o, f| push_quoted(o, f.other_channel, false),
    |o, f| push_quoted(o, f.device_class, false),
    |o, f| push_quoted(o, f.os_family, false),
    |o, f| push_number(o, f.frequency),
    |o, f| push_number(o, f.hour),
    |o, f| push_number(o, f.local_hour),
    |o, f| push_date(o, f.day),
    |o, f| push_quoted(o, f.path, false),
    |o, f| push_number(o, f.delay_seconds),
    |o, f| push_number(o, f.value.n),
    |o, f| {
        let _ = write!(o, "{:?}", f.value.credit);
    },
];

type JourneyColumn = fn(&mut String, &JourneyRow<'_>);

/// Each of [`JOURNEY_COLUMNS`] of a journeys row.
const JOURNEY_FIELDS: [JourneyColumn; 19] = [
    |o, (v, _, _)| push_quoted(o, v, false),
    |o, (_, k, _)| push_quoted(o, k.kind.name(), false),
    |o, (_, k, _)| push_number(o, k.ms),
    |o, (_, k, _)| {
        let _ = write!(o, "'{}'", k.event_id);
    },
    |o, (_, k, _)| push_date(o, k.day),
    |o, (_, k, _)| push_quoted(o, k.phase, false),
    |o, (_, k, _)| push_quoted(o, k.channel, false),
    |o, (_, k, _)| push_quoted(o, k.placement, false),
    |o, (_, k, _)| push_quoted(o, k.device, false),
    |o, (_, k, _)| push_quoted(o, k.contact, false),
    |o, (_, k, _)| push_quoted(o, k.model, false),
    |o, (_, k, _)| push_quoted(o, k.conversion_phase, false),
    |o, (_, _, c)| push_number(o, c.n),
    |o, (_, _, c)| push_number(o, c.events),
    |o, (_, _, c)| push_number(o, c.exposures),
    |o, (_, _, c)| push_number(o, c.scans),
    |o, (_, _, c)| push_number(o, c.visits),
    |o, (_, _, c)| push_number(o, c.signups),
    |o, (_, _, c)| {
        let _ = write!(o, "{:?}", c.credit);
    },
];

type DelayColumn = fn(&mut String, &DelayRow<'_>);

/// Each of [`DELAY_COLUMNS`] of a delays row.
const DELAY_FIELDS: [DelayColumn; 9] = [
    |o, d| push_date(o, d.first_day),
    |o, d| push_date(o, d.last_day),
    |o, d| push_number(o, d.bots),
    |o, d| push_quoted(o, d.device_filter, false),
    |o, d| push_quoted(o, d.placement_filter, false),
    |o, d| push_number(o, d.rounding),
    |o, d| push_quoted(o, d.path, false),
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
        if self.rows <= ARRAYS.len() {
            self.first
                .push((visitor.to_owned(), written_ms, event.cloned()));
            if self.rows == ARRAYS.len() {
                self.write_first();
            }
        } else {
            self.write(visitor, written_ms, event, 0..0);
        }
    }

    /// Writes the first rows, each carrying its array, the last the rest.
    fn write_first(&mut self) {
        let first = std::mem::take(&mut self.first);
        let last = first.len().saturating_sub(1);
        for (i, (v, w, e)) in first.iter().enumerate() {
            let arrays = if i == last { i..ARRAYS.len() } else { i..i + 1 };
            self.write(v, *w, e.as_ref(), arrays);
        }
    }

    /// One row, carrying the arrays `arrays` (indices into [`ARRAYS`],
    /// each with the marker), the others empty.
    fn write(
        &mut self,
        visitor: &str,
        written_ms: u64,
        event: Option<&Event>,
        arrays: std::ops::Range<usize>,
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
        // The marker's elements, on the rows that carry the arrays only.
        let c = self.carried;
        let markers = |i: usize| match self.marker.as_ref().filter(|_| arrays.contains(&i)) {
            None => Vec::new(),
            Some(m) => match i {
                0 => vec![m.change_values()],
                1 => vec![m.journey_values()],
                2 => m.ranged_values(),
                _ => m.delayed_values(),
            },
        };
        let carries = |i: usize| arrays.contains(&i);
        push_arrays(
            out,
            &FIGURE_FIELDS,
            carries(0).then_some(c.change),
            &markers(0),
        );
        push_arrays(
            out,
            &JOURNEY_FIELDS,
            carries(1).then_some(c.journey),
            &markers(1),
        );
        push_arrays(
            out,
            &FIGURE_FIELDS,
            carries(2).then_some(c.ranged),
            &markers(2),
        );
        push_arrays(
            out,
            &DELAY_FIELDS,
            carries(3).then_some(c.delayed),
            &markers(3),
        );
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
    use uuid::Uuid;

    #[test]
    fn the_carried_arrays_are_those_the_insert_writes() {
        let columns = INSERT_HEAD
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(list, _)| list)
            .unwrap_or_default();
        let nested: Vec<&str> = columns
            .split(',')
            .map(str::trim)
            .filter(|c| c.contains('.'))
            .collect();
        assert_eq!(nested, *CARRIED);
        assert_eq!(CARRIED.len(), 2 * FIGURE_COLUMNS.len() + 19 + 9);
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn the_rows_carrying_the_arrays_end_them_with_the_batch_marker() {
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
        // 14 event columns, then the change, journey (19), ranged and
        // delayed (9) arrays: each of the first four rows carries one.
        let f = FIGURE_COLUMNS.len();
        let (journey, ranged, delayed) = (14 + f, 14 + f + 19, 14 + 2 * f + 19);
        let spans = [
            (14, journey),
            (journey, ranged),
            (ranged, delayed),
            (delayed, delayed + 9),
        ];
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.len(), delayed + 9);
            for (a, (from, to)) in spans.iter().enumerate() {
                let carried = row[*from..*to].iter().all(|x| x != &"[]");
                assert_eq!(carried, a == i, "row {i}, array {}", ARRAYS[a].0);
            }
        }
        assert_eq!(rows[0][14], "['batch']", "change.figure: the marker only");
        let path = FIGURE_COLUMNS.iter().position(|c| *c == "path").unwrap();
        assert_eq!(
            rows[0][14 + path],
            format!("['{key}']"),
            "change.path: the key"
        );
        assert_eq!(
            rows[0][14 + 4],
            "['2025-01-17']",
            "on the campaign's first day"
        );
        assert_eq!(
            rows[1][journey],
            format!("['{key}']"),
            "journey.visitor_id: the key"
        );
        assert_eq!(rows[1][journey + 1], "['batch']");
        // On each summed range its day fits (the campaign, the first phase),
        // as a figures row of that day would be.
        assert_eq!(rows[2][ranged], "['batch','batch']", "ranged.figure");
        assert_eq!(
            rows[2][ranged + path],
            format!("['{key}','{key}']"),
            "ranged.path: the key"
        );
        assert_eq!(
            rows[2][ranged + 4],
            "['2025-01-17','2025-01-17']",
            "ranged.first_day"
        );
        assert_eq!(
            rows[2][ranged + 5],
            "['2025-02-07','2025-03-16']",
            "ranged.last_day: the first phase's, the campaign's"
        );
        assert_eq!(
            rows[3][delayed + 5],
            "[0,0]",
            "delayed.rounding: the marker's"
        );
        assert_eq!(
            rows[3][delayed + 6],
            format!("['{key}','{key}']"),
            "delayed.path: the key"
        );
        assert_eq!(insert.marker.query_id(), format!("ensemble-ledger-{key}"));

        // Fewer rows than arrays: the last row carries the rest.
        let mut w = Writer::new(&campaign, Carried::default());
        for (i, v) in ["v_a", "v_b"].into_iter().enumerate() {
            w.push(v, 1_737_190_900_123, Some(&e(i as u128)));
        }
        let insert = w.into_insert().unwrap();
        let text = std::str::from_utf8(&insert.rows).unwrap();
        let rows: Vec<Vec<&str>> = text.lines().map(|r| r.split('\t').collect()).collect();
        assert_eq!(rows.len(), 2);
        assert!(
            rows[0][14..journey].iter().all(|x| x != &"[]")
                && rows[0][journey..].iter().all(|x| x == &"[]")
        );
        assert!(
            rows[1][14..journey].iter().all(|x| x == &"[]")
                && rows[1][journey..].iter().all(|x| x != &"[]")
        );
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
                "figure" => "'events'".to_owned(),
                "bots" => "2".into(),
                "first_day" => "'1970-01-02'".into(),
                "last_day" => "'1970-01-03'".into(),
                "frequency" => "3".into(),
                "hour" => "4".into(),
                "local_hour" => "8".into(),
                "day" => "'1970-01-04'".into(),
                "delay_seconds" => "5".into(),
                "n" => "6".into(),
                "credit" => "7.5".into(),
                text => format!("'{text}'"),
            };
            assert_eq!(out, want, "{name}");
        }
    }

    #[test]
    fn dates_are_written_as_chrono_formats_them() {
        for day in [0, 1, 10_957, 20_089, 20_454, 2_932_896, u32::MAX] {
            let mut out = String::new();
            push_date(&mut out, day);
            let want = format!("'{}'", figures::date_of(day).format("%Y-%m-%d"));
            assert_eq!(out, want, "day {day}");
        }
    }
}
