//! The timed task lifecycle, as a pure function of the time since submit:
//! `pending` → `processing` (progress grows 1..=99) → a terminal state
//! (docs/apimart.md "Status": `pending`, `processing`, `completed`, `failed`, `cancelled`).

use std::time::Duration;

/// Share of a task's duration spent `pending`, in percent ("first ~10%" of the brief; upstream
/// queues a task briefly before work starts).
pub const PENDING_PERCENT: u128 = 10;

/// How a task ends once its duration has passed (persisted with the task).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    Complete,
    Fail,
    Cancel,
    /// Stays `processing` forever (the `never` fault).
    Never,
}

/// Upstream task status (docs/apimart.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub(crate) fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Status and progress (0..=100) of a task `elapsed` after submit.
///
/// Progress never decreases as `elapsed` grows and a terminal status never changes; the
/// property tests below check both.
pub(crate) fn phase_at(elapsed: Duration, duration: Duration, outcome: Outcome) -> (Status, u8) {
    let (e, d) = (elapsed.as_nanos(), duration.as_nanos());
    if e >= d && outcome != Outcome::Never {
        // A task whose duration is zero is terminal on its first poll and never reported
        // progress, so 0 keeps progress monotonic; otherwise it reached 99 before ending.
        let reached = if d == 0 { 0 } else { 99 };
        return match outcome {
            Outcome::Complete => (Status::Completed, 100),
            Outcome::Fail => (Status::Failed, reached),
            Outcome::Cancel => (Status::Cancelled, reached),
            Outcome::Never => (Status::Processing, 99),
        };
    }
    if d > 0 && e * 100 < d * PENDING_PERCENT {
        return (Status::Pending, 0);
    }
    // A zero duration only gets here for `Never`, which sits at 99.
    let percent = (e * 100).checked_div(d).map_or(99, |p| p.clamp(1, 99));
    (Status::Processing, u8::try_from(percent).unwrap_or(99))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn walks_pending_processing_completed() {
        let d = MS(1000);
        assert_eq!(phase_at(MS(0), d, Outcome::Complete), (Status::Pending, 0));
        assert_eq!(phase_at(MS(99), d, Outcome::Complete), (Status::Pending, 0));
        assert_eq!(
            phase_at(MS(500), d, Outcome::Complete),
            (Status::Processing, 50)
        );
        assert_eq!(
            phase_at(MS(999), d, Outcome::Complete),
            (Status::Processing, 99)
        );
        assert_eq!(
            phase_at(MS(1000), d, Outcome::Complete),
            (Status::Completed, 100)
        );
        assert_eq!(phase_at(MS(1000), d, Outcome::Fail), (Status::Failed, 99));
        assert_eq!(
            phase_at(MS(1000), d, Outcome::Cancel),
            (Status::Cancelled, 99)
        );
        assert_eq!(
            phase_at(MS(10_000_000), d, Outcome::Never),
            (Status::Processing, 99)
        );
        assert_eq!(
            phase_at(MS(0), MS(0), Outcome::Complete),
            (Status::Completed, 100)
        );
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Complete),
            Just(Outcome::Fail),
            Just(Outcome::Cancel),
            Just(Outcome::Never)
        ]
    }

    proptest! {
        #[test]
        fn progress_is_monotonic_and_terminal_is_final(
            d in 0u64..100_000, a in 0u64..200_000, b in 0u64..200_000, o in outcome()
        ) {
            let (early, late) = (a.min(b), a.max(b));
            let (s1, p1) = phase_at(MS(early), MS(d), o);
            let (s2, p2) = phase_at(MS(late), MS(d), o);
            prop_assert!(p1 <= p2);
            prop_assert!(p2 <= 100);
            if s1.is_terminal() {
                prop_assert_eq!(s1, s2);
            }
            if late >= d && o != Outcome::Never {
                prop_assert!(s2.is_terminal());
            }
        }
    }
}
