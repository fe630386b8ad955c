//! Every event of the selected visitors, one visitor at a time: what the
//! questions computed on demand read, from the ledger or (to audit the
//! figures) from the raw `events`.

use std::fmt::Write as _;

use super::{LedgerRow, LEDGER_COLUMNS};
use crate::sql::{in_list, in_list_or_none, lit};
use ensemble_model::figures::Event;

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
