-- A conversion's credits on the conversion's own row.
--
-- The analysts' journeys held one row per conversion × model × credited
-- channel × phase of the credited touches (kind `credit`): a quarter of
-- the journeys' rows, 0.44 rows per event of the processor bench's live
-- profile. A conversion's row now carries its credits under every model
-- in `credits` (`ensemble_model::journeys::Key::credits`): records parted
-- by the byte 0x1D, each `model`, `channel`, touches' `phase`,
-- `conversion_phase` and the share, parted by 0x1C. The text is part of
-- the key, so a conversion whose credits move (a touch before it arrives
-- late) is its old row taken away (`n` -1) and its new one added (`n` +1);
-- the `credits` view splits the text of the rows whose `n` sums to more
-- than 0. The columns only credit rows used (`model`, `conversion_phase`,
-- `credit`) go.
--
-- A summing table's key cannot gain a column, so the table is made again
-- and filled by a rebuild from `events` (`REBUILT_FROM_EVENTS` in
-- core/src/migrate.rs; `ensemble-processor migrate` runs it). The views
-- that read it by name (`touches`, `placement_days`) follow it.
DROP TABLE IF EXISTS journeys_mv;

DROP TABLE IF EXISTS {sql_database}.credits;

DROP TABLE IF EXISTS {sql_database}.conversions;

DROP TABLE IF EXISTS {sql_database}.journeys;

CREATE TABLE IF NOT EXISTS {sql_database}.journeys
(
    visitor_id String,
    kind String,
    ms UInt64,
    event_id UUID,
    day Date,
    phase String,
    channel String,
    placement String,
    device String,
    credits String,
    n Int64,
    n_events Int64,
    n_exposures Int64,
    n_scans Int64,
    n_visits Int64,
    n_signups Int64
)
ENGINE = SummingMergeTree((n, n_events, n_exposures, n_scans, n_visits, n_signups))
ORDER BY (kind, visitor_id, ms, event_id, day, placement, channel, phase, device, credits);

CREATE MATERIALIZED VIEW IF NOT EXISTS journeys_mv TO {sql_database}.journeys AS
SELECT
    carried_record[1] AS visitor_id,
    carried_record[2] AS kind,
    toUInt64(carried_record[3]) AS ms,
    toUUID(carried_record[4]) AS event_id,
    toDate(carried_record[5]) AS day,
    carried_record[6] AS phase,
    carried_record[7] AS channel,
    carried_record[8] AS placement,
    carried_record[9] AS device,
    carried_record[11] AS credits,
    toInt64(carried_record[12]) AS n,
    toInt64(carried_record[13]) AS n_events,
    toInt64(carried_record[14]) AS n_exposures,
    toInt64(carried_record[15]) AS n_scans,
    toInt64(carried_record[16]) AS n_visits,
    toInt64(carried_record[17]) AS n_signups
FROM ledger
ARRAY JOIN arrayMap(l -> splitByChar('\x1F', l), arrayFilter(l -> l != '', splitByChar('\x1E', journey))) AS carried_record;

-- One row per conversion: the first sign-up of a contact (a contact seen
-- on several visitors converts once, at its earliest sign-up, ties broken
-- by event id: the others are in `later_conversions`), bots left out.
CREATE VIEW IF NOT EXISTS {sql_database}.conversions AS
SELECT
    visitor_id,
    toDateTime(intDiv(ms, 1000)) AS at,
    day,
    phase,
    channel,
    placement,
    device,
    event_id AS signup_event_id
FROM {sql_database}.journeys
WHERE kind = 'conversion'
    AND event_id GLOBAL NOT IN
    (
        SELECT event_id
        FROM {sql_database}.later_conversions
        GROUP BY event_id
        HAVING sum(n) > 0
    )
GROUP BY visitor_id, ms, event_id, day, phase, channel, placement, device
HAVING sum(n) > 0;

-- One row per conversion × model × credited channel × phase of the
-- credited touches: `credit` is the conversion's share (a conversion's
-- rows of one model sum to 1; `direct` without a touch in the lookback).
CREATE VIEW IF NOT EXISTS {sql_database}.credits AS
SELECT
    visitor_id,
    toDateTime(intDiv(ms, 1000)) AS at,
    day,
    credit_record[4] AS conversion_phase,
    credit_record[1] AS model,
    credit_record[2] AS channel,
    credit_record[3] AS touch_phase,
    toFloat64(credit_record[5]) AS credit,
    event_id AS signup_event_id
FROM
(
    SELECT visitor_id, ms, event_id, day, credits
    FROM {sql_database}.journeys
    WHERE kind = 'conversion'
    GROUP BY visitor_id, ms, event_id, day, credits
    HAVING sum(n) > 0
)
ARRAY JOIN arrayMap(c -> splitByChar('\x1C', c), arrayFilter(c -> c != '', splitByChar('\x1D', credits))) AS credit_record
WHERE event_id GLOBAL IN (SELECT signup_event_id FROM {sql_database}.conversions);
