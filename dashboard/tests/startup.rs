//! The dashboard refuses to start on bad settings, naming the setting.

use ensemble_tests::{assert_refuses, campaign_file};

const BIN: &str = env!("CARGO_BIN_EXE_ensemble-dashboard");
const ANALYST: (&str, &str) = ("ENSEMBLE_ANALYST_TOKENS", "analyst-token-0123456789");

#[test]
fn refuses_bad_settings() {
    let c = campaign_file().display().to_string();
    assert_refuses(BIN, &["--campaign", &c], &[], "--analyst-tokens");
    assert_refuses(
        BIN,
        &["--campaign", &c],
        &[("ENSEMBLE_ANALYST_TOKENS", "short")],
        "--analyst-tokens",
    );
    assert_refuses(
        BIN,
        &["--campaign", &c],
        &[
            ANALYST,
            ("ENSEMBLE_AGENCY_TOKENS", "analyst-token-0123456789"),
        ],
        "--agency-tokens",
    );
    assert_refuses(
        BIN,
        &["--campaign", &c, "--clickhouse-database", "a;b"],
        &[ANALYST],
        "--clickhouse-database",
    );
}

#[tokio::test]
async fn ready_when_clickhouse_answers_then_stops_on_sigterm() {
    let c = campaign_file().display().to_string();
    let store = ensemble_tests::migrated_database("it_dash_ready").await;
    let ch = store.url.clone();
    ensemble_tests::assert_ready_then_clean_exit(
        BIN,
        &[
            "--campaign",
            &c,
            "--clickhouse-url",
            &ch,
            "--clickhouse-database",
            &store.database,
        ],
        &[ANALYST],
    )
    .await;
}
