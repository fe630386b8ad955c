//! One module per endpoint family, each parsing its filters once
//! (`crate::filters`), asking `crate::answers` and returning a typed
//! answer as JSON or CSV.

pub mod attribution;
pub mod channels;
pub mod devices;
pub mod funnel;
pub mod journey;
pub mod live;
pub mod media;
pub mod overview;
pub mod paths;
pub mod placements;
pub mod reach;
pub mod scan_hours;
pub mod timeseries;
pub mod uplift;

use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// The query string, as every handler takes it.
pub type Params = axum::extract::Query<HashMap<String, String>>;

/// A JSON answer.
pub fn json<T: Serialize>(body: &T) -> Response {
    Json(body).into_response()
}
