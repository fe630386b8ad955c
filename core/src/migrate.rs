//! ClickHouse schema migrations: the numbered SQL files of
//! `deploy/clickhouse/` (embedded at build time), applied in order, each once,
//! recorded in `<db>.schema_migrations` with a checksum.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::store::{is_identifier, StoreConfig};

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: String,
    pub sql: String,
    pub checksum: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration file `{0}` must be named NNNN_name.sql")]
    BadFileName(String),
    #[error("two migration files have version {0}")]
    DuplicateVersion(u32),
    #[error("database name `{0}` must match [A-Za-z_][A-Za-z0-9_]*")]
    BadDatabase(String),
    #[error(
        "migration {version} ({name}) was applied with checksum {applied} but the file now has {current}; \
         never edit an applied migration, add a new one"
    )]
    ChecksumMismatch {
        version: u32,
        name: String,
        applied: String,
        current: String,
    },
    #[error("migration {version} ({name}), statement {statement}: {source}")]
    Statement {
        version: u32,
        name: String,
        statement: usize,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error(
        "migration {version} ({name}): cluster mode cannot rewrite `{statement}`; \
         it knows CREATE TABLE IF NOT EXISTS … ENGINE = …MergeTree(…), CREATE MATERIALIZED VIEW IF NOT EXISTS … TO … \
         and DROP TABLE IF EXISTS …"
    )]
    ClusterUnsupported {
        version: u32,
        name: String,
        statement: String,
    },
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub applied: Vec<u32>,
    pub already_applied: Vec<u32>,
    /// The database had events when the figures were stored anew: they must
    /// be rebuilt (`rebuild_pending` holds a row until they are).
    pub rebuild_pending: bool,
}

impl Migration {
    fn parse(file: &str, sql: &str) -> Result<Self, MigrateError> {
        let stem = file
            .strip_suffix(".sql")
            .ok_or_else(|| MigrateError::BadFileName(file.to_owned()))?;
        let (num, name) = stem
            .split_once('_')
            .ok_or_else(|| MigrateError::BadFileName(file.to_owned()))?;
        if num.len() != 4 || name.is_empty() {
            return Err(MigrateError::BadFileName(file.to_owned()));
        }
        let version: u32 = num
            .parse()
            .map_err(|_| MigrateError::BadFileName(file.to_owned()))?;
        Ok(Self {
            version,
            name: name.to_owned(),
            sql: sql.to_owned(),
            checksum: hex::encode(Sha256::digest(sql.as_bytes())),
        })
    }

    /// The statements of the file: split on `;` at the end of a line, `--`
    /// comment lines removed.
    pub fn statements(&self) -> Vec<String> {
        split_statements(&self.sql)
    }
}

/// Splits SQL text into statements at lines ending in `;`, dropping `--` comment lines.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let stmt = current.trim().trim_end_matches(';').trim().to_owned();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            current.clear();
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// `stmt` without the `ADD COLUMN` clauses of columns the table already
/// has: a run killed after an `ALTER TABLE … ADD COLUMN` and before the
/// migration was recorded can be run again (ClickHouse 18.16 has no
/// `ADD COLUMN IF NOT EXISTS`). `None` when no clause is left. A statement
/// that is not made of `ADD COLUMN` clauses alone comes back unchanged.
pub fn adding_only_missing(stmt: &str, existing: &[String]) -> Option<String> {
    let Some(rest) = stmt.trim().strip_prefix("ALTER TABLE ") else {
        return Some(stmt.to_owned());
    };
    let Some((table, changes)) = rest.split_once(char::is_whitespace) else {
        return Some(stmt.to_owned());
    };
    let clauses = split_top_level(changes, ',');
    let mut kept = Vec::new();
    for clause in &clauses {
        let Some(column) = clause.trim().strip_prefix("ADD COLUMN ") else {
            return Some(stmt.to_owned());
        };
        let name = column.split_whitespace().next().unwrap_or_default();
        if !existing.iter().any(|e| e == name) {
            kept.push(clause.trim());
        }
    }
    if kept.len() == clauses.len() {
        return Some(stmt.to_owned());
    }
    (!kept.is_empty()).then(|| format!("ALTER TABLE {table}\n    {}", kept.join(",\n    ")))
}

/// `s` split at `sep` outside parentheses and quotes.
fn split_top_level(s: &str, sep: char) -> Vec<&str> {
    let (mut out, mut depth, mut quoted, mut start) = (Vec::new(), 0usize, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            c if c == sep && depth == 0 && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The table an `ALTER TABLE` statement changes.
fn altered_table(stmt: &str) -> Option<&str> {
    let rest = stmt.trim().strip_prefix("ALTER TABLE ")?;
    rest.split_whitespace().next()
}

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
fn sharded_tables<'a>(statements: impl Iterator<Item = &'a String>) -> Vec<String> {
    statements
        .filter(|s| s.contains("visitor_id String"))
        .filter_map(|s| s.trim().strip_prefix("CREATE TABLE IF NOT EXISTS "))
        .filter_map(|rest| rest.split(|c: char| c.is_whitespace() || c == '(').next())
        .map(str::to_owned)
        .collect()
}

/// Names of the tables `CREATE TABLE IF NOT EXISTS` makes in `statements`.
fn created_tables<'a>(statements: impl Iterator<Item = &'a String>) -> Vec<String> {
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
    if let Some(rest) = s.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
        let (name, rest) = rest.split_once(" TO ")?;
        let (target, select) = rest.split_once(" AS")?;
        if !tables.iter().any(|t| t == target.trim()) {
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
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{} ON CLUSTER {cluster} TO {} AS{select}",
            name.trim(),
            local_of(target.trim(), db)
        )]);
    }
    None
}

/// The embedded migrations, sorted by version.
pub fn migrations() -> Result<Vec<Migration>, MigrateError> {
    let mut list = MIGRATION_FILES
        .iter()
        .map(|(file, sql)| Migration::parse(file, sql))
        .collect::<Result<Vec<_>, _>>()?;
    list.sort_by_key(|m| m.version);
    for pair in list.windows(2) {
        if pair[0].version == pair[1].version {
            return Err(MigrateError::DuplicateVersion(pair[0].version));
        }
    }
    Ok(list)
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct AppliedRow {
    version: u32,
    checksum: String,
}

/// The migrations that store what the processor computes anew (0004: the
/// figures; 0005: the analysts' journeys; 0006: the conversion paths'
/// figures; 0007: the device breakdown, the paths' delays; 0011: the
/// journeys without contacts): a database that already has events when one
/// is applied must be rebuilt from `events`; it records that in
/// `rebuild_pending` (which the rebuild empties and the processor checks
/// before it consumes).
pub const REBUILT_FROM_EVENTS: [u32; 5] = [4, 5, 6, 7, 11];

/// The migrations that add a table filled beside `figures_ranges` (0009:
/// the paths' delays by range): applied where the summed tables were
/// whole, they are recorded partial (the dashboard reads `figures`) until
/// `rebuild-ranges` fills the new one.
pub const RESUMMED: [u32; 1] = [9];

/// What migration files write for the analysts' database
/// (`StoreConfig::sql_database`), replaced when they run.
pub const SQL_DATABASE: &str = "{sql_database}";

/// A migration's statements as they run on `store`'s databases.
fn statements_for(m: &Migration, sql_database: &str) -> Vec<String> {
    m.statements()
        .into_iter()
        .map(|s| s.replace(SQL_DATABASE, sql_database))
        .collect()
}

const LEDGER_DDL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
    (version UInt32, name String, checksum String, applied_at DateTime) \
    ENGINE = MergeTree() ORDER BY version";

/// Creates the database if needed and applies every migration not yet
/// recorded. A second run is a no-op. Refuses to go on if an applied
/// migration's file has changed.
pub async fn migrate(store: &StoreConfig) -> Result<MigrateReport, MigrateError> {
    let db = &store.database;
    if !is_identifier(db) {
        return Err(MigrateError::BadDatabase(db.clone()));
    }
    let sql_database = store.sql_database();
    if !is_identifier(&sql_database) {
        return Err(MigrateError::BadDatabase(sql_database));
    }
    if store.is_cluster() && !is_identifier(&store.cluster) {
        return Err(MigrateError::BadDatabase(store.cluster.clone()));
    }
    // Names are identifiers, checked above; they cannot be bound.
    let on_cluster = if store.is_cluster() {
        format!(" ON CLUSTER {}", store.cluster)
    } else {
        String::new()
    };
    store
        .server_client()
        .query(&format!("CREATE DATABASE IF NOT EXISTS {db}{on_cluster}"))
        .execute()
        .await?;
    let all = migrations()?;
    let statements: Vec<Vec<String>> = all
        .iter()
        .map(|m| statements_for(m, &sql_database))
        .collect();
    let tables = created_tables(statements.iter().flatten());
    let sharded = sharded_tables(statements.iter().flatten());
    let client = store.client();
    client.query(LEDGER_DDL).execute().await?;
    let applied: Vec<AppliedRow> = client
        .query("SELECT ?fields FROM schema_migrations ORDER BY version")
        .fetch_all()
        .await?;

    let mut report = MigrateReport::default();
    for (m, stmts) in all.into_iter().zip(statements) {
        if let Some(row) = applied.iter().find(|r| r.version == m.version) {
            if row.checksum != m.checksum {
                return Err(MigrateError::ChecksumMismatch {
                    version: m.version,
                    name: m.name,
                    applied: row.checksum.clone(),
                    current: m.checksum,
                });
            }
            report.already_applied.push(m.version);
            continue;
        }
        let had_events = REBUILT_FROM_EVENTS.contains(&m.version)
            && client
                .query("SELECT count() FROM (SELECT 1 FROM events LIMIT 1)")
                .fetch_one::<u64>()
                .await?
                > 0;
        for (i, stmt) in stmts.iter().enumerate() {
            // Every column the ALTER adds is there already.
            let mut all_there = false;
            // In cluster mode the columns are on the local tables.
            let altered = altered_table(stmt).map(|table| {
                if store.is_cluster() {
                    format!("{table}_local")
                } else {
                    table.to_owned()
                }
            });
            let stmt = &match altered.as_deref() {
                Some(table) => {
                    let existing = columns(&client, db, table).await?;
                    adding_only_missing(stmt, &existing).unwrap_or_else(|| {
                        tracing::info!(version = m.version, table, "columns already there (a run stopped before it recorded this migration)");
                        all_there = true;
                        stmt.clone()
                    })
                }
                None => stmt.clone(),
            };
            let mut run = if store.is_cluster() {
                cluster_statements(stmt, db, &store.cluster, &tables, &sharded).ok_or_else(
                    || MigrateError::ClusterUnsupported {
                        version: m.version,
                        name: m.name.clone(),
                        statement: stmt.lines().next().unwrap_or_default().to_owned(),
                    },
                )?
            } else {
                vec![stmt.clone()]
            };
            if all_there {
                // Only the ALTER goes: on a cluster its Distributed table is
                // still made again over the local one.
                run.retain(|sql| !sql.trim_start().starts_with("ALTER TABLE "));
            }
            for sql in run {
                // Checked again after a dropped connection: the ALTER may
                // have been applied before the answer was lost.
                let check = altered
                    .as_deref()
                    .filter(|_| sql.trim_start().starts_with("ALTER TABLE "))
                    .map(|table| (db.as_str(), table, stmt.as_str()));
                execute_retrying(&client, &sql, check)
                    .await
                    .map_err(|source| MigrateError::Statement {
                        version: m.version,
                        name: m.name.clone(),
                        statement: i + 1,
                        source,
                    })?;
            }
        }
        if had_events {
            client
                .query("INSERT INTO rebuild_pending (reason, since) VALUES (?, now())")
                .bind(format!(
                    "migration {} ({}) stores what the processor computes anew",
                    m.version, m.name
                ))
                .execute()
                .await?;
            report.rebuild_pending = true;
        }
        if RESUMMED.contains(&m.version) && !store.is_cluster() {
            crate::ranges::outdated(
                &client,
                &format!(
                    "migration {} ({}) added a table summed by range: run ensemble-processor rebuild-ranges",
                    m.version, m.name
                ),
            )
            .await?;
        }
        // A bound INSERT … VALUES rather than a RowBinary insert: the same
        // statement runs on 18.16, current servers and the embedded engine.
        client
            .query("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, now())")
            .bind(m.version)
            .bind(&m.name)
            .bind(&m.checksum)
            .execute()
            .await?;
        tracing::info!(version = m.version, name = %m.name, "migration applied");
        report.applied.push(m.version);
    }
    Ok(report)
}

/// The columns of `db.table`.
async fn columns(
    client: &clickhouse::Client,
    db: &str,
    table: &str,
) -> Result<Vec<String>, clickhouse::error::Error> {
    client
        .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
        .bind(db)
        .bind(table)
        .fetch_all()
        .await
}

/// Runs one DDL statement; when the connection drops (a server just
/// started, a proxy restarting), tries again, up to 5 times over ~4 s.
/// Every statement can run twice (`IF NOT EXISTS`, `IF EXISTS`) but an
/// `ALTER … ADD COLUMN`: `check` (database, table, the ALTER as written)
/// then says whether its columns arrived before the answer was lost.
async fn execute_retrying(
    client: &clickhouse::Client,
    sql: &str,
    check: Option<(&str, &str, &str)>,
) -> Result<(), clickhouse::error::Error> {
    let mut wait = std::time::Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match client.query_raw(sql).execute().await {
            Ok(()) => return Ok(()),
            Err(clickhouse::error::Error::Network(e)) if attempt < 5 => {
                tracing::warn!(attempt, error = %e, "connection dropped during a migration statement; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
                if let Some((db, table, alter)) = check {
                    if adding_only_missing(alter, &columns(client, db, table).await?).is_none() {
                        return Ok(());
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn embedded_migrations_are_numbered_and_unique() {
        let list = migrations().unwrap();
        assert!(!list.is_empty());
        assert_eq!(list[0].version, 1);
        for m in &list {
            // A migration without statements only records a rebuild (new
            // rows of existing tables, e.g. 0006's paths).
            assert!(
                !m.statements().is_empty() || REBUILT_FROM_EVENTS.contains(&m.version),
                "{} has no statement",
                m.name
            );
        }
    }

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
                "db_sql.later_conversions"
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
        // again (a new sorting key, which 18.16 cannot alter ON CLUSTER).
        assert_eq!(
            out.iter().filter(|s| s.starts_with("ALTER TABLE")).count(),
            3
        );
        let made = |s: &&String| {
            s.starts_with("CREATE TABLE IF NOT EXISTS db.figures_local ON CLUSTER c1 ")
        };
        let figures: Vec<&String> = out.iter().filter(made).collect();
        assert_eq!(figures.len(), 2, "0004's and 0007's");
        assert!(
            figures[1].contains("os_family String")
                && figures[1].contains("seconds, device_class, os_family)")
        );
        let figures_mv: Vec<&String> = out.iter().filter(|s| s.contains("figures_mv")).collect();
        assert!(
            figures_mv
                .last()
                .is_some_and(|s| s.contains("change.os_family AS os_family")
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

    #[test]
    fn a_rerun_adds_only_the_columns_not_there_yet() {
        let stmt = "ALTER TABLE ledger\n    ADD COLUMN ev_os String,\n    ADD COLUMN change.device_class Array(String),\n    ADD COLUMN m Map(String, Tuple(UInt8, String)) DEFAULT map('a,b', (1, 'c'))";
        let have = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            adding_only_missing(stmt, &have(&["visitor_id"])).as_deref(),
            Some(stmt)
        );
        assert_eq!(
            adding_only_missing(stmt, &have(&["ev_os", "visitor_id"])).as_deref(),
            Some("ALTER TABLE ledger\n    ADD COLUMN change.device_class Array(String),\n    ADD COLUMN m Map(String, Tuple(UInt8, String)) DEFAULT map('a,b', (1, 'c'))")
        );
        assert_eq!(
            adding_only_missing(stmt, &have(&["ev_os", "change.device_class", "m"])),
            None
        );
        // Another kind of ALTER, or a mix, is left alone.
        for other in [
            "ALTER TABLE ledger DROP COLUMN ev_os",
            "ALTER TABLE ledger ADD COLUMN a UInt8, MODIFY COLUMN b String",
            "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = MergeTree() ORDER BY a",
        ] {
            assert_eq!(
                adding_only_missing(other, &have(&["a", "b", "ev_os"])).as_deref(),
                Some(other)
            );
        }
        // Every ALTER of the embedded migrations is made of ADD COLUMN clauses.
        for m in migrations().unwrap() {
            for stmt in m.statements() {
                if altered_table(&stmt).is_some() {
                    assert_eq!(
                        adding_only_missing(&stmt, &[]).as_deref(),
                        Some(stmt.as_str()),
                        "{}",
                        m.name
                    );
                    let added: Vec<String> =
                        split_top_level(stmt.split_once('\n').map_or("", |x| x.1), ',')
                            .iter()
                            .filter_map(|c| {
                                c.trim()
                                    .strip_prefix("ADD COLUMN ")?
                                    .split_whitespace()
                                    .next()
                                    .map(str::to_owned)
                            })
                            .collect();
                    assert!(!added.is_empty(), "{}: {stmt}", m.name);
                    assert_eq!(adding_only_missing(&stmt, &added), None, "{}", m.name);
                }
            }
        }
    }

    #[test]
    fn file_names_are_checked() {
        assert!(Migration::parse("0001_events.sql", "SELECT 1").is_ok());
        for bad in [
            "1_events.sql",
            "0001events.sql",
            "0001_.sql",
            "abcd_x.sql",
            "0001_x.txt",
        ] {
            assert!(Migration::parse(bad, "SELECT 1").is_err(), "{bad}");
        }
    }

    #[test]
    fn statements_split_at_line_end_semicolons() {
        let sql = "-- a comment; not a statement\nCREATE TABLE a (x String DEFAULT ';')\nENGINE = Log;\n\nSELECT 1;\nSELECT 2";
        assert_eq!(
            split_statements(sql),
            vec![
                "CREATE TABLE a (x String DEFAULT ';')\nENGINE = Log",
                "SELECT 1",
                "SELECT 2"
            ]
        );
    }
}
