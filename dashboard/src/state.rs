//! The API's state: the campaign, the ClickHouse client, the tokens, the
//! admission gate, what the summed figures cover. Who is asking is
//! `crate::access`'s.

use std::sync::Arc;

use ensemble_core::Campaign;

#[derive(Debug)]
pub struct ApiState {
    pub campaign: Campaign,
    /// The collector's public address: what QR codes open.
    pub collector_url: url::Url,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: std::time::Duration,
    pub client: clickhouse::Client,
    /// Cluster mode: the tables read are `Distributed` (no PREWHERE).
    pub cluster: bool,
    pub analyst_tokens: Vec<String>,
    pub agency_tokens: Vec<String>,
    /// The processor group's progress on the events topic (`/api/live`'s
    /// pending events), over one client for the life of the service.
    pub lag: Arc<ensemble_core::kafka::LagReader>,
    /// Slots for questions the pre-summed figures do not answer.
    pub gate: crate::admission::Gate,
    /// Whether the figures summed by range answer this campaign's default
    /// questions.
    pub summed: Summed,
    /// The last reconciliation of the figures against the raw events.
    pub reconciliation: crate::reconciliation::Latest,
    /// The campaign whose store holds the days just before this one's
    /// calendar (`Campaigns::preceding`): the uplift's `baseline=before`
    /// reads them there too.
    pub preceding: Option<Shared>,
}

/// How often the dashboard asks again whether `figures_ranges` is whole
/// for its campaign (a `rebuild-ranges` is picked up within this).
const SUMMED_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// The campaign's summed ranges (`figures::summed_ranges`) and whether
/// `figures_ranges` holds them whole (`ensemble_core::ranges`), checked
/// again at most every [`SUMMED_RECHECK`].
#[derive(Debug)]
pub struct Summed {
    ranges: Vec<ensemble_model::figures::Days>,
    /// Their text, as the table's state records it.
    text: String,
    /// `ensemble_core::ranges::kept`.
    kept: bool,
    checked: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

impl Summed {
    pub fn new(campaign: &Campaign, store: &ensemble_core::StoreConfig) -> Self {
        let (ranges, text) = ensemble_core::ranges::ranges_of(campaign);
        Self {
            kept: ensemble_core::ranges::kept(store, &ranges),
            ranges,
            text,
            checked: std::sync::Mutex::new(None),
        }
    }

    /// Whether every range of `days` is a summed range.
    pub fn covers(&self, days: &[ensemble_model::figures::Days]) -> bool {
        self.kept && days.iter().all(|d| self.ranges.contains(d))
    }

    /// Whether the summed table may be read now (false when ClickHouse
    /// cannot say: the unsummed figures give the same answers).
    pub async fn usable(&self, client: &clickhouse::Client) -> bool {
        if !self.kept {
            return false;
        }
        let cached = *self
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, ok)) = cached {
            if at.elapsed() < SUMMED_RECHECK {
                return ok;
            }
        }
        let ok = match ensemble_core::ranges::whole_for(client, &self.text).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::debug!(error = %e, "figures by range: state unreadable, reading the figures");
                false
            }
        };
        *self
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), ok));
        ok
    }
}

pub type Shared = Arc<ApiState>;
