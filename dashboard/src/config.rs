//! Dashboard settings: flags with `ENSEMBLE_*` env fallbacks, checked at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use ensemble_core::config::{parse_listen, parse_ops_listen, ConfigError};
use ensemble_core::telemetry::LogConfig;
use ensemble_core::{CampaignDatabases, Campaigns, KafkaConfig, StoreConfig};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Write every placement's QR code (`<code>.svg`, `<code>.png`) and
    /// printable A4 sheets (`sheet-N.svg`) into a folder, then exit.
    QrCodes {
        /// The folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Size of each PNG, in pixels.
        #[arg(long, default_value_t = 1024)]
        size: u32,
    },
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ensemble-dashboard",
    version,
    about = "ensemble dashboard: attribution for analysts and the agency"
)]
pub struct Config {
    /// Address to serve the dashboard (and /metrics, /healthz, /readyz) on.
    #[arg(
        long,
        env = "ENSEMBLE_DASHBOARD_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub listen: String,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The collector's public address, as printed on posters: QR codes
    /// encode `<this>/r/<placement code>`.
    #[arg(
        long,
        env = "ENSEMBLE_COLLECTOR_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub collector_public_url: String,
    /// Serve /metrics, /healthz and /readyz on this address instead: the
    /// public port then answers the page and the API only.
    #[arg(long, env = "ENSEMBLE_DASHBOARD_OPS_LISTEN")]
    pub ops_listen: Option<String>,
    #[command(flatten)]
    pub campaigns: ensemble_core::store::CampaignFiles,
    /// Analyst access tokens (comma-separated, each ≥ 16 bytes): see everything.
    #[arg(
        long,
        env = "ENSEMBLE_ANALYST_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub analyst_tokens: Vec<String>,
    /// Agency access tokens (comma-separated, each ≥ 16 bytes): aggregates only.
    #[arg(
        long,
        env = "ENSEMBLE_AGENCY_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub agency_tokens: Vec<String>,
    #[command(flatten)]
    pub store: StoreConfig,
    /// The broker and topic the processor reads, for the freshness figure
    /// (events accepted and not yet in ClickHouse).
    #[command(flatten)]
    pub kafka: KafkaConfig,
    /// The processor's consumer group, whose committed offsets say what is
    /// in ClickHouse.
    #[arg(
        long,
        env = "ENSEMBLE_PROCESSOR_GROUP",
        default_value = "ensemble-processor"
    )]
    pub processor_group: String,
    /// Longest a dashboard query may run in ClickHouse (seconds); past it
    /// the answer is 503 with how to narrow the question.
    #[arg(long, env = "ENSEMBLE_QUERY_TIMEOUT_S", default_value_t = 20)]
    pub query_timeout_s: u64,
    /// Most memory one dashboard query may use in ClickHouse (bytes);
    /// larger GROUP BYs and sorts spill to disk from half of it.
    #[arg(
        long,
        env = "ENSEMBLE_QUERY_MAX_MEMORY_BYTES",
        default_value_t = 2_000_000_000
    )]
    pub query_max_memory_bytes: u64,
    /// Threads one dashboard query may use in ClickHouse: leave the others
    /// to the processor's inserts.
    #[arg(long, env = "ENSEMBLE_QUERY_MAX_THREADS", default_value_t = 1)]
    pub query_max_threads: u64,
    /// Longest any request may take before it is answered 503 (at least
    /// --query-timeout-s + 1 s: a question may run several queries).
    #[arg(
        long,
        env = "ENSEMBLE_DASHBOARD_REQUEST_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub request_timeout_ms: u64,
    /// Questions that recount raw events (custom from/to, device or
    /// placement filter, source=events) one analyst token may run at once;
    /// an agency token runs one.
    #[arg(long, env = "ENSEMBLE_HEAVY_PER_ANALYST", default_value_t = 2)]
    pub heavy_per_analyst: usize,
    /// Such questions running at once, all tokens together.
    #[arg(long, env = "ENSEMBLE_HEAVY_TOTAL", default_value_t = 3)]
    pub heavy_total: usize,
    /// Seconds between two reconciliations of the stored figures against
    /// the raw events (per day; a day drifts when two checks in a row find
    /// the same difference). Three aggregates over `events` and the ledger
    /// each time.
    #[arg(long, env = "ENSEMBLE_RECONCILE_INTERVAL_S", default_value_t = 300)]
    pub reconcile_interval_s: u64,
    #[command(flatten)]
    pub log: LogConfig,
}

/// The ClickHouse limits every dashboard query runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    pub timeout_s: u64,
    pub max_memory_bytes: u64,
    pub max_threads: u64,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Time between two reconciliations (`--reconcile-interval-s`).
    pub reconcile_every: std::time::Duration,
    pub collector_url: url::Url,
    pub ops_listen: Option<SocketAddr>,
    /// Every campaign served (`--campaign` first) and its database.
    pub databases: CampaignDatabases,
    pub analyst_tokens: Vec<String>,
    pub agency_tokens: Vec<String>,
    pub kafka: KafkaConfig,
    pub processor_group: String,
    pub query: QueryLimits,
    pub heavy: crate::admission::HeavyLimits,
    pub request_timeout: std::time::Duration,
}

/// Checks `--collector-public-url`: an absolute http(s) URL.
fn collector_url(raw: &str) -> Result<url::Url, ConfigError> {
    url::Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| {
            ConfigError::new(
                "--collector-public-url",
                format!("`{raw}` is not an absolute http(s) URL like https://go.example.org"),
            )
        })
}

impl Config {
    /// What `qr-codes` needs: the campaigns and the collector's public URL.
    pub fn validate_qr(&self) -> Result<(Campaigns, url::Url), ConfigError> {
        let (campaigns, _) = self.campaigns.load()?;
        Ok((campaigns, collector_url(&self.collector_public_url)?))
    }

    pub fn validate(mut self) -> Result<Settings, ConfigError> {
        // Empty entries (`ENSEMBLE_AGENCY_TOKENS=` in a compose file, a
        // trailing comma) are not tokens.
        self.analyst_tokens.retain(|t| !t.is_empty());
        self.agency_tokens.retain(|t| !t.is_empty());
        let listen = parse_listen("--listen", &self.listen)?;
        let ops_listen = parse_ops_listen(listen, self.ops_listen.as_deref())?;
        if self.analyst_tokens.is_empty() {
            return Err(ConfigError::new(
                "--analyst-tokens",
                "at least one analyst token is required (set ENSEMBLE_ANALYST_TOKENS)",
            ));
        }
        for (flag, tokens) in [
            ("--analyst-tokens", &self.analyst_tokens),
            ("--agency-tokens", &self.agency_tokens),
        ] {
            if tokens.iter().any(|t| t.len() < 16) {
                return Err(ConfigError::new(
                    flag,
                    "every token must be at least 16 bytes",
                ));
            }
        }
        if self
            .analyst_tokens
            .iter()
            .any(|t| self.agency_tokens.contains(t))
        {
            return Err(ConfigError::new(
                "--agency-tokens",
                "a token cannot be both analyst and agency",
            ));
        }
        self.store.validate()?;
        let databases = self.campaigns.databases(&self.store)?;
        self.kafka.validate()?;
        if self.processor_group.trim().is_empty() {
            return Err(ConfigError::new(
                "--processor-group",
                "the processor's consumer group id is required",
            ));
        }
        if !(1..=3600).contains(&self.query_timeout_s) {
            return Err(ConfigError::new("--query-timeout-s", "must be 1..=3600"));
        }
        if self.query_max_memory_bytes < 100_000_000 {
            return Err(ConfigError::new(
                "--query-max-memory-bytes",
                "must be at least 100000000 (100 MB)",
            ));
        }
        if !(self.query_timeout_s * 1000 + 1000..=3_600_000).contains(&self.request_timeout_ms) {
            return Err(ConfigError::new(
                "--request-timeout-ms",
                "must be from --query-timeout-s × 1000 + 1000 to 3600000",
            ));
        }
        if self.query_max_threads == 0 {
            return Err(ConfigError::new(
                "--query-max-threads",
                "must be at least 1",
            ));
        }
        if self.heavy_per_analyst == 0 || self.heavy_total == 0 {
            return Err(ConfigError::new(
                if self.heavy_total == 0 {
                    "--heavy-total"
                } else {
                    "--heavy-per-analyst"
                },
                "must be at least 1",
            ));
        }
        if !(1..=86_400).contains(&self.reconcile_interval_s) {
            return Err(ConfigError::new(
                "--reconcile-interval-s",
                "must be 1..=86400 (seconds between two reconciliations)",
            ));
        }
        Ok(Settings {
            reconcile_every: std::time::Duration::from_secs(self.reconcile_interval_s),
            listen,
            collector_url: collector_url(&self.collector_public_url)?,
            ops_listen,
            databases,
            analyst_tokens: self.analyst_tokens,
            agency_tokens: self.agency_tokens,
            kafka: self.kafka,
            processor_group: self.processor_group,
            query: QueryLimits {
                timeout_s: self.query_timeout_s,
                max_memory_bytes: self.query_max_memory_bytes,
                max_threads: self.query_max_threads,
            },
            request_timeout: std::time::Duration::from_millis(self.request_timeout_ms),
            heavy: crate::admission::HeavyLimits {
                per_analyst: self.heavy_per_analyst,
                per_agency: 1,
                total: self.heavy_total,
            },
        })
    }
}
