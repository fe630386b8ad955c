//! The ledger side of [`ensemble_model::figures`]: reading visitors' accounted
//! events, writing a batch's new events with the change they make to the
//! figures (one INSERT into `ledger`, whose materialised view adds the
//! change to `figures`), the shared-contact list, the question-time
//! correction, and rebuilding everything from `events`.
//!
//! Writes are plain SQL (`INSERT … FORMAT TabSeparated` / `VALUES`), so they
//! run unchanged on every engine the tests use.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use chrono::Utc;
use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use crate::batches::Marker;
use crate::{Campaign, EventRow};
use ensemble_model::figures::{self, ChangeSets, Event, OwnedRow, Row as FigureRow, Strings};
use ensemble_model::journeys;

/// Visitor ids per read query: keeps the query text under ClickHouse's
/// 256 KiB `max_query_size`.
pub(crate) const IDS_PER_QUERY: usize = 3000;

/// A ledger row as read back (and as `rebuild` reads `events`).
#[derive(Debug, Row, Deserialize)]
struct LedgerRow {
    visitor_id: String,
    written_ms: u64,
    tombstone: u8,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    ms: u64,
    ev_type: String,
    ev_action: String,
    ev_channel: String,
    ev_placement: String,
    ev_phase: String,
    ev_device: String,
    ev_bot: u8,
    ev_contact: String,
    ev_os: String,
}

/// The columns of [`LedgerRow`], in order.
const LEDGER_COLUMNS: &str =
    "visitor_id, written_ms, tombstone, event_id, ms, ev_type, ev_action, \
    ev_channel, ev_placement, ev_phase, ev_device, ev_bot, ev_contact, ev_os";

impl LedgerRow {
    fn event(&self) -> Event {
        Event {
            event_id: self.event_id,
            ms: self.ms,
            event_type: self.ev_type.clone(),
            action: self.ev_action.clone(),
            channel: self.ev_channel.clone(),
            placement: self.ev_placement.clone(),
            phase: self.ev_phase.clone(),
            device: self.ev_device.clone(),
            os: self.ev_os.clone(),
            bot: self.ev_bot != 0,
            contact: self.ev_contact.clone(),
        }
    }
}

/// What the figures keep of a stored event.
pub fn ledger_event(r: &EventRow) -> Event {
    Event {
        event_id: r.event_id,
        ms: u64::try_from(r.ts.timestamp().max(0)).unwrap_or(0) * 1000 + u64::from(r.ts_ms),
        event_type: r.event_type.clone(),
        action: r.action.clone(),
        channel: r.channel.clone(),
        placement: r.placement.clone(),
        phase: r.phase.clone(),
        device: r.device_class.clone(),
        os: r.os_family.clone(),
        // Left out of the figures unless bots are asked for: bots and repeated scans.
        bot: r.is_bot != 0 || r.repeat_scan != 0,
        contact: r.contact_hash.clone(),
    }
}

/// A string literal: quotes and backslashes escaped; `?` written as `\x3F`
/// so the client never takes it for a placeholder.
pub(crate) fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_quoted(&mut out, s, true);
    out
}

/// A TabSeparated field: backslash, tab and line breaks escaped.
fn push_tsv(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// A quoted string: backslash, quote and line breaks escaped; `in_query`
/// also writes `?` as `\x3F` (text the client parses for placeholders);
/// without it, for an array field of TabSeparated data.
fn push_quoted(out: &mut String, s: &str, in_query: bool) {
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '?' if in_query => out.push_str("\\x3F"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

pub(crate) fn in_list(ids: &[&str]) -> String {
    ids.iter().map(|s| lit(s)).collect::<Vec<_>>().join(",")
}

/// The set of `ids` for `visitor_id IN …`: one string literal split by
/// ClickHouse when every id is well formed (`is_valid_visitor_id`: no
/// comma, quote or escape; what the processor admits), else a list of
/// literals. ClickHouse 18.16 parses a list of 3 000 literals in ~20 ms,
/// the split string in ~1 ms.
fn id_set(ids: &[&str]) -> String {
    if ids.iter().all(|s| crate::event::is_valid_visitor_id(s)) {
        format!("(SELECT arrayJoin(splitByChar(',', '{}')))", ids.join(","))
    } else {
        format!("({})", in_list(ids))
    }
}

/// The accounted events of `visitors` (rows written before a visitor's
/// last tombstone left out).
pub async fn read(
    client: &clickhouse::Client,
    visitors: &[&str],
) -> Result<HashMap<String, Vec<Event>>, clickhouse::error::Error> {
    Ok(without_written(read_written(client, visitors).await?))
}

/// The events of [`read_written`]'s answer, without their `written_ms`.
fn without_written(read: HashMap<String, Vec<(u64, Event)>>) -> HashMap<String, Vec<Event>> {
    read.into_iter()
        .map(|(v, events)| (v, events.into_iter().map(|(_, e)| e).collect()))
        .collect()
}

/// [`read`], each event with the `written_ms` of its ledger row.
async fn read_written(
    client: &clickhouse::Client,
    visitors: &[&str],
) -> Result<HashMap<String, Vec<(u64, Event)>>, clickhouse::error::Error> {
    let mut rows: Vec<LedgerRow> = Vec::new();
    for chunk in visitors.chunks(IDS_PER_QUERY) {
        let sql = format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger WHERE visitor_id IN {}",
            id_set(chunk)
        );
        rows.extend(client.query(&sql).fetch_all::<LedgerRow>().await?);
    }
    let mut last_tombstone: HashMap<&str, u64> = HashMap::new();
    for r in rows.iter().filter(|r| r.tombstone == 1) {
        let t = last_tombstone.entry(&r.visitor_id).or_default();
        *t = (*t).max(r.written_ms);
    }
    let mut out: HashMap<String, Vec<(u64, Event)>> = HashMap::new();
    for r in &rows {
        let after = last_tombstone
            .get(r.visitor_id.as_str())
            .is_none_or(|t| r.written_ms > *t);
        if r.tombstone == 0 && after {
            out.entry(r.visitor_id.clone())
                .or_default()
                .push((r.written_ms, r.event()));
        }
    }
    Ok(out)
}

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
        if self.sql.is_empty() {
            self.sql.push_str(INSERT_HEAD);
        }
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
            sql: self.sql,
            marker,
        })
    }
}

/// A ledger INSERT ready to send, and the marker its rows carry.
#[derive(Debug)]
pub struct Insert {
    sql: String,
    pub marker: Marker,
}

impl Insert {
    /// Sends it under the marker's query id (so that a repair can tell
    /// whether it is still running on the server).
    pub async fn execute(
        &self,
        client: &clickhouse::Client,
    ) -> Result<(), clickhouse::error::Error> {
        client
            .query_raw(&self.sql)
            .with_setting("query_id", self.marker.query_id())
            .execute()
            .await
    }
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis().max(0)).unwrap_or(0)
}

/// What [`account`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accounted {
    /// Events seen for the first time.
    pub new_events: usize,
    /// Visitors whose figures changed.
    pub visitors: usize,
    /// Tables of earlier ledger batches that a view had not written (it
    /// failed, or ClickHouse died mid-INSERT), written now from the
    /// ledger ([`crate::batches::complete`]).
    pub completed: usize,
}

/// Accounts for a batch of rows (duplicates and already-accounted events
/// allowed): the new events go to the ledger with the change they make to
/// the figures, in one INSERT; then the batch's contacts are checked for
/// sharing. Idempotent: a batch accounted twice changes nothing the second
/// time.
pub async fn account(
    client: &clickhouse::Client,
    campaign: &Campaign,
    rows: &[EventRow],
) -> Result<Accounted, clickhouse::error::Error> {
    prepare(client, campaign, rows)
        .await?
        .write(client, campaign)
        .await
}

/// A batch's accounting read and computed, its statements ready, nothing
/// written yet ([`prepare`]).
#[derive(Debug)]
pub struct Prepared {
    /// `wide_visitors` rows, as VALUES tuples.
    wide: Vec<String>,
    ledger: Option<Insert>,
    signups: BTreeSet<(String, String)>,
    done: Accounted,
}

impl Prepared {
    /// Writes what [`prepare`] computed: the wide visitors, the ledger
    /// (and so the figures), the contacts, and for contacts seen on
    /// several visitors their later conversions ([`crate::later`]). Only
    /// once, and only if no ledger row was written since `prepare` read
    /// it: after a failure, account again (a failed INSERT may still have
    /// landed; reading the ledger again is what keeps it from being
    /// counted twice).
    pub async fn write(
        self,
        client: &clickhouse::Client,
        campaign: &Campaign,
    ) -> Result<Accounted, clickhouse::error::Error> {
        // Listed before their rows land: a crash in between leaves a listed
        // visitor, which costs a little time, never a wrong figure.
        insert_wide(client, &self.wide).await?;
        if let Some(insert) = &self.ledger {
            insert.execute(client).await?;
        }
        // Also when every event was accounted already: a batch read again
        // after a crash between the ledger and these writes (its offsets
        // were not committed) notes and settles its contacts then.
        let shared = note_contacts(client, &self.signups).await?;
        crate::later::settle(client, campaign, &shared).await?;
        Ok(self.done)
    }
}

/// Reads the ledger of the batch's visitors and computes what accounting
/// for `rows` writes (see [`account`]), without writing it.
pub async fn prepare(
    client: &clickhouse::Client,
    campaign: &Campaign,
    rows: &[EventRow],
) -> Result<Prepared, clickhouse::error::Error> {
    let mut batch: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for r in rows {
        batch
            .entry(&r.visitor_id)
            .or_default()
            .push(ledger_event(r));
    }
    let ids: Vec<&str> = batch.keys().copied().collect();
    let known = read_written(client, &ids).await?;
    // Events of this batch already accounted: a client's retry, or a
    // batch read again after a failed INSERT or a crash. Their ledger
    // batches are completed first if a view did not write them
    // (`batches`): only when this batch holds the head event, so that
    // one member does it.
    let mine: BTreeSet<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let again: BTreeSet<(&str, u64)> = known
        .iter()
        .flat_map(|(v, events)| events.iter().map(move |(w, e)| (v.as_str(), *w, e)))
        .filter(|(_, _, e)| mine.contains(&e.event_id))
        .map(|(v, w, _)| (v, w))
        .collect();
    let completed = crate::batches::complete(client, campaign, &again, &mine).await?;
    let mut known = without_written(known);
    let written_ms = now_ms();
    let sets: Vec<ChangeSets> = batch
        .iter()
        .filter_map(|(visitor, events)| {
            ChangeSets::new(visitor, known.remove(*visitor).unwrap_or_default(), events)
        })
        .collect();
    // The change of every visitor, summed: carried by the INSERT's first
    // row. CPU work (a large batch takes a while): off the async workers,
    // on both cores.
    let (halves, journey_changes) = off_the_runtime(|| {
        let (a, b) = sets.split_at(sets.len() / 2);
        if a.len() < 32 {
            return changes(campaign, &sets);
        }
        std::thread::scope(|s| {
            let second = s.spawn(|| changes(campaign, b));
            let (mut figures, mut journeys) = changes(campaign, a);
            let (more, more_journeys) = second
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            figures.extend(more);
            journeys.extend(more_journeys);
            (figures, journeys)
        })
    });
    let journey = journey_rows(&journey_changes);
    let carried: Vec<FigureRow<'_>> = halves
        .iter()
        .flat_map(|(strings, rows)| figures::rows_of(strings, rows))
        .collect();
    let wide = wide_values(campaign, sets.iter().map(|s| (s.visitor(), s.all_events())));
    let mut writer = Writer::new(campaign, &carried, &journey);
    let mut done = Accounted {
        completed,
        ..Accounted::default()
    };
    for set in &sets {
        for e in set.fresh() {
            writer.push(set.visitor(), written_ms, Some(e));
        }
        done.new_events += set.fresh().len();
        done.visitors += 1;
    }
    let signups = rows
        .iter()
        .filter(|r| ensemble_model::rules::is_signup(&r.event_type) && !r.contact_hash.is_empty())
        .map(|r| (r.contact_hash.clone(), r.visitor_id.clone()))
        .collect();
    Ok(Prepared {
        wide,
        ledger: writer.into_insert(),
        signups,
        done,
    })
}

/// The change `sets` make to the figures, summed (keys repeated across
/// calls are summed again by ClickHouse), and to each visitor's journeys.
type Changes<'a> = (
    Vec<(Strings<'a>, figures::Rows)>,
    Vec<(&'a str, journeys::Rows<'a>)>,
);

fn changes<'a>(campaign: &'a Campaign, sets: &'a [ChangeSets]) -> Changes<'a> {
    let mut strings = Strings::default();
    let mut change = figures::Sum::default();
    let mut journey = Vec::new();
    for set in sets {
        change.add(&figures::change(campaign, set, &mut strings), 1);
        let rows = journeys::change(campaign, set.known(), set.all_events());
        if !rows.is_empty() {
            journey.push((set.visitor(), rows));
        }
    }
    (vec![(strings, change.rows())], journey)
}

/// Runs CPU-bound `work` where it does not hold up the async tasks (the
/// consume loop, the metrics server, shutdown): `block_in_place` on a
/// multi-threaded runtime, in place otherwise (tests).
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Lists in `wide_visitors` those of `visitors` (id, every accounted event)
/// active on more than `figures::WIDE_DAYS` days, with their span.
async fn note_wide<'v>(
    client: &clickhouse::Client,
    campaign: &Campaign,
    visitors: impl Iterator<Item = (&'v str, &'v [Event])>,
) -> Result<(), clickhouse::error::Error> {
    insert_wide(client, &wide_values(campaign, visitors)).await
}

/// The `wide_visitors` rows of `visitors` (see [`note_wide`]), as VALUES tuples.
fn wide_values<'v>(
    campaign: &Campaign,
    visitors: impl Iterator<Item = (&'v str, &'v [Event])>,
) -> Vec<String> {
    visitors
        .filter_map(|(v, events)| {
            figures::wide_span(campaign, events).map(|(first, last)| {
                format!(
                    "({},toDate('{}'),toDate('{}'))",
                    lit(v),
                    figures::date_of(first).format("%Y-%m-%d"),
                    figures::date_of(last).format("%Y-%m-%d")
                )
            })
        })
        .collect()
}

async fn insert_wide(
    client: &clickhouse::Client,
    values: &[String],
) -> Result<(), clickhouse::error::Error> {
    for chunk in values.chunks(10_000) {
        client
            .query(&format!(
                "INSERT INTO wide_visitors (visitor_id, first_day, last_day) VALUES {}",
                chunk.join(",")
            ))
            .execute()
            .await?;
    }
    Ok(())
}

/// The wide visitors (see `note_wide`) active on some day of `[first, last]`.
pub async fn wide_visitors(
    client: &clickhouse::Client,
    (first, last): (figures::Day, figures::Day),
) -> Result<Vec<String>, clickhouse::error::Error> {
    client
        .query(&format!(
            "SELECT DISTINCT visitor_id FROM wide_visitors WHERE first_day <= toDate('{}') \
             AND last_day >= toDate('{}') ORDER BY visitor_id",
            figures::date_of(last).format("%Y-%m-%d"),
            figures::date_of(first).format("%Y-%m-%d")
        ))
        .fetch_all()
        .await
}

#[derive(Debug, Row, Deserialize)]
struct ContactVisitor {
    contact_hash: String,
    visitor_id: String,
}

/// Inserts (contact hash, visitor id) pairs into `table`.
async fn insert_pairs<C: AsRef<str>, V: AsRef<str>>(
    client: &clickhouse::Client,
    table: &str,
    pairs: impl IntoIterator<Item = (C, V)>,
) -> Result<(), clickhouse::error::Error> {
    let values: Vec<String> = pairs
        .into_iter()
        .map(|(c, v)| format!("({},{})", lit(c.as_ref()), lit(v.as_ref())))
        .collect();
    if values.is_empty() {
        return Ok(());
    }
    client
        .query(&format!(
            "INSERT INTO {table} (contact_hash, visitor_id) VALUES {}",
            values.join(",")
        ))
        .execute()
        .await
}

/// Records which visitors signed up with which contact, then lists in
/// `shared_contacts` every contact of the batch now seen on several
/// visitors, and returns those (contact, visitor) pairs. (Two processors
/// recording the same contact at once: each checks after its own insert,
/// so the later check sees both.)
async fn note_contacts(
    client: &clickhouse::Client,
    pairs: &BTreeSet<(String, String)>,
) -> Result<Vec<(String, String)>, clickhouse::error::Error> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    insert_pairs(
        client,
        "contact_visitors",
        pairs.iter().map(|(c, v)| (c, v)),
    )
    .await?;
    let contacts: Vec<&str> = pairs
        .iter()
        .map(|(c, _)| c.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut shared: Vec<(String, String)> = Vec::new();
    for chunk in contacts.chunks(IDS_PER_QUERY) {
        let seen: Vec<ContactVisitor> = client
            .query(&format!(
                "SELECT DISTINCT contact_hash, visitor_id FROM contact_visitors WHERE contact_hash IN ({})",
                in_list(chunk)
            ))
            .fetch_all()
            .await?;
        let mut by_contact: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in seen {
            by_contact
                .entry(s.contact_hash)
                .or_default()
                .push(s.visitor_id);
        }
        for (c, vs) in by_contact.into_iter().filter(|(_, vs)| vs.len() > 1) {
            shared.extend(vs.into_iter().map(|v| (c.clone(), v)));
        }
    }
    insert_pairs(
        client,
        "shared_contacts",
        shared.iter().map(|(c, v)| (c, v)),
    )
    .await?;
    Ok(shared)
}

/// What the per-visitor rows get wrong for contacts seen on several
/// visitors, to add to them: those visitors' rows computed together (each
/// contact once) minus computed separately.
pub async fn correction(
    client: &clickhouse::Client,
    campaign: &Campaign,
) -> Result<Vec<OwnedRow>, clickhouse::error::Error> {
    let visitors = shared_visitors(client).await?;
    if visitors.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = visitors.iter().map(String::as_str).collect();
    let events = read(client, &ids).await?;
    let mut set: Vec<(String, Vec<Event>)> = events.into_iter().collect();
    set.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(figures::correction(campaign, &set))
}

/// Where a question computed on demand reads its events: the ledger (what
/// the figures count) or, to audit the figures, the raw `events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Ledger,
    Events,
}

/// Which visitors to read: those with at least one event matching.
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    pub start_ms: u64,
    pub end_ms: u64,
    pub phase: Option<&'a str>,
    pub device: Option<&'a str>,
    pub placement: Option<&'a str>,
    pub include_bots: bool,
    /// Only these visitors (then the rest is not tested).
    pub visitors: Option<&'a [String]>,
    /// Never these visitors.
    pub except: &'a [String],
}

impl Selection<'_> {
    /// The WHERE of the visitors' events that select them, on `source`'s columns.
    fn condition(&self, source: Source) -> String {
        let (ms, phase, device, placement, bot) = match source {
            Source::Ledger => ("ms", "ev_phase", "ev_device", "ev_placement", "ev_bot"),
            Source::Events => (
                "(toUInt64(ts) * 1000 + ts_ms)",
                "phase",
                "device_class",
                "placement",
                "(is_bot OR repeat_scan)",
            ),
        };
        let mut sql = if source == Source::Ledger {
            String::from("tombstone = 0")
        } else {
            String::from("1")
        };
        if let Some(ids) = self.visitors {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let _ = write!(sql, " AND visitor_id IN ({})", in_list_or_none(&ids));
            return sql;
        }
        let _ = write!(
            sql,
            " AND {ms} >= {} AND {ms} < {}",
            self.start_ms, self.end_ms
        );
        for (column, value) in [
            (phase, self.phase),
            (device, self.device),
            (placement, self.placement),
        ] {
            if let Some(v) = value {
                let _ = write!(sql, " AND {column} = {}", lit(v));
            }
        }
        if !self.include_bots {
            let _ = write!(sql, " AND {bot} = 0");
        }
        if !self.except.is_empty() {
            let ids: Vec<&str> = self.except.iter().map(String::as_str).collect();
            let _ = write!(sql, " AND visitor_id NOT IN ({})", in_list(&ids));
        }
        sql
    }
}

fn in_list_or_none(ids: &[&str]) -> String {
    if ids.is_empty() {
        "''".to_owned()
    } else {
        in_list(ids)
    }
}

/// Streams every event of each selected visitor to `each`, one visitor at
/// a time, in visitor order (memory holds one visitor's events). Returns
/// the rows read.
pub async fn stream(
    client: &clickhouse::Client,
    source: Source,
    selection: &Selection<'_>,
    mut each: impl FnMut(String, Vec<Event>),
) -> Result<u64, clickhouse::error::Error> {
    let cond = selection.condition(source);
    let sql = match source {
        // Rows in writing order: a tombstone drops what came before it.
        Source::Ledger => format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger WHERE visitor_id IN \
             (SELECT DISTINCT visitor_id FROM ledger WHERE {cond}) ORDER BY visitor_id, written_ms"
        ),
        Source::Events => format!(
            "SELECT visitor_id, toUInt64(0) AS written_ms, toUInt8(0) AS tombstone, event_id, \
             any(toUInt64(ts) * 1000 + ts_ms) AS ms, any(event_type) AS ev_type, any(action) AS ev_action, \
             any(channel) AS ev_channel, any(placement) AS ev_placement, any(phase) AS ev_phase, \
             any(device_class) AS ev_device, any(is_bot OR repeat_scan) AS ev_bot, any(contact_hash) AS ev_contact, \
             any(os_family) AS ev_os \
             FROM events WHERE visitor_id IN (SELECT DISTINCT visitor_id FROM events WHERE {cond}) \
             GROUP BY visitor_id, event_id ORDER BY visitor_id"
        ),
    };
    let mut cursor = client
        .query(&sql)
        .with_setting("max_bytes_before_external_group_by", "500000000")
        .with_setting("max_bytes_before_external_sort", "500000000")
        .fetch::<LedgerRow>()?;
    let mut current: Option<String> = None;
    let mut events: Vec<Event> = Vec::new();
    let mut read_so_far = 0u64;
    while let Some(r) = cursor.next().await? {
        read_so_far += 1;
        if current.as_deref() != Some(r.visitor_id.as_str()) {
            if let Some(v) = current.take() {
                each(v, std::mem::take(&mut events));
            }
            current = Some(r.visitor_id.clone());
        }
        if r.tombstone == 1 {
            events.clear();
        } else {
            events.push(r.event());
        }
    }
    if let Some(v) = current.take() {
        each(v, events);
    }
    Ok(read_so_far)
}

/// The visitors listed as sharing a contact with another visitor.
pub async fn shared_visitors(
    client: &clickhouse::Client,
) -> Result<Vec<String>, clickhouse::error::Error> {
    client
        .query("SELECT DISTINCT visitor_id FROM shared_contacts ORDER BY visitor_id")
        .fetch_all()
        .await
}

/// Rewrites the ledger of `visitors` keeping only the events `keep`
/// accepts (retention, erasure): one INSERT of a tombstone per visitor —
/// carrying the change from its whole contribution to that of the kept
/// events — and of the kept events again, then the rows written before the
/// tombstones are deleted. Until that delete is done, reads already skip
/// them. Returns the rows given up.
pub async fn rewrite(
    client: &clickhouse::Client,
    campaign: &Campaign,
    ddl_target: impl Fn(&str) -> String,
    visitors: &[String],
    keep: impl Fn(&Event) -> bool,
) -> Result<u64, clickhouse::error::Error> {
    let mut dropped = 0u64;
    for chunk in visitors.chunks(IDS_PER_QUERY) {
        let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let mut known = read(client, &ids).await?;
        let written_ms = now_ms();
        type Pair = ([(String, Vec<Event>); 1], [(String, Vec<Event>); 1]);
        let mut sets: Vec<Pair> = Vec::new();
        for v in chunk {
            let events = known.remove(v).unwrap_or_default();
            let (kept, gone): (Vec<Event>, Vec<Event>) = events.into_iter().partition(|e| keep(e));
            dropped += gone.len() as u64;
            let mut all = kept.clone();
            all.extend(gone);
            sets.push(([(v.clone(), all)], [(v.clone(), kept)]));
        }
        let mut strings = Strings::default();
        let mut change = figures::Sum::default();
        let mut journey_changes = Vec::new();
        for (all, kept) in &sets {
            change.add(&figures::compute(campaign, all, &mut strings), -1);
            change.add(&figures::compute(campaign, kept, &mut strings), 1);
            journey_changes.push((
                kept[0].0.clone(),
                journeys::change(campaign, &all[0].1, &kept[0].1),
            ));
        }
        let change = change.rows();
        let carried: Vec<FigureRow<'_>> = figures::rows_of(&strings, &change).collect();
        let journey = journey_rows(&journey_changes);
        note_wide(
            client,
            campaign,
            sets.iter()
                .map(|(_, kept)| (kept[0].0.as_str(), kept[0].1.as_slice())),
        )
        .await?;
        // A tombstone per visitor (the first carries the change of all),
        // then its kept events again.
        let mut writer = Writer::new(campaign, &carried, &journey);
        for (_, kept) in &sets {
            writer.push(&kept[0].0, written_ms, None);
            for e in &kept[0].1 {
                writer.push(&kept[0].0, written_ms + 1, Some(e));
            }
        }
        writer.flush(client).await?;
        client
            .query(&format!(
                "ALTER TABLE {} DELETE WHERE visitor_id IN ({}) AND written_ms <= {written_ms}",
                ddl_target("ledger"),
                in_list(&ids)
            ))
            .execute()
            .await?;
    }
    Ok(dropped)
}

/// Erasure of the person behind `contact_hash`: retracts from the figures
/// every event of `own` visitors (ids only this person used) and, of
/// `shared` visitors (ids others use too: a hashed id behind a shared
/// address, a device several people signed up from), only the events that
/// carry this contact; then forgets this contact's pairs and those of the
/// own visitors. Safe to run again: what is gone contributes nothing.
/// Other visitors' ledger rows may still carry this person's journeys rows
/// in their arrays: once the deletes are done, [`clear_carried`] empties
/// them (`ensemble-processor erase` does). Returns the person's sign-ups
/// (ids), whose analysts' rows were deleted.
pub async fn forget(
    client: &clickhouse::Client,
    campaign: &Campaign,
    ddl_target: impl Fn(&str) -> String,
    contact_hash: &str,
    own: &[String],
    shared: &[String],
) -> Result<Vec<Uuid>, clickhouse::error::Error> {
    // This person's sign-ups: the analysts' rows of them carry no contact.
    let signups: Vec<Uuid> = erased_signups(client, contact_hash).await?;
    rewrite(client, campaign, &ddl_target, own, |_| false).await?;
    rewrite(client, campaign, &ddl_target, shared, |e| {
        e.contact != contact_hash
    })
    .await?;
    // The analysts' rows of this contact's sign-ups (journeys retracted
    // above, so their sums are zero; later conversions) and of the own
    // visitors (all retracted) go for good, not at the next merge.
    for table in ["journeys", "later_conversions"] {
        for chunk in signups.chunks(IDS_PER_QUERY) {
            let ids: Vec<String> = chunk.iter().map(|e| format!("toUUID('{e}')")).collect();
            client
                .query(&format!(
                    "ALTER TABLE {} DELETE WHERE event_id IN ({})",
                    ddl_target(table),
                    ids.join(",")
                ))
                .execute()
                .await?;
        }
    }
    for (table, column) in [
        ("contact_visitors", "contact_hash"),
        ("shared_contacts", "contact_hash"),
    ] {
        client
            .query(&format!(
                "ALTER TABLE {} DELETE WHERE {column} = {}",
                ddl_target(table),
                lit(contact_hash)
            ))
            .execute()
            .await?;
    }
    for table in [
        "contact_visitors",
        "shared_contacts",
        "wide_visitors",
        "journeys",
        "later_conversions",
    ] {
        for chunk in own.chunks(IDS_PER_QUERY) {
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            client
                .query(&format!(
                    "ALTER TABLE {} DELETE WHERE visitor_id IN ({})",
                    ddl_target(table),
                    in_list(&ids)
                ))
                .execute()
                .await?;
        }
    }
    Ok(signups)
}

/// The sign-ups the ledger holds with `contact_hash`.
pub async fn erased_signups(
    client: &clickhouse::Client,
    contact_hash: &str,
) -> Result<Vec<Uuid>, clickhouse::error::Error> {
    #[derive(Row, Deserialize)]
    struct Id {
        #[serde(with = "clickhouse::serde::uuid")]
        event_id: Uuid,
    }
    let ids: Vec<Id> = client
        .query(&format!(
            "SELECT DISTINCT event_id FROM ledger WHERE ev_contact = {}",
            lit(contact_hash)
        ))
        .fetch_all()
        .await?;
    Ok(ids.into_iter().map(|i| i.event_id).collect())
}

/// Retention: the ledger forgets events before `cutoff_ms`, and the figures
/// and the analysts' journeys with them. Returns the ledger rows given up.
/// Other visitors' ledger rows may still carry the old events' journeys
/// rows in their arrays: once the deletes are done, [`clear_carried`]
/// empties them (`ensemble-processor retention` does).
pub async fn retain(
    client: &clickhouse::Client,
    campaign: &Campaign,
    ddl_target: impl Fn(&str) -> String,
    cutoff_ms: u64,
) -> Result<u64, clickhouse::error::Error> {
    let visitors: Vec<String> = client
        .query("SELECT DISTINCT visitor_id FROM ledger WHERE tombstone = 0 AND ms < ? ORDER BY visitor_id")
        .bind(cutoff_ms)
        .fetch_all()
        .await?;
    let given_up = rewrite(client, campaign, &ddl_target, &visitors, |e| {
        e.ms >= cutoff_ms
    })
    .await?;
    // The journeys rows of the old events now sum to zero, but stay (with
    // their visitor ids) until ClickHouse merges them: they go now. Every
    // row of an event kept is at or after the cutoff (its time, or for a
    // placement's day its local day), so only zero sums are deleted.
    client
        .query(&format!(
            "ALTER TABLE {} DELETE WHERE {}",
            ddl_target("journeys"),
            journeys_before(campaign, cutoff_ms)
        ))
        .execute()
        .await?;
    Ok(given_up)
}

/// The analysts' journeys rows of events before `cutoff_ms` (SQL): by
/// their time, or for a placement's day by its local day.
pub fn journeys_before(campaign: &Campaign, cutoff_ms: u64) -> String {
    format!(
        "(kind = '{placement_day}' AND day < {}) \
         OR (kind != '{placement_day}' AND ms < {cutoff_ms})",
        cutoff_day(campaign, cutoff_ms),
        placement_day = journeys::Kind::PlacementDay.name(),
    )
}

/// Ledger rows whose carried journeys arrays ([`CARRIED`]) hold a row of
/// an event before `cutoff_ms` (SQL), as [`journeys_before`] tells them
/// (an emptied array element reads as time 0 and day 0).
pub fn carried_journeys_before(campaign: &Campaign, cutoff_ms: u64) -> String {
    format!(
        "arrayExists(m -> m > 0 AND m < {cutoff_ms}, journey.ms) \
         OR arrayExists(d -> d > toDate(0) AND d < {}, journey.day)",
        cutoff_day(campaign, cutoff_ms)
    )
}

/// The local day of `cutoff_ms`, as a ClickHouse `Date` literal.
fn cutoff_day(campaign: &Campaign, cutoff_ms: u64) -> String {
    format!(
        "toDate('{}')",
        figures::date_of(figures::day_of(campaign, cutoff_ms))
    )
}

/// Whether the figures must be rebuilt from `events` before anything is
/// accounted on top: `migrate` met a database written by a version that
/// stored the figures in other tables and left a row in `rebuild_pending`
/// (which `rebuild` empties).
pub async fn needs_rebuild(client: &clickhouse::Client) -> Result<bool, clickhouse::error::Error> {
    let pending: u64 = client
        .query("SELECT count() FROM rebuild_pending")
        .fetch_one()
        .await?;
    Ok(pending > 0)
}

/// The tables the dashboard reads figures from: what [`compact`] merges.
pub const FIGURES_TABLES: [&str; 3] =
    ["figures", crate::ranges::TABLE, crate::ranges::DELAYS_TABLE];

/// Merges a figures table's parts into one (`OPTIMIZE TABLE … FINAL`).
/// A bulk fill (a rebuild, a refill) leaves several large parts that
/// background merges leave apart for a long time, and a live table keeps
/// several between merges: the summed rows stay several per value and
/// every read crosses each part. At 10 M events `figures_ranges` went from
/// 17.2 M rows in 7 parts to 8.0 M in one (15 s), and the default
/// overview's query from ~50 to ~12 ms in ClickHouse; `figures` from
/// 19.5 M rows in 4 parts to 15.3 M (15 s). Safe while processors write
/// (a merge replaces parts atomically; parts written meanwhile stay), but
/// it rewrites the whole table: the offline steps run it, and
/// `ensemble-processor compact` (daily), never each batch. `Ok(false)` in
/// cluster mode, where the tables are local to each node: not merged.
pub async fn compact(
    store: &crate::StoreConfig,
    table: &str,
) -> Result<bool, clickhouse::error::Error> {
    if store.is_cluster() {
        return Ok(false);
    }
    store
        .client()
        .query(&format!("OPTIMIZE TABLE {table} FINAL"))
        .execute()
        .await?;
    Ok(true)
}

/// [`compact`] at the end of a bulk fill: a failure is logged, not
/// returned, the rows being whole either way (only slower to read).
pub async fn compact_after_fill(store: &crate::StoreConfig, tables: &[&str]) {
    for table in tables {
        let started = std::time::Instant::now();
        match compact(store, table).await {
            Ok(true) => tracing::info!(
                table,
                seconds = started.elapsed().as_secs_f64(),
                "figures: parts merged into one"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                table,
                error = %e,
                "figures: could not merge the parts (the rows are whole; reads stay slower): \
                 run `ensemble-processor compact` when the server is less busy"
            ),
        }
    }
}

/// Rebuilds the ledger and every figure from `events` (after an upgrade
/// that changed how figures are stored, or after the campaign's calendar
/// or attribution settings change). Run it with the processor stopped.
/// Calls `progress` with the events read so far.
pub async fn rebuild(
    store: &crate::StoreConfig,
    campaign: &Campaign,
    mut progress: impl FnMut(u64),
) -> Result<u64, clickhouse::error::Error> {
    let client = &store.client();
    let ddl_target = |t: &str| store.ddl_target(t);
    // The figures summed by range are refilled by the same INSERTs.
    let ranges = crate::ranges::remake(store, campaign).await?;
    for t in [
        "ledger",
        "figures",
        "contact_visitors",
        "shared_contacts",
        "wide_visitors",
        "journeys",
        "later_conversions",
        "ledger_minutely",
        "events_minutely",
    ] {
        client
            .query(&format!("TRUNCATE TABLE {}", ddl_target(t)))
            .execute()
            .await?;
    }
    let mut cursor = client
        .query(
            "SELECT visitor_id, toUInt64(min(processed_at)) * 1000 AS written_ms, toUInt8(0) AS tombstone, event_id, \
             any(toUInt64(ts) * 1000 + ts_ms) AS ms, any(event_type) AS ev_type, any(action) AS ev_action, \
             any(channel) AS ev_channel, any(placement) AS ev_placement, any(phase) AS ev_phase, \
             any(device_class) AS ev_device, any(is_bot OR repeat_scan) AS ev_bot, any(contact_hash) AS ev_contact, \
             any(os_family) AS ev_os \
             FROM events GROUP BY visitor_id, event_id ORDER BY visitor_id",
        )
        .with_setting("max_bytes_before_external_group_by", "1500000000")
        .with_setting("max_bytes_before_external_sort", "1500000000")
        .fetch::<LedgerRow>()?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut current: Option<String> = None;
    let mut visitor_events: Vec<(u64, Event)> = Vec::new();
    // Whole visitors, about 50 000 events at a time: one INSERT, carrying
    // their contributions summed.
    let mut pending: Vec<(String, Vec<(u64, Event)>)> = Vec::new();
    let mut pending_events = 0usize;
    let mut read_so_far = 0u64;
    let write = |pending: Vec<(String, Vec<(u64, Event)>)>| async move {
        let written: Vec<Vec<u64>> = pending
            .iter()
            .map(|(_, es)| es.iter().map(|(w, _)| *w).collect())
            .collect();
        let sets: Vec<[(String, Vec<Event>); 1]> = pending
            .into_iter()
            .map(|(v, es)| [(v, es.into_iter().map(|(_, e)| e).collect())])
            .collect();
        note_wide(
            client,
            campaign,
            sets.iter()
                .map(|set| (set[0].0.as_str(), set[0].1.as_slice())),
        )
        .await?;
        let mut strings = Strings::default();
        let mut sum = figures::Sum::default();
        let mut journey_rows_of = Vec::new();
        for set in &sets {
            sum.add(&figures::compute(campaign, set, &mut strings), 1);
            journey_rows_of.push((set[0].0.clone(), journeys::rows(campaign, &set[0].1)));
        }
        let rows = sum.rows();
        let carried: Vec<FigureRow<'_>> = figures::rows_of(&strings, &rows).collect();
        let journey = journey_rows(&journey_rows_of);
        let mut writer = Writer::new(campaign, &carried, &journey);
        for (set, written) in sets.iter().zip(&written) {
            for (e, w) in set[0].1.iter().zip(written) {
                writer.push(&set[0].0, *w, Some(e));
            }
        }
        writer.flush(client).await
    };
    while let Some(r) = cursor.next().await? {
        read_so_far += 1;
        if current.as_deref() != Some(r.visitor_id.as_str()) {
            if let Some(v) = current.take() {
                pending_events += visitor_events.len();
                pending.push((v, std::mem::take(&mut visitor_events)));
                if pending_events >= 50_000 {
                    write(std::mem::take(&mut pending)).await?;
                    pending_events = 0;
                    progress(read_so_far);
                }
            }
            current = Some(r.visitor_id.clone());
        }
        if ensemble_model::rules::is_signup(&r.ev_type) && !r.ev_contact.is_empty() {
            pairs.push((r.ev_contact.clone(), r.visitor_id.clone()));
        }
        visitor_events.push((r.written_ms, r.event()));
    }
    if let Some(v) = current.take() {
        pending.push((v, visitor_events));
    }
    write(pending).await?;
    for chunk in pairs.chunks(20_000) {
        insert_pairs(
            client,
            "contact_visitors",
            chunk.iter().map(|(c, v)| (c, v)),
        )
        .await?;
    }
    client
        .query(
            "INSERT INTO shared_contacts (contact_hash, visitor_id) SELECT contact_hash, visitor_id FROM contact_visitors \
             WHERE contact_hash IN (SELECT contact_hash FROM contact_visitors GROUP BY contact_hash HAVING uniqExact(visitor_id) > 1)",
        )
        .execute()
        .await?;
    crate::later::settle_all(client, campaign).await?;
    // The view's own SELECT, over every event.
    if let Some(fill) = crate::migrate::view_fill("events_minutely_mv", None) {
        client.query(&fill).execute().await?;
    }
    client
        .query(&format!("TRUNCATE TABLE {}", ddl_target("rebuild_pending")))
        .execute()
        .await?;
    if ranges {
        crate::ranges::rebuilt(store, campaign).await?;
    }
    // Both, kept or not: `figures_ranges` exists (migration 0008), and an
    // empty table merges at once.
    compact_after_fill(store, &FIGURES_TABLES).await;
    if let Err(e) = clear_carried(client, ddl_target).await {
        tracing::warn!(
            error = %e,
            "ledger: could not empty the arrays the rebuild carried (they take room until \
             `ensemble-processor compact` runs)"
        );
    }
    progress(read_so_far);
    Ok(read_so_far)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let campaign = Campaign::from_toml(include_str!("../../deploy/campaign.toml")).unwrap();
        let e = |i: u128| Event {
            event_id: Uuid::from_u128(i),
            ms: 1_737_190_800_000,
            event_type: "page_view".into(),
            action: String::new(),
            channel: "metro".into(),
            placement: String::new(),
            phase: "p1-lancement".into(),
            device: "mobile".into(),
            os: "iOS".into(),
            bot: false,
            contact: String::new(),
        };
        let mut w = Writer::new(&campaign, &[], &[]);
        for (i, v) in ["v_a", "v_b", "v_c"].into_iter().enumerate() {
            w.push(v, 1_737_190_900_123, Some(&e(i as u128)));
        }
        let insert = w.into_insert().unwrap();
        let key = insert.marker.key.clone();
        assert!(key.starts_with("batch-1737190900123-"), "{key}");
        let rows: Vec<&str> = insert.sql.lines().skip(1).collect();
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
    fn plain_ids_are_one_split_literal_the_others_a_list() {
        assert_eq!(
            id_set(&["v_abc-123", "v_def_456"]),
            "(SELECT arrayJoin(splitByChar(',', 'v_abc-123,v_def_456')))"
        );
        // A comma, a quote or a placeholder in an id: literals, escaped.
        assert_eq!(id_set(&["v_ok_1234", "a,b"]), "('v_ok_1234','a,b')");
        assert_eq!(id_set(&["x'y?"]), "('x\\'y\\x3F')");
        assert_eq!(id_set(&[""]), "('')");
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
