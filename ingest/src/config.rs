//! Collector settings: flags with `ENSEMBLE_*` env fallbacks, checked at start-up.

use std::net::SocketAddr;

use clap::Parser;
use ensemble_core::config::{parse_listen, parse_ops_listen, ConfigError};
use ensemble_core::telemetry::LogConfig;
use ensemble_core::{Campaigns, KafkaConfig};
use ensemble_model::privacy::ContactHasher;

use crate::body::BodyLimits;
use crate::client::{Cidr, ClientResolver};

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
    /// Serve /metrics, /healthz and /readyz on this address instead
    /// (e.g. 127.0.0.1:9080): the public port then answers the event
    /// endpoints only.
    #[arg(long, env = "ENSEMBLE_INGEST_OPS_LISTEN")]
    pub ops_listen: Option<String>,
    #[command(flatten)]
    pub campaigns: ensemble_core::store::CampaignFiles,
    /// Secret key of the contact HMAC and of hashed visitor ids (≥ 16 bytes). Required.
    #[arg(long, env = "ENSEMBLE_CONTACT_SECRET", hide_env_values = true)]
    pub contact_secret: Option<String>,
    /// Token for POST /v1/import (≥ 16 bytes); import answers 403 without it.
    #[arg(long, env = "ENSEMBLE_IMPORT_TOKEN", hide_env_values = true)]
    pub import_token: Option<String>,
    /// How long a request waits for Kafka delivery reports before answering 503.
    #[arg(long, env = "ENSEMBLE_DELIVERY_TIMEOUT_MS", default_value_t = 5_000)]
    pub delivery_timeout_ms: u64,
    /// Longest any request may take before it is answered 503 (at least
    /// --delivery-timeout-ms + 1000: a slow body must not hold a worker).
    #[arg(
        long,
        env = "ENSEMBLE_INGEST_REQUEST_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub request_timeout_ms: u64,
    /// Longest a redirect waits to record its scan before redirecting anyway.
    #[arg(long, env = "ENSEMBLE_REDIRECT_WAIT_MS", default_value_t = 1_500)]
    pub redirect_wait_ms: u64,
    /// Largest request body as sent (bytes).
    #[arg(long, env = "ENSEMBLE_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Largest request body after gunzip (bytes).
    #[arg(long, env = "ENSEMBLE_MAX_DECOMPRESSED_BYTES", default_value_t = 4 << 20)]
    pub max_decompressed_bytes: usize,
    /// Most events in one `{"batch":[...]}`.
    #[arg(long, env = "ENSEMBLE_MAX_BATCH_EVENTS", default_value_t = 500)]
    pub max_batch_events: usize,
    /// Deepest JSON nesting accepted.
    #[arg(long, env = "ENSEMBLE_MAX_JSON_DEPTH", default_value_t = 8)]
    pub max_json_depth: usize,
    /// Real-time events more than this far in the future are clamped to server time.
    #[arg(long, env = "ENSEMBLE_MAX_FUTURE_SKEW_S", default_value_t = 300)]
    pub max_future_skew_s: u64,
    /// Real-time events older than this are clamped to server time.
    #[arg(long, env = "ENSEMBLE_MAX_PAST_SKEW_S", default_value_t = 86_400)]
    pub max_past_skew_s: u64,
    /// Events per second per client (an IPv4 address or an IPv6 /64), sustained.
    #[arg(long, env = "ENSEMBLE_RATE_LIMIT_PER_S", default_value_t = 200)]
    pub rate_limit_per_s: u32,
    /// Events a client may send at once (at least --max-batch-events).
    #[arg(long, env = "ENSEMBLE_RATE_LIMIT_BURST", default_value_t = 1000)]
    pub rate_limit_burst: u32,
    /// Most clients the rate limiter tracks; past it newcomers share one bucket.
    #[arg(
        long,
        env = "ENSEMBLE_RATE_LIMIT_MAX_CLIENTS",
        default_value_t = 100_000
    )]
    pub rate_limit_max_clients: usize,
    /// Take the client address from X-Forwarded-For, written by the proxies
    /// named in --trusted-proxies (required with it): a request from any
    /// other peer is that peer's, whatever its header says.
    #[arg(long, env = "ENSEMBLE_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
    /// Your own proxies in front of the collector (comma-separated addresses
    /// or CIDR blocks): X-Forwarded-For is read only from them, and their
    /// hops are skipped from its right; the first other hop is the client.
    #[arg(long, env = "ENSEMBLE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// A scan of a placement by a client that scanned it less than this long
    /// ago (seconds) is stored flagged `repeat_scan` and left out of the
    /// figures, like a bot's: repetition cannot inflate a placement's scans.
    #[arg(long, env = "ENSEMBLE_REPEAT_SCAN_WINDOW_S", default_value_t = 600)]
    pub repeat_scan_window_s: u64,
    /// Failed authentications (wrong import token) a client may make per
    /// minute before it is answered 429.
    #[arg(long, env = "ENSEMBLE_AUTH_FAILURES_PER_MIN", default_value_t = 10)]
    pub auth_failures_per_min: u32,
    /// How long a visit token from the redirect stands for its scanner
    /// (seconds): scan → landing takes seconds; a link opened later, by
    /// anyone, is a new visitor.
    #[arg(long, env = "ENSEMBLE_VISIT_TOKEN_TTL_S", default_value_t = 300)]
    pub visit_token_ttl_s: u64,
    /// Retry-After sent with 503 answers (seconds).
    #[arg(long, env = "ENSEMBLE_RETRY_AFTER_S", default_value_t = 5)]
    pub retry_after_s: u64,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

/// Settings after checking.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Where the ops routes are served when not on `listen`.
    pub ops_listen: Option<SocketAddr>,
    /// Every campaign served (`--campaign` first).
    pub campaigns: Campaigns,
    pub hasher: ContactHasher,
    /// The secret, for deriving hashed visitor ids.
    pub secret: Vec<u8>,
    pub import_token: Option<String>,
    pub delivery_timeout_ms: u64,
    pub redirect_wait_ms: u64,
    pub request_timeout_ms: u64,
    pub limits: BodyLimits,
    pub max_future_skew_s: u64,
    pub max_past_skew_s: u64,
    pub rate_limit_per_s: u32,
    pub rate_limit_burst: u32,
    pub rate_limit_max_clients: usize,
    pub clients: ClientResolver,
    pub visit_token_ttl_s: u64,
    pub repeat_scan_window_s: u64,
    pub auth_failures_per_min: u32,
    pub retry_after_s: u64,
    pub kafka: KafkaConfig,
}

fn at_least(flag: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::new(flag, format!("must be at least {min}")));
    }
    Ok(())
}

impl Config {
    pub fn validate(mut self) -> Result<Settings, ConfigError> {
        // An empty value (`ENSEMBLE_IMPORT_TOKEN=` in a compose file) means unset.
        self.import_token = self.import_token.filter(|t| !t.is_empty());
        let listen = parse_listen("--listen", &self.listen)?;
        let ops_listen = parse_ops_listen(listen, self.ops_listen.as_deref())?;
        let (campaigns, _) = self.campaigns.load()?;
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
        if !(self.delivery_timeout_ms + 1000..=600_000).contains(&self.request_timeout_ms) {
            return Err(ConfigError::new(
                "--request-timeout-ms",
                "must be from --delivery-timeout-ms + 1000 to 600000",
            ));
        }
        if !(10..=self.delivery_timeout_ms).contains(&self.redirect_wait_ms) {
            return Err(ConfigError::new(
                "--redirect-wait-ms",
                "must be 10..=--delivery-timeout-ms",
            ));
        }
        at_least("--max-body-bytes", self.max_body_bytes as u64, 1024)?;
        if self.max_decompressed_bytes < self.max_body_bytes {
            return Err(ConfigError::new(
                "--max-decompressed-bytes",
                "must be at least --max-body-bytes",
            ));
        }
        at_least("--max-batch-events", self.max_batch_events as u64, 1)?;
        at_least("--max-json-depth", self.max_json_depth as u64, 3)?;
        at_least("--max-future-skew-s", self.max_future_skew_s, 1)?;
        at_least("--max-past-skew-s", self.max_past_skew_s, 60)?;
        // The processor dead-letters events further ahead of their receipt
        // than the store's bound: the collector must not accept them.
        let ahead = ensemble_core::event::MAX_AHEAD_OF_RECEIPT_SECS as u64;
        if self.max_future_skew_s > ahead {
            return Err(ConfigError::new(
                "--max-future-skew-s",
                format!("must be at most {ahead} (a day)"),
            ));
        }
        if self.max_past_skew_s > 30 * 86_400 {
            return Err(ConfigError::new(
                "--max-past-skew-s",
                "must be at most 2592000 (30 days): older events come through /v1/import",
            ));
        }
        at_least("--rate-limit-per-s", u64::from(self.rate_limit_per_s), 1)?;
        if (self.rate_limit_burst as usize) < self.max_batch_events {
            return Err(ConfigError::new(
                "--rate-limit-burst",
                format!(
                    "must be at least --max-batch-events ({}): a full batch must be able to pass",
                    self.max_batch_events
                ),
            ));
        }
        at_least(
            "--rate-limit-max-clients",
            self.rate_limit_max_clients as u64,
            1,
        )?;
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::new("--trusted-proxies", e))?;
        if !trusted_proxies.is_empty() && !self.trust_forwarded_for {
            return Err(ConfigError::new(
                "--trusted-proxies",
                "only means something with --trust-forwarded-for",
            ));
        }
        if self.trust_forwarded_for && trusted_proxies.is_empty() {
            return Err(ConfigError::new(
                "--trust-forwarded-for",
                "name the proxies it trusts with --trusted-proxies (e.g. 10.0.0.0/8): \
                 a header from anyone else could choose its sender's address",
            ));
        }
        if !(1..=86_400).contains(&self.repeat_scan_window_s) {
            return Err(ConfigError::new(
                "--repeat-scan-window-s",
                "must be 1..=86400",
            ));
        }
        at_least(
            "--auth-failures-per-min",
            u64::from(self.auth_failures_per_min),
            1,
        )?;
        at_least("--retry-after-s", self.retry_after_s, 1)?;
        if !(1..=3600).contains(&self.visit_token_ttl_s) {
            return Err(ConfigError::new(
                "--visit-token-ttl-s",
                "must be 1..=3600: a token honoured longer lets a shared link merge people",
            ));
        }
        self.kafka.validate()?;
        Ok(Settings {
            listen,
            ops_listen,
            campaigns,
            hasher,
            secret: secret.into_bytes(),
            import_token: self.import_token,
            delivery_timeout_ms: self.delivery_timeout_ms,
            redirect_wait_ms: self.redirect_wait_ms,
            request_timeout_ms: self.request_timeout_ms,
            limits: BodyLimits {
                max_body_bytes: self.max_body_bytes,
                max_decompressed_bytes: self.max_decompressed_bytes,
                max_batch_events: self.max_batch_events,
                max_json_depth: self.max_json_depth,
            },
            max_future_skew_s: self.max_future_skew_s,
            max_past_skew_s: self.max_past_skew_s,
            rate_limit_per_s: self.rate_limit_per_s,
            rate_limit_burst: self.rate_limit_burst,
            rate_limit_max_clients: self.rate_limit_max_clients,
            clients: ClientResolver {
                trust_forwarded_for: self.trust_forwarded_for,
                trusted_proxies,
            },
            visit_token_ttl_s: self.visit_token_ttl_s,
            repeat_scan_window_s: self.repeat_scan_window_s,
            auth_failures_per_min: self.auth_failures_per_min,
            retry_after_s: self.retry_after_s,
            kafka: self.kafka,
        })
    }
}
