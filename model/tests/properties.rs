//! Properties of the figures (`ensemble_model::figures`), on random
//! visitors: the rows the processor stores answer every day range, device
//! and placement exactly as computing the answer from the events does; the
//! order and redelivery of events change nothing; batch by batch sums to
//! all at once; visitors computed apart plus the correction of those that
//! share a contact equal computing them together.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use chrono::NaiveDate;
use ensemble_model::figures::{
    self, add_change, add_to, aligned, answer, contribution, correction, day_number, day_start,
    range_correction, Answer, ChangeSets, Event, OwnedRow, Question, Strings, Sum,
};
use ensemble_model::figures::{Dims, Figure, ALL};
use ensemble_model::{journeys, Campaign};
use proptest::prelude::*;
use uuid::Uuid;

fn campaign() -> Campaign {
    Campaign::from_toml(include_str!("../../deploy/campaign.toml")).unwrap()
}

/// Monday 3 February 2025, 00:00 Paris: a week around the end of phase 1.
const BASE_MS: u64 = 1_738_537_200_000;
const MINUTE: u64 = 60_000;
const WINDOW_DAYS: u64 = 7;

fn first_day() -> u32 {
    day_number(NaiveDate::from_ymd_opt(2025, 2, 3).unwrap())
}

const KINDS: &[(&str, &str, &str)] = &[
    ("qr_scan", "", "metro"),
    ("qr_scan", "", "gares"),
    ("page_view", "", "site"),
    ("page_view", "", "metro"),
    ("signup", "", "site"),
    ("tinder_card", "impression", "tinder"),
    ("tinder_card", "click", "tinder"),
    ("tinder_card", "pass", "tinder"),
    ("tinder_card", "like", "tinder"),
    ("custom", "", "inconnu"),
];
const PLACEMENTS: &[&str] = &["", "M-CHATELET", "G-NATIONAL", "T-VOEUX"];
const DEVICES: &[&str] = &["mobile", "desktop"];
const CONTACTS: &[&str] = &["", "c1", "c2", "c3"];

/// An event: mostly clustered in a few hours a day so the gap rule and
/// midnight both matter.
fn event() -> impl Strategy<Value = Event> {
    event_in(BASE_MS, WINDOW_DAYS)
}

/// Monday 27 January 2025, 00:00 Paris: five weeks over phases 1, 2 and 3.
const WIDE_BASE_MS: u64 = 1_737_932_400_000;
const WIDE_WINDOW_DAYS: u64 = 36;

fn wide_first_day() -> u32 {
    day_number(NaiveDate::from_ymd_opt(2025, 1, 27).unwrap())
}

/// Visitors active on up to 36 days: many of them wide.
fn wide_visitors() -> impl Strategy<Value = Vec<(String, Vec<Event>)>> {
    prop::collection::vec(
        prop::collection::vec(event_in(WIDE_BASE_MS, WIDE_WINDOW_DAYS), 0..40),
        1..=3,
    )
    .prop_map(|vs| {
        vs.into_iter()
            .enumerate()
            .map(|(i, es)| (format!("visitor{i}"), es))
            .collect()
    })
}

fn event_in(base_ms: u64, window_days: u64) -> impl Strategy<Value = Event> {
    (
        0..window_days,
        prop_oneof![0u64..120, 1300u64..1440, 0u64..1440],
        0..KINDS.len(),
        0..PLACEMENTS.len(),
        0..DEVICES.len(),
        prop::bool::weighted(0.1),
        0..CONTACTS.len(),
        any::<u128>(),
    )
        .prop_map(
            move |(d, minute, kind, placement, device, bot, contact, id)| {
                let (event_type, action, channel) = KINDS[kind];
                let ms = base_ms + d * 1440 * MINUTE + minute * MINUTE;
                let c = campaign();
                let ts =
                    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap()).unwrap();
                Event {
                    event_id: Uuid::from_u128(id),
                    ms,
                    event_type: event_type.into(),
                    action: action.into(),
                    channel: channel.into(),
                    placement: PLACEMENTS[placement].into(),
                    phase: c.phase_at(ts).into(),
                    device: DEVICES[device].into(),
                    os: ["iOS", "Android"][usize::from(id % 2 == 1)].into(),
                    bot,
                    contact: if event_type == "signup" {
                        CONTACTS[contact].into()
                    } else {
                        Default::default()
                    },
                }
            },
        )
}

fn visitors(max: usize) -> impl Strategy<Value = Vec<(String, Vec<Event>)>> {
    prop::collection::vec(prop::collection::vec(event(), 0..14), 1..=max).prop_map(|vs| {
        vs.into_iter()
            .enumerate()
            .map(|(i, es)| (format!("visitor{i}"), es))
            .collect()
    })
}

/// Answers equal up to float rounding in credits.
fn same(a: &Answer, b: &Answer) -> Result<(), String> {
    let clean = |x: &Answer| -> BTreeMap<_, _> {
        x.iter()
            .filter(|(_, v)| v.n != 0 || v.credit.abs() > 1e-9)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    let (a, b) = (clean(a), clean(b));
    if a.len() != b.len() || a.keys().ne(b.keys()) {
        return Err(format!("keys differ:\n{a:#?}\nvs\n{b:#?}"));
    }
    for (k, v) in &a {
        let w = b[k];
        if v.n != w.n || (v.credit - w.credit).abs() > 1e-9 {
            return Err(format!("{k:?}: {v:?} vs {w:?}"));
        }
    }
    Ok(())
}

fn summed(
    rows: &[OwnedRow],
    bots: u8,
    device: &str,
    placement: &str,
    first: u32,
    last: u32,
) -> Answer {
    let mut a = Answer::new();
    // With the bots, both scopes: `bots = 1` holds what the bots change.
    for r in rows.iter().filter(|r| {
        r.bots <= bots
            && r.device_filter == device
            && r.placement_filter == placement
            && r.first_day >= first
            && r.last_day <= last
    }) {
        add_to(&mut a, r.figure, r.dims.clone(), r.value, 1);
    }
    a
}

/// Rows as an answer keyed by everything (for comparing row sets).
fn all_rows(rows: &[OwnedRow]) -> Answer {
    let mut a = Answer::new();
    for r in rows {
        let mut dims = r.dims.clone();
        // Fold the scope into the dimensions so nothing is merged away.
        dims.event_type = format!(
            "{}|{}|{}|{}|{}|{}",
            dims.event_type, r.bots, r.device_filter, r.placement_filter, r.first_day, r.last_day
        );
        add_to(&mut a, r.figure, dims, r.value, 1);
    }
    a
}

/// [`add_change`] and [`journeys::change_of`] batch by batch (the batches
/// cut at `cuts`, each redelivering the two events before it) against the
/// rows of all the events computed at once.
fn batch_by_batch(events: Vec<Event>, cuts: Vec<usize>) -> Result<(), TestCaseError> {
    let c = campaign();
    let mut cuts: Vec<usize> = cuts.into_iter().map(|x| x.min(events.len())).collect();
    cuts.push(events.len());
    cuts.sort_unstable();
    let mut known: Vec<Event> = Vec::new();
    let mut strings = Strings::default();
    let mut sets = Vec::new();
    let mut start: usize = 0;
    for cut in cuts {
        let batch: Vec<Event> = events[start.saturating_sub(2)..cut].to_vec();
        if let Some(s) = ChangeSets::new("v", known.clone(), &batch) {
            known.extend(s.fresh().iter().cloned());
            sets.push(s);
        }
        start = cut;
    }
    let mut sum = Sum::default();
    let mut journeys_sum = journeys::Rows::new();
    for s in &sets {
        add_change(&c, s, &mut strings, &mut sum);
        journeys::add(&mut journeys_sum, &journeys::change_of(&c, s), 1);
    }
    let journeys_at_once = journeys::rows(&c, &events);
    // Each conversion's credits are its key: the same text batch by
    // batch as at once, or the rows would not cancel.
    let kept = |rows: &journeys::Rows<'_>| -> Vec<String> {
        rows.iter()
            .filter(|(_, v)| *v != journeys::Counts::default())
            .map(|(k, v)| format!("{k:?} {v:?}"))
            .collect()
    };
    prop_assert_eq!(
        kept(&journeys_sum),
        kept(&journeys_at_once),
        "the journeys' changes, batch by batch"
    );
    let rows = sum.rows();
    let batched: Vec<OwnedRow> = figures::rows_of(&strings, &rows)
        .map(|r| OwnedRow::of(&r))
        .collect();
    let at_once = contribution(&c, &[("v".to_owned(), events.clone())]);
    let (a, b) = (all_rows(&batched), all_rows(&at_once));
    prop_assert!(same(&a, &b).is_ok(), "{}", same(&a, &b).unwrap_err());
    // The same batches summed alternately into two sums, each with its
    // own strings (as the processor's two threads do, their ids in
    // another order), then one taken into the other.
    let mut halves = [(Strings::default(), Sum::default()), Default::default()];
    for (i, s) in sets.iter().enumerate() {
        let (strings, sum) = &mut halves[i % 2];
        add_change(&c, s, strings, sum);
    }
    let [(mut strings, mut sum), (theirs, other)] = halves;
    sum.absorb(&mut strings, other, theirs);
    let rows = sum.rows();
    let absorbed: Vec<OwnedRow> = figures::rows_of(&strings, &rows)
        .map(|r| OwnedRow::of(&r))
        .collect();
    let keys: std::collections::BTreeSet<String> = absorbed
        .iter()
        .map(|r| {
            format!(
                "{:?} {} {} {} {} {} {:?}",
                r.figure,
                r.bots,
                r.device_filter,
                r.placement_filter,
                r.first_day,
                r.last_day,
                r.dims
            )
        })
        .collect();
    prop_assert_eq!(keys.len(), absorbed.len(), "one row per key once absorbed");
    let a = all_rows(&absorbed);
    prop_assert!(
        same(&a, &b).is_ok(),
        "absorbed: {}",
        same(&a, &b).unwrap_err()
    );
    Ok(())
}

/// A time no local day can be found for (past what a date holds) is on
/// day 0: a batch's new event there is on an earlier day than its other
/// new events, and the rows of that day are not alike on both sides.
#[test]
fn a_batch_with_a_time_out_of_range_sums_to_all_at_once() {
    let scan = |i: u128, ms: u64| Event {
        event_id: Uuid::from_u128(i),
        ms,
        event_type: "qr_scan".into(),
        action: "".into(),
        channel: "metro".into(),
        placement: "M-CHATELET".into(),
        phase: "p1-lancement".into(),
        device: "mobile".into(),
        os: "iOS".into(),
        bot: false,
        contact: Default::default(),
    };
    let events = vec![
        scan(1, BASE_MS),
        scan(2, BASE_MS + 1440 * MINUTE),
        scan(3, BASE_MS + 3 * 1440 * MINUTE),
        scan(4, u64::MAX),
    ];
    batch_by_batch(events, vec![2]).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The central promise: what the dashboard sums from the stored rows
    /// for days [a, b] (a device, a placement, bots or not) is what the
    /// same definitions compute from the events the question keeps.
    #[test]
    fn stored_rows_answer_every_day_range_device_and_placement(
        vs in visitors(3),
        a in 0u32..WINDOW_DAYS as u32 + 1,
        len in 0u32..WINDOW_DAYS as u32,
        device in prop::option::of(0..DEVICES.len()),
        placement in prop::option::of(1..PLACEMENTS.len()),
        bots in any::<bool>(),
    ) {
        let c = campaign();
        let (first, last) = (first_day() + a, first_day() + a + len);
        // A device and a placement at once is not a stored scope.
        let placement = if device.is_some() { None } else { placement };
        let rows = contribution(&c, &vs);
        let got = summed(
            &rows,
            u8::from(bots),
            device.map_or(ALL, |d| DEVICES[d]),
            placement.map_or(ALL, |p| PLACEMENTS[p]),
            first,
            last,
        );
        let q = Question {
            start_ms: u64::try_from(day_start(&c, first).timestamp_millis()).unwrap(),
            end_ms: u64::try_from(day_start(&c, last + 1).timestamp_millis()).unwrap(),
            phase: None,
            device: device.map(|d| DEVICES[d].to_owned()),
            placement: placement.map(|p| PLACEMENTS[p].to_owned()),
            include_bots: bots,
        };
        let want = answer(&c, &vs, &q);
        prop_assert!(same(&got, &want).is_ok(), "{}", same(&got, &want).unwrap_err());
    }

    /// Events in any order, delivered twice, give the same rows.
    #[test]
    fn order_and_redelivery_change_nothing(vs in visitors(2), seed in any::<u64>()) {
        let c = campaign();
        let mut shuffled = vs.clone();
        for (i, (_, es)) in shuffled.iter_mut().enumerate() {
            let again: Vec<Event> = es.iter().step_by(2).cloned().collect();
            es.extend(again);
            // A deterministic shuffle from the seed.
            let n = es.len();
            for j in (1..n).rev() {
                let k = usize::try_from((seed.rotate_left(u32::try_from(i + j).unwrap()) ^ j as u64) % (j as u64 + 1)).unwrap();
                es.swap(j, k);
            }
        }
        let a = all_rows(&contribution(&c, &vs));
        let b = all_rows(&contribution(&c, &shuffled));
        prop_assert!(same(&a, &b).is_ok(), "{}", same(&a, &b).unwrap_err());
    }

    /// The processor's way, batch by batch (with redeliveries), sums to
    /// computing the visitor's events at once.
    #[test]
    fn batch_by_batch_sums_to_all_at_once(events in prop::collection::vec(event(), 1..20), cuts in prop::collection::vec(0usize..20, 0..4)) {
        batch_by_batch(events, cuts)?;
    }

    /// The same over five weeks: visitors with many active days, some
    /// turning wide in a batch (the change leaves out the runs of days
    /// both sides share only while neither side is wide).
    #[test]
    fn batch_by_batch_sums_to_all_at_once_over_many_days(events in prop::collection::vec(event_in(WIDE_BASE_MS, WIDE_WINDOW_DAYS), 1..30), cuts in prop::collection::vec(0usize..30, 0..5)) {
        batch_by_batch(events, cuts)?;
    }

    /// Visitors computed one by one, plus the correction computed over the
    /// visitors that share a contact only, equal computing them together.
    #[test]
    fn apart_plus_the_correction_of_sharers_is_together(vs in visitors(4)) {
        let c = campaign();
        let mut rows: Vec<OwnedRow> = Vec::new();
        for v in &vs {
            rows.extend(contribution(&c, std::slice::from_ref(v)));
        }
        // Visitors whose sign-ups carry a contact another visitor's carry too.
        let contacts_of = |es: &[Event]| -> Vec<String> {
            es.iter().filter(|e| e.event_type == "signup" && !e.contact.is_empty()).map(|e| e.contact.to_string()).collect()
        };
        let sharers: Vec<(String, Vec<Event>)> = vs
            .iter()
            .enumerate()
            .filter(|(i, (_, es))| {
                let mine = contacts_of(es);
                vs.iter().enumerate().any(|(j, (_, other))| j != *i && contacts_of(other).iter().any(|x| mine.contains(x)))
            })
            .map(|(_, v)| v.clone())
            .collect();
        rows.extend(correction(&c, &sharers));
        let together = contribution(&c, &vs);
        let (a, b) = (all_rows(&rows), all_rows(&together));
        prop_assert!(same(&a, &b).is_ok(), "{}", same(&a, &b).unwrap_err());
    }

    /// Visitors active on many days (wide: stamped over whole phases):
    /// the stored rows, each visitor computed apart, answer a range of
    /// whole phases exactly once the contact correction is added, and any
    /// other range once `range_correction` of all of them is added.
    #[test]
    fn wide_visitors_answer_whole_phases_and_are_corrected_elsewhere(
        vs in wide_visitors(),
        a in 0u32..WIDE_WINDOW_DAYS as u32,
        len in 0u32..WIDE_WINDOW_DAYS as u32,
        phase_range in 0usize..6,
        device in prop::option::of(0..DEVICES.len()),
        bots in any::<bool>(),
    ) {
        let c = campaign();
        let d = |y, m, dd| day_number(NaiveDate::from_ymd_opt(y, m, dd).unwrap());
        // Whole segments: phase 1, 2, 3, 1–2, 2–3, and the campaign.
        let whole = [
            (d(2025, 1, 17), d(2025, 2, 7)),
            (d(2025, 2, 8), d(2025, 2, 28)),
            (d(2025, 3, 1), d(2025, 3, 16)),
            (d(2025, 1, 17), d(2025, 2, 28)),
            (d(2025, 2, 8), d(2025, 3, 16)),
            (d(2025, 1, 17), d(2025, 3, 16)),
        ];
        let device_name = device.map_or(ALL, |x| DEVICES[x]);
        let question = |(first, last): (u32, u32)| Question {
            start_ms: u64::try_from(day_start(&c, first).timestamp_millis()).unwrap(),
            end_ms: u64::try_from(day_start(&c, last + 1).timestamp_millis()).unwrap(),
            phase: None,
            device: device.map(|x| DEVICES[x].to_owned()),
            placement: None,
            include_bots: bots,
        };
        let mut apart: Vec<OwnedRow> = Vec::new();
        for v in &vs {
            apart.extend(contribution(&c, std::slice::from_ref(v)));
        }
        // Every visitor shares a contact with every other in this test's
        // correction: it is computed over all of them.
        let mut with_contacts = apart.clone();
        with_contacts.extend(correction(&c, &vs));

        let range = whole[phase_range];
        prop_assert!(aligned(&c, range.0, range.1));
        let got = summed(&with_contacts, u8::from(bots), device_name, ALL, range.0, range.1);
        let want = answer(&c, &vs, &question(range));
        prop_assert!(same(&got, &want).is_ok(), "whole phases {range:?}: {}", same(&got, &want).unwrap_err());

        let range = (wide_first_day() + a, wide_first_day() + (a + len).min(WIDE_WINDOW_DAYS as u32 - 1));
        let mut got = summed(&apart, u8::from(bots), device_name, ALL, range.0, range.1);
        for ((figure, dims), v) in range_correction(&c, &vs, &question(range), range) {
            add_to(&mut got, figure, dims, v, 1);
        }
        let want = answer(&c, &vs, &question(range));
        prop_assert!(same(&got, &want).is_ok(), "days {range:?}: {}", same(&got, &want).unwrap_err());
    }

    /// The analysts' SQL views read the journeys rows back (docs/figures.md "SQL
    /// access"): the rows of each visitor computed apart, summed, read as
    /// the views read them (keys with n > 0; of a contact's conversion
    /// rows, the earliest; the credit rows of the conversions kept), give
    /// the dashboard's touches, conversions, credits and scans per
    /// placement, contacts shared across visitors included.
    #[test]
    fn journeys_read_as_the_views_do_give_the_figures(vs in visitors(4)) {
        let c = campaign();
        let mut stored = journeys::Rows::new();
        for (_, es) in &vs {
            journeys::add(&mut stored, &journeys::rows(&c, es), 1);
        }
        let live: Vec<(&journeys::Key<'_>, &journeys::Counts)> = stored.iter().filter(|(_, v)| v.n > 0).map(|(k, v)| (k, v)).collect();
        let mut views = Answer::new();
        let mut put = |figure: Figure, dims: Dims, n: i64, credit: f64| {
            add_to(&mut views, figure, dims, figures::Value { n, credit }, 1);
        };
        for (k, v) in live.iter().filter(|(k, _)| k.kind == journeys::Kind::Touch) {
            put(Figure::Touches, Dims { channel: k.channel.to_owned(), phase: k.phase.to_owned(), ..Dims::default() }, v.n, 0.0);
        }
        // The conversions view: per contact, the earliest (time, event id).
        let mut chosen: BTreeMap<&str, &journeys::Key<'_>> = BTreeMap::new();
        for (k, _) in live.iter().filter(|(k, _)| k.kind == journeys::Kind::Conversion) {
            let e = chosen.entry(k.contact).or_insert(k);
            if (k.ms, k.event_id) < (e.ms, e.event_id) {
                *e = k;
            }
        }
        for k in chosen.values() {
            put(Figure::Conversions, Dims { phase: k.phase.to_owned(), ..Dims::default() }, 1, 0.0);
        }
        // The credits view: each kept conversion's credits, split.
        for k in chosen.values() {
            for c in journeys::credits_of(&k.credits) {
                put(Figure::Credits, Dims {
                    model: c.model.to_owned(),
                    channel: c.channel.to_owned(),
                    phase: c.phase.to_owned(),
                    conversion_phase: c.conversion_phase.to_owned(),
                    ..Dims::default()
                }, 0, c.credit);
            }
        }
        for (k, v) in live.iter().filter(|(k, _)| k.kind == journeys::Kind::PlacementDay) {
            put(Figure::Scanners, Dims { placement: k.placement.to_owned(), ..Dims::default() }, v.scans, 0.0);
        }
        let q = Question { start_ms: 0, end_ms: u64::MAX, phase: None, device: None, placement: None, include_bots: false };
        let mut want = Answer::new();
        for ((figure, dims), v) in answer(&c, &vs, &q) {
            match figure {
                Figure::Touches | Figure::Conversions | Figure::Credits => add_to(&mut want, figure, dims, v, 1),
                // Scans per placement, from the events figure (Scanners
                // stands in for "scans" in this comparison).
                Figure::Events if ensemble_model::rules::is_scan(&dims.event_type, &dims.action) && !dims.placement.is_empty() => {
                    add_to(&mut want, Figure::Scanners, Dims { placement: dims.placement.clone(), ..Dims::default() }, v, 1);
                }
                _ => {}
            }
        }
        prop_assert!(same(&views, &want).is_ok(), "{}", same(&views, &want).unwrap_err());
    }
}
