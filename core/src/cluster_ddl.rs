//! Cluster mode's DDL: each single-node statement of the migrations
//! rewritten for a ClickHouse cluster (replicated `*_local` tables on every
//! node, `Distributed` tables over them, views reading the local tables),
//! or refused when it cannot be. `crate::migrate` applies what this
//! returns; the rules are in [`cluster_statements`].

use crate::store::is_identifier;

/// Index of the `)` closing the `(` at `open`.
fn closing_paren(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The tables of `statements` sharded by visitor in cluster mode (those
/// with a `visitor_id String` column).
pub(crate) fn sharded_tables<'a>(statements: impl Iterator<Item = &'a String>) -> Vec<String> {
    statements
        .filter(|s| s.contains("visitor_id String"))
        .filter_map(|s| s.trim().strip_prefix("CREATE TABLE IF NOT EXISTS "))
        .filter_map(|rest| rest.split(|c: char| c.is_whitespace() || c == '(').next())
        .map(str::to_owned)
        .collect()
}

/// Names of the tables `CREATE TABLE IF NOT EXISTS` makes in `statements`.
pub(crate) fn created_tables<'a>(statements: impl Iterator<Item = &'a String>) -> Vec<String> {
    statements
        .filter_map(|s| s.trim().strip_prefix("CREATE TABLE IF NOT EXISTS "))
        .filter_map(|rest| rest.split(|c: char| c.is_whitespace() || c == '(').next())
        .map(str::to_owned)
        .fold(Vec::new(), |mut seen, t| {
            // A table made again by a later migration (0007's figures) once.
            if !seen.contains(&t) {
                seen.push(t);
            }
            seen
        })
}

/// The local table behind `name` (`table`, or `database.table` for a table
/// outside the main database) in cluster mode.
fn local_of(name: &str, db: &str) -> String {
    match name.split_once('.') {
        Some((other, table)) => format!("{other}.{table}_local"),
        None => format!("{db}.{name}_local"),
    }
}

/// One single-node statement as cluster DDL: a table becomes a replicated
/// `<db>.<name>_local` on every node plus a `Distributed` `<db>.<name>` over
/// them, sharded by `cityHash64(visitor_id)` when the table has a visitor
/// (one visitor's journey on one shard) and at random otherwise (a table
/// named `other.name` does the same in database `other`); a materialized
/// view reads and writes the local tables of its node; an `ALTER TABLE`
/// goes to the local tables and the distributed one; a plain view and a
/// database are created on every node (a view reads the distributed
/// tables it names); a dropped table goes on every node with its local
/// table. `None` for anything else.
pub fn cluster_statements(
    stmt: &str,
    db: &str,
    cluster: &str,
    tables: &[String],
    sharded: &[String],
) -> Option<Vec<String>> {
    let s = stmt.trim();
    if let Some(rest) = s.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
        let name_end = rest.find(|c: char| c.is_whitespace() || c == '(')?;
        let (name, body) = rest.split_at(name_end);
        let (tdb, name) = name.split_once('.').unwrap_or((db, name));
        let engine_at = body.find("ENGINE = ")?;
        let (columns, engine_part) = body.split_at(engine_at);
        let engine_part = &engine_part["ENGINE = ".len()..];
        let open = engine_part.find('(')?;
        let engine = engine_part[..open].trim();
        if !engine.ends_with("MergeTree") || engine.starts_with("Replicated") {
            return None;
        }
        let close = closing_paren(engine_part, open)?;
        let args = engine_part[open + 1..close].trim();
        let tail = &engine_part[close + 1..];
        let zk = format!("'/clickhouse/tables/{{shard}}/{tdb}/{name}_local', '{{replica}}'");
        let args = if args.is_empty() {
            zk
        } else {
            format!("{zk}, {args}")
        };
        let key = if columns.contains("visitor_id String") {
            "cityHash64(visitor_id)"
        } else {
            "rand()"
        };
        return Some(vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {tdb}.{name}_local ON CLUSTER {cluster} {columns}ENGINE = Replicated{engine}({args}){tail}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {tdb}.{name} ON CLUSTER {cluster} AS {tdb}.{name}_local \
                 ENGINE = Distributed({cluster}, {tdb}, {name}_local, {key})"
            ),
        ]);
    }
    if let Some(name) = s.strip_prefix("CREATE DATABASE IF NOT EXISTS ") {
        let name = name.trim();
        return is_identifier(name).then(|| {
            vec![format!(
                "CREATE DATABASE IF NOT EXISTS {name} ON CLUSTER {cluster}"
            )]
        });
    }
    if let Some(rest) = s.strip_prefix("ALTER TABLE ") {
        let (name, change) = rest.split_once(char::is_whitespace)?;
        let change = change.trim_start();
        if !tables.iter().any(|t| t == name) || name.contains('.') {
            return None;
        }
        // 18.16 refuses ALTER … ON CLUSTER on a Distributed table of a
        // replicated cluster: it is made again over the altered local
        // tables (it holds no rows: inserts through it are synchronous).
        let key = if sharded.iter().any(|t| t == name) {
            "cityHash64(visitor_id)"
        } else {
            "rand()"
        };
        return Some(vec![
            format!("ALTER TABLE {db}.{name}_local ON CLUSTER {cluster} {change}"),
            format!("DROP TABLE IF EXISTS {db}.{name} ON CLUSTER {cluster}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} AS {db}.{name}_local \
                 ENGINE = Distributed({cluster}, {db}, {name}_local, {key})"
            ),
        ]);
    }
    if let Some(rest) = s.strip_prefix("CREATE VIEW IF NOT EXISTS ") {
        let (name, select) = rest.split_once(" AS")?;
        let name = name.trim();
        if !name.contains('.') {
            return None;
        }
        return Some(vec![format!(
            "CREATE VIEW IF NOT EXISTS {name} ON CLUSTER {cluster} AS{select}"
        )]);
    }
    if let Some(name) = s.strip_prefix("DROP TABLE IF EXISTS ") {
        let name = name.trim();
        let (tdb, table) = name.split_once('.').unwrap_or((db, name));
        if !is_identifier(tdb) || !is_identifier(table) {
            return None;
        }
        let mut out = vec![format!(
            "DROP TABLE IF EXISTS {tdb}.{table} ON CLUSTER {cluster}"
        )];
        if tables.iter().any(|t| t == name) {
            out.push(format!(
                "DROP TABLE IF EXISTS {} ON CLUSTER {cluster}",
                local_of(name, db)
            ));
        }
        return Some(out);
    }
    if s.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
        let (name, target, select) = crate::migrate::materialized_view(s)?;
        if !tables.iter().any(|t| t == target) {
            return None;
        }
        let mut select = select.to_owned();
        for t in tables {
            let local = local_of(t, db);
            for sep in [" ", "\n"] {
                select = select.replace(&format!("FROM {t}{sep}"), &format!("FROM {local}{sep}"));
            }
            if select.ends_with(&format!("FROM {t}")) {
                let cut = select.len() - t.len();
                select = format!("{}{local}", &select[..cut]);
            }
        }
        return Some(vec![format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} TO {} AS{select}",
            local_of(target, db)
        )]);
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::migrate::{migrations, statements_for};

    #[test]
    fn cluster_mode_rewrites_every_embedded_statement() {
        let all: Vec<String> = migrations()
            .unwrap()
            .iter()
            .flat_map(|m| statements_for(m, "db_sql"))
            .collect();
        let tables = created_tables(all.iter());
        let sharded = sharded_tables(all.iter());
        assert_eq!(
            tables,
            [
                "events",
                "events_hourly",
                "visitor_ledger",
                "facts",
                "contact_visitors",
                "shared_contacts",
                "ledger_minutely",
                "events_minutely",
                "ledger",
                "figures",
                "rebuild_pending",
                "wide_visitors",
                "db_sql.journeys",
                "figures_ranges",
                "figures_ranges_state",
                "paths_delays_ranges",
                "db_sql.later_conversions",
                "ledger_rewrites"
            ]
        );
        let out: Vec<String> = all
            .iter()
            .flat_map(|s| {
                cluster_statements(s, "db", "c1", &tables, &sharded)
                    .unwrap_or_else(|| panic!("{s}"))
            })
            .collect();
        assert!(
            out.iter()
                .all(|s| s.contains(" ON CLUSTER c1 ") || s.ends_with(" ON CLUSTER c1")),
            "{out:#?}"
        );
        let events_local = &out[0];
        assert!(
            events_local.starts_with("CREATE TABLE IF NOT EXISTS db.events_local ON CLUSTER c1 ")
        );
        assert!(events_local.contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/events_local', '{replica}', processed_at)"
        ));
        assert!(events_local.contains("ORDER BY (visitor_id, ts, event_id)"));
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS db.events ON CLUSTER c1 AS db.events_local \
             ENGINE = Distributed(c1, db, events_local, cityHash64(visitor_id))"
        );
        assert!(out[2].contains("ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/db/events_hourly_local', '{replica}')"));
        assert!(out[3].ends_with("ENGINE = Distributed(c1, db, events_hourly_local, rand())"));
        let mv = &out[4];
        assert!(mv.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS db.events_hourly_mv ON CLUSTER c1 TO db.events_hourly_local AS"));
        assert!(
            mv.contains("FROM db.events_local\n") && !mv.contains("FROM events"),
            "{mv}"
        );
        assert!(out.contains(&"DROP TABLE IF EXISTS db.facts_local ON CLUSTER c1".to_owned()));
        assert!(out.contains(&"DROP TABLE IF EXISTS db.facts_mv ON CLUSTER c1".to_owned()));
        assert!(!out.contains(&"DROP TABLE IF EXISTS db.facts_mv_local ON CLUSTER c1".to_owned()));
        // 0005: the analysts' database, its table, the ledger's new columns, the views.
        assert!(out.contains(&"CREATE DATABASE IF NOT EXISTS db_sql ON CLUSTER c1".to_owned()));
        assert!(out.iter().any(|s| s.starts_with(
            "CREATE TABLE IF NOT EXISTS db_sql.journeys_local ON CLUSTER c1 "
        ) && s.contains("ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/db_sql/journeys_local', '{replica}', (n, ")));
        assert!(out.iter().any(|s| s.ends_with(
            "AS db_sql.journeys_local ENGINE = Distributed(c1, db_sql, journeys_local, cityHash64(visitor_id))"
        )));
        let journeys_mv = out.iter().find(|s| s.contains("journeys_mv")).unwrap();
        assert!(
            journeys_mv.contains(" TO db_sql.journeys_local AS")
                && journeys_mv.contains("FROM db.ledger_local\n"),
            "{journeys_mv}"
        );
        // 0011: a table of the analysts' database dropped with its local
        // tables, a view of it on every node.
        for dropped in [
            "DROP TABLE IF EXISTS db_sql.journeys ON CLUSTER c1",
            "DROP TABLE IF EXISTS db_sql.journeys_local ON CLUSTER c1",
            "DROP TABLE IF EXISTS db_sql.conversions ON CLUSTER c1",
        ] {
            assert!(out.contains(&dropped.to_owned()), "{dropped}");
        }
        assert!(!out
            .contains(&"DROP TABLE IF EXISTS db_sql.conversions_local ON CLUSTER c1".to_owned()));
        let at = out
            .iter()
            .position(|s| s.starts_with("ALTER TABLE"))
            .unwrap();
        assert!(out[at].starts_with(
            "ALTER TABLE db.ledger_local ON CLUSTER c1 ADD COLUMN journey.visitor_id"
        ));
        assert_eq!(out[at + 1], "DROP TABLE IF EXISTS db.ledger ON CLUSTER c1");
        assert_eq!(
            out[at + 2],
            "CREATE TABLE IF NOT EXISTS db.ledger ON CLUSTER c1 AS db.ledger_local \
             ENGINE = Distributed(c1, db, ledger_local, cityHash64(visitor_id))"
        );
        // 0005's ledger, 0007's and 0010's events; 0007 makes the figures
        // again (a new sorting key, which 18.16 cannot alter ON CLUSTER),
        // 0012 the figures and the ledger, 0014 the ledger.
        assert_eq!(
            out.iter().filter(|s| s.starts_with("ALTER TABLE")).count(),
            3
        );
        let ledgers: Vec<&String> = out
            .iter()
            .filter(|s| s.starts_with("CREATE TABLE IF NOT EXISTS db.ledger_local ON CLUSTER c1 "))
            .collect();
        assert_eq!(ledgers.len(), 3, "0004's, 0012's and 0014's");
        assert!(
            ledgers[2].contains("index_granularity = 256")
                && ledgers[2].contains("delayed String")
                && ledgers[2].contains("ReplicatedMergeTree"),
            "{}",
            ledgers[2]
        );
        let made = |s: &&String| {
            s.starts_with("CREATE TABLE IF NOT EXISTS db.figures_local ON CLUSTER c1 ")
        };
        let figures: Vec<&String> = out.iter().filter(made).collect();
        assert_eq!(figures.len(), 3, "0004's, 0007's and 0012's");
        assert!(
            figures[2].contains("frequency UInt8")
                && figures[2].contains("path, delay_seconds, device_class, os_family)")
        );
        let figures_mv: Vec<&String> = out.iter().filter(|s| s.contains("figures_mv")).collect();
        assert!(
            figures_mv
                .last()
                .is_some_and(|s| s.contains("toUInt8(carried_record[18]) AS frequency")
                    && s.contains(" TO db.figures_local AS")),
            "{figures_mv:?}"
        );
        assert!(out
            .iter()
            .any(|s| s.starts_with("CREATE VIEW IF NOT EXISTS db_sql.touches ON CLUSTER c1 AS")));
        // What it cannot rewrite, it refuses (the migrator then names the statement).
        for other in [
            "ALTER TABLE unknown ADD COLUMN x UInt8",
            "CREATE VIEW IF NOT EXISTS v AS SELECT 1",
            "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = Log",
        ] {
            assert!(
                cluster_statements(other, "db", "c1", &tables, &sharded).is_none(),
                "{other}"
            );
        }
    }
}
