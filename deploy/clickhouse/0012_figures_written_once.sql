-- The processor sums each batch's change by range itself (the campaign,
-- each phase, the pieces between phases) and the paths' delays by each
-- rounding, and the ledger INSERT carries both: `ranged` (the rows of
-- `figures_ranges`, with the range's days) and `delayed` (the rows of
-- `paths_delays_ranges`). The views that summed every change row by range
-- wrote one row per change row and range; the processor's sums are a
-- fraction of that (a batch's visitors mostly land on the same few
-- ranges), and ClickHouse no longer fits each row to the ranges.
--
-- The new views (named after the ranges, made by the processor or by
-- `migrate`) replace the old ones.
--
-- Also: the figures' bots scope (`bots = 1`) now holds what the bots'
-- events change, not a copy of every visitor's rows with them (most
-- visitors have no bot, and their copies were half of every figures
-- table); a question with the bots sums both scopes. So a database with
-- events is rebuilt from `events` once (`REBUILT_FROM_EVENTS` in
-- core/src/migrate.rs; `ensemble-processor migrate` runs it), which also
-- fills the summed tables anew.
ALTER TABLE ledger
    ADD COLUMN ranged.figure Array(String),
    ADD COLUMN ranged.bots Array(UInt8),
    ADD COLUMN ranged.device_filter Array(String),
    ADD COLUMN ranged.placement_filter Array(String),
    ADD COLUMN ranged.first_day Array(Date),
    ADD COLUMN ranged.last_day Array(Date),
    ADD COLUMN ranged.phase Array(String),
    ADD COLUMN ranged.channel Array(String),
    ADD COLUMN ranged.placement Array(String),
    ADD COLUMN ranged.event_type Array(String),
    ADD COLUMN ranged.action Array(String),
    ADD COLUMN ranged.step Array(String),
    ADD COLUMN ranged.model Array(String),
    ADD COLUMN ranged.conversion_phase Array(String),
    ADD COLUMN ranged.other_channel Array(String),
    ADD COLUMN ranged.device_class Array(String),
    ADD COLUMN ranged.os_family Array(String),
    ADD COLUMN ranged.contacts Array(UInt8),
    ADD COLUMN ranged.hour Array(DateTime),
    ADD COLUMN ranged.day Array(Date),
    ADD COLUMN ranged.seconds Array(UInt32),
    ADD COLUMN ranged.n Array(Int64),
    ADD COLUMN ranged.credit Array(Float64),
    ADD COLUMN delayed.first_day Array(Date),
    ADD COLUMN delayed.last_day Array(Date),
    ADD COLUMN delayed.bots Array(UInt8),
    ADD COLUMN delayed.device_filter Array(String),
    ADD COLUMN delayed.placement_filter Array(String),
    ADD COLUMN delayed.rounding Array(UInt32),
    ADD COLUMN delayed.channel Array(String),
    ADD COLUMN delayed.seconds Array(UInt32),
    ADD COLUMN delayed.n Array(Int64);
