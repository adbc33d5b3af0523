//! The task timeline as the engine sees it: what a step observed upstream
//! ([`StepTrace`]) and the entries the recorder appends for it
//! ([`events_for`]), in the same transaction as the step's outcome
//! (`TaskChange::events`; docs/design.md, "Task timeline").
//!
//! A submit may make several HTTP attempts inside the Apimart client (its own
//! retries, e.g. after a 429). The client reports each attempt to its
//! [`apimart_client::CallObserver`]; the pacing observer passes it to
//! [`note_attempt`], which files it under the step that is running (a
//! task-local set by [`observe`]), so each attempt gets an entry of its own.

use std::cell::RefCell;
use std::time::Instant;

use apimart_client::ApimartError;
use modelgen_persistence::{EventKind, NewTaskEvent};

use crate::CODE_UPSTREAM;
use crate::outcome::{SnoozeReason, StepOutcome};

/// One HTTP attempt of an upstream call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAttempt {
    /// The HTTP status, when an answer arrived.
    pub http_status: Option<i32>,
    /// The attempt's error, if it failed.
    pub error: Option<String>,
    /// Milliseconds from the previous attempt's end (or the call's start).
    pub latency_ms: i64,
}

/// What one upstream call of a step saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallTrace {
    /// Each HTTP attempt the client reported, in order (empty when the
    /// generator reports none, e.g. a test double).
    pub attempts: Vec<UpstreamAttempt>,
    /// Milliseconds the whole call took.
    pub latency_ms: i64,
    /// The call's final error: its HTTP status (when known) and text.
    pub error: Option<(Option<i32>, String)>,
}

/// What a step observed, for its timeline entries. Filled by the step as it
/// goes; read by the recorder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepTrace {
    /// The submit attempt number (`submit_attempts` after the intent write).
    pub submit_attempt: Option<i32>,
    /// The submit call, when the step made one.
    pub submit: Option<CallTrace>,
    /// The status poll, when the step made one.
    pub poll: Option<CallTrace>,
    /// Apimart's status as the poll reported it (`pending`, `completed`, …).
    pub upstream_status: Option<String>,
    /// The poll's progress, percent.
    pub progress: Option<i32>,
    /// Apimart's task id the step worked with.
    pub upstream_task_id: Option<String>,
}

/// The attempts of the call running in this task, filed by [`note_attempt`].
struct Attempts {
    list: Vec<UpstreamAttempt>,
    mark: Instant,
}

tokio::task_local! {
    static ATTEMPTS: RefCell<Attempts>;
}

/// Files one HTTP attempt under the upstream call running in the current
/// task ([`observe`]); does nothing outside one. Called by the Apimart
/// client's observer (crates/engine/src/pacing.rs).
pub fn note_attempt(status: Option<u16>, error: Option<&ApimartError>) {
    let _ = ATTEMPTS.try_with(|cell| {
        if let Ok(mut a) = cell.try_borrow_mut() {
            let now = Instant::now();
            let latency_ms = millis(now.duration_since(a.mark));
            a.mark = now;
            a.list.push(UpstreamAttempt {
                http_status: status.map(i32::from),
                error: error.map(ToString::to_string),
                latency_ms,
            });
        }
    });
}

/// Runs the upstream call `fut`, collecting the attempts it reports, and
/// returns its result with what it saw.
pub async fn observe<T>(
    fut: impl std::future::Future<Output = Result<T, ApimartError>>,
) -> (Result<T, ApimartError>, CallTrace) {
    let start = Instant::now();
    let cell = RefCell::new(Attempts {
        list: Vec::new(),
        mark: start,
    });
    let (result, cell) = ATTEMPTS
        .scope(cell, async move {
            let r = fut.await;
            let list = ATTEMPTS
                .try_with(|c| c.try_borrow_mut().map(|mut a| std::mem::take(&mut a.list)))
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            (r, list)
        })
        .await;
    let error = result
        .as_ref()
        .err()
        .map(|e| (e.http_status().map(i32::from), e.to_string()));
    let trace = CallTrace {
        attempts: cell,
        latency_ms: millis(start.elapsed()),
        error,
    };
    (result, trace)
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The entries the submit call adds: one `submit_failed` per failed attempt
/// the client retried, then the final attempt as `final_kind`.
fn submit_events(trace: &StepTrace, final_kind: EventKind) -> Vec<NewTaskEvent> {
    let Some(call) = &trace.submit else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let attempt = trace.submit_attempt;
    let (retried, last) = match call.attempts.split_last() {
        Some((last, retried)) => (retried, Some(last)),
        None => (&[][..], None),
    };
    for a in retried {
        let mut e = NewTaskEvent::new(EventKind::SubmitFailed);
        e.attempt = attempt;
        e.http_status = a.http_status;
        e.latency_ms = Some(a.latency_ms);
        out.push(match &a.error {
            Some(msg) => e.message(msg.clone()),
            None => e,
        });
    }
    let mut e = NewTaskEvent::new(final_kind);
    e.attempt = attempt;
    e.upstream_task_id = trace.upstream_task_id.clone();
    e.http_status = last
        .and_then(|a| a.http_status)
        .or(call.error.as_ref().and_then(|(s, _)| *s));
    e.latency_ms = Some(last.map_or(call.latency_ms, |a| a.latency_ms));
    out.push(match &call.error {
        Some((_, msg)) => e.message(msg.clone()),
        None => e,
    });
    out
}

/// The `polled` or `poll_failed` entry of the step's poll, if it made one.
fn poll_event(trace: &StepTrace) -> Option<NewTaskEvent> {
    let call = trace.poll.as_ref()?;
    Some(match &call.error {
        Some((status, msg)) => {
            let mut e = NewTaskEvent::new(EventKind::PollFailed);
            e.upstream_task_id = trace.upstream_task_id.clone();
            e.http_status = *status;
            e.latency_ms = Some(call.latency_ms);
            e.message(msg.clone())
        }
        None => {
            let mut e = NewTaskEvent::new(EventKind::Polled);
            e.upstream_task_id = trace.upstream_task_id.clone();
            e.upstream_status = trace.upstream_status.clone();
            e.progress = trace.progress;
            e.http_status = call.attempts.last().and_then(|a| a.http_status);
            e.latency_ms = Some(call.latency_ms);
            e
        }
    })
}

/// The timeline entries that record `outcome` (pure), in order: what the
/// step's upstream calls saw, then what became of the task. `replica` is the
/// worker's lease owner. Empty for outcomes that write nothing
/// ([`StepOutcome::Release`], [`StepOutcome::LostLease`]).
pub fn events_for(outcome: &StepOutcome, trace: &StepTrace, replica: &str) -> Vec<NewTaskEvent> {
    let mut out = match outcome {
        StepOutcome::Release | StepOutcome::LostLease => return Vec::new(),
        StepOutcome::Submitted { .. } => submit_events(trace, EventKind::Submitted),
        StepOutcome::Snooze { reason, .. } => {
            let mut out = submit_events(trace, EventKind::SubmitFailed);
            out.extend(poll_event(trace));
            // A running or failed poll, and a failed submit, said it all already.
            let told = matches!(reason, SnoozeReason::Running | SnoozeReason::PollFailed)
                || (*reason == SnoozeReason::SubmitUnknown && trace.submit.is_some());
            if !told {
                out.push(NewTaskEvent::new(EventKind::Snoozed).message(reason.as_str()));
            }
            out
        }
        StepOutcome::Complete { images, .. } => {
            let mut out: Vec<NewTaskEvent> = poll_event(trace).into_iter().collect();
            out.push(
                NewTaskEvent::new(EventKind::Downloaded)
                    .message(format!("{} result image(s) stored", images.len())),
            );
            out.push(NewTaskEvent::new(EventKind::Completed));
            out
        }
        StepOutcome::Fail { message, .. } => {
            let mut out = submit_events(trace, EventKind::SubmitFailed);
            out.extend(poll_event(trace));
            let mut failed = NewTaskEvent::new(EventKind::Failed).message(message.clone());
            failed.error_code = Some(CODE_UPSTREAM);
            out.push(failed);
            out
        }
    };
    for e in &mut out {
        e.replica = Some(replica.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use modelgen_domain::Progress;

    fn kinds(events: &[NewTaskEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    fn at() -> chrono::DateTime<chrono::Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn a_submit_retried_after_a_429_lists_each_attempt() {
        let trace = StepTrace {
            submit_attempt: Some(1),
            submit: Some(CallTrace {
                attempts: vec![
                    UpstreamAttempt {
                        http_status: Some(429),
                        error: Some("rate limited".into()),
                        latency_ms: 5,
                    },
                    UpstreamAttempt {
                        http_status: Some(200),
                        error: None,
                        latency_ms: 7,
                    },
                ],
                latency_ms: 1012,
                error: None,
            }),
            upstream_task_id: Some("up_1".into()),
            ..StepTrace::default()
        };
        let out = StepOutcome::Submitted {
            external_id: "up_1".into(),
            first_poll_at: at(),
        };
        let events = events_for(&out, &trace, "r1");
        assert_eq!(kinds(&events), ["submit_failed", "submitted"]);
        assert_eq!(events[0].http_status, Some(429));
        assert_eq!(events[1].upstream_task_id.as_deref(), Some("up_1"));
        assert_eq!(events[1].latency_ms, Some(7));
        assert!(events.iter().all(|e| e.replica.as_deref() == Some("r1")));
    }

    #[test]
    fn a_failed_poll_is_one_entry_and_a_running_poll_another() {
        let failed = StepTrace {
            poll: Some(CallTrace {
                attempts: Vec::new(),
                latency_ms: 3,
                error: Some((Some(503), "HTTP 503".into())),
            }),
            ..StepTrace::default()
        };
        let snooze = StepOutcome::Snooze {
            until: at(),
            reason: SnoozeReason::PollFailed,
            progress: None,
            count_poll: true,
        };
        let events = events_for(&snooze, &failed, "r");
        assert_eq!(kinds(&events), ["poll_failed"]);
        assert_eq!(events[0].http_status, Some(503));
        let running = StepTrace {
            poll: Some(CallTrace::default()),
            upstream_status: Some("processing".into()),
            progress: Some(40),
            ..StepTrace::default()
        };
        let snooze = StepOutcome::Snooze {
            until: at(),
            reason: SnoozeReason::Running,
            progress: Some(Progress::clamped(40)),
            count_poll: true,
        };
        let events = events_for(&snooze, &running, "r");
        assert_eq!(kinds(&events), ["polled"]);
        assert_eq!(events[0].progress, Some(40));
    }

    #[test]
    fn completion_and_failure_end_the_timeline() {
        let trace = StepTrace {
            poll: Some(CallTrace::default()),
            upstream_status: Some("completed".into()),
            progress: Some(100),
            ..StepTrace::default()
        };
        let done = StepOutcome::Complete {
            images: Vec::new(),
            progress: Progress::clamped(100),
            cost_micros: None,
        };
        assert_eq!(
            kinds(&events_for(&done, &trace, "r")),
            ["polled", "downloaded", "completed"]
        );
        let fail = StepOutcome::Fail {
            kind: "timeout",
            message: "timeout".into(),
            alert: false,
        };
        let events = events_for(&fail, &StepTrace::default(), "r");
        assert_eq!(kinds(&events), ["failed"]);
        assert_eq!(events[0].error_code, Some(CODE_UPSTREAM));
        assert!(events_for(&StepOutcome::Release, &trace, "r").is_empty());
    }

    #[test]
    fn other_snoozes_say_why() {
        let out = StepOutcome::Snooze {
            until: at(),
            reason: SnoozeReason::StepTimeout,
            progress: None,
            count_poll: false,
        };
        let events = events_for(&out, &StepTrace::default(), "r");
        assert_eq!(kinds(&events), ["snoozed"]);
        assert_eq!(events[0].message.as_deref(), Some("step_timeout"));
    }

    #[tokio::test]
    async fn observe_collects_the_attempts_noted_inside_it() {
        let (r, trace) = observe(async {
            note_attempt(Some(429), None);
            note_attempt(Some(200), None);
            Ok::<_, ApimartError>(1)
        })
        .await;
        assert_eq!(r.ok(), Some(1));
        let statuses: Vec<_> = trace.attempts.iter().map(|a| a.http_status).collect();
        assert_eq!(statuses, [Some(429), Some(200)]);
        // Outside a call nothing is filed (and nothing panics).
        note_attempt(Some(500), None);
    }
}
