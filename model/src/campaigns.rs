//! Several campaigns side by side (the barometer is renewed every year):
//! which campaign an event belongs to, written once.
//!
//! Every event belongs to exactly one campaign, so that nothing of one
//! campaign's figures leaks into another's and nothing is lost between
//! them:
//!
//! 1. the campaign whose calendar (first phase's start to last phase's end)
//!    contains the event's time;
//! 2. outside every calendar, the campaign whose placement code the event
//!    carries, when exactly one campaign has that code (an old poster
//!    scanned after its campaign ended counts for its campaign, as
//!    `hors-phase`);
//! 3. otherwise the last campaign that started before the event (the
//!    weeks after a campaign are its `hors-phase`); before every campaign,
//!    the first one.
//!
//! Calendars may not overlap and ids must differ: both are refused when
//! the campaigns are loaded.

use chrono::{DateTime, Utc};

use crate::campaign::{Campaign, CampaignError};

/// The campaigns a deployment serves, in the order they were given.
#[derive(Debug, Clone)]
pub struct Campaigns {
    list: Vec<Campaign>,
    /// Each campaign's [`calendar`], same order (asked for every event).
    spans: Vec<Option<Span>>,
}

type Span = (DateTime<Utc>, DateTime<Utc>);

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CampaignError {
    CampaignError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A campaign's calendar: from its first phase's start to its last phase's
/// end (`None` without phases).
pub fn calendar(c: &Campaign) -> Option<Span> {
    let start = c.phases.iter().map(|p| p.starts_at).min()?;
    let end = c.phases.iter().map(|p| p.ends_at).max()?;
    Some((start, end))
}

impl Campaigns {
    /// Validates the set: at least one campaign, distinct ids, and (with
    /// more than one) every campaign has phases and no two calendars
    /// overlap.
    pub fn new(list: Vec<Campaign>) -> Result<Self, CampaignError> {
        if list.is_empty() {
            return Err(invalid("campaign", "at least one campaign file is needed"));
        }
        for (i, c) in list.iter().enumerate() {
            if list[..i].iter().any(|o| o.id == c.id) {
                return Err(invalid(
                    "campaign.id",
                    format!("two campaign files have the id `{}`", c.id),
                ));
            }
            if list.len() > 1 && c.phases.is_empty() {
                return Err(invalid(
                    "phases",
                    format!(
                        "campaign `{}` has no phase: with several campaigns each needs a calendar",
                        c.id
                    ),
                ));
            }
        }
        for (i, a) in list.iter().enumerate() {
            for b in &list[..i] {
                if let (Some((a0, a1)), Some((b0, b1))) = (calendar(a), calendar(b)) {
                    if a0 < b1 && b0 < a1 {
                        return Err(invalid(
                            "phases",
                            format!(
                                "the calendars of campaigns `{}` and `{}` overlap; an event must belong to one campaign",
                                b.id, a.id
                            ),
                        ));
                    }
                }
            }
        }
        Ok(Self::of(list))
    }

    fn of(list: Vec<Campaign>) -> Self {
        let spans = list.iter().map(calendar).collect();
        Self { list, spans }
    }

    /// One campaign alone.
    pub fn one(c: Campaign) -> Self {
        Self::of(vec![c])
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Campaign> {
        self.list.iter()
    }

    pub fn get(&self, i: usize) -> &Campaign {
        &self.list[i]
    }

    /// The index of the campaign with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.list.iter().position(|c| c.id == id)
    }

    /// The campaign a visitor sees first: the one running now, else the
    /// last one that started, else the first.
    pub fn current(&self, now: DateTime<Utc>) -> usize {
        self.owner(now, None)
    }

    /// The index of the campaign an event at `ts` carrying `placement`
    /// belongs to (the module's rule).
    pub fn owner(&self, ts: DateTime<Utc>, placement: Option<&str>) -> usize {
        if self.list.len() == 1 {
            return 0;
        }
        let spans = &self.spans;
        if let Some(i) = spans
            .iter()
            .position(|s| s.is_some_and(|(a, b)| a <= ts && ts < b))
        {
            return i;
        }
        if let Some(code) = placement.filter(|c| !c.is_empty()) {
            let mut having =
                (0..self.list.len()).filter(|&i| self.list[i].placement(code).is_some());
            if let (Some(i), None) = (having.next(), having.next()) {
                return i;
            }
        }
        let started = spans
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|(a, _)| (a, i)))
            .filter(|(a, _)| *a <= ts)
            .max();
        if let Some((_, i)) = started {
            return i;
        }
        spans
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|(a, _)| (a, i)))
            .min()
            .map_or(0, |(_, i)| i)
    }

    /// The placement a `/r/{code}` at `ts` opens, and its campaign: the
    /// code in the campaign the scan belongs to, else in the last-starting
    /// campaign that has it (a poster left up from another year still
    /// lands on its page).
    pub fn placement(
        &self,
        ts: DateTime<Utc>,
        code: &str,
    ) -> Option<(&Campaign, &crate::campaign::Placement)> {
        let own = self.get(self.owner(ts, Some(code)));
        if let Some(p) = own.placement(code) {
            return Some((own, p));
        }
        self.by_start()
            .into_iter()
            .rev()
            .map(|i| self.get(i))
            .find_map(|c| c.placement(code).map(|p| (c, p)))
    }

    /// The campaign that holds the time just before campaign `i`'s
    /// calendar (the module's rule 3: the weeks after a campaign are its
    /// own), when it is another: the days before a campaign, its uplift's
    /// baseline, are stored there. Events carrying one of `i`'s placement
    /// codes stay with `i` (rule 2).
    pub fn preceding(&self, i: usize) -> Option<usize> {
        let (start, _) = self.spans.get(i).copied().flatten()?;
        let owner = self.owner(start - chrono::Duration::milliseconds(1), None);
        (owner != i).then_some(owner)
    }

    /// The campaigns' indices by calendar start (year over year).
    pub fn by_start(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.list.len()).collect();
        order.sort_by_key(|&i| self.spans[i].map(|(a, _)| a));
        order
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SHIPPED: &str = include_str!("../../deploy/campaign.toml");

    /// The shipped campaign moved `years` later, with id `id`; `code`
    /// renames the Châtelet poster (a placement only that year has).
    fn year(id: &str, years: i32, code: &str) -> Campaign {
        let mut text =
            SHIPPED.replacen("id = \"vivre-ensemble-2025\"", &format!("id = \"{id}\""), 1);
        for m in ["-01-", "-02-", "-03-", "-04-"] {
            text = text.replace(&format!("2025{m}"), &format!("{}{m}", 2025 + years));
        }
        text = text.replace("code = \"M-CHATELET\"", &format!("code = \"{code}\""));
        Campaign::from_toml(&text).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn two() -> Campaigns {
        Campaigns::new(vec![
            year("y2026", 1, "M-CHATELET-26"),
            year("y2025", 0, "M-CHATELET"),
        ])
        .unwrap()
    }

    #[test]
    fn an_event_inside_a_calendar_belongs_to_that_campaign_whatever_code_it_carries() {
        let c = two();
        assert_eq!(
            c.get(c.owner(utc("2025-02-01T12:00:00Z"), None)).id,
            "y2025"
        );
        assert_eq!(
            c.get(c.owner(utc("2026-02-01T12:00:00Z"), None)).id,
            "y2026"
        );
        // A 2025 poster scanned during the 2026 campaign counts for 2026.
        let scan = c.owner(utc("2026-02-01T12:00:00Z"), Some("M-CHATELET"));
        assert_eq!(c.get(scan).id, "y2026");
    }

    #[test]
    fn outside_every_calendar_the_placement_code_decides_then_the_last_campaign_started() {
        let c = two();
        let (_, end_2025) = calendar(c.get(1)).unwrap();
        let after = end_2025 + chrono::Duration::days(40);
        assert_eq!(c.get(c.owner(after, None)).id, "y2025");
        // A code only 2026 has, scanned before 2026 starts (a poster put up early).
        assert_eq!(c.get(c.owner(after, Some("m-chatelet-26"))).id, "y2026");
        // A code both years have does not decide.
        assert_eq!(c.get(c.owner(after, Some("M-REPUBLIQUE"))).id, "y2025");
        // Before every campaign: the first one; long after: the last one.
        assert_eq!(
            c.get(c.owner(utc("2020-01-01T00:00:00Z"), None)).id,
            "y2025"
        );
        assert_eq!(
            c.get(c.owner(utc("2030-01-01T00:00:00Z"), None)).id,
            "y2026"
        );
        assert_eq!(c.by_start(), vec![1, 0]);
    }

    #[test]
    fn a_scan_opens_the_placement_of_its_campaign_else_of_the_last_year_that_has_the_code() {
        let c = two();
        let in_2026 = utc("2026-02-01T12:00:00Z");
        let (camp, p) = c.placement(in_2026, "M-REPUBLIQUE").unwrap();
        assert_eq!(
            (camp.id.as_str(), p.code.as_str()),
            ("y2026", "M-REPUBLIQUE")
        );
        // Only 2025 has it: the old poster still opens its page.
        let (camp, _) = c.placement(in_2026, "m-chatelet").unwrap();
        assert_eq!(camp.id, "y2025");
        assert!(c.placement(in_2026, "NOPE").is_none());
    }

    #[test]
    fn calendars_edges_are_half_open() {
        let c = two();
        let (start, end) = calendar(c.get(0)).unwrap();
        assert_eq!(c.owner(start, None), 0);
        assert_eq!(c.owner(end - chrono::Duration::milliseconds(1), None), 0);
        assert_eq!(c.owner(start - chrono::Duration::milliseconds(1), None), 1);
        // The days before 2026 are 2025's; nothing precedes the first year.
        assert_eq!(c.preceding(0), Some(1));
        assert_eq!(c.preceding(1), None);
    }

    #[test]
    fn overlapping_calendars_and_twin_ids_are_refused_with_the_campaigns_named() {
        let e = Campaigns::new(vec![year("a", 0, "X1"), year("b", 0, "X2")]).unwrap_err();
        assert!(e.to_string().contains("`a` and `b` overlap"), "{e}");
        let e = Campaigns::new(vec![year("a", 0, "X1"), year("a", 1, "X2")]).unwrap_err();
        assert!(
            e.to_string().contains("two campaign files have the id `a`"),
            "{e}"
        );
        assert!(Campaigns::new(vec![]).is_err());
    }

    #[test]
    fn one_campaign_owns_everything() {
        let c = Campaigns::one(year("solo", 0, "X"));
        assert_eq!(c.owner(utc("1999-01-01T00:00:00Z"), Some("nope")), 0);
        assert_eq!(c.owner(utc("2099-01-01T00:00:00Z"), None), 0);
    }
}
