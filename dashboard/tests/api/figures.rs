//! The hand-computed fixture: every endpoint's numbers, on ClickHouse 18.16
//! and on the current engine.

use super::*;

/// Every number of the fixture, computed by hand in the comments of `fixture`.
pub(crate) fn check(overview: &Value, attribution: &Value) {
    let cur = &overview["current"];
    let totals = &cur["totals"];
    assert_eq!(totals["events_by_type"]["qr_scan"], 4, "{totals}");
    assert_eq!(totals["events_by_type"]["page_view"], 5);
    assert_eq!(totals["visits"], 5);
    assert_eq!(totals["events_by_type"]["tinder_card"], 2);
    assert_eq!(
        totals["events_by_type"]["signup"], 5,
        "repeat sign-up is an event"
    );
    assert_eq!(totals["visitors"], 4, "bot excluded");
    assert_eq!(totals["signups"], 4, "repeat sign-up counted once");
    assert_eq!(totals["conversion_rate"], 1.0);
    let p = &cur["by_phase"];
    assert_eq!(p["p1-lancement"]["visitors"], 2);
    assert_eq!(p["p1-lancement"]["signups"], 0);
    assert_eq!(p["p1-lancement"]["events_by_type"]["qr_scan"], 2);
    assert_eq!(p["p2-saint-valentin"]["signups"], 2);
    assert_eq!(p["p2-saint-valentin"]["events_by_type"]["page_view"], 2);
    assert_eq!(p["p3-8-mars"]["signups"], 2);
    assert_eq!(p["p3-8-mars"]["events_by_type"]["signup"], 3);
    assert_eq!(overview["previous"]["totals"]["visitors"], 0);

    assert_eq!(attribution["conversions"], 4);
    let by = |model: &str, channel: &str| {
        attribution["by_channel"][model][channel]
            .as_f64()
            .unwrap_or(0.0)
    };
    let expect = |model: &str, pairs: &[(&str, f64)]| {
        let got = attribution["by_channel"][model].as_object().expect("model");
        assert_eq!(got.len(), pairs.len(), "{model}: {got:?}");
        for (ch, v) in pairs {
            assert!(
                close(by(model, ch), *v),
                "{model}/{ch}: {} vs {v}",
                by(model, ch)
            );
        }
        let total: f64 = got.values().filter_map(Value::as_f64).sum();
        assert!(close(total, 4.0), "{model} credits sum to the conversions");
        // Every credited channel has its interval, around its credit.
        let bounds = attribution["intervals"][model]
            .as_object()
            .expect("intervals");
        assert_eq!(
            bounds.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>(),
            "{model}"
        );
        for (ch, i) in bounds {
            let (low, high) = (i["low"].as_f64(), i["high"].as_f64());
            assert!(
                low.zip(high)
                    .is_some_and(|(l, h)| l < by(model, ch) && by(model, ch) < h),
                "{model}/{ch}: {i} around {}",
                by(model, ch)
            );
        }
    };
    expect(
        "first_touch",
        &[("metro", 2.0), ("direct", 1.0), ("presse", 1.0)],
    );
    expect(
        "last_touch",
        &[
            ("tinder", 1.0),
            ("direct", 1.0),
            ("social", 1.0),
            ("display", 1.0),
        ],
    );
    let third = 1.0 / 3.0;
    expect(
        "linear",
        &[
            ("metro", 1.0),
            ("tinder", 0.5),
            ("direct", 1.0),
            ("presse", third),
            ("abribus", third),
            ("social", third),
            ("display", 0.5),
        ],
    );
    expect(
        "position_based",
        &[
            ("metro", 1.0),
            ("tinder", 0.5),
            ("direct", 1.0),
            ("presse", 0.4),
            ("abribus", 0.2),
            ("social", 0.4),
            ("display", 0.5),
        ],
    );
    // Time decay, half-life 7 days. A: metro 21 d 9 h 1 min before, tinder 16 d 5 h 56 min.
    let day = |d: f64, h: f64, m: f64| d + h / 24.0 + m / 1440.0;
    let w = |age: f64| (-age / 7.0).exp2();
    let (am, at) = (w(day(21.0, 9.0, 1.0)), w(day(16.0, 5.0, 56.0)));
    // C: presse 2 d 0 h 10 min, abribus 1 d 0 h 10 min, social 10 min. E: equal ages.
    let (cp, ca, cs) = (
        w(day(2.0, 0.0, 10.0)),
        w(day(1.0, 0.0, 10.0)),
        w(day(0.0, 0.0, 10.0)),
    );
    expect(
        "time_decay",
        &[
            ("metro", am / (am + at) + 0.5),
            ("tinder", at / (am + at)),
            ("direct", 1.0),
            ("presse", cp / (cp + ca + cs)),
            ("abribus", ca / (cp + ca + cs)),
            ("social", cs / (cp + ca + cs)),
            ("display", 0.5),
        ],
    );
    // Touch phases: A's touches are in phase 1; its conversion in phase 2.
    let touch_phase = attribution["by_channel_phase"]["first_touch"]
        .as_array()
        .expect("list");
    assert!(touch_phase
        .iter()
        .any(|r| r["channel"] == "metro" && r["phase"] == "p1-lancement" && r["credit"] == 1.0));
    let conv_phase = attribution["by_conversion_phase"]["first_touch"]
        .as_array()
        .expect("list");
    assert!(conv_phase.iter().any(|r| r["phase"] == "p2-saint-valentin"
        && r["channel"] == "metro"
        && r["credit"] == 2.0));
    assert!(conv_phase
        .iter()
        .any(|r| r["phase"] == "p3-8-mars" && r["channel"] == "direct"));
}

/// Touches, visitors, visits and sign-ups per channel × phase, by hand:
/// metro/p1 is A's scan + page view 30 s apart (one touch), the card
/// impression is exposure (no touch), C's bus-shelter scan was delivered
/// twice (one touch), every sign-up carries `site`.
fn check_channels(channels: &Value) {
    let rows = channels["rows"].as_array().expect("rows");
    let get = |ch: &str, ph: &str| {
        rows.iter()
            .find(|r| r["channel"] == ch && r["phase"] == ph)
            .unwrap_or_else(|| panic!("no row {ch}/{ph} in {channels}"))
    };
    let expect = [
        ("metro", "p1-lancement", 1, 1, 1, 0),
        ("tinder", "p1-lancement", 1, 1, 0, 0),
        ("gares", "p1-lancement", 1, 1, 0, 0),
        ("metro", "p2-saint-valentin", 1, 1, 0, 0),
        ("display", "p2-saint-valentin", 1, 1, 1, 0),
        ("site", "p2-saint-valentin", 0, 2, 1, 2),
        ("presse", "p3-8-mars", 1, 1, 1, 0),
        ("abribus", "p3-8-mars", 1, 1, 0, 0),
        ("social", "p3-8-mars", 1, 1, 1, 0),
        ("site", "p3-8-mars", 0, 2, 0, 2),
    ];
    assert_eq!(rows.len(), expect.len(), "{channels}");
    for (ch, ph, touches, visitors, visits, signups) in expect {
        let r = get(ch, ph);
        assert_eq!(r["touches"], touches, "{ch}/{ph} touches");
        assert_eq!(r["visitors"], visitors, "{ch}/{ph} visitors");
        assert_eq!(r["visits"], visits, "{ch}/{ph} visits");
        assert_eq!(r["signups"], signups, "{ch}/{ph} signups");
    }
    assert_eq!(get("site", "p3-8-mars")["conversion_rate"], 1.0);
    assert!(
        get("metro", "p1-lancement")["cost_per_signup_eur"].is_null(),
        "no sign-up carried metro"
    );
}

/// Placements and funnel, by hand (see `fixture`).
async fn check_placements_and_funnel(api: &Api) -> (Value, Value) {
    let (status, placements) = api.get("/api/placements", Some(ANALYST)).await;
    assert_eq!(status, 200, "{placements}");
    let rows = placements["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 14, "every configured placement, seen or not");
    let p = |code: &str| {
        rows.iter()
            .find(|r| r["code"] == code)
            .unwrap_or_else(|| panic!("{code}"))
    };
    assert_eq!(p("M-CHATELET")["scans"], 1);
    assert_eq!(p("M-CHATELET")["visits"], 1);
    assert_eq!(
        p("T-VOEUX")["scans"],
        1,
        "the card click counts, the impression does not"
    );
    assert_eq!(
        p("A-NATIONAL-1")["scans"],
        1,
        "delivered twice, counted once"
    );
    assert_eq!(p("P-QUOTIDIEN")["scans"], 0);
    assert_eq!(rows[0]["scans"], 1);
    assert_eq!(
        rows.last().map(|r| r["scans"].clone()),
        Some(Value::from(0))
    );

    let (status, funnel) = api.get("/api/funnel", Some(ANALYST)).await;
    assert_eq!(status, 200, "{funnel}");
    let rows = funnel["rows"].as_array().expect("rows");
    let expect: [(&str, u64, u64, u64, Option<f64>); 8] = [
        // A 21 d 9 h 1 min and E 1 h: the median of two is the lower one
        // (as the paths' medians: a time that occurred).
        ("metro", 2, 2, 2, Some(3_600.0)),
        ("tinder", 1, 1, 1, Some(1_403_760.0)),
        // B signed up without a landing visit: not through this funnel.
        ("gares", 1, 0, 0, None),
        ("presse", 1, 1, 1, Some(173_400.0)),
        ("abribus", 1, 1, 1, Some(87_000.0)),
        ("social", 1, 1, 1, Some(600.0)),
        ("display", 1, 1, 1, Some(3_600.0)),
        ("referral", 0, 0, 0, None),
    ];
    for (ch, touched, visited, signed, median) in expect {
        let r = rows.iter().find(|r| r["channel"] == ch);
        if touched == 0 {
            assert!(r.is_none(), "{ch}");
            continue;
        }
        let r = r.unwrap_or_else(|| panic!("{ch} in {funnel}"));
        assert_eq!(
            (
                r["touched"].as_u64(),
                r["visited"].as_u64(),
                r["signed_up"].as_u64()
            ),
            (Some(touched), Some(visited), Some(signed)),
            "{ch}"
        );
        assert_eq!(r["median_seconds_to_signup"].as_f64(), median, "{ch}");
    }
    (placements, funnel)
}

/// Reach, time series and the visitor-level journey, by hand.
async fn check_reach_timeseries_journey(api: &Api) -> (Value, Value) {
    let (status, reach) = api.get("/api/reach", Some(AGENCY)).await;
    assert_eq!(status, 200, "{reach}");
    let ch = |name: &str| {
        reach["channels"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["channel"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} in {reach}"))
    };
    assert_eq!(ch("metro")["visitors"], 2);
    assert_eq!(
        ch("metro")["frequency"],
        serde_json::json!({"1": 1, "2": 1})
    );
    assert_eq!(
        ch("tinder")["frequency"],
        serde_json::json!({"2": 1}),
        "the impression is a contact"
    );
    assert_eq!(
        ch("abribus")["frequency"],
        serde_json::json!({"1": 1}),
        "redelivery is not a contact"
    );
    let both = |a: &str, b: &str| {
        reach["overlap"]
            .as_array()
            .and_then(|o| o.iter().find(|x| x["a"] == a && x["b"] == b))
            .map_or(0, |x| x["visitors"].as_u64().unwrap_or(0))
    };
    assert_eq!(both("metro", "metro"), 2);
    assert_eq!(both("metro", "tinder"), 1);
    assert_eq!(both("tinder", "metro"), 1);
    assert_eq!(both("metro", "display"), 1);
    assert_eq!(both("presse", "social"), 1);
    assert_eq!(both("metro", "gares"), 0);

    let (status, series) = api
        .get("/api/timeseries?metric=signups&bucket=day", Some(ANALYST))
        .await;
    assert_eq!(status, 200, "{series}");
    let points: Vec<(String, u64)> = series["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| {
            (
                p["bucket"].as_str().unwrap_or("").to_owned(),
                p["value"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = [
        ("2025-02-10", 1),
        ("2025-02-20", 1),
        ("2025-03-03", 1),
        ("2025-03-05", 1),
    ]
    .iter()
    .map(|(d, n)| ((*d).to_owned(), *n))
    .collect();
    assert_eq!(
        points, want,
        "B's repeat sign-up on 6 March is not a new conversion"
    );
    assert_eq!(series["phases"].as_array().map(Vec::len), Some(3));
    let (_, hours) = api
        .get(
            "/api/timeseries?metric=events&bucket=hour&from=2025-01-20&to=2025-01-20",
            Some(ANALYST),
        )
        .await;
    assert_eq!(
        hours["points"],
        serde_json::json!([{"bucket": "2025-01-20T09:00:00Z", "value": 2}])
    );

    assert_eq!(
        api.get("/api/journey?visitor_id=v_fixture_c", Some(AGENCY))
            .await
            .0,
        403
    );
    let (status, journey) = api
        .get("/api/journey?visitor_id=v_fixture_c", Some(ANALYST))
        .await;
    assert_eq!(status, 200, "{journey}");
    let types: Vec<&str> = journey["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types,
        ["page_view", "qr_scan", "page_view", "signup"],
        "redelivered scan shown once"
    );
    (reach, series)
}

/// Every question gets from the stored figures the answer the same
/// definitions give computed from the raw events.
async fn figures_agree_with_events(api: &Api) {
    compare_with_events(api, &FILTERS).await;
}

const FILTERS: [&str; 20] = [
    "",
    "phase=p1-lancement",
    "phase=p2-saint-valentin",
    "phase=p3-8-mars",
    "channel=metro",
    "channel=tinder",
    "bots=include",
    "phase=p2-saint-valentin&channel=metro&bots=include",
    // Custom ranges of days: through A's journey, C's, across phases.
    "from=2025-01-25&to=2025-02-10",
    "from=2025-03-02&to=2025-03-05",
    "from=2025-01-17&to=2025-02-14&phase=p2-saint-valentin",
    "from=2024-12-01&to=2025-02-01",
    // Devices: A's card alone on the tablet, C whole on the laptop.
    "device=tablet",
    "device=desktop",
    "device=mobile&bots=include",
    // Placements: a poster, a card, a station over a range.
    "placement=M-CHATELET",
    "placement=T-VOEUX",
    "placement=G-NATIONAL&from=2025-02-01&to=2025-03-05",
    // Not whole days, and a device with a placement: answered on demand
    // from the ledger on both sides.
    "from=2025-01-20T09:00:15Z&to=2025-03-03T08:05:00Z",
    "device=mobile&placement=M-CHATELET",
];

/// Every endpoint under every filter answers the same from the stored
/// figures as recomputed from `events` (`source=events`).
pub(crate) async fn compare_with_events(api: &Api, filters: &[&str]) {
    let endpoints = [
        "/api/overview",
        "/api/channels",
        "/api/attribution",
        "/api/placements",
        "/api/funnel",
        "/api/reach",
        "/api/paths?limit=1000",
        "/api/media",
        "/api/scan-hours",
        "/api/devices",
        "/api/timeseries?metric=events&bucket=hour",
        "/api/timeseries?metric=events&bucket=day",
        "/api/timeseries?metric=visitors&bucket=hour",
        "/api/timeseries?metric=visitors&bucket=day",
        "/api/timeseries?metric=signups&bucket=hour",
        "/api/timeseries?metric=signups&bucket=day",
    ];
    let mut compared = 0;
    for e in endpoints {
        for f in filters {
            let sep = if e.contains('?') { '&' } else { '?' };
            let fast = format!("{e}{sep}{f}");
            let slow = format!("{e}{sep}{f}&source=events");
            let (s1, a) = api.get(&fast, Some(ANALYST)).await;
            let (s2, b) = api.get(&slow, Some(ANALYST)).await;
            let refused = (e == "/api/attribution" || e.starts_with("/api/paths"))
                && f.contains("placement=")
                || e == "/api/media" && (f.contains("placement=") || f.contains("device="));
            if refused {
                assert_eq!((s1, s2), (400, 400), "{fast}: {a} / {b}");
                continue;
            }
            assert_eq!((s1, s2), (200, 200), "{fast}: {a} / {b}");
            assert!(json_close(&a, &b), "{fast}\nfigures: {a}\nevents:  {b}");
            compared += 1;
        }
    }
    let refused = 2 * filters.iter().filter(|f| f.contains("placement=")).count()
        + filters
            .iter()
            .filter(|f| f.contains("placement=") || f.contains("device="))
            .count();
    assert_eq!(compared, endpoints.len() * filters.len() - refused);
}

/// Paths by hand. A: metro (scan + view, one touch) then the card click
/// (the impression is exposure), signed 21 d 9 h 1 min after the scan;
/// B's scan is 32 days before its sign-up (outside the lookback): direct;
/// C: presse, abribus, social, signed 2 d 10 min after the press visit;
/// E: metro then display at the same instant (event id order), 1 h. D is a
/// bot. Every human signed up, so nothing without sign-up over the
/// campaign; from 20 Jan to 5 Feb nobody signed: A followed metro > tinder
/// and B gares, without sign-up.
pub(crate) async fn check_paths(api: &Api) -> Value {
    let (status, paths) = api.get("/api/paths", Some(ANALYST)).await;
    assert_eq!(status, 200, "{paths}");
    let line = |p: &Value, path: &str| -> Value {
        p["paths"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["path"] == path).cloned())
            .unwrap_or_else(|| panic!("no path `{path}` in {p}"))
    };
    assert_eq!(paths["conversions"], 4);
    assert_eq!(paths["without_signup"], 0);
    assert_eq!(paths["distinct_paths"], 4);
    for (path, seconds) in [
        ("metro > tinder", Some(21 * 86_400 + 9 * 3_600 + 60)),
        ("direct", None),
        ("presse > abribus > social", Some(2 * 86_400 + 600)),
        ("metro > display", Some(3_600)),
    ] {
        let l = line(&paths, path);
        assert_eq!(l["conversions"], 1, "{l}");
        assert_eq!(l["conversion_rate"], 1.0, "{l}");
        assert_eq!(
            l["mean_time_to_signup_s"],
            seconds.map_or(Value::Null, |s| Value::from(f64::from(s))),
            "{l}"
        );
        assert_eq!(
            l["median_time_to_signup_s"],
            seconds.map_or(Value::Null, Value::from),
            "{l}"
        );
    }
    let lengths: Vec<(u64, u64)> = paths["lengths"]
        .as_array()
        .expect("lengths")
        .iter()
        .map(|l| {
            (
                l["length"].as_u64().unwrap_or(99),
                l["conversions"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(lengths, [(0, 1), (2, 2), (3, 1)]);
    let (_, early) = api
        .get("/api/paths?from=2025-01-20&to=2025-02-05", Some(ANALYST))
        .await;
    assert_eq!(early["conversions"], 0, "{early}");
    assert_eq!(
        line(&early, "metro > tinder")["without_signup"],
        1,
        "{early}"
    );
    assert_eq!(line(&early, "gares")["without_signup"], 1, "{early}");
    assert_eq!(early["distinct_paths"], 2, "{early}");
    let (_, bots) = api.get("/api/paths?bots=include", Some(ANALYST)).await;
    assert_eq!(
        line(&bots, "direct")["conversions"],
        2,
        "the bot's sign-up: {bots}"
    );
    let (_, through) = api
        .get("/api/paths?channel=metro&limit=1", Some(ANALYST))
        .await;
    assert_eq!(
        (
            through["distinct_paths"].clone(),
            through["paths"].as_array().map(Vec::len)
        ),
        (Value::from(2), Some(1)),
        "{through}"
    );
    // Markov: `direct` is not a state and gets its own conversion; the
    // three other paths all convert, so P = 1. Removing metro sends two
    // of the three starts to null (effect ⅔); removing tinder or display
    // half of metro's walks (P = ⅓ + ⅓, effect ⅓); presse, abribus or
    // social the third (⅓). Credits: 3 × effect ÷ (⅔ + 5 × ⅓ = 7⁄3).
    // Shapley: each path's conversion shared evenly.
    let (_, attribution) = api.get("/api/attribution", Some(ANALYST)).await;
    let model = |m: &str| attribution["by_channel"][m].clone();
    let third = 1.0 / 3.0;
    for (m, want) in [
        (
            "markov",
            vec![
                ("metro", 6.0 / 7.0),
                ("tinder", 3.0 / 7.0),
                ("direct", 1.0),
                ("presse", 3.0 / 7.0),
                ("abribus", 3.0 / 7.0),
                ("social", 3.0 / 7.0),
                ("display", 3.0 / 7.0),
            ],
        ),
        (
            "shapley",
            vec![
                ("metro", 1.0),
                ("tinder", 0.5),
                ("direct", 1.0),
                ("presse", third),
                ("abribus", third),
                ("social", third),
                ("display", 0.5),
            ],
        ),
    ] {
        let got = model(m);
        assert_eq!(
            got.as_object().map(|o| o.len()),
            Some(want.len()),
            "{m}: {got}"
        );
        for (c, v) in want {
            assert!(
                close(got[c].as_f64().unwrap_or(f64::NAN), v),
                "{m}/{c}: {got}"
            );
        }
    }
    assert!(attribution["models"]
        .as_array()
        .is_some_and(|l| l.len() == 7));
    paths
}

/// The reach report by hand (the whole campaign: share 1). Measured:
/// M-CHATELET A's scan (its page view carries the code too: 1 visitor);
/// T-VOEUX A's impression (an exposure) and click (a scan); G-NATIONAL B's
/// scan; A-NATIONAL-1 C's scan delivered twice (1); M-REPUBLIQUE E's scan.
/// No sign-up carries a placement. Bought: the campaign file.
async fn check_media(api: &Api) -> Value {
    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    let (status, media) = api.get("/api/media", Some(AGENCY)).await;
    assert_eq!(status, 200, "{media}");
    assert_eq!(media["share_of_campaign"], 1.0);
    let line = |kind: &str, key: &str| -> Value {
        let field = if kind == "placements" {
            "code"
        } else {
            "channel"
        };
        media[kind]
            .as_array()
            .and_then(|l| l.iter().find(|x| x[field] == key).cloned())
            .unwrap_or_else(|| panic!("no {kind} line {key}: {media}"))
    };
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    for (code, exposures, scans) in [
        ("M-CHATELET", None, 1u64),
        ("T-VOEUX", Some(1u64), 1),
        ("G-NATIONAL", None, 1),
        ("A-NATIONAL-1", None, 1),
        ("M-REPUBLIQUE", None, 1),
        ("G-PARIS-NORD", None, 0),
    ] {
        let l = line("placements", code);
        let p = campaign.placement(code).expect("placement");
        let (audience, cost) = (
            p.audience_estimate.expect("audience") as f64,
            p.media_cost_eur.expect("cost"),
        );
        assert_eq!(
            l["exposures"],
            exposures.map_or(Value::Null, Value::from),
            "{l}"
        );
        assert_eq!(l["scans"], scans, "{l}");
        assert_eq!(l["reached_visitors"], scans, "one visitor each: {l}");
        assert_eq!(l["signups"], 0, "{l}");
        assert!(
            close(num(&l["audience"]), audience) && close(num(&l["media_cost_eur"]), cost),
            "{l}"
        );
        assert!(close(num(&l["cpm_eur"]), cost / audience * 1000.0), "{l}");
        assert!(
            close(
                num(&l["scans_per_1000_audience"]),
                scans as f64 / audience * 1000.0
            ),
            "{l}"
        );
        assert!(
            l["cost_per_signup_eur"].is_null(),
            "no sign-up, no ratio: {l}"
        );
        if scans == 0 {
            assert!(
                l["cost_per_scan_eur"].is_null() && l["cost_per_reached_visitor_eur"].is_null(),
                "{l}"
            );
        } else {
            assert!(close(num(&l["cost_per_scan_eur"]), cost), "{l}");
            assert!(close(num(&l["cost_per_reached_visitor_eur"]), cost), "{l}");
        }
    }
    let metro = line("channels", "metro");
    let bought = ensemble_model::media::channel_bought(&campaign, "metro");
    assert_eq!(
        (metro["scans"].clone(), metro["reached_visitors"].clone()),
        (Value::from(2), Value::from(2)),
        "{metro}"
    );
    assert!(
        close(
            num(&metro["cost_per_scan_eur"]),
            bought.media_cost_eur.expect("cost") / 2.0
        ),
        "{metro}"
    );
    let tinder = line("channels", "tinder");
    assert_eq!(tinder["exposures"], 1, "{tinder}");
    let social = line("channels", "social");
    assert_eq!(
        social["reached_visitors"], 1,
        "C came from Facebook: {social}"
    );
    assert!(
        social["audience"].is_null() && social["cpm_eur"].is_null(),
        "nothing bought: {social}"
    );
    // A phase gets its share of what was bought.
    let p1 = campaign
        .phases
        .iter()
        .find(|p| p.id == "p1-lancement")
        .expect("p1");
    let (start, end) = (
        campaign
            .phases
            .iter()
            .map(|p| p.starts_at)
            .min()
            .expect("start"),
        campaign
            .phases
            .iter()
            .map(|p| p.ends_at)
            .max()
            .expect("end"),
    );
    let share = (p1.ends_at - p1.starts_at).num_milliseconds() as f64
        / (end - start).num_milliseconds() as f64;
    let (_, phase) = api
        .get("/api/media?phase=p1-lancement&channel=metro", Some(AGENCY))
        .await;
    assert!(close(num(&phase["share_of_campaign"]), share), "{phase}");
    let chatelet = &phase["placements"][0];
    assert_eq!(chatelet["code"], "M-CHATELET", "{phase}");
    assert!(
        close(num(&chatelet["media_cost_eur"]), 28_000.0 * share),
        "{chatelet}"
    );
    assert_eq!(
        phase["channels"].as_array().map(Vec::len),
        Some(1),
        "channel filter: {phase}"
    );
    for bad in ["placement=M-CHATELET", "device=mobile"] {
        let (status, body) = api.get(&format!("/api/media?{bad}"), Some(AGENCY)).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    media
}

/// Scans by weekday × hour, Paris time (UTC+1 in winter), by hand: A's
/// metro scan Monday 20 Jan 10 h, A's card click Saturday 25 Jan 13 h, B's
/// station scan Saturday 1 Feb 11 h, E's metro scan Thursday 20 Feb 11 h,
/// C's bus-shelter scan (delivered twice) Sunday 2 Mar 9 h.
async fn check_scan_hours(api: &Api) -> Value {
    let (status, hours) = api.get("/api/scan-hours", Some(ANALYST)).await;
    assert_eq!(status, 200, "{hours}");
    assert_eq!(hours["timezone"], "Europe/Paris");
    let cells = |v: &Value| -> Vec<(u64, u64, u64)> {
        v["cells"]
            .as_array()
            .expect("cells")
            .iter()
            .filter(|c| c["scans"] != 0)
            .map(|c| {
                let n = |k: &str| c[k].as_u64().unwrap_or(99);
                (n("weekday"), n("hour"), n("scans"))
            })
            .collect()
    };
    assert_eq!(hours["cells"].as_array().map(Vec::len), Some(168));
    assert_eq!(hours["scans"], 5);
    assert_eq!(
        cells(&hours),
        [(1, 10, 1), (4, 11, 1), (6, 11, 1), (6, 13, 1), (7, 9, 1)]
    );
    let (_, metro) = api
        .get("/api/scan-hours?channel=metro", Some(ANALYST))
        .await;
    assert_eq!(cells(&metro), [(1, 10, 1), (4, 11, 1)]);
    hours
}

/// `/api/devices`: per channel, visitors by device class × OS family
/// (worked out from the fixture: A on an iPhone with its cards on an
/// iPad, B on Android, C on Windows, E on an iPhone; all four signed).
async fn check_devices(api: &Api) -> Value {
    let (status, devices) = api.get("/api/devices", Some(ANALYST)).await;
    assert_eq!(status, 200, "{devices}");
    let lines = |v: &Value| -> Vec<(String, String, String, u64, u64, f64)> {
        v["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|l| {
                let s = |k: &str| l[k].as_str().unwrap_or("?").to_owned();
                let n = |k: &str| l[k].as_u64().unwrap_or(99);
                let share = l["share"].as_f64().unwrap_or(-1.0);
                (
                    s("channel"),
                    s("device_class"),
                    s("os_family"),
                    n("visitors"),
                    n("signed"),
                    share,
                )
            })
            .collect()
    };
    let got = lines(&devices);
    let want = |c: &str, d: &str, o: &str, v: u64, sg: u64, share: f64| {
        (c.to_owned(), d.to_owned(), o.to_owned(), v, sg, share)
    };
    for line in [
        want("*", "mobile", "iPhone", 2, 2, 0.5),
        want("*", "desktop", "Windows 10", 1, 1, 0.25),
        want("*", "mobile", "Android", 1, 1, 0.25),
        want("*", "tablet", "iPad", 1, 1, 0.25),
        want("metro", "mobile", "iPhone", 2, 2, 1.0),
        want("tinder", "tablet", "iPad", 1, 1, 1.0),
        want("gares", "mobile", "Android", 1, 1, 1.0),
        want("presse", "desktop", "Windows 10", 1, 1, 1.0),
        want("abribus", "desktop", "Windows 10", 1, 1, 1.0),
        want("display", "mobile", "iPhone", 1, 1, 1.0),
    ] {
        assert!(got.contains(&line), "{line:?} not in {devices}");
    }
    // Every channel first, the most visitors first within it.
    assert_eq!(got[0], want("*", "mobile", "iPhone", 2, 2, 0.5));
    assert!(got.iter().all(|l| l.1 != "bot"), "bots excluded: {devices}");
    // Phase 1: A's metro scan and its cards, the sign-up not yet.
    let (_, p1) = api
        .get(
            "/api/devices?phase=p1-lancement&channel=metro",
            Some(ANALYST),
        )
        .await;
    assert_eq!(lines(&p1), [want("metro", "mobile", "iPhone", 1, 0, 1.0)]);
    // With bots: D's sign-up (a bot's device class is what its events say).
    let (_, bots) = api.get("/api/devices?bots=include", Some(ANALYST)).await;
    let star: u64 = lines(&bots)
        .iter()
        .filter(|l| l.0 == "*")
        .map(|l| l.3)
        .sum();
    assert_eq!(star, 6, "{bots}");
    let (status, csv) = api
        .get("/api/devices?format=csv&channel=tinder", Some(ANALYST))
        .await;
    assert_eq!(status, 200);
    let csv = csv.as_str().unwrap_or_default();
    assert!(
        csv.contains("channel,device_class,os_family,visitors,signed,signup_rate,share")
            && csv.contains("tinder,tablet,iPad,1,1,1.000000,1.000000"),
        "{csv}"
    );
    devices
}

/// `compare=`: every aggregate endpoint answers the period before beside
/// the question, each equal to asking it directly; what cannot be compared
/// is a 400 naming `compare`.
async fn check_compare(api: &Api) {
    for e in ensemble_dashboard::compare::AGGREGATES {
        let e = if e == "/api/timeseries" {
            "/api/timeseries?metric=events&bucket=day".to_owned()
        } else {
            format!("{e}?bots=exclude")
        };
        for (asked, current, previous, period_phase) in [
            (
                "phase=p3-8-mars&compare=previous_phase",
                "phase=p3-8-mars",
                "phase=p2-saint-valentin",
                Value::from("p2-saint-valentin"),
            ),
            (
                "from=2025-02-01&to=2025-02-10&compare=previous",
                "from=2025-02-01&to=2025-02-10",
                "from=2025-01-22&to=2025-01-31",
                Value::Null,
            ),
        ] {
            let (status, both) = api.get(&format!("{e}&{asked}"), Some(ANALYST)).await;
            assert_eq!(status, 200, "{e}&{asked}: {both}");
            let (_, a) = api.get(&format!("{e}&{current}"), Some(ANALYST)).await;
            let (_, b) = api.get(&format!("{e}&{previous}"), Some(ANALYST)).await;
            assert_eq!(both["current"], a, "{e}&{asked}: current");
            assert_eq!(both["previous"], b, "{e}&{asked}: previous");
            assert_eq!(both["previous_period"]["phase"], period_phase, "{both}");
        }
    }
    let (_, both) = api
        .get(
            "/api/overview?from=2025-02-01&to=2025-02-10&compare=previous",
            Some(ANALYST),
        )
        .await;
    assert_eq!(
        both["previous_period"]["from"], "2025-01-21T23:00:00Z",
        "Paris midnight: {both}"
    );
    assert_eq!(
        both["previous_period"]["to"], "2025-01-31T23:00:00Z",
        "{both}"
    );
    for bad in [
        "/api/channels?compare=previous_phase",
        "/api/channels?phase=p1-lancement&compare=previous_phase",
        "/api/channels?phase=p2-saint-valentin&compare=previous",
        "/api/channels?phase=p2-saint-valentin&from=2025-02-10&compare=previous_phase",
        "/api/channels?compare=next",
        "/api/channels?compare=previous&format=csv",
    ] {
        let (status, body) = api.get(bad, Some(ANALYST)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let named = body["parameter"] == "compare" || body["parameter"] == "query";
        assert!(named, "{bad}: {body}");
    }
    let (status, _) = api.get("/api/channels?compare=previous", None).await;
    assert_eq!(status, 401, "each compared request passes the token check");
}

/// The channels' and placements' cost per sign-up divide the same cost as
/// the reach report (the question's share of the media cost), so each
/// equals the report's where both count the same sign-ups — on the whole
/// campaign and on one phase.
async fn check_costs_agree_with_the_reach_report(api: &Api) {
    let mut compared = 0;
    for question in ["", "?phase=p2-saint-valentin", "?phase=p3-8-mars"] {
        let (_, media) = api
            .get(&format!("/api/media{question}"), Some(AGENCY))
            .await;
        let (_, placements) = api
            .get(&format!("/api/placements{question}"), Some(AGENCY))
            .await;
        let (_, channels) = api
            .get(&format!("/api/channels{question}"), Some(AGENCY))
            .await;
        let line = |list: &str, key: &str, value: &str| -> Value {
            media[list]
                .as_array()
                .and_then(|l| l.iter().find(|x| x[key] == value).cloned())
                .unwrap_or(Value::Null)
        };
        for p in placements["rows"]
            .as_array()
            .map_or(&[][..], |v| v.as_slice())
        {
            let m = line("placements", "code", p["code"].as_str().unwrap_or_default());
            if m["signups"] == p["signups"] {
                assert_eq!(
                    m["cost_per_signup_eur"], p["cost_per_signup_eur"],
                    "{question} {p}"
                );
                compared += 1;
            }
        }
        let mut signups: BTreeMap<String, (u64, Value)> = BTreeMap::new();
        for r in channels["rows"]
            .as_array()
            .map_or(&[][..], |v| v.as_slice())
        {
            let e = signups
                .entry(r["channel"].as_str().unwrap_or_default().to_owned())
                .or_insert((0, r["cost_per_signup_eur"].clone()));
            e.0 += r["signups"].as_u64().unwrap_or(0);
            assert_eq!(
                e.1, r["cost_per_signup_eur"],
                "one cost per sign-up per channel"
            );
        }
        for (channel, (n, cost)) in signups {
            let m = line("channels", "channel", &channel);
            if m["signups"].as_u64() == Some(n) {
                assert_eq!(m["cost_per_signup_eur"], cost, "{question} {channel}");
                compared += 1;
            }
        }
    }
    // The fixture's sign-ups carry no placement and no channel with a
    // cost: every ratio here is "—" (the e2e compares amounts).
    assert!(compared >= 20, "only {compared} costs per sign-up compared");
}

async fn answers(api: &Api) -> (Value, Value) {
    let (s1, overview) = api.get("/api/overview", Some(ANALYST)).await;
    assert_eq!(s1, 200, "{overview}");
    let (s2, attribution) = api.get("/api/attribution", Some(AGENCY)).await;
    assert_eq!(s2, 200, "{attribution}");
    (overview, attribution)
}

#[tokio::test]
async fn fixture_numbers_match_the_hand_computed_ones_on_both_engines() {
    let old = StoreConfig::new(clickhouse_url(), unique("it_dash"));
    load(&old).await;
    let api_old = serve(&old).await;
    let (overview_old, attribution_old) = answers(&api_old).await;
    check(&overview_old, &attribution_old);
    let (status, channels_old) = api_old.get("/api/channels", Some(ANALYST)).await;
    assert_eq!(status, 200, "{channels_old}");
    check_channels(&channels_old);
    let placements_funnel_old = check_placements_and_funnel(&api_old).await;
    let reach_series_old = check_reach_timeseries_journey(&api_old).await;
    let paths_old = check_paths(&api_old).await;
    let media_old = check_media(&api_old).await;
    let scan_hours_old = check_scan_hours(&api_old).await;
    let devices_old = check_devices(&api_old).await;
    check_costs_agree_with_the_reach_report(&api_old).await;
    check_compare(&api_old).await;
    let (status, live) = api_old.get("/api/live", Some(ANALYST)).await;
    assert_eq!(status, 200, "{live}");
    assert!(live["per_minute"].is_array());

    let chdb = ChdbServer::start().expect("chdb-core shim (see deploy/local/test)");
    let current = StoreConfig::new(&chdb.url, "ensemble");
    load(&current).await;
    let api_new = serve(&current).await;
    let (overview_new, attribution_new) = answers(&api_new).await;
    check(&overview_new, &attribution_new);
    let (status, channels_new) = api_new.get("/api/channels", Some(ANALYST)).await;
    assert_eq!(status, 200, "{channels_new}");
    check_channels(&channels_new);
    assert_eq!(
        channels_old, channels_new,
        "both engines give the same channels"
    );
    assert_eq!(
        placements_funnel_old,
        check_placements_and_funnel(&api_new).await,
        "both engines give the same placements and funnel"
    );
    assert_eq!(
        reach_series_old,
        check_reach_timeseries_journey(&api_new).await,
        "both engines give the same reach and time series"
    );
    assert_eq!(
        paths_old,
        check_paths(&api_new).await,
        "both engines give the same paths"
    );
    assert_eq!(
        media_old,
        check_media(&api_new).await,
        "both engines give the same reach report"
    );
    assert_eq!(
        scan_hours_old,
        check_scan_hours(&api_new).await,
        "both engines give the same scan hours"
    );
    assert_eq!(
        devices_old,
        check_devices(&api_new).await,
        "both engines give the same device breakdown"
    );
    assert_eq!(api_new.get("/api/live", Some(ANALYST)).await.0, 200);
    assert_eq!(
        overview_old, overview_new,
        "both engines give the same overview"
    );

    figures_agree_with_events(&api_old).await;
    figures_agree_with_events(&api_new).await;
    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    for store in [&old, &current] {
        let n = ensemble_tests::summed_ranges_agree(store, &campaign)
            .await
            .expect("figures_ranges agrees with figures");
        assert!(n > 50, "{n} values compared");
    }
    // A contact who signs up again from a second device (another visitor):
    // counted once, its first sign-up the conversion — the figures correct
    // their per-visitor sums for it.
    let mut again = fixture()
        .into_iter()
        .find(|r| r.event_type == "signup" && r.is_bot == 0)
        .expect("a sign-up");
    again.visitor_id = "v_second_device_01".into();
    again.event_id = uuid::Uuid::from_u128(0xfeed);
    again.ts += chrono::Duration::hours(3);
    for store in [&old, &current] {
        store
            .client()
            .query_raw(&insert_values_sql(std::slice::from_ref(&again)))
            .execute()
            .await
            .expect("second device");
        let campaign = Campaign::load(&campaign_file()).expect("campaign");
        ensemble_core::ledger::account(&store.client(), &campaign, std::slice::from_ref(&again))
            .await
            .expect("account");
    }
    let (_, after) = api_old.get("/api/overview", Some(ANALYST)).await;
    assert_eq!(
        after["current"]["totals"]["signups"], overview_old["current"]["totals"]["signups"],
        "the same contact again is not another sign-up"
    );
    figures_agree_with_events(&api_old).await;
    figures_agree_with_events(&api_new).await;

    // With bots: the bot's sign-up (phase 2, no touch) is credited to direct.
    let (_, with_bots) = api_old
        .get("/api/attribution?bots=include", Some(ANALYST))
        .await;
    assert_eq!(with_bots["conversions"], 5);
    assert_eq!(with_bots["by_channel"]["last_touch"]["direct"], 2.0);
    // A channel filter narrows the rows, not the sharing.
    let (_, metro) = api_old
        .get("/api/attribution?channel=metro", Some(ANALYST))
        .await;
    assert_eq!(
        metro["by_channel"]["linear"].as_object().map(|o| o.len()),
        Some(1)
    );
    assert_eq!(metro["by_channel"]["linear"]["metro"], 1.0);
    // A date range keeps the conversions in it; touches before it still count.
    let (_, march) = api_old
        .get(
            "/api/attribution?from=2025-03-01&to=2025-03-16",
            Some(ANALYST),
        )
        .await;
    assert_eq!(march["conversions"], 2);
    // CSV.
    let r = api_old
        .http
        .get(format!("{}/api/attribution?format=csv", api_old.base))
        .bearer_auth(ANALYST)
        .send()
        .await
        .expect("csv");
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let text = r.text().await.expect("text");
    assert!(
        text.starts_with("\u{feff}model,channel,touch_phase,credited_signups,low_95,high_95\r\n"),
        "{text}"
    );
    assert!(text.contains("first_touch,metro,p1-lancement,"));
    // Every line's credit inside its interval (Wilson's always holds its
    // proportion; the bootstrap's percentiles are only checked for order).
    for line in text.trim_start_matches('\u{feff}').lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 6, "{line}");
        let v: Vec<f64> = f[3..].iter().map(|x| x.parse().expect("number")).collect();
        assert!(v[1] <= v[2], "{line}");
        if !["markov", "shapley"].contains(&f[0]) {
            assert!(v[1] <= v[0] && v[0] <= v[2], "{line}");
        }
    }
}
