//! No personal data reaches Kafka or ClickHouse, whatever field it is typed
//! into. The redaction corpus (`core/src/redact_corpus.tsv`: e-mail
//! addresses, phone numbers and IP addresses as people type them, and
//! look-alikes to keep) goes through the real collector in every free-text
//! field — URL paths and tags, referrers, custom properties (keys and
//! values), the User-Agent, placement codes, visitor ids, a sign-up's e-mail
//! and phone — and through the real processor into ClickHouse. Then every
//! byte the broker holds (keys, payloads, headers, dead letters included)
//! and every row of every table is read back and searched.

use std::time::Duration;

use ensemble_tests::{
    campaign_file, database_text, group_progress, metric_value, poll_until, topic_bytes,
    workspace_binary, Service, Wiring,
};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

const SECRET: &str = "privacy-contact-secret-0123456789";
const UA: &str = "MyApp/1.0 (contact: ops@example.org; +33 6 12 34 56 78)";

fn corpus() -> Vec<(&'static str, &'static str)> {
    include_str!("../../model/src/redact_corpus.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split_once('\t'))
        .collect()
}

/// What a redacted corpus string must not leave anywhere: the part the
/// marker replaced, as sent and percent-decoded, and for a phone number its
/// digits alone.
fn needles(text: &str, redacted: &str) -> Vec<String> {
    let prefix = text
        .chars()
        .zip(redacted.chars())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .sum::<usize>();
    let suffix = text[prefix..]
        .chars()
        .rev()
        .zip(redacted[prefix..].chars().rev())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .sum::<usize>();
    let removed = &text[prefix..text.len() - suffix];
    let mut out = Vec::new();
    for part in removed.split(", ") {
        out.push(part.to_lowercase());
        let decoded = percent_encoding::percent_decode_str(part)
            .decode_utf8_lossy()
            .to_lowercase();
        out.push(decoded.clone());
        let digits: String = decoded.chars().filter(char::is_ascii_digit).collect();
        if !decoded.contains('@') && digits.len() >= 8 {
            // A phone number with other separators, or none; and a French
            // one in its national form.
            out.push(digits.clone());
            for intl in ["0033", "33"] {
                if let Some(rest) = digits.strip_prefix(intl) {
                    out.push(format!("0{rest}"));
                    break;
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn no_byte_in_kafka_or_clickhouse_holds_personal_data() {
    let wiring = Wiring::new("privacy").await;
    let Wiring {
        brokers,
        topic,
        dlq,
        group,
        store,
    } = &wiring;
    let c = campaign_file().display().to_string();
    let kafka = wiring.kafka_args();
    let mut args = vec!["--campaign", &c, "--contact-secret", SECRET];
    args.extend(kafka);
    let ingest = Service::start(&workspace_binary("ensemble-ingest"), &args, &[]).expect("ingest");
    let mut args = vec!["--campaign", &c, "--group-id", group];
    args.extend(kafka);
    args.extend(wiring.clickhouse_args());
    let processor =
        Service::start(&workspace_binary("ensemble-processor"), &args, &[]).expect("processor");
    ingest.wait_ready("ingest", Duration::from_secs(60)).await;
    processor
        .wait_ready("processor", Duration::from_secs(60))
        .await;

    let corpus = corpus();
    assert!(corpus.len() >= 40, "{} strings", corpus.len());
    let mut events: Vec<Value> = Vec::new();
    for (i, (text, _)) in corpus.iter().enumerate() {
        let path = utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("utm_term", text)
            .append_pair("utm_content", text)
            .append_pair("utm_campaign", text)
            .finish();
        events.push(json!({
            "type": "page_view",
            "visitor_id": if i == 0 { "0612345678".to_owned() } else { format!("v_privacy_{i:04}") },
            "url": format!("https://vivre-ensemble.example.org/merci/{path}?{query}"),
            "referrer": format!("https://blog.example.com/{path}"),
            "utm_medium": text,
        }));
    }
    for chunk in corpus.chunks(30) {
        let props: serde_json::Map<String, Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (format!("note_{i}"), json!(t)))
            .collect();
        events.push(json!({"type": "custom", "name": "share", "visitor_id": "v_privacy_props", "props": props}));
    }
    events.push(
        json!({"type": "custom", "name": "0612345678", "visitor_id": "v_privacy_keys",
        "props": {"jeanne@exemple.fr": "x", "0612345678": "y", "tel +33 6 12 34 56 78": "z"}}),
    );
    events.push(json!({"type": "page_view", "visitor_id": "v_privacy_cred",
        "url": "https://user:secret@vivre-ensemble.example.org/compte?utm_source=metro"}));
    events.push(json!({"type": "signup", "visitor_id": "v_privacy_sign",
        "email": "Signup.Person@Exemple.fr", "phone": "+33 6 99 88 77 66",
        "consents": {"results": true, "newsletter": false}}));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(UA)
        .build()
        .expect("client");
    let base = ingest.base();
    let r = http
        .post(format!("{base}/v1/events"))
        .json(&json!({ "batch": events }))
        .send()
        .await
        .expect("post");
    let status = r.status();
    let answer: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{answer}");
    let mut sent = answer["accepted"].as_u64().expect("accepted");
    for path in [
        "/r/0612345678",
        "/r/jeanne%40exemple.fr",
        "/r/%2B33%206%2012%2034%2056%2078",
    ] {
        let r = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("redirect");
        assert_eq!(r.status(), 302, "{path}");
        sent += 1;
    }
    let r = http
        .get(format!(
            "{base}/p.gif?vid=0612345678&url={}",
            utf8_percent_encode(
                "https://vivre-ensemble.example.org/tel/06 12 34 56 78/jeanne@exemple.fr",
                NON_ALPHANUMERIC
            )
        ))
        .send()
        .await
        .expect("pixel");
    assert_eq!(r.status(), 200);
    sent += 1;

    poll_until(
        "the processor to take every event",
        Duration::from_secs(120),
        || async {
            let (done, high) = group_progress(brokers, topic, group).await.ok()?;
            (done == high && high as u64 == sent).then_some(())
        },
    )
    .await;

    let mut kafka_text = String::new();
    for t in [&topic, &dlq] {
        for m in topic_bytes(brokers, t).await.expect("read topic") {
            kafka_text.push_str(&String::from_utf8_lossy(&m));
            kafka_text.push('\n');
        }
    }
    let db_text = database_text(store).await.expect("read tables");
    assert!(
        kafka_text.len() > 10_000
            && db_text.contains("== events")
            && db_text.contains("_sql.journeys\n"),
        "read back"
    );

    let mut looked_for = vec![
        "ops@example.org".to_owned(),
        "signup.person@exemple.fr".to_owned(),
        "99 88 77 66".to_owned(),
        "99887766".to_owned(),
        "user:secret".to_owned(),
        "jeanneexemplefr".to_owned(),
    ];
    for (text, redacted) in &corpus {
        if text != redacted {
            looked_for.extend(needles(text, redacted));
        }
    }
    looked_for.sort();
    looked_for.dedup();
    let (kafka_lower, db_lower) = (kafka_text.to_lowercase(), db_text.to_lowercase());
    let leaks: Vec<String> = looked_for
        .iter()
        .flat_map(|n| {
            [("kafka", &kafka_lower), ("clickhouse", &db_lower)]
                .into_iter()
                .filter(|(_, hay)| hay.contains(n.as_str()))
                .map(move |(w, _)| format!("{n:?} in {w}"))
        })
        .collect();
    assert!(leaks.is_empty(), "personal data leaked: {leaks:?}");
    eprintln!(
        "privacy: {} needles from {} corpus strings searched in {} bytes of Kafka and {} bytes of ClickHouse: none found",
        looked_for.len(),
        corpus.len(),
        kafka_text.len(),
        db_text.len()
    );
    // The look-alikes are kept, as typed.
    for (text, redacted) in &corpus {
        if text == redacted {
            let json = serde_json::to_string(text).expect("json");
            let as_json = &json[1..json.len() - 1];
            assert!(db_text.contains(as_json), "{text:?} kept in ClickHouse");
        }
    }
    let (_, metrics) = ingest.get("/metrics").expect("metrics");
    for field in [
        "url",
        "utm_term",
        "utm_content",
        "utm_medium",
        "utm_campaign",
        "user_agent",
        "placement",
        "custom_name",
        "prop_key",
        "prop_value",
    ] {
        let series = format!("ensemble_ingest_values_redacted_total{{field=\"{field}\"}}");
        assert!(
            metric_value(&metrics, &series).is_some_and(|n| n > 0.0),
            "{series} counted: {metrics}"
        );
    }
}
