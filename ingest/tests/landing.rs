//! A forwarded landing link does not merge people, in headless Chromium
//! (Debian's `chromium`) with the real collector and broker and the real
//! tracker (`t.js`) on a landing page served here.
//!
//! Someone scans a poster: the redirect lands them with a visit token, the
//! tracker removes it from the address bar, the page view and the sign-up
//! are the scanner's and carry the poster. Then, later than the token is
//! honoured, the landing URL — as copied from the address bar, and as the
//! redirect first produced it — is opened in fresh browser profiles: each
//! opener is a visitor of their own, and nothing of theirs is credited to
//! the poster. The collector honours tokens for `--visit-token-ttl-s`
//! (300 s in production, 15 s here: "15 minutes later" is any time past it).

use std::time::Duration;

mod common;

use ensemble_core::event::{EventMessage, EventType};
use ensemble_tests::{
    campaign_file, create_topic, kafka_brokers, metric_value, topic_bytes, unique,
};
use serde_json::Value;

const SECRET: &str = "landing-test-secret-0123456789";
const TTL_S: u64 = 15;

/// What the landing page reports about itself once the tracker is done.
#[derive(Debug)]
struct Landed {
    /// The address bar when the page started (before the tracker ran).
    first: String,
    /// The address bar afterwards.
    href: String,
    visitor: String,
    email: String,
}

/// Opens `url` in a fresh profile and reads what the page wrote.
async fn open(url: &str) -> Landed {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        ensemble_tests::chromium(url, profile.path(), 10_000, &["--dump-dom".into()]).output(),
    )
    .await
    .expect("chromium within 90 s")
    .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = dom
        .split("<pre id=\"report\">")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
        .unwrap_or_else(|| panic!("the page reported nothing: {dom}"))
        .replace("&amp;", "&");
    let v: Value = serde_json::from_str(&report).unwrap_or_else(|e| panic!("{e}: {report}"));
    assert_eq!(v["error"], Value::Null, "the page's sign-up failed: {v}");
    Landed {
        first: v["first"].as_str().unwrap_or_default().to_owned(),
        href: v["href"].as_str().unwrap_or_default().to_owned(),
        visitor: v["visitor"].as_str().unwrap_or_default().to_owned(),
        email: v["email"].as_str().unwrap_or_default().to_owned(),
    }
}

/// The landing page: the tracker, and a script that signs up once the page
/// view is answered and writes what it saw.
fn landing_page(collector: &str) -> String {
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Baromètre</title>
<script>window.firstHref = location.href;</script>
<script src="{collector}/t.js"></script></head>
<body><pre id="report"></pre><script>
var email = "person." + Math.random().toString(36).slice(2) + "@exemple.fr";
function report(extra) {{
  var r = {{ first: window.firstHref, href: location.href, visitor: ensemble.visitorId, email: email }};
  for (var k in extra) r[k] = extra[k];
  document.getElementById("report").textContent = JSON.stringify(r);
}}
ensemble.ready
  .then(function () {{ return ensemble.signup(email, {{ results: true, newsletter: false }}); }})
  .then(function () {{ report({{}}); }}, function (e) {{ report({{ error: String(e && e.message || e) }}); }});
</script></body></html>"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_landing_link_never_makes_its_opener_the_scanner() {
    // The landing site, on a port of its own.
    let site = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let site_origin = format!("http://{}", site.local_addr().expect("addr"));
    let collector_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let collector = format!("http://{}", collector_listener.local_addr().expect("addr"));
    let page = landing_page(&collector);
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        });
        axum::serve(site, app).await.expect("landing site");
    });

    // The campaign's landing pages on that site.
    let text = std::fs::read_to_string(campaign_file())
        .expect("campaign")
        .replace("https://vivre-ensemble.example.org", &site_origin);
    let dir = tempfile::tempdir().expect("dir");
    let campaign = dir.path().join("campaign.toml");
    std::fs::write(&campaign, text).expect("write campaign");
    let brokers = kafka_brokers();
    let topic = unique("landing");
    create_topic(&brokers, &topic, 3).await.expect("topic");
    let ttl = TTL_S.to_string();
    let campaign_arg = campaign.display().to_string();
    let (base, _shutdown) = common::serve_on_listener(
        collector_listener,
        &[
            "--campaign",
            &campaign_arg,
            "--contact-secret",
            SECRET,
            "--kafka-brokers",
            &brokers,
            "--kafka-topic",
            &topic,
            "--visit-token-ttl-s",
            &ttl,
        ],
    )
    .await;
    assert_eq!(base, collector);

    // The scanner: poster → redirect → landing page → sign-up.
    let scanner = open(&format!("{collector}/r/M-CHATELET")).await;
    assert!(
        scanner.first.contains("ens="),
        "landed with a token: {}",
        scanner.first
    );
    assert!(
        !scanner.href.contains("ens=")
            && !scanner.href.contains("vid=")
            && !scanner.href.contains("plc="),
        "the tracker removed it from the address bar: {}",
        scanner.href
    );
    assert!(
        scanner.href.contains("utm_source=ratp"),
        "the rest of the URL stays: {}",
        scanner.href
    );

    // Within the token's minutes: the redirect's URL replayed in another
    // browser (the token was adopted by the scanner's), and a poster link
    // carrying someone's visitor id, opened in a fresh profile.
    let replayed = open(&scanner.first).await;
    let victim = "v_v1ct1mv1ct1mv1ct1m";
    let minted = open(&format!("{collector}/r/M-CHATELET?vid={victim}")).await;

    // Past the token's time, the link is shared: as copied from the bar,
    // and as the redirect first produced it (token included).
    tokio::time::sleep(Duration::from_secs(TTL_S + 2)).await;
    let copied = open(&scanner.href).await;
    let original = open(&scanner.first).await;

    let messages: Vec<EventMessage> = topic_bytes(&brokers, &topic)
        .await
        .expect("read topic")
        .iter()
        .filter_map(|b| {
            let payload = b.splitn(2, |c| *c == b'\n').nth(1)?;
            EventMessage::decode(payload).ok()
        })
        .collect();
    let hasher = ensemble_model::privacy::ContactHasher::new(SECRET.as_bytes()).expect("hasher");
    let of = |who: &Landed| -> Vec<&EventMessage> {
        let hash = hasher.contact_hash(&who.email);
        messages
            .iter()
            .filter(|m| {
                m.visitor_id == who.visitor || m.contact_hash.as_deref() == Some(hash.as_str())
            })
            .collect()
    };
    // One visitor: the scan, the view and the sign-up, all for the poster.
    let mine = of(&scanner);
    let kinds: Vec<EventType> = mine.iter().map(|m| m.event_type).collect();
    assert!(
        kinds.contains(&EventType::QrScan)
            && kinds.contains(&EventType::PageView)
            && kinds.contains(&EventType::Signup),
        "{mine:?}"
    );
    assert!(
        mine.iter().all(
            |m| m.visitor_id == scanner.visitor && m.placement.as_deref() == Some("M-CHATELET")
        ),
        "scan, view and sign-up are one visitor, credited to the poster: {mine:?}"
    );
    // Each later opener is someone else, and nothing of theirs is the poster's.
    for (how, who) in [
        ("copied from the bar", &copied),
        ("with the old token", &original),
    ] {
        assert_ne!(
            who.visitor, scanner.visitor,
            "{how}: a visitor of their own"
        );
        let theirs = of(who);
        assert!(
            theirs.iter().any(|m| m.event_type == EventType::Signup)
                && theirs
                    .iter()
                    .all(|m| m.visitor_id == who.visitor && m.placement.is_none()),
            "{how}: {theirs:?}"
        );
    }
    assert_ne!(copied.visitor, original.visitor);
    assert_ne!(
        replayed.visitor, scanner.visitor,
        "a replay is someone else"
    );
    let theirs = of(&replayed);
    assert!(
        theirs.iter().any(|m| m.event_type == EventType::Signup)
            && theirs
                .iter()
                .all(|m| m.visitor_id == replayed.visitor && m.placement.is_none()),
        "a replayed token credits nothing to the scanner: {theirs:?}"
    );
    assert!(
        minted.visitor != victim && minted.visitor != scanner.visitor,
        "a link's vid= names nobody: {minted:?}"
    );
    assert!(
        messages.iter().all(|m| m.visitor_id != victim),
        "nothing is recorded under the id the link carried"
    );
    let theirs = of(&minted);
    assert!(
        theirs.iter().any(|m| m.event_type == EventType::QrScan)
            && theirs.iter().any(|m| m.event_type == EventType::Signup)
            && theirs.iter().all(|m| m.visitor_id == minted.visitor),
        "the link's opener is a new visitor of their own: {theirs:?}"
    );
    let metrics = reqwest::get(format!("{collector}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for (result, at_least) in [("honoured", 2.0), ("expired", 1.0), ("replayed", 1.0)] {
        let series = format!("ensemble_ingest_visit_tokens_total{{result=\"{result}\"}}");
        assert!(
            metric_value(&metrics, &series).is_some_and(|n| n >= at_least),
            "{series}: {metrics}"
        );
    }
}
