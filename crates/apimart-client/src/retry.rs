//! The retry loop with jittered exponential backoff.
//!
//! This is the only module that touches the `backoff` crate (flagged unmaintained,
//! RUSTSEC-2025-0012): replacing it means rewriting [`Schedule`] alone.

use std::future::Future;
use std::time::Duration;

use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;

use crate::error::ApimartError;
use crate::policy::RetryPolicy;

/// Randomisation around each exponential step: ±50 %, so clients that failed together do
/// not retry together.
const JITTER_FACTOR: f64 = 0.5;

/// Growth of the delay per retry (doubling, as in [`crate::backoff_delay`]).
const MULTIPLIER: f64 = 2.0;

/// Jittered delays between attempts, each at most the policy's `max_delay`.
struct Schedule {
    inner: backoff::ExponentialBackoff,
    cap: Duration,
}

impl Schedule {
    fn new(policy: &RetryPolicy) -> Self {
        let inner = ExponentialBackoffBuilder::new()
            .with_initial_interval(policy.base_delay)
            .with_max_interval(policy.max_delay)
            .with_multiplier(MULTIPLIER)
            .with_randomization_factor(JITTER_FACTOR)
            // The attempt count, not elapsed time, bounds the retries.
            .with_max_elapsed_time(None)
            .build();
        Self {
            inner,
            cap: policy.max_delay,
        }
    }

    fn next_delay(&mut self) -> Duration {
        // Jitter can overshoot the interval by half; the cap is a promise to the caller.
        self.inner.next_backoff().unwrap_or(self.cap).min(self.cap)
    }
}

/// How long to wait before retrying after `err`, given the jittered backoff `delay`; `None`
/// means give up now. A 429 waits the longer of its `Retry-After` and `delay`, but only up to
/// the policy's `max_rate_limit_wait`.
fn wait_before_retry(
    err: &ApimartError,
    delay: Duration,
    policy: &RetryPolicy,
) -> Option<Duration> {
    match err {
        ApimartError::RateLimited { retry_after, .. } => {
            let wait = retry_after.unwrap_or(Duration::ZERO).max(delay);
            (wait <= policy.max_rate_limit_wait).then_some(wait)
        }
        _ => Some(delay),
    }
}

/// Runs `op` (given the 1-based attempt number) until it succeeds, `retryable` says no, or
/// the policy's attempts are spent. Returns the last result and the number of attempts made.
pub(crate) async fn run<T, Op, Fut>(
    policy: &RetryPolicy,
    retryable: impl Fn(&ApimartError) -> bool,
    mut op: Op,
) -> (Result<T, ApimartError>, u32)
where
    Op: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, ApimartError>>,
{
    let max_attempts = policy.max_attempts.max(1);
    let mut schedule = Schedule::new(policy);
    let mut attempt = 1;
    loop {
        let err = match op(attempt).await {
            Ok(value) => return (Ok(value), attempt),
            Err(err) => err,
        };
        if attempt >= max_attempts || !retryable(&err) {
            return (Err(err), attempt);
        }
        let Some(wait) = wait_before_retry(&err, schedule.next_delay(), policy) else {
            tracing::debug!(attempt, error = %err, "rate-limit wait too long, giving up");
            return (Err(err), attempt);
        };
        tracing::debug!(
            attempt,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            error = %err,
            "apimart call failed, retrying"
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(base_ms: u64, cap_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(base_ms),
            max_delay: Duration::from_millis(cap_ms),
            max_rate_limit_wait: Duration::from_secs(60),
        }
    }

    #[test]
    fn jittered_delays_stay_under_cap_and_around_schedule() {
        let p = policy(100, 400);
        let mut schedule = Schedule::new(&p);
        for attempt in 0..10 {
            let d = schedule.next_delay();
            let nominal = crate::backoff_delay(attempt, p.base_delay, p.max_delay);
            assert!(d <= p.max_delay, "{d:?} above cap");
            // ±50 % jitter, plus the 1 ns the backoff crate may add.
            assert!(
                d + Duration::from_nanos(1) >= nominal / 2,
                "{d:?} far below {nominal:?}"
            );
        }
    }

    #[test]
    fn rate_limit_waits_for_longer_of_retry_after_and_backoff() {
        let p = policy(10, 100);
        let err = |s| ApimartError::RateLimited {
            retry_after: Some(Duration::from_secs(s)),
            message: String::new(),
        };
        assert_eq!(
            wait_before_retry(&err(5), Duration::from_millis(10), &p),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            wait_before_retry(&err(0), Duration::from_millis(10), &p),
            Some(Duration::from_millis(10))
        );
        assert_eq!(wait_before_retry(&err(61), Duration::ZERO, &p), None);
        assert_eq!(
            wait_before_retry(&ApimartError::Timeout, Duration::from_millis(7), &p),
            Some(Duration::from_millis(7))
        );
    }

    #[tokio::test]
    async fn stops_after_max_attempts_and_counts_them() {
        let p = policy(0, 0);
        let mut calls = 0;
        let (res, attempts) = run(
            &p,
            |_| true,
            |_| {
                calls += 1;
                async { Err::<(), _>(ApimartError::Timeout) }
            },
        )
        .await;
        assert!(matches!(res, Err(ApimartError::Timeout)));
        assert_eq!((calls, attempts), (4, 4));
    }

    #[tokio::test]
    async fn does_not_retry_what_is_not_retryable() {
        let p = policy(0, 0);
        let (res, attempts) = run(
            &p,
            |_| false,
            |_| async { Err::<(), _>(ApimartError::Timeout) },
        )
        .await;
        assert!(res.is_err());
        assert_eq!(attempts, 1);
    }
}
