//! Processor settings: flags with `ENSEMBLE_*` env fallbacks, checked at
//! start-up, and the `migrate` subcommand.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use ensemble_core::config::{parse_listen, ConfigError};
use ensemble_core::telemetry::LogConfig;
use ensemble_core::{CampaignDatabases, KafkaConfig, StoreConfig};
use ensemble_model::privacy::ContactHasher;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ensemble-processor",
    version,
    about = "ensemble processor: Kafka → ClickHouse"
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address for /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "ENSEMBLE_PROCESSOR_LISTEN",
        default_value = "127.0.0.1:8081",
        global = true
    )]
    pub listen: String,
    #[command(flatten)]
    pub campaigns: ensemble_core::store::CampaignFiles,
    /// Kafka consumer group.
    #[arg(
        long,
        env = "ENSEMBLE_PROCESSOR_GROUP",
        default_value = "ensemble-processor",
        global = true
    )]
    pub group_id: String,
    /// Flush a batch at this many rows.
    #[arg(
        long,
        env = "ENSEMBLE_BATCH_MAX_ROWS",
        default_value_t = 20_000,
        global = true
    )]
    pub batch_max_rows: usize,
    /// Visitors' events kept in memory between batches, per campaign's
    /// database, so that a batch reads from the ledger only the visitors
    /// not seen lately (~100 bytes each; 0 reads every history).
    #[arg(
        long,
        env = "ENSEMBLE_HISTORY_CACHE_EVENTS",
        default_value_t = 500_000,
        global = true
    )]
    pub history_cache_events: usize,
    /// Flush a batch at this many bytes of Kafka payload.
    #[arg(long, env = "ENSEMBLE_BATCH_MAX_BYTES", default_value_t = 16 << 20, global = true)]
    pub batch_max_bytes: usize,
    /// Flush a batch when its oldest row is this old.
    #[arg(
        long,
        env = "ENSEMBLE_FLUSH_INTERVAL_MS",
        default_value_t = 500,
        global = true
    )]
    pub flush_interval_ms: u64,
    /// Longest pause between two INSERT attempts while ClickHouse fails.
    #[arg(
        long,
        env = "ENSEMBLE_INSERT_RETRY_MAX_MS",
        default_value_t = 20_000,
        global = true
    )]
    pub insert_retry_max_ms: u64,
    /// How long the consumer may go without polling (e.g. ClickHouse down)
    /// before the group hands its partitions to another member.
    #[arg(
        long,
        env = "ENSEMBLE_MAX_POLL_INTERVAL_MS",
        default_value_t = 600_000,
        global = true
    )]
    pub max_poll_interval_ms: u64,
    /// Partitions with waiting messages that no member has consumed for
    /// this long make this member leave and rejoin its group (a dead
    /// member's partitions; see `membership.rs`). Above the 10 s session timeout.
    #[arg(
        long,
        env = "ENSEMBLE_REJOIN_AFTER_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub rejoin_after_ms: u64,
    /// Secret of the contact HMAC (the collector's), needed by `erase`.
    #[arg(
        long,
        env = "ENSEMBLE_CONTACT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub contact_secret: Option<String>,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub store: StoreConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Apply the ClickHouse schema migrations not yet applied, then exit.
    Migrate,
    /// Drop the monthly partitions whose every event is older than the retention.
    Retention {
        /// Keep this many days of events (a month partition goes once all of it is older).
        #[arg(long, env = "ENSEMBLE_RETENTION_DAYS")]
        days: u32,
    },
    /// Rebuild the dashboard's figures (ledger and figures tables) from the events
    /// table: after changing the campaign's calendar, channels or
    /// attribution settings. Stop the processors first. (Also answers to
    /// its old name, `rebuild-facts`.)
    #[command(alias = "rebuild-facts")]
    RebuildFigures,
    /// Sum the figures anew over the campaign's ranges (the campaign, each
    /// phase), which the dashboard's default questions read: once after an
    /// upgrade to a version that keeps them (seconds). Stop the processors
    /// first.
    RebuildRanges,
    /// Merge each figures table (`figures`, `figures_ranges`) into one part,
    /// so that the dashboard's reads cross one part, not the several that
    /// inserts leave between ClickHouse's merges, and empty the sets the
    /// ledger's rows carried to the figures (three quarters of its room).
    /// Safe while processors run; it rewrites both figures tables (10 M
    /// events: ~15 s each), so run it daily, e.g. after `retention`. In
    /// cluster mode only the ledger's sets are emptied.
    Compact,
    /// Right to erasure: delete every row of the visitors who signed up with this e-mail.
    Erase {
        /// The e-mail address, as the person gave it (it is normalised and hashed).
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Every campaign served, each with its database.
    pub databases: CampaignDatabases,
    pub group_id: String,
    pub batch: crate::batcher::BatchLimits,
    pub insert_retry_max_ms: u64,
    pub history_cache_events: usize,
    pub max_poll_interval_ms: u64,
    pub rejoin_after_ms: u64,
    pub hasher: Option<ContactHasher>,
    pub kafka: KafkaConfig,
    pub store: StoreConfig,
}

impl Config {
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let listen = parse_listen("--listen", &self.listen)?;
        self.store.validate()?;
        let databases = self.campaigns.databases(&self.store)?;
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::new("--group-id", "must not be empty"));
        }
        if self.batch_max_rows == 0 {
            return Err(ConfigError::new("--batch-max-rows", "must be at least 1"));
        }
        if self.batch_max_bytes < 1024 {
            return Err(ConfigError::new(
                "--batch-max-bytes",
                "must be at least 1024",
            ));
        }
        if !(10..=60_000).contains(&self.flush_interval_ms) {
            return Err(ConfigError::new(
                "--flush-interval-ms",
                "must be 10..=60000",
            ));
        }
        if self.insert_retry_max_ms < 100 {
            return Err(ConfigError::new(
                "--insert-retry-max-ms",
                "must be at least 100",
            ));
        }
        if self.max_poll_interval_ms < 10_000 {
            return Err(ConfigError::new(
                "--max-poll-interval-ms",
                "must be at least 10000",
            ));
        }
        if self.rejoin_after_ms < 15_000 {
            return Err(ConfigError::new(
                "--rejoin-after-ms",
                "must be at least 15000: a live member's session (10 s) must be able to expire first",
            ));
        }
        let hasher = self
            .contact_secret
            .as_deref()
            .map(|s| ContactHasher::new(s.as_bytes()))
            .transpose()
            .map_err(|e| ConfigError::new("--contact-secret", e.to_string()))?;
        if matches!(self.command, Some(Command::Erase { .. })) && hasher.is_none() {
            return Err(ConfigError::new(
                "--contact-secret",
                "erase needs the collector's secret to find the e-mail's contact_hash (set ENSEMBLE_CONTACT_SECRET)",
            ));
        }
        if matches!(self.command, Some(Command::Retention { days: 0 })) {
            return Err(ConfigError::new("--days", "must be at least 1"));
        }
        self.kafka.validate()?;
        self.store.validate()?;
        Ok(Settings {
            listen,
            databases,
            group_id: self.group_id,
            batch: crate::batcher::BatchLimits {
                max_rows: self.batch_max_rows,
                max_bytes: self.batch_max_bytes,
                max_age: std::time::Duration::from_millis(self.flush_interval_ms),
            },
            insert_retry_max_ms: self.insert_retry_max_ms,
            history_cache_events: self.history_cache_events,
            max_poll_interval_ms: self.max_poll_interval_ms,
            rejoin_after_ms: self.rejoin_after_ms,
            hasher,
            kafka: self.kafka,
            store: self.store,
        })
    }
}
