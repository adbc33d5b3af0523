//! What a step decided, as a value. Steps (`submit`, `poll`, `complete` in
//! crates/engine/src/engine.rs) read and call out but write nothing of their
//! result; they return a [`StepOutcome`], and the engine's one recorder
//! (`Engine::record`) turns it into the fenced write ([`changes_for`]), the
//! metrics, the alerts and the outbox wake-up.

use chrono::{DateTime, Utc};
use modelgen_domain::{Progress, TaskEvent, TaskStatus};
use modelgen_persistence::{NewImage, TaskChange};

use crate::CODE_UPSTREAM;

/// How one step of a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// The task was already terminal when claimed: its lease is released,
    /// nothing else changes.
    Release,
    /// The upstream accepted the submit: store its id (which sets
    /// `submitted_at`) and poll first at `first_poll_at`.
    Submitted {
        /// Apimart's task id.
        external_id: String,
        /// When to poll first (the upstream's estimate, clamped).
        first_poll_at: DateTime<Utc>,
    },
    /// Come back to the task at `until` (the lease is released).
    Snooze {
        /// When the task is due again.
        until: DateTime<Utc>,
        /// Why, for logs and `task_snoozes_total{reason}`.
        reason: SnoozeReason,
        /// Progress to show meanwhile (moves `submitted` to `processing`).
        progress: Option<Progress>,
        /// Count a status poll (`poll_count`, which drives the poll backoff).
        count_poll: bool,
    },
    /// The upstream finished and every result image is stored.
    Complete {
        /// The stored images, inserted in the completing transaction.
        images: Vec<NewImage>,
        /// The upstream's last progress (shown while passing through
        /// `processing`, which the state machine requires).
        progress: Progress,
        /// What the upstream charged, millionths of the balance unit
        /// ([`cost_micros`]), stored on the task.
        cost_micros: Option<i64>,
    },
    /// The task fails: `error_code` 1002 with `message`.
    Fail {
        /// Metrics label (`tasks_finished_total{error_kind}`) and alert kind.
        kind: &'static str,
        /// The task's `error_message`.
        message: String,
        /// Raise an operator alert of `kind` too.
        alert: bool,
    },
    /// The lease was lost during the step: another worker owns the task now,
    /// nothing is written.
    LostLease,
}

/// Why a task was snoozed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnoozeReason {
    /// The upstream is still running the task: poll again later.
    Running,
    /// A status poll failed transiently (429, 5xx, timeout, connection).
    PollFailed,
    /// A submit's outcome is unknown: re-send it with the same key later.
    SubmitUnknown,
    /// A result download failed transiently after its in-step retries.
    DownloadFailed,
    /// The step ran past the step timeout.
    StepTimeout,
    /// The step panicked.
    Panicked,
    /// The process is shutting down: due again at once, for any replica.
    Shutdown,
}

impl SnoozeReason {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            SnoozeReason::Running => "running",
            SnoozeReason::PollFailed => "poll_failed",
            SnoozeReason::SubmitUnknown => "submit_unknown",
            SnoozeReason::DownloadFailed => "download_failed",
            SnoozeReason::StepTimeout => "step_timeout",
            SnoozeReason::Panicked => "panicked",
            SnoozeReason::Shutdown => "shutdown",
        }
    }
}

/// An upstream cost (`cost`, in the account's balance unit; docs/apimart.md,
/// "Cost") in millionths, rounded; `None` for a missing, negative or
/// non-finite one, and saturating at `i64::MAX`.
pub fn cost_micros(cost: Option<f64>) -> Option<i64> {
    let micros = (cost? * 1_000_000.0).round();
    if !micros.is_finite() || micros < 0.0 {
        return None;
    }
    // `as` saturates: a cost over i64::MAX millionths becomes i64::MAX.
    Some(micros as i64)
}

/// The fenced writes that record `outcome` for a task now in `status`, in
/// order (pure). Empty for [`StepOutcome::Release`] (a lease release, not a
/// change) and [`StepOutcome::LostLease`] (nothing to write). Completing a
/// task still `submitted` passes through `processing` first, as the state
/// machine requires. Every last change releases the lease; terminal ones
/// enqueue the callback when `callbacks_enabled`.
pub fn changes_for(
    outcome: &StepOutcome,
    status: TaskStatus,
    callbacks_enabled: bool,
) -> Vec<TaskChange> {
    match outcome {
        StepOutcome::Release | StepOutcome::LostLease => Vec::new(),
        StepOutcome::Submitted {
            external_id,
            first_poll_at,
        } => vec![TaskChange {
            external_task_id: Some(external_id.clone()),
            next_run_at: Some(*first_poll_at),
            release_lease: true,
            ..TaskChange::default()
        }],
        StepOutcome::Snooze {
            until,
            progress,
            count_poll,
            ..
        } => vec![TaskChange {
            event: progress.map(TaskEvent::Progressed),
            count_poll: *count_poll,
            next_run_at: Some(*until),
            release_lease: true,
            ..TaskChange::default()
        }],
        StepOutcome::Complete {
            images,
            progress,
            cost_micros,
        } => {
            let mut changes = Vec::with_capacity(2);
            if status == TaskStatus::Submitted {
                changes.push(TaskChange {
                    event: Some(TaskEvent::Progressed(*progress)),
                    ..TaskChange::default()
                });
            }
            changes.push(TaskChange {
                event: Some(TaskEvent::Completed),
                images: images.clone(),
                cost_micros: *cost_micros,
                count_poll: true,
                enqueue_callback: callbacks_enabled,
                release_lease: true,
                ..TaskChange::default()
            });
            changes
        }
        StepOutcome::Fail { message, .. } => vec![TaskChange {
            event: Some(TaskEvent::Failed),
            error: Some((CODE_UPSTREAM, crate::decide::bounded_error_message(message))),
            enqueue_callback: callbacks_enabled,
            release_lease: true,
            ..TaskChange::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn submitted_stores_the_id_and_the_first_poll() {
        let out = StepOutcome::Submitted {
            external_id: "up_1".into(),
            first_poll_at: at(),
        };
        let changes = changes_for(&out, TaskStatus::Submitted, true);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].external_task_id.as_deref(), Some("up_1"));
        assert_eq!(changes[0].next_run_at, Some(at()));
        assert!(changes[0].release_lease);
        assert!(changes[0].event.is_none());
        assert!(!changes[0].enqueue_callback);
    }

    #[test]
    fn a_snooze_reschedules_and_may_count_a_poll() {
        let out = StepOutcome::Snooze {
            until: at(),
            reason: SnoozeReason::Running,
            progress: Some(Progress::clamped(40)),
            count_poll: true,
        };
        let c = &changes_for(&out, TaskStatus::Submitted, true)[0];
        assert_eq!(c.next_run_at, Some(at()));
        assert_eq!(c.event, Some(TaskEvent::Progressed(Progress::clamped(40))));
        assert!(c.count_poll && c.release_lease && !c.enqueue_callback);
        let resend = StepOutcome::Snooze {
            until: at(),
            reason: SnoozeReason::SubmitUnknown,
            progress: None,
            count_poll: false,
        };
        let c = &changes_for(&resend, TaskStatus::Submitted, true)[0];
        assert!(c.event.is_none() && !c.count_poll && c.external_task_id.is_none());
    }

    #[test]
    fn completing_a_submitted_task_passes_through_processing() {
        let out = StepOutcome::Complete {
            images: Vec::new(),
            progress: Progress::clamped(100),
            cost_micros: Some(50_000),
        };
        let changes = changes_for(&out, TaskStatus::Submitted, true);
        assert_eq!(changes.len(), 2);
        assert_eq!(
            changes[0].event,
            Some(TaskEvent::Progressed(Progress::clamped(100)))
        );
        assert!(!changes[0].release_lease);
        assert_eq!(changes[1].event, Some(TaskEvent::Completed));
        assert!(changes[1].enqueue_callback && changes[1].release_lease);
        assert_eq!(changes[1].cost_micros, Some(50_000));
        let changes = changes_for(&out, TaskStatus::Processing, false);
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].enqueue_callback);
    }

    #[test]
    fn a_failure_stores_code_and_message_and_enqueues_the_callback() {
        let out = StepOutcome::Fail {
            kind: "bad_request",
            message: "apimart: no".into(),
            alert: false,
        };
        let c = &changes_for(&out, TaskStatus::Processing, true)[0];
        assert_eq!(c.event, Some(TaskEvent::Failed));
        assert_eq!(c.error, Some((CODE_UPSTREAM, "apimart: no".into())));
        assert!(c.enqueue_callback && c.release_lease);
    }

    #[test]
    fn costs_become_whole_millionths() {
        assert_eq!(cost_micros(Some(0.05)), Some(50_000));
        assert_eq!(cost_micros(Some(0.0000004)), Some(0));
        assert_eq!(cost_micros(Some(-1.0)), None);
        assert_eq!(cost_micros(Some(f64::NAN)), None);
        assert_eq!(cost_micros(Some(1e300)), Some(i64::MAX));
        assert_eq!(cost_micros(None), None);
    }

    #[test]
    fn release_and_lost_lease_write_nothing() {
        assert!(changes_for(&StepOutcome::Release, TaskStatus::Completed, true).is_empty());
        assert!(changes_for(&StepOutcome::LostLease, TaskStatus::Processing, true).is_empty());
    }
}
