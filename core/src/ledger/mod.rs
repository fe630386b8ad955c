//! The ledger side of [`ensemble_model::figures`]: every accounted event
//! once, per visitor, with the change it made to the figures. Split by job:
//!
//! - here: reading visitors' accounted events back;
//! - [`write`]: the ledger INSERT, carrying the figures' and journeys'
//!   change (and the figures' summed by range) to the materialised views,
//!   with its batch marker;
//! - [`carried`]: how those sets are carried, as text, and read back in SQL;
//! - [`account`]: a batch's accounting (read, compute, write);
//! - [`lists`]: the wide visitors and shared contacts, the question-time
//!   correction;
//! - [`stream`]: every event of selected visitors, one visitor at a time;
//! - [`erase`]: rewriting visitors (retention, erasure);
//! - [`cache`]: visitors' histories kept between a processor's batches.
//!
//! Rebuilding everything from `events` is `crate::rebuild`; merging the
//! figures' parts `crate::compact`.

mod account;
mod cache;
pub mod carried;
mod erase;
mod lists;
mod stream;
mod write;

pub use account::{account, prepare, prepare_after, Accounted, After, Prepared};
pub(crate) use cache::note_rewrite;
pub use cache::{Histories, History};
pub use carried::{DELAY_COLUMNS, FIGURE_COLUMNS, JOURNEY_COLUMNS};
pub use erase::{
    carried_journeys_before, erased_signups, forget, journeys_before, retain, rewrite,
};
pub use lists::{correction, shared_visitors, wide_visitors};
pub(crate) use lists::{insert_pairs, note_wide};
pub use stream::{stream, Selection, Source};
pub use write::{clear_carried, journey_rows, Carried, Insert, JourneyRow, Writer};

use std::collections::HashMap;

use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use crate::sql::id_set;
use crate::EventRow;
use ensemble_model::figures::{Event, Text};

/// A ledger row as read back (and as `rebuild` reads `events`).
#[derive(Debug, Row, Deserialize)]
pub(crate) struct LedgerRow {
    pub(crate) visitor_id: String,
    pub(crate) written_ms: u64,
    pub(crate) tombstone: u8,
    #[serde(with = "clickhouse::serde::uuid")]
    pub(crate) event_id: Uuid,
    pub(crate) ms: u64,
    pub(crate) ev_type: Text,
    pub(crate) ev_action: Text,
    pub(crate) ev_channel: Text,
    pub(crate) ev_placement: Text,
    pub(crate) ev_phase: Text,
    pub(crate) ev_device: Text,
    pub(crate) ev_bot: u8,
    pub(crate) ev_contact: Text,
    pub(crate) ev_os: Text,
}

/// The columns of [`LedgerRow`], in order.
pub(crate) const LEDGER_COLUMNS: &str =
    "visitor_id, written_ms, tombstone, event_id, ms, ev_type, ev_action, \
    ev_channel, ev_placement, ev_phase, ev_device, ev_bot, ev_contact, ev_os";

impl LedgerRow {
    pub(crate) fn event(&self) -> Event {
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
        event_type: Text::new(&r.event_type),
        action: Text::new(&r.action),
        channel: Text::new(&r.channel),
        placement: Text::new(&r.placement),
        phase: Text::new(&r.phase),
        device: Text::new(&r.device_class),
        os: Text::new(&r.os_family),
        // Left out of the figures unless bots are asked for: bots and repeated scans.
        bot: r.is_bot != 0 || r.repeat_scan != 0,
        contact: Text::new(&r.contact_hash),
    }
}

/// Visitors per history read: a whole batch's (20 000 rows by default) in
/// one query. Read in queries of 3 000, the 18 000 visitors of a live
/// batch took 1.4-1.6 s on a 10 M-event ledger, in one 0.41 s: each query
/// reads the compressed blocks around its visitors' granules, and a
/// batch's visitors, spread over the whole ledger, share most of them.
/// Visitor ids are at most 64 bytes (`MAX_ID_LEN`): ~1.3 MB of query.
const HISTORY_IDS_PER_QUERY: usize = 20_000;

/// `max_query_size` for those reads (ClickHouse's default is 256 KiB):
/// room for 20 000 ids of up to ~800 bytes.
const HISTORY_QUERY_BYTES: &str = "16777216";

/// The accounted events of `visitors` (rows written before a visitor's
/// last tombstone left out).
pub async fn read(
    client: &clickhouse::Client,
    visitors: &[&str],
) -> Result<HashMap<String, Vec<Event>>, clickhouse::error::Error> {
    Ok(without_written(read_written(client, visitors).await?))
}

/// The events of [`read_written`]'s answer, without their `written_ms`.
pub(crate) fn without_written(
    read: HashMap<String, Vec<(u64, Event)>>,
) -> HashMap<String, Vec<Event>> {
    read.into_iter()
        .map(|(v, events)| (v, events.into_iter().map(|(_, e)| e).collect()))
        .collect()
}

/// [`read`], each event with the `written_ms` of its ledger row.
pub(crate) async fn read_written(
    client: &clickhouse::Client,
    visitors: &[&str],
) -> Result<HashMap<String, Vec<(u64, Event)>>, clickhouse::error::Error> {
    // Each row into its visitor's events as it arrives (not all the rows
    // first, then the events: two copies of a batch's history at once).
    let mut out: HashMap<String, Vec<(u64, Event)>> = HashMap::new();
    let mut last_tombstone: HashMap<String, u64> = HashMap::new();
    for chunk in visitors.chunks(HISTORY_IDS_PER_QUERY) {
        let sql = format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger WHERE visitor_id IN {}",
            id_set(chunk)
        );
        let mut cursor = client
            .query(&sql)
            .with_setting("max_query_size", HISTORY_QUERY_BYTES)
            .fetch::<LedgerRow>()?;
        while let Some(r) = cursor.next().await? {
            if r.tombstone == 1 {
                let t = last_tombstone.entry(r.visitor_id).or_default();
                *t = (*t).max(r.written_ms);
            } else {
                let event = r.event();
                match out.get_mut(r.visitor_id.as_str()) {
                    Some(events) => events.push((r.written_ms, event)),
                    None => {
                        out.insert(r.visitor_id, vec![(r.written_ms, event)]);
                    }
                }
            }
        }
    }
    // Rows written before a visitor's last tombstone no longer count.
    for (visitor, t) in &last_tombstone {
        if let Some(events) = out.get_mut(visitor) {
            events.retain(|(written, _)| written > t);
            if events.is_empty() {
                out.remove(visitor);
            }
        }
    }
    Ok(out)
}
