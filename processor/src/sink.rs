//! ClickHouse side of a batch, in two steps, each retried with backoff while
//! the store is down: first the raw rows (`events`), then the ledger and the
//! dashboard's figures (`ensemble_core::ledger::account`) for exactly the
//! rows `events` took. Nothing else moves while a step fails.
//!
//! A row the store refuses for its content never blocks the batch: the
//! INSERT is split in halves until the refused rows stand alone, the others
//! are written, and the refused ones are handed back for the dead-letter
//! topic. Only a store that is down or refuses everything (network, auth,
//! disk, schema missing) is retried. Rows go in groups of at most
//! [`MONTHS_PER_INSERT`] months, under the "too many partitions for one
//! INSERT" limit of current ClickHouse.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Datelike;
use ensemble_core::{ledger, Campaign, EventRow, Shutdown};

use crate::chain::{Link, Publisher};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("shutdown while ClickHouse was failing; the batch was not inserted (its offsets were not stored)")]
    ShutdownDuringRetry,
    #[error(
        "this member no longer owns the batch's partitions; its figures are left to the next owner"
    )]
    NoLongerOwner,
    #[error("the batch before was given up; this one is read again with it")]
    BatchBeforeGivenUp,
}

/// Distinct months of event time in one INSERT. `events` is partitioned by
/// month in the server's time zone; current ClickHouse refuses an INSERT
/// that touches more than 100 partitions. 50 UTC months span at most 100
/// months in any zone.
pub const MONTHS_PER_INSERT: usize = 50;

/// What went wrong with an INSERT.
#[derive(Debug)]
pub enum Failure {
    /// The rows themselves were refused (a value the column cannot hold, a
    /// rule of the schema): another INSERT of the same rows fails the same way.
    Content(String),
    /// The store is unavailable or refuses everything: try again later.
    Store(clickhouse::error::Error),
}

/// ClickHouse error codes that blame the data sent, not the server:
/// parse and conversion errors, values out of range, a schema rule
/// (`throwIf` in a column expression, a CONSTRAINT).
const CONTENT_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    25,  // CANNOT_PARSE_ESCAPE_SEQUENCE
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    469, // VIOLATED_CONSTRAINT
];

/// The code of a ClickHouse exception text: `Code: 395, e.displayText() = …`
/// (18.16) or `Code: 395. DB::Exception: …` (current).
pub fn server_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Tells a row the store refuses from a store that is not working.
pub fn classify(e: clickhouse::error::Error) -> Failure {
    use clickhouse::error::Error;
    match &e {
        // The client could not serialise a row (e.g. a time a DateTime
        // cannot represent): nothing was sent, the row is at fault.
        Error::Custom(m) => Failure::Content(m.clone()),
        Error::BadResponse(m) => {
            let too_many_partitions = m.contains("Too many partitions for single INSERT block");
            if too_many_partitions || server_code(m).is_some_and(|c| CONTENT_CODES.contains(&c)) {
                Failure::Content(m.clone())
            } else {
                Failure::Store(e)
            }
        }
        _ => Failure::Store(e),
    }
}

/// Index lists of `rows`, in order, each covering at most
/// [`MONTHS_PER_INSERT`] distinct months.
pub fn month_groups(rows: &[EventRow]) -> Vec<Vec<usize>> {
    let month = |r: &EventRow| r.ts.year() * 12 + r.ts.month0() as i32;
    let months: BTreeSet<i32> = rows.iter().map(month).collect();
    if months.len() <= MONTHS_PER_INSERT {
        return vec![(0..rows.len()).collect()];
    }
    let bounds: Vec<i32> = months.into_iter().step_by(MONTHS_PER_INSERT).collect();
    let mut groups = vec![Vec::new(); bounds.len()];
    for (i, r) in rows.iter().enumerate() {
        let g = bounds.partition_point(|b| *b <= month(r)) - 1;
        groups[g].push(i);
    }
    groups
}

async fn insert_rows(
    client: &clickhouse::Client,
    rows: &[EventRow],
    indices: &[usize],
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client.insert::<EventRow>("events").await?;
    for &i in indices {
        insert.write(&rows[i]).await?;
    }
    insert.end().await
}

/// A row the store refused, by index in the batch, with ClickHouse's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub index: usize,
    pub detail: String,
}

/// Inserts `rows` into `events`; the rows refused for their content are
/// isolated by halving and returned. An error means the store failed
/// (some groups may be in: a retry duplicates them, which counts remove).
pub async fn insert_events(
    client: &clickhouse::Client,
    rows: &[EventRow],
) -> Result<Vec<Refused>, clickhouse::error::Error> {
    let mut refused = Vec::new();
    let mut todo: Vec<Vec<usize>> = month_groups(rows);
    todo.reverse();
    while let Some(indices) = todo.pop() {
        if indices.is_empty() {
            continue;
        }
        let Err(e) = insert_rows(client, rows, &indices).await else {
            continue;
        };
        match classify(e) {
            Failure::Store(e) => return Err(e),
            Failure::Content(detail) if indices.len() == 1 => refused.push(Refused {
                index: indices[0],
                detail,
            }),
            Failure::Content(detail) => {
                tracing::info!(rows = indices.len(), %detail, "store refused rows; splitting the insert to find them");
                let (a, b) = indices.split_at(indices.len() / 2);
                todo.push(b.to_vec());
                todo.push(a.to_vec());
            }
        }
    }
    refused.sort_by_key(|r| r.index);
    Ok(refused)
}

/// Runs `attempt` until it succeeds, with exponential backoff (100 ms
/// doubling to `max_backoff`) while it fails, or until shutdown; before
/// each attempt, while `owner` says this member still owns the rows.
async fn retry<T, F, Fut>(
    step: &'static str,
    rows: usize,
    max_backoff: Duration,
    metrics: &Metrics,
    (shutdown, owner): (&Shutdown, &(dyn Fn() -> bool + Sync)),
    mut attempt: F,
) -> Result<T, SinkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, clickhouse::error::Error>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        if !owner() {
            return Err(SinkError::NoLongerOwner);
        }
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                metrics.insert_failures.inc();
                tracing::warn!(error = %e, step, rows, retry_in_ms = backoff.as_millis() as u64, "insert failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait() => return Err(SinkError::ShutdownDuringRetry),
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// Writes `rows`: the events, then the ledger and figures of the ones the
/// store took (so the figures never count an event `events` does not
/// have). Returns the rows refused for their content, for the dead-letter
/// topic.
///
/// The ledger step runs only while `owner()` says this member still owns
/// the rows' partitions: a member that lost them must not count what the
/// next owner counts (see `handover.rs`). Rows already in `events` are
/// harmless: that table's counts remove duplicates by event id.
///
/// The events' INSERT runs in a task of its own while the ledger is read
/// and the batch's figures computed: neither needs the other, and only the
/// ledger's write waits for both. A failure of either leaves the second
/// step to account from scratch, as does a row refused by `events`.
///
/// With `before`, the batch before may still be writing (`crate::chain`):
/// its visitors are taken from what it hands over, and nothing is written
/// until it ended well (given up: this batch gives up too). Once its own
/// ledger write may start, this batch hands its visitors over in turn
/// through `publish` (`None`: a batch of several databases hands nothing
/// over).
pub async fn insert(
    (client, histories): (&clickhouse::Client, &ledger::Histories),
    (campaign, site): (&Campaign, usize),
    rows: &Arc<Vec<EventRow>>,
    max_backoff: Duration,
    metrics: &Metrics,
    (shutdown, owner): (&Shutdown, &(dyn Fn() -> bool + Sync)),
    (before, publish): (Option<Link>, Option<&Publisher>),
) -> Result<Vec<Refused>, SinkError> {
    let started = Instant::now();
    let mut waited = Duration::ZERO;
    let events = {
        let (client, rows, metrics, shutdown) = (
            client.clone(),
            rows.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            retry(
                "events",
                rows.len(),
                max_backoff,
                &metrics,
                (&shutdown, &|| true),
                || insert_events(&client, &rows),
            )
            .await
        })
    };
    let prepared = match before {
        None => ledger::prepare_after(client, campaign, rows, None, histories).await,
        Some(mut before) => {
            // The time spent waiting for the batch before is not this INSERT's.
            let wait = Instant::now();
            let after = before.after(site).await;
            if after.is_some() {
                metrics.prepared_ahead.inc();
            } else if !before.ended_well().await {
                return Err(SinkError::BatchBeforeGivenUp);
            }
            waited += wait.elapsed();
            let prepared =
                ledger::prepare_after(client, campaign, rows, after.as_deref(), histories).await;
            drop(after);
            let wait = Instant::now();
            if !before.ended_well().await {
                return Err(SinkError::BatchBeforeGivenUp);
            }
            waited += wait.elapsed();
            prepared
        }
    };
    let refused = match events.await {
        Ok(refused) => refused?,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let rows: &[EventRow] = rows;
    let mut prepared = prepared.ok().filter(|_| refused.is_empty());
    // What the batch's visitors are once it is written: for the next batch
    // now, for the cache of histories once it is.
    let after = prepared.as_mut().map(|p| Arc::new(p.take_after()));
    match (publish, &after) {
        (Some(publish), Some(after)) => publish.writing(site, after.clone()),
        (Some(publish), None) => publish.serial(),
        (None, _) => {}
    }
    let kept: Vec<EventRow>;
    let accounted: &[EventRow] = if refused.is_empty() {
        rows
    } else {
        let out: BTreeSet<usize> = refused.iter().map(|r| r.index).collect();
        kept = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| !out.contains(i))
            .map(|(_, r)| r.clone())
            .collect();
        &kept
    };
    let mut attempts = 0;
    let done = retry(
        "ledger",
        accounted.len(),
        max_backoff,
        metrics,
        (shutdown, owner),
        || {
            attempts += 1;
            let prepared = prepared.take();
            async move {
                match prepared {
                    Some(p) => p.write(client, campaign).await,
                    None => ledger::account(client, campaign, accounted).await,
                }
            }
        },
    )
    .await;
    // Written as prepared, at the first attempt: its visitors' histories
    // are known. Otherwise (an attempt failed and may have landed; rows
    // refused; given up) nothing this process keeps is sure any more.
    match (&after, &done) {
        (Some(after), Ok(_)) if attempts == 1 => {
            after.put_into(histories);
        }
        _ => histories.clear(),
    }
    let done = done?;
    for (source, n) in [
        ("cache", done.cached),
        ("batch_before", done.handed_over),
        ("ledger", done.read),
        ("new", done.new),
    ] {
        metrics
            .history_visitors
            .with_label_values(&[source])
            .inc_by(n as u64);
    }
    metrics
        .history_cached
        .with_label_values(&[campaign.id.as_str()])
        .set(histories.events() as i64);
    metrics
        .insert_duration
        .observe(started.elapsed().saturating_sub(waited).as_secs_f64());
    metrics.batch_rows.observe(rows.len() as f64);
    metrics.batches_completed.inc_by(done.completed as u64);
    metrics.inserted.inc_by(accounted.len() as u64);
    metrics
        .inserted_by_campaign
        .with_label_values(&[campaign.id.as_str()])
        .inc_by(accounted.len() as u64);
    Ok(refused)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn server_codes_of_both_versions() {
        assert_eq!(
            server_code("bad response: Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero, e.what() = DB::Exception"),
            Some(395)
        );
        assert_eq!(
            server_code("bad response: Code: 469. DB::Exception: Constraint `c` is violated"),
            Some(469)
        );
        assert_eq!(server_code("network error: connection refused"), None);
    }

    #[test]
    fn content_is_told_apart_from_an_unavailable_store() {
        use clickhouse::error::Error;
        let content = |e: Error| matches!(classify(e), Failure::Content(_));
        assert!(content(Error::Custom(
            "1960-05-01 00:00:00 UTC cannot be represented as DateTime".into()
        )));
        assert!(content(Error::BadResponse(
            "Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero".into()
        )));
        assert!(content(Error::BadResponse(
            "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100)"
                .into()
        )));
        for store in [
            "Code: 60, e.displayText() = DB::Exception: Table x.events doesn't exist",
            "Code: 516. DB::Exception: default: Authentication failed",
            "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space",
            "Code: 252. DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts",
            "Code: 241. DB::Exception: Memory limit (total) exceeded",
        ] {
            assert!(!content(Error::BadResponse(store.into())), "{store}");
        }
        assert!(!content(Error::TimedOut));
        assert!(!content(Error::Network("connection refused".into())));
    }

    fn row_at(y: i32, m: u32) -> EventRow {
        let ts = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).unwrap();
        let msg = ensemble_core::EventMessage::new(
            ensemble_core::EventType::PageView,
            format!("v_{y}_{m}"),
            ts,
        );
        EventRow::new(&msg, Default::default(), Utc::now())
    }

    #[test]
    fn a_batch_over_many_months_goes_in_groups_of_at_most_fifty() {
        let few: Vec<EventRow> = (1..=12).map(|m| row_at(2025, m)).collect();
        assert_eq!(month_groups(&few), vec![(0..12).collect::<Vec<_>>()]);
        // 26 years of monthly backfill, shuffled by year.
        let mut many = Vec::new();
        for y in (2000..2026).rev() {
            for m in 1..=12 {
                many.push(row_at(y, m));
                many.push(row_at(y, m));
            }
        }
        let groups = month_groups(&many);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..many.len()).collect::<Vec<_>>(), "every row once");
        for g in &groups {
            let months: BTreeSet<(i32, u32)> = g
                .iter()
                .map(|&i| (many[i].ts.year(), many[i].ts.month()))
                .collect();
            assert!(months.len() <= MONTHS_PER_INSERT, "{}", months.len());
            assert!(g.windows(2).all(|w| w[0] < w[1]), "batch order kept");
        }
        assert_eq!(groups.len(), 312_usize.div_ceil(MONTHS_PER_INSERT));
    }
}
