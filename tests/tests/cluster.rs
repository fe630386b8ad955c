//! Cluster mode: two ClickHouse 18.16 servers on loopback as two shards of
//! one cluster (ZooKeeper for replicated tables and ON CLUSTER DDL). The
//! migrator creates replicated local tables and distributed tables sharded by
//! visitor; one simulated campaign goes through the collector once and is
//! consumed by two processors (two groups), one writing the single-node
//! database, one the cluster. Every dashboard endpoint must answer the same
//! numbers from both, and the cluster's rows must really be split by visitor.

use std::time::Duration;

use ensemble_core::{Campaign, StoreConfig};
use ensemble_tests::sim::{send_import, simulate, SimConfig};
use ensemble_tests::{
    campaign_file, create_topic, group_progress, json_close, kafka_brokers, migrated_database,
    poll_until, unique, workspace_binary, ClickHouseCluster, Service,
};

const IMPORT: &str = "cluster-import-token-0123456789";
const ANALYST: &str = "cluster-analyst-token-0123456789";

fn store_args(store: &StoreConfig) -> Vec<String> {
    let mut a = vec![
        "--clickhouse-url".to_owned(),
        store.url.clone(),
        "--clickhouse-database".to_owned(),
        store.database.clone(),
    ];
    if store.is_cluster() {
        a.extend(["--clickhouse-cluster".to_owned(), store.cluster.clone()]);
    }
    a
}

fn start(bin: &str, args: &[String]) -> Service {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Service::start(&workspace_binary(bin), &args, &[]).expect(bin)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_shard_cluster_gives_the_same_dashboard_as_one_node() {
    let cluster = ClickHouseCluster::start(2).expect("two clickhouse servers and zookeeper");
    let single = migrated_database("it_single").await;
    let sharded =
        StoreConfig::new(cluster.nodes[0].url(), unique("it_cluster")).on_cluster(&cluster.name);
    let report = ensemble_core::migrate::migrate(&sharded)
        .await
        .expect("cluster migration");
    let every: Vec<u32> = ensemble_core::migrate::migrations()
        .expect("migrations")
        .iter()
        .map(|m| m.version)
        .collect();
    assert!(every.len() >= 11, "{every:?}");
    assert_eq!(report.applied, every);
    // Idempotent, like on one node.
    let again = ensemble_core::migrate::migrate(&sharded)
        .await
        .expect("again");
    assert_eq!(again.already_applied, every);

    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    let sim = simulate(
        &campaign,
        &SimConfig {
            seed: 77,
            people: 4_000,
            ..SimConfig::default()
        },
    );
    let brokers = kafka_brokers();
    let topic = unique("cluster");
    let dlq = format!("{topic}.dlq");
    create_topic(&brokers, &topic, 3).await.expect("topic");
    create_topic(&brokers, &dlq, 1).await.expect("dlq");
    let c = campaign_file().display().to_string();
    let kafka: Vec<String> = [
        "--kafka-brokers",
        &brokers,
        "--kafka-topic",
        &topic,
        "--kafka-dlq-topic",
        &dlq,
    ]
    .map(str::to_owned)
    .to_vec();
    let mut args: Vec<String> = [
        "--campaign",
        &c,
        "--import-token",
        IMPORT,
        "--contact-secret",
        "cluster-secret-0123456789",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(kafka.clone());
    let ingest = start("ensemble-ingest", &args);

    let mut pipelines = Vec::new();
    for store in [&single, &sharded] {
        let group = unique("g_cluster");
        let mut args: Vec<String> = ["--campaign", &c, "--group-id", &group]
            .map(str::to_owned)
            .to_vec();
        args.extend(kafka.clone());
        args.extend(store_args(store));
        let processor = start("ensemble-processor", &args);
        let mut args: Vec<String> = [
            "--campaign",
            &c,
            "--analyst-tokens",
            ANALYST,
            "--processor-group",
            &group,
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(kafka.clone());
        args.extend(store_args(store));
        let dashboard = start("ensemble-dashboard", &args);
        pipelines.push((group, processor, dashboard));
    }
    ingest.wait_ready("ingest", Duration::from_secs(60)).await;
    for (_, p, d) in &pipelines {
        p.wait_ready("processor", Duration::from_secs(60)).await;
        d.wait_ready("dashboard", Duration::from_secs(60)).await;
    }

    let (accepted, _) = send_import(&ingest.base(), IMPORT, &sim.events, 500, |_| {})
        .await
        .expect("send");
    assert_eq!(accepted as usize, sim.valid_events + sim.retries);
    for (group, _, _) in &pipelines {
        poll_until(
            "both processors at the end of the topic",
            Duration::from_secs(300),
            || async {
                let (done, high) = group_progress(&brokers, &topic, group).await.ok()?;
                (done == high && high == accepted as i64).then_some(())
            },
        )
        .await;
    }

    // The rows are split across the shards by visitor: both shards hold
    // some, together all of them, and no visitor is on both.
    let mut per_shard = Vec::new();
    let mut visitors = Vec::new();
    for node in &cluster.nodes {
        let local = StoreConfig::new(node.url(), sharded.database.clone()).client();
        let n: u64 = local
            .query("SELECT uniqExact(event_id) FROM events_local")
            .fetch_one()
            .await
            .expect("local rows");
        let v: Vec<String> = local
            .query("SELECT DISTINCT visitor_id FROM events_local")
            .fetch_all()
            .await
            .expect("local visitors");
        per_shard.push(n);
        visitors.push(v.into_iter().collect::<std::collections::BTreeSet<_>>());
    }
    assert!(
        per_shard.iter().all(|n| *n > 1_000),
        "both shards hold rows: {per_shard:?}"
    );
    assert_eq!(
        per_shard.iter().sum::<u64>(),
        sim.valid_events as u64,
        "{per_shard:?}"
    );
    assert!(
        visitors[0].is_disjoint(&visitors[1]),
        "a visitor's events stay on one shard"
    );

    let paths = [
        "/api/overview",
        "/api/channels",
        "/api/attribution",
        "/api/attribution?phase=p2-saint-valentin",
        "/api/placements",
        "/api/funnel",
        "/api/reach",
        "/api/timeseries?metric=signups&bucket=day",
        "/api/timeseries?metric=events&bucket=hour",
        "/api/overview?channel=metro&device=mobile",
        "/api/channels?phase=p3-8-mars",
        "/api/devices",
        "/api/paths",
    ];
    let (one, two) = (&pipelines[0].2, &pipelines[1].2);
    for path in paths {
        let (a, b) = (one.get_json(path, ANALYST), two.get_json(path, ANALYST));
        // Credits are float sums, added up in another order across shards.
        assert!(
            json_close(&a, &b),
            "{path}: single node vs cluster\n{a}\n{b}"
        );
    }
    // The analysts' views read the distributed journeys the same.
    for view in ["touches", "conversions", "credits", "placement_days"] {
        let mut counts = Vec::new();
        for store in [&single, &sharded] {
            let n: u64 = store
                .client()
                .query(&format!(
                    "SELECT count() FROM {}.{view}",
                    store.sql_database()
                ))
                .fetch_one()
                .await
                .expect("view count");
            counts.push(n);
        }
        assert!(
            counts[0] > 0 && counts[0] == counts[1],
            "{view}: {counts:?}"
        );
    }
    let overview = two.get_json("/api/overview", ANALYST);
    assert!(
        overview["current"]["totals"]["signups"].as_u64() > Some(100),
        "a real campaign: {overview}"
    );
    // Erasing a person (mutations ON CLUSTER) changes both the same way.
    let before = two.get_json("/api/overview", ANALYST);
    let person = sim
        .truth
        .iter()
        .find_map(|t| t.contact.clone().filter(|c| c.starts_with("personne.")))
        .expect("a sign-up");
    let hash = ensemble_model::privacy::ContactHasher::new(b"cluster-secret-0123456789")
        .expect("hasher")
        .contact_hash(&person);
    let journey = ensemble_core::ledger::carried::set("journey");
    let theirs_sql = format!(
        "SELECT count() FROM ledger WHERE {} OR ev_contact = ?",
        journey.any_sql(&format!("{} = ?", journey.field_sql("contact", "r")))
    );
    let theirs = |store: &StoreConfig| {
        store
            .client()
            .query(&theirs_sql)
            .bind(&hash)
            .bind(&hash)
            .fetch_one::<u64>()
    };
    for store in [&single, &sharded] {
        let held = theirs(store).await.expect("ledger");
        assert!(held > 0, "{}: the person is in the ledger", store.database);
        let mut args = vec!["erase".to_owned(), "--email".to_owned(), person.clone()];
        args.extend([
            "--contact-secret".to_owned(),
            "cluster-secret-0123456789".to_owned(),
        ]);
        args.extend(["--campaign".to_owned(), c.clone()]);
        args.extend(store_args(store));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) =
            ensemble_tests::run_binary(&workspace_binary("ensemble-processor"), &args, &[]);
        assert_eq!(code, Some(0), "erase on {}: {stderr}", store.database);
        // Not even in the arrays other visitors' ledger rows carried to
        // their journeys (emptied ON CLUSTER, waited for by `erase`).
        assert_eq!(
            theirs(store).await.expect("ledger"),
            0,
            "{}",
            store.database
        );
    }
    for path in [
        "/api/overview",
        "/api/channels",
        "/api/attribution",
        "/api/timeseries?metric=events&bucket=hour",
    ] {
        let (a, b) = (one.get_json(path, ANALYST), two.get_json(path, ANALYST));
        assert!(json_close(&a, &b), "after erasure, {path}\n{a}\n{b}");
    }
    assert_eq!(
        two.get_json("/api/overview", ANALYST)["current"]["totals"]["signups"].as_u64(),
        before["current"]["totals"]["signups"]
            .as_u64()
            .map(|n| n - 1),
        "one sign-up fewer"
    );
    let live = two.get_json("/api/live", ANALYST);
    assert_eq!(live["pending_events"], 0, "{live}");
    drop((ingest, pipelines, cluster));
}
