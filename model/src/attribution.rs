//! Attribution (DESIGN §2): visit-level touches from a visitor's events, and
//! each conversion's credit shared among its touches under five models —
//! first touch, last touch, linear, time decay and position based.
//!
//! Rules, as implemented:
//! - a touch is built from a visitor's events of one *touch* channel (the
//!   campaign file's `touch = true`); `tinder_card` impressions and passes are
//!   exposure and neither form nor extend a touch; an event less than
//!   `touch_gap` after the visitor's previous event of the same channel joins
//!   that touch; a touch is timed at its first event (ties broken by event id);
//! - a conversion is timed at its sign-up; the touches credited are those in
//!   `[T − lookback, T]`, ordered by time then event id; with none, the whole
//!   credit goes to `direct`;
//! - time decay weighs a touch `2^(−(T − t)/half_life)`, normalised;
//!   position based: 1 touch 100 %, 2 touches 50/50, n ≥ 3 touches `first` /
//!   `last` to the ends and `middle` split evenly over the others.

use std::collections::BTreeMap;

use crate::rules;

use crate::campaign::Attribution as Settings;
use crate::event::TinderAction;
use crate::Campaign;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Channel name given to conversions without any touch in the lookback.
pub const DIRECT: &str = "direct";

/// One event of a visitor, as far as attribution cares.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributionEvent {
    pub ts: DateTime<Utc>,
    pub event_id: Uuid,
    pub channel: String,
    pub action: Option<TinderAction>,
}

/// A visit-level touch.
#[derive(Debug, Clone, PartialEq)]
pub struct Touch {
    pub ts: DateTime<Utc>,
    pub event_id: Uuid,
    pub channel: String,
}

/// A conversion: the first sign-up of a contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    pub ts: DateTime<Utc>,
    pub event_id: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    FirstTouch,
    LastTouch,
    Linear,
    TimeDecay,
    PositionBased,
}

impl Model {
    pub const ALL: [Model; 5] = [
        Model::FirstTouch,
        Model::LastTouch,
        Model::Linear,
        Model::TimeDecay,
        Model::PositionBased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Model::FirstTouch => "first_touch",
            Model::LastTouch => "last_touch",
            Model::Linear => "linear",
            Model::TimeDecay => "time_decay",
            Model::PositionBased => "position_based",
        }
    }
}

/// Groups one visitor's events into touches (see the module rules).
pub fn touches(campaign: &Campaign, gap: Duration, events: &[AttributionEvent]) -> Vec<Touch> {
    let mut sorted: Vec<&AttributionEvent> = events
        .iter()
        .filter(|c| {
            // Only card events carry an action.
            let (event_type, action) = c
                .action
                .map_or(("", ""), |a| (rules::TINDER_CARD, a.as_str()));
            rules::is_touch_candidate(campaign, &c.channel, event_type, action)
        })
        .collect();
    sorted.sort_by_key(|x| (x.ts, x.event_id));
    touches_of(
        u64::try_from(gap.num_milliseconds()).unwrap_or(u64::MAX),
        sorted.iter().map(|c| {
            (
                u64::try_from(c.ts.timestamp_millis()).unwrap_or(0),
                c.event_id,
                c.channel.as_str(),
            )
        }),
    )
}

/// The touches of one visitor's touch candidates, given in (time, event
/// id) order as `(milliseconds, event id, channel)`: the gap rule
/// (`rules::touch_starts`), each touch timed at the event that starts it.
pub fn touches_of<'a>(
    gap_ms: u64,
    candidates: impl Iterator<Item = (u64, Uuid, &'a str)> + Clone,
) -> Vec<Touch> {
    let starts = rules::touch_starts(gap_ms, candidates.clone().map(|(ms, _, ch)| (ms, ch)));
    candidates
        .zip(starts)
        .filter(|(_, starts)| *starts)
        .map(|((ms, event_id, channel), _)| Touch {
            ts: DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
                .unwrap_or_default(),
            event_id,
            channel: channel.to_owned(),
        })
        .collect()
}

/// The touches of `all` that count for a conversion at `t`, in order.
pub fn in_window(all: &[Touch], t: DateTime<Utc>, lookback: Duration) -> Vec<&Touch> {
    all.iter()
        .filter(|x| x.ts <= t && x.ts >= t - lookback)
        .collect()
}

/// Weights of `n` ordered touches under `model` (summing to 1).
pub fn weights(model: Model, touches: &[&Touch], t: DateTime<Utc>, s: &Settings) -> Vec<f64> {
    let n = touches.len();
    if n == 0 {
        return Vec::new();
    }
    let mut w = vec![0.0; n];
    match model {
        Model::FirstTouch => w[0] = 1.0,
        Model::LastTouch => w[n - 1] = 1.0,
        Model::Linear => w.iter_mut().for_each(|x| *x = 1.0 / n as f64),
        Model::TimeDecay => {
            let half_life = s.half_life.num_milliseconds() as f64;
            for (x, touch) in w.iter_mut().zip(touches) {
                let age = (t - touch.ts).num_milliseconds() as f64;
                *x = (-age / half_life).exp2();
            }
            let sum: f64 = w.iter().sum();
            w.iter_mut().for_each(|x| *x /= sum);
        }
        Model::PositionBased => match n {
            1 => w[0] = 1.0,
            2 => {
                w[0] = 0.5;
                w[1] = 0.5;
            }
            _ => {
                let p = s.position_weights;
                w[0] = p.first;
                w[n - 1] = p.last;
                let each = p.middle / (n - 2) as f64;
                w[1..n - 1].iter_mut().for_each(|x| *x = each);
            }
        },
    }
    w
}

/// Credited sign-ups, by model, then by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Credits {
    /// model → channel → credit.
    pub by_channel: BTreeMap<&'static str, BTreeMap<String, f64>>,
    /// model → (channel, phase of the touch) → credit.
    pub by_channel_phase: BTreeMap<&'static str, BTreeMap<(String, String), f64>>,
    /// model → (phase of the conversion, channel) → credit.
    pub by_conversion_phase: BTreeMap<&'static str, BTreeMap<(String, String), f64>>,
    pub conversions: u64,
}

/// One share of a conversion's credit: under `model`, `credit` goes to
/// `channel` for a touch in `touch_phase`, for a conversion in
/// `conversion_phase`.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub model: &'static str,
    pub channel: String,
    pub touch_phase: String,
    pub conversion_phase: String,
    pub credit: f64,
}

/// The shares of one conversion under every model (see the module rules);
/// a touch weighted 0 gets no share.
pub fn shares(
    campaign: &Campaign,
    conversion: &Conversion,
    visitor_touches: &[Touch],
) -> Vec<Share> {
    let s = &campaign.attribution;
    let window = in_window(visitor_touches, conversion.ts, s.lookback);
    let conversion_phase = campaign.phase_at(conversion.ts).to_owned();
    let mut out = Vec::new();
    for model in Model::ALL {
        if window.is_empty() {
            out.push(Share {
                model: model.as_str(),
                channel: DIRECT.into(),
                touch_phase: conversion_phase.clone(),
                conversion_phase: conversion_phase.clone(),
                credit: 1.0,
            });
            continue;
        }
        for (touch, w) in window.iter().zip(weights(model, &window, conversion.ts, s)) {
            if w == 0.0 {
                // First / last touch: the other touches get nothing, and no row.
                continue;
            }
            out.push(Share {
                model: model.as_str(),
                channel: touch.channel.clone(),
                touch_phase: campaign.phase_at(touch.ts).to_owned(),
                conversion_phase: conversion_phase.clone(),
                credit: w,
            });
        }
    }
    out
}

impl Credits {
    /// Adds one conversion's credits under every model.
    pub fn add(&mut self, campaign: &Campaign, conversion: &Conversion, visitor_touches: &[Touch]) {
        self.conversions += 1;
        for share in shares(campaign, conversion, visitor_touches) {
            self.add_share(&share);
        }
    }

    /// Adds one share (`credit` may be negative: a correction).
    pub fn add_share(&mut self, s: &Share) {
        *self
            .by_channel
            .entry(s.model)
            .or_default()
            .entry(s.channel.clone())
            .or_default() += s.credit;
        *self
            .by_channel_phase
            .entry(s.model)
            .or_default()
            .entry((s.channel.clone(), s.touch_phase.clone()))
            .or_default() += s.credit;
        *self
            .by_conversion_phase
            .entry(s.model)
            .or_default()
            .entry((s.conversion_phase.clone(), s.channel.clone()))
            .or_default() += s.credit;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn campaign() -> Campaign {
        Campaign::from_toml(include_str!("../../deploy/campaign.toml")).unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn c(ts: &str, n: u128, channel: &str) -> AttributionEvent {
        AttributionEvent {
            ts: t(ts),
            event_id: id(n),
            channel: channel.into(),
            action: None,
        }
    }

    fn gap() -> Duration {
        Duration::minutes(30)
    }

    #[test]
    fn a_scan_and_the_page_view_it_leads_to_are_one_touch() {
        let cp = campaign();
        let got = touches(
            &cp,
            gap(),
            &[
                c("2025-01-20T10:00:00Z", 1, "metro"),
                c("2025-01-20T10:00:05Z", 2, "metro"),
                // 29:59 after the previous metro event: same touch, though 30:04 after its start.
                c("2025-01-20T10:30:04Z", 3, "metro"),
                // Exactly 30 min after the previous one: a new touch.
                c("2025-01-20T11:00:04Z", 4, "metro"),
            ],
        );
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].ts, got[0].event_id),
            (t("2025-01-20T10:00:00Z"), id(1))
        );
        assert_eq!(got[1].event_id, id(4));
    }

    #[test]
    fn other_channels_in_between_do_not_split_a_touch_and_non_touches_are_ignored() {
        let cp = campaign();
        let mut pass = c("2025-01-20T10:05:00Z", 3, "tinder");
        pass.action = Some(TinderAction::Pass);
        let mut like = c("2025-01-20T10:06:00Z", 4, "tinder");
        like.action = Some(TinderAction::Like);
        let got = touches(
            &cp,
            gap(),
            &[
                c("2025-01-20T10:00:00Z", 1, "presse"),
                c("2025-01-20T10:10:00Z", 2, "site"),
                pass,
                like,
                c("2025-01-20T10:20:00Z", 5, "presse"),
                c("2025-01-20T10:25:00Z", 6, "inconnu"),
            ],
        );
        let chans: Vec<_> = got
            .iter()
            .map(|x| (x.channel.as_str(), x.event_id))
            .collect();
        assert_eq!(chans, vec![("presse", id(1)), ("tinder", id(4))]);
    }

    #[test]
    fn touches_at_the_same_instant_are_ordered_by_event_id() {
        let cp = campaign();
        let got = touches(
            &cp,
            gap(),
            &[
                c("2025-01-20T10:00:00Z", 9, "gares"),
                c("2025-01-20T10:00:00Z", 2, "abribus"),
            ],
        );
        assert_eq!(got[0].channel, "abribus");
        assert_eq!(got[1].channel, "gares");
    }

    #[test]
    fn weights_by_hand() {
        let cp = campaign();
        let s = &cp.attribution;
        let tt = |ts: &str, n: u128| Touch {
            ts: t(ts),
            event_id: id(n),
            channel: "metro".into(),
        };
        let conv = t("2025-02-15T00:00:00Z");
        let four = [
            tt("2025-02-01T00:00:00Z", 1), // 14 days before: 2^-2 = 0.25
            tt("2025-02-08T00:00:00Z", 2), // 7 days: 0.5
            tt("2025-02-12T12:00:00Z", 3), // 2.5 days: 2^(-2.5/7)
            tt("2025-02-15T00:00:00Z", 4), // 0 days: 1
        ];
        let refs: Vec<&Touch> = four.iter().collect();
        assert_eq!(
            weights(Model::FirstTouch, &refs, conv, s),
            vec![1.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(
            weights(Model::LastTouch, &refs, conv, s),
            vec![0.0, 0.0, 0.0, 1.0]
        );
        assert_eq!(weights(Model::Linear, &refs, conv, s), vec![0.25; 4]);
        assert_eq!(
            weights(Model::PositionBased, &refs, conv, s),
            vec![0.4, 0.1, 0.1, 0.4]
        );
        let raw = [0.25, 0.5, 2f64.powf(-2.5 / 7.0), 1.0];
        let sum: f64 = raw.iter().sum();
        let decay = weights(Model::TimeDecay, &refs, conv, s);
        for (got, want) in decay.iter().zip(raw.iter().map(|r| r / sum)) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        assert_eq!(
            weights(Model::PositionBased, &refs[..2], conv, s),
            vec![0.5, 0.5]
        );
        assert_eq!(
            weights(Model::PositionBased, &refs[..1], conv, s),
            vec![1.0]
        );
        let three = weights(Model::PositionBased, &refs[..3], conv, s);
        assert!((three[1] - 0.2).abs() < 1e-12);
    }

    #[test]
    fn lookback_bounds_are_inclusive_and_no_touch_means_direct() {
        let cp = campaign();
        let conv = Conversion {
            ts: t("2025-02-20T12:00:00Z"),
            event_id: id(100),
        };
        let ts = |s: &str, n: u128, ch: &str| Touch {
            ts: t(s),
            event_id: id(n),
            channel: ch.into(),
        };
        let visitor = [
            ts("2025-01-21T11:59:59Z", 1, "presse"), // 30 days + 1 s before: out
            ts("2025-01-21T12:00:00Z", 2, "metro"),  // exactly 30 days: in
            ts("2025-02-20T12:00:00Z", 3, "tinder"), // at T: in
            ts("2025-02-20T12:00:01Z", 4, "gares"),  // after T: out
        ];
        let mut credits = Credits::default();
        credits.add(&cp, &conv, &visitor);
        let first = &credits.by_channel["first_touch"];
        assert_eq!(first.get("metro"), Some(&1.0));
        assert_eq!(first.get("presse"), None);
        assert_eq!(credits.by_channel["last_touch"].get("tinder"), Some(&1.0));
        assert_eq!(credits.by_channel["linear"]["metro"], 0.5);
        // Touch phases: metro in p1, tinder in p2; the conversion is in p2.
        assert_eq!(
            credits.by_channel_phase["linear"][&("metro".into(), "p1-lancement".into())],
            0.5
        );
        assert_eq!(
            credits.by_conversion_phase["linear"][&("p2-saint-valentin".into(), "metro".into())],
            0.5
        );

        let lonely = Conversion {
            ts: t("2025-03-05T09:00:00Z"),
            event_id: id(101),
        };
        credits.add(&cp, &lonely, &[]);
        for m in Model::ALL {
            assert_eq!(credits.by_channel[m.as_str()][DIRECT], 1.0, "{m:?}");
            let total: f64 = credits.by_channel[m.as_str()].values().sum();
            assert!(
                (total - 2.0).abs() < 1e-9,
                "credits sum to the conversions under {m:?}"
            );
        }
        assert_eq!(
            credits.by_conversion_phase["first_touch"][&("p3-8-mars".into(), DIRECT.into())],
            1.0
        );
    }
}
