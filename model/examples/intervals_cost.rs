//! What the attribution intervals cost per request (docs/attribution.md,
//! "Intervals"): the endpoint's data-driven work with the intervals (the
//! table parsed once, both models, their intervals) against the two
//! models computed alone (the baseline): `cargo run --release
//! -p ensemble-model --example intervals_cost`. Path tables of growing
//! size, random paths over nine channels (the demo campaign's), up to
//! twelve steps, people per line as a heavy-tailed count.

use std::time::Instant;

use ensemble_model::intervals::{bootstrap, REPLICATES, SEED};
use ensemble_model::paths::{markov, path_of, shapley, Chain, Table};

const CHANNELS: [&str; 9] = [
    "metro",
    "gares",
    "abribus",
    "presse",
    "display",
    "tinder",
    "social",
    "referral",
    "affichage",
];

fn table(lines: usize, seed: &mut u64) -> Table {
    let mut next = |m: u64| {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*seed >> 33) % m
    };
    let mut t = Table::default();
    while t.paths.len() < lines {
        let len = 1 + next(12) as usize;
        let steps: Vec<&str> = (0..len).map(|_| CHANNELS[next(9) as usize]).collect();
        let p = path_of(steps);
        let people = 1 + next(1000) * next(1000) / 1000;
        let conv = people * (1 + next(20)) / 100;
        t.add_converted(&p, conv as i64, 0.0);
        t.add_not_converted(&p, (people - conv) as i64);
    }
    t.add_converted("direct", 500, 0.0);
    t
}

fn main() {
    let mut seed = 42;
    println!("| path lines | people | markov + shapley (baseline) | both with intervals, {REPLICATES} replicates |");
    println!("|---:|---:|---:|---:|");
    for lines in [500, 2_000, 10_000, 50_000] {
        let t = table(lines, &mut seed);
        let people = ensemble_model::intervals::people(&t);
        let runs = 5;
        let start = Instant::now();
        for _ in 0..runs {
            std::hint::black_box((markov(&t), shapley(&t)));
        }
        let once = start.elapsed().as_secs_f64() * 1000.0 / runs as f64;
        let start = Instant::now();
        for _ in 0..runs {
            let chain = Chain::of(&t);
            std::hint::black_box((
                chain.markov(),
                shapley(&t),
                bootstrap(&chain, REPLICATES, SEED),
            ));
        }
        let boot = start.elapsed().as_secs_f64() * 1000.0 / runs as f64;
        println!(
            "| {} | {people} | {once:.2} ms | {boot:.1} ms |",
            t.paths.len()
        );
    }
}
