-- The figures written once, summed where they are computed.
--
-- The processor sums each batch's change by range itself (the campaign,
-- each phase, the pieces between phases) and the paths' delays by each
-- rounding, and the ledger INSERT carries both: `ranged` (the rows of
-- `figures_ranges`, with the range's days) and `delayed` (the rows of
-- `paths_delays_ranges`). The views that summed every change row by range
-- wrote one row per change row and range; the processor's sums are a
-- fraction of that (a batch's visitors mostly land on the same few
-- ranges), and ClickHouse no longer fits each row to the ranges. The new
-- views (named after the ranges, made by the processor or by `migrate`)
-- replace the old ones.
--
-- The figures' bots scope (`bots = 1`) now holds what the bots' events
-- change, not a copy of every visitor's rows with them (most visitors
-- have no bot, and their copies were half of every figures table); a
-- question with the bots sums both scopes.
--
-- The visit-frequency bucket is named for what it is: the column
-- `contacts` is `frequency` (1 to 5, 5 meaning five or more events of a
-- touch channel) and its figure `contacts_per_visitor` is `frequency`
-- ("contact" is the person who signs up). The local wall-clock hour of
-- `scans_by_local_hour` gets its own column, `local_hour` (0–23), instead
-- of `hour`, which holds UTC hours as times everywhere else. The paths
-- get their own column, `path` (`metro > tinder`, `direct`), instead of
-- `channel`, and every delay is `delay_seconds` (was `seconds`); "all" is
-- `*` in every column, the scope filters too (they were `''`). The
-- paths' delays table is made again with those names. A summing table's key cannot
-- lose a column, so `figures` and `figures_ranges` are made again, with
-- the columns of the model's catalogue (`figures::COLUMNS`); the ledger's
-- `change.contacts` goes (a subcolumn of `change` left unwritten would be
-- filled and array-joined by `figures_mv`: ClickHouse 18.16 ran out of
-- memory on it), so the migrations before this one cannot run again over
-- its schema (0007's view reads that column).
--
-- The ledger itself is made again, with every array the processor now
-- writes and 256 rows to a granule (was 8 192): the processor reads each
-- batch's visitors' history from it by `visitor_id`, its sorting key, and
-- with granules of 8 192 rows a batch's few thousand visitors touched
-- most of a 10 M-event ledger (0.40 s per 3 000 visitors at 10 M events,
-- 0.23 s at 256; 0.06 s at 1 M). Its rows are not lost: the rebuild that
-- follows writes them again from `events`. The views that read it (`journeys_mv`,
-- the rollups, the summed ranges' views) name it, and follow it.
--
-- So a database with events is rebuilt from `events` once
-- (`REBUILT_FROM_EVENTS` in core/src/migrate.rs; `ensemble-processor
-- migrate` runs it), which also fills the summed tables anew.
DROP TABLE IF EXISTS figures_mv;

DROP TABLE IF EXISTS figures;

DROP TABLE IF EXISTS figures_ranges;

DROP TABLE IF EXISTS paths_delays_ranges;

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
    change Nested
    (
        figure String,
        bots UInt8,
        device_filter String,
        placement_filter String,
        first_day Date,
        last_day Date,
        phase String,
        channel String,
        placement String,
        event_type String,
        action String,
        step String,
        model String,
        conversion_phase String,
        other_channel String,
        device_class String,
        os_family String,
        frequency UInt8,
        hour DateTime,
        local_hour UInt8,
        day Date,
        path String,
        delay_seconds UInt32,
        n Int64,
        credit Float64
    ),
    journey Nested
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
    ),
    ranged Nested
    (
        figure String,
        bots UInt8,
        device_filter String,
        placement_filter String,
        first_day Date,
        last_day Date,
        phase String,
        channel String,
        placement String,
        event_type String,
        action String,
        step String,
        model String,
        conversion_phase String,
        other_channel String,
        device_class String,
        os_family String,
        frequency UInt8,
        hour DateTime,
        local_hour UInt8,
        day Date,
        path String,
        delay_seconds UInt32,
        n Int64,
        credit Float64
    ),
    delayed Nested
    (
        first_day Date,
        last_day Date,
        bots UInt8,
        device_filter String,
        placement_filter String,
        rounding UInt32,
        path String,
        delay_seconds UInt32,
        n Int64
    )
)
ENGINE = MergeTree()
ORDER BY (visitor_id, written_ms, event_id)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS figures
(
    figure String,
    bots UInt8,
    device_filter String,
    placement_filter String,
    first_day Date,
    last_day Date,
    phase String,
    channel String,
    placement String,
    event_type String,
    action String,
    step String,
    model String,
    conversion_phase String,
    other_channel String,
    device_class String,
    os_family String,
    frequency UInt8,
    hour DateTime,
    local_hour UInt8,
    day Date,
    path String,
    delay_seconds UInt32,
    n Int64,
    credit Float64
)
ENGINE = SummingMergeTree((n, credit))
ORDER BY (figure, bots, device_filter, placement_filter, channel, first_day, last_day, phase, placement, event_type, action, step, model, conversion_phase, other_channel, frequency, hour, local_hour, day, path, delay_seconds, device_class, os_family);

CREATE MATERIALIZED VIEW IF NOT EXISTS figures_mv TO figures AS
SELECT
    change.figure AS figure,
    change.bots AS bots,
    change.device_filter AS device_filter,
    change.placement_filter AS placement_filter,
    change.first_day AS first_day,
    change.last_day AS last_day,
    change.phase AS phase,
    change.channel AS channel,
    change.placement AS placement,
    change.event_type AS event_type,
    change.action AS action,
    change.step AS step,
    change.model AS model,
    change.conversion_phase AS conversion_phase,
    change.other_channel AS other_channel,
    change.device_class AS device_class,
    change.os_family AS os_family,
    change.frequency AS frequency,
    change.hour AS hour,
    change.local_hour AS local_hour,
    change.day AS day,
    change.path AS path,
    change.delay_seconds AS delay_seconds,
    change.n AS n,
    change.credit AS credit
FROM ledger
ARRAY JOIN change;

CREATE TABLE IF NOT EXISTS figures_ranges
(
    figure String,
    bots UInt8,
    device_filter String,
    placement_filter String,
    first_day Date,
    last_day Date,
    phase String,
    channel String,
    placement String,
    event_type String,
    action String,
    step String,
    model String,
    conversion_phase String,
    other_channel String,
    device_class String,
    os_family String,
    frequency UInt8,
    hour DateTime,
    local_hour UInt8,
    day Date,
    path String,
    delay_seconds UInt32,
    n Int64,
    credit Float64
)
ENGINE = SummingMergeTree((n, credit))
ORDER BY (figure, bots, device_filter, placement_filter, first_day, last_day, channel, phase, placement, event_type, action, step, model, conversion_phase, other_channel, frequency, hour, local_hour, day, path, delay_seconds, device_class, os_family);

CREATE TABLE IF NOT EXISTS paths_delays_ranges
(
    bots UInt8,
    device_filter String,
    placement_filter String,
    first_day Date,
    last_day Date,
    rounding UInt32,
    path String,
    delay_seconds UInt32,
    n Int64
)
ENGINE = SummingMergeTree(n)
ORDER BY (bots, device_filter, placement_filter, first_day, last_day, rounding, path, delay_seconds)
SETTINGS index_granularity = 256;
