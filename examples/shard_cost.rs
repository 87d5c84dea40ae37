//! What sharding costs a replica (issue 17): the CPU time to find its share
//! of a shared config, at start and at each reload. Rendezvous hashing
//! weighs every target once per shard; the baseline is one weight per
//! target — what modulo hashing (`hash(name) % count`) would cost.
//!
//! ```text
//! cargo run --release --example shard_cost                       # 100,000 targets, 5 runs
//! cargo run --release --example shard_cost -- --targets 10000 --runs 3
//! ```
//!
//! Each run times `Shard::owns` of shard 0 over every target name, for each
//! shard count, on one thread; printed as Markdown table rows: medians over
//! the runs, with the baseline (`Shard::owner(name, 1)`: one SHA-256 per
//! target) timed in the same runs.

use std::time::{Duration, Instant};

use clap::Parser;
use mqtt_pulse::daemon::Shard;

#[derive(Parser)]
struct Args {
    /// Target names in the config.
    #[arg(long, default_value_t = 100_000)]
    targets: usize,
    /// Runs per figure (the median is printed).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Shard counts to time.
    #[arg(long, value_delimiter = ',', default_value = "2,3,10,100")]
    counts: Vec<u32>,
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let args = Args::parse();
    let names: Vec<String> = (0..args.targets).map(|i| format!("meter-{i:06}")).collect();
    let time = |what: &dyn Fn(&str) -> bool| {
        let start = Instant::now();
        let owned = names.iter().filter(|name| what(name)).count();
        std::hint::black_box(owned);
        start.elapsed()
    };
    let mut baseline = Vec::new();
    let mut by_count: Vec<Vec<Duration>> = vec![Vec::new(); args.counts.len()];
    for _ in 0..args.runs {
        // Interleaved, so the load of the machine weighs on both alike.
        baseline.push(time(&|name| Shard::owner(name, 1) == 0));
        for (times, &count) in by_count.iter_mut().zip(&args.counts) {
            let shard = Shard::new(0, count).expect("a valid count");
            times.push(time(&|name| shard.owns(name)));
        }
    }
    let baseline = median(baseline);
    let per_target = |d: Duration| d.as_secs_f64() * 1e9 / args.targets as f64;
    println!(
        "| shards | share of shard 0 among {} targets | per target | against one weight per target ({:.1} ms, {:.0} ns) |",
        args.targets,
        baseline.as_secs_f64() * 1e3,
        per_target(baseline)
    );
    println!("|---|---|---|---|");
    for (times, count) in by_count.into_iter().zip(&args.counts) {
        let took = median(times);
        println!(
            "| {count} | {:.1} ms | {:.0} ns | {:.1}× |",
            took.as_secs_f64() * 1e3,
            per_target(took),
            took.as_secs_f64() / baseline.as_secs_f64()
        );
    }
}
