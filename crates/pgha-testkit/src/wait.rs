//! Bounded waiting: every loop here ends by count and by time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Polls `check` every `every` until it returns `Some`, or fails once
/// `within` has passed, saying what was awaited.
pub async fn until<T, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    let max_polls = (within.as_millis() / every.as_millis().max(1)) as u64 + 2;
    for _ in 0..max_polls {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(every).await;
    }
    anyhow::bail!("timed out after {within:?} waiting for {what}")
}
