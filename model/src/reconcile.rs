//! Whether the stored figures still agree with the raw events: the rule
//! the dashboard's reconciliation applies to three counts per local day —
//! raw events (distinct ids in `events`), events the ledger has accounted,
//! and the `events` figure (bots in, every device and placement).
//!
//! The counts are read one after another while the processor writes, so a
//! batch can be caught between its writes. Such a gap closes within a
//! batch; a loss does not. A day therefore *drifts* only when two checks in
//! a row find the same non-zero difference for it:
//!
//! - figures − ledger: both are written by one INSERT (the figures by the
//!   ledger's views, milliseconds after its part), so the same gap in two
//!   checks minutes apart is a loss;
//! - ledger − raw events: `events` is written first, the ledger a batch
//!   later, and under a steady flow two checks can catch the same gap; so
//!   this one counts only on a settled day, whose raw events did not
//!   change between the two checks (a live day is judged once its flow
//!   pauses).

use std::collections::{BTreeMap, BTreeSet};

use crate::figures::Day;

/// One check's counts, per local day (`figures::Day`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Distinct event ids in `events`.
    pub events: BTreeMap<Day, i64>,
    /// Events the ledger accounts (rows after their visitor's last tombstone).
    pub accounted: BTreeMap<Day, i64>,
    /// The `events` figure's sum.
    pub figures: BTreeMap<Day, i64>,
}

/// A day whose counts disagree, in two checks in a row by the same amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drift {
    pub day: Day,
    pub events: i64,
    pub accounted: i64,
    pub figures: i64,
}

impl Drift {
    /// The figures minus what the ledger accounts: a derived write lost
    /// (negative) or doubled (positive).
    pub fn figures_vs_ledger(&self) -> i64 {
        self.figures - self.accounted
    }

    /// The ledger minus the raw events: events never accounted (negative)
    /// or accounted without a raw row (positive).
    pub fn ledger_vs_events(&self) -> i64 {
        self.accounted - self.events
    }
}

/// Which comparison a difference belongs to (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Between {
    FiguresLedger,
    LedgerEvents,
}

impl Between {
    pub const ALL: [Between; 2] = [Between::FiguresLedger, Between::LedgerEvents];

    pub fn as_str(self) -> &'static str {
        match self {
            Between::FiguresLedger => "figures_ledger",
            Between::LedgerEvents => "ledger_events",
        }
    }

    /// This comparison's difference for a drifting day.
    pub fn of(self, d: &Drift) -> i64 {
        match self {
            Between::FiguresLedger => d.figures_vs_ledger(),
            Between::LedgerEvents => d.ledger_vs_events(),
        }
    }
}

impl Counts {
    fn at(&self, day: Day) -> (i64, i64, i64) {
        let get = |m: &BTreeMap<Day, i64>| m.get(&day).copied().unwrap_or(0);
        (get(&self.events), get(&self.accounted), get(&self.figures))
    }

    /// Every day any count has.
    pub fn days(&self) -> BTreeSet<Day> {
        self.events
            .keys()
            .chain(self.accounted.keys())
            .chain(self.figures.keys())
            .copied()
            .collect()
    }

    /// The days that disagree in this check (differences, not yet drift).
    fn disagreeing(&self) -> BTreeMap<Day, (i64, i64)> {
        self.days()
            .into_iter()
            .filter_map(|day| {
                let (e, a, f) = self.at(day);
                let d = (f - a, a - e);
                (d != (0, 0)).then_some((day, d))
            })
            .collect()
    }
}

/// The days of `now` that drift, given the check before it (`None`: the
/// first check, which can only be remembered).
pub fn drift(before: Option<&Counts>, now: &Counts) -> Vec<Drift> {
    let Some(before) = before else {
        return Vec::new();
    };
    let earlier = before.disagreeing();
    now.disagreeing()
        .into_iter()
        .filter(|(day, (figures_ledger, ledger_events))| {
            let Some((was_figures_ledger, was_ledger_events)) = earlier.get(day) else {
                return false;
            };
            let settled = before.events.get(day) == now.events.get(day);
            (*figures_ledger != 0 && figures_ledger == was_figures_ledger)
                || (*ledger_events != 0 && ledger_events == was_ledger_events && settled)
        })
        .map(|(day, _)| {
            let (events, accounted, figures) = now.at(day);
            Drift {
                day,
                events,
                accounted,
                figures,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(rows: &[(Day, i64, i64, i64)]) -> Counts {
        let mut c = Counts::default();
        for &(day, e, a, f) in rows {
            c.events.insert(day, e);
            c.accounted.insert(day, a);
            c.figures.insert(day, f);
        }
        c
    }

    #[test]
    fn agreeing_counts_never_drift() {
        let c = counts(&[(20_100, 300, 300, 300), (20_101, 5, 5, 5)]);
        assert!(drift(Some(&c), &c).is_empty());
    }

    #[test]
    fn the_first_check_only_remembers() {
        let c = counts(&[(20_100, 300, 300, 0)]);
        assert!(drift(None, &c).is_empty());
    }

    #[test]
    fn a_lost_figures_write_drifts_once_seen_twice() {
        // The ledger took 300 events, the figures none of them (a view failed).
        let lost = counts(&[(20_100, 71_037, 71_037, 70_737), (20_101, 9, 9, 9)]);
        let d = drift(Some(&lost), &lost);
        assert_eq!(
            d,
            vec![Drift {
                day: 20_100,
                events: 71_037,
                accounted: 71_037,
                figures: 70_737
            }]
        );
        assert_eq!(d[0].figures_vs_ledger(), -300);
        assert_eq!(d[0].ledger_vs_events(), 0);
        assert_eq!(Between::FiguresLedger.of(&d[0]), -300);
    }

    #[test]
    fn a_batch_in_flight_is_not_drift() {
        // events landed, the ledger not yet; by the next check it has.
        let first = counts(&[(20_100, 1_200, 1_000, 1_000)]);
        let second = counts(&[(20_100, 1_400, 1_200, 1_200)]);
        let third = counts(&[(20_100, 1_400, 1_400, 1_400)]);
        assert!(drift(Some(&first), &second).is_empty());
        assert!(drift(Some(&second), &third).is_empty());
        // A different gap each time is still not drift.
        let fourth = counts(&[(20_100, 1_600, 1_450, 1_450)]);
        assert!(drift(Some(&first), &fourth).is_empty());
    }

    #[test]
    fn events_never_accounted_drift_once_their_day_is_settled() {
        let gap = counts(&[(20_100, 1_400, 1_200, 1_200)]);
        let d = drift(Some(&gap), &gap);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].ledger_vs_events(), d[0].figures_vs_ledger()),
            (-200, 0)
        );
    }

    #[test]
    fn a_day_only_one_side_has_counts_too() {
        // Figures for a day of which no raw event is left (or the reverse).
        let a = counts(&[(20_100, 10, 10, 10)]);
        let mut b = a.clone();
        b.figures.insert(20_102, 4);
        let d = drift(Some(&b), &b);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].day, d[0].figures_vs_ledger()), (20_102, 4));
        assert!(drift(Some(&a), &b).is_empty(), "seen once only");
    }
}
