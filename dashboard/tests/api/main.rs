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

mod campaigns;
mod exports;
mod figures;
mod layout;
mod page;
mod ranges;
mod tokens;
mod uplift;

// What several rooms use: the fixture's checks, the page in Chromium.
use figures::{check, check_paths, compare_with_events};
use page::{chromium_run, page_dom};

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
    serve_app(app(store, also)).await
}

/// The dashboard's router on `store` and the `also` campaigns.
fn app(store: &StoreConfig, also: &[String]) -> axum::Router {
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
    router(
        ensemble_dashboard::state(&settings).expect("api state"),
        prometheus::Registry::new(),
        Default::default(),
    )
}

/// `app` served on a free local port.
async fn serve_app(app: axum::Router) -> Api {
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
