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
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub applied: Vec<u32>,
    pub already_applied: Vec<u32>,
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
    // The database name is an identifier, checked above; it cannot be bound.
    store
        .server_client()
        .query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .execute()
        .await?;
    let client = store.client();
    client.query(LEDGER_DDL).execute().await?;
    let applied: Vec<AppliedRow> = client
        .query("SELECT ?fields FROM schema_migrations ORDER BY version")
        .fetch_all()
        .await?;

    let mut report = MigrateReport::default();
    for m in migrations()? {
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
        for (i, stmt) in m.statements().iter().enumerate() {
            client
                .query_raw(stmt)
                .execute()
                .await
                .map_err(|source| MigrateError::Statement {
                    version: m.version,
                    name: m.name.clone(),
                    statement: i + 1,
                    source,
                })?;
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
            assert!(!m.statements().is_empty(), "{} has no statement", m.name);
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
