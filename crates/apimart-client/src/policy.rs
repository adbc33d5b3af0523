//! Retry policy values and the pure, jitter-free backoff schedule.

use std::time::Duration;

/// How the client retries a failed call.
///
/// Which failures are retried depends on the call: see
/// [`crate::ApimartClient::submit_generation`] and [`crate::ApimartClient::get_task_status`].
/// Between attempts the client waits an exponentially growing, jittered delay
/// (`base_delay`, doubling, at most `max_delay`). A 429 waits the longer of its `Retry-After`
/// and that delay, unless this exceeds `max_rate_limit_wait`: then the call gives up at once
/// with [`crate::ApimartError::RateLimited`].
///
/// The defaults: base 1 s, cap 32 s, 5 attempts (README.md of this crate, "Errors and retries").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries including the first; must be at least 1 ([`crate::ApimartClient::new`]
    /// rejects 0).
    pub max_attempts: u32,
    /// Delay before the first retry, before jitter.
    pub base_delay: Duration,
    /// Upper bound of any backoff delay.
    pub max_delay: Duration,
    /// Longest wait (from `Retry-After` or backoff) the client accepts for a 429 before it
    /// gives up and returns `RateLimited`. Default 60 s.
    pub max_rate_limit_wait: Duration,
}

impl RetryPolicy {
    /// Default total tries: 5.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
    /// Default base delay: 1 s.
    pub const DEFAULT_BASE_DELAY: Duration = Duration::from_secs(1);
    /// Default delay cap: 32 s.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(32);
    /// Default longest honoured rate-limit wait: 60 s, so one call never hangs for minutes on
    /// a long `Retry-After`; the caller can reschedule instead.
    pub const DEFAULT_MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

    /// A policy with a single attempt: every failure is returned at once.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

impl Default for RetryPolicy {
    /// 5 attempts, 1 s base delay, 32 s cap, 60 s longest rate-limit wait.
    fn default() -> Self {
        Self {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            base_delay: Self::DEFAULT_BASE_DELAY,
            max_delay: Self::DEFAULT_MAX_DELAY,
            max_rate_limit_wait: Self::DEFAULT_MAX_RATE_LIMIT_WAIT,
        }
    }
}

/// The jitter-free backoff delay before retry number `attempt` (0 for the first retry):
/// `base * 2^attempt`, saturating instead of overflowing, never above `cap`, and
/// non-decreasing in `attempt`. The client adds jitter on top of this schedule.
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    // Past 2^31 the factor saturates at u32::MAX, which is still larger, so the
    // result stays monotonic.
    let factor = 2u32.saturating_pow(attempt);
    base.checked_mul(factor).unwrap_or(Duration::MAX).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_from_base_until_cap() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(32);
        let got: Vec<u64> = (0..8)
            .map(|a| backoff_delay(a, base, cap).as_secs())
            .collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 32, 32]);
    }

    #[test]
    fn defaults_match_design() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.base_delay, Duration::from_secs(1));
        assert_eq!(p.max_delay, Duration::from_secs(32));
        assert_eq!(p.max_rate_limit_wait, Duration::from_secs(60));
        assert_eq!(RetryPolicy::none().max_attempts, 1);
    }

    fn any_duration() -> impl Strategy<Value = Duration> {
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n))
    }

    proptest! {
        #[test]
        fn never_above_cap(attempt in any::<u32>(), base in any_duration(), cap in any_duration()) {
            prop_assert!(backoff_delay(attempt, base, cap) <= cap);
        }

        #[test]
        fn non_decreasing(attempt in 0u32..u32::MAX, base in any_duration(), cap in any_duration()) {
            prop_assert!(backoff_delay(attempt, base, cap) <= backoff_delay(attempt + 1, base, cap));
        }

        #[test]
        fn first_retry_waits_base_when_under_cap(base_ms in 0u64..1_000_000, extra_ms in 0u64..1_000_000) {
            let base = Duration::from_millis(base_ms);
            let cap = Duration::from_millis(base_ms + extra_ms);
            prop_assert_eq!(backoff_delay(0, base, cap), base);
        }

        #[test]
        fn exact_doubling_while_small(attempt in 0u32..20, base_ms in 0u64..1_000) {
            let base = Duration::from_millis(base_ms);
            prop_assert_eq!(
                backoff_delay(attempt, base, Duration::MAX),
                Duration::from_millis(base_ms << attempt)
            );
        }
    }
}
