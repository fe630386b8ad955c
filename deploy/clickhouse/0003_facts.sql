-- Answers aggregated ahead of the request (DESIGN §3 "facts").
--
-- visitor_ledger: every event the processor has *accounted* for, one row the
-- first time it is seen (the processor reads the ledger of a batch's
-- visitors first, so a redelivered event gets no second row), with the
-- columns the dashboard's figures depend on. The first row of each INSERT
-- also carries, in `fact`, the change the batch makes to every dashboard
-- figure: the sum over its visitors of new contribution − old, both computed
-- from the ledger by `ensemble_core::facts`. Rows and facts land in one
-- INSERT into a table without partitions: one part, all or nothing, so the
-- figures and the ledger never disagree, whatever crashes.
-- A tombstone row (erasure, retention) carries a contribution's removal;
-- ledger rows written before a visitor's last tombstone no longer count.
CREATE TABLE IF NOT EXISTS visitor_ledger
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
    ev_bot UInt8,
    ev_contact String,
    fact Nested
    (
        metric String,
        bots UInt8,
        scope String,
        phase String,
        channel String,
        placement String,
        event_type String,
        action String,
        k String,
        k2 String,
        bucket UInt32,
        n Int64,
        credit Float64
    )
)
ENGINE = MergeTree()
ORDER BY (visitor_id, written_ms, event_id);

-- The dashboard's figures: the sum of every visitor's contribution. Exact at
-- any time (a plain sum of exact deltas; merges only add rows up).
CREATE TABLE IF NOT EXISTS facts
(
    metric String,
    bots UInt8,
    scope String,
    phase String,
    channel String,
    placement String,
    event_type String,
    action String,
    k String,
    k2 String,
    bucket UInt32,
    n Int64,
    credit Float64
)
ENGINE = SummingMergeTree((n, credit))
ORDER BY (metric, bots, scope, channel, phase, placement, event_type, action, k, k2, bucket);

CREATE MATERIALIZED VIEW IF NOT EXISTS facts_mv TO facts AS
SELECT
    fact.metric AS metric,
    fact.bots AS bots,
    fact.scope AS scope,
    fact.phase AS phase,
    fact.channel AS channel,
    fact.placement AS placement,
    fact.event_type AS event_type,
    fact.action AS action,
    fact.k AS k,
    fact.k2 AS k2,
    fact.bucket AS bucket,
    fact.n AS n,
    fact.credit AS credit
FROM visitor_ledger
ARRAY JOIN fact;

-- Which visitors signed up with which contact: the rare contact seen on
-- several visitors (two devices) is listed in shared_contacts by the
-- processor, and the dashboard corrects the per-visitor figures for it.
CREATE TABLE IF NOT EXISTS contact_visitors
(
    contact_hash String,
    visitor_id String
)
ENGINE = ReplacingMergeTree()
ORDER BY (contact_hash, visitor_id);

CREATE TABLE IF NOT EXISTS shared_contacts
(
    contact_hash String,
    visitor_id String
)
ENGINE = ReplacingMergeTree()
ORDER BY (contact_hash, visitor_id);

-- /api/live: events accounted per minute (first processing only) …
CREATE TABLE IF NOT EXISTS ledger_minutely
(
    minute DateTime,
    events UInt64
)
ENGINE = SummingMergeTree(events)
ORDER BY minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS ledger_minutely_mv TO ledger_minutely AS
SELECT
    toStartOfMinute(toDateTime(intDiv(written_ms, 1000))) AS minute,
    toUInt64(countIf(tombstone = 0)) AS events
FROM visitor_ledger
GROUP BY minute;

-- … and the newest receipt time per processing minute, overall and of
-- human sign-ups (a max: duplicates cannot change it).
CREATE TABLE IF NOT EXISTS events_minutely
(
    minute DateTime,
    newest_received AggregateFunction(max, DateTime),
    last_signup AggregateFunction(max, DateTime)
)
ENGINE = AggregatingMergeTree()
ORDER BY minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS events_minutely_mv TO events_minutely AS
SELECT
    toStartOfMinute(processed_at) AS minute,
    maxState(received_at) AS newest_received,
    maxStateIf(received_at, event_type = 'signup' AND is_bot = 0) AS last_signup
FROM events
GROUP BY minute;
