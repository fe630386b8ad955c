//! The analysts' `later_conversions` (migration 0011): the visitors'
//! conversions that are not their person's first, for contacts seen on
//! several visitors. The processor keeps the table in line, so that no
//! table the analysts read holds a contact hash.
//!
//! Erasure deletes its rows with the journeys' (`ledger::forget`).
//!
//! What [`settle`] writes is the difference between what should be there
//! ([`ensemble_model::journeys::later_conversions`] over the ledger's events) and
//! what is: running it twice, or again after a crash, changes nothing, and
//! of two processors settling one contact at once, the one that looks last
//! sees both sign-ups (each writes its ledger rows, then its contact pair,
//! then looks).

use std::collections::{BTreeMap, BTreeSet};

use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use crate::ledger;
use crate::sql::{in_list, lit, IDS_PER_QUERY};
use crate::Campaign;

/// The table in the analysts' database of `client`'s.
async fn table(client: &clickhouse::Client) -> Result<String, clickhouse::error::Error> {
    let database: String = client.query("SELECT currentDatabase()").fetch_one().await?;
    Ok(format!("{database}_sql.later_conversions"))
}

#[derive(Debug, Row, Deserialize)]
struct Stored {
    visitor_id: String,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    n: i64,
}

#[derive(Debug, Row, Deserialize)]
struct Pair {
    contact_hash: String,
    visitor_id: String,
}

/// Brings `later_conversions` in line for the contacts of `pairs`
/// ((contact hash, visitor id): every visitor of each contact, as
/// `shared_contacts` lists them after the batch). Returns the rows written.
pub async fn settle(
    client: &clickhouse::Client,
    campaign: &Campaign,
    pairs: &[(String, String)],
) -> Result<usize, clickhouse::error::Error> {
    if pairs.is_empty() {
        return Ok(0);
    }
    let contacts: BTreeSet<&str> = pairs.iter().map(|(c, _)| c.as_str()).collect();
    let (visitors, events, want) = later_of(client, campaign, pairs, Some(&contacts)).await?;
    // Only these contacts' sign-ups are judged: a visitor's other
    // contacts may be shared with visitors not read here.
    let judged: BTreeSet<Uuid> = events
        .values()
        .flatten()
        .filter(|e| contacts.contains(e.contact.as_str()))
        .map(|e| e.event_id)
        .collect();
    let table = table(client).await?;
    let mut have: BTreeMap<(String, Uuid), i64> = BTreeMap::new();
    for chunk in visitors.chunks(IDS_PER_QUERY) {
        let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let rows: Vec<Stored> = client
            .query(&format!(
                "SELECT visitor_id, event_id, sum(n) AS n FROM {table} WHERE visitor_id IN ({}) \
                 GROUP BY visitor_id, event_id HAVING n != 0",
                in_list(&ids)
            ))
            .fetch_all()
            .await?;
        have.extend(
            rows.into_iter()
                .filter(|r| judged.contains(&r.event_id))
                .map(|r| ((r.visitor_id, r.event_id), r.n)),
        );
    }
    write(client, &table, &want, &have).await
}

/// Brings the whole of `later_conversions` in line with every contact
/// `shared_contacts` lists (after a rebuild or a retention, which change
/// many visitors at once). Returns the rows written.
pub async fn settle_all(
    client: &clickhouse::Client,
    campaign: &Campaign,
) -> Result<usize, clickhouse::error::Error> {
    let pairs: Vec<Pair> = client
        .query("SELECT DISTINCT contact_hash, visitor_id FROM shared_contacts")
        .fetch_all()
        .await?;
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .map(|p| (p.contact_hash, p.visitor_id))
        .collect();
    let (_, _, want) = later_of(client, campaign, &pairs, None).await?;
    // Every stored row is judged: one whose contact is no longer shared
    // (erased, or gone with retention) is taken back.
    let table = table(client).await?;
    let have: Vec<Stored> = client
        .query(&format!(
            "SELECT visitor_id, event_id, sum(n) AS n FROM {table} \
             GROUP BY visitor_id, event_id HAVING n != 0"
        ))
        .fetch_all()
        .await?;
    let have = have
        .into_iter()
        .map(|r| ((r.visitor_id, r.event_id), r.n))
        .collect();
    write(client, &table, &want, &have).await
}

/// The visitors of `pairs`, their events in the ledger, and which of
/// their conversions are later ones (of the contacts in `scope`, or of
/// every contact).
async fn later_of(
    client: &clickhouse::Client,
    campaign: &Campaign,
    pairs: &[(String, String)],
    scope: Option<&BTreeSet<&str>>,
) -> Result<(Vec<String>, Events, BTreeSet<(String, Uuid)>), clickhouse::error::Error> {
    let visitors: Vec<String> = pairs
        .iter()
        .map(|(_, v)| v.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let ids: Vec<&str> = visitors.iter().map(String::as_str).collect();
    let events = ledger::read(client, &ids).await?;
    let want = ensemble_model::journeys::later_conversions(
        campaign,
        events.iter().map(|(v, es)| (v.as_str(), es.as_slice())),
        scope,
    )
    .into_iter()
    .map(|(v, e)| (v.to_owned(), e))
    .collect();
    Ok((visitors, events, want))
}

/// Each visitor's accounted events, as the ledger gives them.
type Events = std::collections::HashMap<String, Vec<ensemble_model::figures::Event>>;

/// Writes what turns `have` into one row of `n` = 1 per `want`.
async fn write(
    client: &clickhouse::Client,
    table: &str,
    want: &BTreeSet<(String, Uuid)>,
    have: &BTreeMap<(String, Uuid), i64>,
) -> Result<usize, clickhouse::error::Error> {
    let mut values: Vec<String> = Vec::new();
    for key @ (v, e) in want {
        let now = have.get(key).copied().unwrap_or(0);
        if now != 1 {
            values.push(format!("({}, toUUID('{e}'), {})", lit(v), 1 - now));
        }
    }
    for (key @ (v, e), n) in have {
        if !want.contains(key) {
            values.push(format!("({}, toUUID('{e}'), {})", lit(v), -n));
        }
    }
    for chunk in values.chunks(IDS_PER_QUERY) {
        client
            .query(&format!(
                "INSERT INTO {table} (visitor_id, event_id, n) VALUES {}",
                chunk.join(",")
            ))
            .execute()
            .await?;
    }
    Ok(values.len())
}
