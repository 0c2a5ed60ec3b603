//! Waiting for a condition that no event announces (a broker's answer changing, a file
//! appearing): polled, and bounded so that a test fails instead of hanging.

use std::future::Future;
use std::time::{Duration, Instant};

/// Waits until `check` holds, polling every 50 ms; panics naming `what` after 20 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
