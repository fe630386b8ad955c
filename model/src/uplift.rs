//! Uplift per phase: did the daily figure (sign-ups, visits, visitors) rise
//! during a phase, against days without the campaign?
//!
//! - **The days compared** ([`plan`]): each phase's local days, against a
//!   baseline the analyst chooses — [`Baseline::Before`], the `N` days
//!   before the first phase, or [`Baseline::Between`], the days outside
//!   every phase between the first phase's start and the last one's end.
//!   Only days that hold data count: a day before the first event ever
//!   recorded is a day the collectors did not run, not a day with zero
//!   (`first_data`), and today and later are not over yet.
//! - **The estimate** ([`welch`]): the difference of the daily means
//!   (phase − baseline), with Welch's 95 % interval — the standard error
//!   `√(s²ₚ/nₚ + s²ᵦ/nᵦ)` times Student's t quantile at the
//!   Welch–Satterthwaite degrees of freedom. Each side needs two days; the
//!   extra total over the phase is that difference times the phase's days.
//!
//! What it assumes (the page's help says it in French and English): days
//! are independent draws around each period's mean — no trend and no
//! weekly rhythm that the two periods would hold in different proportions
//! (whole weeks on both sides are safest), and nothing else than the
//! campaign changed between the baseline and the phase (another campaign,
//! the season, the news). It measures a difference, not a cause.
//!
//! Checked in this file's tests: Student's quantiles against the printed
//! table, and the interval's coverage on simulated days.

use serde::Serialize;

use crate::campaign::Campaign;
use crate::figures::{day_of, day_start, Day};

/// The intervals' level.
pub const LEVEL: f64 = 0.95;
/// `baseline=before` without a length: four whole weeks.
pub const DEFAULT_BEFORE_DAYS: u32 = 28;
/// The longest `baseline=before` an analyst may ask for.
pub const MAX_BEFORE_DAYS: u32 = 180;

/// The days a phase is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// The `days` local days just before the first phase.
    Before { days: u32 },
    /// The days outside every phase, between the first and the last.
    Between,
}

/// Which days each side covers: complete days with data only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub baseline: Vec<Day>,
    /// Phase id → its days, in the campaign's order.
    pub phases: Vec<(String, Vec<Day>)>,
}

/// The first local day of the campaign's first phase.
pub fn first_day(campaign: &Campaign) -> Option<Day> {
    campaign
        .phases
        .first()
        .map(|p| day_of_instant(campaign, p.starts_at))
}

/// The days to read figures for (inclusive): from the baseline's first
/// candidate day to the last phase's last day. `None` without phases.
pub fn span(campaign: &Campaign, baseline: Baseline) -> Option<(Day, Day)> {
    let start = first_day(campaign)?;
    let last = campaign.phases.last()?;
    let end = day_of_instant(campaign, last.ends_at).saturating_sub(1);
    let from = match baseline {
        Baseline::Before { days } => start.saturating_sub(days),
        Baseline::Between => start,
    };
    Some((from, end.max(from)))
}

fn day_of_instant(campaign: &Campaign, t: chrono::DateTime<chrono::Utc>) -> Day {
    day_of(
        campaign,
        u64::try_from(t.timestamp_millis().max(0)).unwrap_or(0),
    )
}

/// The days each side covers. `first_data`: the first day with any event
/// recorded (`None`: none at all); `today`: the current local day (it and
/// later days are not over).
pub fn plan(campaign: &Campaign, baseline: Baseline, first_data: Option<Day>, today: Day) -> Plan {
    let mut phases: Vec<(String, Vec<Day>)> = campaign
        .phases
        .iter()
        .map(|p| (p.id.clone(), Vec::new()))
        .collect();
    let mut base = Vec::new();
    if let (Some((from, to)), Some(start)) = (span(campaign, baseline), first_day(campaign)) {
        let counted = |d: &Day| first_data.is_some_and(|f| *d >= f) && *d < today;
        // One pass: each day to its phase, else (outside every phase) to
        // the baseline when it is one of its days — before the first
        // phase for `before`, between phases for `between`.
        for d in (from..=to).filter(counted) {
            let phase = campaign.phase_at(day_start(campaign, d));
            match phases.iter_mut().find(|(id, _)| id == phase) {
                Some((_, days)) => days.push(d),
                None if d < start || baseline == Baseline::Between => base.push(d),
                None => {}
            }
        }
    }
    Plan {
        baseline: base,
        phases,
    }
}

/// A side's days summed up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub days: usize,
    pub mean: f64,
    /// The sample standard deviation (n − 1); 0 below two days.
    pub sd: f64,
}

impl Sample {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Self {
                days: 0,
                mean: 0.0,
                sd: 0.0,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = if n < 2 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        Self { days: n, mean, sd }
    }
}

/// A phase's uplift over the baseline, per day, with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Uplift {
    /// Phase mean − baseline mean.
    pub per_day: f64,
    pub low: f64,
    pub high: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
}

/// Why a phase has no interval: fewer than two days on a side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    NoBaselineDays,
    BaselineOneDay,
    PhaseNoDays,
    PhaseOneDay,
}

/// Welch's interval on `phase.mean − baseline.mean`, when each side has
/// two days. Two sides without any spread give a zero-width interval
/// (nothing in the data says how far the days could move).
pub fn welch(phase: &Sample, baseline: &Sample) -> Result<Uplift, Missing> {
    match (baseline.days, phase.days) {
        (0, _) => return Err(Missing::NoBaselineDays),
        (1, _) => return Err(Missing::BaselineOneDay),
        (_, 0) => return Err(Missing::PhaseNoDays),
        (_, 1) => return Err(Missing::PhaseOneDay),
        _ => {}
    }
    let per_day = phase.mean - baseline.mean;
    let (np, nb) = (phase.days as f64, baseline.days as f64);
    let (vp, vb) = (phase.sd.powi(2) / np, baseline.sd.powi(2) / nb);
    let se2 = vp + vb;
    let df = if se2 > 0.0 {
        se2.powi(2) / (vp.powi(2) / (np - 1.0) + vb.powi(2) / (nb - 1.0))
    } else {
        np + nb - 2.0
    };
    let half = t_quantile(0.5 + LEVEL / 2.0, df) * se2.sqrt();
    Ok(Uplift {
        per_day,
        low: per_day - half,
        high: per_day + half,
        df,
    })
}

/// Student's t quantile: the `t` with P(T ≤ t) = `p`, for `p` in (0.5, 1)
/// and `df` > 0 (not necessarily whole), by bisection on the distribution
/// function.
pub fn t_quantile(p: f64, df: f64) -> f64 {
    let tail = 1.0 - p;
    let mut hi = 1.0;
    while t_upper_tail(hi, df) > tail && hi < 1e12 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_upper_tail(mid, df) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-13 * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// P(T > t) for t ≥ 0: half the regularised incomplete beta function
/// I_{df/(df+t²)}(df/2, 1/2).
fn t_upper_tail(t: f64, df: f64) -> f64 {
    0.5 * incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
}

/// The regularised incomplete beta function Iₓ(a, b), by its continued
/// fraction (modified Lentz), on the side where it converges fast.
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0));
    let mut h = d;
    for m in 1..500 {
        let m = f64::from(m);
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 / guard(1.0 + even * d);
        c = guard(1.0 + even / c);
        h *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 / guard(1.0 + odd * d);
        c = guard(1.0 + odd / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine terms: ~15 digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let a = G[1..]
        .iter()
        .enumerate()
        .fold(G[0], |acc, (i, g)| acc + g / (x + i as f64 + 1.0));
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests;
