//! The `retry_timeout` bound every [`Dcs`](super::Dcs) call keeps.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::DcsError;

/// Runs one whole operation of a [`Dcs`](super::Dcs) implementation under
/// `limit` (the backend's `retry_timeout`), so that no path through it
/// (connects, retries, re-reads) can outlive the bound the HA loop's timing
/// argument relies on. `body` gets the deadline, so the requests inside can
/// stop at the same instant and report what they were doing.
///
/// When the bound is hit, `on_timeout` runs (say, to drop a connection that
/// may be dead) and the result is [`DcsError::Unreachable`] naming
/// `operation`; the engine name goes into the log line.
pub async fn bounded<T, Fut>(
    engine: &'static str,
    operation: &'static str,
    limit: Duration,
    body: impl FnOnce(Instant) -> Fut,
    on_timeout: impl FnOnce(),
) -> Result<T, DcsError>
where
    Fut: Future<Output = Result<T, DcsError>>,
{
    let deadline = Instant::now() + limit;
    match tokio::time::timeout_at(deadline, body(deadline)).await {
        Ok(r) => r,
        Err(_) => {
            on_timeout();
            tracing::debug!(operation, "{engine} call timed out after {limit:?}");
            Err(DcsError::unreachable(
                operation,
                format!("no answer within retry_timeout ({limit:?})"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_operation_past_the_bound_is_unreachable() {
        let mut dropped = false;
        let r: Result<(), DcsError> = bounded(
            "test",
            "load",
            Duration::from_secs(2),
            |_| std::future::pending(),
            || dropped = true,
        )
        .await;
        assert!(
            matches!(
                r,
                Err(DcsError::Unreachable {
                    operation: "load",
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(dropped);
    }

    #[tokio::test(start_paused = true)]
    async fn the_body_sees_the_deadline_and_its_answer_is_kept() {
        let start = Instant::now();
        let r = bounded(
            "test",
            "load",
            Duration::from_secs(2),
            |deadline| async move { Ok(deadline - start) },
            || panic!("no timeout"),
        )
        .await;
        assert_eq!(r.unwrap(), Duration::from_secs(2));
    }
}
