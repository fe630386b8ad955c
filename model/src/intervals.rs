//! 95 % intervals on every attribution model's channel credit, pure and
//! deterministic (the same table gives the same intervals).
//!
//! The sampling unit is a **person of the path table**: a conversion (a
//! sign-up with its path) or a visitor without sign-up (with the path of
//! the same window). A credit is a count of sign-ups; its interval says how
//! far it could move had another sample of people of the same campaign
//! come by.
//!
//! - **Markov and Shapley** ([`bootstrap`]): the Poisson bootstrap (each
//!   person weighed by an independent Poisson(1) count, the usual
//!   large-sample stand-in for resampling people with replacement), at a
//!   cost that does not grow with the table. Shapley's closed form is
//!   linear in the conversions, so its bootstrap variance is exact and the
//!   interval is the normal one. Markov depends on the table through the
//!   chain's transition counts only; their bootstrap law has a known mean
//!   and covariance, each of [`REPLICATES`] seeded replicates draws them
//!   from the normal law with those moments and solves the chain again,
//!   and the interval is the replicates' 2.5th to 97.5th percentile.
//! - **The rule-based models** ([`wilson`]): each person gives a channel a
//!   share `x ∈ [0, 1]` of a sign-up (0 without one) and the credit is
//!   `S = Σ x` over `N` people. The figures keep `Σ x`, not `Σ x²`, so the
//!   interval is Wilson's score interval of the proportion `S / N`, times
//!   `N`: exact in the binomial sense for first and last touch (`x` is 0 or
//!   1), and wider than needed for linear, time-decay and position-based
//!   (the variance of shares in `[0, 1]` with mean `S / N` is at most the
//!   binomial one).
//!
//! Checked in this file's tests: on simulated campaigns, the intervals
//! cover the credit of the campaign's whole population at about the stated
//! rate. docs/attribution.md ("Intervals") says how to read them.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::attribution::DIRECT;
use crate::paths::{count, steps, Chain, Table, Transitions};

/// The intervals' level.
pub const LEVEL: f64 = 0.95;
/// The standard normal quantile of (1 + [`LEVEL`]) / 2.
pub const Z: f64 = 1.959_963_984_540_054;
/// Bootstrap replicates per question.
pub const REPLICATES: usize = 400;
/// The bootstrap's seed: fixed, so the same data always gives the same
/// intervals.
pub const SEED: u64 = 0x656e_7365_6d62_6c65;

/// A credit's plausible range at [`LEVEL`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    pub fn contains(&self, v: f64) -> bool {
        self.low <= v && v <= self.high
    }

    /// Whether the two ranges share a value: the data cannot tell the two
    /// credits apart at this level.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.low <= other.high && other.low <= self.high
    }
}

/// People in the table: its conversions and its visitors without sign-up.
pub fn people(table: &Table) -> u64 {
    table
        .paths
        .values()
        .map(|c| count(c.conversions) + count(c.without_signup))
        .sum()
}

/// Wilson's score interval of `credit` sign-ups among `people` (times
/// `people`). Empty data gives `[0, 0]`.
pub fn wilson(credit: f64, people: u64) -> Interval {
    if people == 0 {
        return Interval {
            low: 0.0,
            high: 0.0,
        };
    }
    let n = people as f64;
    let p = (credit / n).clamp(0.0, 1.0);
    let z2 = Z * Z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Interval {
        low: ((centre - half) * n).max(0.0),
        high: ((centre + half) * n).min(n),
    }
}

/// The data-driven models' intervals by channel (every channel either
/// model credits on the table).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DataDriven {
    pub markov: BTreeMap<String, Interval>,
    pub shapley: BTreeMap<String, Interval>,
}

/// The Poisson bootstrap of [`crate::paths::markov`] and
/// [`crate::paths::shapley`] over the chain's table's people, at the cost
/// of the table's transitions rather than its lines (module
/// documentation): `replicates` Markov replicates drawn from `seed`.
pub fn bootstrap(chain: &Chain, replicates: usize, seed: u64) -> DataDriven {
    DataDriven {
        markov: markov(chain, replicates, seed),
        shapley: shapley(chain.table),
    }
}

/// A count's interval under the Poisson bootstrap: mean `n`, variance `n`.
fn count_interval(mean: f64, variance: f64) -> Interval {
    let half = Z * variance.max(0.0).sqrt();
    Interval {
        low: (mean - half).max(0.0),
        high: mean + half,
    }
}

/// Shapley by its closed form `φᵢ = Σ_{T ∋ i} conv(T) / |T|` (equal to the
/// sum over coalitions: the paths' tests) is linear in the conversions:
/// with each line's conversions Poisson(`n`), `Var φᵢ = Σ_{T ∋ i} conv(T)
/// / |T|²`, exactly, and the interval is the normal one on that variance.
fn shapley(table: &Table) -> BTreeMap<String, Interval> {
    let mut moments: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (p, c) in &table.paths {
        if c.conversions <= 0 {
            continue;
        }
        let mut set = steps(p).0;
        set.sort_unstable();
        set.dedup();
        let k = set.len() as f64;
        for ch in set {
            let m = moments.entry(ch).or_default();
            m.0 += c.conversions as f64 / k;
            m.1 += c.conversions as f64 / (k * k);
        }
    }
    moments
        .into_iter()
        .map(|(ch, (mean, var))| (ch.to_owned(), count_interval(mean, var)))
        .collect()
}

/// Markov: the credits depend on the table through its transition counts
/// only ([`Transitions`]). Under the Poisson bootstrap those counts are a
/// sum of independent Poisson(`n`) weights times each line's transitions,
/// with mean the observed counts and covariance `Σ n · a aᵀ` (`a`: a line's
/// transitions). Each replicate draws the counts from the normal law with
/// that mean and covariance (the bootstrap's large-sample law; a count
/// drawn below 0 is 0) and solves the chain again; the interval is the
/// replicates' central [`LEVEL`] range. `direct` gets its conversions'
/// count interval.
fn markov(chain: &Chain, replicates: usize, seed: u64) -> BTreeMap<String, Interval> {
    let mut out = BTreeMap::new();
    if chain.direct > 0 {
        let d = chain.direct as f64;
        out.insert(DIRECT.to_owned(), count_interval(d, d));
    }
    let shape = Transitions::new(chain.channels.len());
    // Each line (a walk ending in conversion or in null) and its people.
    let mut lines: Vec<(Vec<(usize, f64)>, f64)> = Vec::new();
    for (walk, conv, null) in &chain.walks {
        for (end, n) in [(shape.conversion(), *conv), (shape.null(), *null)] {
            if n == 0 {
                continue;
            }
            let mut a: BTreeMap<usize, f64> = BTreeMap::new();
            for cell in shape.walk(walk, end) {
                *a.entry(cell).or_default() += 1.0;
            }
            lines.push((a.into_iter().collect(), n as f64));
        }
    }
    // The cells any line uses, densely numbered.
    let cells: Vec<usize> = {
        let mut c: Vec<usize> = lines
            .iter()
            .flat_map(|(a, _)| a.iter().map(|(cell, _)| *cell))
            .collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    let d = cells.len();
    let at = |cell: usize| cells.binary_search(&cell).unwrap_or(0);
    let mut mean = vec![0.0; d];
    let mut cov = vec![0.0; d * d];
    for (a, n) in &lines {
        for (ci, x) in a {
            mean[at(*ci)] += n * x;
            for (cj, y) in a {
                cov[at(*ci) * d + at(*cj)] += n * x * y;
            }
        }
    }
    let l = cholesky(&cov, d);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut drawn: Vec<Vec<f64>> = vec![Vec::with_capacity(replicates); chain.channels.len()];
    let mut z = vec![0.0; d];
    let mut t = shape.clone();
    for _ in 0..replicates {
        for v in z.iter_mut() {
            *v = StandardNormal.sample(&mut rng);
        }
        for (k, cell) in cells.iter().enumerate() {
            let row = &l[k * d..k * d + k + 1];
            let noise: f64 = row.iter().zip(&z).map(|(a, b)| a * b).sum();
            t.counts[*cell] = (mean[k] + noise).max(0.0);
        }
        for (v, credit) in drawn.iter_mut().zip(t.credits()) {
            v.push(credit);
        }
    }
    for (ch, v) in chain.channels.iter().zip(drawn) {
        out.insert((*ch).to_owned(), percentiles(v));
    }
    out
}

/// The lower-triangular `L` with `L Lᵀ = m` (`d × d`, row-major), for a
/// positive semi-definite `m`: a pivot that is zero up to rounding (a cell
/// that is a sum of others) gets a zero column.
fn cholesky(m: &[f64], d: usize) -> Vec<f64> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = m[i * d + i] - s;
                l[i * d + i] = if v > 1e-9 * m[i * d + i].max(1.0) {
                    v.sqrt()
                } else {
                    0.0
                };
            } else if l[j * d + j] > 0.0 {
                l[i * d + j] = (m[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    l
}

/// The central [`LEVEL`] range of the replicates (linear interpolation
/// between order statistics).
fn percentiles(mut v: Vec<f64>) -> Interval {
    if v.is_empty() {
        return Interval {
            low: 0.0,
            high: 0.0,
        };
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let x = q * (v.len() - 1) as f64;
        let (i, f) = (x.floor() as usize, x - x.floor());
        let next = v.get(i + 1).copied().unwrap_or(v[i]);
        v[i] + f * (next - v[i])
    };
    let tail = (1.0 - LEVEL) / 2.0;
    Interval {
        low: at(tail),
        high: at(1.0 - tail),
    }
}

#[cfg(test)]
mod tests;
