-- The hourly rollup of raw events goes: nothing reads it any more. The
-- dashboard's hourly series are figures (`events_hourly`, `visitors_hourly`,
-- `signups_hourly` in `figures`), the check against raw events reads
-- `events`, and analysts see neither. It cost every INSERT into `events` a
-- second table, and its `uniqExact` states held every event id and
-- visitor id again: on the processor bench's live profile ~0.9 µs of
-- ClickHouse per event (its parts and merges, `system.part_log`) and 15.5
-- of 17 MB of new parts beside `events` (docs/benchmarks.md, stop 50).
-- Retention and erasure no longer rebuild its months.
DROP TABLE IF EXISTS events_hourly_mv;

DROP TABLE IF EXISTS events_hourly;
