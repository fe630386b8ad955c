//! The live tail of a simulated campaign: traffic that arrives now, through
//! the endpoints that stamp server time — QR scans and card clicks through
//! the redirect, landing-page views through the pixel — and sign-ups through
//! the events API the way the landing page's tracker sends them, against a
//! campaign calendar whose current phase includes today.
//!
//! What the simulator means by each event is recorded as [`Truth`]. For the
//! redirect and the pixel the server's clock decides the time, so the truth
//! notes the moment just before the request: it serves the phase (today is
//! days away from a phase boundary) and the order of a journey; a live
//! journey has one touch, so no credit depends on its exact time.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use ensemble_core::Campaign;
use serde_json::{json, Value};

use crate::sim::{device_of, Rng, Truth};

/// `campaign.toml`'s text with every phase moved by whole days so that
/// `today` is the 8th day of the last phase: the history lies in the past
/// and the live tail falls inside a phase.
pub fn live_campaign_toml(text: &str, today: NaiveDate) -> anyhow::Result<String> {
    let mut doc: toml::Table = text.parse()?;
    let phases = doc
        .get_mut("phases")
        .and_then(toml::Value::as_array_mut)
        .ok_or_else(|| anyhow::anyhow!("no [[phases]]"))?;
    let date = |v: &toml::Value| -> anyhow::Result<NaiveDate> {
        Ok(v.as_str()
            .ok_or_else(|| anyhow::anyhow!("phase date is not a string"))?
            .parse()?)
    };
    let last_start = date(
        phases
            .last()
            .and_then(|p| p.get("start"))
            .ok_or_else(|| anyhow::anyhow!("phase without start"))?,
    )?;
    let shift = (today - Duration::days(7)) - last_start;
    for p in phases.iter_mut() {
        let t = p
            .as_table_mut()
            .ok_or_else(|| anyhow::anyhow!("phase is not a table"))?;
        for key in ["start", "end"] {
            let moved = date(t.get(key).ok_or_else(|| anyhow::anyhow!("no {key}"))?)? + shift;
            t.insert(key.into(), toml::Value::String(moved.to_string()));
        }
    }
    Ok(toml::to_string(&doc)?)
}

/// `text` (a campaign file) under the id `id`, every phase moved by `days`
/// (a multiple of 7 keeps the weekdays: last year's campaign beside this
/// year's).
pub fn moved_campaign_toml(text: &str, days: i64, id: &str) -> anyhow::Result<String> {
    let mut doc: toml::Table = text.parse()?;
    let section = doc
        .get_mut("campaign")
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| anyhow::anyhow!("no [campaign]"))?;
    section.insert("id".into(), toml::Value::String(id.to_owned()));
    let phases = doc
        .get_mut("phases")
        .and_then(toml::Value::as_array_mut)
        .ok_or_else(|| anyhow::anyhow!("no [[phases]]"))?;
    for p in phases.iter_mut() {
        let t = p
            .as_table_mut()
            .ok_or_else(|| anyhow::anyhow!("phase is not a table"))?;
        for key in ["start", "end"] {
            let d: NaiveDate = t
                .get(key)
                .and_then(toml::Value::as_str)
                .ok_or_else(|| anyhow::anyhow!("no {key}"))?
                .parse()?;
            t.insert(
                key.into(),
                toml::Value::String((d + Duration::days(days)).to_string()),
            );
        }
    }
    Ok(toml::to_string(&doc)?)
}

/// What the live tail sent: the events as meant, and the requests made.
#[derive(Debug, Default)]
pub struct LiveTail {
    pub truth: Vec<Truth>,
    pub redirects: u64,
    pub pixels: u64,
    pub signups: u64,
}

const UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const BOT_UA: &str = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)";

/// A channel id as the `&'static str` the truth carries.
fn channel_label(id: &str) -> &'static str {
    const IDS: [&str; 10] = [
        "metro", "gares", "abribus", "presse", "display", "tinder", "social", "referral", "site",
        "inconnu",
    ];
    IDS.iter().find(|c| **c == id).copied().unwrap_or("inconnu")
}

/// Sends the request `make` builds, again (the same request) on 503 / 429
/// / a broken connection, up to 20 times; the first other answer.
async fn send_retrying(
    make: impl Fn() -> reqwest::RequestBuilder,
) -> anyhow::Result<reqwest::Response> {
    for attempt in 0..20 {
        match make().send().await {
            Ok(r) if matches!(r.status().as_u16(), 429 | 503) => {}
            Ok(r) => return Ok(r),
            Err(e) if attempt == 19 => return Err(e.into()),
            Err(_) => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    anyhow::bail!("still refused after 20 attempts")
}

/// GET `url` as a phone at `ip`, retrying (see [`send_retrying`]).
async fn get_retrying(
    client: &reqwest::Client,
    url: &str,
    ua: &str,
    ip: &str,
) -> anyhow::Result<reqwest::Response> {
    send_retrying(|| {
        client
            .get(url)
            .header("user-agent", ua)
            .header("x-forwarded-for", ip)
    })
    .await
    .map_err(|e| e.context(url.to_owned()))
}

/// Sends `people` live journeys to the collector at `base` (which must trust
/// `X-Forwarded-For`: each simulated person has an address of their own, as
/// behind the landing page's proxy). `history` are visitors from the
/// imported history (id, contact) who come back today and sign up.
pub async fn send_live(
    base: &str,
    campaign: &Campaign,
    seed: u64,
    people: usize,
    history: &[(String, String)],
) -> anyhow::Result<LiveTail> {
    let base = base.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut rng = Rng::new(seed);
    let mut tail = LiveTail::default();
    let codes: Vec<(&str, &'static str)> = campaign
        .placements
        .iter()
        .filter(|p| matches!(p.channel.as_str(), "metro" | "gares" | "abribus" | "tinder"))
        .map(|p| (p.code.as_str(), channel_label(&p.channel)))
        .collect();
    for i in 0..people {
        let ip = format!("10.77.{}.{}", i / 250, 1 + i % 250);
        let bot = rng.chance(0.05);
        let ua = if bot { BOT_UA } else { UA };
        let (code, channel) = *rng.pick(&codes);
        // The scan (or card click): server time, a visitor id from the collector.
        let at = Utc::now();
        let r = get_retrying(&client, &format!("{base}/r/{code}"), ua, &ip).await?;
        anyhow::ensure!(r.status() == 302, "redirect answered {}", r.status());
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| url::Url::parse(v).ok())
            .ok_or_else(|| anyhow::anyhow!("redirect without a Location"))?;
        // The landing URL carries a visit token, not the bare visitor id:
        // the scanner's id is its first part, the collector honours it for
        // minutes.
        let token = location
            .query_pairs()
            .find(|(k, _)| k == "ens")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| anyhow::anyhow!("Location without a visit token: {location}"))?;
        let vid = token.split('.').next().unwrap_or_default().to_owned();
        // The landing page's own first-party id, before the token is honoured.
        let own = format!("v_{}", rng.uuid().simple());
        tail.redirects += 1;
        let card = channel == "tinder";
        tail.truth.push(Truth {
            event_id: uuid::Uuid::nil(),
            visitor: vid.clone(),
            ts: at,
            event_type: if card { "tinder_card" } else { "qr_scan" }.into(),
            action: card.then(|| "click".to_owned()),
            channel,
            bot,
            contact: None,
            placement: Some(code.to_owned()),
            device: device_of(ua),
        });
        // The landing page's view through the pixel, seconds later.
        if rng.chance(0.8) {
            let id = rng.uuid();
            let mut pixel = url::Url::parse(&format!("{base}/p.gif"))?;
            pixel
                .query_pairs_mut()
                .append_pair("type", "page_view")
                .append_pair("event_id", &id.to_string())
                .append_pair("vid", &own)
                .append_pair("ens", &token)
                .append_pair("url", location.as_str());
            let at = Utc::now();
            let r = get_retrying(&client, pixel.as_str(), ua, &ip).await?;
            anyhow::ensure!(r.status() == 200, "pixel answered {}", r.status());
            tail.pixels += 1;
            tail.truth.push(Truth {
                event_id: id,
                visitor: vid.clone(),
                ts: at,
                event_type: "page_view".into(),
                action: None,
                channel,
                bot,
                contact: None,
                placement: None,
                device: device_of(ua),
            });
        }
        // A sign-up from the page's tracker (client time), with the token:
        // the collector answers with the scanner's id and placement.
        if !bot && rng.chance(0.3) {
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            let contact = format!("live.{seed}.{i}@exemple.fr");
            let mut e = signup(&mut rng, &own, &contact, None);
            e["visit_token"] = json!(token);
            let answer = send_event(&client, base, &e, &ip).await?;
            anyhow::ensure!(
                answer["visitor_id"] == json!(vid) && answer["placement"] == json!(code),
                "the collector did not honour a fresh visit token: {answer}"
            );
            tail.signups += 1;
            tail.truth.push(truth_of(&e, &vid, channel, &contact));
        }
    }
    // Visitors from the history come back and sign up directly today.
    for (k, (vid, contact)) in history.iter().enumerate() {
        let ip = format!("10.78.{}.{}", k / 250, 1 + k % 250);
        let e = signup(&mut rng, vid, contact, None);
        send_event(&client, base, &e, &ip).await?;
        tail.signups += 1;
        tail.truth.push(truth_of(&e, vid, "site", contact));
    }
    Ok(tail)
}

fn signup(rng: &mut Rng, vid: &str, contact: &str, placement: Option<&str>) -> Value {
    let mut e = json!({
        "event_id": rng.uuid().to_string(),
        "type": "signup",
        "ts": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "visitor_id": vid,
        "email": contact,
        "consents": {"results": true, "newsletter": false},
    });
    if let Some(code) = placement {
        e["placement"] = json!(code);
    }
    e
}

fn truth_of(e: &Value, vid: &str, channel: &'static str, contact: &str) -> Truth {
    Truth {
        event_id: e["event_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default(),
        visitor: vid.to_owned(),
        ts: e["ts"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc)),
        event_type: "signup".into(),
        action: None,
        channel,
        bot: false,
        contact: Some(contact.to_owned()),
        placement: e["placement"].as_str().map(str::to_owned),
        device: device_of(UA),
    }
}

/// POST one event to `/v1/events`, resending it (same id) until it is in
/// Kafka; the collector's answer.
async fn send_event(
    client: &reqwest::Client,
    base: &str,
    e: &Value,
    ip: &str,
) -> anyhow::Result<Value> {
    let r = send_retrying(|| {
        client
            .post(format!("{base}/v1/events"))
            .header("user-agent", UA)
            .header("x-forwarded-for", ip)
            .json(e)
    })
    .await
    .map_err(|err| err.context(format!("the events API kept refusing {e}")))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    anyhow::ensure!(status == 200, "events API answered {status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_live_calendar_puts_today_inside_the_last_phase() {
        let text = std::fs::read_to_string(crate::campaign_file()).unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let c = Campaign::from_toml(&live_campaign_toml(&text, today).unwrap()).unwrap();
        let last = c.phases.last().unwrap();
        assert_eq!(
            last.start_date,
            NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
        );
        assert!(last.start_date <= today && today <= last.end_date);
        let orig = Campaign::from_toml(&text).unwrap();
        for (a, b) in orig.phases.iter().zip(&c.phases) {
            assert_eq!(
                b.start_date - a.start_date,
                last.start_date - orig.phases[2].start_date
            );
            assert_eq!(b.end_date - b.start_date, a.end_date - a.start_date);
        }
        assert_eq!(c.placements.len(), orig.placements.len());
    }
}
