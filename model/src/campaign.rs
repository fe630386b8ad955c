//! The campaign model: phases, channels, placements and attribution settings,
//! loaded from one TOML file, validated, and the look-ups built on them
//! (phase of a timestamp, placement of a code, channel of UTM tags / referrer).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use url::Url;

/// Phase id given to any timestamp outside every configured phase.
pub const HORS_PHASE: &str = "hors-phase";

/// Why a campaign file was refused. `field` names the offending setting the
/// way a person would find it in the file (`placements[3].channel`).
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("cannot read campaign file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("campaign file is not valid TOML: {0}")]
    Parse(String),
    #[error("campaign setting `{field}` is invalid: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CampaignError {
    CampaignError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The file as written. Validated into [`Campaign`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignFile {
    campaign: CampaignSection,
    channel_rules: ChannelRules,
    attribution: AttributionFile,
    #[serde(default)]
    phases: Vec<PhaseFile>,
    #[serde(default)]
    channels: Vec<Channel>,
    #[serde(default)]
    placements: Vec<PlacementFile>,
    /// What free text is stored as sent (`crate::declared`).
    #[serde(default)]
    declared: crate::declared::DeclaredFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignSection {
    id: String,
    name: String,
    timezone: String,
    default_landing_url: String,
    #[serde(default)]
    landing_origins: Vec<String>,
}

/// Which channel an event gets when no placement or UTM rule decides.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelRules {
    /// No UTM tags and no outside referrer (typed URL, bookmark, own pages).
    pub direct: String,
    /// A referrer from a host that no channel claims.
    pub other_referrer: String,
    /// UTM tags or a placement code that match nothing configured.
    pub unknown: String,
    /// Hosts of the campaign's own site: a referrer from them is not a source.
    #[serde(default)]
    pub own_hosts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributionFile {
    conversion_event: String,
    lookback_days: u32,
    time_decay_half_life_days: f64,
    touch_gap_minutes: u32,
    position_weights: PositionWeights,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PositionWeights {
    pub first: f64,
    pub middle: f64,
    pub last: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseFile {
    id: String,
    label: String,
    /// First day of the phase, local date `YYYY-MM-DD` (inclusive).
    start: String,
    /// Last day of the phase, local date `YYYY-MM-DD` (inclusive).
    end: String,
}

/// A channel: where a contact came from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub id: String,
    pub label_fr: String,
    pub label_en: String,
    /// Whether events of this channel are attribution touches (DESIGN §2:
    /// `site` and `inconnu` are not).
    #[serde(default = "yes")]
    pub touch: bool,
    /// `utm_source` values (case-insensitive) that mean this channel.
    #[serde(default)]
    pub utm_sources: Vec<String>,
    /// Referrer hosts (a host or any of its subdomains) that mean this channel.
    #[serde(default)]
    pub referrer_hosts: Vec<String>,
    /// The redirect (`/r/{code}`) of this channel's placements records a
    /// dating-app card click (`tinder_card`, action `click`) instead of a QR scan.
    #[serde(default)]
    pub redirect_is_card_click: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementFile {
    code: String,
    channel: String,
    label: String,
    #[serde(default)]
    location: String,
    landing_url: String,
    audience_estimate: Option<u64>,
    media_cost_eur: Option<f64>,
}

/// A phase of the campaign calendar, with its bounds resolved to instants.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub id: String,
    pub label: String,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    /// Local midnight at the start of `start_date`.
    pub starts_at: DateTime<Utc>,
    /// Local midnight at the end of `end_date` (exclusive).
    pub ends_at: DateTime<Utc>,
}

/// One physical or digital placement: a poster batch, a Tinder card, a display creative.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub code: String,
    pub channel: String,
    pub label: String,
    pub location: String,
    pub landing_url: Url,
    pub audience_estimate: Option<u64>,
    pub media_cost_eur: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    pub conversion_event: String,
    pub lookback: chrono::Duration,
    pub half_life: chrono::Duration,
    pub touch_gap: chrono::Duration,
    pub position_weights: PositionWeights,
}

/// A validated campaign. Build it with [`Campaign::from_toml`] or [`Campaign::load`].
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub timezone: Tz,
    pub default_landing_url: Url,
    pub landing_origins: Vec<String>,
    pub channel_rules: ChannelRules,
    pub attribution: Attribution,
    pub phases: Vec<Phase>,
    pub channels: Vec<Channel>,
    pub placements: Vec<Placement>,
    /// The free text stored as sent; the rest is a placeholder or refused.
    pub declared: crate::declared::Declared,
    placement_index: HashMap<String, usize>,
    utm_index: HashMap<String, usize>,
}

/// Lower-case slug: `[a-z0-9][a-z0-9-]*`, at most 64 bytes.
fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Placement code: `[A-Za-z0-9][A-Za-z0-9_-]*`, at most 64 bytes; it appears in `/r/{code}`.
pub fn is_placement_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_http_url(field: &str, raw: &str) -> Result<Url, CampaignError> {
    let url = Url::parse(raw).map_err(|e| invalid(field, format!("`{raw}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            field,
            format!("`{raw}` must be an absolute http(s) URL with a host"),
        ));
    }
    Ok(url)
}

fn parse_local_date(field: &str, raw: &str) -> Result<NaiveDate, CampaignError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|e| invalid(field, format!("`{raw}` is not a date YYYY-MM-DD: {e}")))
}

/// The instant of local midnight starting `date` in `tz`. Midnight may not
/// exist on a DST change day in some zones; then the first valid instant of
/// the day is taken.
fn local_midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let mut t = date.and_time(chrono::NaiveTime::MIN);
    for _ in 0..4 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.with_timezone(&Utc);
        }
        t += chrono::Duration::minutes(30);
    }
    // No zone skips two hours at midnight; fall back to reading the date as UTC.
    Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
}

fn normalise_host(h: &str) -> String {
    h.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl Campaign {
    /// Reads and validates a campaign file.
    pub fn load(path: &Path) -> Result<Self, CampaignError> {
        let text = std::fs::read_to_string(path).map_err(|source| CampaignError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates a campaign from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, CampaignError> {
        let file: CampaignFile =
            toml::from_str(text).map_err(|e| CampaignError::Parse(e.to_string()))?;
        Self::validate(file)
    }

    fn validate(file: CampaignFile) -> Result<Self, CampaignError> {
        let c = file.campaign;
        if !is_slug(&c.id) {
            return Err(invalid(
                "campaign.id",
                "must be a lower-case slug [a-z0-9-]",
            ));
        }
        if c.name.trim().is_empty() {
            return Err(invalid("campaign.name", "must not be empty"));
        }
        let timezone: Tz = c.timezone.parse().map_err(|_| {
            invalid(
                "campaign.timezone",
                format!("`{}` is not an IANA time zone", c.timezone),
            )
        })?;
        let default_landing_url =
            parse_http_url("campaign.default_landing_url", &c.default_landing_url)?;
        for (i, origin) in c.landing_origins.iter().enumerate() {
            let field = format!("campaign.landing_origins[{i}]");
            let url = parse_http_url(&field, origin)?;
            if url.path() != "/" || url.query().is_some() {
                return Err(invalid(field, "an origin is scheme://host[:port] only"));
            }
        }

        // Channels.
        let mut channel_ids = HashSet::new();
        let mut utm_index = HashMap::new();
        let mut referrer_owner: HashMap<String, String> = HashMap::new();
        for (i, ch) in file.channels.iter().enumerate() {
            if !is_slug(&ch.id) {
                return Err(invalid(
                    format!("channels[{i}].id"),
                    format!("`{}` must be a lower-case slug [a-z0-9-]", ch.id),
                ));
            }
            if !channel_ids.insert(ch.id.clone()) {
                return Err(invalid(
                    format!("channels[{i}].id"),
                    format!("duplicate channel `{}`", ch.id),
                ));
            }
            for (j, src) in ch.utm_sources.iter().enumerate() {
                let key = src.trim().to_lowercase();
                if key.is_empty() {
                    return Err(invalid(format!("channels[{i}].utm_sources[{j}]"), "empty"));
                }
                if utm_index.insert(key, i).is_some() {
                    return Err(invalid(
                        format!("channels[{i}].utm_sources[{j}]"),
                        format!("utm_source `{src}` is claimed by two channels"),
                    ));
                }
            }
            for (j, host) in ch.referrer_hosts.iter().enumerate() {
                let h = normalise_host(host);
                if h.is_empty() || h.contains('/') || h.contains(':') {
                    return Err(invalid(
                        format!("channels[{i}].referrer_hosts[{j}]"),
                        format!("`{host}` is not a bare host name"),
                    ));
                }
                if let Some(other) = referrer_owner.insert(h, ch.id.clone()) {
                    return Err(invalid(
                        format!("channels[{i}].referrer_hosts[{j}]"),
                        format!("host `{host}` is already claimed by channel `{other}`"),
                    ));
                }
            }
        }
        let rules = file.channel_rules;
        for (field, id) in [
            ("channel_rules.direct", &rules.direct),
            ("channel_rules.other_referrer", &rules.other_referrer),
            ("channel_rules.unknown", &rules.unknown),
        ] {
            if !channel_ids.contains(id) {
                return Err(invalid(field, format!("unknown channel `{id}`")));
            }
        }

        // Attribution.
        let a = file.attribution;
        if a.conversion_event.trim().is_empty() {
            return Err(invalid("attribution.conversion_event", "must not be empty"));
        }
        if a.lookback_days == 0 || a.lookback_days > 366 {
            return Err(invalid("attribution.lookback_days", "must be 1..=366"));
        }
        if !(a.time_decay_half_life_days.is_finite() && a.time_decay_half_life_days > 0.0) {
            return Err(invalid(
                "attribution.time_decay_half_life_days",
                "must be a positive number of days",
            ));
        }
        if a.touch_gap_minutes == 0 {
            return Err(invalid(
                "attribution.touch_gap_minutes",
                "must be at least 1",
            ));
        }
        let w = a.position_weights;
        for (name, v) in [("first", w.first), ("middle", w.middle), ("last", w.last)] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(invalid(
                    format!("attribution.position_weights.{name}"),
                    "must be between 0 and 1",
                ));
            }
        }
        if ((w.first + w.middle + w.last) - 1.0).abs() > 1e-9 {
            return Err(invalid(
                "attribution.position_weights",
                format!(
                    "first + middle + last must be 1 (got {})",
                    w.first + w.middle + w.last
                ),
            ));
        }
        let attribution = Attribution {
            conversion_event: a.conversion_event,
            lookback: chrono::Duration::days(i64::from(a.lookback_days)),
            half_life: chrono::Duration::milliseconds(
                (a.time_decay_half_life_days * 86_400_000.0).round() as i64,
            ),
            touch_gap: chrono::Duration::minutes(i64::from(a.touch_gap_minutes)),
            position_weights: w,
        };

        // Phases.
        let mut phases: Vec<Phase> = Vec::with_capacity(file.phases.len());
        let mut phase_ids = HashSet::new();
        for (i, p) in file.phases.iter().enumerate() {
            if !is_slug(&p.id) || p.id == HORS_PHASE {
                return Err(invalid(
                    format!("phases[{i}].id"),
                    format!(
                        "`{}` must be a lower-case slug other than `{HORS_PHASE}`",
                        p.id
                    ),
                ));
            }
            if !phase_ids.insert(p.id.clone()) {
                return Err(invalid(
                    format!("phases[{i}].id"),
                    format!("duplicate phase `{}`", p.id),
                ));
            }
            let start_date = parse_local_date(&format!("phases[{i}].start"), &p.start)?;
            let end_date = parse_local_date(&format!("phases[{i}].end"), &p.end)?;
            if end_date < start_date {
                return Err(invalid(
                    format!("phases[{i}].end"),
                    format!("{end_date} is before the start {start_date}"),
                ));
            }
            let next_day = end_date
                .succ_opt()
                .ok_or_else(|| invalid(format!("phases[{i}].end"), "date is out of range"))?;
            phases.push(Phase {
                id: p.id.clone(),
                label: p.label.clone(),
                start_date,
                end_date,
                starts_at: local_midnight(timezone, start_date),
                ends_at: local_midnight(timezone, next_day),
            });
        }
        phases.sort_by_key(|p| p.start_date);
        for pair in phases.windows(2) {
            if pair[1].start_date <= pair[0].end_date {
                let i = file
                    .phases
                    .iter()
                    .position(|p| p.id == pair[1].id)
                    .unwrap_or_default();
                return Err(invalid(
                    format!("phases[{i}].start"),
                    format!(
                        "phase `{}` overlaps phase `{}` ({} ≤ {})",
                        pair[1].id, pair[0].id, pair[1].start_date, pair[0].end_date
                    ),
                ));
            }
        }

        // Placements.
        let mut placements = Vec::with_capacity(file.placements.len());
        let mut placement_index = HashMap::new();
        for (i, p) in file.placements.into_iter().enumerate() {
            if !is_placement_code(&p.code) {
                return Err(invalid(
                    format!("placements[{i}].code"),
                    format!("`{}` must match [A-Za-z0-9][A-Za-z0-9_-]* (≤ 64)", p.code),
                ));
            }
            if placement_index
                .insert(p.code.to_ascii_lowercase(), i)
                .is_some()
            {
                return Err(invalid(
                    format!("placements[{i}].code"),
                    format!(
                        "duplicate placement code `{}` (codes are case-insensitive)",
                        p.code
                    ),
                ));
            }
            if !channel_ids.contains(&p.channel) {
                return Err(invalid(
                    format!("placements[{i}].channel"),
                    format!("unknown channel `{}`", p.channel),
                ));
            }
            if p.label.trim().is_empty() {
                return Err(invalid(
                    format!("placements[{i}].label"),
                    "must not be empty",
                ));
            }
            let landing_url =
                parse_http_url(&format!("placements[{i}].landing_url"), &p.landing_url)?;
            if p.audience_estimate == Some(0) {
                return Err(invalid(
                    format!("placements[{i}].audience_estimate"),
                    "must be positive when given",
                ));
            }
            if let Some(cost) = p.media_cost_eur {
                if !(cost.is_finite() && cost >= 0.0) {
                    return Err(invalid(
                        format!("placements[{i}].media_cost_eur"),
                        "must be a non-negative number of euros",
                    ));
                }
            }
            placements.push(Placement {
                code: p.code,
                channel: p.channel,
                label: p.label,
                location: p.location,
                landing_url,
                audience_estimate: p.audience_estimate,
                media_cost_eur: p.media_cost_eur,
            });
        }

        let mut landing_urls: Vec<&Url> = placements.iter().map(|p| &p.landing_url).collect();
        landing_urls.push(&default_landing_url);
        let sources: Vec<&str> = file
            .channels
            .iter()
            .flat_map(|ch| ch.utm_sources.iter().map(String::as_str))
            .collect();
        let declared = crate::declared::Declared::build(
            file.declared,
            &landing_urls,
            &c.landing_origins,
            &sources,
        )
        .map_err(|(field, reason)| invalid(field, reason))?;
        Ok(Self {
            id: c.id,
            name: c.name,
            timezone,
            default_landing_url,
            landing_origins: c.landing_origins,
            channel_rules: ChannelRules {
                own_hosts: rules.own_hosts.iter().map(|h| normalise_host(h)).collect(),
                ..rules
            },
            attribution,
            phases,
            channels: file.channels,
            placements,
            declared,
            placement_index,
            utm_index,
        })
    }

    /// The phase whose local-date range contains `ts`, else [`HORS_PHASE`].
    pub fn phase_at(&self, ts: DateTime<Utc>) -> &str {
        self.phases
            .iter()
            .find(|p| p.starts_at <= ts && ts < p.ends_at)
            .map_or(HORS_PHASE, |p| p.id.as_str())
    }

    /// The placement with this code (case-insensitive), if configured.
    pub fn placement(&self, code: &str) -> Option<&Placement> {
        self.placement_index
            .get(&code.to_ascii_lowercase())
            .map(|&i| &self.placements[i])
    }

    pub fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    /// The channel of an event, from the strongest signal it carries:
    /// placement code, then `utm_source`, then referrer host. An unknown
    /// code or source gives `channel_rules.unknown`; an outside referrer no
    /// channel claims gives `channel_rules.other_referrer`; nothing (or a
    /// referrer from the campaign's own hosts) gives `channel_rules.direct`.
    pub fn resolve_channel(
        &self,
        placement: Option<&str>,
        utm_source: Option<&str>,
        referrer_host: Option<&str>,
    ) -> &str {
        if let Some(code) = placement.filter(|c| !c.is_empty()) {
            return match self.placement(code) {
                Some(p) => &p.channel,
                None => &self.channel_rules.unknown,
            };
        }
        if let Some(src) = utm_source.map(str::trim).filter(|s| !s.is_empty()) {
            return match self.utm_index.get(&src.to_lowercase()) {
                Some(&i) => &self.channels[i].id,
                None => &self.channel_rules.unknown,
            };
        }
        if let Some(host) = referrer_host.map(normalise_host).filter(|h| !h.is_empty()) {
            if self.is_own_host(&host) {
                return &self.channel_rules.direct;
            }
            return self
                .channel_for_host(&host)
                .unwrap_or(&self.channel_rules.other_referrer);
        }
        &self.channel_rules.direct
    }

    fn is_own_host(&self, host: &str) -> bool {
        self.channel_rules
            .own_hosts
            .iter()
            .any(|own| host_matches(host, own))
    }

    fn channel_for_host(&self, host: &str) -> Option<&str> {
        // The longest matching configured host wins (`m.facebook.com` over `facebook.com`).
        self.channels
            .iter()
            .flat_map(|c| c.referrer_hosts.iter().map(move |h| (c, normalise_host(h))))
            .filter(|(_, h)| host_matches(host, h))
            .max_by_key(|(_, h)| h.len())
            .map(|(c, _)| c.id.as_str())
    }

    /// Placements grouped by channel, for reports.
    pub fn placements_by_channel(&self) -> BTreeMap<&str, Vec<&Placement>> {
        let mut out: BTreeMap<&str, Vec<&Placement>> = BTreeMap::new();
        for p in &self.placements {
            out.entry(p.channel.as_str()).or_default().push(p);
        }
        out
    }
}

/// `host` is `pattern` or a subdomain of it.
fn host_matches(host: &str, pattern: &str) -> bool {
    host == pattern
        || (host.len() > pattern.len()
            && host.ends_with(pattern)
            && host.as_bytes()[host.len() - pattern.len() - 1] == b'.')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SHIPPED: &str = include_str!("../../deploy/campaign.toml");

    fn shipped() -> Campaign {
        Campaign::from_toml(SHIPPED).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// The shipped campaign with one edit, expecting the named field to be refused.
    fn refused(from: &str, to: &str) -> String {
        assert!(SHIPPED.contains(from), "fixture edit `{from}` not found");
        let text = SHIPPED.replacen(from, to, 1);
        match Campaign::from_toml(&text) {
            Ok(_) => panic!("edit `{from}` → `{to}` was accepted"),
            Err(CampaignError::Invalid { field, .. }) => field,
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn shipped_campaign_is_valid_and_complete() {
        let c = shipped();
        assert_eq!(c.timezone, chrono_tz::Europe::Paris);
        let ids: Vec<_> = c.phases.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["p1-lancement", "p2-saint-valentin", "p3-8-mars"]);
        for ch in [
            "metro", "gares", "abribus", "presse", "display", "tinder", "site", "referral",
            "social", "inconnu",
        ] {
            assert!(c.channel(ch).is_some(), "channel {ch} missing");
        }
        let by_channel = c.placements_by_channel();
        for ch in ["metro", "gares", "abribus", "presse", "display", "tinder"] {
            assert!(
                by_channel.get(ch).map_or(0, Vec::len) >= 2,
                "channel {ch} needs at least two placements"
            );
        }
        assert!(!c.channel("site").unwrap().touch);
        assert!(!c.channel("inconnu").unwrap().touch);
        assert!(c.channel("metro").unwrap().touch);
    }

    #[test]
    fn phase_boundaries_are_paris_local_midnight() {
        let c = shipped();
        // 17 Jan 2025 00:00 Paris = 16 Jan 23:00 UTC (winter time, UTC+1).
        assert_eq!(c.phase_at(utc("2025-01-16T22:59:59Z")), HORS_PHASE);
        assert_eq!(c.phase_at(utc("2025-01-16T23:00:00Z")), "p1-lancement");
        // Last second of 7 Feb in Paris is still phase 1; midnight starts phase 2.
        assert_eq!(c.phase_at(utc("2025-02-07T22:59:59Z")), "p1-lancement");
        assert_eq!(c.phase_at(utc("2025-02-07T23:00:00Z")), "p2-saint-valentin");
        // A UTC-date reading would put 7 Feb 23:30 UTC in phase 1; Paris says 8 Feb.
        assert_eq!(c.phase_at(utc("2025-02-07T23:30:00Z")), "p2-saint-valentin");
        assert_eq!(c.phase_at(utc("2025-02-28T22:59:59Z")), "p2-saint-valentin");
        assert_eq!(c.phase_at(utc("2025-02-28T23:00:00Z")), "p3-8-mars");
        assert_eq!(c.phase_at(utc("2025-03-16T22:59:59Z")), "p3-8-mars");
        assert_eq!(c.phase_at(utc("2025-03-16T23:00:00Z")), HORS_PHASE);
        assert_eq!(c.phase_at(utc("2026-06-01T12:00:00Z")), HORS_PHASE);
    }

    #[test]
    fn phase_boundary_across_summer_time() {
        // A phase starting on a day in summer time starts at 22:00 UTC the day before.
        let text = SHIPPED.replacen("end = \"2025-03-16\"", "end = \"2025-06-30\"", 1);
        let c = Campaign::from_toml(&text).unwrap();
        assert_eq!(c.phase_at(utc("2025-06-30T21:59:59Z")), "p3-8-mars");
        assert_eq!(c.phase_at(utc("2025-06-30T22:00:00Z")), HORS_PHASE);
    }

    #[test]
    fn placements_resolve_case_insensitively() {
        let c = shipped();
        let first = &c.placements[0];
        let found = c.placement(&first.code.to_ascii_uppercase()).unwrap();
        assert_eq!(found.code, first.code);
        assert!(c.placement("NO-SUCH-CODE").is_none());
    }

    #[test]
    fn channel_resolution_order_and_fallbacks() {
        let c = shipped();
        let metro_code = &c.placements_by_channel()["metro"][0].code;
        // Placement beats UTM and referrer.
        assert_eq!(
            c.resolve_channel(Some(metro_code), Some("tinder"), Some("www.facebook.com")),
            "metro"
        );
        assert_eq!(
            c.resolve_channel(Some("ZZZ-UNKNOWN"), None, None),
            "inconnu"
        );
        // UTM source, case-insensitive.
        assert_eq!(c.resolve_channel(None, Some("Tinder"), None), "tinder");
        assert_eq!(
            c.resolve_channel(None, Some("newsletter-x"), None),
            "inconnu"
        );
        // Referrer hosts: subdomains match, look-alikes do not.
        assert_eq!(
            c.resolve_channel(None, None, Some("m.facebook.com")),
            "social"
        );
        assert_eq!(
            c.resolve_channel(None, None, Some("notfacebook.com")),
            "referral"
        );
        assert_eq!(
            c.resolve_channel(None, None, Some("www.leparisien.fr")),
            "presse"
        );
        // Own site and nothing at all are direct.
        assert_eq!(
            c.resolve_channel(None, None, Some("vivre-ensemble.example.org")),
            "site"
        );
        assert_eq!(c.resolve_channel(None, Some(""), None), "site");
        assert_eq!(c.resolve_channel(None, None, None), "site");
    }

    #[test]
    fn overlapping_phases_are_refused() {
        let field = refused("start = \"2025-02-08\"", "start = \"2025-02-07\"");
        assert_eq!(field, "phases[1].start");
    }

    #[test]
    fn end_before_start_is_refused() {
        let field = refused("end = \"2025-02-07\"", "end = \"2025-01-10\"");
        assert_eq!(field, "phases[0].end");
    }

    #[test]
    fn malformed_date_is_refused() {
        assert_eq!(
            refused("start = \"2025-01-17\"", "start = \"17/01/2025\""),
            "phases[0].start"
        );
    }

    #[test]
    fn placement_with_unknown_channel_is_refused() {
        let field = refused("channel = \"metro\"", "channel = \"tramway\"");
        assert_eq!(field, "placements[0].channel");
    }

    #[test]
    fn duplicate_placement_code_is_refused() {
        let c = shipped();
        let first = c.placements[0].code.clone();
        let second = c.placements[1].code.clone();
        let field = refused(
            &format!("code = \"{second}\""),
            &format!("code = \"{}\"", first.to_ascii_lowercase()),
        );
        assert_eq!(field, "placements[1].code");
    }

    #[test]
    fn bad_landing_url_is_refused() {
        let c = shipped();
        let url = c.placements[0].landing_url.to_string();
        let raw = SHIPPED
            .lines()
            .find(|l| l.starts_with("landing_url") && l.contains("utm_"))
            .unwrap();
        assert!(raw.contains(url.split('?').next().unwrap()));
        let field = refused(raw, "landing_url = \"not a url\"");
        assert_eq!(field, "placements[0].landing_url");
        let field = refused(raw, "landing_url = \"ftp://example.org/x\"");
        assert_eq!(field, "placements[0].landing_url");
    }

    #[test]
    fn other_bad_settings_name_their_field() {
        assert_eq!(
            refused(
                "timezone = \"Europe/Paris\"",
                "timezone = \"Europe/Lutece\""
            ),
            "campaign.timezone"
        );
        assert_eq!(
            refused("first = 0.4", "first = 0.5"),
            "attribution.position_weights"
        );
        assert_eq!(
            refused("lookback_days = 30", "lookback_days = 0"),
            "attribution.lookback_days"
        );
        assert_eq!(
            refused("unknown = \"inconnu\"", "unknown = \"nowhere\""),
            "channel_rules.unknown"
        );
        assert_eq!(
            refused("id = \"metro\"", "id = \"Metro!\""),
            "channels[0].id"
        );
    }

    #[test]
    fn unknown_keys_are_refused_as_parse_errors() {
        let text = SHIPPED.replacen("[attribution]", "[attribution]\nlookbak_days = 3", 1);
        let err = Campaign::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("lookbak_days"), "{err}");
    }
}
