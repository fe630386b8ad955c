//! `/api/uplift` on a fixture of known daily counts; the expected numbers
//! are scipy 1.17's (`stats.ttest_ind(phase, baseline, equal_var=False)`,
//! its `df` and `.confidence_interval(0.95)`), over the same days.

use serde_json::json;

use super::*;

/// Sign-ups per day in the seven days before the campaign (2025-01-10 to
/// 01-16), each after a page view, plus one page view without sign-up a day.
const BEFORE: [u32; 7] = [3, 5, 4, 6, 2, 4, 5];
/// Phase 1's 22 days repeat this, with two page views without sign-up a
/// day; phases 2 and 3 have no event (their days count as zeros).
const PHASE_1: [u32; 5] = [9, 12, 7, 15, 11];

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn daily_fixture() -> Vec<EventRow> {
    use EventType::*;
    let mut events = Vec::new();
    let mut id = 10_000u128;
    let mut day = |date: chrono::NaiveDate, signups: u32, views_alone: u32| {
        let d = date.format("%Y-%m-%d");
        for k in 0..signups + views_alone {
            id += 2;
            let visitor = leak(format!("v_uplift_{d}_{k}"));
            events.push(ev(id, visitor, leak(format!("{d}T10:00:00Z")), PageView));
            if k < signups {
                events.push(Ev {
                    contact: Some(leak(format!("u{d}{k}"))),
                    ..ev(id + 1, visitor, leak(format!("{d}T10:05:00Z")), Signup)
                });
            }
        }
    };
    let first = chrono::NaiveDate::from_ymd_opt(2025, 1, 10).expect("date");
    for (i, n) in BEFORE.iter().enumerate() {
        day(first + chrono::Duration::days(i as i64), *n, 1);
    }
    for i in 0..22 {
        day(
            first + chrono::Duration::days(7 + i),
            PHASE_1[i as usize % 5],
            2,
        );
    }
    enrich(&events)
}

fn near(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-9)
}

#[tokio::test]
async fn uplift_per_phase_is_welchs_difference_of_daily_means() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_uplift"));
    load_rows(&store, daily_fixture()).await;
    let api = serve(&store).await;
    let get = |q: &'static str| {
        let api = &api;
        async move { api.get(&format!("/api/uplift{q}"), Some(ANALYST)).await }
    };

    let (status, u) = get("").await;
    assert_eq!(status, 200, "{u}");
    let base = &u["baseline"];
    // 28 days asked, but nothing was recorded before 2025-01-10.
    assert_eq!(base["kind"], "before");
    assert_eq!(base["asked_days"], 28);
    assert_eq!(
        (&base["first_day"], &base["last_day"]),
        (&json!("2025-01-10"), &json!("2025-01-16"))
    );
    assert_eq!(base["days"], 7);
    let values: Vec<u64> = base["daily"]
        .as_array()
        .expect("daily")
        .iter()
        .map(|d| d["value"].as_u64().expect("value"))
        .collect();
    assert_eq!(values, [3, 5, 4, 6, 2, 4, 5]);
    let phases = u["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 3);
    let p1 = &phases[0];
    assert_eq!(p1["phase"], "p1-lancement");
    assert_eq!(p1["days"], 22);
    assert!(near(&p1["mean"], 10.772_727_272_727_273), "{p1}");
    assert!(near(&p1["sd"], 2.689_163_760_651_576_6), "{p1}");
    assert!(near(&p1["uplift_per_day"], 6.629_870_129_870_13), "{p1}");
    assert!(near(&p1["df"], 21.177_174_573_489_14), "{p1}");
    assert!(near(&p1["low_95"], 5.037_077_700_222_953), "{p1}");
    assert!(near(&p1["high_95"], 8.222_662_559_517_307), "{p1}");
    assert!(near(&p1["extra"], 6.629_870_129_870_13 * 22.0), "{p1}");
    assert!(
        near(&p1["extra_low_95"], 5.037_077_700_222_953 * 22.0),
        "{p1}"
    );
    assert!(
        near(&p1["relative"], 6.629_870_129_870_13 / (29.0 / 7.0)),
        "{p1}"
    );
    assert_eq!(p1["reason"], Value::Null);
    // Phase 2: every day at zero (the collectors ran): a drop, with
    // scipy's interval (no spread in the phase, df = 7 − 1).
    let p2 = &phases[1];
    assert_eq!(p2["days"], 21);
    assert!(near(&p2["uplift_per_day"], -29.0 / 7.0), "{p2}");
    assert!(near(&p2["df"], 6.0), "{p2}");
    assert!(near(&p2["low_95"], -5.386_946_157_642_749_5), "{p2}");
    assert!(near(&p2["high_95"], -2.898_768_128_071_537), "{p2}");

    // Visits: the page views, per day.
    let (status, v) = get("?metric=visits&phase=p1-lancement").await;
    assert_eq!(status, 200, "{v}");
    let phases = v["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 1, "phase= keeps one phase: {v}");
    assert!(
        near(&phases[0]["uplift_per_day"], 7.629_870_129_870_13),
        "{v}"
    );
    assert!(near(&phases[0]["low_95"], 6.037_077_700_222_953), "{v}");
    assert!(near(&phases[0]["high_95"], 9.222_662_559_517_307), "{v}");

    // A shorter baseline: the last three days before the campaign.
    let (_, s) = get("?baseline_days=3").await;
    assert_eq!(s["baseline"]["first_day"], "2025-01-14");
    let p1 = &s["phases"][0];
    assert!(near(&p1["df"], 3.980_026_689_438_058), "{p1}");
    assert!(near(&p1["low_95"], 4.179_737_522_858_156), "{p1}");
    assert!(near(&p1["high_95"], 10.032_383_689_263_058), "{p1}");

    // The figures' answer is the events' answer.
    let (_, from_events) = get("?source=events").await;
    assert_eq!(from_events, u, "source=events");

    // No day between back-to-back phases: no interval, and why.
    let (status, b) = get("?baseline=between").await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["baseline"]["days"], 0);
    for p in b["phases"].as_array().expect("phases") {
        assert_eq!(p["reason"], "no_baseline_days", "{p}");
        assert_eq!(
            (&p["low_95"], &p["uplift_per_day"]),
            (&Value::Null, &Value::Null)
        );
    }

    // CSV: one row per phase.
    let r = api
        .http
        .get(format!("{}/api/uplift?format=csv", api.base))
        .bearer_auth(ANALYST)
        .send()
        .await
        .expect("csv");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    let lines: Vec<&str> = text.trim_start_matches('\u{feff}').lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with(
            "phase,first_day,last_day,days,mean,sd,baseline_mean,uplift_per_day,low_95,high_95"
        ),
        "{text}"
    );
    assert!(
        lines[1].starts_with("p1-lancement,2025-01-17,2025-02-07,22,"),
        "{text}"
    );

    // What cannot be asked, each with the parameter named.
    for (q, parameter) in [
        ("?from=2025-01-20", "from"),
        ("?baseline=last-year", "baseline"),
        ("?baseline_days=1", "baseline_days"),
        ("?baseline_days=many", "baseline_days"),
        ("?baseline=between&baseline_days=7", "baseline_days"),
        ("?phase=hors-phase", "phase"),
        ("?metric=scans", "metric"),
        ("?compare=previous", "compare"),
    ] {
        let (status, e) = get(q).await;
        assert_eq!(status, 400, "{q}: {e}");
        assert!(e.to_string().contains(parameter), "{q}: {e}");
    }
}
