//! Merging the figures tables' parts into one after a bulk fill and daily
//! (`ensemble-processor compact`).

/// The tables the dashboard reads figures from: what [`compact`] merges
/// (`figures`, then `crate::ranges::TABLE` and `DELAYS_TABLE`).
pub const FIGURES_TABLES: [&str; 3] = ["figures", "figures_ranges", "paths_delays_ranges"];

/// Merges a figures table's parts into one (`OPTIMIZE TABLE … FINAL`).
/// A bulk fill (a rebuild, a refill) leaves several large parts that
/// background merges leave apart for a long time, and a live table keeps
/// several between merges: the summed rows stay several per value and
/// every read crosses each part. At 10 M events `figures_ranges` went from
/// 17.2 M rows in 7 parts to 8.0 M in one (15 s), and the default
/// overview's query from ~50 to ~12 ms in ClickHouse; `figures` from
/// 19.5 M rows in 4 parts to 15.3 M (15 s). Safe while processors write
/// (a merge replaces parts atomically; parts written meanwhile stay), but
/// it rewrites the whole table: the offline steps run it, and
/// `ensemble-processor compact` (daily), never each batch. `Ok(false)` in
/// cluster mode, where the tables are local to each node: not merged.
///
/// `OPTIMIZE … FINAL` silently leaves alone the parts a mutation or a
/// merge is working on (the daily `compact` deletes old batch markers
/// just before; a CI run caught the figures left in 3 parts). So it is
/// repeated, a moment apart, until the parts that were there when it
/// started are one part per partition (parts written meanwhile, with
/// higher block numbers, may stay apart); after [`PATIENCE`] without
/// getting there it is an error that says how many parts are left.
pub async fn compact(
    store: &crate::StoreConfig,
    table: &str,
) -> Result<bool, clickhouse::error::Error> {
    if store.is_cluster() {
        return Ok(false);
    }
    let client = store.client();
    let parts = || async {
        client
            .query(
                "SELECT partition_id, min_block_number, max_block_number FROM system.parts \
                 WHERE database = currentDatabase() AND table = ? AND active",
            )
            .bind(table)
            .fetch_all::<(String, i64, i64)>()
            .await
    };
    // Per partition, the last block written before the start.
    let mut last = std::collections::BTreeMap::<String, i64>::new();
    for (partition, _, max) in parts().await? {
        let at = last.entry(partition).or_insert(max);
        *at = (*at).max(max);
    }
    let started = std::time::Instant::now();
    loop {
        client
            .query(&format!("OPTIMIZE TABLE {table} FINAL"))
            .execute()
            .await?;
        let mut old = std::collections::BTreeMap::<String, u64>::new();
        for (partition, min, _) in parts().await? {
            if last.get(&partition).is_some_and(|&last| min <= last) {
                *old.entry(partition).or_default() += 1;
            }
        }
        let apart = old.values().copied().max().unwrap_or(0);
        if apart <= 1 {
            return Ok(true);
        }
        if started.elapsed() > PATIENCE {
            return Err(clickhouse::error::Error::Custom(format!(
                "{table} still has {apart} parts in a partition after {} s of OPTIMIZE FINAL \
                 (a mutation or merge holds them: see system.mutations and system.merges); \
                 the rows are whole, only slower to read: run it again later",
                PATIENCE.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// How long [`compact`] waits for mutations and merges that hold parts.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

/// [`compact`] at the end of a bulk fill: a failure is logged, not
/// returned, the rows being whole either way (only slower to read).
pub async fn compact_after_fill(store: &crate::StoreConfig, tables: &[&str]) {
    for table in tables {
        let started = std::time::Instant::now();
        match compact(store, table).await {
            Ok(true) => tracing::info!(
                table,
                seconds = started.elapsed().as_secs_f64(),
                "figures: parts merged into one"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                table,
                error = %e,
                "figures: could not merge the parts (the rows are whole; reads stay slower): \
                 run `ensemble-processor compact` when the server is less busy"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_figures_tables_name_the_ranges_tables() {
        assert_eq!(
            super::FIGURES_TABLES[1..],
            [crate::ranges::TABLE, crate::ranges::DELAYS_TABLE]
        );
    }
}
