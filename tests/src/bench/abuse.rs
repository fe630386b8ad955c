//! What a hostile client with a script can do to the figures, and what real
//! visitors sharing the collector see meanwhile.
//!
//! The collector (default limits, behind a "proxy": the bench is 127.0.0.1,
//! trusted, and names each client in X-Forwarded-For), the processor and
//! the dashboard run as release processes on a campaign whose calendar is
//! moved so that today is in a phase. During each attack, honest visitors —
//! each from an address of their own — scan a poster and send the landing
//! page's view with its token; their latency and 429s are recorded. After
//! the attacks, the figures are read from the dashboard and the stored
//! events searched.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{percentile, progress, start_pipeline, Pipeline};
use crate::poll_until;

const TOKEN: &str = "bench-analyst-token-0123456789";
const IMPORT: &str = "bench-import-token-0123456789";
const ATTACKER: &str = "203.0.113.66";
const PHONE_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";

#[derive(Debug, Clone, Copy)]
pub struct AbusePlan {
    /// Requests per flooding attack.
    pub flood: usize,
    /// Honest visitors during each attack.
    pub honest: usize,
}

/// One attack's outcome.
#[derive(Debug, Clone)]
pub struct Attack {
    pub name: &'static str,
    pub attempts: usize,
    /// What the figures (or the store) counted, in words with numbers.
    pub counted: String,
    /// What one honest visitor could cause, for comparison.
    pub honest_bound: String,
    pub honest: Honest,
}

/// What the honest visitors saw during an attack.
#[derive(Debug, Clone, Default)]
pub struct Honest {
    pub requests: usize,
    pub refused_429: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

type Seen = Arc<Mutex<Vec<(f64, u16)>>>;

/// Honest visitors `from..from + n`, each from an address of its own:
/// a scan of `code`, then the landing page's view with its token.
async fn honest_visitors(collector: String, code: &'static str, from: usize, n: usize, seen: Seen) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(PHONE_UA)
        .build()
        .unwrap_or_default();
    for i in from..from + n {
        let addr = format!("198.18.{}.{}", i / 250, 1 + i % 250);
        let t = Instant::now();
        let r = http
            .get(format!("{collector}/r/{code}"))
            .header("x-forwarded-for", &addr)
            .send()
            .await;
        let Ok(r) = r else { continue };
        seen.lock()
            .await
            .push((t.elapsed().as_secs_f64() * 1000.0, r.status().as_u16()));
        let token = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url::Url::parse(l).ok())
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "ens")
                    .map(|(_, v)| v.into_owned())
            });
        let body = json!({"type": "page_view", "visitor_id": format!("v_honest_{i:06}"),
            "url": "https://vivre-ensemble.example.org/barometre", "visit_token": token});
        let t = Instant::now();
        if let Ok(r) = http
            .post(format!("{collector}/v1/events"))
            .header("x-forwarded-for", &addr)
            .json(&body)
            .send()
            .await
        {
            seen.lock()
                .await
                .push((t.elapsed().as_secs_f64() * 1000.0, r.status().as_u16()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn honest_of(seen: &[(f64, u16)]) -> Honest {
    let mut ms: Vec<f64> = seen.iter().map(|(m, _)| *m).collect();
    ms.sort_by(f64::total_cmp);
    Honest {
        requests: seen.len(),
        refused_429: seen.iter().filter(|(_, s)| *s == 429).count(),
        p50_ms: percentile(&ms, 0.5),
        p95_ms: percentile(&ms, 0.95),
    }
}

/// Runs `attack` while `n` honest visitors (numbered from `from`) scan `code`.
async fn beside_honest<Fut, T>(
    collector: &str,
    code: &'static str,
    from: usize,
    n: usize,
    attack: Fut,
) -> (Honest, T)
where
    Fut: std::future::Future<Output = T>,
{
    let seen: Seen = Arc::default();
    let visitors = tokio::spawn(honest_visitors(
        collector.to_owned(),
        code,
        from,
        n,
        seen.clone(),
    ));
    let out = attack.await;
    let _ = visitors.await;
    let seen = seen.lock().await;
    (honest_of(&seen), out)
}

/// Sends `n` requests built by `req`, 16 at a time; their statuses.
async fn flood<F>(n: usize, req: F) -> Vec<u16>
where
    F: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let req = Arc::new(req);
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let sends: Vec<_> = chunk
            .iter()
            .map(|i| {
                let (req, i) = (req.clone(), *i);
                tokio::spawn(async move { req(i).send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        for s in sends {
            if let Ok(Ok(status)) = s.await {
                out.push(status);
            }
        }
    }
    out
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// Scans of `code` the placements table counts (and filters).
async fn placement_scans(http: &reqwest::Client, dash: &str, code: &str) -> (u64, u64) {
    let v: Value = match http
        .get(format!("{dash}/api/placements"))
        .bearer_auth(TOKEN)
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    };
    v["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["code"] == code))
        .map_or((0, 0), |r| {
            (
                r["scans"].as_u64().unwrap_or(0),
                r["scans_filtered"].as_u64().unwrap_or(0),
            )
        })
}

pub async fn run(
    brokers: &str,
    ch_url: &str,
    bins: [&Path; 3],
    plan: AbusePlan,
) -> anyhow::Result<Vec<Attack>> {
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .date_naive();
    let dir = tempfile::tempdir()?;
    let campaign_path = dir.path().join("campaign.toml");
    let text = std::fs::read_to_string(crate::campaign_file())?;
    std::fs::write(
        &campaign_path,
        crate::live::live_campaign_toml(&text, today)?,
    )?;
    let campaign = campaign_path.display().to_string();
    // The collector as deployed (default limits), behind a proxy: us.
    let Pipeline {
        ingest,
        processor,
        dashboard,
        store,
    } = start_pipeline(
        brokers,
        ch_url,
        bins,
        "bench_abuse",
        &campaign,
        &[
            "--import-token",
            IMPORT,
            "--trust-forwarded-for",
            "--trusted-proxies",
            "127.0.0.1",
        ],
        TOKEN,
    )
    .await?;
    let (collector, dash) = (ingest.base(), dashboard.base());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(PHONE_UA)
        .build()?;
    let mut attacks = Vec::new();
    let n = plan.honest;

    // 1. A scan flood through the redirect.
    progress(&format!(
        "abuse: {} scans of one poster from one client",
        plan.flood
    ));
    let scan_flood = {
        let (c, http) = (collector.clone(), http.clone());
        beside_honest(
            &collector,
            "M-CHATELET",
            0,
            n,
            flood(plan.flood, move |_| {
                http.get(format!("{c}/r/M-CHATELET"))
                    .header("x-forwarded-for", ATTACKER)
            }),
        )
        .await
    };

    // 2. The same through the events API.
    progress(&format!(
        "abuse: {} qr_scan events posted by one client",
        plan.flood
    ));
    let (honest2, posted) = {
        let (c, http) = (collector.clone(), http.clone());
        beside_honest(
            &collector,
            "M-REPUBLIQUE",
            n,
            n,
            flood(plan.flood / 100, move |_| {
                let batch: Vec<Value> = (0..100)
                    .map(|_| json!({"type": "qr_scan", "placement": "G-PARIS-NORD"}))
                    .collect();
                http.post(format!("{c}/v1/events"))
                    .header("x-forwarded-for", ATTACKER)
                    .json(&json!({ "batch": batch }))
            }),
        )
        .await
    };

    // 3. Garbage bodies.
    progress(&format!("abuse: {} malformed bodies", plan.flood));
    let (honest3, garbage) = {
        let (c, http) = (collector.clone(), http.clone());
        beside_honest(
            &collector,
            "A-NATIONAL-1",
            2 * n,
            n,
            flood(plan.flood, move |_| {
                http.post(format!("{c}/v1/events"))
                    .header("x-forwarded-for", "203.0.113.67")
                    .header("content-type", "application/json")
                    .body("{nope")
            }),
        )
        .await
    };

    // 4. An identity minted through a link, and 5. tokens replayed.
    progress("abuse: links carrying a visitor id; tokens replayed from another browser");
    let victim = "v_v1ct1mv1ct1mv1ct1m";
    let mut minted = 0;
    let mut replayed_honoured = 0;
    let tries = 100;
    for i in 0..tries {
        let from = format!("203.0.113.{}", 100 + i % 100);
        let r = http
            .get(format!("{collector}/r/D-BANNIERE?vid={victim}"))
            .header("x-forwarded-for", &from)
            .send()
            .await?;
        let loc = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if loc.contains(victim) {
            minted += 1;
        }
        let token = url::Url::parse(&loc).ok().and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "ens")
                .map(|(_, v)| v.into_owned())
        });
        for (who, id) in [("first", "a"), ("other", "b")] {
            let v: Value = http
                .post(format!("{collector}/v1/events"))
                .header("x-forwarded-for", &from)
                .json(
                    &json!({"type": "page_view", "visitor_id": format!("v_browser_{id}_{i:04}"),
                    "url": "https://vivre-ensemble.example.org/barometre", "visit_token": token}),
                )
                .send()
                .await?
                .json()
                .await
                .unwrap_or_default();
            if who == "other" && v.get("visitor_id").is_some() {
                replayed_honoured += 1;
            }
        }
    }

    // 6. Free text: what detection misses, in every declared-able field.
    progress("abuse: personal data written so no pattern finds it");
    let texts = [
        "jeanne [at] exemple [dot] fr",
        "jeanne\u{ff20}exemple.fr",
        "jeanne&#64;exemple.fr",
        "amVhbm5lQGV4ZW1wbGUuZnI=",
        "06\u{a0}12\u{a0}34\u{a0}56\u{a0}78",
        "FR76 3000 6000 0112 3456 7890 189",
        "2 84 05 75 123 456 78",
        "12 rue de la Paix, 75002 Paris",
        "Jeanne Dupont",
    ];
    let mut free = Vec::new();
    for t in texts {
        free.push(json!({"type": "page_view", "visitor_id": "v_free_text01",
            "url": format!(
                "https://vivre-ensemble.example.org/{}",
                percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC)
            ),
            "utm_content": t, "utm_term": t, "utm_medium": t, "utm_campaign": t}));
        free.push(json!({"type": "custom", "name": "share", "visitor_id": "v_free_text01", "props": {"network": t}}));
    }
    let free_answer: Value = http
        .post(format!("{collector}/v1/events"))
        .header("x-forwarded-for", "203.0.113.68")
        .json(&json!({ "batch": free }))
        .send()
        .await?
        .json()
        .await
        .unwrap_or_default();

    // 7. Guessing the import token.
    progress("abuse: guessing the import token");
    let guesses = flood(200, {
        let (c, http) = (collector.clone(), http.clone());
        move |i| {
            http.post(format!("{c}/v1/import"))
                .header("x-forwarded-for", "203.0.113.69")
                .bearer_auth(format!("guess-{i:020}"))
                .json(&json!({"type": "page_view", "ts": "2025-02-01T10:00:00Z", "visitor_id": "v_guess_0001"}))
        }
    })
    .await;

    progress("abuse: waiting for the processor, then reading the figures");
    poll_until("the processor caught up", Duration::from_secs(300), || {
        let (http, dash) = (http.clone(), dash.clone());
        async move {
            let v: Value = http
                .get(format!("{dash}/api/live"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["pending_events"].as_i64() == Some(0)).then_some(())
        }
    })
    .await;
    let (chatelet, chatelet_filtered) = placement_scans(&http, &dash, "M-CHATELET").await;
    let (nord, nord_filtered) = placement_scans(&http, &dash, "G-PARIS-NORD").await;
    let stored = crate::database_text(&store).await?.to_lowercase();
    let leaked: Vec<&str> = texts
        .iter()
        .copied()
        .filter(|t| stored.contains(&t.to_lowercase()))
        .collect();

    let (h1, s1) = scan_flood;
    attacks.push(Attack {
        name: "scan flood through /r/ (one client, one poster)",
        attempts: s1.len(),
        counted: format!(
            "{} scans counted for the poster, {n} of them the honest visitors'; {chatelet_filtered} filtered as repeats; {} answered 429",
            chatelet,
            count(&s1, 429)
        ),
        honest_bound: format!("{} (each honest visitor: 1)", n + 1),
        honest: h1,
    });
    attacks.push(Attack {
        name: "scan flood through /v1/events (qr_scan batches)",
        attempts: posted.len() * 100,
        counted: format!(
            "{nord} scans counted, {nord_filtered} filtered as repeats; {} requests answered 429",
            count(&posted, 429)
        ),
        honest_bound: "1".into(),
        honest: honest2,
    });
    attacks.push(Attack {
        name: "malformed bodies",
        attempts: garbage.len(),
        counted: format!(
            "{} read and refused 400, {} refused 429 before reading",
            count(&garbage, 400),
            count(&garbage, 429)
        ),
        honest_bound: "—".into(),
        honest: honest3,
    });
    attacks.push(Attack {
        name: "identity minted by a link (`/r/…?vid=<someone>`)",
        attempts: tries,
        counted: format!("{minted} tokens signed for the id the link carried"),
        honest_bound: "0".into(),
        honest: Honest::default(),
    });
    attacks.push(Attack {
        name: "visit token replayed from another browser",
        attempts: tries,
        counted: format!("{replayed_honoured} replays honoured as the scanner"),
        honest_bound: "0".into(),
        honest: Honest::default(),
    });
    attacks.push(Attack {
        name: "personal data detection misses, in utm_*, URL paths, custom properties",
        attempts: texts.len() * 2,
        counted: format!(
            "{} of {} strings stored as sent; {} custom events refused (undeclared)",
            leaked.len(),
            texts.len(),
            free_answer["rejected"].as_array().map_or(0, |r| r
                .iter()
                .filter(|r| r["reason"] == "undeclared")
                .count())
        ),
        honest_bound: "0".into(),
        honest: Honest::default(),
    });
    attacks.push(Attack {
        name: "guessing the import token",
        attempts: guesses.len(),
        counted: format!(
            "{} answered 401 (a guess checked), {} answered 429",
            count(&guesses, 401),
            count(&guesses, 429)
        ),
        honest_bound: "—".into(),
        honest: Honest::default(),
    });
    drop((ingest, processor, dashboard));
    store
        .server_client()
        .query(&format!("DROP DATABASE {}", store.database))
        .execute()
        .await?;
    Ok(attacks)
}

pub fn report(attacks: &[Attack], plan: &AbusePlan) -> String {
    let mut out = format!(
        "## Abuse: what a script can do to the figures\n\n\
         `deploy/local/bench abuse` on {}: the collector with its default limits \
         (200 events/s, burst 1 000 per client; repeats within 600 s filtered), \
         {} honest visitors (one address each: a scan, then the landing page's view) \
         during each flooding attack. Baseline: what honest visitors could cause.\n\n\
         | attack | attempts | what was counted | honest bound | honest visitors: requests / 429 / p50 / p95 |\n\
         |---|---:|---|---|---|\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        plan.honest
    );
    for a in attacks {
        let h = &a.honest;
        let honest = if h.requests == 0 {
            "—".to_owned()
        } else {
            format!(
                "{} / {} / {:.1} ms / {:.1} ms",
                h.requests, h.refused_429, h.p50_ms, h.p95_ms
            )
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            a.name, a.attempts, a.counted, a.honest_bound, honest
        ));
    }
    out
}
