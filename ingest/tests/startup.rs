//! The collector refuses to start on bad settings, naming the setting.

use ensemble_tests::{assert_refuses, campaign_file};

const BIN: &str = env!("CARGO_BIN_EXE_ensemble-ingest");
const SECRET: (&str, &str) = (
    "ENSEMBLE_CONTACT_SECRET",
    "a-test-secret-of-32-bytes-length",
);

fn campaign() -> String {
    campaign_file().display().to_string()
}

#[test]
fn refuses_without_the_contact_secret() {
    assert_refuses(BIN, &["--campaign", &campaign()], &[], "--contact-secret");
}

#[test]
fn refuses_a_short_contact_secret() {
    assert_refuses(
        BIN,
        &["--campaign", &campaign()],
        &[("ENSEMBLE_CONTACT_SECRET", "short")],
        "--contact-secret",
    );
}

#[test]
fn refuses_bad_listen_brokers_timeout_and_campaign() {
    let c = campaign();
    assert_refuses(
        BIN,
        &["--campaign", &c, "--listen", "nowhere"],
        &[SECRET],
        "--listen",
    );
    assert_refuses(
        BIN,
        &["--campaign", &c],
        &[SECRET, ("ENSEMBLE_KAFKA_BROKERS", "localhost")],
        "--kafka-brokers",
    );
    assert_refuses(
        BIN,
        &["--campaign", &c, "--delivery-timeout-ms", "60000"],
        &[SECRET],
        "--delivery-timeout-ms",
    );
    assert_refuses(
        BIN,
        &["--campaign", "/nonexistent/campaign.toml"],
        &[SECRET],
        "--campaign",
    );
}

#[test]
fn other_campaigns_are_refused_when_they_clash_or_lack_a_database() {
    let c = campaign();
    for (also, says) in [
        (c.clone(), "must be FILE=DATABASE"),
        (
            format!("{c}=ensemble_2024"),
            "two campaign files have the id",
        ),
        (format!("{c}=not a database"), "must match"),
        ("/nonexistent.toml=db".to_owned(), "/nonexistent.toml"),
    ] {
        let err = assert_refuses(
            BIN,
            &["--campaign", &c, "--also-campaign", &also],
            &[SECRET],
            "--also-campaign",
        );
        assert!(err.contains(says), "{also}: {err}");
    }
}

#[test]
fn a_bad_campaign_is_refused_with_its_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("campaign.toml");
    let text = std::fs::read_to_string(campaign_file()).expect("campaign");
    std::fs::write(
        &path,
        text.replacen("channel = \"metro\"", "channel = \"tramway\"", 1),
    )
    .expect("write");
    let p = path.display().to_string();
    assert_refuses(BIN, &["--campaign", &p], &[SECRET], "placements[0].channel");
}

#[tokio::test]
async fn ready_when_the_broker_answers_then_stops_on_sigterm() {
    let c = campaign();
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
        ],
        &[SECRET],
    )
    .await;
}

#[tokio::test]
async fn not_ready_while_the_events_topic_does_not_exist() {
    let c = campaign();
    let brokers = ensemble_tests::kafka_brokers();
    let missing = ensemble_tests::unique("missing");
    let svc = ensemble_tests::Service::start(
        BIN,
        &[
            "--campaign",
            &c,
            "--kafka-brokers",
            &brokers,
            "--kafka-topic",
            &missing,
        ],
        &[SECRET],
    )
    .expect("start");
    let body = ensemble_tests::poll_until(
        "/readyz to answer",
        std::time::Duration::from_secs(30),
        || {
            let r = svc.get("/readyz");
            async move { r.filter(|(code, _)| *code == 503).map(|(_, b)| b) }
        },
    )
    .await;
    assert!(body.contains("\"kafka\":false"), "{body}");
    assert_eq!(
        svc.get("/healthz").map(|(c, _)| c),
        Some(200),
        "alive, just not ready"
    );
}

/// With `--ops-listen` the public port serves the event endpoints only;
/// /metrics, /healthz and /readyz answer on the ops address.
#[tokio::test]
async fn ops_routes_move_to_their_own_address() {
    let c = campaign();
    let brokers = ensemble_tests::kafka_brokers();
    let topic = ensemble_tests::unique("ops");
    ensemble_tests::create_topic(&brokers, &topic, 1)
        .await
        .expect("topic");
    let ops_port = ensemble_tests::free_port();
    let ops = format!("127.0.0.1:{ops_port}");
    let svc = ensemble_tests::Service::start(
        BIN,
        &[
            "--campaign",
            &c,
            "--kafka-brokers",
            &brokers,
            "--kafka-topic",
            &topic,
            "--ops-listen",
            &ops,
        ],
        &[SECRET],
    )
    .expect("start");
    ensemble_tests::poll_until(
        "the ops address to be ready",
        std::time::Duration::from_secs(30),
        || {
            let r = ensemble_tests::http_get(ops_port, "/readyz");
            async move { r.filter(|(code, _)| *code == 200) }
        },
    )
    .await;
    for path in ["/metrics", "/healthz"] {
        assert_eq!(
            ensemble_tests::http_get(ops_port, path).map(|(c, _)| c),
            Some(200),
            "{path}"
        );
    }
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(svc.get(path).map(|(c, _)| c), Some(404), "public {path}");
    }
    assert_eq!(
        svc.get("/t.js").map(|(c, _)| c),
        Some(200),
        "the public routes stay"
    );
    assert_refuses(
        BIN,
        &["--campaign", &c, "--ops-listen", "127.0.0.1:8080"],
        &[SECRET],
        "--ops-listen",
    );
}

/// Every request leaves one structured log line, with its request id (the
/// one its answer carries), method, path, status and duration.
#[tokio::test]
async fn each_request_is_logged_once_with_its_request_id() {
    let c = campaign();
    let dir = tempfile::tempdir().expect("dir");
    let log_path = dir.path().join("ingest.log");
    let port = ensemble_tests::free_port();
    let mut child = std::process::Command::new(BIN)
        .env_clear()
        .env(SECRET.0, SECRET.1)
        .env("RUST_LOG", "info")
        .args(["--campaign", &c, "--log-format", "json"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // The log goes to standard output.
        .stdout(std::fs::File::create(&log_path).expect("log file"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let t_js = ensemble_tests::poll_until(
        "the collector to answer",
        std::time::Duration::from_secs(30),
        || {
            let req = client.get(format!("{base}/t.js"));
            async move { req.send().await.ok() }
        },
    )
    .await;
    let bad = client
        .post(format!("{base}/v1/events"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status().as_u16(), 400);
    let ids: Vec<(String, u16)> = [&t_js, &bad]
        .iter()
        .map(|r| {
            (
                r.headers()["x-request-id"].to_str().expect("id").to_owned(),
                r.status().as_u16(),
            )
        })
        .collect();
    let lines =
        ensemble_tests::poll_until("the log lines", std::time::Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let ids = ids.clone();
            async move {
                let found: Vec<serde_json::Value> = text
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter(|v| v["message"] == "request")
                    .filter(|v| {
                        ids.iter()
                            .any(|(id, _)| v.to_string().contains(id.as_str()))
                    })
                    .collect();
                (found.len() >= 2).then_some(found)
            }
        })
        .await;
    let _ = child.kill();
    let _ = child.wait();
    for (id, status) in &ids {
        let mine: Vec<_> = lines
            .iter()
            .filter(|v| v.to_string().contains(id.as_str()))
            .collect();
        assert_eq!(mine.len(), 1, "one line for {id}: {lines:?}");
        assert_eq!(mine[0]["status"], *status, "{}", mine[0]);
        assert!(mine[0]["duration_ms"].is_number(), "{}", mine[0]);
        assert!(
            mine[0]["method"].is_string() && mine[0]["path"].is_string(),
            "{}",
            mine[0]
        );
    }
}
