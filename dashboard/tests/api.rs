//! The dashboard API on a fixture with hand-computed answers, on ClickHouse
//! 18.16 and on the current engine (chdb-core), which must agree.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use ensemble_core::event::{Consent, EventMessage, EventType, TinderAction, Utm, SCHEMA_VERSION};
use ensemble_core::{Campaign, EventRow, Shutdown, StoreConfig};
use ensemble_dashboard::{router, Config};
use ensemble_tests::{
    campaign_file, clickhouse_url, insert_values_sql, json_close, unique, ChdbServer,
};
use serde_json::Value;
use uuid::Uuid;

const ANALYST: &str = "analyst-token-0123456789";
const AGENCY: &str = "agency-token-0123456789ab";

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("ts")
        .with_timezone(&Utc)
}

/// One fixture event, enriched as the processor would.
struct Ev {
    id: u128,
    visitor: &'static str,
    ts: &'static str,
    ty: EventType,
    placement: Option<&'static str>,
    utm_source: Option<&'static str>,
    referrer: Option<&'static str>,
    action: Option<TinderAction>,
    contact: Option<&'static str>,
    bot: bool,
}

const fn ev(id: u128, visitor: &'static str, ts: &'static str, ty: EventType) -> Ev {
    Ev {
        id,
        visitor,
        ts,
        ty,
        placement: None,
        utm_source: None,
        referrer: None,
        action: None,
        contact: None,
        bot: false,
    }
}

fn fixture() -> Vec<EventRow> {
    use EventType::*;
    let events = vec![
        // A: metro scan + its page view (one touch), a card impression (exposure),
        // a card click (touch), a direct visit, then the sign-up (phase 2).
        Ev {
            placement: Some("M-CHATELET"),
            ..ev(1, "v_fixture_a", "2025-01-20T09:00:00Z", QrScan)
        },
        Ev {
            placement: Some("M-CHATELET"),
            ..ev(2, "v_fixture_a", "2025-01-20T09:00:30Z", PageView)
        },
        Ev {
            placement: Some("T-VOEUX"),
            action: Some(TinderAction::Impression),
            ..ev(3, "v_fixture_a", "2025-01-25T12:00:00Z", TinderCard)
        },
        Ev {
            placement: Some("T-VOEUX"),
            action: Some(TinderAction::Click),
            ..ev(4, "v_fixture_a", "2025-01-25T12:05:00Z", TinderCard)
        },
        ev(5, "v_fixture_a", "2025-02-10T18:00:00Z", PageView),
        Ev {
            contact: Some("a"),
            ..ev(6, "v_fixture_a", "2025-02-10T18:01:00Z", Signup)
        },
        // B: a station scan 32 days before signing up (outside the lookback), then a repeat sign-up.
        Ev {
            placement: Some("G-NATIONAL"),
            ..ev(7, "v_fixture_b", "2025-02-01T10:00:00Z", QrScan)
        },
        Ev {
            contact: Some("b"),
            ..ev(8, "v_fixture_b", "2025-03-05T10:00:00Z", Signup)
        },
        Ev {
            contact: Some("b"),
            ..ev(9, "v_fixture_b", "2025-03-06T10:00:00Z", Signup)
        },
        // C: press, bus shelter (delivered twice), social, then sign-up: three touches.
        Ev {
            utm_source: Some("presse"),
            ..ev(10, "v_fixture_c", "2025-03-01T08:00:00Z", PageView)
        },
        Ev {
            placement: Some("A-NATIONAL-1"),
            ..ev(11, "v_fixture_c", "2025-03-02T08:00:00Z", QrScan)
        },
        Ev {
            referrer: Some("www.facebook.com"),
            ..ev(12, "v_fixture_c", "2025-03-03T08:00:00Z", PageView)
        },
        Ev {
            contact: Some("c"),
            ..ev(13, "v_fixture_c", "2025-03-03T08:10:00Z", Signup)
        },
        // D: a bot that signs up: excluded unless bots=include.
        Ev {
            contact: Some("d"),
            bot: true,
            ..ev(14, "v_fixture_d", "2025-02-15T10:00:00Z", Signup)
        },
        // E: two touches at the same instant: ordered by event id (metro first).
        Ev {
            placement: Some("M-REPUBLIQUE"),
            ..ev(15, "v_fixture_e", "2025-02-20T10:00:00Z", QrScan)
        },
        Ev {
            utm_source: Some("display"),
            ..ev(16, "v_fixture_e", "2025-02-20T10:00:00Z", PageView)
        },
        Ev {
            contact: Some("e"),
            ..ev(17, "v_fixture_e", "2025-02-20T11:00:00Z", Signup)
        },
    ];
    let mut rows = enrich(&events);
    // A redelivered row: same event, inserted again.
    let dup = rows
        .iter()
        .find(|r| r.event_id == Uuid::from_u128(11))
        .cloned()
        .expect("row 11");
    rows.push(dup);
    rows
}

/// The rows the processor would make of `events`.
fn enrich(events: &[Ev]) -> Vec<EventRow> {
    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    events
        .iter()
        .map(|e| {
            let ts = t(e.ts);
            let msg = EventMessage {
                v: SCHEMA_VERSION,
                event_id: Uuid::from_u128(e.id),
                event_type: e.ty,
                ts,
                received_at: ts,
                ts_clamped: false,
                imported: true,
                visitor_id: e.visitor.into(),
                placement: e.placement.map(str::to_owned),
                utm: Utm {
                    source: e.utm_source.map(str::to_owned),
                    ..Utm::default()
                },
                url: None,
                referrer_host: e.referrer.map(str::to_owned),
                user_agent: None,
                bot: e.bot,
                repeat: false,
                action: e.action,
                contact_hash: e.contact.map(|c| c.repeat(64)),
                consent: e.contact.map(|_| Consent {
                    results: true,
                    newsletter: false,
                }),
                custom_name: None,
                props: Default::default(),
            };
            let enrichment = ensemble_core::event::Enrichment {
                channel: campaign
                    .resolve_channel(
                        msg.placement.as_deref(),
                        msg.utm.source.as_deref(),
                        msg.referrer_host.as_deref(),
                    )
                    .to_owned(),
                phase: campaign.phase_at(ts).to_owned(),
                // A's card on a tablet, C on a laptop, the rest on phones:
                // device filters cut through one visitor and keep another whole.
                device_class: match e.id {
                    3 | 4 => "tablet",
                    10..=13 => "desktop",
                    _ => "mobile",
                }
                .into(),
                // OS families as the User-Agent parser names them: A's
                // tablet an iPad, B an Android phone, C Windows.
                os_family: match e.id {
                    3 | 4 => "iPad",
                    7..=9 => "Android",
                    10..=13 => "Windows 10",
                    _ => "iPhone",
                }
                .into(),
                is_bot: e.bot,
            };
            EventRow::new(&msg, enrichment, ts)
        })
        .collect()
}

/// Visitors active on more days than `figures::WIDE_DAYS` (stored over
/// whole phases): W scans in the metro, clicks cards and visits on twelve
/// days across phases 1 and 2 and signs up twice with contact `w`; X, on
/// four days, signs up with the same contact; Y is a bot active daily.
fn wide_fixture() -> Vec<EventRow> {
    use EventType::*;
    let at = |day: u32, hour: u32| -> &'static str {
        let d = chrono::NaiveDate::from_ymd_opt(2025, 1, 30).expect("date")
            + chrono::Duration::days(i64::from(day));
        Box::leak(format!("{}T{hour:02}:30:00Z", d.format("%Y-%m-%d")).into_boxed_str())
    };
    let mut events = Vec::new();
    let mut id = 100u128;
    let mut next = || {
        id += 1;
        id
    };
    for day in 0..12 {
        events.push(Ev {
            placement: Some(["M-CHATELET", "T-VOEUX", "G-NATIONAL"][day as usize % 3]),
            action: (day % 3 == 1).then_some(TinderAction::Click),
            ..ev(
                next(),
                "v_wide_w",
                at(day * 2, 8 + day % 5),
                if day % 3 == 1 { TinderCard } else { QrScan },
            )
        });
        events.push(Ev {
            utm_source: (day % 4 == 0).then_some("display"),
            ..ev(next(), "v_wide_w", at(day * 2, 9 + day % 5), PageView)
        });
        if day == 5 || day == 10 {
            events.push(Ev {
                contact: Some("w"),
                ..ev(next(), "v_wide_w", at(day * 2, 15), Signup)
            });
        }
        events.push(Ev {
            bot: true,
            placement: Some("M-REPUBLIQUE"),
            ..ev(next(), "v_wide_y", at(day, 3), QrScan)
        });
    }
    for day in [1, 7, 9, 13] {
        events.push(Ev {
            placement: Some("M-REPUBLIQUE"),
            ..ev(next(), "v_wide_x", at(day, 18), QrScan)
        });
    }
    events.push(Ev {
        contact: Some("w"),
        ..ev(next(), "v_wide_x", at(13, 19), Signup)
    });
    enrich(&events)
}

struct Api {
    base: String,
    http: reqwest::Client,
    _shutdown: ShutdownOnDrop,
}

struct ShutdownOnDrop(Shutdown);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

async fn serve(store: &StoreConfig) -> Api {
    serve_with(store, &[]).await
}

/// The dashboard on `store` and, for each `also` (`FILE=DATABASE`),
/// another campaign side by side.
async fn serve_with(store: &StoreConfig, also: &[String]) -> Api {
    let c = campaign_file().display().to_string();
    let mut flags = vec![
        "ensemble-dashboard",
        "--campaign",
        &c,
        "--analyst-tokens",
        ANALYST,
        "--agency-tokens",
        AGENCY,
        "--clickhouse-url",
        &store.url,
        "--clickhouse-database",
        &store.database,
    ];
    for a in also {
        flags.extend(["--also-campaign", a.as_str()]);
    }
    let settings = <Config as clap::Parser>::try_parse_from(flags)
        .expect("flags")
        .validate()
        .expect("settings");
    let app = router(
        ensemble_dashboard::state(&settings).expect("api state"),
        prometheus::Registry::new(),
        Default::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = Shutdown::new();
    tokio::spawn(ensemble_core::service::serve(
        listener,
        app,
        shutdown.clone(),
    ));
    Api {
        base,
        http: reqwest::Client::new(),
        _shutdown: ShutdownOnDrop(shutdown),
    }
}

impl Api {
    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(tk) = token {
            req = req.bearer_auth(tk);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

async fn load(store: &StoreConfig) {
    load_rows(store, fixture()).await;
}

async fn load_rows(store: &StoreConfig, rows: Vec<EventRow>) {
    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    load_rows_of(store, &campaign, rows).await;
}

/// `rows` in `store`, accounted for `campaign`.
async fn load_rows_of(store: &StoreConfig, campaign: &Campaign, rows: Vec<EventRow>) {
    ensemble_core::migrate::migrate(store)
        .await
        .expect("migrate");
    // As the processor does at start: the view summing the figures by range.
    assert_eq!(
        ensemble_core::ranges::ensure(store, campaign)
            .await
            .expect("figures by range"),
        ensemble_core::ranges::Status::Whole
    );
    store
        .client()
        .query_raw(&insert_values_sql(&rows))
        .execute()
        .await
        .expect("load fixture");
    // What the processor does with each batch: the ledger and the figures.
    let (first, second) = rows.split_at(rows.len() / 2);
    for batch in [first, second, &rows[..]] {
        ensemble_core::ledger::account(&store.client(), campaign, batch)
            .await
            .expect("account fixture");
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Every number of the fixture, computed by hand in the comments of `fixture`.
fn check(overview: &Value, attribution: &Value) {
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
        // A 21 d 9 h 1 min and E 1 h: median of two = their mean.
        ("metro", 2, 2, 2, Some((1_846_860.0 + 3_600.0) / 2.0)),
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
async fn compare_with_events(api: &Api, filters: &[&str]) {
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
async fn check_paths(api: &Api) -> Value {
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
    // Markov: every path converts, so P = 1. Removing metro sends half the
    // starts to null (effect ½); any other channel a quarter (¼). Credits:
    // 4 × effect ÷ 2. Shapley: each path's conversion shared evenly.
    let (_, attribution) = api.get("/api/attribution", Some(ANALYST)).await;
    let model = |m: &str| attribution["by_channel"][m].clone();
    let third = 1.0 / 3.0;
    for (m, want) in [
        (
            "markov",
            vec![
                ("metro", 1.0),
                ("tinder", 0.5),
                ("direct", 0.5),
                ("presse", 0.5),
                ("abribus", 0.5),
                ("social", 0.5),
                ("display", 0.5),
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
    let bought = ensemble_core::media::channel_bought(&campaign, "metro");
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
        text.starts_with("\u{feff}model,channel,touch_phase,credited_signups\r\n"),
        "{text}"
    );
    assert!(text.contains("first_touch,metro,p1-lancement,"));
}

/// The default questions (the campaign, a phase) read `figures_ranges`
/// while its state says it is whole for the dashboard's campaign, and
/// `figures` otherwise: shown here by emptying one table at a time, each
/// dashboard started afresh (it checks the state at most every 10 s).
#[tokio::test]
async fn default_questions_read_the_figures_summed_by_range_only_when_whole() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_ranges"));
    load(&store).await;
    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    assert!(
        ensemble_tests::summed_ranges_agree(&store, &campaign)
            .await
            .expect("agree")
            > 50
    );
    let signups = |api: &Api, query: &'static str| {
        let (base, http) = (api.base.clone(), api.http.clone());
        async move {
            let r = http
                .get(format!("{base}/api/overview{query}"))
                .bearer_auth(ANALYST)
                .send()
                .await
                .expect("overview");
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.expect("json");
            v["current"]["totals"]["signups"].as_u64().expect("signups")
        }
    };
    // Hand-computed (`fixture`): 4 sign-ups, 2 of them in phase 3;
    // phases 2 and 3 together are no summed range.
    let api = serve(&store).await;
    assert_eq!(signups(&api, "").await, 4);
    assert_eq!(signups(&api, "?phase=p3-8-mars").await, 2);
    let custom = signups(&api, "?from=2025-02-08&to=2025-03-16").await;
    assert_eq!(custom, 4);
    drop(api);
    let client = store.client();
    // `figures` emptied: the summed ranges still answer, other ranges not.
    client
        .query("TRUNCATE TABLE figures")
        .execute()
        .await
        .expect("truncate");
    let api = serve(&store).await;
    assert_eq!(
        signups(&api, "").await,
        4,
        "the campaign from figures_ranges"
    );
    assert_eq!(
        signups(&api, "?phase=p3-8-mars").await,
        2,
        "a phase from figures_ranges"
    );
    assert_eq!(
        signups(&api, "?from=2025-02-08&to=2025-03-16").await,
        0,
        "any other range from figures"
    );
    drop(api);
    // Not whole (as after an upgrade, before rebuild-ranges): `figures`.
    client
        .query("INSERT INTO figures_ranges_state (written_ms, ranges, whole, note) SELECT max(written_ms) + 1, any(ranges), 0, 'test' FROM figures_ranges_state")
        .execute()
        .await
        .expect("state");
    let api = serve(&store).await;
    assert_eq!(
        signups(&api, "").await,
        0,
        "figures_ranges unused while partial"
    );
}

/// A database summed by range before the paths' delays had a table of
/// their own (migration 0009): `migrate` records the summed tables partial,
/// so the paths are answered from `figures` until `rebuild-ranges`, which
/// fills the new table; the hand-computed paths and medians hold at each
/// step, and the new table agrees with `figures_ranges` after.
#[tokio::test]
async fn an_upgrade_adding_the_paths_delays_table_reads_figures_until_rebuild_ranges() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_delays"));
    load(&store).await;
    let campaign = Campaign::load(&campaign_file()).expect("campaign");
    let client = store.client();
    let delay_rows = || async {
        store
            .client()
            .query("SELECT count() FROM paths_delays_ranges")
            .fetch_one::<u64>()
            .await
            .expect("count")
    };
    assert!(delay_rows().await > 0, "filled by its view");
    let api = serve(&store).await;
    check_paths(&api).await;
    drop(api);
    // As the database was before 0009: no view, no table, not applied.
    let views: Vec<String> = client
        .query("SELECT name FROM system.tables WHERE database = ? AND startsWith(name, 'paths_delays_ranges_mv_')")
        .bind(&store.database)
        .fetch_all()
        .await
        .expect("views");
    assert_eq!(views.len(), 1, "{views:?}");
    for sql in [
        format!("DROP TABLE {}", views[0]),
        "DROP TABLE paths_delays_ranges".to_owned(),
        "ALTER TABLE schema_migrations DELETE WHERE version = 9".to_owned(),
    ] {
        client.query(&sql).execute().await.expect(&sql);
    }
    for _ in 0..100 {
        let left: u64 = client
            .query("SELECT count() FROM schema_migrations WHERE version = 9")
            .fetch_one()
            .await
            .expect("count");
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let report = ensemble_core::migrate::migrate(&store)
        .await
        .expect("migrate");
    assert_eq!(report.applied, [9]);
    assert!(!ensemble_core::ranges::usable(&client, &campaign)
        .await
        .expect("usable"));
    assert_eq!(delay_rows().await, 0);
    // The processor at start makes the view, and says what to run.
    assert_eq!(
        ensemble_core::ranges::ensure(&store, &campaign)
            .await
            .expect("ensure"),
        ensemble_core::ranges::Status::Partial
    );
    let api = serve(&store).await;
    check_paths(&api).await;
    drop(api);
    assert_eq!(
        ensemble_core::ranges::refill(&store, &campaign)
            .await
            .expect("refill"),
        ensemble_core::ranges::Status::Whole
    );
    assert!(delay_rows().await > 0, "filled by rebuild-ranges");
    ensemble_tests::summed_ranges_agree(&store, &campaign)
        .await
        .expect("agree after the refill");
    let api = serve(&store).await;
    check_paths(&api).await;
}

/// Visitors active on many days are stored over whole phases: the stored
/// answers for phases and the campaign, and for ranges that cut a phase
/// (the dashboard recomputes the wide visitors there), equal the events'.
#[tokio::test]
async fn wide_visitors_answer_every_range_exactly() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_wide"));
    load_rows(&store, wide_fixture()).await;
    let listed: u64 = store
        .client()
        .query("SELECT uniqExact(visitor_id) FROM wide_visitors")
        .fetch_one()
        .await
        .expect("wide visitors");
    assert_eq!(listed, 2, "W and the bot Y are wide, X is not");
    let api = serve(&store).await;
    compare_with_events(
        &api,
        &[
            "",
            "bots=include",
            "phase=p1-lancement",
            "phase=p2-saint-valentin&bots=include",
            // Cutting phase 1, phase 2, both; before X's sign-up; W's second.
            "from=2025-02-03&to=2025-02-12",
            "from=2025-02-01&to=2025-02-07&bots=include",
            "from=2025-02-09&to=2025-02-21",
            "from=2025-01-31&to=2025-02-11&phase=p2-saint-valentin",
            "from=2025-02-05&to=2025-02-24&device=mobile",
            "placement=M-REPUBLIQUE&from=2025-02-02&to=2025-02-10&bots=include",
            "channel=metro&from=2025-02-04&to=2025-02-16",
        ],
    )
    .await;
    let (status, overview) = api
        .get("/api/overview?from=2025-02-09&to=2025-02-21", Some(ANALYST))
        .await;
    assert_eq!(status, 200, "{overview}");
    let totals = &overview["current"]["totals"];
    assert_eq!(
        (&totals["visitors"], &totals["signups"]),
        (&serde_json::json!(2), &serde_json::json!(1)),
        "W and X (Y is a bot); three sign-ups of one contact: {overview}"
    );
}

#[tokio::test]
async fn tokens_and_hostile_filters() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_auth"));
    load(&store).await;
    let api = serve(&store).await;
    assert_eq!(api.get("/api/overview", None).await.0, 401);
    assert_eq!(
        api.get("/api/overview", Some("not-a-token-0123456789"))
            .await
            .0,
        401
    );
    // A token in the URL is not read: it would end up in histories, logs
    // and Referer headers.
    let (status, body) = api
        .get(&format!("/api/overview?token={AGENCY}"), None)
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = api
        .get(&format!("/api/overview?token={AGENCY}"), Some(AGENCY))
        .await;
    assert_eq!(
        (status, &body["parameter"]),
        (400, &serde_json::json!("token")),
        "{body}"
    );
    // Answers are not cached and leak no Referer; errors carry a request id.
    let r = api
        .http
        .get(format!("{}/api/overview?from=-262143-01-01", api.base))
        .bearer_auth(ANALYST)
        .send()
        .await
        .expect("request");
    assert_eq!(
        r.status().as_u16(),
        400,
        "a year no one means is a 400, not a panic"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let id = r.headers()["x-request-id"].to_str().expect("id").to_owned();
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["request_id"], serde_json::json!(id));
    assert_eq!(body["parameter"], "from");
    // source=events audits the figures: the team's tool, not the agency's.
    let (status, body) = api.get("/api/overview?source=events", Some(AGENCY)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        api.get("/api/overview?source=events", Some(ANALYST))
            .await
            .0,
        200
    );
    assert_eq!(api.get("/healthz", None).await.0, 200);
    assert_eq!(api.get("/metrics", None).await.0, 200);

    let hostile = [
        ("from", "2025-01-01' OR 1=1 --"),
        ("to", "2025-02-01'); DROP TABLE events; --"),
        ("phase", "p1' OR '1'='1"),
        ("channel", "metro' OR 1=1 --"),
        ("placement", "M-CHATELET' --"),
        ("device", "mobile\\' OR 1"),
        ("bots", "include'"),
        ("format", "csv' --"),
    ];
    let mut params: HashMap<&str, &str> = HashMap::new();
    for (k, v) in hostile {
        params.clear();
        params.insert(k, v);
        for path in [
            "/api/overview",
            "/api/attribution",
            "/api/channels",
            "/api/placements",
            "/api/funnel",
        ] {
            let r = api
                .http
                .get(format!("{}{path}", api.base))
                .query(&params)
                .bearer_auth(ANALYST)
                .send()
                .await
                .expect("request");
            assert_eq!(r.status().as_u16(), 400, "{path}?{k}={v}");
            let body: Value = r.json().await.expect("json");
            assert_eq!(body["parameter"], k, "{body}");
        }
    }
    // A parameter an endpoint does not read is refused, never ignored.
    for (path, parameter) in [
        ("/api/devices?limit=5", "query"),
        ("/api/devices?limit=-1", "query"),
        ("/api/overview?model=markov", "query"),
        ("/api/channels?bucket=hour", "query"),
        ("/api/attribution?limit=3", "query"),
        ("/api/funnel?visitor_id=v_fixture_c", "query"),
        ("/api/paths?limit=-1", "limit"),
        ("/api/attribution?model=nope", "model"),
        ("/api/timeseries?metric=events&bucket=week", "bucket"),
    ] {
        let (status, body) = api.get(path, Some(ANALYST)).await;
        assert_eq!(
            (status, body["parameter"].as_str()),
            (400, Some(parameter)),
            "{path}: {body}"
        );
    }
    // model= answers that model alone, with the credits of the full answer.
    let (_, every) = api.get("/api/attribution", Some(ANALYST)).await;
    for model in ["last_touch", "markov"] {
        let (status, one) = api
            .get(&format!("/api/attribution?model={model}"), Some(ANALYST))
            .await;
        assert_eq!(status, 200, "{one}");
        assert_eq!(one["models"], serde_json::json!([model]));
        assert_eq!(one["conversions"], every["conversions"]);
        for part in ["by_channel", "by_channel_phase", "by_conversion_phase"] {
            let kept: Vec<&String> = one[part]
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            assert!(kept.iter().all(|k| k.as_str() == model), "{part}: {kept:?}");
            assert_eq!(one[part][model], every[part][model], "{model} {part}");
        }
    }
    let (status, csv) = api
        .get("/api/attribution?model=markov&format=csv", Some(ANALYST))
        .await;
    assert_eq!(status, 200);
    let csv = csv.as_str().unwrap_or_default();
    let lines: Vec<&str> = csv.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.starts_with("markov,")),
        "{csv}"
    );
    // CSV of the tables.
    for (path, header, line) in [
        (
            "/api/placements?format=csv",
            "code,channel,label,scans,scans_filtered,unique_scanners,visits,signups,rate,cost_per_signup_eur",
            "M-CHATELET,metro,",
        ),
        (
            "/api/channels?format=csv",
            "channel,phase,touches,visitors,visits,signups,conversion_rate,cost_per_signup_eur",
            "site,p3-8-mars,0,2,0,2,1.0,",
        ),
        (
            "/api/funnel?format=csv",
            "channel,touched,visited,signed_up,median_seconds_to_signup",
            "gares,1,0,0,",
        ),
    ] {
        let r = api
            .http
            .get(format!("{}{path}", api.base))
            .bearer_auth(AGENCY)
            .send()
            .await
            .expect("csv");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let text = r.text().await.expect("text");
        assert!(
            text.starts_with(&format!("\u{feff}{header}\r\n")),
            "{path}: {text}"
        );
        assert!(text.contains(&format!("\r\n{line}")), "{path}: {text}");
    }
    // The table is still there and the numbers unchanged.
    let (status, overview) = api.get("/api/overview", Some(ANALYST)).await;
    assert_eq!(status, 200);
    assert_eq!(overview["current"]["totals"]["visitors"], 4);
    // Requests are counted by route template and status.
    let r = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("metrics");
    let text = r.text().await.expect("text");
    let n = |series: &str| ensemble_tests::metric_value(&text, series).unwrap_or(0.0);
    assert!(
        n("ensemble_dashboard_requests_total{route=\"/api/overview\",status=\"200\"}") >= 2.0,
        "{text}"
    );
    assert!(
        n("ensemble_dashboard_requests_total{route=\"/api/overview\",status=\"400\"}") >= 8.0,
        "{text}"
    );
    assert!(
        n("ensemble_dashboard_requests_total{route=\"/api/overview\",status=\"401\"}") >= 2.0,
        "{text}"
    );
    // Without a token nothing is read: no campaign, channel or comparison
    // is named in a 400 to a stranger.
    for probe in [
        "/api/overview?campaign=no-such-campaign",
        "/api/channels?compare=next",
        "/api/overview?channel=nope&phase=nope",
    ] {
        let (status, body) = api.get(probe, None).await;
        assert_eq!(status, 401, "{probe}: {body}");
        assert_eq!(body["error"], "unauthorized", "{probe}: {body}");
    }
    // A client that keeps sending wrong tokens waits, whatever it sends next.
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(
            api.get("/api/overview", Some("guess-0123456789abcdef"))
                .await
                .0,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(api.get("/api/overview", Some(ANALYST)).await.0, 429);
}

/// `soffice` (Debian's LibreOffice), installed by deploy/local/test.
fn soffice() -> &'static str {
    [
        "/usr/bin/soffice",
        "/usr/bin/libreoffice",
        "/usr/lib/libreoffice/program/soffice",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("LibreOffice (libreoffice-calc-nogui) is installed by deploy/local/test")
}

/// Reads a CSV file with Python's `csv` module: every row's cells.
fn python_csv(path: &std::path::Path, delimiter: &str) -> Vec<Vec<String>> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import csv, json, sys\n\
             with open(sys.argv[1], encoding='utf-8-sig', newline='') as f:\n\
             \x20   print(json.dumps(list(csv.reader(f, delimiter=sys.argv[2]))))",
        ])
        .arg(path)
        .arg(delimiter)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rows")
}

/// Converts `file` with LibreOffice headless into `dir`; the new file.
fn libreoffice(
    file: &std::path::Path,
    to: &str,
    filter: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let profile = tempfile::tempdir().expect("profile");
    let out = std::process::Command::new(soffice())
        .arg(format!(
            "-env:UserInstallation=file://{}",
            profile.path().display()
        ))
        .args(["--headless", "--norestore"])
        .arg(format!("--infilter={filter}"))
        .args(["--convert-to", to, "--outdir"])
        .arg(dir)
        .arg(file)
        .output()
        .expect("soffice");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ext = to.split(':').next().unwrap_or(to);
    let made = dir.join(file.with_extension(ext).file_name().expect("name"));
    assert!(
        made.exists(),
        "{}: {}",
        made.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    made
}

/// A CSV download opens as French Excel opens it: a UTF-8 byte-order mark,
/// `;` between fields and decimal commas with `lang=fr`, a file name that
/// says what it holds. Read back with Python's `csv`, and with LibreOffice
/// (imported as a French user's spreadsheet, saved as .xlsx, exported again
/// as an English CSV): the accented labels survive and the numbers are the
/// numbers of the plain (English) CSV, read as numbers.
#[tokio::test]
async fn csv_downloads_open_in_french_excel() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_csv"));
    load(&store).await;
    let api = serve(&store).await;
    let dir = tempfile::tempdir().expect("dir");
    let (mut accents, mut fractions) = (false, false);
    for endpoint in ["placements", "attribution"] {
        let get = |query: &'static str| {
            let req = api
                .http
                .get(format!("{}/api/{endpoint}?format=csv{query}", api.base))
                .bearer_auth(AGENCY);
            async move {
                let r = req.send().await.expect("csv");
                assert_eq!(r.status().as_u16(), 200);
                let disposition = r.headers()["content-disposition"]
                    .to_str()
                    .expect("header")
                    .to_owned();
                (disposition, r.bytes().await.expect("bytes"))
            }
        };
        let (_, en_bytes) = get("").await;
        let (disposition, fr_bytes) = get("&lang=fr").await;
        assert_eq!(
            disposition,
            format!("attachment; filename=\"vivre-ensemble-2025_{endpoint}.csv\"")
        );
        assert!(
            fr_bytes.starts_with(b"\xef\xbb\xbf"),
            "{endpoint}: a byte-order mark"
        );
        let en_file = dir.path().join(format!("{endpoint}-en.csv"));
        let fr_file = dir.path().join(format!("{endpoint}.csv"));
        std::fs::write(&en_file, &en_bytes).expect("write");
        std::fs::write(&fr_file, &fr_bytes).expect("write");
        let en = python_csv(&en_file, ",");
        assert!(en.len() > 2, "{endpoint}: rows to check");
        // Each cell of the French file against the plain one: the same
        // text, a number with its decimal comma.
        let compare = |other: &[Vec<String>], decimal: char, how: &str| {
            assert_eq!(other.len(), en.len(), "{how}: rows");
            for (a, b) in en.iter().zip(other) {
                assert_eq!(a.len(), b.len(), "{how}: {a:?} vs {b:?}");
                for (x, y) in a.iter().zip(b) {
                    match x.parse::<f64>() {
                        Ok(n) if !x.is_empty() => {
                            let m: f64 = y.replace(decimal, ".").parse().unwrap_or_else(|_| {
                                panic!(
                                    "{how}: `{y}` is not the number {x} written with `{decimal}`"
                                )
                            });
                            assert!((m - n).abs() < 1e-9, "{how}: {y} vs {x}");
                        }
                        _ => assert_eq!(x, y, "{how}"),
                    }
                }
            }
        };
        let fr = python_csv(&fr_file, ";");
        compare(
            &fr,
            ',',
            &format!("{endpoint}: Python csv of the French file"),
        );
        for (a, b) in en.iter().flatten().zip(fr.iter().flatten()) {
            if a.contains('.') && a.parse::<f64>().is_ok() {
                assert!(
                    b.contains(',') && !b.contains('.'),
                    "decimal comma: {a} → {b}"
                );
            }
        }
        accents |= fr.iter().flatten().any(|c| !c.is_ascii());
        fractions |= en
            .iter()
            .flatten()
            .any(|c| c.parse::<f64>().is_ok_and(|n| n.fract() != 0.0));
        // As a French spreadsheet (`;`, UTF-8, French locale 1036), saved as
        // .xlsx, written out again as an English CSV (`,`, 1033): a number
        // LibreOffice had read as text would come back with its comma.
        let xlsx = libreoffice(&fr_file, "xlsx", "CSV:59,34,76,1,,1036", dir.path());
        let back = dir.path().join(format!("{endpoint}-back"));
        std::fs::create_dir_all(&back).expect("dir");
        let again = libreoffice(
            &xlsx,
            "csv:Text - txt - csv (StarCalc):44,34,76,1,,1033",
            "Calc MS Excel 2007 XML",
            &back,
        );
        compare(
            &python_csv(&again, ","),
            '.',
            &format!("{endpoint}: LibreOffice .xlsx"),
        );
    }
    assert!(accents, "accented labels were checked");
    assert!(fractions, "decimal numbers were checked");
}

/// Headless Chromium on `url` (the page's size, 15 s of virtual time).
fn chromium_run(
    url: &str,
    profile: &std::path::Path,
    extra: &[String],
) -> impl std::future::Future<Output = std::io::Result<std::process::Output>> {
    let mut extra = extra.to_vec();
    extra.push("--window-size=1400,1900".into());
    let mut cmd = ensemble_tests::chromium(url, profile, 15_000, &extra);
    async move { cmd.output().await }
}

/// The DOM Chromium dumped once the page had loaded everything.
async fn page_dom(
    run: impl std::future::Future<Output = std::io::Result<std::process::Output>>,
) -> String {
    let out = tokio::time::timeout(std::time::Duration::from_secs(90), run)
        .await
        .expect("chromium within 90 s")
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-loaded=\"true\""),
        "page finished loading: {}",
        &dom[..dom.len().min(2000)]
    );
    dom
}

/// Headless Chromium (Debian's `chromium`) loads the page with a token; the
/// KPI figures in its DOM are the API's; a screenshot is kept in the target dir.
#[tokio::test]
async fn the_page_in_chromium_shows_the_apis_figures() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_page"));
    load(&store).await;
    let api = serve(&store).await;
    let (_, overview) = api.get("/api/overview", Some(ANALYST)).await;
    let totals = overview["current"]["totals"].clone();

    let (status, page) = api.get("/", None).await;
    assert_eq!(status, 200, "the page holds no data: it asks for the token");
    assert!(
        page.as_str().is_some_and(|p| !p.contains(ANALYST)),
        "and never carries one"
    );
    let url = format!("{}/?token={ANALYST}", api.base);
    let profile = tempfile::tempdir().expect("profile dir");
    let run = |extra: &[String]| chromium_run(&url, profile.path(), extra);
    let dom = page_dom(run(&["--dump-dom".into()])).await;
    let kpi = |id: &str| -> String {
        let start = dom
            .find(&format!("id=\"{id}\">"))
            .unwrap_or_else(|| panic!("{id} in DOM"))
            + id.len()
            + 6;
        dom[start..]
            .split('<')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(kpi("kpi-visitors"), totals["visitors"].to_string());
    assert_eq!(kpi("kpi-signups"), totals["signups"].to_string());
    assert_eq!(
        kpi("kpi-scans"),
        totals["events_by_type"]["qr_scan"].to_string()
    );
    assert_eq!(
        kpi("kpi-pageviews"),
        totals["events_by_type"]["page_view"].to_string()
    );
    assert_eq!(
        kpi("kpi-conversion"),
        "100 %",
        "conversion rate 1.0 shown in French"
    );
    assert!(dom.contains("class=\"bar\""), "attribution bars drawn");
    // The conversion paths: each of the API's top paths a row with its
    // counts, each length a bar; the data-driven models in the switch.
    let (_, paths) = api.get("/api/paths?limit=10", Some(ANALYST)).await;
    let lines = paths["paths"].as_array().expect("paths");
    assert!(!lines.is_empty(), "{paths}");
    for p in lines {
        let row = format!(
            "<td>{}</td><td>{}</td><td>{}</td>",
            p["path"].as_str().unwrap_or_default().replace('>', "&gt;"),
            p["conversions"],
            p["without_signup"]
        );
        assert!(dom.contains(&row), "paths table row {row}");
    }
    for l in paths["lengths"].as_array().expect("lengths") {
        let bar = format!("class=\"length-bar\" data-length=\"{}\"", l["length"]);
        assert!(dom.contains(&bar), "path length bar {bar}");
    }
    for m in ["markov", "shapley"] {
        assert!(
            dom.contains(&format!("value=\"{m}\"")),
            "{m} in the model switch"
        );
    }
    // The KPIs' change against the period before (before the campaign:
    // nothing, so every KPI with something rises).
    assert!(
        dom.contains("id=\"delta-visitors\" data-before=\"0\"> ▲</small>"),
        "visitors' change shown"
    );
    // The scan heatmap: one cell per weekday × hour with the API's count.
    let (_, hours) = api.get("/api/scan-hours", Some(ANALYST)).await;
    for c in hours["cells"].as_array().expect("cells") {
        let cell = format!(
            "data-weekday=\"{}\" data-hour=\"{}\" data-scans=\"{}\"",
            c["weekday"], c["hour"], c["scans"]
        );
        assert!(dom.contains(&cell), "heatmap cell {cell}");
    }
    // The reach report: each placement's row carries the API's counts, and
    // a ratio without a value shows "—".
    let (_, media) = api.get("/api/media", Some(AGENCY)).await;
    let table = &dom[dom.find("id=\"media\"").expect("media table")..];
    for p in media["placements"].as_array().expect("placements") {
        let start = format!(
            "<tr><td>{}</td><td>{}</td>",
            p["code"].as_str().unwrap_or_default(),
            p["channel"].as_str().unwrap_or_default()
        );
        let at = table
            .find(&start)
            .unwrap_or_else(|| panic!("media row {start}"));
        let row = &table[at..at + table[at..].find("</tr>").unwrap_or(0)];
        let counts = format!(
            "<td>{}</td><td>{}</td><td>{}</td>",
            p["scans"], p["reached_visitors"], p["signups"]
        );
        assert!(row.contains(&counts), "{row} has {counts}");
        if p["cost_per_signup_eur"].is_null() {
            assert!(row.ends_with("<td>—</td>"), "{row}");
        }
    }
    // The device breakdown: each line of the API, in its order.
    let (_, devices) = api.get("/api/devices", Some(ANALYST)).await;
    let table = &dom[dom.find("id=\"devices\"").expect("devices table")..];
    let table = &table[..table.find("</table>").unwrap_or(table.len())];
    let mut from = 0;
    let lines = devices["lines"].as_array().expect("lines");
    assert!(lines.len() >= 4, "{devices}");
    for l in lines {
        let channel = match l["channel"].as_str().unwrap_or_default() {
            "*" => "tous les canaux",
            c => c,
        };
        let row = format!(
            "<tr><td>{channel}</td><td>{}</td><td>{}</td><td>{}</td>",
            l["device_class"].as_str().unwrap_or_default(),
            l["os_family"].as_str().unwrap_or_default(),
            l["visitors"]
        );
        let at = table[from..]
            .find(&row)
            .unwrap_or_else(|| panic!("device row {row} in order"));
        from += at + row.len();
    }
    assert!(
        dom.contains("class=\"phase-band\""),
        "time series with phase bands"
    );

    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        run(&[format!("--screenshot={}", shot.display())]),
    )
    .await
    .expect("chromium within 90 s")
    .expect("chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot: {} bytes",
        png.len()
    );
}

/// Two campaigns side by side: last year's (the shipped file 52 weeks
/// earlier, in its own database, holding the fixture moved 52 weeks
/// earlier) beside the shipped one. Each answers its own hand-computed
/// numbers when named by `campaign=`, `/api/years` aligns them phase by
/// phase, and the page shows a campaign switch and the year-over-year
/// table with the API's numbers.
#[tokio::test]
async fn two_campaigns_answer_their_own_figures_and_side_by_side() {
    let store = StoreConfig::new(clickhouse_url(), unique("it_dash_years"));
    load(&store).await;
    let text = std::fs::read_to_string(campaign_file()).expect("campaign file");
    let dir = tempfile::tempdir().expect("dir");
    let last_file = dir.path().join("2024.toml");
    std::fs::write(
        &last_file,
        ensemble_tests::live::moved_campaign_toml(&text, -364, "vivre-ensemble-2024")
            .expect("last year"),
    )
    .expect("write");
    let last = Campaign::load(&last_file).expect("last year's campaign");
    let last_store = StoreConfig::new(clickhouse_url(), unique("it_dash_years_last"));
    let moved: Vec<EventRow> = fixture()
        .into_iter()
        .map(|mut r| {
            r.ts -= chrono::Duration::days(364);
            r.received_at -= chrono::Duration::days(364);
            r
        })
        .collect();
    load_rows_of(&last_store, &last, moved).await;
    let api = serve_with(
        &store,
        &[format!("{}={}", last_file.display(), last_store.database)],
    )
    .await;

    // Each campaign its own figures: the hand-computed ones, both years.
    for q in [
        "",
        "?campaign=vivre-ensemble-2025",
        "?campaign=vivre-ensemble-2024",
    ] {
        let (s1, overview) = api.get(&format!("/api/overview{q}"), Some(ANALYST)).await;
        let (s2, attribution) = api.get(&format!("/api/attribution{q}"), Some(AGENCY)).await;
        assert_eq!((s1, s2), (200, 200), "{q}: {overview} {attribution}");
        check(&overview, &attribution);
    }
    let (_, y2024) = api
        .get(
            "/api/timeseries?metric=signups&bucket=day&campaign=vivre-ensemble-2024",
            Some(ANALYST),
        )
        .await;
    assert_eq!(
        y2024["phases"][0]["starts_at"], "2024-01-18T23:00:00Z",
        "{y2024}"
    );
    // Phase ids and placement codes are the campaign's own.
    let (status, body) = api.get("/api/overview?campaign=nope", Some(ANALYST)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["parameter"], "campaign", "{body}");
    let (status, _) = api
        .get("/api/years?phase=p1-lancement", Some(ANALYST))
        .await;
    assert_eq!(status, 400, "years takes no phase");
    let (status, _) = api.get("/api/campaigns", None).await;
    assert_eq!(status, 401, "the list needs a token too");

    let (_, list) = api.get("/api/campaigns", Some(ANALYST)).await;
    assert_eq!(list[0]["id"], "vivre-ensemble-2024", "{list}");
    assert_eq!(
        list[1]["current"], true,
        "the last one started answers by default"
    );
    let (_, years) = api.get("/api/years", Some(AGENCY)).await;
    assert_eq!(
        years["campaigns"],
        serde_json::json!(["vivre-ensemble-2024", "vivre-ensemble-2025"])
    );
    let phases = years["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 3);
    let mut signups = 0;
    for a in phases {
        let (y0, y1) = (&a["by_campaign"][0], &a["by_campaign"][1]);
        assert_eq!(y0["phase"], y1["phase"], "the same phase, a year apart");
        assert_eq!(y0["totals"], y1["totals"], "the same fixture, a year apart");
        signups += y1["totals"]["signups"].as_u64().unwrap_or(0);
    }
    assert_eq!(signups, 4, "the fixture's sign-ups, phase by phase");
    let (status, csv) = api.get("/api/years?format=csv", Some(ANALYST)).await;
    assert_eq!(status, 200);
    let csv = csv
        .as_str()
        .expect("csv text")
        .trim_start_matches('\u{feff}');
    assert!(
        csv.starts_with("phase_index,campaign,phase,metric,value\r\n")
            && csv.contains("1,vivre-ensemble-2024,p1-lancement,signups,"),
        "{csv}"
    );

    // The page: the switch lists both, this year selected; the table puts
    // each phase of each year with the API's numbers and the change.
    let url = format!("{}/?token={ANALYST}", api.base);
    let profile = tempfile::tempdir().expect("profile dir");
    let dom = page_dom(chromium_run(&url, profile.path(), &["--dump-dom".into()])).await;
    assert!(
        dom.contains("<label id=\"campaign-box\">"),
        "the switch is shown"
    );
    assert!(
        dom.contains("<option value=\"vivre-ensemble-2024\">")
            && dom.contains("<option value=\"vivre-ensemble-2025\" selected=\"\">"),
        "both campaigns, this year selected"
    );
    let table = &dom[dom.find("id=\"years\"").expect("years table")..];
    let table = &table[..table.find("</table>").unwrap_or(table.len())];
    for a in phases {
        for (i, y) in a["by_campaign"]
            .as_array()
            .expect("years")
            .iter()
            .enumerate()
        {
            let t = &y["totals"];
            // The same sign-ups as the year before: "=" (none either
            // year) or "= 0 %".
            let change = match (i, t["signups"].as_u64()) {
                (0, _) => "",
                (_, Some(0)) => "=",
                _ => "= 0 %",
            };
            let row = format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                a["index"],
                y["campaign"].as_str().unwrap_or_default(),
                y["phase"].as_str().unwrap_or_default(),
                t["visitors"],
                t["signups"]
            );
            let at = table
                .find(&row)
                .unwrap_or_else(|| panic!("years row {row} in {table}"));
            let line = &table[at..at + table[at..].find("</tr>").unwrap_or(0)];
            assert!(line.ends_with(&format!("<td>{change}</td>")), "{line}");
        }
    }
}
