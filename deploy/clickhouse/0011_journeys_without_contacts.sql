-- Least privilege for the analysts' SQL user: the table their views read
-- no longer holds contact hashes. (ClickHouse 18.16 grants whole
-- databases, and a view is read with its reader's rights, so the table a
-- view reads must sit in the analysts' database where they can read it
-- too: what it holds is what they can see.)
--
-- `journeys` loses `contact`. The `conversions` view used it to keep only
-- the first sign-up of a contact seen on several visitors; the processor
-- now names the others itself, by (visitor, sign-up event id), in
-- `later_conversions` (`ensemble_model::journeys::later_conversions`),
-- and the view leaves them out. Same answers, no hash.
--
-- A summing table's key cannot lose a column, so the table is made again
-- and filled by a rebuild from `events` (`REBUILT_FROM_EVENTS` in
-- core/src/migrate.rs).
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
    model String,
    conversion_phase String,
    n Int64,
    n_events Int64,
    n_exposures Int64,
    n_scans Int64,
    n_visits Int64,
    n_signups Int64,
    credit Float64
)
ENGINE = SummingMergeTree((n, n_events, n_exposures, n_scans, n_visits, n_signups, credit))
ORDER BY (kind, visitor_id, ms, event_id, day, placement, channel, phase, device, model, conversion_phase);

CREATE MATERIALIZED VIEW IF NOT EXISTS journeys_mv TO {sql_database}.journeys AS
SELECT
    journey.visitor_id AS visitor_id,
    journey.kind AS kind,
    journey.ms AS ms,
    journey.event_id AS event_id,
    journey.day AS day,
    journey.phase AS phase,
    journey.channel AS channel,
    journey.placement AS placement,
    journey.device AS device,
    journey.model AS model,
    journey.conversion_phase AS conversion_phase,
    journey.n AS n,
    journey.n_events AS n_events,
    journey.n_exposures AS n_exposures,
    journey.n_scans AS n_scans,
    journey.n_visits AS n_visits,
    journey.n_signups AS n_signups,
    journey.credit AS credit
FROM ledger
ARRAY JOIN journey
-- Names `journey.contact` without keeping it: ClickHouse 18.16, pushing an
-- INSERT's block through a view that ARRAY JOINs a nested name, copies
-- each element of the subcolumns the SELECT does not name whole onto every
-- joined row (n² for a batch's n rows: 16 GiB for 50 000). Named, it is
-- joined like the others.
WHERE length(journey.contact) >= 0;

-- A visitor's conversion that is not its person's first: `n` sums to 1
-- while it is a later one, 0 once it is not (the processor writes the
-- difference, so writing twice is harmless: it reads what is there).
CREATE TABLE IF NOT EXISTS {sql_database}.later_conversions
(
    visitor_id String,
    event_id UUID,
    n Int64
)
ENGINE = SummingMergeTree(n)
ORDER BY (visitor_id, event_id);

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
    conversion_phase,
    model,
    channel,
    phase AS touch_phase,
    share AS credit,
    event_id AS signup_event_id
FROM
(
    SELECT visitor_id, ms, event_id, day, conversion_phase, model, channel, phase, sum(credit) AS share
    FROM {sql_database}.journeys
    WHERE kind = 'credit'
    GROUP BY visitor_id, ms, event_id, day, conversion_phase, model, channel, phase
    HAVING sum(n) > 0
)
WHERE event_id GLOBAL IN (SELECT signup_event_id FROM {sql_database}.conversions);
