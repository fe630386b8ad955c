//! ensemble-core: the plumbing the three services share — the events'
//! ClickHouse row, the figures' ledger, Kafka and ClickHouse settings,
//! migrations, HTTP ops routes, shutdown, logging — around the domain of
//! `ensemble-model` (re-exported here under its module names).

pub use ensemble_model::{
    attribution, campaign, campaigns, declared, devices, figures, journeys, media, paths, privacy,
    reconcile, redact, rules,
};

pub mod batches;
pub mod config;
pub mod event;
pub mod kafka;
pub mod later;
pub mod launch;
pub mod ledger;
pub mod migrate;
pub mod probe;
pub mod ranges;
pub mod reconciliation;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use campaign::Campaign;
pub use campaigns::Campaigns;
pub use config::ConfigError;
pub use event::{EventMessage, EventRow, EventType};
pub use kafka::KafkaConfig;
pub use shutdown::Shutdown;
pub use store::{Sites, StoreConfig};
