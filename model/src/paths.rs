//! Conversion paths and the two data-driven models, pure.
//!
//! **A path** is the sequence of channels of a visitor's touches (the gap
//! rule, [`crate::rules::touch_starts`]) in time order, a channel repeated
//! by consecutive touches shown once: `metro > tinder`. The figures store
//! two kinds (`figures::Figure::PathsConverted`, `PathsNotConverted`):
//!
//! - each **conversion** (the first sign-up of a contact) has the path of
//!   the touches its rule-based credit goes to (those of the lookback
//!   window before the sign-up); a conversion without any is the path
//!   `direct`, as the rule-based models credit it. Its delay is the time
//!   from the path's first touch to the sign-up (none for `direct`);
//! - each **visitor without a sign-up** up to the end of the question's
//!   days has the path of its touches of the same window, ending at its
//!   last touch in those days (earlier days included; nothing without a
//!   touch in them). One who signed up earlier (a conversion, a repeat)
//!   has none: docs/attribution.md ("One window rule").
//!
//! A path longer than [`MAX_STEPS`] keeps its last `MAX_STEPS` steps (the
//! ones nearest the sign-up) after a leading [`TRUNCATED`] mark.
//!
//! From the table of paths ([`Table`]) come the top paths ([`Table::top`]),
//! the length distribution ([`Table::lengths`]) and two attribution models
//! computed over every path, converting or not:
//!
//! - [`markov`]: first-order Markov chain removal effect, solved exactly;
//! - [`shapley`]: the simplified Shapley value over channel sets.
//!
//! Both give each channel a share of the conversions that sums to their
//! number and is the same for the same table (no sampling, no order
//! dependence). Their definitions are in the functions' documentation and
//! in docs/attribution.md ("Data-driven attribution").

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::attribution::DIRECT;

/// Between two steps of a stored path.
pub const SEP: &str = " > ";
/// A path keeps at most this many steps.
pub const MAX_STEPS: usize = 12;
/// First step of a path cut to its last [`MAX_STEPS`] steps.
pub const TRUNCATED: &str = "…";

/// The path of channels in time order: consecutive repeats once, at most
/// [`MAX_STEPS`] (the last ones) behind [`TRUNCATED`]. Empty without any.
pub fn path_of<'a>(channels: impl IntoIterator<Item = &'a str>) -> String {
    let mut steps: Vec<&str> = Vec::new();
    for c in channels {
        if steps.last() != Some(&c) {
            steps.push(c);
        }
    }
    if steps.len() > MAX_STEPS {
        let cut = steps.len() - MAX_STEPS;
        steps.drain(..cut);
        steps.insert(0, TRUNCATED);
    }
    steps.join(SEP)
}

/// The channels of a stored path, without the truncation mark, and whether
/// it was cut.
pub fn steps(path: &str) -> (Vec<&str>, bool) {
    if path.is_empty() {
        return (Vec::new(), false);
    }
    let mut steps: Vec<&str> = path.split(SEP).collect();
    let cut = steps.first() == Some(&TRUNCATED);
    if cut {
        steps.remove(0);
    }
    (steps, cut)
}

/// Delays are kept to the minute for the median (the mean is exact).
pub const DELAY_STEP_S: u64 = 60;

/// What the figures say of one path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub conversions: i64,
    /// Visitors who followed it without signing up.
    pub without_signup: i64,
    /// Conversions with a delay (every one but `direct`'s), their delays
    /// summed in seconds, and their number by delay rounded down to
    /// [`DELAY_STEP_S`].
    pub timed: i64,
    pub delay_sum_s: f64,
    pub delays: BTreeMap<u64, i64>,
}

/// Every path of a question with its counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub paths: BTreeMap<String, Counts>,
}

/// One line of the top paths.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathLine {
    pub path: String,
    /// Its channels in order (without the truncation mark).
    pub steps: Vec<String>,
    /// Whether earlier steps were cut (the path was longer than [`MAX_STEPS`]).
    pub truncated: bool,
    pub conversions: u64,
    pub without_signup: u64,
    /// conversions ÷ (conversions + without_signup).
    pub conversion_rate: f64,
    /// From the first touch to the sign-up, over its conversions with a
    /// touch; `None` for `direct` or without conversions.
    pub mean_time_to_signup_s: Option<f64>,
    /// The lower median, to the minute.
    pub median_time_to_signup_s: Option<u64>,
}

/// Conversions and visitors without sign-up by path length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LengthLine {
    /// Number of steps; `direct` is 0. With `or_more`, every path cut to
    /// [`MAX_STEPS`] steps.
    pub length: usize,
    pub or_more: bool,
    pub conversions: u64,
    pub without_signup: u64,
}

impl Table {
    /// Adds `n` conversions of `path` whose delays sum to `delay_s` (every
    /// path's conversions have a delay but `direct`'s).
    pub fn add_converted(&mut self, path: &str, n: i64, delay_s: f64) {
        let c = self.paths.entry(path.to_owned()).or_default();
        c.conversions += n;
        if path != DIRECT {
            c.timed += n;
            c.delay_sum_s += delay_s;
        }
        self.drop_empty(path);
    }

    /// Adds `n` of a path's conversions by their delay rounded down to
    /// [`DELAY_STEP_S`] (for the median; only the paths listed need them).
    pub fn add_delay(&mut self, path: &str, delay_bucket_s: u64, n: i64) {
        if let Some(c) = self.paths.get_mut(path) {
            let d = c.delays.entry(delay_bucket_s).or_default();
            *d += n;
            if *d == 0 {
                c.delays.remove(&delay_bucket_s);
            }
        }
    }

    /// On a table of conversions only (before its visitors without
    /// sign-up are added): the timed paths (not `direct`) that can be among
    /// the first `limit` of [`Table::top_paths`] once they are. The order
    /// is by conversions first, so those are the paths with at least the
    /// conversions of the `limit`-th. Lets a reader fetch their delays
    /// while it still reads the visitors without sign-up.
    pub fn median_candidates(&self, limit: usize) -> Vec<String> {
        let mut counts: Vec<i64> = self
            .paths
            .values()
            .map(|c| c.conversions)
            .filter(|n| *n > 0)
            .collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // Fewer converting paths than `limit`: every one of them.
        let least = counts.get(limit.max(1) - 1).copied().unwrap_or(1);
        self.paths
            .iter()
            .filter(|(p, c)| p.as_str() != DIRECT && c.conversions >= least)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The `limit` paths with most conversions, then most visitors, then
    /// by name: the order of [`Table::top`].
    pub fn top_paths(&self, limit: usize) -> Vec<String> {
        let mut paths: Vec<(&String, i64, i64)> = self
            .paths
            .iter()
            .map(|(p, c)| (p, c.conversions, c.conversions + c.without_signup))
            .collect();
        paths.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then_with(|| a.0.cmp(b.0)));
        paths
            .into_iter()
            .take(limit)
            .map(|(p, _, _)| p.clone())
            .collect()
    }

    pub fn add_not_converted(&mut self, path: &str, n: i64) {
        if path.is_empty() {
            return;
        }
        let c = self.paths.entry(path.to_owned()).or_default();
        c.without_signup += n;
        self.drop_empty(path);
    }

    fn drop_empty(&mut self, path: &str) {
        if self
            .paths
            .get(path)
            .is_some_and(|c| c.conversions == 0 && c.without_signup == 0)
        {
            self.paths.remove(path);
        }
    }

    pub fn conversions(&self) -> u64 {
        self.paths.values().map(|c| count(c.conversions)).sum()
    }

    /// Keeps the paths through `channel`.
    pub fn through(&self, channel: &str) -> Table {
        Table {
            paths: self
                .paths
                .iter()
                .filter(|(p, _)| steps(p).0.contains(&channel))
                .map(|(p, c)| (p.clone(), c.clone()))
                .collect(),
        }
    }

    /// The `limit` paths with most conversions (then most visitors, then
    /// by name), each with its rate and times.
    pub fn top(&self, limit: usize) -> Vec<PathLine> {
        self.top_paths(limit)
            .into_iter()
            .filter_map(|path| self.paths.get(&path).map(|c| (path, c)))
            .map(|(path, c)| {
                let (st, truncated) = steps(&path);
                let (conversions, without_signup) = (count(c.conversions), count(c.without_signup));
                let seen = conversions + without_signup;
                PathLine {
                    path: path.clone(),
                    steps: st.iter().map(|s| (*s).to_owned()).collect(),
                    truncated,
                    conversions,
                    without_signup,
                    conversion_rate: if seen == 0 {
                        0.0
                    } else {
                        conversions as f64 / seen as f64
                    },
                    mean_time_to_signup_s: (c.timed > 0).then(|| c.delay_sum_s / c.timed as f64),
                    median_time_to_signup_s: lower_median(&c.delays, count(c.timed)),
                }
            })
            .collect()
    }

    /// Conversions and visitors without sign-up by number of steps.
    pub fn lengths(&self) -> Vec<LengthLine> {
        let mut by: BTreeMap<(usize, bool), (u64, u64)> = BTreeMap::new();
        for (path, c) in &self.paths {
            let (st, cut) = steps(path);
            let len = if st == [DIRECT] { 0 } else { st.len() };
            let e = by.entry((len, cut)).or_default();
            e.0 += count(c.conversions);
            e.1 += count(c.without_signup);
        }
        by.into_iter()
            .map(
                |((length, or_more), (conversions, without_signup))| LengthLine {
                    length,
                    or_more,
                    conversions,
                    without_signup,
                },
            )
            .collect()
    }
}

/// A count summed from rows (never below 0 once every row is in).
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The bucket of the lower median of `n` values counted by bucket, and how
/// many values lie in the buckets below it (to refine the median inside
/// that bucket: its hour, then its minute).
pub fn median_bucket(counts: &BTreeMap<u64, i64>, n: u64) -> Option<(u64, u64)> {
    if n == 0 {
        return None;
    }
    let mut seen = 0;
    for (v, c) in counts {
        let below = seen;
        seen += count(*c);
        if seen >= crate::rules::median_rank(n) {
            return Some((*v, below));
        }
    }
    None
}

/// The smallest value with at least half of the `n` values at or below it.
fn lower_median(counts: &BTreeMap<u64, i64>, n: u64) -> Option<u64> {
    if n == 0 {
        return None;
    }
    let mut seen = 0;
    for (v, c) in counts {
        seen += count(*c);
        if seen >= crate::rules::median_rank(n) {
            return Some(*v);
        }
    }
    counts.keys().next_back().copied()
}

// ------------------------------------------------------------------ markov

/// First-order Markov chain attribution by removal effect, exact.
///
/// States: `start`, one per channel, `conversion`, `null`. Every path of
/// the table is a walk `start → c₁ → … → c_k → conversion` (once per
/// conversion) or `→ null` (once per visitor without sign-up); the
/// transition probability `i → j` is the number of walks stepping from `i`
/// to `j` over the number leaving `i`. `P` is the probability of reaching
/// `conversion` from `start`, solved as an absorbing chain (a linear
/// system, Gaussian elimination — no simulation). The removal effect of a
/// channel is `1 − P₋c / P`, where `P₋c` is the same probability when every
/// step into the channel goes to `null` instead. A channel's credit is the
/// table's conversions with a touch × its removal effect ÷ the sum of
/// removal effects. Without conversions, every credit is 0.
///
/// `direct` is not a state: a sign-up without any touch has the path
/// `direct`, but a visitor without touch nor sign-up has no path at all, so
/// in the chain `direct` would be a state only converting walks reach, and
/// its removal effect would take credit from channels that touched other
/// people (or give it to them). As the ad platforms do, `direct` is left out
/// of the chain and credited with exactly its own conversions; the channels
/// share the others.
pub fn markov(table: &Table) -> BTreeMap<String, f64> {
    Chain::of(table).markov()
}

/// A table's walks for [`markov`], parsed once (the endpoint's point
/// credits and `crate::intervals`' bootstrap share it).
#[derive(Debug, Clone)]
pub struct Chain<'a> {
    pub table: &'a Table,
    /// Every channel on a path other than `direct`, sorted.
    pub channels: Vec<&'a str>,
    /// Per path other than `direct`: its states (1 + the channel's index in
    /// `channels`), its conversions and its visitors without sign-up.
    pub walks: Vec<(Vec<usize>, u64, u64)>,
    /// `direct`'s conversions.
    pub direct: u64,
}

impl<'a> Chain<'a> {
    pub fn of(table: &'a Table) -> Chain<'a> {
        let parsed: Vec<(Vec<&str>, u64, u64)> = table
            .paths
            .iter()
            .filter(|(p, _)| p.as_str() != DIRECT)
            .map(|(p, c)| (steps(p).0, count(c.conversions), count(c.without_signup)))
            .filter(|(s, _, _)| !s.is_empty())
            .collect();
        let channels: Vec<&str> = parsed
            .iter()
            .flat_map(|(s, _, _)| s.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let index = |c: &str| channels.binary_search(&c).map(|i| i + 1).unwrap_or(0);
        let walks = parsed
            .iter()
            .map(|(s, conv, null)| (s.iter().map(|c| index(c)).collect(), *conv, *null))
            .collect();
        Chain {
            table,
            channels,
            walks,
            direct: table.paths.get(DIRECT).map_or(0, |c| count(c.conversions)),
        }
    }

    /// Every walk counted once per conversion and once per visitor
    /// without sign-up.
    pub fn transitions(&self) -> Transitions {
        let mut t = Transitions::new(self.channels.len());
        for (s, conv, null) in &self.walks {
            for (end, n) in [(t.conversion(), *conv), (t.null(), *null)] {
                for cell in t.walk(s, end) {
                    t.counts[cell] += n as f64;
                }
            }
        }
        t
    }

    /// [`markov`]'s credits: the channels by removal effect, `direct` its
    /// own conversions.
    pub fn markov(&self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = self
            .channels
            .iter()
            .zip(self.transitions().credits())
            .map(|(c, v)| ((*c).to_owned(), v))
            .collect();
        if self.direct > 0 {
            out.insert(DIRECT.to_owned(), self.direct as f64);
        }
        out
    }
}

/// The chain's transition counts: from each transient state (0 = start,
/// 1.. = channels) to each state, `conversion` and `null` (the two last
/// columns). Everything [`markov`] needs of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Transitions {
    /// Transient states (start and the channels).
    pub states: usize,
    /// Row-major, `states` rows of `states + 2` columns.
    pub counts: Vec<f64>,
}

impl Transitions {
    pub fn new(channels: usize) -> Transitions {
        let states = channels + 1;
        Transitions {
            states,
            counts: vec![0.0; states * (states + 2)],
        }
    }

    pub fn conversion(&self) -> usize {
        self.states
    }

    pub fn null(&self) -> usize {
        self.states + 1
    }

    /// The cells one walk passes in `counts`, in order: `start → s₀`,
    /// `s₀ → s₁`, …, its last state `→ end` ([`Self::conversion`] or
    /// [`Self::null`]).
    pub fn walk<'w>(&self, walk: &'w [usize], end: usize) -> impl Iterator<Item = usize> + 'w {
        let width = self.states + 2;
        let last = walk.last().copied().unwrap_or(0);
        std::iter::once(0)
            .chain(walk.iter().copied())
            .zip(walk.iter().copied())
            .chain(std::iter::once((last, end)))
            .map(move |(from, to)| from * width + to)
    }

    /// Each channel's credit by removal effect (see [`markov`]).
    pub fn credits(&self) -> Vec<f64> {
        let n = self.states;
        let mut out = vec![0.0; n - 1];
        let row = |i: usize| &self.counts[i * (n + 2)..(i + 1) * (n + 2)];
        let conversions: f64 = (0..n).map(|i| row(i)[n]).sum();
        if conversions <= 0.0 {
            return out;
        }
        let leaving: Vec<f64> = (0..n).map(|i| row(i).iter().sum()).collect();
        let p = |removed: Option<usize>| -> f64 {
            // x_i = r_i + Σ_j q_ij x_j  ⇔  (I − Q) x = r, over transient states;
            // a removed state is absorbing in `null` (x = 0).
            let mut a = vec![vec![0.0; n]; n];
            let mut r = vec![0.0; n];
            for i in 0..n {
                a[i][i] = 1.0;
                if Some(i) == removed || leaving[i] == 0.0 {
                    continue;
                }
                r[i] = row(i)[n] / leaving[i];
                for (j, w) in row(i)[..n].iter().enumerate() {
                    if *w != 0.0 && Some(j) != removed {
                        a[i][j] -= w / leaving[i];
                    }
                }
            }
            solve(a, r)[0]
        };
        let base = p(None);
        if base <= 0.0 {
            return out;
        }
        let effects: Vec<f64> = (1..n).map(|i| (1.0 - p(Some(i)) / base).max(0.0)).collect();
        let total: f64 = effects.iter().sum();
        if total <= 0.0 {
            return out;
        }
        for (o, e) in out.iter_mut().zip(&effects) {
            *o = conversions * e / total;
        }
        out
    }
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting (`a`
/// square, non-singular: `I − Q` of an absorbing chain whose transient
/// states all reach an absorbing one).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|x, y| a[*x][col].abs().total_cmp(&a[*y][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        let d = a[col][col];
        if d == 0.0 {
            continue;
        }
        let pivot_row = a[col].clone();
        let pivot_b = b[col];
        for (row, (r, rb)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
            if row == col {
                continue;
            }
            let f = r[col] / d;
            if f == 0.0 {
                continue;
            }
            for (x, p) in r[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            *rb -= f * pivot_b;
        }
    }
    (0..n)
        .map(|i| if a[i][i] == 0.0 { 0.0 } else { b[i] / a[i][i] })
        .collect()
}

// ----------------------------------------------------------------- shapley

/// The simplified Shapley value of channels for conversions.
///
/// Players: the channels on converting paths. For a set `T` of channels,
/// `conv(T)` is the number of conversions whose path's channels are exactly
/// `T` (order and repeats ignored). The worth of a coalition `S` is
/// `v(S) = Σ_{T ⊆ S} conv(T)`: the conversions its channels could have
/// made on their own. A channel set that never converts has `conv = 0` and
/// adds nothing to any coalition; visitors without sign-up do not enter
/// this model (the Markov model is the one that weighs them). A channel's
/// credit is its Shapley value
/// `φᵢ = Σ_{S ∌ i} |S|! (n − |S| − 1)! / n! · (v(S ∪ {i}) − v(S))`,
/// which sums to `v(all) =` the conversions. Computed over coalitions for
/// up to [`SHAPLEY_EXACT_PLAYERS`] channels; above, by the identity
/// `φᵢ = Σ_{T ∋ i} conv(T) / |T|` (equal, tested).
pub fn shapley(table: &Table) -> BTreeMap<String, f64> {
    let mut conv: BTreeMap<BTreeSet<&str>, u64> = BTreeMap::new();
    for (p, c) in &table.paths {
        if c.conversions <= 0 {
            continue;
        }
        let set: BTreeSet<&str> = steps(p).0.into_iter().collect();
        if !set.is_empty() {
            *conv.entry(set).or_default() += count(c.conversions);
        }
    }
    let players: Vec<&str> = conv
        .keys()
        .flat_map(|s| s.iter().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if players.len() > SHAPLEY_EXACT_PLAYERS {
        return shapley_by_sets(&conv);
    }
    let n = players.len();
    let mask_of = |s: &BTreeSet<&str>| -> usize {
        s.iter()
            .map(|c| 1usize << players.binary_search(c).unwrap_or(0))
            .fold(0, |a, b| a | b)
    };
    // v over every coalition: Σ of conv over its subsets (a zeta transform).
    let mut v = vec![0.0f64; 1 << n];
    for (s, c) in &conv {
        v[mask_of(s)] += *c as f64;
    }
    for i in 0..n {
        for m in 0..(1usize << n) {
            if m & (1 << i) != 0 {
                v[m] += v[m ^ (1 << i)];
            }
        }
    }
    let fact: Vec<f64> = (0..=n)
        .scan(1.0, |f, k| {
            if k > 0 {
                *f *= k as f64;
            }
            Some(*f)
        })
        .collect();
    let mut out = BTreeMap::new();
    for (i, c) in players.iter().enumerate() {
        let mut phi = 0.0;
        for m in 0..(1usize << n) {
            if m & (1 << i) != 0 {
                continue;
            }
            let s = m.count_ones() as usize;
            phi += fact[s] * fact[n - s - 1] / fact[n] * (v[m | (1 << i)] - v[m]);
        }
        out.insert((*c).to_owned(), phi);
    }
    out
}

/// Channels above which [`shapley`] uses the closed form.
pub const SHAPLEY_EXACT_PLAYERS: usize = 16;

/// `φᵢ = Σ_{T ∋ i} conv(T) / |T|`.
fn shapley_by_sets(conv: &BTreeMap<BTreeSet<&str>, u64>) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for (s, c) in conv {
        for ch in s {
            *out.entry((*ch).to_owned()).or_default() += *c as f64 / s.len() as f64;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, u64, u64)]) -> Table {
        let mut t = Table::default();
        for (p, conv, null) in rows {
            t.add_converted(p, *conv as i64, 0.0);
            t.add_not_converted(p, *null as i64);
        }
        t
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn median_candidates_hold_every_timed_path_of_the_top() {
        // Random tables: the top paths once the visitors without sign-up
        // are in are among the candidates of their conversions alone.
        let mut seed = 7u64;
        let mut next = |m: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % m
        };
        let names = [
            "a", "b", "a > b", "b > a", "c", "a > c", "direct", "c > b", "b > c",
        ];
        for _ in 0..300 {
            let mut converted = Table::default();
            let mut full = Table::default();
            for p in names {
                let n = i64::try_from(next(4)).unwrap_or(0);
                if n > 0 {
                    converted.add_converted(p, n, 60.0);
                    full.add_converted(p, n, 60.0);
                }
                let w = i64::try_from(next(6)).unwrap_or(0);
                if w > 0 {
                    full.add_not_converted(p, w);
                }
            }
            for limit in 1..=10 {
                let candidates = converted.median_candidates(limit);
                for p in full.top_paths(limit) {
                    let timed = full.paths.get(&p).is_some_and(|c| c.timed > 0);
                    assert!(!timed || candidates.contains(&p), "{p} (limit {limit})");
                }
                assert!(!candidates.iter().any(|p| p == "direct"));
            }
        }
        // By hand: conversions a 5, direct 4, b 3, c 3, d 1.
        let mut t = Table::default();
        for (p, n) in [("a", 5), ("direct", 4), ("b", 3), ("c", 3), ("d", 1)] {
            t.add_converted(p, n, 0.0);
        }
        assert_eq!(t.median_candidates(1), ["a"]);
        assert_eq!(t.median_candidates(2), ["a"]);
        assert_eq!(t.median_candidates(3), ["a", "b", "c"]);
        assert_eq!(t.median_candidates(10), ["a", "b", "c", "d"]);
        assert!(Table::default().median_candidates(5).is_empty());
    }

    #[test]
    fn a_path_shows_a_repeated_channel_once_and_keeps_its_last_steps() {
        assert_eq!(
            path_of(["metro", "metro", "tinder", "metro"]),
            "metro > tinder > metro"
        );
        assert_eq!(path_of([]), "");
        let long: Vec<String> = (0..15).map(|i| format!("c{i}")).collect();
        let p = path_of(long.iter().map(String::as_str));
        assert_eq!(
            p,
            "… > c3 > c4 > c5 > c6 > c7 > c8 > c9 > c10 > c11 > c12 > c13 > c14"
        );
        let (s, cut) = steps(&p);
        assert_eq!((s.len(), cut), (MAX_STEPS, true));
        assert_eq!(steps("metro > tinder"), (vec!["metro", "tinder"], false));
    }

    /// Worked by hand. Paths: A>B → 1 conversion, A → 1 null, B → 1
    /// conversion. Transitions: start→A 2, start→B 1; A→B 1, A→null 1;
    /// B→conv 2. P = 2/3·(1/2·1) + 1/3·1 = 2/3. Without A: start→A goes
    /// to null: P = 1/3 → effect 1/2. Without B: P = 0 → effect 1.
    /// Credits: 2 × 1/2 ÷ 3/2 = 2/3 to A, 2 × 1 ÷ 3/2 = 4/3 to B.
    #[test]
    fn markov_is_the_removal_effect_worked_by_hand() {
        let t = table(&[("a > b", 1, 0), ("a", 0, 1), ("b", 1, 0)]);
        let m = markov(&t);
        assert!(close(m["a"], 2.0 / 3.0), "{m:?}");
        assert!(close(m["b"], 4.0 / 3.0), "{m:?}");
    }

    /// A loop (A > B > A) needs the linear system, not a walk along paths.
    /// Paths: A>B>A → 1 conversion, B → 1 null. Transitions: start→A 1,
    /// start→B 1; A→B 1, A→conv 1; B→A 1, B→null 1. x_A = ½ x_B + ½,
    /// x_B = ½ x_A → x_A = 2/3, x_B = 1/3, P = ½(2/3 + 1/3) = ½. Without
    /// A: x_B = 0, P = 0 → effect 1. Without B: x_A = ½, P = ¼ → effect ½.
    /// Credits: 1 × 1 ÷ 1.5 = 2/3 to A, 1/3 to B.
    #[test]
    fn markov_solves_loops_exactly() {
        let t = table(&[("a > b > a", 1, 0), ("b", 0, 1)]);
        let m = markov(&t);
        assert!(close(m["a"], 2.0 / 3.0), "{m:?}");
        assert!(close(m["b"], 1.0 / 3.0), "{m:?}");
    }

    #[test]
    fn markov_without_conversions_credits_nothing() {
        let m = markov(&table(&[("a", 0, 3)]));
        assert_eq!(m["a"], 0.0);
        let m = markov(&table(&[("direct", 2, 0)]));
        assert_eq!(m.into_iter().collect::<Vec<_>>(), [("direct".into(), 2.0)]);
    }

    /// `direct` is not a state of the chain: it gets exactly its own
    /// conversions, and the channels share the others as if the direct
    /// sign-ups were not there (the first example's credits, unchanged).
    /// As a state (reached only by converting walks), `direct` got 1.6 of
    /// its own 2 conversions, a 0.8 and b 1.6.
    #[test]
    fn markov_credits_direct_with_its_own_conversions_only() {
        let t = table(&[("direct", 2, 0), ("a > b", 1, 0), ("a", 0, 1), ("b", 1, 0)]);
        let m = markov(&t);
        assert!(close(m["direct"], 2.0), "{m:?}");
        assert!(close(m["a"], 2.0 / 3.0), "{m:?}");
        assert!(close(m["b"], 4.0 / 3.0), "{m:?}");
    }

    /// Worked by hand. conv({a,b}) = 2, conv({a}) = 1, conv({c}) = 1.
    /// v({a}) = 1, v({b}) = 0, v({a,b}) = 3, v({c}) = 1, … Shapley:
    /// a = 1 + 2/2, b = 2/2, c = 1 (each set's conversions shared evenly
    /// among its channels: the identity, computed here over coalitions).
    #[test]
    fn shapley_is_worked_by_hand_and_ignores_order_and_repeats() {
        let t = table(&[
            ("a > b", 1, 5),
            ("b > a > b", 1, 0),
            ("a", 1, 0),
            ("c", 1, 0),
            ("d", 0, 9),
        ]);
        let s = shapley(&t);
        assert!(
            close(s["a"], 2.0) && close(s["b"], 1.0) && close(s["c"], 1.0),
            "{s:?}"
        );
        assert!(
            !s.contains_key("d"),
            "a channel that never converts is not a player"
        );
    }

    #[test]
    fn shapley_over_coalitions_equals_the_closed_form() {
        // Deterministic pseudo-random tables.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for _ in 0..50 {
            let mut t = Table::default();
            for _ in 0..12 {
                let len = 1 + next() % 4;
                let p: Vec<String> = (0..len).map(|_| format!("c{}", next() % 6)).collect();
                t.add_converted(
                    &path_of(p.iter().map(String::as_str)),
                    (next() % 5) as i64,
                    0.0,
                );
            }
            let mut conv: BTreeMap<BTreeSet<&str>, u64> = BTreeMap::new();
            for (p, c) in &t.paths {
                if c.conversions > 0 {
                    *conv.entry(steps(p).0.into_iter().collect()).or_default() +=
                        count(c.conversions);
                }
            }
            let exact = shapley(&t);
            let closed = shapley_by_sets(&conv);
            assert_eq!(exact.len(), closed.len());
            for (c, v) in &exact {
                assert!(close(*v, closed[c]), "{c}: {v} vs {}", closed[c]);
            }
            let total: f64 = exact.values().sum();
            assert!(close(total, t.conversions() as f64));
        }
    }

    #[test]
    fn top_paths_rates_times_and_lengths() {
        let mut t = Table::default();
        // metro > tinder: 3 conversions after 60, 120 and 600 s (+ 30 s).
        for d in [60u64, 120, 630] {
            t.add_converted("metro > tinder", 1, d as f64);
            t.add_delay("metro > tinder", d / 60 * 60, 1);
        }
        t.add_not_converted("metro > tinder", 1);
        t.add_converted("direct", 2, 0.0);
        t.add_not_converted("metro", 7);
        let top = t.top(10);
        assert_eq!(top[0].path, "metro > tinder");
        assert_eq!(top[0].conversions, 3);
        assert!(close(top[0].conversion_rate, 0.75));
        assert_eq!(top[0].mean_time_to_signup_s, Some(270.0));
        assert_eq!(top[0].median_time_to_signup_s, Some(120));
        assert_eq!(top[1].path, "direct");
        assert_eq!(top[1].mean_time_to_signup_s, None);
        assert_eq!(top[2].path, "metro");
        assert_eq!(top[2].conversion_rate, 0.0);
        assert_eq!(t.top(1).len(), 1);
        let lengths = t.lengths();
        assert_eq!(
            lengths,
            vec![
                LengthLine {
                    length: 0,
                    or_more: false,
                    conversions: 2,
                    without_signup: 0
                },
                LengthLine {
                    length: 1,
                    or_more: false,
                    conversions: 0,
                    without_signup: 7
                },
                LengthLine {
                    length: 2,
                    or_more: false,
                    conversions: 3,
                    without_signup: 1
                },
            ]
        );
        assert_eq!(t.through("tinder").paths.len(), 1);
        let hours: BTreeMap<u64, i64> = [(0, 2), (3600, 3), (7200, 1)].into_iter().collect();
        assert_eq!(median_bucket(&hours, 6), Some((3600, 2)));
        assert_eq!(median_bucket(&hours, 3), Some((0, 0)));
        assert_eq!(median_bucket(&hours, 0), None);
        // Negative rows (a retraction) bring a path back to nothing.
        t.add_not_converted("metro", -7);
        assert!(!t.paths.contains_key("metro"));
    }
}
