//!
//! Split by job: [`catalogue`] (the stored columns, declared once),
//! [`days`] (local days and summed ranges), [`rows`] (the
//! stored rows and answers), [`runs`] (a visitor's contribution),
//! [`conversions`] (its conversions, paths and credit), [`questions`]
//! (answers, changes, the correction), [`ranged`] (a change summed by
//! range, as the summed tables store it).

mod catalogue;
mod conversions;
mod days;
mod questions;
mod ranged;
mod rows;
mod runs;
#[cfg(test)]
mod tests;

pub use catalogue::{column_named, column_names, columns_of, Column, Role, COLUMNS};
pub(crate) use conversions::*;
pub use days::*;
pub use questions::*;
pub use ranged::*;
pub use rows::*;
pub use runs::*;

use uuid::Uuid;

/// The value of `channel` (and of the scope filters' `*`) in figures over
/// every channel.
pub const ALL: &str = "*";

/// A short text of an event (its type, channel, device, …): held inline
/// up to 23 bytes, so that an event is cloned without allocating (the
/// processor clones each visitor's events as it accounts them; as
/// `String`s, they were its largest memory and a tenth of its time).
pub type Text = smol_str::SmolStr;

/// One accounted event, as far as the figures care.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: Uuid,
    /// Event time, milliseconds since the epoch.
    pub ms: u64,
    pub event_type: Text,
    pub action: Text,
    pub channel: Text,
    pub placement: Text,
    pub phase: Text,
    /// Device class (`desktop`, `mobile`, …); empty if unknown to the ledger.
    pub device: Text,
    /// OS family (`iOS`, `Android`, `Windows 10`, … as the processor's
    /// User-Agent parser names it); empty if unknown.
    pub os: Text,
    pub bot: bool,
    /// The sign-up's contact hash.
    pub contact: Text,
}

/// What a figure counts. Its [`Figure::name`] is what ClickHouse stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Figure {
    /// Events per local `day`: `phase` × `channel` × `placement` ×
    /// `event_type` × `action`.
    Events,
    /// Events per UTC `hour`: `phase` × `channel`.
    EventsHourly,
    /// Distinct visitors per `channel` (or `*`).
    Visitors,
    /// Distinct visitors per UTC `hour` × `channel` (or `*`).
    VisitorsHourly,
    /// Distinct visitors per local `day` × `channel` (or `*`).
    VisitorsDaily,
    /// Distinct visitors with a scan, per `placement` × `channel` (or `*`).
    Scanners,
    /// Touches (gap rule) per `channel` × `phase` of the touch's first event.
    Touches,
    /// Visitors per touch `channel` and funnel `step`: `touched`, `visited`
    /// (a page view at or after the first touch), `signed` (a sign-up too).
    Funnel,
    /// Visitors who signed after a touch of `channel`, by `seconds` from
    /// the first touch to the sign-up.
    FunnelSeconds,
    /// The same by whole hours (`seconds` rounded down to the hour).
    FunnelHours,
    /// Visitors per touch `channel` by their number of events of it, the
    /// media's frequency (`frequency` 1…5, 5 meaning five or more).
    Frequency,
    /// Visitors reached by both `channel` and `other_channel`.
    Overlap,
    /// Distinct contacts who signed up, per `channel` (or `*`) of the sign-up.
    Signups,
    /// Distinct contacts who signed up, per `placement` × `channel` (or `*`).
    SignupsByPlacement,
    /// Contacts by the UTC `hour` of their first sign-up, per `channel` (or `*`).
    SignupsHourly,
    /// Contacts by the local `day` of their first sign-up, per `channel` (or `*`).
    SignupsDaily,
    /// Conversions (first sign-up of a contact) by `phase`.
    Conversions,
    /// Credit under `model` to `channel` for touches in `phase`, of
    /// conversions in `conversion_phase`.
    Credits,
    /// Conversions by their path (`channel`: the channels of the touches
    /// credited, `crate::paths`); `credit` holds the exact seconds from the
    /// path's first touch to the sign-up (0 for `direct`).
    PathsConverted,
    /// The same conversions (but `direct`) by path (`channel`) and
    /// `seconds` from the first touch to the sign-up rounded down to the
    /// minute: read only for the medians of the paths shown.
    PathsDelays,
    /// Visitors without a sign-up in the question's days, by the path
    /// (`channel`) of their touches in those days.
    PathsNotConverted,
    /// Scans (QR scans and card clicks) per local `day`, local `hour` of
    /// the day (0–23, the wall clock: the scan heatmap by weekday × hour)
    /// and `channel`.
    ScansByLocalHour,
    /// Visitors per `channel` (or `*`) of their events × `device_class` ×
    /// `os_family` of those events, `step` `reached`; and of them, those
    /// with a sign-up in the question's days, `step` `signed`.
    Devices,
}

/// A figure name that is not one of [`Figure::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown figure `{0}`")]
pub struct UnknownFigure(pub String);

impl Figure {
    pub const ALL: [Figure; 23] = [
        Figure::Events,
        Figure::EventsHourly,
        Figure::Visitors,
        Figure::VisitorsHourly,
        Figure::VisitorsDaily,
        Figure::Scanners,
        Figure::Touches,
        Figure::Funnel,
        Figure::FunnelSeconds,
        Figure::FunnelHours,
        Figure::Frequency,
        Figure::Overlap,
        Figure::Signups,
        Figure::SignupsByPlacement,
        Figure::SignupsHourly,
        Figure::SignupsDaily,
        Figure::Conversions,
        Figure::Credits,
        Figure::PathsConverted,
        Figure::PathsDelays,
        Figure::PathsNotConverted,
        Figure::ScansByLocalHour,
        Figure::Devices,
    ];

    /// The name stored in ClickHouse's `figures.figure`.
    pub fn name(self) -> &'static str {
        match self {
            Figure::Events => "events",
            Figure::EventsHourly => "events_hourly",
            Figure::Visitors => "visitors",
            Figure::VisitorsHourly => "visitors_hourly",
            Figure::VisitorsDaily => "visitors_daily",
            Figure::Scanners => "scanners",
            Figure::Touches => "touches",
            Figure::Funnel => "funnel",
            Figure::FunnelSeconds => "funnel_seconds",
            Figure::FunnelHours => "funnel_hours",
            Figure::Frequency => "frequency",
            Figure::Overlap => "overlap",
            Figure::Signups => "signups",
            Figure::SignupsByPlacement => "signups_by_placement",
            Figure::SignupsHourly => "signups_hourly",
            Figure::SignupsDaily => "signups_daily",
            Figure::Conversions => "conversions",
            Figure::Credits => "credits",
            Figure::PathsConverted => "paths_converted",
            Figure::PathsDelays => "paths_delays",
            Figure::PathsNotConverted => "paths_not_converted",
            Figure::ScansByLocalHour => "scans_by_local_hour",
            Figure::Devices => "devices",
        }
    }

    pub fn parse(name: &str) -> Result<Figure, UnknownFigure> {
        Figure::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| UnknownFigure(name.to_owned()))
    }

    /// The dimension columns (of [`Dims`]) its rows can hold: every other
    /// is the empty string or 0 in all of its rows, so a reader may leave
    /// those out of what it groups by.
    pub fn dimensions(self) -> &'static [&'static str] {
        match self {
            Figure::Events => &[
                "day",
                "phase",
                "channel",
                "placement",
                "event_type",
                "action",
            ],
            Figure::EventsHourly => &["hour", "phase", "channel"],
            Figure::Visitors | Figure::Signups => &["channel"],
            Figure::VisitorsHourly | Figure::SignupsHourly => &["hour", "channel"],
            Figure::VisitorsDaily | Figure::SignupsDaily => &["day", "channel"],
            Figure::Scanners | Figure::SignupsByPlacement => &["placement", "channel"],
            Figure::Touches => &["channel", "phase"],
            Figure::Funnel => &["channel", "step"],
            Figure::FunnelSeconds | Figure::FunnelHours => &["channel", "delay_seconds"],
            Figure::PathsDelays => &["path", "delay_seconds"],
            Figure::Frequency => &["channel", "frequency"],
            Figure::Overlap => &["channel", "other_channel"],
            Figure::Conversions => &["phase"],
            Figure::Credits => &["model", "channel", "phase", "conversion_phase"],
            Figure::PathsConverted | Figure::PathsNotConverted => &["path"],
            Figure::ScansByLocalHour => &["day", "local_hour", "channel"],
            Figure::Devices => &["channel", "device_class", "os_family", "step"],
        }
    }

    /// Sums over days: a range's value is the sum of its days' values, so
    /// the rows sit on single days. The others depend on the visitor's
    /// whole run of days inside the range.
    pub fn per_day(self) -> bool {
        matches!(
            self,
            Figure::Events
                | Figure::EventsHourly
                | Figure::VisitorsHourly
                | Figure::VisitorsDaily
                | Figure::Conversions
                | Figure::Credits
                | Figure::PathsConverted
                | Figure::PathsDelays
                | Figure::ScansByLocalHour
        )
    }
}

/// The funnel's steps.
pub const TOUCHED: &str = "touched";

pub const VISITED: &str = "visited";

pub const SIGNED: &str = "signed";

/// The device breakdown's first step.
pub const REACHED: &str = "reached";

/// A count and a credit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Value {
    pub n: i64,
    pub credit: f64,
}

impl Value {
    fn add(&mut self, other: Value, sign: i64) {
        self.n += sign * other.n;
        self.credit += sign as f64 * other.credit;
    }

    fn is_zero(&self) -> bool {
        self.n == 0 && self.credit == 0.0
    }
}
