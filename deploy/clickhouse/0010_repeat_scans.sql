-- Repeated scans: the collector flags a scan of a placement by a client that
-- scanned it within its window (`--repeat-scan-window-s`). The event is
-- kept, with this flag; the figures leave it out like a bot's (the ledger's
-- `ev_bot` is `is_bot OR repeat_scan`), and the page counts them as "scans
-- filtered". Rows stored before this migration read 0.
ALTER TABLE events
    ADD COLUMN repeat_scan UInt8 DEFAULT 0;
