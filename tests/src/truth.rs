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
        let mut evs: Vec<&&Truth> = evs.iter().filter(|e| is_touch_event(e)).collect();
        evs.sort_by_key(|e| (e.ts, e.event_id));
        let mut previous: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        let mut list = Vec::new();
        for e in evs {
            let continues = previous
                .get(e.channel)
                .is_some_and(|p| e.ts - *p < Duration::minutes(GAP_MINUTES));
            if !continues {
                list.push((e.ts, e.event_id, e.channel));
                *g.touches
                    .entry((e.channel.to_owned(), calendar.phase(e.ts)))
                    .or_default() += 1;
            }
            previous.insert(e.channel, e.ts);
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
    g
}
