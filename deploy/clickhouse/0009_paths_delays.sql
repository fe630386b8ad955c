-- The conversion paths' delays (figure `paths_delays` of `figures_ranges`)
-- again, laid out for the medians `/api/paths` reads: per summed range and
-- path, each delay rounded down to the hour (`rounding` = 3600) and to the
-- minute (`rounding` = 60), in granules of 256 rows. A path's median is found
-- from its hours (≈ 450 rows for the campaign's busiest path, instead of
-- its ≈ 25 000 minutes), then refined in the median's hour, whose
-- minutes the primary key finds without reading the other paths' granules
-- (`figures_ranges`, in granules of 8 192 rows, reads every minute of
-- every listed path for both steps: ≈ 254 000 rows at 10 M events).
--
-- Filled like `figures_ranges`, from `ledger` by a view the processor makes
-- (`paths_delays_ranges_mv_` and the hash of the ranges), and by
-- `rebuild-ranges` from `figures_ranges`; whole when `figures_ranges_state`
-- says `figures_ranges` is. Not kept in cluster mode.
CREATE TABLE IF NOT EXISTS paths_delays_ranges
(
    bots UInt8,
    device_filter String,
    placement_filter String,
    first_day Date,
    last_day Date,
    rounding UInt32,
    channel String,
    seconds UInt32,
    n Int64
)
ENGINE = SummingMergeTree(n)
ORDER BY (bots, device_filter, placement_filter, first_day, last_day, rounding, channel, seconds)
SETTINGS index_granularity = 256;
