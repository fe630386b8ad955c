//! Rewriting visitors' ledger: retention (events before a cut-off) and
//! erasure (one person's events), each retracting from the figures and
//! journeys exactly what it removes.

use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use super::account::{Change, ChangeRows};
use super::lists::note_wide;
use super::write::{journey_rows, now_ms, Writer};
use super::{note_rewrite, read};
use crate::sql::{in_list, lit, IDS_PER_QUERY};
use crate::Campaign;
use ensemble_model::figures::{self, Event, Strings};
use ensemble_model::journeys;

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
    if visitors.is_empty() {
        return Ok(0);
    }
    // Running processors forget the histories they keep, before and after.
    note_rewrite(client, "rewrite", "start").await?;
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
            figures::add_between(campaign, all, kept, &mut strings, &mut change);
            journey_changes.push((
                kept[0].0.clone(),
                journeys::change(campaign, &all[0].1, &kept[0].1),
            ));
        }
        let change = Change::new(strings, change.rows(), &figures::summed_ranges(campaign));
        let rows = ChangeRows::of(&change);
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
        let mut writer = Writer::new(campaign, rows.carried(&journey));
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
    note_rewrite(client, "rewrite", "done").await?;
    Ok(dropped)
}

/// Erasure of the person behind `contact_hash`: retracts from the figures
/// every event of `own` visitors (ids only this person used) and, of
/// `shared` visitors (ids others use too: a hashed id behind a shared
/// address, a device several people signed up from), only the events that
/// carry this contact; then forgets this contact's pairs and those of the
/// own visitors. Safe to run again: what is gone contributes nothing.
/// Other visitors' ledger rows may still carry this person's journeys rows
/// in their sets: once the deletes are done, [`clear_carried`] empties
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
/// rows in their sets: once the deletes are done, [`clear_carried`]
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

/// Ledger rows whose carried journeys (`super::carried`) hold a row of
/// an event before `cutoff_ms` (SQL), as [`journeys_before`] tells them
/// (a batch marker's row is at time `written_ms` and day 0).
pub fn carried_journeys_before(campaign: &Campaign, cutoff_ms: u64) -> String {
    let journey = super::carried::set("journey");
    journey.any_sql(&format!(
        "({ms} > 0 AND {ms} < {cutoff_ms}) OR ({day} > toDate(0) AND {day} < {})",
        cutoff_day(campaign, cutoff_ms),
        ms = journey.field_sql("ms", "r"),
        day = journey.field_sql("day", "r"),
    ))
}

/// The local day of `cutoff_ms`, as a ClickHouse `Date` literal.
fn cutoff_day(campaign: &Campaign, cutoff_ms: u64) -> String {
    format!(
        "toDate('{}')",
        figures::date_of(figures::day_of(campaign, cutoff_ms))
    )
}
