//! The figures reconciled against the raw events on a schedule: each
//! campaign's three per-day counts (`ensemble_core::reconciliation`), the
//! drift rule of `ensemble_model::reconcile`, the last result kept for
//! `/api/live` and the gauges `ensemble_pipeline_figures_drift_*`.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use ensemble_model::figures;
use ensemble_model::reconcile::{self, Counts, Drift};
use serde_json::{json, Value};

use crate::state::ApiState;

/// One campaign's last reconciliation and the counts it compares the next with.
#[derive(Debug, Default)]
pub struct Latest {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counts: Option<Counts>,
    report: Option<Report>,
}

/// What the last reconciliation found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub checked_at: DateTime<Utc>,
    /// Days with any count.
    pub days: usize,
    /// Days whose differences were the same in this check and the one before.
    pub drift: Vec<Drift>,
    /// The counts could not be read (logged); the drift is the last known.
    pub failed: bool,
}

impl Latest {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere while holding it;
        // the data (two snapshots) is still whole.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last report, if a check ran.
    pub fn report(&self) -> Option<Report> {
        self.lock().report.clone()
    }

    /// Records a check's counts and returns its report.
    fn record(&self, counts: Counts, at: DateTime<Utc>) -> Report {
        let mut inner = self.lock();
        let drift = reconcile::drift(inner.counts.as_ref(), &counts);
        let report = Report {
            checked_at: at,
            days: counts.days().len(),
            drift,
            failed: false,
        };
        inner.counts = Some(counts);
        inner.report = Some(report.clone());
        report
    }

    fn failed(&self, at: DateTime<Utc>) {
        let mut inner = self.lock();
        let mut report = inner.report.clone().unwrap_or(Report {
            checked_at: at,
            days: 0,
            drift: Vec::new(),
            failed: true,
        });
        report.failed = true;
        inner.report = Some(report);
    }
}

/// Runs one reconciliation of `state`'s campaign.
pub async fn check(state: &ApiState) -> Result<Report, clickhouse::error::Error> {
    let at = Utc::now();
    match ensemble_core::reconciliation::counts(&state.client, &state.campaign).await {
        Ok(counts) => {
            let report = state.reconciliation.record(counts, at);
            for d in &report.drift {
                tracing::error!(
                    campaign = %state.campaign.id,
                    day = %figures::date_of(d.day),
                    events = d.events,
                    accounted = d.accounted,
                    figures = d.figures,
                    "figures drift from the raw events (stable across two checks): \
                     see the runbook's EnsembleFiguresDrift"
                );
            }
            Ok(report)
        }
        Err(e) => {
            state.reconciliation.failed(at);
            Err(e)
        }
    }
}

/// `/api/live`'s `reconciliation`: when it last ran and the days that drift.
pub fn live_json(report: Option<&Report>) -> Value {
    match report {
        None => json!({"checked_at": null, "agree": null, "days_checked": 0, "drift": []}),
        Some(r) => json!({
            "checked_at": r.checked_at,
            "last_check_failed": r.failed,
            "agree": r.drift.is_empty(),
            "days_checked": r.days,
            "drift": r.drift.iter().map(|d| json!({
                "day": crate::answers::date(d.day),
                "events": d.events,
                "accounted": d.accounted,
                "figures": d.figures,
                "figures_minus_accounted": d.figures_vs_ledger(),
                "accounted_minus_events": d.ledger_vs_events(),
            })).collect::<Vec<_>>(),
        }),
    }
}
