//! `examples/first_job.rs`, run as a test: the complete job from its own input to its own
//! output, with an end of input, gives the exact count of every minute of every page.
#![allow(clippy::unwrap_used)]

// The example's `main` is not called here; its `run` is.
#[allow(dead_code)]
#[path = "../examples/first_job.rs"]
mod first_job;

use std::time::Duration;

use first_job::PageViews;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_job_example_emits_every_window_of_its_input_once() {
    let results = tokio::time::timeout(Duration::from_secs(120), first_job::run(None))
        .await
        .expect("the example hung")
        .unwrap();
    let start = 1_800_003_600_000;
    let row = |page: &str, minute: i64, views: u64| PageViews {
        page: page.to_string(),
        window_start: start + minute * 60_000,
        window_end: start + (minute + 1) * 60_000,
        views,
    };
    assert_eq!(
        results,
        vec![
            row("/home", 0, 2),
            row("/pricing", 0, 1),
            row("/home", 1, 1),
            row("/pricing", 1, 3),
        ]
    );
}
