//! The ledger INSERT: a batch's rows, the first carrying the figures'
//! change and the second the journeys' (read by the materialised views
//! from the INSERT itself), each array ending with the batch marker.

use std::fmt::Write as _;

use chrono::Utc;

use crate::batches::Marker;
use crate::sql::{push_quoted, push_tsv};
use crate::Campaign;
use ensemble_model::figures::{self, Event, Row as FigureRow};
use ensemble_model::journeys;

/// Ledger rows being put together for one INSERT, carrying a change to
/// the figures and to the journeys: the figures' change on the first row,
/// the journeys' on the second (on the first when there is only one).
/// Not both on one row: a materialised view's `ARRAY JOIN change` copies
/// every other column of the row for each element — on ClickHouse 18.16
/// the journey arrays too, whose size then multiplies the change's (a
/// batch of 20 000 events ran out of memory).
///
/// Each array also carries the INSERT's batch marker
/// ([`crate::batches::Marker`]), so that every table a view fills from it
/// gets the marker in the same block as the batch's rows.
#[derive(Debug)]
pub struct Writer<'c> {
    sql: String,
    rows: usize,
    change: &'c [FigureRow<'c>],
    journey: &'c [JourneyRow<'c>],
    /// The first row, written once it is known whether it is the only one.
    first: Option<(String, u64, Option<Event>)>,
    /// Made with the first row (its `written_ms`).
    marker: Option<Marker>,
    marker_day: figures::Day,
}

/// TabSeparated, not VALUES: ClickHouse 18.16 parses VALUES with arrays
/// several times slower, and was the bottleneck of a rebuild.
const INSERT_HEAD: &str = "INSERT INTO ledger (visitor_id, written_ms, tombstone, event_id, ms, ev_type, \
    ev_action, ev_channel, ev_placement, ev_phase, ev_device, ev_bot, ev_contact, ev_os, change.figure, change.bots, \
    change.device_filter, change.placement_filter, change.first_day, change.last_day, change.phase, \
    change.channel, change.placement, change.event_type, change.action, change.step, change.model, \
    change.conversion_phase, change.other_channel, change.device_class, change.os_family, change.contacts, change.hour, change.day, change.seconds, \
    change.n, change.credit, journey.visitor_id, journey.kind, journey.ms, journey.event_id, journey.day, \
    journey.phase, journey.channel, journey.placement, journey.device, journey.contact, journey.model, \
    journey.conversion_phase, journey.n, journey.n_events, journey.n_exposures, journey.n_scans, \
    journey.n_visits, journey.n_signups, journey.credit) FORMAT TabSeparated\n";

/// The arrays a ledger INSERT carries to its materialised views (the
/// figures' change, the journeys' rows), in `INSERT_HEAD`'s order. The
/// views read them from the INSERT itself; kept in the table they are
/// dead weight (about three quarters of its bytes) and, in the journeys'
/// arrays, the visitor ids and contacts of other visitors of the batch,
/// which an erasure of one of them must not leave behind:
/// [`clear_carried`] empties them.
pub const CARRIED: [&str; 42] = [
    "change.figure",
    "change.bots",
    "change.device_filter",
    "change.placement_filter",
    "change.first_day",
    "change.last_day",
    "change.phase",
    "change.channel",
    "change.placement",
    "change.event_type",
    "change.action",
    "change.step",
    "change.model",
    "change.conversion_phase",
    "change.other_channel",
    "change.device_class",
    "change.os_family",
    "change.contacts",
    "change.hour",
    "change.day",
    "change.seconds",
    "change.n",
    "change.credit",
    "journey.visitor_id",
    "journey.kind",
    "journey.ms",
    "journey.event_id",
    "journey.day",
    "journey.phase",
    "journey.channel",
    "journey.placement",
    "journey.device",
    "journey.contact",
    "journey.model",
    "journey.conversion_phase",
    "journey.n",
    "journey.n_events",
    "journey.n_exposures",
    "journey.n_scans",
    "journey.n_visits",
    "journey.n_signups",
    "journey.credit",
];

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
/// each of `items`, then the marker's element of that column; `[]` for
/// every column when the row carries no `items`.
fn push_arrays<T, F: Fn(&mut String, &T)>(
    out: &mut String,
    columns: &[F],
    items: Option<&[T]>,
    marker: Option<&[String]>,
) {
    for (c, column) in columns.iter().enumerate() {
        out.push_str("\t[");
        if let Some(items) = items {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                column(out, item);
            }
            if let Some(m) = marker.and_then(|m| m.get(c)) {
                if !items.is_empty() {
                    out.push(',');
                }
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

impl<'c> Writer<'c> {
    /// A writer whose rows carry `change` and `journey` (and a batch
    /// marker dated on `campaign`'s first summed day, so that the figures
    /// summed by range get it too).
    pub fn new(
        campaign: &Campaign,
        change: &'c [FigureRow<'c>],
        journey: &'c [JourneyRow<'c>],
    ) -> Self {
        Self {
            sql: String::new(),
            rows: 0,
            change,
            journey,
            first: None,
            marker: None,
            marker_day: crate::batches::marker_day(campaign),
        }
    }

    /// One row: an event, or with `event = None` a tombstone.
    pub fn push(&mut self, visitor: &str, written_ms: u64, event: Option<&Event>) {
        match self.rows {
            0 => {
                self.marker = Some(Marker::new(written_ms, self.marker_day));
                self.first = Some((visitor.to_owned(), written_ms, event.cloned()));
            }
            1 => {
                if let Some((v, w, e)) = self.first.take() {
                    self.write(&v, w, e.as_ref(), Some(self.change), None);
                }
                self.write(visitor, written_ms, event, None, Some(self.journey));
            }
            _ => self.write(visitor, written_ms, event, None, None),
        }
        self.rows += 1;
    }

    /// One row; `change` and `journey` are `Some` on the row that carries
    /// them (with the marker), `None` elsewhere (empty arrays).
    fn write(
        &mut self,
        visitor: &str,
        written_ms: u64,
        event: Option<&Event>,
        change: Option<&[FigureRow<'_>]>,
        journey: Option<&[JourneyRow<'_>]>,
    ) {
        // The marker's elements, on the rows that carry the arrays only.
        let change_marker = change.and(self.marker.as_ref()).map(Marker::change_values);
        let journey_marker = journey
            .and(self.marker.as_ref())
            .map(Marker::journey_values);
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
        type Column = fn(&mut String, &FigureRow<'_>);
        let columns: [Column; 23] = [
            |o, f| push_quoted(o, f.figure.name(), false),
            |o, f| {
                let _ = write!(o, "{}", f.bots);
            },
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
            |o, f| {
                let _ = write!(o, "{}", f.contacts);
            },
            |o, f| {
                let _ = write!(o, "{}", f.hour);
            },
            |o, f| push_date(o, f.day),
            |o, f| {
                let _ = write!(o, "{}", f.seconds);
            },
            |o, f| {
                let _ = write!(o, "{}", f.value.n);
            },
            |o, f| {
                let _ = write!(o, "{:?}", f.value.credit);
            },
        ];
        push_arrays(
            out,
            &columns,
            change,
            change_marker.as_ref().map(|m| m.as_slice()),
        );
        type JourneyColumn = fn(&mut String, &JourneyRow<'_>);
        let columns: [JourneyColumn; 19] = [
            |o, (v, _, _)| push_quoted(o, v, false),
            |o, (_, k, _)| push_quoted(o, k.kind.name(), false),
            |o, (_, k, _)| {
                let _ = write!(o, "{}", k.ms);
            },
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
            |o, (_, _, c)| {
                let _ = write!(o, "{}", c.n);
            },
            |o, (_, _, c)| {
                let _ = write!(o, "{}", c.events);
            },
            |o, (_, _, c)| {
                let _ = write!(o, "{}", c.exposures);
            },
            |o, (_, _, c)| {
                let _ = write!(o, "{}", c.scans);
            },
            |o, (_, _, c)| {
                let _ = write!(o, "{}", c.visits);
            },
            |o, (_, _, c)| {
                let _ = write!(o, "{}", c.signups);
            },
            |o, (_, _, c)| {
                let _ = write!(o, "{:?}", c.credit);
            },
        ];
        push_arrays(
            out,
            &columns,
            journey,
            journey_marker.as_ref().map(|m| m.as_slice()),
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
        if let Some((v, w, e)) = self.first.take() {
            self.write(&v, w, e.as_ref(), Some(self.change), Some(self.journey));
        }
        let marker = self.marker.take()?;
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
    pub async fn execute(
        &self,
        client: &clickhouse::Client,
    ) -> Result<(), clickhouse::error::Error> {
        let mut insert = client
            .insert_formatted_with(INSERT_HEAD.trim_end())
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
        assert_eq!(nested, CARRIED);
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
        let mut w = Writer::new(&campaign, &[], &[]);
        for (i, v) in ["v_a", "v_b", "v_c"].into_iter().enumerate() {
            w.push(v, 1_737_190_900_123, Some(&e(i as u128)));
        }
        let insert = w.into_insert().unwrap();
        let key = insert.marker.key.clone();
        assert!(key.starts_with("batch-1737190900123-"), "{key}");
        let text = std::str::from_utf8(&insert.rows).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 3);
        let fields = |row: &str| row.split('\t').map(str::to_owned).collect::<Vec<_>>();
        let (first, second, third) = (fields(rows[0]), fields(rows[1]), fields(rows[2]));
        // 14 event columns, 23 change arrays, 19 journey arrays.
        assert_eq!(first.len(), 14 + 23 + 19);
        assert_eq!(first[14], "['batch']", "change.figure: the marker only");
        assert_eq!(
            first[14 + 7],
            format!("['{key}']"),
            "change.channel: the key"
        );
        assert_eq!(
            first[14 + 4],
            "['2025-01-17']",
            "on the campaign's first day"
        );
        assert!(
            first[37..].iter().all(|a| a == "[]"),
            "no journey on the first row"
        );
        assert!(
            second[14..37].iter().all(|a| a == "[]"),
            "no change on the second"
        );
        assert_eq!(
            second[37],
            format!("['{key}']"),
            "journey.visitor_id: the key"
        );
        assert_eq!(second[38], "['batch']");
        assert!(
            third[14..].iter().all(|a| a == "[]"),
            "nothing on the others"
        );
        assert_eq!(insert.marker.query_id(), format!("ensemble-ledger-{key}"));
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
