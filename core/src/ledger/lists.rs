//! What the ledger keeps beside the events: the wide visitors (active on
//! more days than the figures hold per visitor), which visitors signed up
//! with which contact and which contacts are shared, and the question-time
//! correction for those.

use std::collections::{BTreeMap, BTreeSet};

use clickhouse::Row;
use serde::Deserialize;

use super::read;
use crate::sql::{in_list, lit, IDS_PER_QUERY};
use crate::Campaign;
use ensemble_model::figures::{self, Event, OwnedRow};

/// Lists in `wide_visitors` those of `visitors` (id, every accounted event)
/// active on more than `figures::WIDE_DAYS` days, with their span.
pub(crate) async fn note_wide<'v>(
    client: &clickhouse::Client,
    campaign: &Campaign,
    visitors: impl Iterator<Item = (&'v str, &'v [Event])>,
) -> Result<(), clickhouse::error::Error> {
    insert_wide(client, &wide_values(campaign, visitors)).await
}

/// The `wide_visitors` rows of `visitors` (see [`note_wide`]), as VALUES tuples.
pub(crate) fn wide_values<'v>(
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

pub(crate) async fn insert_wide(
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
pub(crate) async fn insert_pairs<C: AsRef<str>, V: AsRef<str>>(
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
pub(crate) async fn note_contacts(
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

/// The visitors listed as sharing a contact with another visitor.
pub async fn shared_visitors(
    client: &clickhouse::Client,
) -> Result<Vec<String>, clickhouse::error::Error> {
    client
        .query("SELECT DISTINCT visitor_id FROM shared_contacts ORDER BY visitor_id")
        .fetch_all()
        .await
}
