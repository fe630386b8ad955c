//! The collector's Prometheus metrics (`ensemble_ingest_*`). Label values
//! come only from fixed sets: route templates, status codes, event types,
//! rejection codes, failure kinds.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub events_accepted: IntCounterVec,
    pub events_rejected: IntCounterVec,
    pub produce_duration: Histogram,
    pub produce_failures: IntCounterVec,
    pub in_flight: IntGauge,
    pub queue_depth: IntGauge,
    pub redirects: IntCounterVec,
    pub values_redacted: IntCounterVec,
    pub visit_tokens: IntCounterVec,
    pub repeat_scans: IntCounter,
    pub values_undeclared: IntCounterVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry. Fails only on a duplicate
    /// name, a programming error caught by the unit test.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "ensemble_ingest_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        let events_accepted = IntCounterVec::new(
            Opts::new(
                "ensemble_ingest_events_accepted_total",
                "Events confirmed in Kafka, by type",
            ),
            &["type"],
        )?;
        let events_rejected = IntCounterVec::new(
            Opts::new(
                "ensemble_ingest_events_rejected_total",
                "Events or requests refused, by reason code",
            ),
            &["reason"],
        )?;
        let produce_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ensemble_ingest_produce_duration_seconds",
                "Time from enqueue to the last delivery report of a request",
            )
            .buckets(exponential_buckets(0.001, 2.0, 14)?),
        )?;
        let produce_failures = IntCounterVec::new(
            Opts::new(
                "ensemble_ingest_produce_failures_total",
                "Requests answered 503 because Kafka did not confirm, by kind",
            ),
            &["kind"],
        )?;
        let in_flight = IntGauge::new(
            "ensemble_ingest_requests_in_flight",
            "Requests being served",
        )?;
        let queue_depth = IntGauge::new(
            "ensemble_ingest_producer_queue_messages",
            "Messages queued or in flight in the Kafka producer",
        )?;
        let redirects = IntCounterVec::new(
            Opts::new(
                "ensemble_ingest_redirects_total",
                "Redirects served, by whether the placement code is known and whether the scan was recorded (yes, no, rate_limited)",
            ),
            &["placement", "recorded"],
        )?;
        let values_redacted = IntCounterVec::new(
            Opts::new(
                "ensemble_ingest_values_redacted_total",
                "Values in which an e-mail address, phone number or IP address was replaced by a marker, by field",
            ),
            &["field"],
        )?;
        registry.register(Box::new(values_redacted.clone()))?;
        let visit_tokens = IntCounterVec::new(
            Opts::new(
                "ensemble_ingest_visit_tokens_total",
                "Visit tokens received from landing pages, by result: honoured, expired, forged, malformed, replayed",
            ),
            &["result"],
        )?;
        registry.register(Box::new(visit_tokens.clone()))?;
        let repeat_scans = IntCounter::new(
            "ensemble_ingest_repeat_scans_total",
            "Scans flagged as repeats: the same client and placement within the repeat window (stored, not counted)",
        )?;
        registry.register(Box::new(repeat_scans.clone()))?;
        let values_undeclared = IntCounterVec::new(
            Opts::new(
                "ensemble_ingest_values_undeclared_total",
                "Values the campaign file does not declare, stored as (undeclared), by field (utm_*, url)",
            ),
            &["field"],
        )?;
        registry.register(Box::new(values_undeclared.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(events_accepted.clone()))?;
        registry.register(Box::new(events_rejected.clone()))?;
        registry.register(Box::new(produce_duration.clone()))?;
        registry.register(Box::new(produce_failures.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(redirects.clone()))?;
        Ok(Self {
            registry,
            requests,
            events_accepted,
            events_rejected,
            produce_duration,
            produce_failures,
            in_flight,
            queue_depth,
            redirects,
            values_redacted,
            visit_tokens,
            repeat_scans,
            values_undeclared,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_metrics_register() {
        assert!(super::Metrics::new().is_ok());
    }
}
