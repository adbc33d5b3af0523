//! Retry schedule of the callback outbox: exponential backoff with full jitter
//! (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015).
//!
//! The ceiling for retry `n` is `min(cap, base * 2^(n-1))`; the delay actually used is
//! `ceiling * jitter` with `jitter` drawn by the caller from `[0, 1)`. Full jitter spreads
//! the retries of many pending callbacks over the whole window, so a receiver coming back
//! after an outage is not hit by every delivery at the same instant. The functions are
//! pure (the caller supplies the randomness) and saturate instead of overflowing.

use std::time::Duration;

/// The no-jitter delay before retry `attempt`: `min(cap, base * 2^(attempt - 1))`.
///
/// `attempt` counts failed deliveries so far, from 1 (`attempt` 0 is treated as 1);
/// attempt 1 gives `base`, each next attempt doubles, and the result never exceeds `cap`
/// (a `base` above `cap` gives `cap`). Huge attempt numbers saturate at `cap`.
pub fn attempt_ceiling(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1);
    // Exact in u128 nanoseconds: `Duration::MAX` is below 2^94 ns, so any overflow or a
    // shift of 128+ already means "above every cap".
    let scaled = 1u128
        .checked_shl(doublings)
        .and_then(|factor| base.as_nanos().checked_mul(factor));
    match scaled {
        Some(nanos) if nanos < cap.as_nanos() => from_nanos_u128(nanos),
        _ => cap,
    }
}

/// `nanos` must not exceed `Duration::MAX` (callers pass values below a `Duration`).
fn from_nanos_u128(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits a u32.
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, subsec)
}

/// The delay before retry `attempt` (from 1: the first retry after the first failed
/// delivery), exponential with full jitter: `attempt_ceiling(attempt, base, cap) * jitter`.
///
/// `jitter` is a uniform random number in `[0, 1)` drawn by the caller (e.g.
/// `fastrand::f64()`), which keeps this function pure. Values outside `[0, 1]` are clamped
/// and NaN counts as 1 (no reduction), so bad input yields a longer wait, never a
/// hammering retry or a panic. The result is never above `cap`.
pub fn next_attempt_delay(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let ceiling = attempt_ceiling(attempt, base, cap);
    let jitter = if jitter.is_nan() {
        1.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    // f64 rounding may push a huge ceiling past `Duration::MAX` or a hair above itself.
    Duration::try_from_secs_f64(ceiling.as_secs_f64() * jitter)
        .map_or(ceiling, |delay| delay.min(ceiling))
}

/// How many delivery attempts (the first, immediate one included) start within `horizon`
/// of the first, when every wait takes its no-jitter upper bound [`attempt_ceiling`].
///
/// With jitter the real waits are shorter, so at least this many attempts fit the horizon;
/// use it to size "keep trying for 24 h" as a maximum attempt count. At least 1; saturates
/// at `u32::MAX` (e.g. when `base` or `cap` is zero and every wait is zero).
pub fn attempts_for_horizon(base: Duration, cap: Duration, horizon: Duration) -> u32 {
    let mut attempts: u32 = 1;
    let mut elapsed = Duration::ZERO;
    loop {
        let wait = attempt_ceiling(attempts, base, cap);
        if wait == cap {
            // From here every wait is `cap`: count the rest arithmetically.
            let Some(left) = horizon.checked_sub(elapsed) else {
                return attempts;
            };
            if cap.is_zero() {
                return u32::MAX;
            }
            let more = left.as_nanos() / cap.as_nanos();
            return u32::try_from(more).map_or(u32::MAX, |more| attempts.saturating_add(more));
        }
        match elapsed.checked_add(wait) {
            Some(next) if next <= horizon => {
                elapsed = next;
                // Before the cap the wait doubles, so this runs at most ~64 times (or the
                // wait is zero, which only happens when `base` is zero).
                if wait.is_zero() {
                    return u32::MAX;
                }
                attempts = attempts.saturating_add(1);
            }
            _ => return attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn schedule_doubles_from_base_up_to_cap() {
        let ceilings: Vec<u64> = (1..=8)
            .map(|n| attempt_ceiling(n, S(10), S(300)).as_secs())
            .collect();
        assert_eq!(ceilings, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(attempt_ceiling(0, S(10), S(300)), S(10));
    }

    #[test]
    fn jitter_scales_the_ceiling() {
        assert_eq!(next_attempt_delay(3, S(10), S(300), 0.0), S(0));
        assert_eq!(next_attempt_delay(3, S(10), S(300), 0.5), S(20));
        assert_eq!(next_attempt_delay(3, S(10), S(300), 1.0), S(40));
        assert_eq!(next_attempt_delay(3, S(10), S(300), 7.0), S(40));
        assert_eq!(next_attempt_delay(3, S(10), S(300), -1.0), S(0));
        assert_eq!(next_attempt_delay(3, S(10), S(300), f64::NAN), S(40));
    }

    #[test]
    fn base_above_cap_gives_cap() {
        assert_eq!(attempt_ceiling(1, S(100), S(5)), S(5));
    }

    #[test]
    fn huge_values_saturate_at_cap() {
        assert_eq!(attempt_ceiling(u32::MAX, S(1), S(3600)), S(3600));
        assert_eq!(attempt_ceiling(200, Duration::from_nanos(1), S(7)), S(7));
        assert_eq!(
            attempt_ceiling(2, Duration::MAX, Duration::MAX),
            Duration::MAX
        );
        assert_eq!(
            next_attempt_delay(u32::MAX, Duration::MAX, Duration::MAX, 1.0),
            Duration::MAX
        );
        assert!(next_attempt_delay(u32::MAX, S(1), S(60), 0.5) <= S(30));
    }

    #[test]
    fn tiny_base_keeps_doubling_past_32_attempts() {
        let base = Duration::from_nanos(1);
        assert_eq!(
            attempt_ceiling(41, base, Duration::MAX),
            Duration::from_nanos(1 << 40)
        );
    }

    #[test]
    fn a_day_with_10s_base_and_1h_cap() {
        // Waits 10+20+…+2560 = 5110 s, then (86400 - 5110) / 3600 = 22 more waits of 1 h.
        assert_eq!(attempts_for_horizon(S(10), S(3600), S(86_400)), 1 + 9 + 22);
    }

    #[test]
    fn horizon_edge_cases() {
        assert_eq!(attempts_for_horizon(S(10), S(60), Duration::ZERO), 1);
        assert_eq!(attempts_for_horizon(S(10), S(60), S(9)), 1);
        assert_eq!(attempts_for_horizon(S(10), S(60), S(10)), 2);
        assert_eq!(attempts_for_horizon(S(0), S(60), S(10)), u32::MAX);
        assert_eq!(attempts_for_horizon(S(10), S(0), S(10)), u32::MAX);
        assert_eq!(
            attempts_for_horizon(
                Duration::from_nanos(1),
                Duration::from_nanos(1),
                Duration::MAX
            ),
            u32::MAX
        );
        assert_eq!(
            attempts_for_horizon(Duration::MAX, Duration::MAX, Duration::MAX),
            2
        );
    }

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..100_000_000_000).prop_map(Duration::from_nanos),
            (0u64..100_000).prop_map(Duration::from_secs),
            any::<u64>().prop_map(Duration::from_secs),
            Just(Duration::MAX),
        ]
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_cap_nor_ceiling(
            attempt in any::<u32>(), base in duration(), cap in duration(), jitter in any::<f64>(),
        ) {
            let delay = next_attempt_delay(attempt, base, cap, jitter);
            prop_assert!(delay <= cap);
            prop_assert!(delay <= attempt_ceiling(attempt, base, cap));
        }

        #[test]
        fn ceiling_is_non_decreasing(attempt in any::<u32>(), base in duration(), cap in duration()) {
            let next = attempt.saturating_add(1);
            prop_assert!(attempt_ceiling(attempt, base, cap) <= attempt_ceiling(next, base, cap));
        }

        #[test]
        fn delay_is_non_decreasing_in_jitter(
            attempt in 0u32..80, base in duration(), cap in duration(), a in 0.0f64..1.0, b in 0.0f64..1.0,
        ) {
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(
                next_attempt_delay(attempt, base, cap, low) <= next_attempt_delay(attempt, base, cap, high)
            );
        }

        #[test]
        fn ceiling_is_base_times_power_of_two_below_cap(attempt in 1u32..50, base_ms in 1u64..10_000) {
            let expected = u128::from(base_ms) * 1_000_000 * (1u128 << (attempt - 1));
            let ceiling = attempt_ceiling(attempt, Duration::from_millis(base_ms), Duration::MAX);
            prop_assert_eq!(ceiling.as_nanos(), expected);
        }

        #[test]
        fn horizon_count_is_exact(base_s in 1u64..600, cap_s in 1u64..7_200, horizon_s in 0u64..200_000) {
            let (base, cap, horizon) = (S(base_s), S(cap_s), S(horizon_s));
            let n = attempts_for_horizon(base, cap, horizon);
            prop_assert!(n >= 1);
            // The waits before attempts 2..=n fit; one more wait would not.
            let used: Duration = (1..n).map(|k| attempt_ceiling(k, base, cap)).sum();
            prop_assert!(used <= horizon);
            prop_assert!(used + attempt_ceiling(n, base, cap) > horizon);
        }

        #[test]
        fn horizon_count_grows_with_horizon(base in duration(), cap in duration(), a in duration(), b in duration()) {
            let (short, long) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(attempts_for_horizon(base, cap, short) <= attempts_for_horizon(base, cap, long));
        }
    }
}
