-- The figures summed over the ranges of days the default questions ask
-- (ensemble-model's `summed_ranges`: the campaign from its first phase's
-- first day to its last phase's last day, each phase, and the one piece
-- between phases when there is exactly one). A row of `figures` counts
-- for the range [a, b] when its visitors' days fit it (first_day >= a AND
-- last_day <= b); here such rows are summed per range, `first_day` and
-- `last_day` being the range's. The default questions then read a row per
-- value (≈ 13 000 rows for the conversion paths at 10 M events) instead of
-- one per visitors' span of days (≈ 750 000).
--
-- The ranges depend on the campaign file, so the view that fills this
-- table is not a migration: the processor creates it (`figures_ranges_mv_`
-- and a hash of the ranges) on a database without events, and
-- `rebuild-facts` / `rebuild-ranges` (processors stopped) make it again
-- and fill the table. `figures_ranges_state` says for which ranges the
-- table is whole; the dashboard reads `figures` (the same answers, slower)
-- whenever it is not whole for its own campaign's ranges.
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
ORDER BY (figure, bots, device_filter, placement_filter, first_day, last_day, channel, phase, placement, event_type, action, step, model, conversion_phase, other_channel, contacts, hour, day, seconds, device_class, os_family);

-- One row per change of `figures_ranges`: the ranges it sums over
-- (`YYYY-MM-DD..YYYY-MM-DD`, comma-separated) and whether it holds every
-- figure row (`whole` = 1) or only those accounted since its view was made.
CREATE TABLE IF NOT EXISTS figures_ranges_state
(
    written_ms UInt64,
    ranges String,
    whole UInt8,
    note String
)
ENGINE = MergeTree()
ORDER BY written_ms;
