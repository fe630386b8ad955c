//! The figures' unit tests: hand-computed cases and the stored rows
//! answering every range as a direct computation does.

#![allow(clippy::unwrap_used)]

use chrono::{NaiveDate, TimeZone, Utc};
use uuid::Uuid;

use super::*;
use crate::Campaign;

fn campaign() -> Campaign {
    Campaign::from_toml(include_str!("../../../deploy/campaign.toml")).unwrap()
}

/// The shipped campaign with its phases' dates replaced.
fn with_phases(dates: &[(&str, &str)]) -> Campaign {
    let mut c = campaign();
    c.phases.truncate(dates.len());
    for (p, (a, b)) in c.phases.iter_mut().zip(dates) {
        p.start_date = NaiveDate::parse_from_str(a, "%Y-%m-%d").unwrap();
        p.end_date = NaiveDate::parse_from_str(b, "%Y-%m-%d").unwrap();
    }
    c
}

#[test]
fn summed_ranges_are_the_default_questions_days() {
    // Back-to-back phases: the campaign and each phase.
    let r = summed_ranges(&campaign());
    assert_eq!(
        r,
        vec![
            (day("2025-01-17"), day("2025-02-07")),
            (day("2025-01-17"), day("2025-03-16")),
            (day("2025-02-08"), day("2025-02-28")),
            (day("2025-03-01"), day("2025-03-16")),
        ]
    );
    assert_eq!(
        ranges_text(&r[..1]),
        "2025-01-17..2025-02-07",
        "as figures_ranges_state records them"
    );
    // One gap between phases: it is a range too (`hors-phase`).
    let gap = with_phases(&[("2025-01-01", "2025-01-10"), ("2025-01-20", "2025-01-31")]);
    assert_eq!(
        summed_ranges(&gap),
        vec![
            (day("2025-01-01"), day("2025-01-10")),
            (day("2025-01-01"), day("2025-01-31")),
            (day("2025-01-11"), day("2025-01-19")),
            (day("2025-01-20"), day("2025-01-31")),
        ]
    );
    // Two gaps: no single range outside the phases.
    let gaps = with_phases(&[
        ("2025-01-01", "2025-01-05"),
        ("2025-01-10", "2025-01-15"),
        ("2025-01-20", "2025-01-25"),
    ]);
    assert_eq!(summed_ranges(&gaps).len(), 4);
    // One phase: the campaign is that phase, listed once.
    let one = with_phases(&[("2025-01-01", "2025-01-31")]);
    assert_eq!(
        summed_ranges(&one),
        vec![(day("2025-01-01"), day("2025-01-31"))]
    );
    // Every summed range is aligned: the stored rows answer it exactly.
    for c in [campaign(), gap, gaps, one] {
        for (a, b) in summed_ranges(&c) {
            assert!(aligned(&c, a, b));
        }
    }
}

/// An event at a Paris local time `YYYY-MM-DD HH:MM`.
fn ev(
    c: &Campaign,
    local: &str,
    event_type: &str,
    action: &str,
    channel: &str,
    placement: &str,
    contact: &str,
) -> Event {
    let t = chrono::NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M").unwrap();
    let t = c
        .timezone
        .from_local_datetime(&t)
        .unwrap()
        .with_timezone(&Utc);
    Event {
        event_id: Uuid::new_v4(),
        ms: u64::try_from(t.timestamp_millis()).unwrap(),
        event_type: event_type.into(),
        action: action.into(),
        channel: channel.into(),
        placement: placement.into(),
        phase: c.phase_at(t).into(),
        device: "mobile".into(),
        os: "iOS".into(),
        bot: false,
        contact: contact.into(),
    }
}

fn day(s: &str) -> Day {
    day_number(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
}

/// The visitor of the module's worked example: a metro poster scanned
/// twice in 20 minutes, a landing visit; two days later a card shown,
/// clicked, a visit and a sign-up.
fn scanner(c: &Campaign) -> Vec<Event> {
    vec![
        ev(
            c,
            "2025-02-10 10:00",
            "qr_scan",
            "",
            "metro",
            "M-CHATELET",
            "",
        ),
        ev(
            c,
            "2025-02-10 10:01",
            "page_view",
            "",
            "site",
            "M-CHATELET",
            "",
        ),
        ev(
            c,
            "2025-02-10 10:20",
            "qr_scan",
            "",
            "metro",
            "M-CHATELET",
            "",
        ),
        ev(
            c,
            "2025-02-12 20:00",
            "tinder_card",
            "impression",
            "tinder",
            "T-SAINT-VALENTIN",
            "",
        ),
        ev(
            c,
            "2025-02-12 20:05",
            "tinder_card",
            "click",
            "tinder",
            "T-SAINT-VALENTIN",
            "",
        ),
        ev(
            c,
            "2025-02-12 20:06",
            "page_view",
            "",
            "site",
            "T-SAINT-VALENTIN",
            "",
        ),
        ev(
            c,
            "2025-02-12 20:10",
            "signup",
            "",
            "site",
            "T-SAINT-VALENTIN",
            "c1",
        ),
    ]
}

fn stored(c: &Campaign, visitors: &[(String, Vec<Event>)]) -> Vec<OwnedRow> {
    contribution(c, visitors)
}

fn range(rows: &[OwnedRow], device: &str, placement: &str, first: &str, last: &str) -> Answer {
    let (first, last) = (day(first), day(last));
    let mut a = Answer::new();
    for r in rows.iter().filter(|r| {
        r.bots == 0
            && r.device_filter == device
            && r.placement_filter == placement
            && r.first_day >= first
            && r.last_day <= last
    }) {
        add_to(&mut a, r.figure, r.dims.clone(), r.value, 1);
    }
    a
}

fn n(a: &Answer, figure: Figure, pick: impl Fn(&Dims) -> bool) -> i64 {
    a.iter()
        .filter(|((f, d), _)| *f == figure && pick(d))
        .map(|(_, v)| v.n)
        .sum()
}

fn credit(a: &Answer, model: &str, channel: &str) -> f64 {
    a.iter()
        .filter(|((f, d), _)| *f == Figure::Credits && d.model == model && d.channel == channel)
        .map(|(_, v)| v.credit)
        .sum()
}

#[test]
fn an_answer_of_values_sums_equal_keys_and_drops_zeros() {
    let d = |c: &str| Dims {
        channel: c.into(),
        ..Dims::default()
    };
    let v = |n: i64, credit: f64| Value { n, credit };
    let values = vec![
        ((Figure::Visitors, d("metro")), v(2, 0.0)),
        ((Figure::Visitors, d("tinder")), v(1, 0.0)),
        ((Figure::Visitors, d("metro")), v(3, 0.0)),
        ((Figure::Visitors, d("presse")), v(1, 0.5)),
        ((Figure::Visitors, d("presse")), v(-1, -0.5)),
    ];
    let mut by_insertion = Answer::new();
    for ((f, dims), x) in &values {
        add_to(&mut by_insertion, *f, dims.clone(), *x, 1);
    }
    let a = answer_of(values);
    assert_eq!(a, by_insertion);
    assert_eq!(a.len(), 2);
    assert_eq!(a[&(Figure::Visitors, d("metro"))], v(5, 0.0));
}

#[test]
fn dims_order_field_by_field_in_declaration_order() {
    let key = |d: &Dims| {
        (
            (
                d.phase.clone(),
                d.channel.clone(),
                d.placement.clone(),
                d.event_type.clone(),
                d.action.clone(),
                d.step.clone(),
            ),
            (
                d.model.clone(),
                d.conversion_phase.clone(),
                d.other_channel.clone(),
                d.device_class.clone(),
                d.os_family.clone(),
            ),
            (d.frequency, d.hour, d.day, d.path.clone(), d.delay_seconds),
        )
    };
    let texts = ["", "a", "ab", "b"];
    let mut all = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        for (j, u) in texts.iter().enumerate() {
            let mut d = Dims {
                channel: (*t).into(),
                os_family: (*u).into(),
                path: (*t).into(),
                delay_seconds: u32::try_from(i * j).unwrap(),
                ..Dims::default()
            };
            all.push(d.clone());
            d.phase = (*u).into();
            d.hour = u32::try_from(i).unwrap();
            all.push(d.clone());
            d.model = (*t).into();
            d.frequency = u8::try_from(j).unwrap();
            all.push(d);
        }
    }
    for a in &all {
        for b in &all {
            assert_eq!(a.cmp(b), key(a).cmp(&key(b)), "{a:?} vs {b:?}");
            assert_eq!(a == b, key(a) == key(b), "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn figure_names_round_trip_and_unknown_names_are_errors() {
    for f in Figure::ALL {
        assert_eq!(Figure::parse(f.name()), Ok(f));
    }
    assert_eq!(
        Figure::parse("vish"),
        Err(UnknownFigure("vish".into())),
        "an unknown name is an error, never an empty figure"
    );
}

#[test]
fn day_numbers_are_local_dates() {
    let c = campaign();
    assert_eq!(date_of(day("2025-02-10")).to_string(), "2025-02-10");
    // 23:30 UTC on 9 February is 00:30 on the 10th in Paris.
    let ms = 1_739_143_800_000; // 2025-02-09T23:30:00Z
    assert_eq!(day_of(&c, ms), day("2025-02-10"));
    assert_eq!(
        day_start(&c, day("2025-02-10")).to_rfc3339(),
        "2025-02-09T23:00:00+00:00"
    );
}

/// Every row of a few visitors (bots, several devices, a shared
/// contact, a wide visitor) holds '' / 0 outside its figure's
/// `dimensions()`: the dashboard groups by those alone.
#[test]
fn rows_hold_nothing_outside_their_figures_dimensions() {
    let c = campaign();
    let mut two = scanner(&c);
    for e in two.iter_mut().take(2) {
        e.device = "desktop".into();
        e.os = "Windows 10".into();
        e.bot = true;
    }
    let mut wide = Vec::new();
    for d in 0..(WIDE_DAYS as i64 + 3) {
        let mut e = scanner(&c).remove(0);
        e.event_id = Uuid::new_v4();
        e.ms += u64::try_from(d * 86_400_000).unwrap();
        wide.push(e);
    }
    let visitors = vec![
        ("v1".to_owned(), scanner(&c)),
        ("v2".to_owned(), two),
        ("v3".to_owned(), wide),
    ];
    let rows = stored(&c, &visitors);
    let mut seen = std::collections::BTreeSet::new();
    for r in &rows {
        let d = &r.dims;
        let used = r.figure.dimensions();
        let held: [(&str, bool); 17] = [
            ("phase", !d.phase.is_empty()),
            ("channel", !d.channel.is_empty()),
            ("placement", !d.placement.is_empty()),
            ("event_type", !d.event_type.is_empty()),
            ("action", !d.action.is_empty()),
            ("step", !d.step.is_empty()),
            ("model", !d.model.is_empty()),
            ("conversion_phase", !d.conversion_phase.is_empty()),
            ("other_channel", !d.other_channel.is_empty()),
            ("device_class", !d.device_class.is_empty()),
            ("os_family", !d.os_family.is_empty()),
            ("frequency", d.frequency != 0),
            ("hour", d.hour != 0),
            ("local_hour", d.local_hour != 0),
            ("day", d.day != 0),
            ("path", !d.path.is_empty()),
            ("delay_seconds", d.delay_seconds != 0),
        ];
        for (column, set) in held {
            assert!(
                !set || used.contains(&column),
                "{:?} holds {column}: {d:?}",
                r.figure
            );
        }
        seen.insert(r.figure);
    }
    assert_eq!(
        seen.len(),
        Figure::ALL.len(),
        "every figure has rows: {seen:?}"
    );
}

#[test]
fn devices_count_visitors_per_channel_device_and_os_and_those_who_signed() {
    let c = campaign();
    // The worked example's visitor on an iPhone, but its metro scans
    // from an Android phone; a second visitor on a Windows desktop who
    // only scans.
    let mut one = scanner(&c);
    for e in one.iter_mut().take(3) {
        e.os = "Android".into();
    }
    let mut two = vec![scanner(&c).remove(0)];
    two[0].device = "desktop".into();
    two[0].os = "Windows 10".into();
    let rows = stored(&c, &[("v1".into(), one), ("v2".into(), two)]);
    let a = range(&rows, ALL, ALL, "2025-01-17", "2025-03-16");
    let dev = |a: &Answer, ch: &str, class: &str, os: &str, step: &str| {
        n(a, Figure::Devices, |d| {
            d.channel == ch && d.device_class == class && d.os_family == os && d.step == step
        })
    };
    assert_eq!(dev(&a, "metro", "mobile", "Android", REACHED), 1);
    assert_eq!(dev(&a, "metro", "mobile", "Android", SIGNED), 1);
    assert_eq!(dev(&a, "metro", "desktop", "Windows 10", REACHED), 1);
    assert_eq!(dev(&a, "metro", "desktop", "Windows 10", SIGNED), 0);
    assert_eq!(dev(&a, "metro", "mobile", "iOS", REACHED), 0);
    assert_eq!(dev(&a, "tinder", "mobile", "iOS", SIGNED), 1);
    // Every channel: v1 on two OS families (counted in each), v2 on one.
    assert_eq!(dev(&a, ALL, "mobile", "iOS", REACHED), 1);
    assert_eq!(dev(&a, ALL, "mobile", "Android", REACHED), 1);
    assert_eq!(dev(&a, ALL, "desktop", "Windows 10", REACHED), 1);
    // v1 signed: metro, site and * on Android; tinder, site and * on iOS.
    assert_eq!(n(&a, Figure::Devices, |d| d.step == SIGNED), 6);
    // On 10 February alone v1 has not signed yet.
    let a = range(&rows, ALL, ALL, "2025-02-10", "2025-02-10");
    assert_eq!(dev(&a, "metro", "mobile", "Android", REACHED), 1);
    assert_eq!(dev(&a, "metro", "mobile", "Android", SIGNED), 0);
}

#[test]
fn a_conversion_path_and_its_delay_to_the_minute() {
    let c = campaign();
    let rows = stored(&c, &[("v1".into(), scanner(&c))]);
    let a = range(&rows, ALL, ALL, "2025-01-17", "2025-03-16");
    let path = |d: &Dims| d.path == "metro > tinder";
    assert_eq!(n(&a, Figure::PathsConverted, path), 1);
    // 10 Feb 10:00 → 12 Feb 20:10: 209 400 s exactly, on the minute.
    let exact: f64 = a
        .iter()
        .filter(|((f, d), _)| *f == Figure::PathsConverted && path(d))
        .map(|(_, v)| v.credit)
        .sum();
    assert!((exact - 209_400.0).abs() < 1e-9, "{exact}");
    assert_eq!(
        n(&a, Figure::PathsDelays, |d| path(d)
            && d.delay_seconds == 209_400),
        1
    );
    assert_eq!(n(&a, Figure::PathsDelays, |_| true), 1);
}

#[test]
fn the_worked_example_over_the_campaign() {
    let c = campaign();
    let rows = stored(&c, &[("v1".into(), scanner(&c))]);
    let a = range(&rows, ALL, ALL, "2025-01-17", "2025-03-16");
    assert_eq!(n(&a, Figure::Events, |_| true), 7);
    assert_eq!(n(&a, Figure::Events, |d| d.event_type == "qr_scan"), 2);
    for ch in [ALL, "metro", "site", "tinder"] {
        assert_eq!(n(&a, Figure::Visitors, |d| d.channel == ch), 1, "{ch}");
    }
    // Two metro scans 20 minutes apart are one touch; the card shown is
    // exposure, the click a touch.
    assert_eq!(
        n(&a, Figure::Touches, |d| d.channel == "metro"
            && d.phase == "p2-saint-valentin"),
        1
    );
    assert_eq!(n(&a, Figure::Touches, |d| d.channel == "tinder"), 1);
    for step in [TOUCHED, VISITED, SIGNED] {
        assert_eq!(
            n(&a, Figure::Funnel, |d| d.channel == "metro"
                && d.step == step),
            1
        );
        assert_eq!(
            n(&a, Figure::Funnel, |d| d.channel == "tinder"
                && d.step == step),
            1
        );
    }
    // 10 Feb 10:00 → 12 Feb 20:10; 20:05 → 20:10.
    assert_eq!(
        n(&a, Figure::FunnelSeconds, |d| d.channel == "metro"
            && d.delay_seconds == 209_400),
        1
    );
    assert_eq!(
        n(&a, Figure::FunnelHours, |d| d.channel == "metro"
            && d.delay_seconds == 208_800),
        1
    );
    assert_eq!(
        n(&a, Figure::FunnelSeconds, |d| d.channel == "tinder"
            && d.delay_seconds == 300),
        1
    );
    assert_eq!(
        n(&a, Figure::Frequency, |d| d.channel == "metro"
            && d.frequency == 2),
        1
    );
    assert_eq!(
        n(&a, Figure::Frequency, |d| d.channel == "tinder"
            && d.frequency == 2),
        1
    );
    assert_eq!(
        n(&a, Figure::Overlap, |d| d.channel == "metro"
            && d.other_channel == "tinder"),
        1
    );
    assert_eq!(n(&a, Figure::Overlap, |_| true), 4);
    assert_eq!(
        n(&a, Figure::Scanners, |d| d.placement == "M-CHATELET"
            && d.channel == ALL),
        1
    );
    assert_eq!(
        n(&a, Figure::Scanners, |d| d.placement == "T-SAINT-VALENTIN"
            && d.channel == "tinder"),
        1
    );
    assert_eq!(n(&a, Figure::Signups, |d| d.channel == ALL), 1);
    assert_eq!(n(&a, Figure::Signups, |d| d.channel == "site"), 1);
    assert_eq!(
        n(&a, Figure::SignupsByPlacement, |d| d.placement
            == "T-SAINT-VALENTIN"),
        2
    );
    assert_eq!(
        n(&a, Figure::SignupsDaily, |d| d.channel == ALL
            && d.day == day("2025-02-12")),
        1
    );
    assert_eq!(
        n(&a, Figure::VisitorsDaily, |d| d.channel == ALL),
        2,
        "two days"
    );
    assert_eq!(
        n(&a, Figure::VisitorsHourly, |d| d.channel == ALL),
        2,
        "two hours"
    );
    assert_eq!(
        n(&a, Figure::Conversions, |d| d.phase == "p2-saint-valentin"),
        1
    );
    assert!((credit(&a, "first_touch", "metro") - 1.0).abs() < 1e-12);
    assert!((credit(&a, "last_touch", "tinder") - 1.0).abs() < 1e-12);
    assert!((credit(&a, "linear", "metro") - 0.5).abs() < 1e-12);
    assert!((credit(&a, "position_based", "tinder") - 0.5).abs() < 1e-12);
    // 2^(−age / 7 d), normalised: ages 2 d 10 h 10 min and 5 min.
    let (old, new) = (
        (-209_400.0_f64 / 604_800.0).exp2(),
        (-300.0_f64 / 604_800.0).exp2(),
    );
    assert!((credit(&a, "time_decay", "metro") - old / (old + new)).abs() < 1e-12);
}

#[test]
fn a_range_keeps_the_visitors_events_inside_it() {
    let c = campaign();
    let rows = stored(&c, &[("v1".into(), scanner(&c))]);
    // The day of the click and the sign-up alone.
    let a = range(&rows, ALL, ALL, "2025-02-12", "2025-02-12");
    assert_eq!(n(&a, Figure::Visitors, |d| d.channel == "metro"), 0);
    assert_eq!(n(&a, Figure::Visitors, |d| d.channel == "tinder"), 1);
    assert_eq!(n(&a, Figure::Visitors, |d| d.channel == ALL), 1);
    assert_eq!(n(&a, Figure::Funnel, |d| d.channel == "metro"), 0);
    assert_eq!(
        n(&a, Figure::Frequency, |d| d.channel == "tinder"
            && d.frequency == 2),
        1
    );
    assert_eq!(n(&a, Figure::Signups, |d| d.channel == ALL), 1);
    // A conversion's credit does not depend on the question: the metro
    // touch two days before still gets its share.
    assert_eq!(n(&a, Figure::Conversions, |_| true), 1);
    assert!((credit(&a, "first_touch", "metro") - 1.0).abs() < 1e-12);
    // The scan day alone: touched and visited, no sign-up.
    let a = range(&rows, ALL, ALL, "2025-02-10", "2025-02-10");
    assert_eq!(
        n(&a, Figure::Funnel, |d| d.channel == "metro"
            && d.step == VISITED),
        1
    );
    assert_eq!(n(&a, Figure::Funnel, |d| d.step == SIGNED), 0);
    assert_eq!(n(&a, Figure::Signups, |_| true), 0);
    assert_eq!(n(&a, Figure::Conversions, |_| true), 0);
    // The day between: nothing.
    assert!(range(&rows, ALL, ALL, "2025-02-11", "2025-02-11").is_empty());
}

#[test]
fn presence_is_stored_as_days_and_gaps() {
    let c = campaign();
    let rows = stored(&c, &[("v1".into(), scanner(&c))]);
    let visitors: Vec<&OwnedRow> = rows
        .iter()
        .filter(|r| {
            r.figure == Figure::Visitors
                && r.bots == 0
                && r.device_filter == ALL
                && r.placement_filter == ALL
                && r.dims.channel == ALL
        })
        .collect();
    // Present on each active day, minus once for the pair of them.
    let got: Vec<(Day, Day, i64)> = visitors
        .iter()
        .map(|r| (r.first_day, r.last_day, r.value.n))
        .collect();
    let (d10, d12) = (day("2025-02-10"), day("2025-02-12"));
    assert_eq!(got, vec![(d10, d10, 1), (d10, d12, -1), (d12, d12, 1)]);
}

#[test]
fn device_and_placement_filters_keep_their_events() {
    let c = campaign();
    let mut events = scanner(&c);
    events[0].device = "desktop".into();
    let rows = stored(&c, &[("v1".into(), events)]);
    let desktop = range(&rows, "desktop", ALL, "2025-01-17", "2025-03-16");
    assert_eq!(n(&desktop, Figure::Events, |_| true), 1);
    assert_eq!(n(&desktop, Figure::Touches, |d| d.channel == "metro"), 1);
    assert_eq!(
        n(&desktop, Figure::Conversions, |_| true),
        0,
        "the sign-up was on mobile"
    );
    let mobile = range(&rows, "mobile", ALL, "2025-01-17", "2025-03-16");
    assert_eq!(n(&mobile, Figure::Events, |_| true), 6);
    assert_eq!(n(&mobile, Figure::Conversions, |_| true), 1);
    // The 10:20 scan alone starts the metro touch on mobile.
    assert_eq!(n(&mobile, Figure::Touches, |d| d.channel == "metro"), 1);
    assert!(
        (credit(&mobile, "first_touch", "metro") - 1.0).abs() < 1e-12,
        "touches of every device"
    );
    let poster = range(&rows, ALL, "M-CHATELET", "2025-01-17", "2025-03-16");
    assert_eq!(n(&poster, Figure::Events, |_| true), 3);
    assert_eq!(n(&poster, Figure::Visitors, |d| d.channel == "tinder"), 0);
    assert_eq!(
        n(&poster, Figure::Funnel, |d| d.channel == "metro"
            && d.step == VISITED),
        1
    );
    assert_eq!(n(&poster, Figure::Signups, |_| true), 0);
}

#[test]
fn bots_are_left_out_unless_asked_for() {
    let c = campaign();
    let mut events = scanner(&c);
    let mut bot = ev(&c, "2025-02-11 03:00", "page_view", "", "site", "", "");
    bot.bot = true;
    events.push(bot);
    let rows = stored(&c, &[("v1".into(), events)]);
    let without = range(&rows, ALL, ALL, "2025-01-17", "2025-03-16");
    assert_eq!(n(&without, Figure::Events, |_| true), 7);
    let events_of = |bots: u8| -> i64 {
        rows.iter()
            .filter(|r| r.bots == bots && r.device_filter == ALL && r.placement_filter == ALL)
            .filter(|r| r.figure == Figure::Events)
            .map(|r| r.value.n)
            .sum()
    };
    // The bots' scope holds what the bots change (one event); asked with
    // the bots, both scopes are summed.
    assert_eq!(events_of(1), 1);
    assert_eq!(events_of(0) + events_of(1), 8);
}

#[test]
fn a_visitor_without_bots_writes_nothing_in_the_bots_scope() {
    let c = campaign();
    let rows = stored(&c, &[("v1".into(), scanner(&c))]);
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r.bots == 0),
        "no copy for the bots' scope"
    );
}

#[test]
fn a_contact_on_two_visitors_counts_once_with_the_correction() {
    let c = campaign();
    let phone = vec![ev(&c, "2025-02-10 09:00", "signup", "", "site", "", "c1")];
    let laptop = vec![ev(&c, "2025-02-11 09:00", "signup", "", "site", "", "c1")];
    let both = vec![("a".to_owned(), phone), ("b".to_owned(), laptop)];
    let mut rows = stored(&c, &both[..1]);
    rows.extend(stored(&c, &both[1..]));
    let separately = range(&rows, ALL, ALL, "2025-01-17", "2025-03-16");
    assert_eq!(n(&separately, Figure::Signups, |d| d.channel == ALL), 2);
    assert_eq!(n(&separately, Figure::Conversions, |_| true), 2);
    rows.extend(correction(&c, &both));
    let fixed = range(&rows, ALL, ALL, "2025-01-17", "2025-03-16");
    assert_eq!(n(&fixed, Figure::Signups, |d| d.channel == ALL), 1);
    assert_eq!(n(&fixed, Figure::Conversions, |_| true), 1);
    assert_eq!(
        n(&fixed, Figure::Visitors, |d| d.channel == ALL),
        2,
        "two visitors still"
    );
    assert_eq!(
        fixed,
        range(&stored(&c, &both), ALL, ALL, "2025-01-17", "2025-03-16")
    );
}

#[test]
fn the_on_demand_answer_is_the_stored_rows_answer() {
    let c = campaign();
    let visitors = [("v1".to_owned(), scanner(&c))];
    let rows = stored(&c, &visitors);
    for (first, last, device, placement) in [
        ("2025-01-17", "2025-03-16", None, None),
        ("2025-02-12", "2025-02-12", None, None),
        ("2025-02-10", "2025-02-11", Some("mobile"), None),
        ("2025-02-01", "2025-02-28", None, Some("M-CHATELET")),
    ] {
        let q = Question {
            start_ms: u64::try_from(day_start(&c, day(first)).timestamp_millis()).unwrap(),
            end_ms: u64::try_from(day_start(&c, day(last) + 1).timestamp_millis()).unwrap(),
            phase: None,
            device: device.map(str::to_owned),
            placement: placement.map(str::to_owned),
            include_bots: false,
        };
        let direct = answer(&c, &visitors, &q);
        let summed = range(
            &rows,
            device.unwrap_or(ALL),
            placement.unwrap_or(ALL),
            first,
            last,
        );
        assert_eq!(direct, summed, "{first} … {last} {device:?} {placement:?}");
    }
}

/// The window rule of a path without a sign-up (docs/attribution.md):
/// the touches of the lookback window (30 days) ending at the visitor's
/// last touch in the question's days, earlier days included; a visitor who
/// signed up at or before the days' end has no such path. Each case
/// stored and on demand.
#[test]
fn paths_without_a_sign_up_look_back_as_conversions_do() {
    let c = campaign();
    let e = |t: &str, ty: &str, ch: &str, contact: &str| ev(&c, t, ty, "", ch, "", contact);
    let visitors = vec![
        // Touched by the metro before the question, by tinder in it.
        (
            "earlier_touch".to_owned(),
            vec![
                e("2025-01-20 10:00", "page_view", "metro", ""),
                e("2025-02-05 10:00", "page_view", "tinder", ""),
            ],
        ),
        // Converted before the question (gares), touched again in it.
        (
            "converted_before".to_owned(),
            vec![
                e("2025-01-20 10:00", "page_view", "gares", ""),
                e("2025-01-20 10:05", "signup", "gares", "c1"),
                e("2025-02-05 10:00", "page_view", "metro", ""),
            ],
        ),
        // Touched by the press 33 days before its last touch: out of the window.
        (
            "long_ago".to_owned(),
            vec![
                e("2025-01-18 09:00", "page_view", "presse", ""),
                e("2025-02-20 10:00", "page_view", "display", ""),
            ],
        ),
        // Its only sign-up in the question is a repeat of one before it.
        (
            "repeat".to_owned(),
            vec![
                e("2025-01-20 10:00", "signup", "direct", "c2"),
                e("2025-02-05 10:00", "page_view", "abribus", ""),
                e("2025-02-05 10:05", "signup", "abribus", "c2"),
            ],
        ),
        // A channel again within the touch gap (30 min) is not a touch again.
        (
            "within_the_gap".to_owned(),
            vec![
                e("2025-02-06 10:00", "page_view", "gares", ""),
                e("2025-02-06 10:05", "page_view", "social", ""),
                e("2025-02-06 10:10", "page_view", "gares", ""),
            ],
        ),
        // Converts after the question: without a sign-up in it.
        (
            "converts_later".to_owned(),
            vec![
                e("2025-02-05 10:00", "page_view", "social", ""),
                e("2025-03-10 10:05", "signup", "social", "c3"),
            ],
        ),
    ];
    let mut rows = Vec::new();
    for v in &visitors {
        rows.extend(stored(&c, std::slice::from_ref(v)));
    }
    let (first, last) = ("2025-02-01", "2025-02-28");
    let a = range(&rows, ALL, ALL, first, last);
    let without = |path: &str| n(&a, Figure::PathsNotConverted, |d| d.path == path);
    assert_eq!(
        without("metro > tinder"),
        1,
        "the earlier touch is in the path"
    );
    assert_eq!(without("tinder"), 0);
    assert_eq!(without("metro"), 0, "an earlier converter is not at risk");
    assert_eq!(without("display"), 1, "a touch 33 days before is not");
    assert_eq!(without("presse > display"), 0);
    assert_eq!(without("abribus"), 0, "a repeat sign-up: converted already");
    assert_eq!(without("social"), 1, "no sign-up up to the question's end");
    assert_eq!(without("gares > social"), 1, "the gap rule: gares once");
    assert_eq!(without("gares > social > gares"), 0);
    assert_eq!(n(&a, Figure::PathsNotConverted, |_| true), 4);
    assert_eq!(
        n(&a, Figure::PathsConverted, |_| true),
        0,
        "none converts in February"
    );
    // The same on demand.
    let q = Question {
        start_ms: u64::try_from(day_start(&c, day(first)).timestamp_millis()).unwrap(),
        end_ms: u64::try_from(day_start(&c, day(last) + 1).timestamp_millis()).unwrap(),
        phase: None,
        device: None,
        placement: None,
        include_bots: false,
    };
    let direct = answer(&c, &visitors, &q);
    let paths_of = |a: &Answer| -> Vec<(String, i64)> {
        a.iter()
            .filter(|((f, _), v)| *f == Figure::PathsNotConverted && v.n != 0)
            .map(|((_, d), v)| (d.path.to_string(), v.n))
            .collect()
    };
    assert_eq!(paths_of(&direct), paths_of(&a));
    // Over the whole campaign the visitor converting in March converts.
    let all = range(&rows, ALL, ALL, "2025-01-17", "2025-03-16");
    let without_all = |path: &str| n(&all, Figure::PathsNotConverted, |d| d.path == path);
    assert_eq!(without_all("social"), 0);
    assert_eq!(
        without_all("display"),
        1,
        "the window ends at its last touch, whatever the question"
    );
}
