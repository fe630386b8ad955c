//! ensemble-model: the campaign's domain without any I/O — no Kafka, no
//! ClickHouse, no HTTP. Every rule behind a figure is written here once:
//!
//! - [`campaign`]: the campaign file (phases, channels, placements,
//!   attribution settings), validated;
//! - [`campaigns`]: several campaigns side by side, and which one an
//!   event belongs to;
//! - [`event`]: the event vocabulary, the wire format and its validation;
//! - [`rules`]: what an event *is* for the figures (a scan, an exposure,
//!   a touch candidate, a sign-up);
//! - [`attribution`]: touches (the gap rule), conversions and the five
//!   models' credit split;
//! - [`figures`]: every dashboard figure as a sum of per-visitor
//!   contributions, stored so that any range of days, device and
//!   placement is a sum of rows;
//! - [`journeys`]: the same rules one row per touch, conversion, credit
//!   and placement-day (the analysts' SQL views);
//! - [`devices`]: the device breakdown (device class × OS family per
//!   channel);
//! - [`media`]: the agency's reach report (audience, cost and their
//!   ratios);
//! - [`paths`]: conversion paths, and the Markov and Shapley models over
//!   them;
//! - [`intervals`]: 95 % intervals on every model's channel credit;
//! - [`uplift`]: each phase's daily figure against a baseline, with an interval;
//! - [`redact`], [`privacy`]: personal data in free text, contact hashing;
//! - [`reconcile`]: when stored figures and raw events disagree (drift).
//!
//! The services (`ensemble-core` and the three binaries) are adapters around
//! it; its tests run in seconds without any server.

pub mod attribution;
pub mod campaign;
pub mod campaigns;
pub mod declared;
pub mod devices;
pub mod event;
pub mod figures;
pub mod intervals;
pub mod journeys;
pub mod media;
pub mod paths;
pub mod privacy;
pub mod reconcile;
pub mod redact;
pub mod rules;
pub mod uplift;

pub use campaign::Campaign;
pub use campaigns::Campaigns;
pub use event::{EventMessage, EventType};
