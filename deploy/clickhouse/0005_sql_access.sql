-- SQL access for analysts (README "SQL access"): the analysts' database
-- `<database>_sql` holds one table and four views readable without knowing
-- the figures' encoding — one row per touch, per conversion, per
-- conversion × model × channel credit, per placement per day. The
-- read-only user `ensemble_analyst` (defined in the server's users
-- configuration, see deploy/) may read that database and nothing else:
-- not `events`, not the ledger, not the figures. `{sql_database}` is
-- replaced by the analysts' database's name when the migration runs.
--
-- The rows come from ensemble-model's `journeys`, computed by the
-- processor with the figures and carried by the same ledger INSERT
-- (`journey`, next to `change`), so they are exact at any time like the
-- figures. An existing database is rebuilt from `events` once (as 0004).
ALTER TABLE ledger
    ADD COLUMN journey.visitor_id Array(String),
    ADD COLUMN journey.kind Array(String),
    ADD COLUMN journey.ms Array(UInt64),
    ADD COLUMN journey.event_id Array(UUID),
    ADD COLUMN journey.day Array(Date),
    ADD COLUMN journey.phase Array(String),
    ADD COLUMN journey.channel Array(String),
    ADD COLUMN journey.placement Array(String),
    ADD COLUMN journey.device Array(String),
    ADD COLUMN journey.contact Array(String),
    ADD COLUMN journey.model Array(String),
    ADD COLUMN journey.conversion_phase Array(String),
    ADD COLUMN journey.n Array(Int64),
    ADD COLUMN journey.n_events Array(Int64),
    ADD COLUMN journey.n_exposures Array(Int64),
    ADD COLUMN journey.n_scans Array(Int64),
    ADD COLUMN journey.n_visits Array(Int64),
    ADD COLUMN journey.n_signups Array(Int64),
    ADD COLUMN journey.credit Array(Float64);

CREATE DATABASE IF NOT EXISTS {sql_database};

-- Changes, summed: a key's `n` is 1 while the thing it describes holds, 0
-- once a later batch, an erasure or retention undid it (SummingMergeTree
-- then drops the row). The views keep keys whose `n` sums to more than 0.
-- `kind`: touch, conversion, credit, placement_day (ensemble-model's
-- `journeys::Kind`). `contact` is the contact hash (conversion and credit
-- rows): no view shows it.
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
    contact String,
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
ORDER BY (kind, visitor_id, ms, event_id, day, placement, channel, phase, device, contact, model, conversion_phase);

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
    journey.contact AS contact,
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
ARRAY JOIN journey;

-- One row per touch (the gap rule), bots left out: `at` the UTC time of
-- its first event, `day` its local day, `phase` / `channel` / `placement`
-- / `device` of that event.
CREATE VIEW IF NOT EXISTS {sql_database}.touches AS
SELECT
    visitor_id,
    toDateTime(intDiv(ms, 1000)) AS at,
    day,
    phase,
    channel,
    placement,
    device,
    event_id AS first_event_id
FROM {sql_database}.journeys
WHERE kind = 'touch'
GROUP BY visitor_id, ms, event_id, day, phase, channel, placement, device
HAVING sum(n) > 0;

-- One row per conversion: the first sign-up of a contact (a contact seen
-- on several visitors converts once, at its earliest sign-up, ties broken
-- by event id), bots left out. (Inner names differ from the outer aliases:
-- ClickHouse 18.16 takes `argMin(x, k) AS x` for a nested aggregate.)
CREATE VIEW IF NOT EXISTS {sql_database}.conversions AS
SELECT
    argMin(c_visitor_id, c_first) AS visitor_id,
    toDateTime(intDiv(argMin(c_ms, c_first), 1000)) AS at,
    argMin(c_day, c_first) AS day,
    argMin(c_phase, c_first) AS phase,
    argMin(c_channel, c_first) AS channel,
    argMin(c_placement, c_first) AS placement,
    argMin(c_device, c_first) AS device,
    argMin(c_event_id, c_first) AS signup_event_id
FROM
(
    SELECT
        visitor_id AS c_visitor_id,
        ms AS c_ms,
        event_id AS c_event_id,
        day AS c_day,
        phase AS c_phase,
        channel AS c_channel,
        placement AS c_placement,
        device AS c_device,
        contact AS c_contact,
        concat(toString(ms + 10000000000000), toString(event_id)) AS c_first
    FROM {sql_database}.journeys
    WHERE kind = 'conversion'
    GROUP BY visitor_id, ms, event_id, day, phase, channel, placement, device, contact
    HAVING sum(n) > 0
)
GROUP BY c_contact;

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

-- One row per placement per local day (events carrying a placement code,
-- unknown codes included, bots left out): events, of which exposures
-- (dating-app impressions and passes), scans (QR scans and card clicks),
-- landing visits and sign-up events; distinct visitors, and of them those
-- who scanned.
CREATE VIEW IF NOT EXISTS {sql_database}.placement_days AS
SELECT
    placement,
    day,
    channel,
    phase,
    sum(v_events) AS events,
    sum(v_exposures) AS exposures,
    sum(v_scans) AS scans,
    sum(v_visits) AS visits,
    sum(v_signups) AS signups,
    count() AS visitors,
    countIf(v_scans > 0) AS scanners
FROM
(
    SELECT
        visitor_id,
        placement,
        day,
        channel,
        phase,
        sum(n_events) AS v_events,
        sum(n_exposures) AS v_exposures,
        sum(n_scans) AS v_scans,
        sum(n_visits) AS v_visits,
        sum(n_signups) AS v_signups
    FROM {sql_database}.journeys
    WHERE kind = 'placement_day'
    GROUP BY visitor_id, placement, day, channel, phase
    HAVING sum(n) > 0
)
GROUP BY placement, day, channel, phase;
