//! Reads the three per-day counts the reconciliation compares
//! (`ensemble_model::reconcile`): raw events, the ledger's accounted
//! events and the `events` figure, each by local day in the campaign's
//! zone. Three plain aggregates, run by the dashboard on a schedule.

use std::collections::BTreeMap;

use crate::Campaign;
use ensemble_model::figures::{self, Day, Figure};
use ensemble_model::reconcile::Counts;

async fn per_day(
    client: &clickhouse::Client,
    sql: &str,
) -> Result<BTreeMap<Day, i64>, clickhouse::error::Error> {
    let rows: Vec<(u32, i64)> = client.query(sql).fetch_all().await?;
    Ok(rows.into_iter().filter(|(_, n)| *n != 0).collect())
}

/// The campaign's zone as ClickHouse spells it (`'Europe/Paris'`).
fn zone(campaign: &Campaign) -> String {
    format!("'{}'", campaign.timezone.name().replace('\'', ""))
}

/// The local day of a `DateTime` expression, as `figures::Day`.
fn local_day(campaign: &Campaign, datetime: &str) -> String {
    format!("toUInt32(toDate({datetime}, {}))", zone(campaign))
}

/// The three counts as they stand now.
pub async fn counts(
    client: &clickhouse::Client,
    campaign: &Campaign,
) -> Result<Counts, clickhouse::error::Error> {
    let events = per_day(
        client,
        &format!(
            "SELECT {} AS d, toInt64(uniqExact(event_id)) AS n FROM events GROUP BY d",
            local_day(campaign, "ts")
        ),
    )
    .await?;
    // A visitor's rows written before its last tombstone (erasure,
    // retention) no longer count, as when the ledger is read.
    let accounted = per_day(
        client,
        &format!(
            "SELECT {} AS d, toInt64(count()) AS n FROM ledger \
             ANY LEFT JOIN (SELECT visitor_id, max(written_ms) AS last_tombstone FROM ledger \
             WHERE tombstone = 1 GROUP BY visitor_id) USING visitor_id \
             WHERE tombstone = 0 AND written_ms > last_tombstone GROUP BY d",
            local_day(campaign, "toDateTime(intDiv(ms, 1000))")
        ),
    )
    .await?;
    // Bots in (both scopes: `bots = 1` holds what the bots add), every
    // device and placement: each event once, on its day.
    let figures = per_day(
        client,
        &format!(
            "SELECT toUInt32(day) AS d, toInt64(sum(n)) AS n FROM figures \
             WHERE figure = '{}' AND device_filter = '{all}' AND placement_filter = '{all}' \
             GROUP BY d",
            Figure::Events.name(),
            all = figures::ALL,
        ),
    )
    .await?;
    Ok(Counts {
        events,
        accounted,
        figures,
    })
}
