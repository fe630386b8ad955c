//! ClickHouse schema migrations: the numbered SQL files of
//! `deploy/clickhouse/` (embedded at build time), applied in order, each once,
//! recorded in `<db>.schema_migrations` with a checksum.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::cluster_ddl::{cluster_statements, created_tables, sharded_tables};
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

impl MigrateError {
    /// The connection to ClickHouse dropped: what was sent may or may not
    /// have run.
    fn connection_dropped(&self) -> bool {
        matches!(
            self,
            Self::ClickHouse(clickhouse::error::Error::Network(_))
                | Self::Statement {
                    source: clickhouse::error::Error::Network(_),
                    ..
                }
        )
    }
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

/// `stmt` without its `ADD COLUMN` clauses of columns the table already
/// has and its `DROP COLUMN` clauses of columns it no longer has: a run
/// killed after an `ALTER TABLE` and before the migration was recorded can
/// be run again (ClickHouse 18.16 has neither `ADD COLUMN IF NOT EXISTS`
/// nor `DROP COLUMN IF EXISTS`). `None` when no clause is left. A
/// statement with other clauses comes back unchanged.
pub fn only_what_is_left(stmt: &str, existing: &[String]) -> Option<String> {
    let Some(rest) = stmt.trim().strip_prefix("ALTER TABLE ") else {
        return Some(stmt.to_owned());
    };
    let Some((table, changes)) = rest.split_once(char::is_whitespace) else {
        return Some(stmt.to_owned());
    };
    let clauses = split_top_level(changes, ',');
    let mut kept = Vec::new();
    let name = |column: &str| {
        column
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    for clause in &clauses {
        let clause = clause.trim();
        let there = |column: &str| existing.contains(&name(column));
        let keep = match (
            clause.strip_prefix("ADD COLUMN "),
            clause.strip_prefix("DROP COLUMN "),
        ) {
            (Some(added), _) => !there(added),
            (_, Some(dropped)) => there(dropped),
            _ => return Some(stmt.to_owned()),
        };
        if keep {
            kept.push(clause);
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

/// A `CREATE MATERIALIZED VIEW IF NOT EXISTS <name> TO <target> AS …`
/// statement's name, target and SELECT (after `AS`, as written), read the
/// same way by the migrator, the cluster rewriter and [`view_fill`].
pub(crate) fn materialized_view(stmt: &str) -> Option<(&str, &str, &str)> {
    let rest = stmt
        .trim()
        .strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ")?;
    let (name, rest) = rest.split_once(" TO ")?;
    let (target, select) = rest.split_once(" AS")?;
    Some((name.trim(), target.trim(), select))
}

/// The view a `CREATE [MATERIALIZED] VIEW IF NOT EXISTS` statement makes,
/// as (database or `None` for the main one, name).
fn created_view(stmt: &str) -> Option<(Option<&str>, &str)> {
    let name = match materialized_view(stmt) {
        Some((name, _, _)) => name,
        None => {
            let rest = stmt.trim().strip_prefix("CREATE VIEW IF NOT EXISTS ")?;
            rest.split_whitespace().next()?
        }
    };
    Some(match name.split_once('.') {
        Some((db, view)) => (Some(db), view),
        None => (None, name),
    })
}

/// The INSERT that fills `view`'s target table as the materialised view
/// does, from the migration that made it last — so that a rebuild (of
/// `events_minutely`) runs the view's own SELECT rather than a copy of it.
/// `None` if no migration makes `view`, or a later one drops it.
pub fn view_fill(view: &str) -> Option<String> {
    let all = migrations().ok()?;
    let dropped = format!("DROP TABLE IF EXISTS {view}");
    let statements: Vec<String> = all
        .iter()
        .rev()
        .flat_map(|m| m.statements().into_iter().rev())
        .collect();
    let (_, target, select) = statements
        .iter()
        .take_while(|s| s.trim() != dropped)
        .filter_map(|s| materialized_view(s))
        .find(|(name, _, _)| *name == view)?;
    Some(format!("INSERT INTO {target} {}", select.trim()))
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
/// journeys without contacts; 0012: the bots' scope as what the bots
/// change, the figures summed by range by the processor; 0014: the
/// ledger made again, its sets carried as text; 0016: a conversion's
/// credits on its own row): a database that
/// already has events when one is applied must be rebuilt from `events`;
/// it records that in `rebuild_pending` (which the rebuild empties and the
/// processor checks before it consumes).
pub const REBUILT_FROM_EVENTS: [u32; 8] = [4, 5, 6, 7, 11, 12, 14, 16];

/// The migrations that add or make again a table filled beside or as
/// `figures_ranges` (0009: the paths' delays by range; 0012: the summed
/// table made again): applied where the summed tables were whole, they are
/// recorded partial (the dashboard reads `figures`) until they are filled
/// (`rebuild-ranges`, or the rebuild 0012 asks for).
pub const RESUMMED: [u32; 2] = [9, 12];

/// What migration files write for the analysts' database
/// (`StoreConfig::sql_database`), replaced when they run.
pub const SQL_DATABASE: &str = "{sql_database}";

/// A migration's statements as they run on `store`'s databases.
pub(crate) fn statements_for(m: &Migration, sql_database: &str) -> Vec<String> {
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
///
/// When a connection drops (a pooled connection the server had just
/// closed, a node just started), the whole run goes again, up to 5 times
/// over ~4 s: every migration can be applied again over a run that
/// stopped in its middle, whether or not its last statement ran (views
/// that exist are left, an ALTER adds only the columns not there yet,
/// everything else is `IF NOT EXISTS` / `IF EXISTS`).
pub async fn migrate(store: &StoreConfig) -> Result<MigrateReport, MigrateError> {
    let mut report = MigrateReport::default();
    let mut wait = std::time::Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match migrate_once(store, &mut report).await {
            Err(e) if attempt < 5 && e.connection_dropped() => {
                tracing::warn!(attempt, error = %e, "connection dropped during the migrations; running them again");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
            Ok(()) => return Ok(report),
        }
    }
}

/// The embedded migrations not yet applied to `store`'s database, by
/// version (all of them where nothing was ever applied). Read only: for
/// commands that must see the schema they were written for (retention,
/// erasure) and refuse a database `migrate` has not brought up to it.
pub async fn pending(store: &StoreConfig) -> Result<Vec<u32>, MigrateError> {
    let all = migrations()?;
    let client = store.client();
    let kept: u64 = client
        .query(
            "SELECT count() FROM system.tables \
             WHERE database = currentDatabase() AND name = 'schema_migrations'",
        )
        .fetch_one()
        .await?;
    let applied: Vec<u32> = if kept == 0 {
        Vec::new()
    } else {
        client
            .query("SELECT DISTINCT version FROM schema_migrations")
            .fetch_all()
            .await?
    };
    Ok(all
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
}

/// One run of [`migrate`], adding what it applied to `report` (which
/// keeps what an earlier, interrupted run applied).
async fn migrate_once(store: &StoreConfig, report: &mut MigrateReport) -> Result<(), MigrateError> {
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
            if !report.applied.contains(&m.version) {
                report.already_applied.push(m.version);
            }
            continue;
        }
        let had_events = REBUILT_FROM_EVENTS.contains(&m.version)
            && client
                .query("SELECT count() FROM (SELECT 1 FROM events LIMIT 1)")
                .fetch_one::<u64>()
                .await?
                > 0;
        for (i, stmt) in stmts.iter().enumerate() {
            // A view that exists is left as it is: ClickHouse 18.16 reads a
            // view's SELECT before it looks whether the view exists, so an
            // old migration's view run again over a later migration's
            // tables (a run that lost its records) fails on columns those
            // tables no longer have.
            if let Some((in_db, view)) = created_view(stmt) {
                let exists: u64 = client
                    .query("SELECT count() FROM system.tables WHERE database = ? AND name = ?")
                    .bind(in_db.unwrap_or(db))
                    .bind(view)
                    .fetch_one()
                    .await?;
                if exists > 0 {
                    tracing::info!(version = m.version, view, "view already there");
                    continue;
                }
            }
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
                    only_what_is_left(stmt, &existing).unwrap_or_else(|| {
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
                client.query_raw(&sql).execute().await.map_err(|source| {
                    MigrateError::Statement {
                        version: m.version,
                        name: m.name.clone(),
                        statement: i + 1,
                        source,
                    }
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
    Ok(())
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
    fn a_rerun_adds_only_the_columns_not_there_yet() {
        let stmt = "ALTER TABLE ledger\n    ADD COLUMN ev_os String,\n    ADD COLUMN change.device_class Array(String),\n    ADD COLUMN m Map(String, Tuple(UInt8, String)) DEFAULT map('a,b', (1, 'c'))";
        let have = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            only_what_is_left(stmt, &have(&["visitor_id"])).as_deref(),
            Some(stmt)
        );
        assert_eq!(
            only_what_is_left(stmt, &have(&["ev_os", "visitor_id"])).as_deref(),
            Some("ALTER TABLE ledger\n    ADD COLUMN change.device_class Array(String),\n    ADD COLUMN m Map(String, Tuple(UInt8, String)) DEFAULT map('a,b', (1, 'c'))")
        );
        assert_eq!(
            only_what_is_left(stmt, &have(&["ev_os", "change.device_class", "m"])),
            None
        );
        // A column dropped only while it is there.
        let drop = "ALTER TABLE ledger\n    ADD COLUMN a UInt8,\n    DROP COLUMN b";
        assert_eq!(
            only_what_is_left(drop, &have(&["b"])).as_deref(),
            Some(drop)
        );
        assert_eq!(
            only_what_is_left(drop, &have(&[])).as_deref(),
            Some("ALTER TABLE ledger\n    ADD COLUMN a UInt8")
        );
        assert_eq!(only_what_is_left(drop, &have(&["a"])), None);
        // Another kind of ALTER, or a mix, is left alone.
        for other in [
            "ALTER TABLE ledger MODIFY COLUMN ev_os String",
            "ALTER TABLE ledger ADD COLUMN a UInt8, MODIFY COLUMN b String",
            "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = MergeTree() ORDER BY a",
        ] {
            assert_eq!(
                only_what_is_left(other, &have(&["a", "b", "ev_os"])).as_deref(),
                Some(other)
            );
        }
        // Every ALTER of the embedded migrations is made of ADD COLUMN and
        // DROP COLUMN clauses: run again over its own result, it is nothing.
        for m in migrations().unwrap() {
            for stmt in m.statements() {
                if altered_table(&stmt).is_some() {
                    let named = |kind: &str| -> Vec<String> {
                        split_top_level(stmt.split_once('\n').map_or("", |x| x.1), ',')
                            .iter()
                            .filter_map(|c| {
                                c.trim()
                                    .strip_prefix(kind)?
                                    .split_whitespace()
                                    .next()
                                    .map(str::to_owned)
                            })
                            .collect()
                    };
                    let (added, dropped) = (named("ADD COLUMN "), named("DROP COLUMN "));
                    assert_eq!(
                        only_what_is_left(&stmt, &dropped).as_deref(),
                        Some(stmt.as_str()),
                        "{}",
                        m.name
                    );
                    assert!(!added.is_empty(), "{}: {stmt}", m.name);
                    assert_eq!(only_what_is_left(&stmt, &added), None, "{}", m.name);
                }
            }
        }
    }

    #[test]
    fn a_view_fill_runs_the_views_own_select() {
        let minutely = view_fill("events_minutely_mv").unwrap();
        assert!(
            minutely.starts_with("INSERT INTO events_minutely SELECT")
                && minutely.ends_with("GROUP BY minute"),
            "{minutely}"
        );
        assert_eq!(view_fill("no_such_mv"), None);
        // Made by 0002, dropped by 0013.
        assert_eq!(view_fill("events_hourly_mv"), None);
    }

    #[test]
    fn created_views_are_named() {
        assert_eq!(
            created_view("CREATE VIEW IF NOT EXISTS db_sql.touches AS\nSELECT 1"),
            Some((Some("db_sql"), "touches"))
        );
        assert_eq!(
            created_view("CREATE MATERIALIZED VIEW IF NOT EXISTS journeys_mv TO x AS SELECT 1"),
            Some((None, "journeys_mv"))
        );
        assert_eq!(created_view("CREATE TABLE IF NOT EXISTS t (a UInt8)"), None);
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
