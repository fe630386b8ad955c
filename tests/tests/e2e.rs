//! End to end: the collector, the processor and the dashboard run as
//! processes against the real broker and ClickHouse, on a campaign calendar
//! whose last phase includes today. The simulator sends the history (~100 000
//! events, retries and malformed ones included) through the import endpoint,
//! then a live tail through the redirect, the pixel and the events API
//! (server time, today); once the dashboard's freshness says nothing is
//! waiting, its numbers equal the ground truth computed independently from
//! what the simulator meant — counts exactly, fractional credits within 1e-9.
//!
//! It runs the binaries in `target/debug`, which `cargo test --workspace`
//! (deploy/local/test) builds first; `cargo test -p ensemble-tests` alone may
//! run stale ones.

use std::time::Duration;

use ensemble_core::Campaign;
use ensemble_tests::live::{live_campaign_toml, moved_campaign_toml, send_live};
use ensemble_tests::sim::{send_import, simulate, SimConfig};
use ensemble_tests::truth::{compute, Calendar};
use ensemble_tests::{
    campaign_file, database_text, json_close, metric_value, poll_until, topic_bytes,
    workspace_binary, Service, Wiring,
};
use serde_json::Value;

const SECRET: &str = "e2e-contact-secret-0123456789";
const IMPORT: &str = "e2e-import-token-0123456789";
const ANALYST: &str = "e2e-analyst-token-0123456789";

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_equals_the_simulators_ground_truth() {
    // The campaign's calendar moved so that today is day 8 of its last phase.
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    let text = std::fs::read_to_string(campaign_file()).expect("campaign file");
    let dir = tempfile::tempdir().expect("tempdir");
    let campaign_path = dir.path().join("campaign.toml");
    std::fs::write(
        &campaign_path,
        live_campaign_toml(&text, today).expect("live calendar"),
    )
    .expect("write campaign");
    let campaign = Campaign::load(&campaign_path).expect("campaign");
    let now = chrono::Utc::now();
    assert_ne!(campaign.phase_at(now), "hors-phase", "today is in a phase");
    // The history ends an hour ago; the live tail is now.
    let sim = simulate(
        &campaign,
        &SimConfig {
            seed: 42,
            people: 20_000,
            until: Some(now - chrono::Duration::hours(1)),
            ..SimConfig::default()
        },
    );
    assert!(
        sim.events.len() > 90_000,
        "about 100 000 events: {}",
        sim.events.len()
    );
    let calendar = calendar_of(&campaign);
    // Last year's campaign, served side by side in its own database: the
    // same file 52 weeks earlier under another id, its own simulated people
    // (numbered like this year's: the same visitor ids and contacts come
    // back a year later), sent through the same collector and topic.
    let last_path = dir.path().join("last-year.toml");
    std::fs::write(&last_path, last_year_toml(&text, today)).expect("write last year");
    let last = Campaign::load(&last_path).expect("last year's campaign");
    let last_sim = simulate(
        &last,
        &SimConfig {
            seed: 2024,
            people: 5_000,
            ..SimConfig::default()
        },
    );
    let last_store = ensemble_tests::migrated_database("it_e2e_last").await;
    let also = format!("{}={}", last_path.display(), last_store.database);

    let wiring = Wiring::new("e2e").await;
    let Wiring {
        brokers,
        topic,
        dlq,
        group,
        store,
    } = &wiring;
    let c = campaign_path.display().to_string();
    let kafka = wiring.kafka_args();
    let ch = wiring.clickhouse_args();

    let mut args = vec![
        "--campaign",
        &c,
        "--also-campaign",
        &also,
        "--import-token",
        IMPORT,
        "--contact-secret",
        SECRET,
        // Each simulated person comes from an address of their own.
        "--trust-forwarded-for",
        "--trusted-proxies",
        "127.0.0.1",
    ];
    args.extend(kafka);
    let ingest = Service::start(&workspace_binary("ensemble-ingest"), &args, &[]).expect("ingest");
    let mut args = vec![
        "--campaign",
        &c,
        "--also-campaign",
        &also,
        "--group-id",
        &group,
    ];
    args.extend(kafka);
    args.extend(ch);
    let processor =
        Service::start(&workspace_binary("ensemble-processor"), &args, &[]).expect("processor");
    let mut args = vec![
        "--campaign",
        &c,
        "--also-campaign",
        &also,
        "--analyst-tokens",
        ANALYST,
        "--processor-group",
        &group,
        // The local stack's read-only user, as the demo runs it.
        "--clickhouse-user",
        "ensemble_dashboard",
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

    let collector = ingest.base();
    let (accepted, rejected) = send_import(&collector, IMPORT, &sim.events, 500, |_| {})
        .await
        .expect("send");
    assert_eq!(
        accepted as usize,
        sim.valid_events + sim.retries,
        "every valid event (and its retries) accepted"
    );
    assert_eq!(
        rejected.values().sum::<u64>() as usize,
        sim.malformed,
        "{rejected:?}"
    );
    let (accepted, _) = send_import(&collector, IMPORT, &last_sim.events, 500, |_| {})
        .await
        .expect("send last year");
    assert_eq!(accepted as usize, last_sim.valid_events + last_sim.retries);

    // The live tail: new people scan posters and click cards today, their
    // landing views come through the pixel, some sign up through the events
    // API; people from the history come back and sign up today.
    let returning: Vec<(String, String)> = returning_visitors(&sim.truth, now, 40);
    assert_eq!(
        returning.len(),
        40,
        "enough recent visitors without a sign-up"
    );
    let tail = send_live(&collector, &campaign, 7, 300, &returning)
        .await
        .expect("live tail");
    assert!(
        tail.redirects == 300 && tail.pixels > 200 && tail.signups > 100,
        "{tail:?}"
    );
    let metrics = ingest.get("/metrics").expect("ingest metrics").1;
    assert_eq!(
        metric_value(
            &metrics,
            "ensemble_ingest_redirects_total{placement=\"known\",recorded=\"yes\"}"
        ),
        Some(300.0),
        "every scan confirmed in Kafka before its redirect answered"
    );
    let mut events = sim.truth.clone();
    events.extend(tail.truth.iter().cloned());
    let truth = compute(&events, &calendar);
    let live_phase = calendar.phase(now);
    assert!(
        truth.touches.keys().any(|(_, p)| *p == live_phase),
        "the live tail touches today's phase"
    );

    // Wait until the dashboard says nothing is waiting: every event the
    // collector accepted is committed by the processor, i.e. in ClickHouse.
    poll_until(
        "the dashboard's freshness: nothing waiting",
        Duration::from_secs(600),
        || async {
            let live = dashboard.get_json("/api/live", ANALYST);
            (live["up_to_date"] == true && live["pending_events"] == 0).then_some(live)
        },
    )
    .await;

    // Where the processor sent the rows: last year's (no restart here, so
    // each accepted message inserted once) to last year's database, the
    // rest to this year's.
    let metrics = processor.get("/metrics").expect("processor metrics").1;
    let by = |id: &str| {
        metric_value(
            &metrics,
            &format!("ensemble_processor_rows_by_campaign_total{{campaign=\"{id}\"}}"),
        )
    };
    assert_eq!(
        by(&last.id),
        Some((last_sim.valid_events + last_sim.retries) as f64),
        "last year's rows to its database"
    );
    assert_eq!(
        by(&campaign.id),
        metric_value(&metrics, "ensemble_processor_rows_inserted_total")
            .map(|n| n - (last_sim.valid_events + last_sim.retries) as f64),
        "every other row to this year's"
    );

    let overview = dashboard.get_json("/api/overview", ANALYST);
    assert_eq!(overview["current"]["totals"]["visitors"], truth.visitors);
    assert_eq!(overview["current"]["totals"]["signups"], truth.signups);
    last_year_equals_its_truth(&dashboard, &last, &last_sim, &overview);

    let channels = dashboard.get_json("/api/channels", ANALYST);
    for ((channel, phase), n) in &truth.touches {
        let row = channels["rows"]
            .as_array()
            .and_then(|rows| {
                rows.iter()
                    .find(|r| r["channel"] == *channel && r["phase"] == *phase)
            })
            .unwrap_or_else(|| panic!("no row {channel}/{phase}"));
        assert_eq!(
            row["touches"].as_u64(),
            Some(*n),
            "touches {channel}/{phase}"
        );
    }

    let attribution = dashboard.get_json("/api/attribution", ANALYST);
    assert_eq!(attribution["conversions"].as_u64(), Some(truth.conversions));
    for (model, credits) in &truth.credits {
        let got = attribution["by_channel"][*model]
            .as_object()
            .expect("model");
        assert_eq!(got.len(), credits.len(), "{model}: {got:?} vs {credits:?}");
        for (channel, want) in credits {
            let have = got.get(channel).and_then(Value::as_f64).unwrap_or(f64::NAN);
            assert!(
                (have - want).abs() < 1e-9,
                "{model}/{channel}: dashboard {have}, truth {want}"
            );
        }
    }
    // Conversion paths: every path's counts and times equal the truth's.
    let paths = dashboard.get_json("/api/paths?limit=100000", ANALYST);
    assert_eq!(
        paths["distinct_paths"].as_u64(),
        Some(truth.paths.len() as u64),
        "distinct paths"
    );
    assert!(
        truth.paths.len() < 100_000,
        "every path listed: {}",
        truth.paths.len()
    );
    assert_eq!(paths["conversions"].as_u64(), Some(truth.conversions));
    for (path, want) in &truth.paths {
        let line = paths["paths"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["path"] == *path))
            .unwrap_or_else(|| panic!("no path `{path}` in {paths}"));
        assert_eq!(
            line["conversions"].as_u64(),
            Some(want.conversions),
            "{path}"
        );
        assert_eq!(
            line["without_signup"].as_u64(),
            Some(want.without_signup),
            "{path}"
        );
        if want.delays_ms.is_empty() {
            assert!(line["mean_time_to_signup_s"].is_null(), "{path}");
            continue;
        }
        let mean = want.delays_ms.iter().sum::<i64>() as f64 / 1000.0 / want.delays_ms.len() as f64;
        // The live tail's events are stamped by the collector, a few
        // milliseconds after the test's clock the truth has: times agree
        // within a second (the mean) and a minute (the median, to the minute).
        let have = line["mean_time_to_signup_s"].as_f64().unwrap_or(f64::NAN);
        assert!((have - mean).abs() < 1.0, "{path}: mean {have} vs {mean}");
        let mut minutes: Vec<i64> = want.delays_ms.iter().map(|ms| ms / 60_000 * 60).collect();
        minutes.sort_unstable();
        let median = minutes[(minutes.len() - 1) / 2];
        let have = line["median_time_to_signup_s"].as_i64().unwrap_or(i64::MIN);
        assert!(
            (have - median).abs() <= 60,
            "{path}: median {have} vs {median}"
        );
    }
    // The default page of paths finds its medians another way (the hour,
    // then its minutes): the same medians.
    let top = dashboard.get_json("/api/paths", ANALYST);
    for line in top["paths"].as_array().expect("paths") {
        let all = paths["paths"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["path"] == line["path"]))
            .expect("listed in both");
        assert_eq!(line, all, "a top path's line, alone or among all");
    }
    assert_eq!(top["paths"].as_array().map(Vec::len), Some(20));
    assert!(
        truth.paths.values().any(|p| p.without_signup > 0) && truth.paths.len() > 20,
        "a campaign with many paths, converting and not: {}",
        truth.paths.len()
    );
    // Scans by weekday × hour, Paris time.
    let hours = dashboard.get_json("/api/scan-hours", ANALYST);
    let mut off = 0u64;
    for c in hours["cells"].as_array().expect("cells") {
        let key = (
            c["weekday"].as_u64().unwrap_or(0) as u32,
            c["hour"].as_u64().unwrap_or(0) as u32,
        );
        let want = truth.scan_hours.get(&key).copied().unwrap_or(0);
        off += c["scans"].as_u64().unwrap_or(0).abs_diff(want);
    }
    assert_eq!(
        hours["scans"].as_u64(),
        Some(truth.scan_hours.values().sum::<u64>()),
        "scans"
    );
    assert!(
        truth.scan_hours.len() > 100,
        "scans on most weekday hours: {}",
        truth.scan_hours.len()
    );
    // Exact, but for a live scan the collector stamped across an hour.
    assert!(
        off <= 2 * truth.scans_near_an_hour,
        "scan hours off by {off} ({} scans within 2 s of an hour)",
        truth.scans_near_an_hour
    );
    // The device breakdown: every channel × device class × OS family.
    let devices = dashboard.get_json("/api/devices", ANALYST);
    let got: std::collections::BTreeMap<(String, String, String), (u64, u64)> = devices["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
            let n = |k: &str| l[k].as_u64().unwrap_or(0);
            (
                (s("channel"), s("device_class"), s("os_family")),
                (n("visitors"), n("signed")),
            )
        })
        .collect();
    assert_eq!(got, truth.devices, "devices per channel vs the truth");
    assert!(
        truth.devices.keys().filter(|k| k.0 == "*").count() >= 3,
        "phones, Android and desktops: {:?}",
        truth.devices
    );
    // The reach report's measured scans per placement.
    let media = dashboard.get_json("/api/media", ANALYST);
    let lines = media["placements"].as_array().expect("placements");
    assert_eq!(lines.len(), campaign.placements.len());
    for line in lines {
        let code = line["code"].as_str().unwrap_or_default();
        let want = truth.scans_by_placement.get(code).copied().unwrap_or(0);
        assert_eq!(line["scans"].as_u64(), Some(want), "{code}: {line}");
    }
    assert!(
        truth
            .scans_by_placement
            .values()
            .filter(|n| **n > 0)
            .count()
            >= 8,
        "scans on most placements: {:?}",
        truth.scans_by_placement
    );
    // The channels' and placements' cost per sign-up divide the reach
    // report's cost (the question's share) by their sign-ups: where both
    // count the same sign-ups, the same amount, on a phase as on the whole.
    let mut amounts = 0;
    for question in ["", "?phase=p2-saint-valentin"] {
        let media = dashboard.get_json(&format!("/api/media{question}"), ANALYST);
        let line = |list: &str, key: &str, value: &str| -> serde_json::Value {
            media[list]
                .as_array()
                .and_then(|l| l.iter().find(|x| x[key] == value).cloned())
                .unwrap_or_default()
        };
        let placements = dashboard.get_json(&format!("/api/placements{question}"), ANALYST);
        for p in placements["rows"].as_array().expect("rows") {
            let m = line("placements", "code", p["code"].as_str().unwrap_or_default());
            if m["signups"] == p["signups"] {
                assert_eq!(
                    m["cost_per_signup_eur"], p["cost_per_signup_eur"],
                    "{question} {p}"
                );
                amounts += usize::from(p["cost_per_signup_eur"].is_f64());
            }
        }
        let channels = dashboard.get_json(&format!("/api/channels{question}"), ANALYST);
        let mut by_channel: std::collections::BTreeMap<String, (u64, serde_json::Value)> =
            std::collections::BTreeMap::new();
        for r in channels["rows"].as_array().expect("rows") {
            let e = by_channel
                .entry(r["channel"].as_str().unwrap_or_default().to_owned())
                .or_insert((0, r["cost_per_signup_eur"].clone()));
            e.0 += r["signups"].as_u64().unwrap_or(0);
        }
        for (channel, (n, cost)) in by_channel {
            let m = line("channels", "channel", &channel);
            if m["signups"].as_u64() == Some(n) {
                assert_eq!(m["cost_per_signup_eur"], cost, "{question} {channel}");
                amounts += usize::from(cost.is_f64());
            }
        }
    }
    assert!(amounts >= 6, "only {amounts} costs per sign-up compared");
    // The data-driven models equal the truth's own computation (Markov by
    // value iteration there, Gaussian elimination here; Shapley by its
    // closed form there, over coalitions here).
    for (model, want) in [("markov", &truth.markov), ("shapley", &truth.shapley)] {
        let got = attribution["by_channel"][model].as_object().expect("model");
        let positive = got
            .values()
            .filter(|v| v.as_f64().unwrap_or(0.0) > 1e-12)
            .count();
        assert_eq!(
            positive,
            want.values().filter(|v| **v > 1e-12).count(),
            "{model}: {got:?} vs {want:?}"
        );
        for (channel, w) in want {
            let have = got.get(channel).and_then(Value::as_f64).unwrap_or(0.0);
            assert!(
                (have - w).abs() < 1e-6,
                "{model}/{channel}: dashboard {have}, truth {w}"
            );
        }
        let sum: f64 = got.values().filter_map(Value::as_f64).sum();
        assert!(
            (sum - truth.conversions as f64).abs() < 1e-6,
            "{model} sums to {sum}"
        );
    }
    // And against PyPI's channelattribution (simulated walks) on the paths
    // the dashboard exports.
    let (code, csv_text) = ensemble_tests::http_get_with(
        dashboard.port(),
        "/api/paths?limit=100000&format=csv",
        &[("Authorization", &format!("Bearer {ANALYST}"))],
    )
    .expect("paths CSV");
    assert_eq!(code, 200, "{csv_text}");
    let independent =
        ensemble_tests::channelattribution_markov(&csv_text).expect("channelattribution");
    let mut farthest = (String::new(), 0.0f64);
    for (channel, w) in &independent {
        let have = attribution["by_channel"]["markov"][channel]
            .as_f64()
            .unwrap_or(0.0);
        let gap = (have - w).abs() / truth.conversions as f64;
        if gap > farthest.1 {
            farthest = (channel.clone(), gap);
        }
    }
    println!(
        "markov vs channelattribution: farthest channel {} off by {:.4} % of the conversions",
        farthest.0,
        100.0 * farthest.1
    );
    assert!(
        farthest.1 < 0.01,
        "markov: ensemble {} vs channelattribution {independent:?}",
        attribution["by_channel"]["markov"]
    );
    // The figures the processor kept (what the dashboard shows by default)
    // agree with a recount from the events on every endpoint.
    let phase = format!("phase={live_phase}");
    for path in [
        "/api/overview",
        "/api/channels",
        "/api/attribution",
        "/api/placements",
        "/api/funnel",
        "/api/reach",
        "/api/paths?limit=100000",
        "/api/media",
        "/api/scan-hours",
        "/api/devices",
        "/api/timeseries?metric=visitors&bucket=day",
        "/api/timeseries?metric=signups&bucket=hour",
    ] {
        for filter in ["bots=exclude", phase.as_str()] {
            let sep = if path.contains('?') { '&' } else { '?' };
            let fast = dashboard.get_json(&format!("{path}{sep}{filter}"), ANALYST);
            let slow = dashboard.get_json(&format!("{path}{sep}{filter}&source=events"), ANALYST);
            assert!(
                json_close(&fast, &slow),
                "{path}?{filter}\nfigures: {fast}\nevents:  {slow}"
            );
        }
    }
    // The figures the default questions read, summed by range by the view
    // the processor made at start, equal the unsummed ones in both years.
    for (db, c) in [(store, &campaign), (&last_store, &last)] {
        let n = ensemble_tests::summed_ranges_agree(db, c)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", db.database));
        assert!(n > 1_000, "{}: {n} values compared", db.database);
    }
    // The privacy scan of tests/tests/privacy.rs over this run: no address
    // anyone signed up with (simulated and live: all @exemple.fr) in any
    // byte the broker or ClickHouse holds.
    let mut kafka_text = String::new();
    for t in [&topic, &dlq] {
        for m in topic_bytes(brokers, t).await.expect("read topic") {
            kafka_text.push_str(&String::from_utf8_lossy(&m));
        }
    }
    let mut db_text = database_text(store).await.expect("read tables");
    db_text.push_str(
        &database_text(&last_store)
            .await
            .expect("read last year's tables"),
    );
    assert!(kafka_text.len() > 1_000_000, "the whole run read back");
    for (what, text) in [("Kafka", &kafka_text), ("ClickHouse", &db_text)] {
        let lower = text.to_lowercase();
        let at = lower.find("@exemple.fr");
        assert!(
            at.is_none(),
            "an e-mail address in {what}: …{}…",
            at.map(|i| String::from_utf8_lossy(
                &lower.as_bytes()[i.saturating_sub(40)..(i + 20).min(lower.len())]
            ))
            .unwrap_or_default()
        );
    }
    drop((ingest, processor, dashboard));
}

fn calendar_of(campaign: &Campaign) -> Calendar {
    Calendar {
        zone: campaign.timezone,
        phases: campaign
            .phases
            .iter()
            .map(|p| (p.id.clone(), p.start_date, p.end_date))
            .collect(),
    }
}

/// The campaign file 52 weeks before this year's live calendar (same
/// weekdays), under the id `<id>-last-year`.
fn last_year_toml(text: &str, today: chrono::NaiveDate) -> String {
    let live = live_campaign_toml(text, today).expect("calendar");
    let id = format!(
        "{}-last-year",
        Campaign::from_toml(&live).expect("campaign").id
    );
    moved_campaign_toml(&live, -364, &id).expect("last year")
}

/// Last year's campaign, asked with `campaign=`, equals its own ground
/// truth — nothing of this year's events in it, nothing of it in this
/// year's (whose figures the caller checks against this year's truth) —
/// and `/api/years` puts each campaign's phases side by side with the
/// numbers each campaign's overview gives.
fn last_year_equals_its_truth(
    dashboard: &Service,
    last: &Campaign,
    sim: &ensemble_tests::sim::Simulated,
    this_year: &Value,
) {
    let truth = compute(&sim.truth, &calendar_of(last));
    assert!(
        truth.signups > 100,
        "last year has sign-ups: {}",
        truth.signups
    );
    let q = format!("campaign={}", last.id);
    let overview = dashboard.get_json(&format!("/api/overview?{q}"), ANALYST);
    assert_eq!(overview["current"]["totals"]["visitors"], truth.visitors);
    assert_eq!(overview["current"]["totals"]["signups"], truth.signups);
    let channels = dashboard.get_json(&format!("/api/channels?{q}"), ANALYST);
    let rows = channels["rows"].as_array().expect("rows");
    for ((channel, phase), n) in &truth.touches {
        let row = rows
            .iter()
            .find(|r| r["channel"] == *channel && r["phase"] == *phase)
            .unwrap_or_else(|| panic!("last year: no row {channel}/{phase}"));
        assert_eq!(
            row["touches"].as_u64(),
            Some(*n),
            "last year: touches {channel}/{phase}"
        );
    }
    let attribution = dashboard.get_json(&format!("/api/attribution?{q}"), ANALYST);
    assert_eq!(attribution["conversions"].as_u64(), Some(truth.conversions));
    for (channel, want) in &truth.credits["linear"] {
        let have = attribution["by_channel"]["linear"][channel]
            .as_f64()
            .unwrap_or(f64::NAN);
        assert!(
            (have - want).abs() < 1e-9,
            "last year linear/{channel}: {have} vs {want}"
        );
    }
    // An unknown campaign is refused by name.
    let (status, body) = ensemble_tests::http_get_with(
        dashboard.port(),
        "/api/overview?campaign=2019",
        &[("Authorization", &format!("Bearer {ANALYST}"))],
    )
    .expect("unknown campaign");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown campaign `2019`"), "{body}");

    let list = dashboard.get_json("/api/campaigns", ANALYST);
    let ids: Vec<&str> = list
        .as_array()
        .expect("campaigns")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert_eq!(ids[0], last.id, "by calendar start: {list}");
    assert_eq!(
        list[1]["current"], true,
        "this year answers by default: {list}"
    );
    let years = dashboard.get_json("/api/years", ANALYST);
    assert_eq!(years["campaigns"], serde_json::json!(ids));
    let phases = years["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), last.phases.len());
    for (year, overview) in [(0, &overview), (1, this_year)] {
        for (n, aligned) in phases.iter().enumerate() {
            let y = &aligned["by_campaign"][year];
            assert_eq!(aligned["index"].as_u64(), Some(n as u64 + 1));
            assert_eq!(y["campaign"], ids[year]);
            let phase = y["phase"].as_str().expect("phase");
            let want = &overview["current"]["by_phase"][phase];
            assert!(want.is_object(), "{phase} in {overview}");
            assert_eq!(&y["totals"], want, "year {year} phase {phase}");
        }
    }
}

/// Up to `n` human visitors of the history without a sign-up whose last
/// event lies within the last 20 days (so their touches are inside the
/// 30-day lookback of a sign-up today), with a contact to sign up with.
fn returning_visitors(
    truth: &[ensemble_tests::sim::Truth],
    now: chrono::DateTime<chrono::Utc>,
    n: usize,
) -> Vec<(String, String)> {
    use std::collections::BTreeMap;
    let mut last: BTreeMap<&str, (chrono::DateTime<chrono::Utc>, bool)> =
        std::collections::BTreeMap::new();
    for e in truth {
        let entry = last.entry(&e.visitor).or_insert((e.ts, false));
        entry.0 = entry.0.max(e.ts);
        entry.1 |= e.bot || e.event_type == "signup";
    }
    last.into_iter()
        .filter(|(_, (ts, excluded))| !excluded && now - *ts < chrono::Duration::days(20))
        .take(n)
        .enumerate()
        .map(|(i, (vid, _))| (vid.to_owned(), format!("retour.{i}@exemple.fr")))
        .collect()
}
