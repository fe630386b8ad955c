//! Pipeline gauges for alerting, refreshed in the background: events
//! waiting for the processor, freshness, the newest sign-up and whether a
//! campaign phase is running now (`deploy/prometheus/alerts.yml` reads them);
//! and, on its own slower schedule, the reconciliation of every served
//! campaign's figures against its raw events (`crate::reconciliation`).

use std::time::Duration;

use chrono::Utc;
use ensemble_core::Shutdown;
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

use crate::campaigns::Served;
use crate::endpoints::live::progress;

#[derive(Debug, Clone)]
struct Gauges {
    pending: IntGauge,
    partitions: IntGaugeVec,
    freshness: IntGauge,
    last_signup: IntGauge,
    phase_active: IntGauge,
    errors: IntCounter,
}

/// The reconciliation's gauges, summed over the served campaigns.
#[derive(Debug, Clone)]
struct DriftGauges {
    /// |difference| summed over drifting days, per comparison.
    events: IntGaugeVec,
    days: IntGauge,
    checked: IntGauge,
    errors: IntCounter,
}

impl DriftGauges {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let s = Self {
            events: IntGaugeVec::new(
                Opts::new(
                    "ensemble_pipeline_figures_drift_events",
                    "Events by which the stored figures disagree with the ledger (between=figures_ledger) \
                     or the ledger with the raw events (between=ledger_events), summed over the days \
                     whose difference two reconciliations in a row found unchanged; 0 when they agree",
                ),
                &["between"],
            )?,
            days: IntGauge::with_opts(Opts::new(
                "ensemble_pipeline_figures_drift_days",
                "Days whose figures drift from the raw events (see ensemble_pipeline_figures_drift_events)",
            ))?,
            checked: IntGauge::with_opts(Opts::new(
                "ensemble_pipeline_reconciled_timestamp_seconds",
                "When (Unix) every served campaign was last reconciled (0: not yet)",
            ))?,
            errors: IntCounter::with_opts(Opts::new(
                "ensemble_pipeline_reconcile_errors_total",
                "Reconciliations that could not read their counts from ClickHouse",
            ))?,
        };
        registry.register(Box::new(s.events.clone()))?;
        registry.register(Box::new(s.days.clone()))?;
        registry.register(Box::new(s.checked.clone()))?;
        registry.register(Box::new(s.errors.clone()))?;
        for between in ensemble_model::reconcile::Between::ALL {
            s.events.with_label_values(&[between.as_str()]).set(0);
        }
        Ok(s)
    }
}

/// Reconciles every campaign of `served` every `every` until `shutdown`.
fn spawn_reconciliation(served: Served, gauges: DriftGauges, every: Duration, shutdown: Shutdown) {
    use ensemble_model::reconcile::Between;
    tokio::spawn(async move {
        loop {
            let mut sums = [0i64; 2];
            let mut days = 0i64;
            let mut all_read = true;
            for state in &served.states {
                match crate::reconciliation::check(state).await {
                    Ok(report) => {
                        days += report.drift.len() as i64;
                        for (sum, between) in sums.iter_mut().zip(Between::ALL) {
                            *sum += report
                                .drift
                                .iter()
                                .map(|d| between.of(d).abs())
                                .sum::<i64>();
                        }
                    }
                    Err(e) => {
                        all_read = false;
                        gauges.errors.inc();
                        tracing::warn!(campaign = %state.campaign.id, error = %e, "figures not reconciled");
                    }
                }
            }
            if all_read {
                for (sum, between) in sums.iter().zip(Between::ALL) {
                    gauges
                        .events
                        .with_label_values(&[between.as_str()])
                        .set(*sum);
                }
                gauges.days.set(days);
                gauges.checked.set(Utc::now().timestamp());
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

impl Gauges {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let g = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help));
        let s = Self {
            pending: g(
                "ensemble_pipeline_pending_events",
                "Events in Kafka not yet committed by the processor group, i.e. not yet in ClickHouse (-1: broker unreachable)",
            )?,
            partitions: IntGaugeVec::new(
                Opts::new(
                    "ensemble_pipeline_partitions",
                    "Partitions of the events topic by the processor group's progress: up_to_date, behind, \
                     no_commit (messages and no committed offset), ahead_of_end (committed offset past the \
                     partition's end: the broker lost its data; the processor rewinds)",
                ),
                &["state"],
            )?,
            freshness: g(
                "ensemble_pipeline_freshness_seconds",
                "Now minus receipt of the newest event processed in the last hour (-1: none)",
            )?,
            last_signup: g(
                "ensemble_pipeline_last_signup_timestamp_seconds",
                "Receipt time (Unix) of the newest human sign-up in ClickHouse (0: none)",
            )?,
            phase_active: g(
                "ensemble_campaign_phase_active",
                "1 while the current time is inside a campaign phase",
            )?,
            errors: IntCounter::with_opts(Opts::new(
                "ensemble_pipeline_watch_errors_total",
                "Failed refreshes of the pipeline gauges (ClickHouse or broker unreachable)",
            ))?,
        };
        registry.register(Box::new(s.pending.clone()))?;
        registry.register(Box::new(s.partitions.clone()))?;
        registry.register(Box::new(s.freshness.clone()))?;
        registry.register(Box::new(s.last_signup.clone()))?;
        registry.register(Box::new(s.phase_active.clone()))?;
        registry.register(Box::new(s.errors.clone()))?;
        Ok(s)
    }
}

/// Refreshes the gauges every `every.0` and reconciles the figures every
/// `every.1`, until `shutdown`.
pub fn spawn(
    served: Served,
    registry: &Registry,
    (every, reconcile_every): (Duration, Duration),
    shutdown: Shutdown,
) -> Result<(), prometheus::Error> {
    let gauges = Gauges::register(registry)?;
    spawn_reconciliation(
        served.clone(),
        DriftGauges::register(registry)?,
        reconcile_every,
        shutdown.clone(),
    );
    tokio::spawn(async move {
        loop {
            let now = Utc::now();
            // The campaign running now (or the last one that started).
            let state = &served.states[served.campaigns.current(now)];
            let active = state.campaign.phase_at(now) != ensemble_model::campaign::HORS_PHASE;
            gauges.phase_active.set(i64::from(active));
            match progress(state, now).await {
                Ok(p) => {
                    match p.pending_events {
                        Some(n) => gauges.pending.set(n),
                        None => {
                            gauges.pending.set(-1);
                            gauges.errors.inc();
                        }
                    }
                    for state in ensemble_core::kafka::PartitionState::ALL {
                        // -1: unknown (broker unreachable), never a reassuring 0.
                        let n = if p.pending_events.is_some() {
                            p.partitions.get(state.as_str()).map_or(0, |n| *n as i64)
                        } else {
                            -1
                        };
                        gauges
                            .partitions
                            .with_label_values(&[state.as_str()])
                            .set(n);
                    }
                    gauges.freshness.set(p.freshness_seconds.unwrap_or(-1));
                    gauges
                        .last_signup
                        .set(p.last_signup.map_or(0, |t| t.timestamp()));
                }
                Err(e) => {
                    gauges.errors.inc();
                    tracing::warn!(error = ?e, "pipeline gauges not refreshed");
                }
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
    Ok(())
}
