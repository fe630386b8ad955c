//! Collector settings: flags with `ENSEMBLE_*` env fallbacks, checked at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use ensemble_core::config::{parse_listen, ConfigError};
use ensemble_core::privacy::ContactHasher;
use ensemble_core::telemetry::LogConfig;
use ensemble_core::{Campaign, KafkaConfig};

/// Upper bound for the delivery timeout: a client must get its answer quickly.
pub const MAX_DELIVERY_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ensemble-ingest",
    version,
    about = "ensemble collector: events in, Kafka out"
)]
pub struct Config {
    /// Address to serve the collector (and /metrics, /healthz, /readyz) on.
    #[arg(long, env = "ENSEMBLE_INGEST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Campaign file (phases, channels, placements).
    #[arg(
        long,
        env = "ENSEMBLE_CAMPAIGN",
        default_value = "deploy/campaign.toml"
    )]
    pub campaign: PathBuf,
    /// Secret key of the contact HMAC (at least 16 bytes). Required.
    #[arg(long, env = "ENSEMBLE_CONTACT_SECRET", hide_env_values = true)]
    pub contact_secret: Option<String>,
    /// Token for POST /v1/import (at least 16 bytes); import is off without it.
    #[arg(long, env = "ENSEMBLE_IMPORT_TOKEN", hide_env_values = true)]
    pub import_token: Option<String>,
    /// How long a request waits for Kafka delivery reports before answering 503.
    #[arg(long, env = "ENSEMBLE_DELIVERY_TIMEOUT_MS", default_value_t = 5_000)]
    pub delivery_timeout_ms: u64,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

/// Settings after checking.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub campaign: Campaign,
    pub hasher: ContactHasher,
    pub import_token: Option<String>,
    pub delivery_timeout_ms: u64,
    pub kafka: KafkaConfig,
}

impl Config {
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let listen = parse_listen("--listen", &self.listen)?;
        let campaign = Campaign::load(&self.campaign)
            .map_err(|e| ConfigError::new("--campaign", e.to_string()))?;
        let secret = self.contact_secret.ok_or_else(|| {
            ConfigError::new(
                "--contact-secret",
                "required: the collector hashes e-mails with it and never stores them (set ENSEMBLE_CONTACT_SECRET)",
            )
        })?;
        let hasher = ContactHasher::new(secret.as_bytes())
            .map_err(|e| ConfigError::new("--contact-secret", e.to_string()))?;
        if let Some(t) = &self.import_token {
            if t.len() < 16 {
                return Err(ConfigError::new(
                    "--import-token",
                    "must be at least 16 bytes",
                ));
            }
        }
        if !(100..=MAX_DELIVERY_TIMEOUT_MS).contains(&self.delivery_timeout_ms) {
            return Err(ConfigError::new(
                "--delivery-timeout-ms",
                format!("must be 100..={MAX_DELIVERY_TIMEOUT_MS}"),
            ));
        }
        self.kafka.validate()?;
        Ok(Settings {
            listen,
            campaign,
            hasher,
            import_token: self.import_token,
            delivery_timeout_ms: self.delivery_timeout_ms,
            kafka: self.kafka,
        })
    }
}
