//! ensemble-core: the plumbing the three services share — the events'
//! ClickHouse row, the figures' ledger, Kafka and ClickHouse settings,
//! migrations, HTTP ops routes, shutdown, logging — around the domain of
//! `ensemble-model`, which the services import as `ensemble_model` (only
//! `Campaign`, `Campaigns` and the event's vocabulary, extended in
//! [`event`], are named here too).

pub mod batches;
pub mod cluster_ddl;
pub mod compact;
pub mod config;
pub mod event;
pub mod kafka;
pub mod later;
pub mod launch;
pub mod ledger;
pub mod migrate;
pub mod probe;
pub mod ranges;
pub mod rebuild;
pub mod reconciliation;
pub mod service;
pub mod shutdown;
pub(crate) mod sql;
pub mod store;
pub mod telemetry;

pub use config::ConfigError;
pub use ensemble_model::campaign::Campaign;
pub use ensemble_model::campaigns::Campaigns;
pub use event::{EventMessage, EventRow, EventType};
pub use kafka::KafkaConfig;
pub use shutdown::Shutdown;
pub use store::{CampaignDatabases, StoreConfig};
