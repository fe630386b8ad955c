-- The dashboard's figures, readable, answering any range of days, device
-- and placement (ensemble-model's `figures`; the README's "Figures in
-- ClickHouse" documents every column). Replaces 0003's visitor_ledger and
-- facts: an existing database is rebuilt from `events` once
-- (`ensemble-processor migrate` does it; `rebuild_pending` below holds a
-- row, and the processor does not consume, until it is done).
--
-- ledger: every event the processor has accounted, one row the first time
-- it is seen, with the columns the figures depend on. The first row of each
-- INSERT also carries, in `change`, the change the batch makes to the
-- figures (the sum over its visitors of new rows − old rows). Rows and
-- change land in one INSERT into a table without partitions: one part, all
-- or nothing. A tombstone row (erasure, retention) carries a removal; rows
-- written before a visitor's last tombstone no longer count.
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
        contacts UInt8,
        hour DateTime,
        day Date,
        seconds UInt32,
        n Int64,
        credit Float64
    )
)
ENGINE = MergeTree()
ORDER BY (visitor_id, written_ms, event_id);

-- The figures: each row a part of one figure's value for the visitors'
-- active days `first_day … last_day`. A question on days [a, b] sums the
-- rows with first_day >= a AND last_day <= b (of its bots / device /
-- placement scope). Exact at any time: a plain sum of exact changes.
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
    n Int64,
    credit Float64
)
ENGINE = SummingMergeTree((n, credit))
ORDER BY (figure, bots, device_filter, placement_filter, channel, first_day, last_day, phase, placement, event_type, action, step, model, conversion_phase, other_channel, contacts, hour, day, seconds);

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
    change.n AS n,
    change.credit AS credit
FROM ledger
ARRAY JOIN change;

-- /api/live's events accounted per minute now come from `ledger`.
DROP TABLE IF EXISTS ledger_minutely_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS ledger_minutely_from_ledger_mv TO ledger_minutely AS
SELECT
    toStartOfMinute(toDateTime(intDiv(written_ms, 1000))) AS minute,
    toUInt64(countIf(tombstone = 0)) AS events
FROM ledger
GROUP BY minute;

-- A row here while the figures still have to be rebuilt from `events`
-- (written by `migrate` when this migration meets a database that already
-- has events; emptied by the rebuild). The processor does not consume while
-- it holds a row.
CREATE TABLE IF NOT EXISTS rebuild_pending
(
    reason String,
    since DateTime
)
ENGINE = MergeTree()
ORDER BY since;

-- Visitors active on more than ensemble-model's WIDE_DAYS local days (a
-- shared address, a bot): their figures rows are stamped over whole phases,
-- and the dashboard recomputes them for ranges that cut a phase. A row per
-- visitor and batch that found it wide; the span only grows, except after
-- retention (a listed visitor that is no longer wide costs a little time,
-- never a wrong figure). Erasure removes the rows of the person's visitors.
CREATE TABLE IF NOT EXISTS wide_visitors
(
    visitor_id String,
    first_day Date,
    last_day Date
)
ENGINE = ReplacingMergeTree()
ORDER BY visitor_id;

-- 0003's ledger and figures.
DROP TABLE IF EXISTS facts_mv;

DROP TABLE IF EXISTS facts;

DROP TABLE IF EXISTS visitor_ledger;
