//! Windowed count per key over 10 million in-memory events, against a hand-written loop.
//!
//! Workload: 10,000 keys, 1-minute tumbling windows, 10,000 events per second of event time
//! (so ~17 windows over the run) with up to 100 ms of disorder; final emit mode. The baseline
//! is the loop anyone would write first: a std `HashMap<(key, window start), count>` updated
//! per event, drained at the end; a second, tighter loop also evicts closed windows (one map
//! per open window), as the engine does. Both get the same pre-generated events; each is run several
//! times and the median is reported. Plain timing, no harness: `cargo bench -p millrace-streams`.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::{Duration, Instant};

use millrace_streams::{EmitMode, Pipeline, Record, Stream, Windows};

const EVENTS: usize = 10_000_000;
const KEYS: u64 = 10_000;
const WINDOW_MS: i64 = 60_000;
const RUNS: usize = 7;

/// Deterministic events: (key, event time ms). xorshift keeps generation cheap and repeatable.
fn events() -> Vec<(u64, i64)> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..EVENTS)
        .map(|i| {
            let r = next();
            let key = r % KEYS;
            // 10 events per ms of event time, jittered by up to 100 ms.
            let t = 1_700_000_000_000 + (i as i64) / 10 + ((r >> 32) % 100) as i64;
            (key, t)
        })
        .collect()
}

fn baseline(events: &[(u64, i64)]) -> usize {
    let mut counts: HashMap<(u64, i64), u64> = HashMap::new();
    for &(key, t) in events {
        let start = t - t.rem_euclid(WINDOW_MS);
        *counts.entry((key, start)).or_insert(0) += 1;
    }
    let out: Vec<_> = counts.into_iter().collect();
    out.len()
}

/// A tighter hand-written loop: one map per open window, each emitted and dropped once the
/// watermark (max time - 100 ms) passes its end, as the engine does. Keeps the working set
/// small like the engine's, so it is the harder reference.
fn baseline_evicting(events: &[(u64, i64)]) -> usize {
    let mut open: BTreeMap<i64, HashMap<u64, u64>> = BTreeMap::new();
    let mut max_t = i64::MIN;
    let mut out = Vec::new();
    for &(key, t) in events {
        max_t = max_t.max(t);
        let start = t - t.rem_euclid(WINDOW_MS);
        *open.entry(start).or_default().entry(key).or_insert(0) += 1;
        while let Some(first) = open.first_entry() {
            if max_t - 100 < *first.key() + WINDOW_MS {
                break;
            }
            let start = *first.key();
            out.extend(first.remove().into_iter().map(|(k, n)| (k, start, n)));
        }
    }
    for (start, counts) in open {
        out.extend(counts.into_iter().map(|(k, n)| (k, start, n)));
    }
    out.len()
}

fn engine(events: &[(u64, i64)], commit_every: Option<usize>) -> usize {
    let mut pipeline = Pipeline::new(|s: Stream<u64, ()>| {
        s.window(Windows::tumbling(Duration::from_millis(WINDOW_MS as u64)).grace(Duration::ZERO))
            .emit(EmitMode::Final)
            .count()
    })
    .event_time(Duration::from_millis(100), None);
    let mut emitted = 0;
    for (i, &(key, t)) in events.iter().enumerate() {
        pipeline.push(Record::new(key, (), t).at(0, i as i64));
        if commit_every.is_some_and(|n| i % n == n - 1) {
            black_box(pipeline.commit().map(|c| c.stores.len()).unwrap_or(0));
            emitted += pipeline.take_output().len();
        }
    }
    pipeline.finish();
    emitted + pipeline.take_output().len()
}

/// CPU time of this thread in seconds, from /proc (Linux); `None` elsewhere. Other builds
/// share this machine, so wall time swings with their load; CPU time much less.
fn thread_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// Wall and CPU seconds of one run, and its result.
fn timed(f: impl FnOnce() -> usize) -> (f64, Option<f64>, usize) {
    let cpu = thread_cpu_secs();
    let start = Instant::now();
    let result = black_box(f());
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu.zip(thread_cpu_secs()).map(|(a, b)| b - a);
    (wall, cpu, result)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

type Variant<'a> = (&'static str, Box<dyn Fn() -> usize + 'a>);

fn main() {
    let events = events();
    let rate = |secs: f64| EVENTS as f64 / secs;
    let variants: [Variant<'_>; 4] = [
        ("HashMap loop", Box::new(|| baseline(&events))),
        (
            "HashMap loop, evicting windows",
            Box::new(|| baseline_evicting(&events)),
        ),
        ("millrace-streams", Box::new(|| engine(&events, None))),
        (
            "  with a commit every 1M events",
            Box::new(|| engine(&events, Some(1_000_000))),
        ),
    ];
    let mut wall = vec![Vec::new(); variants.len()];
    let mut cpu = vec![Vec::new(); variants.len()];
    let mut rows = vec![0; variants.len()];
    // Interleaved runs, so that a burst of load from elsewhere hits every variant alike.
    for _ in 0..RUNS {
        for (i, (_, f)) in variants.iter().enumerate() {
            let (w, c, r) = timed(f);
            wall[i].push(w);
            cpu[i].extend(c);
            rows[i] = r;
        }
    }
    assert!(
        rows.iter().all(|&r| r == rows[0]),
        "variants disagree on the number of windows"
    );

    println!(
        "windowed count: {EVENTS} events, {KEYS} keys, 1-minute tumbling windows, final emit; \
         median of {RUNS} interleaved runs"
    );
    // Ratios are throughput relative to the plain HashMap loop (the reference); the
    // evicting loop's own ratio shows how far the tighter hand-written reference is.
    let base_wall = median(wall[0].clone());
    let base_cpu = (cpu[0].len() == RUNS).then(|| median(cpu[0].clone()));
    for (i, (name, _)) in variants.iter().enumerate() {
        let w = median(wall[i].clone());
        print!(
            "  {name:<32} wall {:>11.0} events/s ({w:.3} s, ratio {:.2})",
            rate(w),
            base_wall / w
        );
        if let (Some(bc), true) = (base_cpu, cpu[i].len() == RUNS) {
            let c = median(cpu[i].clone());
            print!(
                "  cpu {:>11.0} events/s ({c:.3} s, ratio {:.2})",
                rate(c),
                bc / c
            );
        }
        println!();
    }
    println!("  windows emitted: {}", rows[0]);
}
