//! SQL access for analysts (docs/figures.md "SQL access for analysts"): a simulated campaign goes
//! through the collector and the processor; the analysts' views
//! (`<database>_sql.touches`, `conversions`, `credits`, `placement_days`)
//! give the dashboard API's totals; the read-only `ensemble_analyst` user
//! of the local stack reads them and cannot read the events, the ledger or
//! the figures, write, create or lift its limits.

use std::collections::BTreeMap;
use std::time::Duration;

use ensemble_core::{Campaign, StoreConfig};
use ensemble_tests::sim::{send_import, simulate, SimConfig};
use ensemble_tests::{
    campaign_file, clickhouse_url, group_progress, poll_until, workspace_binary, Service, Wiring,
};
use serde_json::Value;

const IMPORT: &str = "sql-import-token-0123456789";
const ANALYST: &str = "sql-analyst-token-0123456789";
/// The one database the local stack's `ensemble_analyst` may read besides
/// the demo's (deploy/local/clickhouse-users.xml): this test's.
const DATABASE: &str = "it_sql_access";

fn analyst_password() -> String {
    std::env::var("ENSEMBLE_ANALYST_SQL_PASSWORD").unwrap_or_else(|_| "analyst-local".into())
}

fn start(bin: &str, args: &[&str]) -> Service {
    Service::start(&workspace_binary(bin), args, &[]).expect(bin)
}

/// Runs `sql` as the analysts' user; the server's answer or its error.
async fn as_analyst(sql: &str) -> Result<String, String> {
    let response = reqwest::Client::new()
        .post(clickhouse_url())
        .query(&[
            ("user", "ensemble_analyst"),
            ("password", &analyst_password()),
        ])
        .body(sql.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let ok = response.status().is_success();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if ok {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `(key, value)` rows of a two-column query as the default user.
async fn pairs(store: &StoreConfig, sql: &str) -> BTreeMap<String, f64> {
    store
        .client()
        .query(sql)
        .fetch_all::<(String, f64)>()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(1.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_views_give_the_api_totals_and_the_analyst_reads_nothing_else() {
    let store = StoreConfig::new(clickhouse_url(), DATABASE);
    let server = store.server_client();
    for db in [store.database.clone(), store.sql_database()] {
        server
            .query(&format!("DROP DATABASE IF EXISTS {db}"))
            .execute()
            .await
            .expect("drop the last run's database");
    }
    ensemble_core::migrate::migrate(&store)
        .await
        .expect("migrate");

    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    let sim = simulate(
        &campaign,
        &SimConfig {
            seed: 1605,
            people: 3_000,
            ..SimConfig::default()
        },
    );
    let w = Wiring::with_store("sql_access", store.clone()).await;
    let c = campaign_file().display().to_string();
    let mut args = vec![
        "--campaign",
        &c,
        "--import-token",
        IMPORT,
        "--contact-secret",
        "sql-access-secret-0123456789",
    ];
    args.extend(w.kafka_args());
    let ingest = start("ensemble-ingest", &args);
    let mut args = vec!["--campaign", &c, "--group-id", &w.group];
    args.extend(w.kafka_args());
    args.extend(w.clickhouse_args());
    let processor = start("ensemble-processor", &args);
    let mut args = vec![
        "--campaign",
        &c,
        "--analyst-tokens",
        ANALYST,
        "--processor-group",
        &w.group,
    ];
    args.extend(w.kafka_args());
    args.extend(w.clickhouse_args());
    let dashboard = start("ensemble-dashboard", &args);
    for (s, name) in [
        (&ingest, "ingest"),
        (&processor, "processor"),
        (&dashboard, "dashboard"),
    ] {
        s.wait_ready(name, Duration::from_secs(60)).await;
    }
    let (accepted, _) = send_import(&ingest.base(), IMPORT, &sim.events, 500, |_| {})
        .await
        .expect("send");
    poll_until(
        "the processor at the end of the topic",
        Duration::from_secs(300),
        || async {
            let (done, high) = group_progress(&w.brokers, &w.topic, &w.group).await.ok()?;
            (done == high && high == accepted as i64).then_some(())
        },
    )
    .await;
    let sql = store.sql_database();

    // Touches per channel = the channels endpoint's touches, summed over phases.
    let channels = dashboard.get_json("/api/channels", ANALYST);
    let mut api_touches: BTreeMap<String, f64> = BTreeMap::new();
    for row in channels["rows"].as_array().expect("rows") {
        *api_touches
            .entry(row["channel"].as_str().expect("channel").to_owned())
            .or_default() += row["touches"].as_f64().expect("touches");
    }
    api_touches.retain(|_, n| *n > 0.0);
    let view_touches = pairs(
        &store,
        &format!("SELECT channel, toFloat64(count()) FROM {sql}.touches GROUP BY channel"),
    )
    .await;
    assert!(
        view_touches.values().sum::<f64>() > 500.0,
        "a real campaign: {view_touches:?}"
    );
    assert_eq!(
        view_touches, api_touches,
        "touches per channel: view vs API"
    );

    // Conversions and every model's credit per channel = the attribution endpoint's.
    let attribution = dashboard.get_json("/api/attribution", ANALYST);
    let conversions: u64 = store
        .client()
        .query(&format!("SELECT count() FROM {sql}.conversions"))
        .fetch_one()
        .await
        .expect("conversions");
    assert!(conversions > 100, "{conversions}");
    assert_eq!(
        Some(conversions),
        attribution["conversions"].as_u64(),
        "conversions"
    );
    let credits = pairs(
        &store,
        &format!(
            "SELECT concat(model, '/', channel), sum(credit) FROM {sql}.credits GROUP BY model, channel"
        ),
    )
    .await;
    let mut api_credits: BTreeMap<String, f64> = BTreeMap::new();
    for (model, by_channel) in attribution["by_channel"].as_object().expect("by_channel") {
        // The data-driven models credit channels over every path at
        // question time, not conversion by conversion: no `credits` rows.
        if ["markov", "shapley"].contains(&model.as_str()) {
            continue;
        }
        for (channel, credit) in by_channel.as_object().expect("channels") {
            let credit = credit.as_f64().expect("credit");
            if credit.abs() > 1e-9 {
                api_credits.insert(format!("{model}/{channel}"), credit);
            }
        }
    }
    assert_eq!(
        credits.keys().collect::<Vec<_>>(),
        api_credits.keys().collect::<Vec<_>>(),
        "credited model/channel pairs"
    );
    for (k, v) in &credits {
        assert!(
            close(*v, api_credits[k]),
            "{k}: view {v} vs API {}",
            api_credits[k]
        );
    }
    // Each conversion's credit under one model sums to 1.
    let off: u64 = store
        .client()
        .query(&format!(
            "SELECT count() FROM (SELECT signup_event_id, model, sum(credit) AS s FROM {sql}.credits \
             GROUP BY signup_event_id, model HAVING abs(s - 1) > 1e-9)"
        ))
        .fetch_one()
        .await
        .expect("shares");
    assert_eq!(off, 0, "conversions whose shares do not sum to 1");

    // Scans and visits per placement = the placements endpoint's.
    let placements = dashboard.get_json("/api/placements", ANALYST);
    let of_api = |p: &Value, field: &str| -> BTreeMap<String, f64> {
        p["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["code"].as_str().expect("code").to_owned(),
                    r[field].as_f64().expect("number"),
                )
            })
            .filter(|(_, n)| *n > 0.0)
            .collect()
    };
    for (field, column) in [("scans", "scans"), ("visits", "visits")] {
        let view = pairs(
            &store,
            &format!(
                "SELECT placement, toFloat64(sum({column})) AS n FROM {sql}.placement_days \
                 GROUP BY placement HAVING n > 0"
            ),
        )
        .await;
        assert_eq!(view, of_api(&placements, field), "{field} per placement");
    }
    // Distinct scanners of one day = the endpoint's for that day.
    let day: String = store
        .client()
        .query(&format!(
            "SELECT toString(day) FROM {sql}.placement_days GROUP BY day ORDER BY sum(scans) DESC, day LIMIT 1"
        ))
        .fetch_one()
        .await
        .expect("busiest day");
    let view = pairs(
        &store,
        &format!(
            "SELECT placement, toFloat64(sum(scanners)) AS n FROM {sql}.placement_days \
             WHERE day = toDate('{day}') GROUP BY placement HAVING n > 0"
        ),
    )
    .await;
    let api = dashboard.get_json(&format!("/api/placements?from={day}&to={day}"), ANALYST);
    assert!(!view.is_empty());
    assert_eq!(view, of_api(&api, "unique_scanners"), "scanners on {day}");

    // The analysts' user: the views, nothing else.
    for v in ["touches", "conversions", "credits", "placement_days"] {
        let n = as_analyst(&format!("SELECT count() FROM {sql}.{v}"))
            .await
            .unwrap_or_else(|e| panic!("the analyst reads {v}: {e}"));
        let mine: u64 = store
            .client()
            .query(&format!("SELECT count() FROM {sql}.{v}"))
            .fetch_one()
            .await
            .expect("count");
        assert_eq!(n.trim(), mine.to_string(), "{v}");
    }
    // No table the analyst reads holds a contact hash.
    let hashes: Vec<String> = store
        .client()
        .query("SELECT DISTINCT contact_hash FROM events WHERE contact_hash != ''")
        .fetch_all()
        .await
        .expect("hashes");
    assert!(hashes.len() > 100, "{} sign-ups", hashes.len());
    let tables: Vec<String> = store
        .client()
        .query(&format!(
            "SELECT name FROM system.tables WHERE database = '{sql}' AND engine NOT LIKE '%View' ORDER BY name"
        ))
        .fetch_all()
        .await
        .expect("tables");
    assert_eq!(tables, ["journeys", "later_conversions"]);
    let mut readable = String::new();
    for t in &tables {
        readable.push_str(
            &as_analyst(&format!("SELECT * FROM {sql}.{t} FORMAT TSV"))
                .await
                .unwrap_or_else(|e| panic!("the analyst reads {t}: {e}")),
        );
    }
    assert!(
        readable.len() > 100_000,
        "read back {} bytes",
        readable.len()
    );
    let found: Vec<&String> = hashes
        .iter()
        .filter(|h| readable.contains(h.as_str()))
        .collect();
    assert!(found.is_empty(), "{} contact hashes readable", found.len());
    for refused in [
        format!("SELECT count() FROM {DATABASE}.events"),
        format!("SELECT count() FROM {DATABASE}.ledger"),
        format!("SELECT count() FROM {DATABASE}.figures"),
        format!("SELECT count() FROM {DATABASE}.contact_visitors"),
        format!("INSERT INTO {sql}.journeys (visitor_id, kind, n) VALUES ('x', 'touch', 1)"),
        format!("CREATE TABLE {sql}.mine (a UInt8) ENGINE = Memory"),
        format!("DROP TABLE {sql}.touches"),
        format!("SELECT count() FROM {sql}.touches SETTINGS max_execution_time = 0"),
    ] {
        let got = as_analyst(&refused).await;
        assert!(got.is_err(), "the analyst may not: {refused} → {got:?}");
    }
    assert!(
        as_analyst("SELECT 1").await.is_ok(),
        "and the refusals were not a login failure"
    );
    let wrong = reqwest::Client::new()
        .post(clickhouse_url())
        .query(&[
            ("user", "ensemble_analyst"),
            ("password", "not-the-password"),
        ])
        .body("SELECT 1")
        .send()
        .await
        .expect("send");
    assert!(!wrong.status().is_success(), "a wrong password is refused");
}
