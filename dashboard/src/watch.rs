//! Pipeline gauges for alerting, refreshed in the background: events
//! waiting for the processor, freshness, the newest sign-up and whether a
//! campaign phase is running now (`deploy/prometheus/alerts.yml` reads them).

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

/// Refreshes the gauges every `every` until `shutdown`.
pub fn spawn(
    served: Served,
    registry: &Registry,
    every: Duration,
    shutdown: Shutdown,
) -> Result<(), prometheus::Error> {
    let gauges = Gauges::register(registry)?;
    tokio::spawn(async move {
        loop {
            let now = Utc::now();
            // The campaign running now (or the last one that started).
            let state = &served.states[served.campaigns.current(now)];
            let active = state.campaign.phase_at(now) != ensemble_core::campaign::HORS_PHASE;
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
