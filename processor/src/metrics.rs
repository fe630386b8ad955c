//! The processor's Prometheus metrics (`ensemble_processor_*`).

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub consumed: IntCounter,
    pub inserted: IntCounter,
    /// Rows ClickHouse accepted, by the campaign they were sent to.
    pub inserted_by_campaign: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub batch_rows: Histogram,
    pub insert_duration: Histogram,
    pub insert_failures: IntCounter,
    pub batches_completed: IntCounter,
    /// Batches read and computed while the batch before was writing.
    pub prepared_ahead: IntCounter,
    /// A batch's visitors by where their history came from.
    pub history_visitors: IntCounterVec,
    /// Events in the cache of histories, by campaign.
    pub history_cached: IntGaugeVec,
    pub lag: IntGaugeVec,
    pub ahead_of_end: IntGaugeVec,
    pub rewinds: IntCounter,
    /// A committed offset past the end the broker reported, whose message
    /// the broker still serves: its end was wrong, nothing was rewound.
    pub end_reported_low: IntCounter,
    pub assigned: IntGauge,
    pub rejoins: IntCounter,
    pub revokes: IntCounterVec,
    pub revoked_rows_dropped: IntCounter,
    pub values_redacted: IntCounterVec,
    pub delay: HistogramVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let consumed = IntCounter::new(
            "ensemble_processor_messages_consumed_total",
            "Kafka messages consumed",
        )?;
        let inserted = IntCounter::new(
            "ensemble_processor_rows_inserted_total",
            "Rows ClickHouse accepted (duplicates included; queries remove them)",
        )?;
        let inserted_by_campaign = IntCounterVec::new(
            Opts::new(
                "ensemble_processor_rows_by_campaign_total",
                "Rows ClickHouse accepted, by the campaign (and so the database) they belong to",
            ),
            &["campaign"],
        )?;
        let dead_lettered = IntCounterVec::new(
            Opts::new(
                "ensemble_processor_messages_dead_lettered_total",
                "Messages sent to the dead-letter topic, by reason",
            ),
            &["reason"],
        )?;
        let batch_rows = Histogram::with_opts(
            HistogramOpts::new("ensemble_processor_batch_rows", "Rows per INSERT")
                .buckets(exponential_buckets(1.0, 4.0, 9)?),
        )?;
        let insert_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ensemble_processor_insert_duration_seconds",
                "Time of one successful INSERT (its events, ledger read, accounting and ledger write; \
                 not the time it waited for the batch before)",
            )
            .buckets(exponential_buckets(0.002, 2.0, 14)?),
        )?;
        let insert_failures = IntCounter::new(
            "ensemble_processor_insert_failures_total",
            "Failed INSERT attempts (each retried; offsets do not move)",
        )?;
        let prepared_ahead = IntCounter::new(
            "ensemble_processor_batches_prepared_ahead_total",
            "Batches whose history was read and accounting computed while the batch before \
             was still writing (its visitors handed over, see docs/processor.md)",
        )?;
        let history_visitors = IntCounterVec::new(
            Opts::new(
                "ensemble_processor_history_visitors_total",
                "A batch's visitors by where their accounted history came from: source=cache (kept \
                 since this process last wrote them), source=batch_before (handed over by the batch \
                 still writing), source=ledger (read from ClickHouse), source=new (not looked for: \
                 not in the filter of the ledger's visitors)",
            ),
            &["source"],
        )?;
        let history_cached = IntGaugeVec::new(
            Opts::new(
                "ensemble_processor_history_cached_events",
                "Events in the cache of visitors' histories (see docs/processor.md), by campaign",
            ),
            &["campaign"],
        )?;
        let batches_completed = IntCounter::new(
            "ensemble_processor_batches_completed_total",
            "Tables of a ledger batch that a view had not written (the view failed, or \
             ClickHouse stopped mid-INSERT), written by the processor from the ledger",
        )?;
        let lag = IntGaugeVec::new(
            Opts::new(
                "ensemble_processor_consumer_lag_messages",
                "High watermark minus committed offset, per partition",
            ),
            &["partition"],
        )?;
        let ahead_of_end = IntGaugeVec::new(
            Opts::new(
                "ensemble_processor_committed_ahead_of_end_messages",
                "Committed offset minus the partition's end, where positive: the broker lost or reset \
                 its data (the processor rewinds to the partition's start)",
            ),
            &["partition"],
        )?;
        let rewinds = IntCounter::new(
            "ensemble_processor_rewinds_total",
            "Partitions rewound to their first offset because the committed offset was past their end",
        )?;
        let end_reported_low = IntCounter::new(
            "ensemble_processor_partition_end_reported_low_total",
            "Times the broker reported a partition's end below the group's committed offset while still \
             serving the last committed message: a broker fault in its offsets, not lost data (no rewind)",
        )?;
        let assigned = IntGauge::new(
            "ensemble_processor_assigned_partitions",
            "Partitions of the events topic this member consumes",
        )?;
        let rejoins = IntCounter::new(
            "ensemble_processor_group_rejoins_total",
            "Times this member left and rejoined its group because partitions with waiting messages \
             had no member consuming them",
        )?;
        let revokes = IntCounterVec::new(
            Opts::new(
                "ensemble_processor_partitions_revoked_total",
                "Rebalances that took partitions from this member, by what it did first \
                 (insert=waited: finished the INSERT under way and committed it; insert=none)",
            ),
            &["insert"],
        )?;
        let revoked_rows_dropped = IntCounter::new(
            "ensemble_processor_revoked_rows_dropped_total",
            "Rows of revoked partitions dropped from the batch being filled (their next owner reads them again)",
        )?;
        let values_redacted = IntCounterVec::new(
            Opts::new(
                "ensemble_processor_values_redacted_total",
                "Values of consumed messages in which personal data was still found and replaced, by field \
                 (the collector redacts before Kafka: non-zero means another producer writes to the topic)",
            ),
            &["field"],
        )?;
        let delay = HistogramVec::new(
            HistogramOpts::new(
                "ensemble_processor_event_delay_seconds",
                "Delay from event time (from=event) or collector receipt (from=ingest) to insertion",
            )
            .buckets(exponential_buckets(0.05, 2.0, 16)?),
            &["from"],
        )?;
        for c in [
            Box::new(consumed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(inserted.clone()),
            Box::new(inserted_by_campaign.clone()),
            Box::new(dead_lettered.clone()),
            Box::new(batch_rows.clone()),
            Box::new(insert_duration.clone()),
            Box::new(insert_failures.clone()),
            Box::new(batches_completed.clone()),
            Box::new(prepared_ahead.clone()),
            Box::new(history_visitors.clone()),
            Box::new(history_cached.clone()),
            Box::new(lag.clone()),
            Box::new(ahead_of_end.clone()),
            Box::new(rewinds.clone()),
            Box::new(end_reported_low.clone()),
            Box::new(assigned.clone()),
            Box::new(rejoins.clone()),
            Box::new(revokes.clone()),
            Box::new(revoked_rows_dropped.clone()),
            Box::new(values_redacted.clone()),
            Box::new(delay.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(Self {
            registry,
            consumed,
            inserted,
            inserted_by_campaign,
            dead_lettered,
            batch_rows,
            insert_duration,
            insert_failures,
            batches_completed,
            prepared_ahead,
            history_visitors,
            history_cached,
            lag,
            ahead_of_end,
            rewinds,
            end_reported_low,
            assigned,
            rejoins,
            revokes,
            revoked_rows_dropped,
            values_redacted,
            delay,
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
