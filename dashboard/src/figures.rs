//! The fast path: answers read from the `facts` table (see
//! `ensemble_core::facts`) instead of the events, for the questions the
//! facts cover — the campaign's whole range (the default), any phase,
//! channel and bot filter. A `from`/`to` other than the campaign's range, a
//! device or a placement filter go to the events (the slow, general path).

use clickhouse::Row;
use ensemble_core::facts::{self, FactKey, Facts, Value, ALL};
use ensemble_core::ledger;
use serde::Deserialize;

use crate::api::{ApiError, ApiState};
use crate::filters::Filters;

/// Whether the facts answer these filters.
pub fn covers(state: &ApiState, f: &Filters) -> bool {
    let range = facts::range_secs(&state.campaign);
    let asked = (
        u64::try_from(f.from.timestamp()).unwrap_or(0),
        u64::try_from(f.to.timestamp()).unwrap_or(0),
    );
    !f.from_events && f.device.is_none() && f.placement.is_none() && range == Some(asked)
}

#[derive(Debug, Row, Deserialize)]
struct FactRow {
    metric: String,
    scope: String,
    phase: String,
    channel: String,
    placement: String,
    event_type: String,
    action: String,
    k: String,
    k2: String,
    bucket: u32,
    total: i64,
    cr: f64,
}

/// The figures of `metrics` for the request's bot setting, corrected for
/// contacts seen on several visitors.
pub async fn load(
    state: &ApiState,
    f: &Filters,
    metrics: &[&'static str],
) -> Result<Facts, ApiError> {
    fetch(state, f, metrics, None).await
}

/// The figures of one metric in the request's scope for some channels,
/// each with `bucket` in its `[from, to)` (the funnel's seconds around its
/// median), in one query.
pub async fn load_buckets(
    state: &ApiState,
    f: &Filters,
    metric: &'static str,
    ranges: &[(String, u32, u32)],
) -> Result<Facts, ApiError> {
    if ranges.is_empty() {
        return Ok(Facts::new());
    }
    fetch(state, f, &[metric], Some(ranges)).await
}

/// Metric names for `metric IN (…)`: inlined (our own constants), not bound,
/// so that ClickHouse reads only those metrics' marks of the sorting key.
fn listed(metrics: &[&'static str]) -> String {
    metrics
        .iter()
        .map(|m| format!("'{m}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn fetch(
    state: &ApiState,
    f: &Filters,
    metrics: &[&'static str],
    ranges: Option<&[(String, u32, u32)]>,
) -> Result<Facts, ApiError> {
    let bots = u8::from(f.include_bots);
    // Ranges of the sorting key: ClickHouse reads only their marks.
    let narrow = match ranges {
        Some(r) => format!(
            "AND scope = ? AND phase = '' AND placement = '' AND event_type = '' AND action = '' \
             AND k = '' AND k2 = '' AND ({})",
            vec!["(channel = ? AND bucket >= ? AND bucket < ?)"; r.len()].join(" OR ")
        ),
        None => String::new(),
    };
    let listed = listed(metrics);
    let mut q = state
        .client
        .query(&format!(
            "SELECT metric, scope, phase, channel, placement, event_type, action, k, k2, bucket, \
             sum(n) AS total, sum(credit) AS cr FROM facts WHERE metric IN ({listed}) AND bots = ? {narrow} \
             GROUP BY metric, scope, phase, channel, placement, event_type, action, k, k2, bucket \
             HAVING total != 0 OR cr != 0"
        ))
        .bind(bots);
    if let Some(ranges) = ranges {
        q = q.bind(scope(f));
        for (channel, from, to) in ranges {
            q = q.bind(channel.as_str()).bind(*from).bind(*to);
        }
    }
    let rows: Vec<FactRow> = q.fetch_all().await?;
    let mut out = Facts::new();
    for r in rows {
        let Some(metric) = metrics.iter().find(|m| **m == r.metric) else {
            continue;
        };
        out.insert(
            FactKey {
                metric,
                bots,
                scope: r.scope,
                phase: r.phase,
                channel: r.channel,
                placement: r.placement,
                event_type: r.event_type,
                action: r.action,
                k: r.k,
                k2: r.k2,
                bucket: r.bucket,
            },
            Value {
                n: r.total,
                credit: r.cr,
            },
        );
    }
    let mut fix = ledger::correction(&state.client, &state.campaign).await?;
    fix.retain(|k, _| {
        k.bots == bots
            && metrics.contains(&k.metric)
            && ranges.is_none_or(|r| {
                k.scope == scope(f)
                    && r.iter()
                        .any(|(c, from, to)| k.channel == *c && k.bucket >= *from && k.bucket < *to)
            })
    });
    facts::add(&mut out, &fix, 1);
    Ok(out)
}

/// The scope the filters ask for: their phase, or every phase.
pub fn scope(f: &Filters) -> &str {
    f.phase.as_deref().unwrap_or(ALL)
}

/// The facts of `metric` in the request's scope.
pub fn select<'a>(
    facts: &'a Facts,
    f: &'a Filters,
    metric: &'static str,
) -> impl Iterator<Item = (&'a FactKey, &'a Value)> + 'a {
    facts
        .iter()
        .filter(move |(k, _)| k.metric == metric && k.scope == scope(f))
}

/// A count as the API shows it (never negative).
pub fn count(v: &Value) -> u64 {
    u64::try_from(v.n).unwrap_or(0)
}

#[derive(Debug, Row, Deserialize)]
struct BucketSum {
    bucket: u32,
    total: i64,
}

/// One metric summed per `bucket` in ClickHouse (a time series: thousands
/// of buckets, not the facts behind them), in the request's scope for
/// scoped metrics (`phase` filters the phase dimension of unscoped ones),
/// for its channel (or every channel); corrected like [`load`].
pub async fn series(
    state: &ApiState,
    f: &Filters,
    metric: &'static str,
    scoped: bool,
) -> Result<Vec<(u32, i64)>, ApiError> {
    let bots = u8::from(f.include_bots);
    let mut cond = String::new();
    let mut binds: Vec<&str> = Vec::new();
    if scoped {
        cond.push_str(" AND scope = ? AND channel = ?");
        binds.push(scope(f));
        binds.push(f.channel.as_deref().unwrap_or(ALL));
    } else {
        cond.push_str(" AND scope = ''");
        if let Some(p) = &f.phase {
            cond.push_str(" AND phase = ?");
            binds.push(p);
        }
        if let Some(c) = &f.channel {
            cond.push_str(" AND channel = ?");
            binds.push(c);
        }
    }
    let mut q = state
        .client
        .query(&format!(
            "SELECT bucket, sum(n) AS total FROM facts WHERE metric = '{metric}' AND bots = ?{cond} \
             GROUP BY bucket ORDER BY bucket"
        ))
        .bind(bots);
    for b in binds {
        q = q.bind(b);
    }
    let rows: Vec<BucketSum> = q.fetch_all().await?;
    let mut out: std::collections::BTreeMap<u32, i64> =
        rows.into_iter().map(|r| (r.bucket, r.total)).collect();
    let fix = ledger::correction(&state.client, &state.campaign).await?;
    for (k, v) in &fix {
        let wanted = k.bots == bots
            && k.metric == metric
            && if scoped {
                k.scope == scope(f) && k.channel == f.channel.as_deref().unwrap_or(ALL)
            } else {
                f.phase.as_ref().is_none_or(|p| *p == k.phase)
                    && f.channel.as_ref().is_none_or(|c| *c == k.channel)
            };
        if wanted {
            *out.entry(k.bucket).or_default() += v.n;
        }
    }
    Ok(out.into_iter().collect())
}

#[derive(Debug, Row, Deserialize)]
struct ChannelSum {
    metric: String,
    channel: String,
    k: String,
    bucket: u32,
    total: i64,
}

/// A scoped metric's figures per (metric, channel, `k`, `bucket`).
pub type ByChannel = std::collections::BTreeMap<(&'static str, String, String, u32), i64>;

/// Scoped metrics summed per channel × `k` × `bucket` in ClickHouse, in
/// the request's scope, in one query; corrected like [`load`].
pub async fn by_channel(
    state: &ApiState,
    f: &Filters,
    metrics: &[&'static str],
) -> Result<ByChannel, ApiError> {
    let bots = u8::from(f.include_bots);
    let listed = listed(metrics);
    let rows: Vec<ChannelSum> = state
        .client
        .query(&format!(
            "SELECT metric, channel, k, bucket, sum(n) AS total FROM facts WHERE metric IN ({listed}) \
             AND bots = ? AND scope = ? GROUP BY metric, channel, k, bucket HAVING total != 0"
        ))
        .bind(bots)
        .bind(scope(f))
        .fetch_all()
        .await?;
    let mut out = ByChannel::new();
    for r in rows {
        if let Some(metric) = metrics.iter().find(|m| **m == r.metric) {
            out.insert((metric, r.channel, r.k, r.bucket), r.total);
        }
    }
    let fix = ledger::correction(&state.client, &state.campaign).await?;
    for (k, v) in fix {
        if k.bots == bots && metrics.contains(&k.metric) && k.scope == scope(f) {
            *out.entry((k.metric, k.channel, k.k, k.bucket)).or_default() += v.n;
        }
    }
    out.retain(|_, n| *n != 0);
    Ok(out)
}
