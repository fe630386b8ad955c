-- The device breakdown (README "Devices"): `figures` gets two dimension
-- columns, `device_class` and `os_family` (the processor's reading of the
-- User-Agent, as in `events`), for the new figure `devices` (visitors per
-- channel × device class × OS family, reached and signed). The ledger keeps
-- each event's OS family (`ev_os`) so the figures can be computed again
-- from it, and carries the two columns in `change`.
--
-- Also new: `paths_delays` (each conversion's path by the minute of its
-- time to sign-up, read only for the medians of the paths shown), so that
-- `paths_converted` no longer keeps a row per conversion but one per path
-- and day. A database with events is rebuilt from `events` once
-- (`REBUILT_FROM_EVENTS` in core/src/migrate.rs).
ALTER TABLE ledger
    ADD COLUMN ev_os String,
    ADD COLUMN change.device_class Array(String),
    ADD COLUMN change.os_family Array(String);

-- A summing table sums rows with equal sorting keys, so the new
-- dimensions must be in its key. ClickHouse 18.16 cannot change a sorting
-- key ON CLUSTER, and the figures are rebuilt from `events` anyway: the
-- table is made again, with the columns of 0004 and the two new ones.
DROP TABLE IF EXISTS figures_mv;

DROP TABLE IF EXISTS figures;

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
    contacts UInt8,
    hour DateTime,
    day Date,
    seconds UInt32,
    device_class String,
    os_family String,
    n Int64,
    credit Float64
)
ENGINE = SummingMergeTree((n, credit))
ORDER BY (figure, bots, device_filter, placement_filter, channel, first_day, last_day, phase, placement, event_type, action, step, model, conversion_phase, other_channel, contacts, hour, day, seconds, device_class, os_family);

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
    change.contacts AS contacts,
    change.hour AS hour,
    change.day AS day,
    change.seconds AS seconds,
    change.device_class AS device_class,
    change.os_family AS os_family,
    change.n AS n,
    change.credit AS credit
FROM ledger
ARRAY JOIN change;
