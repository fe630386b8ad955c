//! Campaign simulator: a seeded, reproducible population exposed to the
//! campaign's channels over its phases — QR scans from posters, dating-app
//! card impressions / likes / passes / clicks, press, display, social and
//! referral visits, journeys of several touches across channels and days,
//! sign-ups with channel-dependent probabilities, repeat sign-ups, a share of
//! bots, client retries that resend the same events, and malformed events.
//!
//! It writes wire-format events (what clients send to the collector); the
//! collector, not the simulator, decides what is valid.

use chrono::{DateTime, Duration, Utc};
use ensemble_core::Campaign;
use serde_json::{json, Value};

/// A small deterministic generator (SplitMix64): the same seed gives the
/// same campaign on every machine and every version of every crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A UUID v4 from the stream (deterministic).
    pub fn uuid(&mut self) -> uuid::Uuid {
        let hi = self.next_u64();
        let lo = self.next_u64();
        uuid::Builder::from_random_bytes({
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&hi.to_be_bytes());
            b[8..].copy_from_slice(&lo.to_be_bytes());
            b
        })
        .into_uuid()
    }
}

/// How big and how lively the simulated campaign is.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    pub seed: u64,
    pub people: usize,
    /// Share of people who are bots (crawler User-Agent).
    pub bot_share: f64,
    /// Share of events a client sends twice (a retry after a lost answer).
    pub retry_share: f64,
    /// Malformed events mixed in, per thousand.
    pub malformed_per_mille: u32,
    /// Nothing after this time (the history of a campaign still running);
    /// `None`: up to the campaign's end.
    pub until: Option<DateTime<Utc>>,
    /// Number of the first person (visitor ids and contacts are numbered):
    /// runs with different seeds and disjoint numbers make one larger campaign.
    pub first_person: usize,
    /// Days before the first phase that people come by themselves (and go
    /// on coming during the campaign): the baseline of the uplift. 0: none.
    pub organic_days: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 2025,
            people: 20_000,
            bot_share: 0.02,
            retry_share: 0.01,
            malformed_per_mille: 2,
            until: None,
            first_person: 0,
            organic_days: 0,
        }
    }
}

/// What was generated: the events to send (retries and malformed included),
/// and the counts a reader can check against.
#[derive(Debug, Clone, Default)]
pub struct Simulated {
    pub events: Vec<Value>,
    /// Every distinct valid event as the simulator meant it.
    pub truth: Vec<Truth>,
    /// Distinct valid events (retries are the same event).
    pub valid_events: usize,
    pub malformed: usize,
    pub retries: usize,
}

/// One event as the simulator meant it: the channel it was sent through (not
/// worked out from its fields the way the product does), whether a bot sent
/// it, and the contact of a sign-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub event_id: uuid::Uuid,
    pub visitor: String,
    pub ts: DateTime<Utc>,
    pub event_type: String,
    pub action: Option<String>,
    pub channel: &'static str,
    pub bot: bool,
    pub contact: Option<String>,
    /// The placement code the event carried when sent (a scan through the
    /// redirect: the code scanned). What the collector adds from a visit
    /// token is not here.
    pub placement: Option<String>,
    /// The device class and OS family of the User-Agent it was sent with,
    /// as the simulator means them ([`device_of`]).
    pub device: (&'static str, &'static str),
}

/// What each User-Agent the simulator sends is: (device class, OS family
/// under the name the processor's parser gives it).
pub fn device_of(ua: &str) -> (&'static str, &'static str) {
    match ua {
        PHONE_UA => ("mobile", "iPhone"),
        ANDROID_UA => ("mobile", "Android"),
        DESKTOP_UA => ("desktop", "Windows 10"),
        _ => ("bot", ""),
    }
}

const PHONE_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const ANDROID_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36";
const DESKTOP_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
const HUMAN_UAS: [&str; 4] = [PHONE_UA, PHONE_UA, ANDROID_UA, DESKTOP_UA];
const BOT_UA: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// Relative weight of each way in, and the chance a touch of it leads to a sign-up.
const WAYS: &[(&str, f64, f64)] = &[
    ("metro", 22.0, 0.05),
    ("gares", 14.0, 0.04),
    ("abribus", 12.0, 0.04),
    ("presse", 7.0, 0.06),
    ("display", 10.0, 0.02),
    ("tinder", 18.0, 0.05),
    ("social", 8.0, 0.03),
    ("referral", 4.0, 0.03),
    ("site", 5.0, 0.08),
];

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

struct Person {
    vid: String,
    ua: &'static str,
}

impl Person {
    fn event(&self, rng: &mut Rng, ty: &str, at: DateTime<Utc>) -> Value {
        json!({
            "event_id": rng.uuid().to_string(),
            "type": ty,
            "ts": rfc3339(at),
            "visitor_id": self.vid,
            "user_agent": self.ua,
        })
    }
}

/// The landing page view a touch of `channel` leads to.
fn landing_view(
    campaign: &Campaign,
    rng: &mut Rng,
    p: &Person,
    channel: &str,
    placement: Option<&str>,
    at: DateTime<Utc>,
) -> Value {
    let mut e = p.event(rng, "page_view", at);
    let base = campaign.default_landing_url.as_str().to_owned();
    match (channel, placement) {
        (_, Some(code)) => {
            let url = campaign
                .placement(code)
                .map_or(base.clone(), |pl| pl.landing_url.to_string());
            e["url"] = json!(url);
            e["placement"] = json!(code);
        }
        ("social", None) => {
            e["url"] = json!(base);
            e["referrer"] = json!(*rng.pick(&[
                "https://www.facebook.com/",
                "https://www.instagram.com/",
                "https://t.co/x"
            ]));
        }
        ("referral", None) => {
            e["url"] = json!(base);
            e["referrer"] = json!(*rng.pick(&[
                "https://blog.example.com/article",
                "https://asso.example.net/liens"
            ]));
        }
        ("presse", None) => {
            e["url"] = json!(format!("{base}?utm_source=presse&utm_medium=article"));
        }
        _ => {
            e["url"] = json!(base);
        }
    }
    e
}

/// Generates the campaign: one journey per person over the campaign's phases.
pub fn simulate(campaign: &Campaign, cfg: &SimConfig) -> Simulated {
    let mut rng = Rng::new(cfg.seed);
    let start = campaign
        .phases
        .first()
        .map_or_else(Utc::now, |p| p.starts_at);
    let end = campaign.phases.last().map_or_else(Utc::now, |p| p.ends_at);
    let end = cfg.until.map_or(end, |u| u.min(end));
    let span = (end - start).num_seconds().max(1) as u64;
    let total_weight: f64 = WAYS.iter().map(|w| w.1).sum();
    let mut out = Simulated::default();
    for i in cfg.first_person..cfg.first_person + cfg.people {
        let bot = rng.chance(cfg.bot_share);
        let person = Person {
            vid: format!("v_sim_{:08}_{:04x}", i, rng.below(0xffff)),
            ua: if bot {
                BOT_UA
            } else {
                HUMAN_UAS[rng.below(HUMAN_UAS.len() as u64) as usize]
            },
        };
        let touches = 1 + rng.below(4) as usize;
        let mut t = start + Duration::seconds(rng.below(span * 3 / 4) as i64);
        let mut convert_chance: f64 = 0.0;
        let mut journey = Vec::new();
        // The channel each journey event was sent through, as the simulator means it.
        let mut labels: Vec<&'static str> = Vec::new();
        // The landing page's tracker keeps the last placement it was reached
        // through (`plc`) and sends it with later events, the sign-up too.
        let mut last_placement: Option<&str> = None;
        let mut last_placement_channel = "site";
        for _ in 0..touches {
            let mut x = rng.unit() * total_weight;
            let way = WAYS
                .iter()
                .find(|w| {
                    x -= w.1;
                    x < 0.0
                })
                .unwrap_or(&WAYS[0]);
            convert_chance = 1.0 - (1.0 - convert_chance) * (1.0 - way.2 * 3.0);
            let placements: Vec<&str> = campaign
                .placements
                .iter()
                .filter(|p| p.channel == way.0)
                .map(|p| p.code.as_str())
                .collect();
            match way.0 {
                "metro" | "gares" | "abribus" => {
                    let code = *rng.pick(&placements);
                    last_placement = Some(code);
                    last_placement_channel = way.0;
                    let mut scan = person.event(&mut rng, "qr_scan", t);
                    scan["placement"] = json!(code);
                    journey.push(scan);
                    let view_at = t + Duration::seconds(5 + rng.below(40) as i64);
                    journey.push(landing_view(
                        campaign,
                        &mut rng,
                        &person,
                        way.0,
                        Some(code),
                        view_at,
                    ));
                }
                "tinder" => {
                    let code = *rng.pick(&placements);
                    for k in 0..(1 + rng.below(3)) {
                        let mut imp = person.event(
                            &mut rng,
                            "tinder_card",
                            t + Duration::minutes(k as i64 * 90),
                        );
                        imp["action"] = json!("impression");
                        imp["placement"] = json!(code);
                        journey.push(imp);
                    }
                    let act_at = t + Duration::minutes(200);
                    let action = *rng.pick(&["like", "pass", "click", "click"]);
                    let mut act = person.event(&mut rng, "tinder_card", act_at);
                    act["action"] = json!(action);
                    act["placement"] = json!(code);
                    journey.push(act);
                    if action == "click" {
                        last_placement = Some(code);
                        last_placement_channel = way.0;
                        let view_at = act_at + Duration::seconds(3 + rng.below(20) as i64);
                        journey.push(landing_view(
                            campaign,
                            &mut rng,
                            &person,
                            way.0,
                            Some(code),
                            view_at,
                        ));
                    }
                    t = act_at;
                }
                "display" => {
                    let code = *rng.pick(&placements);
                    last_placement = Some(code);
                    last_placement_channel = way.0;
                    journey.push(landing_view(
                        campaign,
                        &mut rng,
                        &person,
                        way.0,
                        Some(code),
                        t,
                    ));
                }
                other => journey.push(landing_view(campaign, &mut rng, &person, other, None, t)),
            }
            labels.resize(journey.len(), way.0);
            // The next touch: minutes to days later, within the campaign.
            let gap = match rng.below(3) {
                0 => Duration::minutes(45 + rng.below(180) as i64),
                1 => Duration::hours(6 + rng.below(48) as i64),
                _ => Duration::days(1 + rng.below(9) as i64),
            };
            t += gap;
            // A touch may spread over 3 h 40 (card impressions, then the action):
            // it must end inside the campaign.
            if t >= end - Duration::hours(5) {
                break;
            }
        }
        if !bot && rng.chance(convert_chance.min(0.9)) {
            let at = (t - Duration::minutes(30) + Duration::minutes(rng.below(90) as i64))
                .min(end - Duration::minutes(5));
            let mut signup = person.event(&mut rng, "signup", at);
            signup["email"] = json!(format!("personne.{i}@exemple.fr"));
            signup["consents"] = json!({"results": true, "newsletter": rng.chance(0.4)});
            if let Some(code) = last_placement {
                signup["placement"] = json!(code);
            }
            journey.push(signup.clone());
            labels.push(if last_placement.is_some() {
                last_placement_channel
            } else {
                "site"
            });
            if rng.chance(0.05) {
                // A repeat sign-up, another day: counted apart, never credited twice.
                let mut again = person.event(
                    &mut rng,
                    "signup",
                    (at + Duration::days(1)).min(end - Duration::minutes(1)),
                );
                again["email"] = signup["email"].clone();
                again["consents"] = json!({"results": true, "newsletter": false});
                journey.push(again);
                labels.push("site");
            }
        } else if bot && rng.chance(0.3) {
            let mut signup = person.event(&mut rng, "signup", t.min(end - Duration::minutes(5)));
            signup["email"] = json!(format!("bot.{i}@exemple.fr"));
            signup["consents"] = json!({"results": true, "newsletter": false});
            journey.push(signup);
            labels.push("site");
        }
        out.record(&mut rng, cfg, &person, bot, journey, labels);
    }
    if cfg.organic_days > 0 {
        organic(campaign, cfg, &mut rng, &mut out, start, end);
    }
    out
}

/// Traffic the campaign did not bring: people who come by themselves
/// (directly, from social networks, from links), about one for every 400
/// simulated people a day, from `organic_days` before the first phase to
/// the end — the days an uplift is measured against.
fn organic(
    campaign: &Campaign,
    cfg: &SimConfig,
    rng: &mut Rng,
    out: &mut Simulated,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) {
    let per_day = (cfg.people as f64 / 400.0).max(1.0);
    let from = start - Duration::days(i64::from(cfg.organic_days));
    let mut number = cfg.first_person + cfg.people;
    for day in 0..(end - from).num_days() {
        let arrivals = (per_day * (0.6 + 0.8 * rng.unit())).round() as usize;
        for _ in 0..arrivals {
            let at = from + Duration::days(day) + Duration::seconds(rng.below(86_400) as i64);
            if at >= end - Duration::hours(1) {
                return;
            }
            let person = Person {
                vid: format!("v_sim_{:08}_{:04x}", number, rng.below(0xffff)),
                ua: HUMAN_UAS[rng.below(HUMAN_UAS.len() as u64) as usize],
            };
            let channel = *rng.pick(&["site", "site", "social", "referral"]);
            let mut journey = vec![landing_view(campaign, rng, &person, channel, None, at)];
            let mut labels = vec![channel];
            if rng.chance(0.06) {
                let signed_at = at + Duration::minutes(2 + rng.below(30) as i64);
                let mut signup = person.event(rng, "signup", signed_at);
                signup["email"] = json!(format!("personne.{number}@exemple.fr"));
                signup["consents"] = json!({"results": true, "newsletter": rng.chance(0.4)});
                journey.push(signup);
                labels.push("site");
            }
            out.record(rng, cfg, &person, false, journey, labels);
            number += 1;
        }
    }
}

impl Simulated {
    /// A person's events, sent (a retry and a malformed event mixed in now
    /// and then) and kept as the truth.
    fn record(
        &mut self,
        rng: &mut Rng,
        cfg: &SimConfig,
        person: &Person,
        bot: bool,
        journey: Vec<Value>,
        labels: Vec<&'static str>,
    ) {
        for (e, channel) in journey.into_iter().zip(labels) {
            self.valid_events += 1;
            self.truth.push(Truth {
                event_id: e["event_id"]
                    .as_str()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or_default(),
                visitor: person.vid.clone(),
                ts: e["ts"]
                    .as_str()
                    .and_then(|x| DateTime::parse_from_rfc3339(x).ok())
                    .map_or(DateTime::UNIX_EPOCH, |x| x.with_timezone(&Utc)),
                event_type: e["type"].as_str().unwrap_or_default().to_owned(),
                action: e["action"].as_str().map(str::to_owned),
                channel,
                bot,
                contact: e["email"].as_str().map(str::to_owned),
                placement: e["placement"].as_str().map(str::to_owned),
                device: device_of(person.ua),
            });
            if rng.chance(cfg.retry_share) {
                self.retries += 1;
                self.events.push(e.clone());
            }
            self.events.push(e);
            if rng.below(1000) < u64::from(cfg.malformed_per_mille) {
                self.malformed += 1;
                self.events
                    .push(json!({"visitor_id": person.vid, "ts": "not-a-time"}));
            }
        }
    }
}

/// Sends `events` to a collector's `/v1/import` in batches, resending a
/// batch (same events, same ids) on 503 / 429 / a broken connection.
/// Returns (accepted, rejected by reason).
pub async fn send_import(
    collector: &str,
    token: &str,
    events: &[Value],
    batch: usize,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<(u64, std::collections::BTreeMap<String, u64>)> {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/import", collector.trim_end_matches('/'));
    let mut accepted = 0;
    let mut rejected = std::collections::BTreeMap::new();
    let mut sent = 0;
    for chunk in events.chunks(batch.max(1)) {
        let body = json!({ "batch": chunk }).to_string();
        let mut wait = std::time::Duration::from_millis(500);
        let answer: Value = loop {
            let r = client
                .post(&url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() || r.status().as_u16() == 400 => {
                    break r.json().await?
                }
                Ok(r) if matches!(r.status().as_u16(), 429 | 503) => {
                    eprintln!(
                        "[sim] collector answered {}; resending the same events in {wait:?}",
                        r.status()
                    );
                }
                Ok(r) => anyhow::bail!(
                    "collector answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(e) => eprintln!("[sim] {e}; resending in {wait:?}"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(10));
        };
        accepted += answer["accepted"].as_u64().unwrap_or(0);
        for r in answer["rejected"].as_array().into_iter().flatten() {
            *rejected
                .entry(r["reason"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        sent += chunk.len();
        progress(sent);
    }
    Ok((accepted, rejected))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn campaign() -> Campaign {
        Campaign::load(&crate::campaign_file()).unwrap()
    }

    #[test]
    fn same_seed_same_campaign_and_every_valid_event_validates() {
        let c = campaign();
        let cfg = SimConfig {
            people: 3_000,
            ..SimConfig::default()
        };
        let a = simulate(&c, &cfg);
        let b = simulate(&c, &cfg);
        assert_eq!(a.events, b.events);
        assert_ne!(a.events, simulate(&c, &SimConfig { seed: 7, ..cfg }).events);
        let mut valid = 0;
        let mut ids = std::collections::BTreeSet::new();
        for e in &a.events {
            if let Ok(v) = ensemble_core::event::validate(e) {
                valid += 1;
                ids.insert(v.event_id.unwrap());
                let ts = v.ts.unwrap();
                assert!(
                    c.phases[0].starts_at <= ts && ts < c.phases[2].ends_at,
                    "{e}"
                );
            }
        }
        assert_eq!(valid, a.valid_events + a.retries);
        assert_eq!(
            ids.len(),
            a.valid_events,
            "a retry resends the same event id"
        );
        assert_eq!(a.events.len(), a.valid_events + a.retries + a.malformed);
        let types = |t: &str| a.events.iter().filter(|e| e["type"] == t).count();
        for t in ["qr_scan", "page_view", "tinder_card", "signup"] {
            assert!(types(t) > 10, "{t}: {}", types(t));
        }
    }

    /// The organic traffic starts `organic_days` before the first phase,
    /// goes on through the campaign, is valid and adds to the same people.
    #[test]
    fn organic_traffic_comes_before_and_during_the_campaign() {
        let c = campaign();
        let cfg = SimConfig {
            people: 4_000,
            ..SimConfig::default()
        };
        let plain = simulate(&c, &cfg);
        let with = simulate(
            &c,
            &SimConfig {
                organic_days: 14,
                ..cfg
            },
        );
        // The campaign's own people are unchanged (same draws).
        assert_eq!(with.truth[..plain.truth.len()], plain.truth[..]);
        let organic = &with.truth[plain.truth.len()..];
        let start = c.phases[0].starts_at;
        let before = organic.iter().filter(|t| t.ts < start).count();
        let during = organic.len() - before;
        // About 10 a day (4 000 / 400) for 14 days before and 59 during.
        assert!((90..=190).contains(&before), "{before} before");
        assert!(during > 3 * before, "{during} during");
        assert!(organic
            .iter()
            .all(|t| t.ts >= start - Duration::days(14) && t.ts < c.phases[2].ends_at));
        assert!(organic.iter().any(|t| t.event_type == "signup"));
        assert!(organic.iter().all(|t| t.placement.is_none() && !t.bot));
        for e in &with.events[plain.events.len()..] {
            if e.get("ts") != Some(&json!("not-a-time")) {
                ensemble_core::event::validate(e).unwrap();
            }
        }
    }
}
