//! Exponential backoff with jitter, as pure functions.
//!
//! The engine's schedules (upstream retries: base 1 s, cap 32 s; polling;
//! callback redelivery) all compute their waits here, so the arithmetic is
//! property-tested once: never above the cap, never overflowing, never
//! shrinking as attempts grow. Randomness is the caller's: pass a number in
//! `[0, 1)` from any source, which keeps these functions deterministic.

use std::time::Duration;

/// The delay before retry number `attempt` (0 for the first retry):
/// `min(cap, base · 2^attempt)`.
///
/// Saturating: huge attempts give `cap` rather than overflowing, and the
/// result never decreases as `attempt` grows. A zero `base` gives zero.
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    if base.is_zero() {
        return Duration::ZERO;
    }
    // Doubling a non-zero duration reaches `Duration::MAX` (about 2^94 ns)
    // within ~95 steps, and `cap` no later, so the loop is short for any
    // `attempt` even though `attempt` can be `u32::MAX`.
    let mut delay = base;
    for _ in 0..attempt {
        if delay >= cap {
            break;
        }
        delay = delay.saturating_mul(2);
    }
    delay.min(cap)
}

/// `delay` scaled by `0.5 + jitter / 2`, i.e. a uniformly spread point of
/// `[delay / 2, delay)` when `jitter` is uniform in `[0, 1)`.
///
/// This is "equal jitter": half the delay is kept so waits stay meaningful,
/// half is randomised so that clients retrying together spread out.
/// `jitter` outside `[0, 1)` is clamped into it (NaN counts as 0). Computed in
/// integer nanoseconds, rounded down, so it cannot overflow or panic for any
/// `delay`; a zero delay stays zero.
pub fn with_jitter(delay: Duration, jitter: f64) -> Duration {
    const HALF: u64 = 1 << 31;
    // Fixed-point factor in [2^31, 2^32): 2^32 · (0.5 + jitter / 2).
    // `as` saturates and maps NaN to 0, and `min` keeps the factor below 1.
    let extra = ((jitter * HALF as f64) as u64).min(HALF - 1);
    let factor = u128::from(HALF + extra);
    // At most ~2^94 · 2^32 = 2^126: fits in u128.
    let nanos = (delay.as_nanos() * factor) >> 32;
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    let subsec = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, subsec)
}

/// [`backoff_delay`] followed by [`with_jitter`]: the wait before retry
/// `attempt`, in `[d / 2, d)` where `d = min(cap, base · 2^attempt)`.
pub fn backoff_delay_with_jitter(
    attempt: u32,
    base: Duration,
    cap: Duration,
    jitter: f64,
) -> Duration {
    with_jitter(backoff_delay(attempt, base, cap), jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_from_base_up_to_cap() {
        let cap = Duration::from_secs(32);
        let delays: Vec<u64> = (0..8).map(|a| backoff_delay(a, S, cap).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 32, 32]);
        assert_eq!(backoff_delay(u32::MAX, S, cap), cap);
        assert_eq!(backoff_delay(u32::MAX, S, Duration::MAX), Duration::MAX);
        assert_eq!(backoff_delay(u32::MAX, Duration::ZERO, cap), Duration::ZERO);
        assert_eq!(
            backoff_delay(3, Duration::from_secs(10), S),
            S,
            "cap below base"
        );
    }

    #[test]
    fn jitter_keeps_half_and_randomises_half() {
        let d = Duration::from_secs(10);
        assert_eq!(with_jitter(d, 0.0), Duration::from_secs(5));
        assert_eq!(with_jitter(d, 0.5), Duration::from_millis(7500));
        assert!(with_jitter(d, 0.999_999) < d);
        assert_eq!(with_jitter(d, f64::NAN), Duration::from_secs(5));
        assert_eq!(with_jitter(d, -3.0), Duration::from_secs(5));
        assert!(with_jitter(d, 7.0) < d);
        assert_eq!(with_jitter(Duration::ZERO, 0.9), Duration::ZERO);
        assert!(with_jitter(Duration::MAX, 0.999) < Duration::MAX);
    }

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..=3_600_000).prop_map(Duration::from_millis),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            Just(Duration::MAX),
            Just(Duration::ZERO),
        ]
    }

    proptest! {
        #[test]
        fn backoff_never_exceeds_cap_for_any_attempt(
            attempt in any::<u32>(), base in duration(), cap in duration(),
        ) {
            prop_assert!(backoff_delay(attempt, base, cap) <= cap);
        }

        #[test]
        fn backoff_is_non_decreasing_in_attempt(
            a in any::<u32>(), b in any::<u32>(), base in duration(), cap in duration(),
        ) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(backoff_delay(lo, base, cap) <= backoff_delay(hi, base, cap));
            prop_assert!(backoff_delay(lo, base, cap) <= backoff_delay(lo.saturating_add(1), base, cap));
        }

        #[test]
        fn backoff_is_base_times_two_to_the_attempt_below_the_cap(
            attempt in 0u32..40, base_ms in 1u64..10_000,
        ) {
            let base = Duration::from_millis(base_ms);
            let exact = u128::from(base_ms) << attempt;
            let got = backoff_delay(attempt, base, Duration::MAX);
            prop_assert_eq!(got.as_millis(), exact);
        }

        #[test]
        fn jitter_stays_within_half_to_full_delay(delay in duration(), jitter in 0.0f64..1.0) {
            let j = with_jitter(delay, jitter);
            prop_assert!(j >= delay / 2, "{:?} < {:?} / 2", j, delay);
            if delay.is_zero() {
                prop_assert_eq!(j, Duration::ZERO);
            } else {
                prop_assert!(j < delay, "{:?} >= {:?}", j, delay);
            }
        }

        #[test]
        fn jitter_never_panics_and_never_exceeds_the_delay(delay in duration(), jitter in any::<f64>()) {
            prop_assert!(with_jitter(delay, jitter) <= delay);
        }

        #[test]
        fn jitter_grows_with_the_random_input(delay in duration(), a in 0.0f64..1.0, b in 0.0f64..1.0) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(with_jitter(delay, lo) <= with_jitter(delay, hi));
        }

        #[test]
        fn jittered_backoff_stays_within_the_cap(
            attempt in any::<u32>(), base in duration(), cap in duration(), jitter in 0.0f64..1.0,
        ) {
            let d = backoff_delay_with_jitter(attempt, base, cap, jitter);
            prop_assert!(d <= cap);
            prop_assert!(d >= backoff_delay(attempt, base, cap) / 2);
        }
    }
}
