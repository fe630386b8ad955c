//! Every figure exact whatever fails between two of a batch's writes, on
//! the real broker and ClickHouse: a view of the ledger that fails once
//! (before every other view, or after some), and the processor or
//! ClickHouse SIGKILLed while a ledger INSERT is between the ledger's part
//! and its views.
//! After each, every stored figure (all tables, all scopes) equals a
//! rebuild from the raw events, and the dashboard's reconciliation agrees;
//! a figure changed behind the processor's back is reported as drift.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use ensemble_core::event::{Consent, EventMessage, EventType, Utm, SCHEMA_VERSION};
use ensemble_core::ledger;
use ensemble_tests::{
    campaign_file, figures_snapshot, group_progress, metric_value, poll_until, produce_raw,
    summed_ranges_agree, unique, workspace_binary, PrivateClickHouse, Service, Wiring,
};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(120);
const ANALYST: &str = "exactly-once-analyst-token-0123";

/// `n` events of `n / 3` new visitors: a scan of a poster, the landing
/// page, and for every other visitor a sign-up, over the first phase.
fn messages(seed: u128, n: u32) -> Vec<EventMessage> {
    let base = Utc
        .with_ymd_and_hms(2025, 1, 18, 9, 0, 0)
        .single()
        .expect("ts");
    (0..n)
        .map(|i| {
            let visitor = i / 3;
            let ts = base
                + chrono::Duration::hours(i64::from(visitor % 200))
                + chrono::Duration::minutes(i64::from(i % 3));
            let kind = match i % 3 {
                0 => EventType::QrScan,
                1 => EventType::PageView,
                _ if visitor % 2 == 0 => EventType::Signup,
                _ => EventType::PageView,
            };
            let signup = kind == EventType::Signup;
            EventMessage {
                v: SCHEMA_VERSION,
                event_id: Uuid::from_u128(seed << 32 | u128::from(i)),
                event_type: kind,
                ts,
                received_at: ts + chrono::Duration::seconds(1),
                ts_clamped: false,
                imported: true,
                visitor_id: format!("v_once_{seed}_{visitor:05}"),
                placement: (i % 3 == 0)
                    .then(|| ["M-CHATELET", "G-NATIONAL"][(visitor % 2) as usize].to_owned()),
                utm: Utm::default(),
                url: None,
                referrer_host: None,
                user_agent: Some(
                    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) Mobile/15E148".into(),
                ),
                bot: false,
                repeat: false,
                action: None,
                contact_hash: signup
                    .then(|| format!("{:064x}", (seed << 32) | u128::from(visitor))),
                consent: signup.then_some(Consent {
                    results: true,
                    newsletter: false,
                }),
                custom_name: None,
                props: Default::default(),
            }
        })
        .collect()
}

struct Run {
    w: Wiring,
    processor: Option<Service>,
    dashboard: Service,
}

impl Run {
    async fn start(name: &str) -> Self {
        Self::start_on(Wiring::new(name).await).await
    }

    async fn start_on(w: Wiring) -> Self {
        Self::start_with(w, &[]).await
    }

    /// [`Run::start_on`], the processor given `more` arguments.
    async fn start_with(w: Wiring, more: &[&str]) -> Self {
        let processor = Some(start_processor_with(&w, more));
        let dashboard = start_dashboard(&w);
        processor
            .as_ref()
            .expect("processor")
            .wait_ready("processor", WAIT)
            .await;
        dashboard.wait_ready("dashboard", WAIT).await;
        Self {
            w,
            processor,
            dashboard,
        }
    }

    async fn sql(&self, sql: &str) {
        self.w
            .store
            .client()
            .query(sql)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn count(&self, sql: &str) -> u64 {
        self.w
            .store
            .client()
            .query(sql)
            .fetch_one()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn produce(&self, messages: &[EventMessage]) {
        let encoded: Vec<(String, Vec<u8>)> = messages
            .iter()
            .map(|m| (m.visitor_id.clone(), m.encode()))
            .collect();
        produce_raw(&self.w.brokers, &self.w.topic, &encoded)
            .await
            .expect("produce");
    }

    /// Waits until the group has committed everything in the topic.
    async fn drained(&self) {
        poll_until(
            "the processor group at the end of the topic",
            WAIT,
            || async {
                let (done, high) = group_progress(&self.w.brokers, &self.w.topic, &self.w.group)
                    .await
                    .ok()?;
                (high > 0 && done == high).then_some(())
            },
        )
        .await;
    }

    fn processor_metric(&self, series: &str) -> f64 {
        let p = self.processor.as_ref().expect("processor running");
        p.get("/metrics")
            .and_then(|(_, body)| metric_value(&body, series))
            .unwrap_or(0.0)
    }

    /// Every figure equals a rebuild from `events`, the summed ranges agree
    /// with `figures`, and the dashboard's reconciliation finds no drift.
    async fn assert_exact(&mut self, events: u64) {
        assert_eq!(
            self.count("SELECT uniqExact(event_id) FROM events").await,
            events
        );
        assert_eq!(
            self.count("SELECT count() FROM ledger WHERE tombstone = 0")
                .await,
            events,
            "each event accounted once"
        );
        let campaign = ensemble_core::Campaign::load(&campaign_file()).expect("campaign");
        let counts = ensemble_core::reconciliation::counts(&self.w.store.client(), &campaign)
            .await
            .expect("counts");
        assert_eq!(counts.figures, counts.accounted, "figures per day = ledger");
        assert_eq!(counts.accounted, counts.events, "ledger per day = events");
        if let Err(e) = summed_ranges_agree(&self.w.store, &campaign).await {
            panic!("the summed ranges disagree with the figures: {e}");
        }
        let live = figures_snapshot(&self.w.store).await;
        assert!(live.len() > 100, "{} values", live.len());
        // A rebuild from the raw events (processor stopped, as documented).
        if let Some(mut p) = self.processor.take() {
            p.terminate(Duration::from_secs(30));
        }
        ensemble_core::rebuild::rebuild(&self.w.store, &campaign, |_| {})
            .await
            .expect("rebuild");
        // The summed ranges were refilled from the rebuilt figures, whole.
        let state = ensemble_core::ranges::state(&self.w.store.client())
            .await
            .expect("ranges state");
        assert!(
            matches!(state, Some((_, true))),
            "summed ranges not whole after the rebuild: {state:?}"
        );
        let rebuilt = figures_snapshot(&self.w.store).await;
        let differ: Vec<_> = differences(&live, &rebuilt).into_iter().take(10).collect();
        assert!(
            differ.is_empty(),
            "{} values, differences: {differ:#?}",
            live.len()
        );
    }

    /// The dashboard's reconciliation finds no drift, then
    /// [`Run::assert_exact`].
    async fn assert_agreed_and_exact(&mut self, events: u64) {
        let r = self.reconciliation(true).await;
        assert_eq!(r["drift"], serde_json::json!([]), "{r}");
        self.assert_exact(events).await;
    }

    /// `/api/live`'s reconciliation once two checks have run.
    async fn reconciliation(&self, agree: bool) -> serde_json::Value {
        poll_until("the reconciliation to settle", WAIT, || async {
            let live = self.dashboard.get_json("/api/live", ANALYST);
            let r = live["reconciliation"].clone();
            (r["agree"] == serde_json::json!(agree)).then_some(r)
        })
        .await
    }
}

/// Each stored value that differs from the rebuild's, or that only one has.
fn differences(
    live: &BTreeMap<String, (i64, i64)>,
    rebuilt: &BTreeMap<String, (i64, i64)>,
) -> Vec<String> {
    live.iter()
        .filter(|(k, v)| rebuilt.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: {v:?} vs rebuilt {:?}", rebuilt.get(k)))
        .chain(
            rebuilt
                .iter()
                .filter(|(k, _)| !live.contains_key(*k))
                .map(|(k, v)| format!("{k}: missing, rebuilt {v:?}")),
        )
        .collect()
}

fn start_processor(w: &Wiring) -> Service {
    start_processor_with(w, &[])
}

fn start_processor_with(w: &Wiring, more: &[&str]) -> Service {
    let campaign = campaign_file().display().to_string();
    let mut args = vec!["--campaign", &campaign, "--group-id", &w.group];
    args.extend(w.kafka_args());
    args.extend(w.clickhouse_args());
    args.extend(["--flush-interval-ms", "200", "--insert-retry-max-ms", "500"]);
    args.extend(more);
    Service::start(&workspace_binary("ensemble-processor"), &args, &[]).expect("processor")
}

fn start_dashboard(w: &Wiring) -> Service {
    let campaign = campaign_file().display().to_string();
    let mut args = vec![
        "--campaign",
        &campaign,
        "--analyst-tokens",
        ANALYST,
        "--processor-group",
        &w.group,
        "--reconcile-interval-s",
        "1",
    ];
    args.extend(w.kafka_args().into_iter().take(4));
    args.extend(w.clickhouse_args());
    Service::start(&workspace_binary("ensemble-dashboard"), &args, &[]).expect("dashboard")
}

/// A view of the ledger that fails while `fault_switch` holds a row, named
/// so that ClickHouse runs it before (`a_…`) or after (`g_…`, between
/// the figures' views and the journeys') some of the others.
async fn failing_view(run: &Run, name: &str) {
    run.sql("CREATE TABLE IF NOT EXISTS fault_switch (engaged UInt8) ENGINE = Memory")
        .await;
    run.sql("CREATE TABLE IF NOT EXISTS fault_sink (x UInt8) ENGINE = Memory")
        .await;
    run.sql(&format!(
        "CREATE MATERIALIZED VIEW {name} TO fault_sink AS SELECT \
         throwIf(toUInt8(tombstone + 1) IN (SELECT engaged FROM fault_switch)) AS x FROM ledger"
    ))
    .await;
}

async fn view_fails_once(name: &str, view: &str, seed: u128) {
    let mut run = Run::start(name).await;
    // Some history first, so that the failing batch changes known visitors too.
    let before = messages(seed, 150);
    run.produce(&before).await;
    run.drained().await;
    failing_view(&run, view).await;
    run.sql("INSERT INTO fault_switch VALUES (1)").await;
    let after = messages(seed + 1, 300);
    run.produce(&after).await;
    poll_until("the ledger INSERT to fail", WAIT, || async {
        (run.processor_metric("ensemble_processor_insert_failures_total") >= 1.0).then_some(())
    })
    .await;
    let landed = run
        .count("SELECT count() FROM ledger WHERE tombstone = 0")
        .await;
    assert!(
        landed > 150,
        "the ledger's part landed before the failing view ({landed} rows)"
    );
    run.sql("TRUNCATE TABLE fault_switch").await;
    run.drained().await;
    run.sql(&format!("DROP TABLE {view}")).await;
    assert!(
        run.processor_metric("ensemble_processor_batches_completed_total") >= 1.0,
        "the failed batch was completed by the processor"
    );
    run.assert_agreed_and_exact(450).await;
}

#[tokio::test]
async fn a_view_failing_before_the_others_leaves_no_figure_short() {
    view_fails_once("once_view_first", "a_fault_mv", 1 << 20).await;
}

#[tokio::test]
async fn a_view_failing_after_some_others_leaves_no_figure_short() {
    view_fails_once("once_view_middle", "g_fault_mv", 2 << 20).await;
}

/// Batches of 30 rows, each read and computed while the one before writes
/// (`processor/src/chain.rs`), the returning visitors' events shuffled so
/// that consecutive batches share visitors; a view fails while several
/// batches wait on the first one's INSERT, then works again. The batch
/// after a failing one took its visitors from it, not from the ledger:
/// the figures must still equal a rebuild.
#[tokio::test]
async fn batches_prepared_while_the_one_before_fails_stay_exact() {
    let mut run =
        Run::start_with(Wiring::new("once_ahead").await, &["--batch-max-rows", "30"]).await;
    let seed = 6 << 20;
    run.produce(&messages(seed, 150)).await;
    run.drained().await;
    // The same 50 visitors again, a day later, in a scrambled order.
    let again = returning(seed, 150);
    let ahead = run.processor_metric("ensemble_processor_batches_prepared_ahead_total");
    failing_view(&run, "a_fault_mv").await;
    run.sql("INSERT INTO fault_switch VALUES (1)").await;
    run.produce(&again).await;
    poll_until("a ledger INSERT to fail", WAIT, || async {
        (run.processor_metric("ensemble_processor_insert_failures_total") >= 2.0).then_some(())
    })
    .await;
    run.sql("TRUNCATE TABLE fault_switch").await;
    run.drained().await;
    run.sql("DROP TABLE a_fault_mv").await;
    eprintln!(
        "DEBUG ahead {} failures {} completed {}",
        run.processor_metric("ensemble_processor_batches_prepared_ahead_total"),
        run.processor_metric("ensemble_processor_insert_failures_total"),
        run.processor_metric("ensemble_processor_batches_completed_total")
    );
    assert!(
        run.processor_metric("ensemble_processor_batches_prepared_ahead_total") > ahead,
        "no batch was prepared while the one before was writing"
    );
    assert!(
        run.processor_metric("ensemble_processor_batches_completed_total") >= 1.0,
        "the failed batch was completed by the processor"
    );
    run.assert_agreed_and_exact(300).await;
}

/// The same visitors again a day later, new event ids (a second sign-up
/// of the same person), in a scrambled order.
fn returning(seed: u128, n: u32) -> Vec<EventMessage> {
    let mut again = messages(seed, n);
    for (i, m) in again.iter_mut().enumerate() {
        m.event_id = Uuid::from_u128((seed + 1) << 32 | i as u128);
        m.ts += chrono::Duration::days(1);
        m.received_at += chrono::Duration::days(1);
        if let Some(c) = m.contact_hash.as_mut() {
            c.replace_range(0..1, "f");
        }
    }
    again.sort_by_key(|m| (m.event_id.as_u128().wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 64);
    again
}

/// A migrated database with the summed ranges' views (what the processor
/// makes at its start) and in `events` two visits of the same 30 visitors,
/// a day apart (`messages`, `returning`), nothing accounted yet.
struct Visits {
    store: ensemble_core::StoreConfig,
    client: clickhouse::Client,
    campaign: ensemble_core::Campaign,
    history: Vec<ensemble_core::EventRow>,
    later: Vec<ensemble_core::EventRow>,
}

async fn two_visits(database: &str, seed: u128) -> Visits {
    let store = ensemble_tests::migrated_database(database).await;
    let client = store.client();
    let campaign = ensemble_core::Campaign::load(&campaign_file()).expect("campaign");
    let enricher = ensemble_processor::enrich::Enricher::new();
    let rows = |ms: &[EventMessage]| -> Vec<ensemble_core::EventRow> {
        ms.iter()
            .map(|m| ensemble_core::EventRow::new(m, enricher.enrich(&campaign, m), Utc::now()))
            .collect()
    };
    ensemble_core::ranges::ensure(&store, &campaign)
        .await
        .expect("summed ranges");
    let history = rows(&messages(seed, 90));
    let later = rows(&returning(seed, 90));
    let mut events = client
        .insert::<ensemble_core::EventRow>("events")
        .await
        .expect("insert");
    for r in history.iter().chain(&later) {
        events.write(r).await.expect("event row");
    }
    events.end().await.expect("events");
    Visits {
        store,
        client,
        campaign,
        history,
        later,
    }
}

/// Two batches of the same visitors, the second read and computed before
/// the first is written (as the processor does while the first one's
/// INSERT runs), then both written in order: the figures against a
/// rebuild from `events`. Without timing luck: the processor's own runs
/// mostly find the first batch's rows landed by the time they read.
async fn second_batch_computed_before_the_first_is_written(handed_over: bool) -> Vec<String> {
    let Visits {
        store,
        client,
        campaign,
        history,
        later,
    } = two_visits("it_once_ahead", 7 << 20).await;
    // The first batch, and the second with one of the first's events again
    // (a redelivery across the two).
    let (first, rest) = later.split_at(45);
    let mut second = rest.to_vec();
    second.push(first[0].clone());
    ledger::account(&client, &campaign, &history)
        .await
        .expect("history");
    let mut a = ledger::prepare(&client, &campaign, first)
        .await
        .expect("first");
    let after = a.take_after();
    let b = ledger::prepare_after(
        &client,
        &campaign,
        &second,
        handed_over.then_some(&after),
        &ledger::Histories::new(0),
    )
    .await
    .expect("second");
    a.write(&client, &campaign).await.expect("write first");
    b.write(&client, &campaign).await.expect("write second");
    let accounted: u64 = client
        .query("SELECT count() FROM ledger WHERE tombstone = 0")
        .fetch_one()
        .await
        .expect("ledger");
    let live = figures_snapshot(&store).await;
    ensemble_core::rebuild::rebuild(&store, &campaign, |_| {})
        .await
        .expect("rebuild");
    let rebuilt = figures_snapshot(&store).await;
    let mut differ = differences(&live, &rebuilt);
    if accounted != 180 {
        differ.push(format!("{accounted} events in the ledger, 180 sent"));
    }
    differ
}

#[tokio::test]
async fn a_batch_computed_before_the_one_before_is_written_counts_as_if_after() {
    let differ = second_batch_computed_before_the_first_is_written(true).await;
    assert!(differ.is_empty(), "{differ:#?}");
    // What the hand-over replaces, reading the ledger before the first
    // batch landed, counts the shared visitors wrong: the test can tell.
    let differ = second_batch_computed_before_the_first_is_written(false).await;
    assert!(
        !differ.is_empty(),
        "reading the ledger early went unnoticed"
    );
}

/// The processor's cache of histories (`ledger::Histories`) across a
/// ledger rewrite by another process: one returning visitor erased (its
/// ledger rewritten, its rows deleted from `events`) between two batches.
/// The batch after it must read that visitor's history again; the figures
/// are compared with a rebuild from what `events` still holds. With
/// `noted` false the rewrite's notes are removed, as if the cache could
/// not tell: it then takes the stale history, and the test can tell.
async fn returning_after_a_rewrite(noted: bool) -> (ledger::Accounted, Vec<String>) {
    let Visits {
        store,
        client,
        campaign,
        history,
        later,
    } = two_visits("it_once_cache", 9 << 20).await;
    let (first, second) = later.split_at(45);
    let histories = ledger::Histories::new(10_000);
    let account = async |rows: &[ensemble_core::EventRow]| {
        let mut p = ledger::prepare_after(&client, &campaign, rows, None, &histories)
            .await
            .expect("prepare");
        let after = p.take_after();
        let done = p.write(&client, &campaign).await.expect("write");
        after.put_into(&histories);
        done
    };
    let done = account(&history).await;
    assert_eq!(
        (done.read, done.new, done.cached),
        (0, 30, 0),
        "new to an empty ledger: nothing read"
    );
    let done = account(first).await;
    assert_eq!(
        done.read, 0,
        "every visitor of the first batch kept: {done:?}"
    );
    assert!(done.cached > 0);
    // Erased: a visitor who comes back in the batch after.
    let erased = second[0].visitor_id.clone();
    ledger::rewrite(
        &client,
        &campaign,
        |t| store.ddl_target(t),
        std::slice::from_ref(&erased),
        |_| false,
    )
    .await
    .expect("rewrite");
    let gone: Vec<String> = history
        .iter()
        .chain(first)
        .filter(|r| r.visitor_id == erased)
        .map(|r| format!("toUUID('{}')", r.event_id))
        .collect();
    client
        .query(&format!(
            "ALTER TABLE events DELETE WHERE event_id IN ({})",
            gone.join(",")
        ))
        .execute()
        .await
        .expect("delete the erased events");
    poll_until("the erased events deleted", WAIT, || async {
        client
            .query("SELECT count() FROM events WHERE visitor_id = ?")
            .bind(&erased)
            .fetch_one::<u64>()
            .await
            .ok()
            .filter(|n| *n as usize == second.iter().filter(|r| r.visitor_id == erased).count())
    })
    .await;
    if !noted {
        client
            .query("TRUNCATE TABLE ledger_rewrites")
            .execute()
            .await
            .expect("notes removed");
    }
    let done = account(second).await;
    let live = figures_snapshot(&store).await;
    ensemble_core::rebuild::rebuild(&store, &campaign, |_| {})
        .await
        .expect("rebuild");
    let rebuilt = figures_snapshot(&store).await;
    (done, differences(&live, &rebuilt))
}

#[tokio::test]
async fn kept_histories_are_read_again_after_another_process_rewrote_the_ledger() {
    let (done, differ) = returning_after_a_rewrite(true).await;
    assert!(differ.is_empty(), "{differ:#?}");
    assert_eq!(done.cached, 0, "every history read again: {done:?}");
    assert!(done.read > 0);
    let (done, differ) = returning_after_a_rewrite(false).await;
    assert!(done.cached > 0, "{done:?}");
    assert!(
        !differ.is_empty(),
        "a stale history taken from the cache went unnoticed"
    );
}

/// A view of the ledger that sleeps 3 s, named to run after the figures'
/// views and before the journeys'; returns once a ledger INSERT of the
/// processor is in its views: still running, its part landed (more than
/// `accounted` rows), the views not all run.
async fn ledger_insert_held_in_a_slow_view(run: &Run, accounted: u64) {
    run.sql("CREATE TABLE IF NOT EXISTS slow_sink (x UInt8) ENGINE = Memory")
        .await;
    run.sql(
        "CREATE MATERIALIZED VIEW g_slow_mv TO slow_sink AS \
         SELECT toUInt8(sleep(3)) AS x FROM ledger LIMIT 1",
    )
    .await;
    poll_until("a ledger INSERT in its views", WAIT, || async {
        let landed = run
            .count("SELECT count() FROM ledger WHERE tombstone = 0")
            .await;
        let running = run
            .count(
                "SELECT count() FROM system.processes \
                 WHERE query_id LIKE 'ensemble-ledger-batch-%' AND written_rows > 0",
            )
            .await;
        (landed > accounted && running > 0).then_some(())
    })
    .await;
}

/// The processor SIGKILLed while its ledger INSERT waits in a slow view
/// (the ledger's part landed, the views not all run), then started again.
#[tokio::test]
async fn the_processor_killed_between_the_ledger_and_its_views_recovers() {
    let mut run = Run::start("once_kill").await;
    let seed = 3 << 20;
    run.produce(&messages(seed, 150)).await;
    run.drained().await;
    let held = ledger_insert_held_in_a_slow_view(&run, 150);
    run.produce(&messages(seed + 1, 300)).await;
    held.await;
    if let Some(p) = run.processor.as_mut() {
        p.kill();
    }
    run.sql("DROP TABLE g_slow_mv").await;
    run.processor = Some(start_processor(&run.w));
    run.drained().await;
    run.assert_agreed_and_exact(450).await;
}

/// ClickHouse SIGKILLed while the processor's ledger INSERT waits in a
/// slow view (the ledger's part on disk, the views not all run), then
/// started again on the same data: the processor, which kept retrying,
/// completes the batch.
#[tokio::test]
async fn clickhouse_killed_between_the_ledger_and_its_views_recovers() {
    let mut ch = PrivateClickHouse::start().expect("private clickhouse");
    let store = ensemble_core::StoreConfig::new(ch.url(), unique("it_once_ch_kill"));
    ensemble_core::migrate::migrate(&store)
        .await
        .expect("migrate");
    let mut run = Run::start_on(Wiring::with_store("once_ch_kill", store).await).await;
    let seed = 5 << 20;
    run.produce(&messages(seed, 150)).await;
    run.drained().await;
    let held = ledger_insert_held_in_a_slow_view(&run, 150);
    run.produce(&messages(seed + 1, 300)).await;
    held.await;
    ch.stop();
    let failures = run.processor_metric("ensemble_processor_insert_failures_total");
    poll_until("the processor to see the store gone", WAIT, || async {
        (run.processor_metric("ensemble_processor_insert_failures_total") > failures).then_some(())
    })
    .await;
    ch.restart().expect("clickhouse back on the same data");
    run.sql("DROP TABLE g_slow_mv").await;
    let ledger = run
        .count("SELECT count() FROM ledger WHERE tombstone = 0")
        .await;
    assert!(ledger > 150, "{ledger} ledger rows");
    run.drained().await;
    assert!(
        run.processor_metric("ensemble_processor_batches_completed_total") >= 1.0,
        "the batch whose views ClickHouse did not finish was completed"
    );
    run.assert_agreed_and_exact(450).await;
}

/// A figure changed behind the processor's back is drift: the dashboard
/// says so (`/api/live`, the gauges) once two checks agree, and stops
/// once the figures are right again.
#[tokio::test]
async fn the_reconciliation_reports_figures_that_drift() {
    let run = Run::start("once_drift").await;
    run.produce(&messages(4 << 20, 90)).await;
    run.drained().await;
    run.reconciliation(true).await;
    let tamper = |n: i64| {
        format!(
            "INSERT INTO figures (figure, bots, device_filter, placement_filter, first_day, \
             last_day, day, n) VALUES ('events', 1, '*', '*', '2025-01-19', '2025-01-19', \
             '2025-01-19', {n})"
        )
    };
    run.sql(&tamper(-7)).await;
    let r = run.reconciliation(false).await;
    assert_eq!(r["drift"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r["drift"][0]["day"], "2025-01-19", "{r}");
    assert_eq!(r["drift"][0]["figures_minus_accounted"], -7, "{r}");
    assert_eq!(r["drift"][0]["accounted_minus_events"], 0, "{r}");
    poll_until("the drift gauge", WAIT, || async {
        let (_, body) = run.dashboard.get("/metrics")?;
        let v = metric_value(
            &body,
            "ensemble_pipeline_figures_drift_events{between=\"figures_ledger\"}",
        )?;
        (v == 7.0).then_some(())
    })
    .await;
    run.sql(&tamper(7)).await;
    run.reconciliation(true).await;
}
