//! Retrying an operation across retriable failures, refreshing metadata where it went stale.

use std::future::Future;
use std::time::Instant;

use crate::error::{ClientError, Result};
use crate::network::cluster::Cluster;

/// Runs `operation` until it succeeds, fails with an error that retrying cannot fix, or the
/// client's request timeout has passed since the first attempt. Between attempts it waits
/// `retry_backoff`, and refreshes metadata first when the error says it is stale.
pub(crate) async fn with_retries<T, F, Fut>(
    cluster: &Cluster,
    what: &str,
    mut operation: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + cluster.config.request_timeout;
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_retriable() && Instant::now() < deadline => {
                tracing::debug!(%error, what, "retrying");
                if error.invalidates_metadata() {
                    cluster.invalidate_metadata();
                }
                tokio::time::sleep(cluster.config.retry_backoff).await;
                if error.invalidates_metadata() {
                    // A failed refresh is retried by the next attempt's own lookups.
                    let _ = cluster.refresh_interest().await;
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// The first error of a list, or `Ok` when there is none.
pub(crate) fn first_error(errors: Vec<ClientError>) -> Result<()> {
    match errors.into_iter().next() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
