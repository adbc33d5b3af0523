//! Task types, states and the pure transition function (docs/design.md, "The state machine").
//!
//! ```text
//! submitted ──▶ processing ──▶ completed
//!     │              │
//!     ├──────────────┴──▶ failed
//!     └──────────────┴──▶ cancelled
//! ```
//! Progress only grows, terminal states never change, every transition moves
//! `updated_at` forward, and entering a terminal state sets `completed_at`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// An enum value outside the accepted set (e.g. an unknown `angle`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not one of: {expected}")]
pub struct ParseEnumError {
    /// The rejected input, truncated to 64 characters.
    pub value: String,
    /// The accepted values, comma-separated.
    pub expected: &'static str,
}

impl ParseEnumError {
    fn new(value: &str, expected: &'static str) -> Self {
        ParseEnumError {
            value: value.chars().take(64).collect(),
            expected,
        }
    }
}

/// Declares a string-backed enum with `as_str`, `Display`, `FromStr` and serde
/// in its lowercase wire form.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire form (also the database form).
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError::new(s, concat!($($text, " "),+).trim_ascii_end())),
                }
            }
        }
    };
}

wire_enum!(
    /// The three jobs (README, "modelgen").
    TaskType {
        /// F1: a user's own model from a front photo and body measurements.
        Default => "default",
        /// F2: an edit of a completed model.
        Edit => "edit",
        /// F3: garments put on a completed model, seen from one angle.
        Outfit => "outfit",
    }
);

wire_enum!(
    /// Where a task is in its lifecycle.
    TaskStatus {
        /// Accepted and stored; not yet known to be running upstream.
        Submitted => "submitted",
        /// Running upstream; `progress` moves.
        Processing => "processing",
        /// Finished with an image. Terminal.
        Completed => "completed",
        /// Finished without an image (`error_code`, `error_message`). Terminal.
        Failed => "failed",
        /// Cancelled by a client. Terminal.
        Cancelled => "cancelled",
    }
);

wire_enum!(
    /// The camera angle of an outfit picture.
    Angle {
        /// Seen from the front.
        Front => "front",
        /// Seen from the side.
        Side => "side",
        /// Seen from the back.
        Back => "back",
    }
);

impl TaskType {
    /// Whether a completed task of this type can serve as the base model of an edit or outfit.
    pub fn can_be_base_model(&self) -> bool {
        matches!(self, TaskType::Default | TaskType::Edit)
    }
}

impl TaskStatus {
    /// `completed`, `failed` and `cancelled` never change again.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

/// Progress in percent, 0 to 100 inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Progress(u8);

impl Progress {
    /// 0 %.
    pub const ZERO: Progress = Progress(0);
    /// 100 %.
    pub const DONE: Progress = Progress(100);

    /// Any integer clamped into 0..=100 (upstream values are not trusted).
    pub fn clamped(value: i64) -> Self {
        Progress(value.clamp(0, 100) as u8)
    }

    /// The percentage.
    pub fn get(&self) -> u8 {
        self.0
    }
}

/// The part of a task the state machine governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskState {
    /// Lifecycle status.
    pub status: TaskStatus,
    /// Progress in percent; never decreases.
    pub progress: Progress,
    /// Last change, UTC.
    pub updated_at: DateTime<Utc>,
    /// When a terminal state was entered, UTC; `None` while running.
    pub completed_at: Option<DateTime<Utc>>,
}

impl TaskState {
    /// A freshly created task: `submitted`, 0 %.
    pub fn new(now: DateTime<Utc>) -> Self {
        TaskState {
            status: TaskStatus::Submitted,
            progress: Progress::ZERO,
            updated_at: now,
            completed_at: None,
        }
    }
}

/// Something that happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    /// Upstream reports the task running with this progress (`pending` counts as 0 %).
    Progressed(Progress),
    /// Upstream finished and our images are stored.
    Completed,
    /// The task failed (upstream error, timeout, download failure…).
    Failed,
    /// A client cancelled the task.
    Cancelled,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The task is terminal; nothing changes it any more.
    #[error("task is already {0}")]
    Terminal(TaskStatus),
    /// `completed` is only reachable from `processing`.
    #[error("cannot go from {from} to completed without processing")]
    NotProcessing {
        /// The status the task was in.
        from: TaskStatus,
    },
}

/// The smallest step `updated_at` moves by, so that every transition is visible
/// even when the clock has not advanced (or went backwards) since the last one.
/// One millisecond survives every backend's timestamp precision.
pub const MIN_UPDATE_STEP: TimeDelta = TimeDelta::milliseconds(1);

/// A timestamp as every API and callback shows it: RFC 3339, UTC, with
/// milliseconds, e.g. `2026-11-29T11:35:33.123Z` (README, "API").
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The `updated_at` of a change made at `now` to a row last changed at
/// `previous`: `now`, but always at least [`MIN_UPDATE_STEP`] after `previous`,
/// so every change is visible even when the clock stands still or goes back.
pub fn next_update_stamp(previous: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    now.max(previous + MIN_UPDATE_STEP)
}

/// Applies `event` to `state` at time `now`.
///
/// Returns the new state, or the unchanged `state` when the event changes
/// nothing (a progress report that is not higher than the current one while
/// already processing). A completion from `submitted` is rejected: the caller
/// reports progress first, so the task passes through `processing`.
///
/// # Errors
/// [`TransitionError::Terminal`] for any event on a terminal task,
/// [`TransitionError::NotProcessing`] for `Completed` from `submitted`.
pub fn transition(
    state: &TaskState,
    event: TaskEvent,
    now: DateTime<Utc>,
) -> Result<TaskState, TransitionError> {
    if state.status.is_terminal() {
        return Err(TransitionError::Terminal(state.status));
    }
    let stamp = next_update_stamp(state.updated_at, now);
    let next = match event {
        TaskEvent::Progressed(p) => {
            if state.status == TaskStatus::Processing && p <= state.progress {
                return Ok(*state);
            }
            TaskState {
                status: TaskStatus::Processing,
                progress: p.max(state.progress),
                updated_at: stamp,
                completed_at: None,
            }
        }
        TaskEvent::Completed => {
            if state.status != TaskStatus::Processing {
                return Err(TransitionError::NotProcessing { from: state.status });
            }
            TaskState {
                status: TaskStatus::Completed,
                progress: Progress::DONE,
                updated_at: stamp,
                completed_at: Some(stamp),
            }
        }
        TaskEvent::Failed | TaskEvent::Cancelled => TaskState {
            status: if event == TaskEvent::Failed {
                TaskStatus::Failed
            } else {
                TaskStatus::Cancelled
            },
            progress: state.progress,
            updated_at: stamp,
            completed_at: Some(stamp),
        },
    };
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn happy_path_passes_through_processing() {
        let s = TaskState::new(t0());
        assert_eq!(
            transition(&s, TaskEvent::Completed, t0()),
            Err(TransitionError::NotProcessing {
                from: TaskStatus::Submitted
            })
        );
        let p = transition(&s, TaskEvent::Progressed(Progress::clamped(40)), t0()).unwrap();
        assert_eq!(p.status, TaskStatus::Processing);
        let c = transition(&p, TaskEvent::Completed, t0()).unwrap();
        assert_eq!(c.status, TaskStatus::Completed);
        assert_eq!(c.progress, Progress::DONE);
        assert_eq!(c.completed_at, Some(c.updated_at));
        assert!(c.updated_at > p.updated_at && p.updated_at > s.updated_at);
    }

    #[test]
    fn enums_parse_their_wire_form_only() {
        for a in Angle::ALL {
            assert_eq!(a.as_str().parse::<Angle>(), Ok(*a));
        }
        let err = "top".parse::<Angle>().unwrap_err();
        assert_eq!(err.expected, "front side back");
        assert!("Front".parse::<Angle>().is_err());
        assert_eq!(
            serde_json::to_string(&TaskStatus::Cancelled).unwrap(),
            "\"cancelled\""
        );
    }

    fn event() -> impl Strategy<Value = TaskEvent> {
        prop_oneof![
            (0i64..=120).prop_map(|p| TaskEvent::Progressed(Progress::clamped(p))),
            Just(TaskEvent::Completed),
            Just(TaskEvent::Failed),
            Just(TaskEvent::Cancelled),
        ]
    }

    proptest! {
        /// Seed property 7: status transitions only along the machine.
        #[test]
        fn status_transitions_only_along_the_machine(
            events in proptest::collection::vec((event(), -5_000i64..5_000), 0..40)
        ) {
            let mut state = TaskState::new(t0());
            let mut clock = t0();
            for (ev, dt_ms) in events {
                clock += TimeDelta::milliseconds(dt_ms);
                let before = state;
                match transition(&state, ev, clock) {
                    Ok(next) => {
                        let allowed = matches!(
                            (before.status, next.status),
                            (TaskStatus::Submitted, TaskStatus::Processing | TaskStatus::Failed | TaskStatus::Cancelled)
                                | (TaskStatus::Processing, TaskStatus::Processing | TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
                        );
                        prop_assert!(allowed, "{:?} -> {:?}", before.status, next.status);
                        prop_assert!(next.progress >= before.progress, "progress decreased");
                        if next != before {
                            prop_assert!(next.updated_at > before.updated_at, "updated_at did not move");
                        }
                        prop_assert_eq!(next.status.is_terminal(), next.completed_at.is_some());
                        if next.status == TaskStatus::Completed {
                            prop_assert_eq!(next.progress, Progress::DONE);
                        }
                        state = next;
                    }
                    Err(TransitionError::Terminal(s)) => {
                        prop_assert!(before.status.is_terminal());
                        prop_assert_eq!(s, before.status);
                    }
                    Err(TransitionError::NotProcessing { from }) => {
                        prop_assert_eq!(ev, TaskEvent::Completed);
                        prop_assert_eq!(from, TaskStatus::Submitted);
                    }
                }
            }
        }

        #[test]
        fn terminal_states_never_change(ev in event(), which in 0usize..3, dt in 0i64..10_000) {
            let terminal = [TaskStatus::Completed, TaskStatus::Failed, TaskStatus::Cancelled][which];
            let state = TaskState { status: terminal, progress: Progress::clamped(50), updated_at: t0(), completed_at: Some(t0()) };
            prop_assert_eq!(
                transition(&state, ev, t0() + TimeDelta::milliseconds(dt)),
                Err(TransitionError::Terminal(terminal))
            );
        }

        #[test]
        fn progress_clamps_any_integer(v in any::<i64>()) {
            let p = Progress::clamped(v);
            prop_assert!(p.get() <= 100);
        }
    }
}
