-- Hourly rollup for the dashboard: per hour × channel × phase × type × action
-- × placement × device × bot flag, the exact set of event ids and of visitors
-- as uniqExact states. A duplicate delivery adds an event id already in the
-- set, so uniqExactMerge(events) stays exact before and after merges.
CREATE TABLE IF NOT EXISTS events_hourly
(
    hour DateTime,
    channel String,
    phase String,
    event_type String,
    action String,
    placement String,
    device_class String,
    is_bot UInt8,
    events AggregateFunction(uniqExact, UUID),
    visitors AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, channel, phase, event_type, action, placement, device_class, is_bot);

CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly_mv TO events_hourly AS
SELECT
    toStartOfHour(ts) AS hour,
    channel,
    phase,
    event_type,
    action,
    placement,
    device_class,
    is_bot,
    uniqExactState(event_id) AS events,
    uniqExactState(visitor_id) AS visitors
FROM events
GROUP BY hour, channel, phase, event_type, action, placement, device_class, is_bot;
