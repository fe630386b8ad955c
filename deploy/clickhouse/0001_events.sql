-- Every processed event, one row per delivery. Duplicates (client retries,
-- redelivery after a crash) share event_id and every sorting-key column, so
-- ReplacingMergeTree folds them on merge; queries stay exact before merges by
-- counting distinct event_id. Runs on ClickHouse 18.16 and current releases:
-- no LowCardinality, DateTime64, TTL.
CREATE TABLE IF NOT EXISTS events
(
    event_id UUID,
    event_type String,
    action String,
    ts DateTime,
    ts_ms UInt16,
    received_at DateTime,
    processed_at DateTime,
    visitor_id String,
    channel String,
    placement String,
    phase String,
    utm_source String,
    utm_medium String,
    utm_campaign String,
    utm_content String,
    utm_term String,
    url String,
    referrer_host String,
    device_class String,
    os_family String,
    is_bot UInt8,
    contact_hash String,
    consent_results UInt8,
    consent_newsletter UInt8,
    custom_name String,
    props String,
    ts_clamped UInt8,
    imported UInt8
)
ENGINE = ReplacingMergeTree(processed_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (visitor_id, ts, event_id);
