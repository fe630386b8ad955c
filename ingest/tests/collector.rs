//! The collector against the real broker: what is accepted arrives in Kafka
//! with the right key and fields, every refusal has its reason, nothing
//! private is produced, and a broker outage gives 503s, never a false 2xx.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

mod common;

use ensemble_core::event::{EventMessage, EventType, TinderAction};
use ensemble_core::{KafkaConfig, Shutdown};
use ensemble_tests::{
    campaign_file, create_topic, kafka_brokers, poll_until, unique, PrivateBroker,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use reqwest::StatusCode;
use serde_json::{json, Value};

const SECRET: &str = "collector-test-secret-0123456789";
const TOKEN: &str = "import-token-0123456789abcdef";
const LANDING: &str = "https://vivre-ensemble.example.org/barometre";

struct Running {
    base: String,
    topic: String,
    brokers: String,
    shutdown: Shutdown,
    http: reqwest::Client,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn start_with(brokers: &str, extra: &[&str]) -> Running {
    let topic = unique("ingest");
    create_topic(brokers, &topic, 3)
        .await
        .expect("create topic");
    let campaign = campaign_file().display().to_string();
    let mut args = vec![
        "--campaign",
        &campaign,
        "--contact-secret",
        SECRET,
        "--import-token",
        TOKEN,
        "--kafka-brokers",
        brokers,
        "--kafka-topic",
        &topic,
    ];
    if !extra.iter().any(|a| a.starts_with("--rate-limit")) {
        args.extend_from_slice(&[
            "--rate-limit-per-s",
            "100000",
            "--rate-limit-burst",
            "100000",
        ]);
    }
    args.extend_from_slice(extra);
    let (base, shutdown) = common::serve(&args).await;
    Running {
        base,
        topic,
        brokers: brokers.to_owned(),
        shutdown,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client"),
    }
}

async fn start(extra: &[&str]) -> Running {
    start_with(&kafka_brokers(), extra).await
}

impl Running {
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("user-agent", "Mozilla/5.0 (Linux; Android 14) Mobile")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_raw(&self, headers: &[(&str, &str)], body: Vec<u8>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/events", self.base))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("user-agent", "Mozilla/5.0 (iPhone) Mobile")
            .send()
            .await
            .expect("request")
    }

    /// Reads `n` messages from the topic (fresh group, from the start), then
    /// checks for one second that no more arrive.
    async fn consume(&self, n: usize) -> Vec<(String, Vec<u8>, EventMessage)> {
        let c: StreamConsumer = KafkaConfig::new(&self.brokers, &self.topic)
            .consumer_config(&unique("g_ingest"))
            .create()
            .expect("consumer");
        c.subscribe(&[&self.topic]).expect("subscribe");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, c.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} messages arrived", out.len()))
                .expect("consume");
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let raw = m.payload().unwrap_or_default().to_vec();
            let msg = EventMessage::decode(&raw).expect("decodable message");
            out.push((key, raw, msg));
        }
        if let Ok(Ok(extra)) = tokio::time::timeout(Duration::from_secs(1), c.recv()).await {
            panic!(
                "more than {n} messages: {:?}",
                String::from_utf8_lossy(extra.payload().unwrap_or_default())
            );
        }
        out
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["event_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn accepted_events_arrive_with_their_key_and_fields() {
    let c = start(&[]).await;
    let (status, body) = c
        .post(
            "/v1/events",
            json!({"batch": [
                {"type": "page_view", "event_id": "2f1e7c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b", "visitor_id": "v_visitor_one",
                 "ts": chrono::Utc::now().to_rfc3339(),
                 "url": "https://vivre-ensemble.example.org/barometre?utm_source=ratp&utm_content=m-chatelet&email=x%40y.fr",
                 "referrer": "https://www.google.com/search?q=vivre+ensemble"},
                {"type": "tinder_card", "action": "like", "visitor_id": "v_visitor_two", "placement": "T-VOEUX"},
                {"type": "custom", "name": "video_play", "visitor_id": "v_visitor_one", "props": {"pct": 75}}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 3);
    assert_eq!(ids(&body)[0], "2f1e7c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b");

    let got = c.consume(3).await;
    let by_id: HashMap<String, &(String, Vec<u8>, EventMessage)> =
        got.iter().map(|g| (g.2.event_id.to_string(), g)).collect();
    assert_eq!(
        by_id.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&body).into_iter().collect()
    );
    let (key, _, pv) = by_id["2f1e7c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"];
    assert_eq!(key, "v_visitor_one", "key = visitor id");
    assert_eq!(pv.event_type, EventType::PageView);
    assert_eq!(pv.utm.source.as_deref(), Some("ratp"));
    assert_eq!(pv.utm.content.as_deref(), Some("m-chatelet"));
    assert_eq!(
        pv.url.as_deref(),
        Some("https://vivre-ensemble.example.org/barometre"),
        "a landing page the campaign knows; its utm_* tags are the fields above"
    );
    assert_eq!(pv.referrer_host.as_deref(), Some("www.google.com"));
    assert!(!pv.ts_clamped && !pv.imported);
    let card = got
        .iter()
        .find(|g| g.2.event_type == EventType::TinderCard)
        .expect("card");
    assert_eq!(card.0, "v_visitor_two");
    assert_eq!(card.2.action, Some(TinderAction::Like));
    assert_eq!(card.2.placement.as_deref(), Some("T-VOEUX"));
    assert_eq!(
        card.2.user_agent.as_deref(),
        Some("Mozilla/5.0 (Linux; Android 14) Mobile")
    );
}

/// Event-level rejections: each reason, next to a good event that must still be accepted.
#[tokio::test]
async fn each_event_rejection_has_its_reason_and_spares_the_good_events() {
    let c = start(&[]).await;
    let cases: Vec<(Value, &str, Option<&str>)> = vec![
        (json!("not an object"), "not_an_object", None),
        (
            json!({"visitor_id": "v_12345678"}),
            "missing_field",
            Some("type"),
        ),
        (json!({"type": 7}), "invalid_type", Some("type")),
        (
            json!({"type": "qr_scan", "ts": "yesterday"}),
            "invalid_value",
            Some("ts"),
        ),
        (
            json!({"type": "purchase"}),
            "unknown_event_type",
            Some("type"),
        ),
        (
            json!({"type": "qr_scan", "color": "red"}),
            "unknown_field",
            Some("color"),
        ),
        (
            json!({"type": "page_view", "utm_source": "x".repeat(300)}),
            "field_too_long",
            Some("utm_source"),
        ),
        (
            json!({"type": "custom", "name": "n", "props": (0..40).map(|i| (format!("k{i}"), json!(i))).collect::<serde_json::Map<_, _>>()}),
            "too_many_properties",
            Some("props"),
        ),
    ];
    for (bad, reason, field) in &cases {
        let (status, body) = c
            .post(
                "/v1/events",
                json!({"batch": [{"type": "qr_scan", "placement": "M-CHATELET"}, bad]}),
            )
            .await;
        assert_eq!(status, StatusCode::MULTI_STATUS, "{reason}: {body}");
        assert_eq!(body["accepted"], 1, "{reason}");
        let r = &body["rejected"][0];
        assert_eq!(r["index"], 1, "{reason}");
        assert_eq!(r["reason"], *reason, "{body}");
        assert_eq!(r["field"].as_str(), *field, "{body}");
        assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
        // The same bad event alone: nothing accepted, 400.
        let (status, body) = c.post("/v1/events", json!({"batch": [bad]})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}: {body}");
        assert_eq!(body["rejected"][0]["reason"], *reason);
    }
    // Only the good event of each mixed batch reached Kafka.
    let got = c.consume(cases.len()).await;
    assert!(got.iter().all(|g| g.2.event_type == EventType::QrScan));
}

type Headers = Vec<(&'static str, &'static str)>;

/// Request-level refusals: each with its status and code.
#[tokio::test]
async fn each_request_refusal_has_its_status_and_code() {
    let c = start(&[
        "--max-body-bytes",
        "2048",
        "--max-batch-events",
        "3",
        "--max-json-depth",
        "4",
    ])
    .await;
    let json_ct = ("content-type", "application/json");
    let cases: Vec<(Headers, Vec<u8>, StatusCode, &str)> = vec![
        (vec![json_ct], b"{not json".to_vec(), StatusCode::BAD_REQUEST, "invalid_json"),
        (vec![json_ct], br#"{"type":"custom","name":"x","props":{"a":[[[[1]]]]}}"#.to_vec(), StatusCode::BAD_REQUEST, "too_deep"),
        (vec![json_ct], br#"[{"type":"qr_scan"}]"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_envelope"),
        (
            vec![json_ct],
            json!({"batch": [{"type":"qr_scan"},{"type":"qr_scan"},{"type":"qr_scan"},{"type":"qr_scan"}]}).to_string().into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
        ),
        (vec![json_ct], vec![b' '; 4096], StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        (vec![("content-type", "application/xml")], b"<e/>".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (vec![json_ct, ("content-encoding", "br")], b"{}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding"),
        (vec![json_ct, ("content-encoding", "gzip")], b"plainly not gzip".to_vec(), StatusCode::BAD_REQUEST, "invalid_gzip"),
    ];
    for (headers, body, status, code) in cases {
        let (got, answer) = c.post_raw(&headers, body).await;
        assert_eq!(got, status, "{code}: {answer}");
        assert_eq!(answer["error"], code, "{answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| m.len() > 10),
            "{answer}"
        );
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_a_gzip_bomb_is_refused() {
    let c = start(&["--max-decompressed-bytes", "1048576"]).await;
    let body =
        json!({"batch": [{"type": "page_view", "visitor_id": "v_gzipped_1"}, {"type": "qr_scan"}]});
    let (status, answer) = c
        .post_raw(
            &[("content-type", "text/plain"), ("content-encoding", "gzip")],
            gzip(body.to_string().as_bytes()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 2);

    // 1 GB of spaces compresses to about 1 MB; here 64 MB into ~64 KB.
    let bomb = gzip(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 200_000);
    let (status, answer) = c
        .post_raw(
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            bomb,
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"], "decompressed_too_large");
    c.consume(2).await;
}

#[tokio::test]
async fn redirects_record_the_scan_and_never_fail_and_the_pixel_records_a_view() {
    let c = start(&[]).await;
    let r = c.get("/r/M-CHATELET").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let loc = url::Url::parse(r.headers()["location"].to_str().expect("location")).expect("url");
    assert!(loc.as_str().starts_with(LANDING), "{loc}");
    let q: HashMap<String, String> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["utm_source"], "ratp");
    assert!(
        !q.contains_key("vid") && !q.contains_key("plc"),
        "no bare identity in the landing URL: {loc}"
    );
    // A signed visit token: visitor id, placement, time, signature.
    let token = q["ens"].clone();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 4, "{token}");
    assert_eq!(parts[1], "M-CHATELET");
    let vid = parts[0].to_owned();

    // The redirect gives the browser its id in a signed, HttpOnly cookie on
    // the collector's own origin.
    let set_cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        set_cookie.starts_with(&format!("ens_vid={vid}."))
            && set_cookie.contains("HttpOnly")
            && set_cookie.contains("Path=/r/"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().expect("value").to_owned();

    // A returning visitor (the cookie) keeps its id; a card link records a card click.
    let r = c
        .http
        .get(format!("{}/r/t-voeux", c.base))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("redirect");
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(r.headers()["location"]
        .to_str()
        .expect("loc")
        .contains(&format!("ens={vid}.T-VOEUX.")));
    assert!(
        r.headers().get("set-cookie").is_none(),
        "the cookie stays as it is"
    );
    // No query parameter and no unsigned cookie chooses the id a token is for.
    let victim = "v_v1ct1mv1ct1mv1ct1m";
    let r = c
        .http
        .get(format!("{}/r/OTHER-POSTER?vid={victim}", c.base))
        .header("cookie", format!("ens_vid={victim}"))
        .send()
        .await
        .expect("redirect");
    assert_eq!(r.status(), StatusCode::FOUND);
    let loc = r.headers()["location"].to_str().expect("loc").to_owned();
    assert!(loc.contains("ens=v_") && !loc.contains(victim), "{loc}");

    // Unknown or hostile codes still redirect to the default landing page.
    let r = c.get("/r/NO-SUCH-POSTER").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(r.headers()["location"]
        .to_str()
        .expect("loc")
        .starts_with(&format!("{LANDING}?ens=")));
    let r = c.get("/r/%3Cscript%3E").await;
    assert_eq!(r.status(), StatusCode::FOUND);

    // The landing page's pixel with the token: the scanner's view, whatever
    // id the page had for itself.
    let r = c.get(&format!("/p.gif?vid=v_page0wn1d000&ens={token}&url=https%3A%2F%2Fvivre-ensemble.example.org%2Fbarometre")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/gif");
    assert_eq!(r.bytes().await.expect("gif")[..6], *b"GIF89a");
    let r = c.get("/p.gif?type=tinder_card&action=superlike").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["content-type"], "image/gif");

    let got = c.consume(6).await;
    let scans: Vec<_> = got
        .iter()
        .filter(|g| g.2.event_type == EventType::QrScan)
        .collect();
    assert_eq!(scans.len(), 4);
    assert!(scans
        .iter()
        .any(|g| g.2.placement.as_deref() == Some("M-CHATELET") && g.0 == vid));
    assert!(scans
        .iter()
        .any(|g| g.2.placement.as_deref() == Some("OTHER-POSTER")
            && g.0.starts_with("v_")
            && g.0 != victim
            && g.0 != vid));
    assert!(scans
        .iter()
        .any(|g| g.2.placement.as_deref() == Some("NO-SUCH-POSTER")));
    assert!(scans
        .iter()
        .any(|g| g.2.placement.as_deref() == Some("script")));
    let click = got
        .iter()
        .find(|g| g.2.event_type == EventType::TinderCard)
        .expect("card click");
    assert_eq!(click.2.action, Some(TinderAction::Click));
    assert_eq!(click.2.placement.as_deref(), Some("T-VOEUX"));
    assert_eq!(click.0, vid);
    let view = got
        .iter()
        .find(|g| g.2.event_type == EventType::PageView)
        .expect("pixel view");
    assert_eq!(view.0, vid);
    assert_eq!(view.2.visitor_id, vid);
    assert_eq!(view.2.placement.as_deref(), Some("M-CHATELET"));
    assert!(got.iter().all(|g| !g.2.ts_clamped));
}

#[tokio::test]
async fn no_produced_byte_holds_a_raw_email_phone_or_ip() {
    let c = start(&["--trust-forwarded-for", "--trusted-proxies", "127.0.0.1"]).await;
    let emails = ["Jeanne.Dupont@Example.fr", "marc+barometre@exemple.org"];
    let phone = "+33 6 12 34 56 78";
    for (i, email) in emails.iter().enumerate() {
        let r = c
            .http
            .post(format!("{}/v1/events", c.base))
            .header("content-type", "application/json")
            .header("x-forwarded-for", "203.0.113.77, 10.0.0.1")
            .body(
                json!({"batch": [
                    {"type": "page_view", "url": format!("https://vivre-ensemble.example.org/merci?email={email}")},
                    {"type": "signup", "email": email, "phone": phone, "consents": {"results": true, "newsletter": i == 0}}
                ]})
                .to_string(),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let got = c.consume(4).await;
    let needles: Vec<String> = emails
        .iter()
        .flat_map(|e| {
            [
                e.to_string(),
                e.to_lowercase(),
                e.split('@').next().unwrap_or_default().to_lowercase(),
            ]
        })
        .chain([
            "203.0.113.77".into(),
            "127.0.0.1".into(),
            "612345678".into(),
            "12 34 56".into(),
        ])
        .collect();
    for (key, raw, msg) in &got {
        let text = String::from_utf8_lossy(raw).to_lowercase();
        for n in &needles {
            assert!(
                !text.contains(&n.to_lowercase()),
                "`{n}` found in payload {text}"
            );
            assert!(!key.contains(n.as_str()), "`{n}` found in key {key}");
        }
        assert!(
            msg.visitor_id.starts_with("h_"),
            "no vid given: hashed visitor id"
        );
    }
    let hashes: BTreeSet<_> = got
        .iter()
        .filter_map(|g| g.2.contact_hash.clone())
        .collect();
    assert_eq!(hashes.len(), 2, "one hash per e-mail");
}

#[tokio::test]
async fn import_needs_the_token_and_keeps_historical_time() {
    let c = start(&[]).await;
    let event = json!({"type": "qr_scan", "placement": "G-NATIONAL", "visitor_id": "v_imported_1",
                       "ts": "2025-01-20T09:15:00+01:00", "user_agent": "Mozilla/5.0 (Android)"});
    let r = c
        .http
        .post(format!("{}/v1/import", c.base))
        .json(&event)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .http
        .post(format!("{}/v1/import", c.base))
        .bearer_auth("wrong-token-0123456789abcdef")
        .json(&event)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .http
        .post(format!("{}/v1/import", c.base))
        .bearer_auth(TOKEN)
        .json(&json!({"batch": [event, {"type": "qr_scan", "visitor_id": "v_imported_2"}]}))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::MULTI_STATUS);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["rejected"][0]["field"], "ts");
    // History, but not a time the store cannot hold or that has not come yet.
    let r = c
        .http
        .post(format!("{}/v1/import", c.base))
        .bearer_auth(TOKEN)
        .json(&json!({"batch": [
            {"type": "page_view", "visitor_id": "v_imported_3", "ts": "1960-05-01T00:00:00Z"},
            {"type": "page_view", "visitor_id": "v_imported_3", "ts": "2150-01-01T00:00:00Z"},
        ]}))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.expect("json");
    for (i, hint) in [(0, "before 2000-01-01"), (1, "in the future")] {
        let rej = &body["rejected"][i];
        assert_eq!(
            (&rej["reason"], &rej["field"]),
            (&json!("invalid_value"), &json!("ts")),
            "{body}"
        );
        assert!(
            rej["message"].as_str().is_some_and(|m| m.contains(hint)),
            "{body}"
        );
    }
    let got = c.consume(1).await;
    let m = &got[0].2;
    assert!(m.imported);
    assert_eq!(m.ts.to_rfc3339(), "2025-01-20T08:15:00+00:00");
    assert!(!m.ts_clamped);
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let c = start(&[
        "--rate-limit-per-s",
        "1",
        "--rate-limit-burst",
        "5",
        "--max-batch-events",
        "5",
        "--trust-forwarded-for",
        "--trusted-proxies",
        "127.0.0.1",
    ])
    .await;
    // What the client wrote on the left of X-Forwarded-For changes nothing:
    // the address our proxy appended (the rightmost) is the client.
    let post = |forwarded: String, body: serde_json::Value| {
        c.http
            .post(format!("{}/v1/events", c.base))
            .header("content-type", "application/json")
            .header("x-forwarded-for", forwarded)
            .body(body.to_string())
            .send()
    };
    let five = json!({"batch": (0..5).map(|_| json!({"type": "qr_scan"})).collect::<Vec<_>>()});
    let r = post("203.0.113.1, 198.51.100.7".into(), five.clone())
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::OK, "a full batch fits the burst");
    // Five more events need five seconds of refill at 1/s, however slow the
    // first answer was: a forged left hop does not make a new client.
    for i in 0..3 {
        let r = post(format!("203.0.113.{}, 198.51.100.7", 10 + i), five.clone())
            .await
            .expect("req");
        assert_eq!(
            r.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "the batch counted 5 events; a forged left hop is no new client"
        );
        let retry_after: u64 = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=5).contains(&retry_after), "{retry_after}");
    }
    let r = post("198.51.100.8".into(), json!({"type": "qr_scan"}))
        .await
        .expect("req");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "another client has its own bucket"
    );
    let r = post("2001:db8:7:7::1".into(), five.clone())
        .await
        .expect("req");
    assert_eq!(r.status(), StatusCode::OK);
    let r = post("2001:db8:7:7:ffff::2".into(), five.clone())
        .await
        .expect("req");
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "IPv6 clients are limited per /64"
    );
}

#[tokio::test]
async fn cors_allows_the_landing_origin_only() {
    let c = start(&[]).await;
    let preflight = |origin: &'static str| {
        c.http
            .request(reqwest::Method::OPTIONS, format!("{}/v1/events", c.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let ok = preflight("https://vivre-ensemble.example.org")
        .await
        .expect("req");
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or("")),
        Some("https://vivre-ensemble.example.org")
    );
    let other = preflight("https://evil.example.com").await.expect("req");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let js = c.get("/t.js").await;
    assert_eq!(js.status(), StatusCode::OK);
    assert!(js.text().await.expect("js").contains("sendBeacon"));
}

#[tokio::test]
async fn many_concurrent_clients_all_land_exactly_once() {
    let c = std::sync::Arc::new(start(&[]).await);
    let mut tasks = Vec::new();
    for client in 0..40 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for req in 0..10 {
                let batch: Vec<Value> = (0..5)
                    .map(|i| json!({"type": "page_view", "visitor_id": format!("v_client_{client:03}_{req}_{i}")}))
                    .collect();
                let (status, body) = c.post("/v1/events", json!({"batch": batch})).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                accepted.extend(ids(&body));
            }
            accepted
        }));
    }
    let mut sent = BTreeSet::new();
    for t in tasks {
        sent.extend(t.await.expect("client task"));
    }
    assert_eq!(sent.len(), 2000);
    let got: BTreeSet<String> = c
        .consume(2000)
        .await
        .iter()
        .map(|g| g.2.event_id.to_string())
        .collect();
    assert_eq!(got, sent);
}

#[tokio::test]
async fn broker_down_gives_503_within_the_timeout_then_recovers() {
    let mut broker = PrivateBroker::start().expect("private broker");
    let c = start_with(
        &broker.brokers(),
        &["--delivery-timeout-ms", "1500", "--retry-after-s", "2"],
    )
    .await;
    let event = |n: u32| json!({"type": "page_view", "visitor_id": format!("v_outage_{n:04}")});
    let (status, body) = c.post("/v1/events", event(0)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    broker.kill();
    let started = Instant::now();
    let r = c
        .http
        .post(format!("{}/v1/events", c.base))
        .header("content-type", "application/json")
        .body(event(1).to_string())
        .send()
        .await
        .expect("request");
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        took < Duration::from_millis(1500 + 2500),
        "503 within the delivery timeout, took {took:?}"
    );
    assert_eq!(r.headers()["retry-after"], "2");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "unavailable");
    assert_eq!(ids(&body).len(), 1, "the 503 names the event ids to resend");

    broker.restart().expect("broker back");
    // Accepted again once the broker is back; the client resends with the same id.
    let resend =
        json!({"type": "page_view", "visitor_id": "v_outage_0001", "event_id": ids(&body)[0]});
    poll_until(
        "the collector to accept again",
        Duration::from_secs(60),
        || {
            let c = &c;
            let resend = resend.clone();
            async move {
                let (status, _) = c.post("/v1/events", resend).await;
                (status == StatusCode::OK).then_some(())
            }
        },
    )
    .await;
    let got = c.consume_at_least(2).await;
    let ids: BTreeSet<_> = got.iter().map(|m| m.visitor_id.clone()).collect();
    assert!(
        ids.contains("v_outage_0000") && ids.contains("v_outage_0001"),
        "{ids:?}"
    );
}

impl Running {
    /// Every message in the topic (at least `n`): after an outage the same
    /// event may legitimately be there twice (duplicates are removed downstream).
    async fn consume_at_least(&self, n: usize) -> Vec<EventMessage> {
        let c: StreamConsumer = KafkaConfig::new(&self.brokers, &self.topic)
            .consumer_config(&unique("g_ingest"))
            .create()
            .expect("consumer");
        c.subscribe(&[&self.topic]).expect("subscribe");
        let mut out = Vec::new();
        loop {
            let wait = if out.len() < n {
                Duration::from_secs(60)
            } else {
                Duration::from_secs(2)
            };
            match tokio::time::timeout(wait, c.recv()).await {
                Ok(Ok(m)) => {
                    out.push(EventMessage::decode(m.payload().unwrap_or_default()).expect("decode"))
                }
                Ok(Err(e)) => panic!("consume: {e}"),
                Err(_) if out.len() >= n => return out,
                Err(_) => panic!("only {} of at least {n} messages", out.len()),
            }
        }
    }
}

/// With last year's campaign beside this year's, a code only last year's
/// file has (a poster left up) opens last year's landing page; a code both
/// have opens this year's; an unknown one this year's default page.
#[tokio::test]
async fn a_poster_of_another_campaign_opens_its_own_page() {
    let text = std::fs::read_to_string(campaign_file()).expect("campaign");
    let old = text
        .replace("code = \"M-CHATELET\"", "code = \"M-CHATELET-24\"")
        .replace(
            "utm_campaign=vivre-ensemble-2025&utm_content=m-chatelet\"",
            "utm_campaign=vivre-ensemble-2024&utm_content=m-chatelet-24\"",
        );
    assert_ne!(old, text, "the fixture edit applies");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("2024.toml");
    std::fs::write(
        &file,
        ensemble_tests::live::moved_campaign_toml(&old, -364, "vivre-ensemble-2024")
            .expect("last year"),
    )
    .expect("write");
    let also = format!("{}=ensemble_2024", file.display());
    let c = start(&["--also-campaign", &also]).await;
    let location = |r: reqwest::Response| {
        assert_eq!(r.status(), StatusCode::FOUND);
        r.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned()
    };
    let l = location(c.get("/r/M-CHATELET-24").await);
    assert!(l.contains("utm_content=m-chatelet-24"), "{l}");
    let l = location(c.get("/r/m-chatelet").await);
    assert!(
        l.contains("utm_campaign=vivre-ensemble-2025&utm_content=m-chatelet&"),
        "{l}"
    );
    let l = location(c.get("/r/NO-SUCH-POSTER").await);
    assert!(l.starts_with(&format!("{LANDING}?ens=")), "{l}");
    let got = c.consume(3).await;
    let codes: Vec<_> = got.iter().filter_map(|g| g.2.placement.clone()).collect();
    assert!(codes.contains(&"M-CHATELET-24".to_owned()), "{codes:?}");
}

#[tokio::test]
async fn repetition_moves_no_figure_and_guessing_costs_time() {
    let c = start(&[
        "--rate-limit-per-s",
        "1",
        "--rate-limit-burst",
        "20",
        "--max-batch-events",
        "5",
        "--auth-failures-per-min",
        "3",
    ])
    .await;
    // Twelve scans of one poster by one client: all redirected, all stored,
    // the first counted, the rest flagged as repeats.
    for _ in 0..12 {
        assert_eq!(c.get("/r/M-CHATELET").await.status(), StatusCode::FOUND);
    }
    // Another poster by the same client counts.
    assert_eq!(c.get("/r/T-VOEUX").await.status(), StatusCode::FOUND);
    // A scan posted as an event is the same scan.
    let (status, _) = c
        .post(
            "/v1/events",
            json!({"type": "qr_scan", "placement": "M-CHATELET"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let got = c.consume(14).await;
    let counted: Vec<_> = got.iter().filter(|g| !g.2.repeat).collect();
    assert_eq!(
        counted.len(),
        2,
        "one scan per client, placement and window: {:?}",
        counted.iter().map(|g| &g.2.placement).collect::<Vec<_>>()
    );
    assert!(got
        .iter()
        .filter(|g| g.2.repeat)
        .all(|g| g.2.placement.as_deref() == Some("M-CHATELET")));

    // Garbage bodies spend tokens: what is left of the burst goes, then 429
    // (before, a malformed body cost nothing and all forty were 400).
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let (s, _) = c
            .post_raw(&[("content-type", "application/json")], b"{nope".to_vec())
            .await;
        statuses.push(s);
    }
    let refilled = started.elapsed().as_secs() as usize + 1;
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::BAD_REQUEST)
        .count();
    assert!(
        refused <= 20 + refilled,
        "{refused} garbage bodies read: {statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS));
    // The redirect is limited too: 429 with a link a person can follow, no token.
    let mut limited = None;
    for _ in 0..5 {
        let r = c.get("/r/G-LYON").await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("a client over its rate gets 429 from /r/");
    assert!(r.headers().contains_key("retry-after"));
    let page = r.text().await.expect("page");
    assert!(
        page.contains("href=\"https://vivre-ensemble.example.org") && !page.contains("ens="),
        "{page}"
    );

    // Wrong import tokens: three tries a minute, then 429 even for the right one.
    let import = |token: &'static str| {
        c.http
            .post(format!("{}/v1/import", c.base))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(json!({"type": "page_view", "ts": "2025-02-01T10:00:00Z", "visitor_id": "v_imp0rt3d01"}).to_string())
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            import("wrong-token-0123456789")
                .await
                .expect("import")
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = import(TOKEN).await.expect("import");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
}
