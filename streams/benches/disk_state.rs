//! Windowed count with state in memory or on disk (redb): events/s and the process's peak
//! resident memory. Run one variant per process, since peak memory is per process:
//! `cargo bench -p millrace-streams --bench disk_state -- memory` (or `disk`). Add
//! `session` or `dedupe` for a session-window count (1-minute gap) or a dedupe step
//! (10-minute horizon) over the same input instead of the tumbling-window count.

use std::hint::black_box;
use std::time::{Duration, Instant};

use millrace_streams::{EmitMode, Pipeline, Record, StateBackend, Stream, Windows};

const EVENTS: usize = 3_000_000;
const KEYS: u64 = 500_000;
const WINDOW_MS: i64 = 60_000;
const COMMIT_EVERY: usize = 500_000;

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let disk = std::env::args().any(|a| a == "disk");
    let step = if std::env::args().any(|a| a == "session") {
        "session count"
    } else if std::env::args().any(|a| a == "dedupe") {
        "dedupe"
    } else {
        "tumbling count"
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = if disk {
        StateBackend::on_disk(dir.path())
    } else {
        StateBackend::InMemory
    };
    let minute = Duration::from_millis(WINDOW_MS as u64);
    let mut pipeline = Pipeline::with_backend(backend, move |s: Stream<u64, ()>| match step {
        "session count" => s
            .session_window(Windows::session(minute).grace(Duration::ZERO))
            .emit(EmitMode::Final)
            .count()
            .map(|w, n| (w.key, n)),
        "dedupe" => s.dedupe(10 * minute, |k, _| *k).map(|k, ()| (k, 1)),
        _ => s
            .window(Windows::tumbling(minute).grace(Duration::ZERO))
            .emit(EmitMode::Final)
            .count()
            .map(|w, n| (w.key, n)),
    })
    .event_time(Duration::from_millis(100), None);
    let before = peak_rss_mib();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let start = Instant::now();
    let mut emitted = 0;
    for i in 0..EVENTS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Five one-minute windows of 600k events over 500k keys.
        let t = 1_700_000_000_000 + (i as i64) * 5 * WINDOW_MS / EVENTS as i64;
        pipeline.push(Record::new(x % KEYS, (), t).at(0, i as i64));
        if i % COMMIT_EVERY == COMMIT_EVERY - 1 {
            black_box(pipeline.commit().map(|c| c.stores.len()).unwrap_or(0));
            emitted += pipeline.take_output().len();
        }
    }
    pipeline.finish();
    emitted += pipeline.take_output().len();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{step}, {}: {EVENTS} events, {KEYS} keys, 1-minute windows, commit every \
         {COMMIT_EVERY}: {:.0} events/s ({secs:.2} s), {emitted} results, peak RSS {:.0} MiB \
         (before: {:.0} MiB)",
        if disk { "on disk (redb)" } else { "in memory" },
        EVENTS as f64 / secs,
        peak_rss_mib().unwrap_or(0.0),
        before.unwrap_or(0.0),
    );
}
