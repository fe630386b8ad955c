//! Uplift: Student's quantiles against the printed table and scipy, the
//! days each side covers, Welch against scipy, and the interval's coverage
//! on simulated days.
#![allow(clippy::unwrap_used)]

use chrono::NaiveDate;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson};

use super::*;
use crate::figures::day_number;

const SHIPPED: &str = include_str!("../../../deploy/campaign.toml");

fn day(s: &str) -> Day {
    day_number(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
}

/// The 97.5 % quantiles of the printed t table (e.g. NIST/SEMATECH's
/// e-Handbook, table 1.3.6.7.2), to its four decimals; non-whole degrees
/// of freedom (Welch's) from scipy 1.17 `scipy.stats.t.ppf(0.975, df)`.
#[test]
fn t_quantiles_are_the_tables() {
    for (df, t) in [
        (1.0, 12.706),
        (2.0, 4.303),
        (3.0, 3.182),
        (5.0, 2.571),
        (10.0, 2.228),
        (30.0, 2.042),
        (100.0, 1.984),
    ] {
        let got = t_quantile(0.975, df);
        assert!((got - t).abs() < 5e-4, "df {df}: {got} against {t}");
    }
    assert!((t_quantile(0.975, 1e9) - 1.959_963_985).abs() < 1e-6);
    for (df, t) in [
        (1.5, 6.016_663_104_427_929),
        (7.3, 2.345_066_736_547_703),
        (41.87, 2.018_267_352_952_492_4),
    ] {
        let got = t_quantile(0.975, df);
        assert!((got - t).abs() < 1e-9, "df {df}: {got} against {t}");
    }
}

/// scipy 1.17: `ttest_ind(phase, base, equal_var=False)` gives df and
/// `.confidence_interval(0.95)` the bounds.
#[test]
fn welch_is_scipys() {
    let base = [3.0, 5.0, 4.0, 6.0, 2.0, 4.0, 5.0];
    let phase = [9.0, 12.0, 7.0, 15.0, 11.0];
    let u = welch(&Sample::of(&phase), &Sample::of(&base)).unwrap();
    assert!((u.per_day - (10.8 - 29.0 / 7.0)).abs() < 1e-12, "{u:?}");
    assert!((u.df - 5.135_305_889_384_732).abs() < 1e-9, "{u:?}");
    assert!((u.low - 2.962_661_721_214_079_3).abs() < 1e-9, "{u:?}");
    assert!((u.high - 10.351_623_993_071_636).abs() < 1e-9, "{u:?}");
    // Fewer than two days on a side: no interval, and which side; no
    // spread on either: zero width.
    assert_eq!(
        welch(&Sample::of(&[4.0]), &Sample::of(&base)),
        Err(Missing::PhaseOneDay)
    );
    assert_eq!(
        welch(&Sample::of(&[]), &Sample::of(&base)),
        Err(Missing::PhaseNoDays)
    );
    assert_eq!(
        welch(&Sample::of(&phase), &Sample::of(&[1.0])),
        Err(Missing::BaselineOneDay)
    );
    assert_eq!(
        welch(&Sample::of(&phase), &Sample::of(&[])),
        Err(Missing::NoBaselineDays)
    );
    let flat = welch(&Sample::of(&[2.0, 2.0]), &Sample::of(&[1.0, 1.0, 1.0])).unwrap();
    assert_eq!((flat.per_day, flat.low, flat.high), (1.0, 1.0, 1.0));
}

#[test]
fn the_days_each_side_covers() {
    let c = Campaign::from_toml(SHIPPED).unwrap();
    // Phases 2025-01-17..02-07, 02-08..02-28, 03-01..03-16, back to back.
    let later = day("2026-01-01");
    let p = plan(
        &c,
        Baseline::Before { days: 28 },
        Some(day("2025-01-01")),
        later,
    );
    // Data from 01-01 only: 16 days of the 28 asked.
    assert_eq!(
        p.baseline,
        (day("2025-01-01")..day("2025-01-17")).collect::<Vec<_>>()
    );
    let lengths: Vec<usize> = p.phases.iter().map(|(_, d)| d.len()).collect();
    assert_eq!(lengths, [22, 21, 16]);
    assert_eq!(p.phases[0].1[0], day("2025-01-17"));
    // Data long before: the 28 days; no data: nothing on any side.
    let p = plan(
        &c,
        Baseline::Before { days: 28 },
        Some(day("2024-06-01")),
        later,
    );
    assert_eq!(p.baseline.len(), 28);
    assert_eq!(p.baseline[0], day("2024-12-20"));
    let p = plan(&c, Baseline::Before { days: 28 }, None, later);
    assert!(p.baseline.is_empty() && p.phases.iter().all(|(_, d)| d.is_empty()));
    // Collectors started inside the first phase: its earlier days are no data.
    let p = plan(
        &c,
        Baseline::Before { days: 28 },
        Some(day("2025-01-20")),
        later,
    );
    assert!(p.baseline.is_empty());
    assert_eq!(p.phases[0].1.len(), 19);
    // A campaign still running: today and later are not over.
    let p = plan(
        &c,
        Baseline::Before { days: 7 },
        Some(day("2024-01-01")),
        day("2025-02-10"),
    );
    let lengths: Vec<usize> = p.phases.iter().map(|(_, d)| d.len()).collect();
    assert_eq!(lengths, [22, 2, 0]);
    // Back-to-back phases leave nothing between them.
    assert!(plan(&c, Baseline::Between, Some(day("2024-01-01")), later)
        .baseline
        .is_empty());
    // A gap of two days (02-08, 02-09) before phase 2.
    let gap = SHIPPED.replacen("start = \"2025-02-08\"", "start = \"2025-02-10\"", 1);
    let c = Campaign::from_toml(&gap).unwrap();
    let p = plan(&c, Baseline::Between, Some(day("2024-01-01")), later);
    assert_eq!(p.baseline, vec![day("2025-02-08"), day("2025-02-09")]);
    assert_eq!(p.phases[1].1.len(), 19);
    assert_eq!(
        span(&c, Baseline::Before { days: 3 }),
        Some((day("2025-01-14"), day("2025-03-16")))
    );
}

/// The share of simulated (phase, baseline) pairs whose interval holds the
/// true difference of the daily means.
fn coverage(
    runs: usize,
    seed: u64,
    mut draw: impl FnMut(&mut ChaCha8Rng) -> (Vec<f64>, Vec<f64>),
    truth: f64,
    z_only: bool,
) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut covered = 0;
    for _ in 0..runs {
        let (phase, base) = draw(&mut rng);
        let (p, b) = (Sample::of(&phase), Sample::of(&base));
        let u = welch(&p, &b).unwrap();
        let (low, high) = if z_only {
            // The normal quantile instead of Student's: too narrow on few days.
            let se = (p.sd.powi(2) / p.days as f64 + b.sd.powi(2) / b.days as f64).sqrt();
            (u.per_day - 1.96 * se, u.per_day + 1.96 * se)
        } else {
            (u.low, u.high)
        };
        if low <= truth && truth <= high {
            covered += 1;
        }
    }
    covered as f64 / runs as f64
}

#[test]
fn intervals_cover_the_true_difference_at_about_the_stated_rate() {
    // Daily sign-ups as counts: 28 baseline days at 40 a day, 21 phase
    // days at 55.
    let counts = |rng: &mut ChaCha8Rng| {
        let (b, p) = (Poisson::new(40.0).unwrap(), Poisson::new(55.0).unwrap());
        (
            (0..21).map(|_| p.sample(rng)).collect(),
            (0..28).map(|_| b.sample(rng)).collect(),
        )
    };
    let c = coverage(3000, 1, counts, 15.0, false);
    assert!((0.935..=0.965).contains(&c), "Poisson days: {c}");
    // Few days with unequal spread: where Welch's t matters.
    let few = |rng: &mut ChaCha8Rng| {
        let (b, p) = (
            Normal::new(10.0, 1.0).unwrap(),
            Normal::new(13.0, 5.0).unwrap(),
        );
        (
            (0..5).map(|_| p.sample(rng)).collect(),
            (0..9).map(|_| b.sample(rng)).collect(),
        )
    };
    let f = coverage(3000, 2, few, 3.0, false);
    assert!((0.935..=0.965).contains(&f), "few days: {f}");
    // The test can fail: the normal quantile on the same days falls short.
    let z = coverage(3000, 2, few, 3.0, true);
    eprintln!("coverage: Poisson days {c}, five and nine days {f}, normal quantile {z}");
    assert!(z < 0.9, "normal quantile on five days: {z}");
}
