//! Ground truth of a simulated campaign, computed from what the simulator
//! meant (each event's intended channel, bot or not, contact) with the rules
//! of DESIGN §2 written out again here — not with the product's code — so
//! the end-to-end test compares two independent computations.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::sim::Truth;

/// The campaign calendar as plain data: (phase id, first local day, last local day).
#[derive(Debug, Clone)]
pub struct Calendar {
    pub zone: Tz,
    pub phases: Vec<(String, NaiveDate, NaiveDate)>,
}

impl Calendar {
    pub fn phase(&self, ts: DateTime<Utc>) -> String {
        let day = ts.with_timezone(&self.zone).date_naive();
        self.phases
            .iter()
            .find(|(_, a, b)| *a <= day && day <= *b)
            .map_or_else(|| "hors-phase".to_owned(), |(id, _, _)| id.clone())
    }
}

#[derive(Debug, Clone, Default)]
pub struct GroundTruth {
    /// Distinct human visitors with at least one event.
    pub visitors: u64,
    /// Distinct human contacts who signed up.
    pub signups: u64,
    /// Visit-level touches per (channel, phase of the touch).
    pub touches: BTreeMap<(String, String), u64>,
    /// model → channel → credited sign-ups.
    pub credits: BTreeMap<&'static str, BTreeMap<String, f64>>,
    pub conversions: u64,
    /// Conversion paths over the campaign's days (docs/attribution.md "Conversion paths").
    pub paths: BTreeMap<String, PathTruth>,
    /// channel → credit under the data-driven models, over `paths`.
    pub markov: BTreeMap<String, f64>,
    pub shapley: BTreeMap<String, f64>,
    /// Scans (QR scans, card clicks) over the campaign's days by local
    /// (ISO weekday, hour), and how many of them lie within 2 s of an hour
    /// (where a server's own clock may put them in the next or previous).
    pub scan_hours: BTreeMap<(u32, u32), u64>,
    pub scans_near_an_hour: u64,
    /// Scans over the campaign's days per placement code.
    pub scans_by_placement: BTreeMap<String, u64>,
    /// (channel or `*`, device class, OS family) → (visitors with an event
    /// of the channel from that device over the campaign's days, of them
    /// those with a sign-up in those days).
    pub devices: BTreeMap<(String, String, String), (u64, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathTruth {
    pub conversions: u64,
    pub without_signup: u64,
    /// Milliseconds from the path's first touch to each sign-up (not for `direct`).
    pub delays_ms: Vec<i64>,
}

/// A path as docs/attribution.md writes it: channels joined by ` > `, a repeat
/// once, at most the last 12 behind `…`.
fn path_text(channels: &[&str]) -> String {
    let mut steps: Vec<&str> = Vec::new();
    for c in channels {
        if steps.last() != Some(c) {
            steps.push(c);
        }
    }
    if steps.len() > 12 {
        steps = std::iter::once("…")
            .chain(steps[steps.len() - 12..].iter().copied())
            .collect();
    }
    steps.join(" > ")
}

/// A touch: (time of its first event, that event's id, channel).
type TouchAt<'a> = (DateTime<Utc>, uuid::Uuid, &'a str);

const NOT_TOUCH_CHANNELS: [&str; 2] = ["site", "inconnu"];
const GAP_MINUTES: i64 = 30;
const LOOKBACK_DAYS: i64 = 30;
const HALF_LIFE_DAYS: f64 = 7.0;

fn is_touch_event(e: &Truth) -> bool {
    let exposure =
        e.event_type == "tinder_card" && matches!(e.action.as_deref(), Some("impression" | "pass"));
    !exposure && !NOT_TOUCH_CHANNELS.contains(&e.channel)
}

/// The events that start a touch (DESIGN §2's gap rule), in time order.
fn touch_starts<'a>(events: &[&'a Truth]) -> Vec<&'a Truth> {
    let mut evs: Vec<&Truth> = events
        .iter()
        .copied()
        .filter(|e| is_touch_event(e))
        .collect();
    evs.sort_by_key(|e| (e.ts, e.event_id));
    let mut previous: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    let mut starts = Vec::new();
    for e in evs {
        let continues = previous
            .get(e.channel)
            .is_some_and(|p| e.ts - *p < Duration::minutes(GAP_MINUTES));
        if !continues {
            starts.push(e);
        }
        previous.insert(e.channel, e.ts);
    }
    starts
}

/// Everything the dashboard is checked against (bots left out, as by default).
pub fn compute(events: &[Truth], calendar: &Calendar) -> GroundTruth {
    let humans: Vec<&Truth> = events.iter().filter(|e| !e.bot).collect();
    let mut g = GroundTruth {
        visitors: humans
            .iter()
            .map(|e| e.visitor.as_str())
            .collect::<BTreeSet<_>>()
            .len() as u64,
        signups: humans
            .iter()
            .filter(|e| e.event_type == "signup")
            .filter_map(|e| e.contact.as_deref())
            .collect::<BTreeSet<_>>()
            .len() as u64,
        ..Default::default()
    };

    // Touches of each visitor: (time, event id, channel).
    let mut by_visitor: BTreeMap<&str, Vec<&Truth>> = BTreeMap::new();
    for e in &humans {
        by_visitor.entry(e.visitor.as_str()).or_default().push(e);
    }
    let mut touches_of: BTreeMap<&str, Vec<TouchAt<'_>>> = BTreeMap::new();
    for (visitor, evs) in &by_visitor {
        let mut list = Vec::new();
        for e in touch_starts(evs) {
            list.push((e.ts, e.event_id, e.channel));
            *g.touches
                .entry((e.channel.to_owned(), calendar.phase(e.ts)))
                .or_default() += 1;
        }
        list.sort();
        touches_of.insert(visitor, list);
    }

    // Conversions: the first sign-up of each contact.
    let mut first: BTreeMap<&str, &Truth> = BTreeMap::new();
    for e in humans.iter().filter(|e| e.event_type == "signup") {
        let Some(contact) = e.contact.as_deref() else {
            continue;
        };
        let keep = first
            .get(contact)
            .is_none_or(|f| (e.ts, e.event_id) < (f.ts, f.event_id));
        if keep {
            first.insert(contact, e);
        }
    }
    let models = [
        "first_touch",
        "last_touch",
        "linear",
        "time_decay",
        "position_based",
    ];
    // Paths: see below, visitor by visitor.
    let first_day = calendar.phases.iter().map(|p| p.1).min();
    let last_day = calendar.phases.iter().map(|p| p.2).max();
    let in_days = |e: &Truth| {
        let d = e.ts.with_timezone(&calendar.zone).date_naive();
        first_day.is_some_and(|f| d >= f) && last_day.is_some_and(|l| d <= l)
    };
    for e in humans.iter().filter(|e| in_days(e)) {
        let scan = e.event_type == "qr_scan"
            || (e.event_type == "tinder_card" && e.action.as_deref() == Some("click"));
        if scan {
            use chrono::{Datelike, Timelike};
            let local = e.ts.with_timezone(&calendar.zone);
            *g.scan_hours
                .entry((local.weekday().number_from_monday(), local.hour()))
                .or_default() += 1;
            if let Some(code) = &e.placement {
                *g.scans_by_placement.entry(code.clone()).or_default() += 1;
            }
            let into_hour = e.ts.timestamp_millis().rem_euclid(3_600_000);
            if !(2_000..=3_598_000).contains(&into_hour) {
                g.scans_near_an_hour += 1;
            }
        }
    }
    for evs in by_visitor.values() {
        let inside: Vec<&Truth> = evs.iter().copied().filter(|e| in_days(e)).collect();
        let signed = inside.iter().any(|e| e.event_type == "signup");
        let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
        for e in &inside {
            for c in ["*", e.channel] {
                seen.insert((c.to_owned(), e.device.0.to_owned(), e.device.1.to_owned()));
            }
        }
        for key in seen {
            let n = g.devices.entry(key).or_default();
            n.0 += 1;
            n.1 += u64::from(signed);
        }
        // A path without a sign-up: none for a visitor who signed up on or
        // before the last day; else the touches (gap rule over its events
        // up to the last day) of the 30 days ending at its last touch event
        // inside the days.
        let upto: Vec<&Truth> = evs
            .iter()
            .copied()
            .filter(|e| {
                let d = e.ts.with_timezone(&calendar.zone).date_naive();
                last_day.is_some_and(|l| d <= l)
            })
            .collect();
        if upto.iter().any(|e| e.event_type == "signup") {
            continue;
        }
        let Some(end) = inside
            .iter()
            .filter(|e| is_touch_event(e))
            .map(|e| e.ts)
            .max()
        else {
            continue;
        };
        let channels: Vec<&str> = touch_starts(&upto)
            .iter()
            .filter(|e| e.ts <= end && e.ts >= end - Duration::days(LOOKBACK_DAYS))
            .map(|e| e.channel)
            .collect();
        if !channels.is_empty() {
            g.paths
                .entry(path_text(&channels))
                .or_default()
                .without_signup += 1;
        }
    }
    for conv in first.values() {
        g.conversions += 1;
        let t = conv.ts;
        let window: Vec<_> = touches_of
            .get(conv.visitor.as_str())
            .map(|l| {
                l.iter()
                    .filter(|(ts, _, _)| *ts <= t && *ts >= t - Duration::days(LOOKBACK_DAYS))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let n = window.len();
        if first_day.is_some_and(|f| conv.ts.with_timezone(&calendar.zone).date_naive() >= f)
            && last_day.is_some_and(|l| conv.ts.with_timezone(&calendar.zone).date_naive() <= l)
        {
            let channels: Vec<&str> = window.iter().map(|(_, _, c)| *c).collect();
            match window.first() {
                Some((ts, _, _)) => {
                    let p = g.paths.entry(path_text(&channels)).or_default();
                    p.conversions += 1;
                    // Times as stored: whole milliseconds.
                    p.delays_ms
                        .push(t.timestamp_millis() - ts.timestamp_millis());
                }
                None => g.paths.entry("direct".into()).or_default().conversions += 1,
            }
        }
        for model in models {
            let credits = g.credits.entry(model).or_default();
            if n == 0 {
                *credits.entry("direct".into()).or_default() += 1.0;
                continue;
            }
            let weights: Vec<f64> = match model {
                "first_touch" => (0..n).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect(),
                "last_touch" => (0..n).map(|i| if i == n - 1 { 1.0 } else { 0.0 }).collect(),
                "linear" => vec![1.0 / n as f64; n],
                "time_decay" => {
                    let raw: Vec<f64> = window
                        .iter()
                        .map(|(ts, _, _)| {
                            let days = (t - *ts).num_milliseconds() as f64 / 86_400_000.0;
                            0.5f64.powf(days / HALF_LIFE_DAYS)
                        })
                        .collect();
                    let sum: f64 = raw.iter().sum();
                    raw.iter().map(|w| w / sum).collect()
                }
                _ => match n {
                    1 => vec![1.0],
                    2 => vec![0.5, 0.5],
                    _ => (0..n)
                        .map(|i| {
                            if i == 0 || i == n - 1 {
                                0.4
                            } else {
                                0.2 / (n - 2) as f64
                            }
                        })
                        .collect(),
                },
            };
            for ((_, _, channel), w) in window.iter().zip(weights) {
                if w > 0.0 {
                    *credits.entry((*channel).to_owned()).or_default() += w;
                }
            }
        }
    }
    g.markov = markov(&g.paths);
    g.shapley = shapley(&g.paths);
    g
}

/// The Markov removal effect (docs/attribution.md "Data-driven attribution"), here by
/// value iteration over the absorbing chain (the product solves the linear
/// system directly).
/// `direct` is not a state: it gets its own conversions, the channels
/// share the others.
fn markov(paths: &BTreeMap<String, PathTruth>) -> BTreeMap<String, f64> {
    const START: &str = "(start)";
    const CONV: &str = "(conversion)";
    const NULL: &str = "(null)";
    let direct = paths.get("direct").map_or(0, |p| p.conversions);
    let mut count: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for (path, p) in paths.iter().filter(|(path, _)| path.as_str() != "direct") {
        let steps: Vec<&str> = path.split(" > ").filter(|s| *s != "…").collect();
        let walk: Vec<&str> = std::iter::once(START)
            .chain(steps.iter().copied())
            .collect();
        let n = (p.conversions + p.without_signup) as f64;
        for pair in walk.windows(2) {
            *count.entry((pair[0], pair[1])).or_default() += n;
        }
        let last = walk[walk.len() - 1];
        *count.entry((last, CONV)).or_default() += p.conversions as f64;
        *count.entry((last, NULL)).or_default() += p.without_signup as f64;
    }
    let mut out_of: BTreeMap<&str, f64> = BTreeMap::new();
    for ((from, _), n) in &count {
        *out_of.entry(from).or_default() += n;
    }
    let reach = |removed: Option<&str>| -> f64 {
        let mut x: BTreeMap<&str, f64> = BTreeMap::new();
        for _ in 0..100_000 {
            let mut next: BTreeMap<&str, f64> = BTreeMap::new();
            for ((from, to), n) in &count {
                if Some(*from) == removed || Some(*to) == removed {
                    continue;
                }
                let value = match *to {
                    CONV => 1.0,
                    NULL => 0.0,
                    s => x.get(s).copied().unwrap_or(0.0),
                };
                *next.entry(from).or_default() += n / out_of[from] * value;
            }
            let change = next
                .iter()
                .map(|(k, v)| (v - x.get(k).copied().unwrap_or(0.0)).abs())
                .fold(0.0, f64::max);
            x = next;
            if change < 1e-15 {
                break;
            }
        }
        x.get(START).copied().unwrap_or(0.0)
    };
    let conversions: u64 = paths.values().map(|p| p.conversions).sum::<u64>() - direct;
    let channels: BTreeSet<&str> = count
        .keys()
        .flat_map(|(a, b)| [*a, *b])
        .filter(|s| ![START, CONV, NULL].contains(s))
        .collect();
    let base = reach(None);
    let effects: BTreeMap<&str, f64> = channels
        .iter()
        .map(|c| (*c, 1.0 - reach(Some(c)) / base))
        .collect();
    let total: f64 = effects.values().sum();
    effects
        .into_iter()
        .map(|(c, e)| (c.to_owned(), conversions as f64 * e / total))
        .chain((direct > 0).then(|| ("direct".to_owned(), direct as f64)))
        .collect()
}

/// The simplified Shapley value, by its closed form: each converting
/// channel set's conversions shared evenly among its channels.
fn shapley(paths: &BTreeMap<String, PathTruth>) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for (path, p) in paths {
        let set: BTreeSet<&str> = path.split(" > ").filter(|s| *s != "…").collect();
        for c in &set {
            *out.entry((*c).to_owned()).or_default() += p.conversions as f64 / set.len() as f64;
        }
    }
    out.retain(|_, v| *v > 0.0);
    out
}
