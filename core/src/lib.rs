//! ensemble-core: the domain model (campaign, events) and the plumbing the
//! three services share (Kafka and ClickHouse settings, migrations, HTTP ops
//! routes, shutdown, logging).

pub mod attribution;
pub mod campaign;
pub mod config;
pub mod event;
pub mod facts;
pub mod kafka;
pub mod launch;
pub mod ledger;
pub mod migrate;
pub mod privacy;
pub mod probe;
pub mod redact;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use campaign::Campaign;
pub use config::ConfigError;
pub use event::{EventMessage, EventRow, EventType};
pub use kafka::KafkaConfig;
pub use shutdown::Shutdown;
pub use store::StoreConfig;
