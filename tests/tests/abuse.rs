//! Repetition moves no figure: one client scanning one poster again and
//! again, through the real collector, broker, processor, ClickHouse and
//! dashboard. Every scan is redirected and stored; the repeats are flagged
//! `repeat_scan`, left out of the figures like bots, and shown on the
//! placements table as "scans filtered".

use std::time::Duration;

use ensemble_model::campaign::Campaign;
use ensemble_tests::live::live_campaign_toml;
use ensemble_tests::{campaign_file, poll_until, workspace_binary, Service, Wiring};
use serde_json::Value;

const SECRET: &str = "abuse-contact-secret-0123456789";
const ANALYST: &str = "abuse-analyst-token-0123456789";

#[tokio::test(flavor = "multi_thread")]
async fn repeated_scans_are_stored_flagged_and_not_counted() {
    // A calendar with today inside a phase, so the redirect's scans count.
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    let text = std::fs::read_to_string(campaign_file()).expect("campaign file");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("campaign.toml");
    std::fs::write(&path, live_campaign_toml(&text, today).expect("calendar")).expect("write");
    Campaign::load(&path).expect("campaign");
    let c = path.display().to_string();

    let wiring = Wiring::new("abuse").await;
    let kafka = wiring.kafka_args();
    let ch = wiring.clickhouse_args();
    let mut args = vec!["--campaign", &c, "--contact-secret", SECRET];
    args.extend(kafka);
    let ingest = Service::start(&workspace_binary("ensemble-ingest"), &args, &[]).expect("ingest");
    let mut args = vec!["--campaign", &c, "--group-id", &wiring.group];
    args.extend(kafka);
    args.extend(ch);
    let processor =
        Service::start(&workspace_binary("ensemble-processor"), &args, &[]).expect("processor");
    let mut args = vec![
        "--campaign",
        &c,
        "--analyst-tokens",
        ANALYST,
        "--processor-group",
        &wiring.group,
    ];
    args.extend(kafka);
    args.extend(ch);
    let dashboard =
        Service::start(&workspace_binary("ensemble-dashboard"), &args, &[]).expect("dashboard");
    for (svc, name) in [
        (&ingest, "ingest"),
        (&processor, "processor"),
        (&dashboard, "dashboard"),
    ] {
        svc.wait_ready(name, Duration::from_secs(60)).await;
    }

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    // A prankster: 30 scans of one poster, and one of another.
    for code in std::iter::repeat_n("M-CHATELET", 30).chain(["T-VOEUX"]) {
        let r = http
            .get(format!("{}/r/{code}", ingest.base()))
            // A browser's User-Agent: a curl one is a bot's, left out anyway.
            .header(
                "user-agent",
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148",
            )
            .send()
            .await
            .expect("redirect");
        assert_eq!(r.status(), reqwest::StatusCode::FOUND);
    }

    let client = wiring.store.client();
    let stored: (u64, u64) = poll_until("31 scans in events", Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            let r: (u64, u64) = client
                .query("SELECT uniqExact(event_id), sum(repeat_scan) FROM events")
                .fetch_one()
                .await
                .ok()?;
            (r.0 == 31).then_some(r)
        }
    })
    .await;
    assert_eq!(
        stored,
        (31, 29),
        "all stored; all but the first per poster flagged"
    );

    let ask = |query: &'static str| {
        let http = http.clone();
        let url = format!("{}/api/placements{query}", dashboard.base());
        async move {
            http.get(url)
                .bearer_auth(ANALYST)
                .send()
                .await
                .expect("placements")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let row = |v: &Value, code: &str| -> (u64, u64) {
        let r = v["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["code"] == code))
            .unwrap_or_else(|| panic!("{code} in {v}"));
        (
            r["scans"].as_u64().unwrap_or(u64::MAX),
            r["scans_filtered"].as_u64().unwrap_or(u64::MAX),
        )
    };
    let counted = poll_until("the figures", Duration::from_secs(60), || async {
        let v = ask("").await;
        // Both posters' scans accounted (they may land in different batches).
        (row(&v, "T-VOEUX").0 > 0 && row(&v, "M-CHATELET").0 > 0).then_some(v)
    })
    .await;
    assert_eq!(
        row(&counted, "M-CHATELET"),
        (1, 29),
        "one scan counted, 29 filtered"
    );
    assert_eq!(row(&counted, "T-VOEUX"), (1, 0));
    let with_bots = ask("?bots=include").await;
    assert_eq!(
        row(&with_bots, "M-CHATELET").0,
        30,
        "asked with bots included, the repeats are there"
    );
}
