//! Dashboard settings: flags with `ENSEMBLE_*` env fallbacks, checked at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use ensemble_core::config::{parse_listen, ConfigError};
use ensemble_core::telemetry::LogConfig;
use ensemble_core::{Campaign, KafkaConfig, StoreConfig};

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
    /// Campaign file (phases, channels, placements).
    #[arg(
        long,
        env = "ENSEMBLE_CAMPAIGN",
        default_value = "deploy/campaign.toml"
    )]
    pub campaign: PathBuf,
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
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub campaign: Campaign,
    pub analyst_tokens: Vec<String>,
    pub agency_tokens: Vec<String>,
    pub store: StoreConfig,
    pub kafka: KafkaConfig,
    pub processor_group: String,
}

impl Config {
    pub fn validate(mut self) -> Result<Settings, ConfigError> {
        // Empty entries (`ENSEMBLE_AGENCY_TOKENS=` in a compose file, a
        // trailing comma) are not tokens.
        self.analyst_tokens.retain(|t| !t.is_empty());
        self.agency_tokens.retain(|t| !t.is_empty());
        let listen = parse_listen("--listen", &self.listen)?;
        let campaign = Campaign::load(&self.campaign)
            .map_err(|e| ConfigError::new("--campaign", e.to_string()))?;
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
        self.kafka.validate()?;
        if self.processor_group.trim().is_empty() {
            return Err(ConfigError::new(
                "--processor-group",
                "the processor's consumer group id is required",
            ));
        }
        Ok(Settings {
            listen,
            campaign,
            analyst_tokens: self.analyst_tokens,
            agency_tokens: self.agency_tokens,
            store: self.store,
            kafka: self.kafka,
            processor_group: self.processor_group,
        })
    }
}
