//! No personal data reaches Kafka or ClickHouse, whatever field it is typed
//! into. Two lines of defence, each tried on its own:
//!
//! 1. **Declaration** (the collector): the redaction corpus
//!    (`model/src/redact_corpus.tsv`) and a held-out corpus of what
//!    detection misses (e-mails written with words, brackets, a full-width
//!    `@`, HTML entities, an internationalised TLD, a quoted local part,
//!    triple percent-encoding, base64; phone numbers with non-breaking
//!    spaces, slashes, full-width digits; an IBAN; a French social-security
//!    number; a street address; a person's name; an e-mail cut by the
//!    256-character limit) go through the real collector in every free-text
//!    field — URL paths and tags, referrers, custom events (names, keys and
//!    values), the User-Agent, placement codes, visitor ids, a sign-up's
//!    e-mail and phone — and through the real processor into ClickHouse.
//!    Every byte the broker holds (keys, payloads, headers, dead letters
//!    included) and every row of every table is read back and searched:
//!    nothing the campaign file does not declare is stored as sent.
//! 2. **Redaction** (the processor, for messages an older collector or
//!    another producer wrote to the topic): the redaction corpus in every
//!    text field of messages produced straight to Kafka; ClickHouse holds
//!    none of its personal data and every look-alike as typed.

use std::time::Duration;

use ensemble_core::event::{EventMessage, EventType};
use ensemble_tests::{
    campaign_file, database_text, group_progress, metric_value, poll_until, produce_raw,
    topic_bytes, workspace_binary, Service, Wiring,
};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

const SECRET: &str = "privacy-contact-secret-0123456789";
const UA: &str = "MyApp/1.0 (contact: ops@example.org; +33 6 12 34 56 78)";

/// What detection misses, each with the needles that must not be stored.
fn held_out() -> Vec<(String, Vec<&'static str>)> {
    let cut = format!("{}jeanne.dupont@exemple.fr", "x".repeat(240));
    vec![
        ("jeanne [at] exemple [dot] fr".into(), vec!["jeanne"]),
        ("jeanne(at)exemple(point)fr".into(), vec!["jeanne"]),
        ("jeanne\u{ff20}exemple.fr".into(), vec!["jeanne"]),
        ("jeanne&#64;exemple.fr".into(), vec!["jeanne"]),
        ("jeanne@exemple.\u{440}\u{444}".into(), vec!["jeanne"]),
        (
            "\"jeanne dupont\"@exemple.fr".into(),
            vec!["jeanne", "dupont"],
        ),
        ("jeanne%252540exemple.fr".into(), vec!["jeanne"]),
        (
            "amVhbm5lQGV4ZW1wbGUuZnI=".into(),
            vec!["amvhbm5lqgv4zw1wbguuzni"],
        ),
        (
            "06\u{a0}12\u{a0}34\u{a0}56\u{a0}78".into(),
            vec!["34\u{a0}56", "0612345678"],
        ),
        ("06/12/34/56/78".into(), vec!["06/12/34", "0612345678"]),
        (
            "\u{ff10}\u{ff16}\u{ff11}\u{ff12}\u{ff13}\u{ff14}\u{ff15}\u{ff16}\u{ff17}\u{ff18}"
                .into(),
            vec!["\u{ff13}\u{ff14}\u{ff15}"],
        ),
        (
            "FR76 3000 6000 0112 3456 7890 189".into(),
            vec!["3000 6000", "30006000"],
        ),
        ("2 84 05 75 123 456 78".into(), vec!["75 123 456", "28405"]),
        (
            "12 rue de la Paix, 75002 Paris".into(),
            vec!["rue de la paix"],
        ),
        ("Jeanne Dupont".into(), vec!["jeanne", "dupont"]),
        (cut, vec!["jeanne", "dupont"]),
    ]
}

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
    let held_out = held_out();
    let texts: Vec<&str> = corpus
        .iter()
        .map(|(t, _)| *t)
        .chain(held_out.iter().map(|(t, _)| t.as_str()))
        .collect();

    // 1. Declaration: every free-text field of events sent to the collector.
    let mut events: Vec<Value> = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let path = utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("utm_term", text)
            .append_pair("utm_content", text)
            .append_pair("utm_campaign", text)
            .finish();
        let mut e = json!({
            "type": "page_view",
            "visitor_id": if i == 0 { "0612345678".to_owned() } else { format!("v_privacy_{i:04}") },
            "url": format!("https://vivre-ensemble.example.org/merci/{path}?{query}"),
            "referrer": format!("https://blog.example.com/{path}"),
        });
        // A field longer than its limit is refused; in the URL it is cut
        // (after redaction, and then undeclared anyway).
        if text.chars().count() <= ensemble_core::event::MAX_UTM_LEN {
            e["utm_medium"] = json!(text);
        }
        events.push(e);
    }
    let custom_at = events.len();
    // Custom events: a declared one with undeclared values, undeclared
    // property names, an undeclared event name.
    for text in texts
        .iter()
        .filter(|t| t.len() <= ensemble_core::event::MAX_PROP_VALUE_LEN)
    {
        events.push(
            json!({"type": "custom", "name": "share", "visitor_id": "v_privacy_props",
            "props": {"network": text}}),
        );
    }
    events.push(
        json!({"type": "custom", "name": "share", "visitor_id": "v_privacy_keys",
        "props": {"jeanne@exemple.fr": "x"}}),
    );
    events.push(json!({"type": "custom", "name": "0612345678", "visitor_id": "v_privacy_keys"}));
    let refused = events.len() - custom_at;
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
    assert_eq!(status, 207, "{answer}");
    let rejected = answer["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), refused, "{answer}");
    assert!(
        rejected.iter().all(|r| r["reason"] == "undeclared"
            && r["index"].as_u64().is_some_and(|i| i as usize >= custom_at)),
        "only the custom events are refused, as undeclared: {answer}"
    );
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
    let processed = |sent: u64| {
        poll_until(
            "the processor to take every event",
            Duration::from_secs(120),
            move || async move {
                let (done, high) = group_progress(brokers, topic, group).await.ok()?;
                (done == high && high as u64 == sent).then_some(())
            },
        )
    };
    processed(sent).await;

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
    for (_, needles) in &held_out {
        looked_for.extend(needles.iter().map(|n| n.to_lowercase()));
    }
    looked_for.sort();
    looked_for.dedup();
    let leaks = |looked_for: &[String], places: &[(&str, &str)]| -> Vec<String> {
        looked_for
            .iter()
            .flat_map(|n| {
                places
                    .iter()
                    .filter(|(_, hay)| hay.contains(n.as_str()))
                    .map(move |(w, _)| format!("{n:?} in {w}"))
            })
            .collect()
    };
    let (kafka_lower, db_lower) = (kafka_text.to_lowercase(), db_text.to_lowercase());
    let found = leaks(
        &looked_for,
        &[("kafka", &kafka_lower), ("clickhouse", &db_lower)],
    );
    assert!(found.is_empty(), "personal data leaked: {found:?}");
    eprintln!(
        "privacy, declaration: {} needles from {} strings searched in {} bytes of Kafka and {} bytes of ClickHouse: none found",
        looked_for.len(),
        texts.len(),
        kafka_text.len(),
        db_text.len()
    );
    // Undeclared text is stored as the placeholder, never as sent.
    assert!(db_text.contains("(undeclared)"), "placeholders stored");
    let (_, metrics) = ingest.get("/metrics").expect("metrics");
    for (name, field) in [
        ("undeclared", "url"),
        ("undeclared", "utm_term"),
        ("undeclared", "utm_content"),
        ("undeclared", "utm_medium"),
        ("undeclared", "utm_campaign"),
        ("redacted", "user_agent"),
        ("redacted", "placement"),
    ] {
        let series = format!("ensemble_ingest_values_{name}_total{{field=\"{field}\"}}");
        assert!(
            metric_value(&metrics, &series).is_some_and(|n| n > 0.0),
            "{series} counted: {metrics}"
        );
    }

    // 2. Redaction, for messages the collector did not write: the corpus in
    // every text field of messages produced straight to the topic.
    let now = chrono::Utc::now();
    let mut raw = Vec::new();
    for (i, (text, _)) in corpus.iter().enumerate() {
        let path = utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        let mut page = EventMessage::new(EventType::PageView, format!("v_older_{i:04}"), now);
        page.url = Some(format!("https://vivre-ensemble.example.org/merci/{path}"));
        page.utm.medium = Some((*text).to_owned());
        page.utm.term = Some((*text).to_owned());
        page.utm.content = Some((*text).to_owned());
        page.utm.campaign = Some((*text).to_owned());
        let mut custom = EventMessage::new(EventType::Custom, format!("v_older_{i:04}"), now);
        custom.custom_name = Some((*text).to_owned());
        custom.props.insert((*text).to_owned(), (*text).to_owned());
        for m in [page, custom] {
            raw.push((m.visitor_id.clone(), m.encode()));
        }
    }
    produce_raw(brokers, topic, &raw).await.expect("produce");
    processed(sent + raw.len() as u64).await;
    let db_text = database_text(store).await.expect("read tables");
    let db_lower = db_text.to_lowercase();
    let mut redacted_needles = Vec::new();
    for (text, redacted) in &corpus {
        if text != redacted {
            redacted_needles.extend(needles(text, redacted));
        }
    }
    redacted_needles.sort();
    redacted_needles.dedup();
    let found = leaks(&redacted_needles, &[("clickhouse", &db_lower)]);
    assert!(
        found.is_empty(),
        "personal data from another producer leaked: {found:?}"
    );
    // The look-alikes are kept, as typed.
    for (text, redacted) in &corpus {
        if text == redacted {
            let json = serde_json::to_string(text).expect("json");
            let as_json = &json[1..json.len() - 1];
            assert!(db_text.contains(as_json), "{text:?} kept in ClickHouse");
        }
    }
    let (_, metrics) = processor.get("/metrics").expect("metrics");
    assert!(
        metric_value(
            &metrics,
            "ensemble_processor_values_redacted_total{field=\"url\"}"
        )
        .is_some_and(|n| n > 0.0),
        "the processor counts what it redacted: {metrics}"
    );
}
