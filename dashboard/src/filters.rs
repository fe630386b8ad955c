//! Query filters of every API endpoint, parsed once: checked against the
//! campaign (a channel it does not have, from > to, malformed dates, absurd ranges →
//! 400 naming the parameter). `crate::answers` turns them into a question.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use ensemble_core::Campaign;
use ensemble_model::campaign::HORS_PHASE;
use ensemble_model::figures;

/// Longest range a query may cover.
pub const MAX_RANGE_DAYS: i64 = 400;

/// Device classes the processor writes.
pub const DEVICES: [&str; 5] = ["desktop", "mobile", "tablet", "bot", "unknown"];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid parameter `{parameter}`: {message}")]
pub struct FilterError {
    pub parameter: &'static str,
    pub message: String,
}

pub fn bad(parameter: &'static str, message: impl Into<String>) -> FilterError {
    FilterError {
        parameter,
        message: message.into(),
    }
}

/// Answer format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// How a CSV answer is written: Excel reads the separator of its locale
/// (`;` in France, where `,` is the decimal mark), and a UTF-8 file without
/// a byte-order mark as Windows-1252.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvDialect {
    pub sep: char,
    pub decimal_comma: bool,
}

impl Default for CsvDialect {
    fn default() -> Self {
        Self {
            sep: ',',
            decimal_comma: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    /// Inclusive start instant.
    pub from: DateTime<Utc>,
    /// Exclusive end instant.
    pub to: DateTime<Utc>,
    pub phase: Option<String>,
    pub channel: Option<String>,
    pub placement: Option<String>,
    pub device: Option<String>,
    pub include_bots: bool,
    pub format: Format,
    /// `source=events`: answer from the events even where the pre-summed
    /// figures could (slow; to audit the figures).
    pub from_events: bool,
    /// `lang=fr` (`;` and decimal commas) or `sep=;|,|tab` for CSV answers.
    pub csv: CsvDialect,
}

/// Local midnight of `d` in the campaign's zone.
fn local_start(campaign: &Campaign, d: NaiveDate) -> DateTime<Utc> {
    campaign
        .timezone
        .from_local_datetime(&d.and_time(chrono::NaiveTime::MIN))
        .earliest()
        .map_or_else(
            || Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN)),
            |t| t.with_timezone(&Utc),
        )
}

/// `YYYY-MM-DD` (a local day of the campaign) or an RFC 3339 instant.
/// `end` = the day is included (its end is the next local midnight).
fn parse_time(
    campaign: &Campaign,
    name: &'static str,
    raw: &str,
    end: bool,
) -> Result<DateTime<Utc>, FilterError> {
    // What the store's DateTime columns can hold; outside it a date is a
    // typo, and chrono's arithmetic on years like -262143 would overflow.
    let out_of_range = || {
        bad(
            name,
            format!("`{raw}` is out of range: dates go from 1970-01-01 to 2105-12-31"),
        )
    };
    let t = if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        if !(1970..=2105).contains(&d.year()) {
            return Err(out_of_range());
        }
        let d = if end {
            d.succ_opt().ok_or_else(out_of_range)?
        } else {
            d
        };
        local_start(campaign, d)
    } else {
        DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                bad(
                    name,
                    format!("`{raw}` is not a date YYYY-MM-DD or an RFC 3339 time"),
                )
            })?
    };
    if !(0..=i64::from(u32::MAX)).contains(&t.timestamp()) {
        return Err(out_of_range());
    }
    Ok(t)
}

/// What `compare=` asks for: the period the answer is compared with.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PreviousPeriod {
    /// `previous` (the same length just before) or `previous_phase`.
    pub compare: String,
    pub from: DateTime<Utc>,
    /// Exclusive.
    pub to: DateTime<Utc>,
    pub phase: Option<String>,
}

/// The period just before `[from, to)`, of the same length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// The question is in whole local days: as many local days, the last
    /// one the day before `from` (across a daylight-saving change too,
    /// where a day is 23 or 25 hours).
    Days { first: NaiveDate, last: NaiveDate },
    /// Otherwise: the same duration, ending at `from`.
    Instants {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// "The period before", one rule for `compare=previous` and the overview's
/// `previous`: see [`Before`].
pub fn period_before(campaign: &Campaign, from: DateTime<Utc>, to: DateTime<Utc>) -> Before {
    let tz = campaign.timezone;
    let (first, end) = (
        from.with_timezone(&tz).date_naive(),
        to.with_timezone(&tz).date_naive(),
    );
    if local_start(campaign, first) == from && local_start(campaign, end) == to {
        let days = (end - first).num_days();
        Before::Days {
            first: first - chrono::Duration::days(days),
            last: first - chrono::Duration::days(1),
        }
    } else {
        Before::Instants {
            from: from - (to - from),
            to: from,
        }
    }
}

impl Before {
    /// The period as instants: `[from, to)`.
    pub fn instants(self, campaign: &Campaign) -> (DateTime<Utc>, DateTime<Utc>) {
        match self {
            Before::Days { first, last } => (
                local_start(campaign, first),
                local_start(campaign, last + chrono::Duration::days(1)),
            ),
            Before::Instants { from, to } => (from, to),
        }
    }
}

/// The query of the period to compare with (`compare=previous`: the same
/// length just before — in whole local days when the question is in whole
/// days; `compare=previous_phase`: the phase before the question's
/// `phase`), without `compare`, and what it is. Parsed here like every
/// filter; refused with a reason a person can act on.
pub fn previous_period(
    campaign: &Campaign,
    q: &HashMap<String, String>,
) -> Result<(HashMap<String, String>, PreviousPeriod), FilterError> {
    let mut q = q.clone();
    let compare = q.remove("compare").unwrap_or_default();
    let f = Filters::parse_with(campaign, &q, &ENDPOINT_PARAMS)?;
    if f.format == Format::Csv {
        return Err(bad(
            "compare",
            "a comparison answers JSON only: download the two periods' CSV one by one",
        ));
    }
    match compare.as_str() {
        "previous" => {
            if f.phase.is_some() {
                return Err(bad(
                    "compare",
                    "with a phase, compare=previous_phase compares it with the phase before",
                ));
            }
            let before = period_before(campaign, f.from, f.to);
            let (from, to) = before.instants(campaign);
            let (first, last) = match before {
                Before::Days { first, last } => (
                    first.format("%Y-%m-%d").to_string(),
                    last.format("%Y-%m-%d").to_string(),
                ),
                Before::Instants { .. } => (from.to_rfc3339(), to.to_rfc3339()),
            };
            q.insert("from".into(), first);
            q.insert("to".into(), last);
            if from.timestamp() < 0 {
                return Err(bad("compare", "the period before starts before 1970"));
            }
            Ok((
                q,
                PreviousPeriod {
                    compare,
                    from,
                    to,
                    phase: None,
                },
            ))
        }
        "previous_phase" => {
            if q.contains_key("from") || q.contains_key("to") {
                return Err(bad(
                    "compare",
                    "compare=previous_phase compares whole phases: leave out from and to",
                ));
            }
            let Some(phase) = f.phase.as_deref().filter(|p| *p != HORS_PHASE) else {
                return Err(bad(
                    "compare",
                    "compare=previous_phase needs a phase of the campaign (phase=…)",
                ));
            };
            let mut phases: Vec<_> = campaign.phases.iter().collect();
            phases.sort_by_key(|p| p.starts_at);
            let i = phases.iter().position(|p| p.id == phase).unwrap_or(0);
            let Some(before) = i.checked_sub(1).map(|j| phases[j]) else {
                return Err(bad(
                    "compare",
                    format!("`{phase}` is the campaign's first phase: there is none before it"),
                ));
            };
            q.insert("phase".into(), before.id.clone());
            Ok((
                q,
                PreviousPeriod {
                    compare,
                    from: before.starts_at,
                    to: before.ends_at,
                    phase: Some(before.id.clone()),
                },
            ))
        }
        other => Err(bad(
            "compare",
            format!("compare is `previous` or `previous_phase`, not `{other}`"),
        )),
    }
}

/// The parameters every aggregate endpoint takes (`compare` is read before).
const COMMON: [&str; 11] = [
    "from",
    "to",
    "phase",
    "channel",
    "placement",
    "device",
    "bots",
    "format",
    "source",
    "sep",
    "lang",
];

/// The parameters one endpoint adds to [`COMMON`]: `limit` (paths),
/// `model` (attribution), `metric` (timeseries, uplift), `bucket`
/// (timeseries), `visitor_id` (journey), `baseline` and `baseline_days`
/// (uplift). Only what looks at any request (admission, the period to
/// compare with) parses with all of them; each endpoint names its own.
pub const ENDPOINT_PARAMS: [&str; 7] = [
    "limit",
    "model",
    "metric",
    "bucket",
    "visitor_id",
    "baseline",
    "baseline_days",
];

impl Filters {
    /// The stored scope the filters ask for: `(bots, device_filter,
    /// placement_filter)` as the figures hold them, `*` for every device
    /// or placement (the catalogue spells "all" one way).
    pub fn scope(&self) -> (u8, &str, &str) {
        (
            u8::from(self.include_bots),
            self.device.as_deref().unwrap_or(figures::ALL),
            self.placement.as_deref().unwrap_or(figures::ALL),
        )
    }

    /// Parses the query string of an endpoint that takes the common
    /// parameters only. Without `from`/`to` the range is the campaign's
    /// first phase start to its last phase end.
    pub fn parse(campaign: &Campaign, q: &HashMap<String, String>) -> Result<Self, FilterError> {
        Self::parse_with(campaign, q, &[])
    }

    /// Parses the query string of an endpoint that also reads `extra`
    /// (one of [`ENDPOINT_PARAMS`] each); any other parameter is refused,
    /// so that nothing asked is silently ignored.
    pub fn parse_with(
        campaign: &Campaign,
        q: &HashMap<String, String>,
        extra: &[&str],
    ) -> Result<Self, FilterError> {
        if q.contains_key("token") {
            return Err(bad(
                "token",
                "tokens go in the `Authorization: Bearer <token>` header, never in the URL \
                 (URLs end up in browser histories, logs and Referer headers)",
            ));
        }
        let known = |k: &str| COMMON.contains(&k) || extra.contains(&k);
        // The first in name order, so that the answer does not depend on hashing.
        if let Some(k) = q.keys().filter(|k| !known(k)).min() {
            let name: &'static str = "query";
            // `campaign` too: the dispatcher takes it out before the
            // endpoint reads the rest (`crate::campaigns`).
            let listed: Vec<&str> = std::iter::once(&"campaign")
                .chain(COMMON.iter())
                .chain(extra)
                .copied()
                .collect();
            return Err(bad(
                name,
                format!(
                    "unknown parameter `{k}` for this endpoint; it takes: {}",
                    listed.join(", ")
                ),
            ));
        }
        let default_from = campaign
            .phases
            .first()
            .map_or_else(Utc::now, |p| p.starts_at);
        let default_to = campaign.phases.last().map_or_else(Utc::now, |p| p.ends_at);
        let from = match q.get("from") {
            Some(v) => parse_time(campaign, "from", v, false)?,
            None => default_from,
        };
        let to = match q.get("to") {
            Some(v) => parse_time(campaign, "to", v, true)?,
            None => default_to,
        };
        if from >= to {
            return Err(bad("from", "`from` must be before `to`"));
        }
        if (to - from).num_days() > MAX_RANGE_DAYS {
            return Err(bad(
                "to",
                format!("a range covers at most {MAX_RANGE_DAYS} days"),
            ));
        }
        let phase = q.get("phase").cloned();
        if let Some(p) = &phase {
            if p != HORS_PHASE && !campaign.phases.iter().any(|x| &x.id == p) {
                // The value sent is not echoed (it may be anything a
                // person typed); the ones that work are named instead.
                let ids: Vec<&str> = campaign.phases.iter().map(|x| x.id.as_str()).collect();
                return Err(bad(
                    "phase",
                    format!(
                        "not a phase of this campaign: use one of {}, or {HORS_PHASE} for the days outside every phase",
                        ids.join(", ")
                    ),
                ));
            }
        }
        let channel = q.get("channel").cloned();
        if let Some(c) = &channel {
            if campaign.channel(c).is_none() {
                let ids: Vec<&str> = campaign.channels.iter().map(|x| x.id.as_str()).collect();
                return Err(bad(
                    "channel",
                    format!(
                        "not a channel of this campaign: use one of {}",
                        ids.join(", ")
                    ),
                ));
            }
        }
        let placement = match q.get("placement") {
            Some(p) => Some(
                campaign
                    .placement(p)
                    .map(|x| x.code.clone())
                    .ok_or_else(|| {
                        bad(
                            "placement",
                            "not a placement code of this campaign (GET /api/placements lists them)",
                        )
                    })?,
            ),
            None => None,
        };
        let device = q.get("device").cloned();
        if let Some(d) = &device {
            if !DEVICES.contains(&d.as_str()) {
                return Err(bad(
                    "device",
                    format!("device is one of {}", DEVICES.join(", ")),
                ));
            }
        }
        let include_bots = match q.get("bots").map(String::as_str) {
            None | Some("exclude") => false,
            Some("include") => true,
            Some(_) => return Err(bad("bots", "bots is `include` or `exclude`")),
        };
        let from_events = match q.get("source").map(String::as_str) {
            // `facts`: the old name of `figures`, still accepted.
            None | Some("figures" | "facts") => false,
            Some("events") => true,
            Some(_) => return Err(bad("source", "source is `figures` or `events`")),
        };
        let format = match q.get("format").map(String::as_str) {
            None | Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some(_) => return Err(bad("format", "format is `json` or `csv`")),
        };
        let french = match q.get("lang").map(String::as_str) {
            None | Some("en") => false,
            Some("fr") => true,
            Some(_) => return Err(bad("lang", "lang is `fr` or `en`")),
        };
        let csv = CsvDialect {
            sep: match q.get("sep").map(String::as_str) {
                None if french => ';',
                None | Some(",") => ',',
                Some(";") => ';',
                Some("tab") | Some("\t") => '\t',
                Some(_) => return Err(bad("sep", "sep is `,`, `;` or `tab`")),
            },
            decimal_comma: french,
        };
        Ok(Self {
            from,
            to,
            phase,
            channel,
            placement,
            device,
            include_bots,
            format,
            from_events,
            csv,
        })
    }

    /// A download's file name: the campaign, the endpoint and every filter
    /// that narrows it, e.g.
    /// `vivre-ensemble-2025_channels_phase-p2-saint-valentin_from-2025-02-08.csv`.
    pub fn file_name(&self, campaign: &Campaign, endpoint: &str) -> String {
        let mut parts = vec![campaign.id.clone(), endpoint.to_owned()];
        let range = (
            campaign.phases.first().map(|p| p.starts_at),
            campaign.phases.last().map(|p| p.ends_at),
        );
        let day = |t: DateTime<Utc>, end: bool| {
            let local = t.with_timezone(&campaign.timezone);
            let d = if end {
                (local - chrono::Duration::seconds(1)).date_naive()
            } else {
                local.date_naive()
            };
            d.to_string()
        };
        if range.0 != Some(self.from) {
            parts.push(format!("from-{}", day(self.from, false)));
        }
        if range.1 != Some(self.to) {
            parts.push(format!("to-{}", day(self.to, true)));
        }
        for (name, v) in [
            ("phase", &self.phase),
            ("channel", &self.channel),
            ("placement", &self.placement),
            ("device", &self.device),
        ] {
            if let Some(v) = v {
                parts.push(format!("{name}-{v}"));
            }
        }
        if self.include_bots {
            parts.push("with-bots".into());
        }
        let name: String = parts
            .join("_")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("{name}.csv")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn campaign() -> Campaign {
        Campaign::from_toml(include_str!("../../deploy/campaign.toml")).unwrap()
    }

    /// The week after the spring clock change in Paris (30 March 2025, a
    /// 23-hour day): the period before is the 7 local days before it, not
    /// 167 hours back from its start (which began at 01:00 on 23 March).
    #[test]
    fn the_period_before_is_whole_local_days_across_a_clock_change() {
        let c = campaign();
        let day = |m: u32, d: u32| NaiveDate::from_ymd_opt(2025, m, d).unwrap();
        let (from, to) = (local_start(&c, day(3, 30)), local_start(&c, day(4, 6)));
        assert_eq!((to - from).num_hours(), 167);
        let before = period_before(&c, from, to);
        assert_eq!(
            before,
            Before::Days {
                first: day(3, 23),
                last: day(3, 29)
            }
        );
        assert_eq!(before.instants(&c), (local_start(&c, day(3, 23)), from));
        // Not whole days: the same duration just before.
        let odd = from + chrono::Duration::minutes(90);
        assert_eq!(
            period_before(&c, odd, to).instants(&c),
            (odd - (to - odd), odd)
        );
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Filters, FilterError> {
        let q = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Filters::parse(&campaign(), &q)
    }

    #[test]
    fn defaults_cover_the_campaign_in_paris_time() {
        let f = parse(&[]).unwrap();
        assert_eq!(f.from.to_rfc3339(), "2025-01-16T23:00:00+00:00");
        assert_eq!(f.to.to_rfc3339(), "2025-03-16T23:00:00+00:00");
        assert!(!f.include_bots);
        let f = parse(&[("from", "2025-02-01"), ("to", "2025-02-01")]).unwrap();
        assert_eq!((f.to - f.from).num_hours(), 24, "one local day");
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("from", "yesterday")], "from"),
            (&[("to", "2025-13-01")], "to"),
            (&[("from", "2025-03-01"), ("to", "2025-02-01")], "from"),
            (&[("from", "2020-01-01"), ("to", "2025-02-01")], "to"),
            (&[("phase", "p9")], "phase"),
            (&[("channel", "tramway")], "channel"),
            (&[("channel", "metro' OR 1=1 --")], "channel"),
            (&[("placement", "NOPE")], "placement"),
            (&[("device", "fridge")], "device"),
            (&[("bots", "yes")], "bots"),
            (&[("format", "xml")], "format"),
            (&[("colour", "red")], "query"),
            (&[("from", "-262143-01-01")], "from"),
            (&[("to", "+262142-12-31")], "to"),
            (&[("from", "1969-12-31")], "from"),
            (&[("to", "2150-01-01")], "to"),
            (&[("from", "1900-01-01T00:00:00Z")], "from"),
            (&[("to", "9999-12-31T23:59:59Z")], "to"),
            (&[("token", "x")], "token"),
        ];
        for (pairs, param) in cases {
            assert_eq!(parse(pairs).unwrap_err().parameter, *param, "{pairs:?}");
        }
    }

    /// What a person typed into a phase, channel or placement never comes
    /// back in the error (it may be an address); the values that work do.
    #[test]
    fn an_unknown_value_is_not_echoed_but_the_known_ones_are_named() {
        let typed = "jane.doe@example.org";
        for (param, names) in [
            ("phase", "p1-lancement"),
            ("channel", "metro"),
            ("placement", "/api/placements"),
        ] {
            let e = parse(&[(param, typed)]).unwrap_err();
            assert_eq!(e.parameter, param);
            assert!(!e.message.contains(typed), "{}", e.message);
            assert!(e.message.contains(names), "{}", e.message);
        }
    }

    #[test]
    fn csv_dialect_and_file_name() {
        let f = parse(&[]).unwrap();
        assert_eq!(f.csv, CsvDialect::default());
        assert_eq!(
            f.file_name(&campaign(), "channels"),
            "vivre-ensemble-2025_channels.csv"
        );
        let f = parse(&[
            ("lang", "fr"),
            ("phase", "p2-saint-valentin"),
            ("from", "2025-02-08"),
        ])
        .unwrap();
        assert_eq!(
            f.csv,
            CsvDialect {
                sep: ';',
                decimal_comma: true
            }
        );
        assert_eq!(
            f.file_name(&campaign(), "placements"),
            "vivre-ensemble-2025_placements_from-2025-02-08_phase-p2-saint-valentin.csv"
        );
        let f = parse(&[
            ("lang", "fr"),
            ("sep", ","),
            ("to", "2025-02-28"),
            ("bots", "include"),
        ])
        .unwrap();
        assert_eq!(f.csv.sep, ',');
        assert_eq!(
            f.file_name(&campaign(), "overview"),
            "vivre-ensemble-2025_overview_to-2025-02-28_with-bots.csv"
        );
        assert_eq!(parse(&[("sep", "|")]).unwrap_err().parameter, "sep");
        assert_eq!(parse(&[("lang", "de")]).unwrap_err().parameter, "lang");
    }
}
