//! The processor refuses to start on bad settings, naming the setting, and
//! `migrate` reports a clear error when ClickHouse is unreachable.

use ensemble_tests::{assert_refuses, campaign_file, free_port, run_binary};

const BIN: &str = env!("CARGO_BIN_EXE_ensemble-processor");

#[test]
fn refuses_bad_settings() {
    let c = campaign_file().display().to_string();
    assert_refuses(
        BIN,
        &["--campaign", &c, "--clickhouse-database", "drop table"],
        &[],
        "--clickhouse-database",
    );
    assert_refuses(
        BIN,
        &["--campaign", &c, "--clickhouse-url", "not a url"],
        &[],
        "--clickhouse-url",
    );
    assert_refuses(
        BIN,
        &["--campaign", &c],
        &[("ENSEMBLE_KAFKA_TOPIC", "bad topic")],
        "--kafka-topic",
    );
    assert_refuses(
        BIN,
        &["migrate", "--campaign", &c, "--listen", "x"],
        &[],
        "--listen",
    );
}

/// The allocator's settings that keep the live peak RSS under 300 MB are
/// built into the binary (`.cargo/config.toml`), not left to the
/// environment it runs in: jemalloc's own report, asked for at exit
/// through the unprefixed `MALLOC_CONF` (jemalloc is the process's
/// `malloc`, librdkafka's too), shows them as the options in force. Built
/// without them, jemalloc reports its defaults (one arena per four cores,
/// 10 s, 10 s) and this fails; built prefixed, it prints no report.
#[test]
fn the_allocator_returns_freed_pages_within_100_ms() {
    let (code, stderr) = run_binary(BIN, &["--help"], &[("MALLOC_CONF", "stats_print:true")]);
    assert_eq!(code, Some(0), "{stderr}");
    for option in [
        "opt.narenas: 2\n",
        "opt.dirty_decay_ms: 100 ",
        "opt.muzzy_decay_ms: 0 ",
    ] {
        assert!(
            stderr.contains(option),
            "no {option:?} in jemalloc's report:\n{stderr}"
        );
    }
}

#[test]
fn migrate_names_the_unreachable_server() {
    let c = campaign_file().display().to_string();
    let url = format!("http://127.0.0.1:{}", free_port());
    let (code, stderr) = run_binary(
        BIN,
        &["migrate", "--campaign", &c, "--clickhouse-url", &url],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("ensemble-processor migrate"), "{stderr}");
}

#[tokio::test]
async fn ready_when_broker_and_clickhouse_answer_then_stops_on_sigterm() {
    let c = campaign_file().display().to_string();
    let store = ensemble_tests::migrated_database("it_proc_ready").await;
    let brokers = ensemble_tests::kafka_brokers();
    let topic = ensemble_tests::unique("ready");
    ensemble_tests::create_topic(&brokers, &topic, 1)
        .await
        .expect("topic");
    ensemble_tests::assert_ready_then_clean_exit(
        BIN,
        &[
            "--campaign",
            &c,
            "--kafka-brokers",
            &brokers,
            "--kafka-topic",
            &topic,
            "--clickhouse-url",
            &store.url,
            "--clickhouse-database",
            &store.database,
        ],
        &[],
    )
    .await;
}
