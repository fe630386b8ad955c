-- Every job that rewrites visitors' ledger outside the processors' batches
-- (erasure, retention, rebuilding the figures) notes itself here before
-- and after. A processor keeps the histories of the visitors it accounted
-- between batches, so that a batch reads from the ledger only those it has
-- not seen lately; it looks at this table before each batch and forgets
-- them all when it changed (core/src/ledger/cache.rs).
CREATE TABLE IF NOT EXISTS ledger_rewrites
(
    at_ms UInt64,
    job String,
    stage String
)
ENGINE = MergeTree()
ORDER BY at_ms;
