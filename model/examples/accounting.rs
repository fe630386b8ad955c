//! How long the processor's accounting takes per event, without Kafka or
//! ClickHouse: `figures::add_change` and `journeys::change_of` for one batch
//! of visitors shaped as in the processor bench's live profile (see
//! `main`; until 2026-12-07 it had two to five new events per visitor and
//! one placement, and gave a third of what the processor spends). A quick,
//! repeatable look when working on `figures` (the processor bench is the
//! measurement; the machine's speed moves ±30 % with its host, so compare
//! builds one right after the other).
//!
//!     cargo run --release -p ensemble-model --example accounting [RUNS] [DAYS]
//!
//! RUNS (default 5): how many times the batch is accounted; the best is
//! printed. DAYS (default 1): on how many earlier days each returning
//! visitor was active (the bench's live visitors: one). One run under `valgrind --tool=callgrind` counts instructions,
//! which the host's load does not move.

use std::time::Instant;

use ensemble_model::figures::{self, ChangeSets, Event, Strings, Sum};
use ensemble_model::{journeys, Campaign};
use uuid::Uuid;

const DAY_MS: u64 = 86_400_000;

fn event(i: u64, ms: u64, kind: u64) -> Event {
    let (event_type, action, channel, placement) = match kind % 10 {
        0..=2 => (
            "qr_scan",
            "",
            "metro",
            ["M-CHATELET", "G-NATIONAL", "A-NATIONAL-1"][(i % 3) as usize],
        ),
        3..=6 => ("page_view", "", "metro", ""),
        7 | 8 => ("tinder_card", "impression", "tinder", ""),
        _ => ("signup", "", "site", ""),
    };
    Event {
        event_id: Uuid::from_u64_pair(7, i),
        ms,
        event_type: event_type.into(),
        action: action.into(),
        channel: channel.into(),
        placement: placement.into(),
        phase: "p2-saint-valentin".into(),
        device: "mobile".into(),
        os: "iOS".into(),
        bot: false,
        contact: if kind % 10 == 9 {
            format!("{i:064x}").into()
        } else {
            Default::default()
        },
    }
}

fn main() {
    let campaign =
        Campaign::from_toml(include_str!("../../deploy/campaign.toml")).expect("campaign");
    // 14 February 2025, 12:00 UTC: inside the second phase.
    let now = 1_739_534_400_000u64;
    // As one batch of the processor bench's live profile: ~17 800 visitors
    // for 20 000 events (one new event each, two for one in eight); five in
    // six returning with two events 1-13 days before; most also seen
    // earlier today, in the batches before (0-2 events, minutes to hours
    // earlier); a scan's placement one of three.
    let visitors = 17_800u64;
    let arg = |i: usize, default: u64| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
            .max(1)
    };
    let days = arg(2, 1);
    let sets: Vec<ChangeSets> = (0..visitors)
        .filter_map(|v| {
            let id = |k: u64| v * 1024 + k;
            let mut known = Vec::new();
            if v % 6 != 0 {
                for d in 0..days {
                    let day = now - (1 + v % 13 + 2 * d) * DAY_MS;
                    known.push(event(id(16 + 2 * d), day, v % 3));
                    known.push(event(id(17 + 2 * d), day + 300_000, 3 + v % 4));
                }
            }
            for k in 0..v % 3 {
                known.push(event(id(2 + k), now - (1 + k) * 1_500_000, v + 5 * k));
            }
            let fresh: Vec<Event> = (0..1 + u64::from(v % 8 == 0))
                .map(|k| event(id(8 + k), now - 600_000 + k * 60_000, v / 3 + k))
                .collect();
            ChangeSets::new(&format!("v{v}"), known, &fresh)
        })
        .collect();
    let events: usize = sets.iter().map(|s| s.fresh().len()).sum();
    let mut best = f64::MAX;
    let mut summed = Vec::new();
    let runs = arg(1, 5) as usize;
    for _ in 0..runs {
        let started = Instant::now();
        let mut strings = Strings::default();
        let mut sum = Sum::default();
        for set in &sets {
            figures::add_change(&campaign, set, &mut strings, &mut sum);
            std::hint::black_box(journeys::change_of(&campaign, set));
        }
        summed = sum.rows();
        best = best.min(started.elapsed().as_secs_f64());
    }
    let started = Instant::now();
    let ranged = figures::by_range(&summed, &figures::summed_ranges(&campaign));
    let delayed = figures::delays_by_range(&ranged);
    let by_range_us = started.elapsed().as_secs_f64() * 1e6 / events as f64;
    println!(
        "{} visitors, {events} new events: best of {runs} {:.1} µs per new event; {} rows in the summed change of all",
        sets.len(),
        best * 1e6 / events as f64,
        summed.len(),
    );
    println!(
        "summed by range: {:.2} rows per new event ({:.2} delays), {by_range_us:.1} µs per new event",
        ranged.len() as f64 / events as f64,
        delayed.len() as f64 / events as f64,
    );
    // Which figures the rows are (per new event), the summed change's and by range.
    let mut by_figure: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for (k, _) in &summed {
        by_figure.entry(k.figure.name()).or_default().0 += 1;
    }
    for (k, _) in &ranged {
        by_figure.entry(k.figure.name()).or_default().1 += 1;
    }
    let mut by_figure: Vec<_> = by_figure.into_iter().collect();
    by_figure.sort_by_key(|(_, (a, b))| std::cmp::Reverse(a + b));
    for (figure, (a, b)) in by_figure {
        println!(
            "  {figure:<24} {:>6.3} {:>6.3}",
            a as f64 / events as f64,
            b as f64 / events as f64
        );
    }
}
