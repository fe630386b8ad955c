//! Rebuilding the ledger and every figure from the raw `events` (after an
//! upgrade that changed how figures are stored, or after the campaign's
//! calendar or attribution settings change), and whether one is pending.

use crate::compact::{compact_after_fill, FIGURES_TABLES};
use crate::ledger::{
    clear_carried, insert_pairs, journey_rows, note_wide, Carried, Insert, LedgerRow, Writer,
};
use crate::Campaign;
use ensemble_model::figures::{self, Event, Row as FigureRow, Strings};
use ensemble_model::journeys;

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
    // The figures summed by range are set aside (emptied, their views
    // dropped) and refilled from `figures` at the end, in one pass: summing
    // each chunk's rows by range as they come wrote ~40 rows per event.
    let ranges = crate::ranges::set_aside(store, campaign).await?;
    // Processors left running forget the histories they keep.
    crate::ledger::note_rewrite(client, "rebuild", "start").await?;
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
    // their contributions summed. Each chunk's INSERT runs (ClickHouse's
    // work, its views included) while the next chunk is read and computed
    // (ours): two cores busy, not one after the other.
    let mut pending: Vec<(String, Vec<(u64, Event)>)> = Vec::new();
    let mut pending_events = 0usize;
    let mut read_so_far = 0u64;
    let mut in_flight: Option<Insert> = None;
    let prepare = |pending: Vec<(String, Vec<(u64, Event)>)>| async move {
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
            figures::add_between(campaign, &[], set, &mut strings, &mut sum);
            journey_rows_of.push((set[0].0.clone(), journeys::rows(campaign, &set[0].1)));
        }
        let rows = sum.rows();
        let carried: Vec<FigureRow<'_>> = figures::rows_of(&strings, &rows).collect();
        let journey = journey_rows(&journey_rows_of);
        // Not summed by range: the summed tables' views are set aside
        // while a rebuild writes, and refilled from `figures` at its end.
        let mut writer = Writer::for_rows(
            campaign,
            Carried {
                change: &carried,
                journey: &journey,
                ..Carried::default()
            },
            written.iter().map(Vec::len).sum(),
        );
        for (set, written) in sets.iter().zip(&written) {
            for (e, w) in set[0].1.iter().zip(written) {
                writer.push(&set[0].0, *w, Some(e));
            }
        }
        Ok::<_, clickhouse::error::Error>(writer.into_insert())
    };
    // Sends the INSERT in flight while `next` is prepared; `next` is then in flight.
    let overlap = |in_flight: Option<Insert>, next| async move {
        let send = async {
            match &in_flight {
                Some(insert) => insert.execute(client).await,
                None => Ok(()),
            }
        };
        let (sent, next) = tokio::join!(send, next);
        sent?;
        next
    };
    while let Some(r) = cursor.next().await? {
        read_so_far += 1;
        if current.as_deref() != Some(r.visitor_id.as_str()) {
            if let Some(v) = current.take() {
                pending_events += visitor_events.len();
                pending.push((v, std::mem::take(&mut visitor_events)));
                if pending_events >= 50_000 {
                    in_flight = overlap(in_flight, prepare(std::mem::take(&mut pending))).await?;
                    pending_events = 0;
                    progress(read_so_far);
                }
            }
            current = Some(r.visitor_id.clone());
        }
        if ensemble_model::rules::is_signup(&r.ev_type) && !r.ev_contact.is_empty() {
            pairs.push((r.ev_contact.to_string(), r.visitor_id.clone()));
        }
        visitor_events.push((r.written_ms, r.event()));
    }
    if let Some(v) = current.take() {
        pending.push((v, visitor_events));
    }
    let last = overlap(in_flight, prepare(pending)).await?;
    if let Some(insert) = last {
        insert.execute(client).await?;
    }
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
    if let Some(fill) = crate::migrate::view_fill("events_minutely_mv") {
        client.query(&fill).execute().await?;
    }
    client
        .query(&format!("TRUNCATE TABLE {}", ddl_target("rebuild_pending")))
        .execute()
        .await?;
    if ranges {
        let status = crate::ranges::refill(store, campaign).await?;
        if status != crate::ranges::Status::Whole {
            tracing::error!(
                status = status.describe(),
                "figures by range: not whole after the rebuild; run ensemble-processor rebuild-ranges \
                 with every processor stopped"
            );
        }
    }
    // Both, kept or not: `figures_ranges` exists (migration 0008), and an
    // empty table merges at once.
    compact_after_fill(store, &FIGURES_TABLES).await;
    if let Err(e) = clear_carried(client, ddl_target).await {
        tracing::warn!(
            error = %e,
            "ledger: could not empty the sets the rebuild carried (they take room until \
             `ensemble-processor compact` runs)"
        );
    }
    crate::ledger::note_rewrite(client, "rebuild", "done").await?;
    progress(read_so_far);
    Ok(read_so_far)
}
