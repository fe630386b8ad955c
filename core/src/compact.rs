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
pub async fn compact(
    store: &crate::StoreConfig,
    table: &str,
) -> Result<bool, clickhouse::error::Error> {
    if store.is_cluster() {
        return Ok(false);
    }
    store
        .client()
        .query(&format!("OPTIMIZE TABLE {table} FINAL"))
        .execute()
        .await?;
    Ok(true)
}

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
