-- The ledger carries its sets as text.
--
-- A ledger INSERT carries to the materialised views the figures' change,
-- the journeys', the change summed by range and the paths' delays
-- (core/src/ledger/write.rs). They were `Nested` columns: some 80 arrays,
-- written and merged on every ledger row, although only a batch's first
-- four rows carry anything. Storing and merging those columns was the
-- ledger's largest cost: 800 000 ledger-shaped rows took 2.6 s of server
-- CPU with the arrays, 0.8 s with four strings (docs/benchmarks.md).
--
-- Each set is now one `String`: its records, each begun by the byte 0x1E,
-- their fields parted by 0x1F, in the order of the set's columns
-- (`ledger::carried`). The views split them back and read each field as
-- its column's type. The summed ranges' views (made by the processor,
-- `ranges::ensure`) are of a new kind and replace the old ones.
--
-- A ledger's columns cannot turn from arrays into strings, so it is made
-- again, and a database with events is rebuilt from `events`
-- (`REBUILT_FROM_EVENTS` in core/src/migrate.rs; `ensemble-processor
-- migrate` runs it). Batches whose views had not all run are written
-- whole by that rebuild.
DROP TABLE IF EXISTS figures_mv;

DROP TABLE IF EXISTS journeys_mv;

DROP TABLE IF EXISTS ledger;

CREATE TABLE IF NOT EXISTS ledger
(
    visitor_id String,
    written_ms UInt64,
    tombstone UInt8,
    event_id UUID,
    ms UInt64,
    ev_type String,
    ev_action String,
    ev_channel String,
    ev_placement String,
    ev_phase String,
    ev_device String,
    ev_bot UInt8,
    ev_contact String,
    ev_os String,
    change String,
    journey String,
    ranged String,
    delayed String
)
ENGINE = MergeTree()
ORDER BY (visitor_id, written_ms, event_id)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS figures_mv TO figures AS
SELECT
    carried_record[1] AS figure,
    toUInt8(carried_record[2]) AS bots,
    carried_record[3] AS device_filter,
    carried_record[4] AS placement_filter,
    toDate(carried_record[5]) AS first_day,
    toDate(carried_record[6]) AS last_day,
    carried_record[7] AS phase,
    carried_record[8] AS channel,
    carried_record[9] AS placement,
    carried_record[10] AS event_type,
    carried_record[11] AS action,
    carried_record[12] AS step,
    carried_record[13] AS model,
    carried_record[14] AS conversion_phase,
    carried_record[15] AS other_channel,
    carried_record[16] AS device_class,
    carried_record[17] AS os_family,
    toUInt8(carried_record[18]) AS frequency,
    toDateTime(toUInt32(carried_record[19])) AS hour,
    toUInt8(carried_record[20]) AS local_hour,
    toDate(carried_record[21]) AS day,
    carried_record[22] AS path,
    toUInt32(carried_record[23]) AS delay_seconds,
    toInt64(carried_record[24]) AS n,
    toFloat64(carried_record[25]) AS credit
FROM ledger
ARRAY JOIN arrayMap(l -> splitByChar('\x1F', l), arrayFilter(l -> l != '', splitByChar('\x1E', change))) AS carried_record;

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
    carried_record[11] AS model,
    carried_record[12] AS conversion_phase,
    toInt64(carried_record[13]) AS n,
    toInt64(carried_record[14]) AS n_events,
    toInt64(carried_record[15]) AS n_exposures,
    toInt64(carried_record[16]) AS n_scans,
    toInt64(carried_record[17]) AS n_visits,
    toInt64(carried_record[18]) AS n_signups,
    toFloat64(carried_record[19]) AS credit
FROM ledger
ARRAY JOIN arrayMap(l -> splitByChar('\x1F', l), arrayFilter(l -> l != '', splitByChar('\x1E', journey))) AS carried_record;
