//! Processor settings: flags with `ENSEMBLE_*` env fallbacks, checked at
//! start-up, and the `migrate` subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ensemble_core::config::{parse_listen, ConfigError};
use ensemble_core::telemetry::LogConfig;
use ensemble_core::{Campaign, KafkaConfig, StoreConfig};

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
    /// Campaign file (phases, channels, placements).
    #[arg(
        long,
        env = "ENSEMBLE_CAMPAIGN",
        default_value = "deploy/campaign.toml",
        global = true
    )]
    pub campaign: PathBuf,
    /// Kafka consumer group.
    #[arg(
        long,
        env = "ENSEMBLE_PROCESSOR_GROUP",
        default_value = "ensemble-processor",
        global = true
    )]
    pub group_id: String,
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
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub campaign: Campaign,
    pub group_id: String,
    pub kafka: KafkaConfig,
    pub store: StoreConfig,
}

impl Config {
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let listen = parse_listen("--listen", &self.listen)?;
        let campaign = Campaign::load(&self.campaign)
            .map_err(|e| ConfigError::new("--campaign", e.to_string()))?;
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::new("--group-id", "must not be empty"));
        }
        self.kafka.validate()?;
        self.store.validate()?;
        Ok(Settings {
            listen,
            campaign,
            group_id: self.group_id,
            kafka: self.kafka,
            store: self.store,
        })
    }
}
