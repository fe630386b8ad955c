//! The agency's reach report: what the media bought — the
//! campaign file's audience estimate and media cost of each placement —
//! against what was measured, per placement and per channel. Every formula
//! is here once (docs/attribution.md "Reach report" writes them out):
//!
//! - the **part** of the campaign a question covers: its share of the
//!   campaign's time (first phase's start to last phase's end; a phase
//!   filter keeps that phase's time). The campaign file gives audience and
//!   cost for the whole campaign, so a question on part of it gets that
//!   part of both: `audience = audience_estimate × share`, `cost =
//!   media_cost × share`;
//! - scans per 1 000 audience = `scans ÷ audience × 1 000`;
//! - cost per scan = `cost ÷ scans`;
//! - CPM (cost per 1 000 audience) = `cost ÷ audience × 1 000`;
//! - cost per reached visitor = `cost ÷ reached visitors`;
//! - cost per sign-up = `cost ÷ sign-ups`.
//!
//! A ratio without its numerator's or denominator's value (no estimate, no
//! cost, nothing measured, a share of 0) is `None` — "—" on the page, an
//! empty CSV cell — never a division by zero. A channel's audience and cost
//! are the sums over its placements that have one (`None` if none has).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Campaign;

/// What the campaign file says was bought.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bought {
    pub audience_estimate: Option<u64>,
    pub media_cost_eur: Option<f64>,
}

/// What the figures measured over the question.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// Card impressions and passes (`rules::is_exposure`); `None` where the
    /// placement or channel has none (posters: exposure is not measured).
    pub exposures: Option<u64>,
    /// QR scans and card clicks (`rules::is_scan`).
    pub scans: u64,
    /// Distinct visitors with any event of the placement (or channel).
    pub reached_visitors: u64,
    /// Distinct contacts whose sign-up carried the placement (or channel).
    pub signups: u64,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// The question's part of the campaign's audience and cost.
    pub audience: Option<f64>,
    pub media_cost_eur: Option<f64>,
    pub exposures: Option<u64>,
    pub scans: u64,
    pub reached_visitors: u64,
    pub signups: u64,
    pub scans_per_1000_audience: Option<f64>,
    pub cost_per_scan_eur: Option<f64>,
    pub cpm_eur: Option<f64>,
    pub cost_per_reached_visitor_eur: Option<f64>,
    pub cost_per_signup_eur: Option<f64>,
}

/// `a ÷ b`, `None` without either or when `b` is 0.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn some_count(n: u64) -> Option<f64> {
    (n > 0).then_some(n as f64)
}

/// `cost ÷ n` (cost per sign-up, per scan, …): `None` without a cost or
/// when `n` is 0.
pub fn cost_per(cost: Option<f64>, n: u64) -> Option<f64> {
    ratio(cost, some_count(n))
}

/// The media cost of a question covering `share` of the campaign's time:
/// what every cost per … of the dashboard divides (the reach report, and
/// the channels' and placements' cost per sign-up).
pub fn cost_in(media_cost_eur: Option<f64>, share: f64) -> Option<f64> {
    media_cost_eur.map(|c| c * share)
}

/// The line of a placement or channel covering `share` of the campaign.
pub fn line(bought: Bought, share: f64, m: Measured) -> Line {
    let audience = bought
        .audience_estimate
        .map(|a| a as f64 * share)
        .filter(|a| *a > 0.0);
    let cost = cost_in(bought.media_cost_eur, share);
    Line {
        audience,
        media_cost_eur: cost,
        exposures: m.exposures,
        scans: m.scans,
        reached_visitors: m.reached_visitors,
        signups: m.signups,
        scans_per_1000_audience: ratio(Some(m.scans as f64), audience).map(|r| r * 1000.0),
        cost_per_scan_eur: cost_per(cost, m.scans),
        cpm_eur: ratio(cost, audience).map(|r| r * 1000.0),
        cost_per_reached_visitor_eur: cost_per(cost, m.reached_visitors),
        cost_per_signup_eur: cost_per(cost, m.signups),
    }
}

/// What was bought for a channel: the sums over its placements that have
/// an estimate (a cost).
pub fn channel_bought(campaign: &Campaign, channel: &str) -> Bought {
    let placements = campaign.placements.iter().filter(|p| p.channel == channel);
    let audiences: Vec<u64> = placements
        .clone()
        .filter_map(|p| p.audience_estimate)
        .collect();
    let costs: Vec<f64> = placements.filter_map(|p| p.media_cost_eur).collect();
    Bought {
        audience_estimate: (!audiences.is_empty()).then(|| audiences.iter().sum()),
        media_cost_eur: (!costs.is_empty()).then(|| costs.iter().sum()),
    }
}

/// The share of the campaign's time (first phase's start to last phase's
/// end) inside `[from, to)` and, with `phase`, inside that phase too.
pub fn share(
    campaign: &Campaign,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    phase: Option<&str>,
) -> f64 {
    let (Some(start), Some(end)) = (
        campaign.phases.iter().map(|p| p.starts_at).min(),
        campaign.phases.iter().map(|p| p.ends_at).max(),
    ) else {
        return 0.0;
    };
    let whole = (end - start).num_milliseconds() as f64;
    let (mut a, mut b) = (from.max(start), to.min(end));
    if let Some(id) = phase {
        match campaign.phases.iter().find(|p| p.id == id) {
            Some(p) => (a, b) = (a.max(p.starts_at), b.min(p.ends_at)),
            // Outside every phase: the campaign bought nothing there.
            None => return 0.0,
        }
    }
    if whole <= 0.0 || b <= a {
        return 0.0;
    }
    (b - a).num_milliseconds() as f64 / whole
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign() -> Campaign {
        Campaign::from_toml(include_str!("../../deploy/campaign.toml")).expect("campaign")
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn the_formulas_worked_by_hand() {
        let l = line(
            Bought {
                audience_estimate: Some(2_000_000),
                media_cost_eur: Some(30_000.0),
            },
            0.5,
            Measured {
                exposures: None,
                scans: 500,
                reached_visitors: 400,
                signups: 20,
            },
        );
        assert!(close(l.audience, 1_000_000.0) && close(l.media_cost_eur, 15_000.0));
        assert!(close(l.scans_per_1000_audience, 0.5));
        assert!(close(l.cost_per_scan_eur, 30.0));
        assert!(close(l.cpm_eur, 15.0));
        assert!(close(l.cost_per_reached_visitor_eur, 37.5));
        assert!(close(l.cost_per_signup_eur, 750.0));
    }

    #[test]
    fn nothing_to_divide_is_none_never_infinite() {
        let none = line(Bought::default(), 1.0, Measured::default());
        assert_eq!(
            (
                none.audience,
                none.media_cost_eur,
                none.cpm_eur,
                none.cost_per_signup_eur
            ),
            (None, None, None, None)
        );
        let no_scans = line(
            Bought {
                audience_estimate: Some(1000),
                media_cost_eur: Some(10.0),
            },
            1.0,
            Measured::default(),
        );
        assert_eq!(no_scans.cost_per_scan_eur, None);
        assert_eq!(no_scans.cost_per_signup_eur, None);
        assert!(close(no_scans.scans_per_1000_audience, 0.0));
        let outside = line(
            Bought {
                audience_estimate: Some(1000),
                media_cost_eur: Some(10.0),
            },
            0.0,
            Measured {
                scans: 3,
                ..Measured::default()
            },
        );
        assert_eq!(
            (
                outside.audience,
                outside.cpm_eur,
                outside.scans_per_1000_audience
            ),
            (None, None, None)
        );
        assert!(close(outside.cost_per_scan_eur, 0.0));
    }

    #[test]
    fn shares_of_the_campaign() {
        let c = campaign();
        let start = c.phases.iter().map(|p| p.starts_at).min().expect("phases");
        let end = c.phases.iter().map(|p| p.ends_at).max().expect("phases");
        assert!((share(&c, start, end, None) - 1.0).abs() < 1e-12);
        let sum: f64 = c
            .phases
            .iter()
            .map(|p| share(&c, start, end, Some(&p.id)))
            .sum();
        let covered: i64 = c
            .phases
            .iter()
            .map(|p| (p.ends_at - p.starts_at).num_milliseconds())
            .sum();
        assert!((sum - covered as f64 / (end - start).num_milliseconds() as f64).abs() < 1e-12);
        assert_eq!(share(&c, start, end, Some("hors-phase")), 0.0);
        assert_eq!(share(&c, end, end + chrono::Duration::days(3), None), 0.0);
        let half = start + (end - start) / 2;
        assert!((share(&c, start - chrono::Duration::days(100), half, None) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_channel_bought_what_its_placements_did() {
        let c = campaign();
        let metro = channel_bought(&c, "metro");
        let want: u64 = c
            .placements
            .iter()
            .filter(|p| p.channel == "metro")
            .filter_map(|p| p.audience_estimate)
            .sum();
        assert_eq!(metro.audience_estimate, Some(want));
        assert!(want > 0);
        assert_eq!(channel_bought(&c, "social"), Bought::default());
    }
}
