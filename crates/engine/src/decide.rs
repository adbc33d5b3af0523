//! The engine's decisions, as pure functions of their inputs (no clock, no
//! randomness, no I/O): what an upstream error means for a task, when to poll
//! next, how long a step may run, what a callback attempt leads to. The steps in crates/engine/src/engine.rs
//! call them and turn the answer into a [`crate::outcome::StepOutcome`]; the
//! tables are in docs/design.md, "The engine".

use std::time::Duration;

use apimart_client::ApimartError;
use modelgen_domain::{backoff_delay, with_jitter};

/// Longest wait before the first status poll, whatever Apimart estimates.
pub const MAX_FIRST_POLL_DELAY: Duration = Duration::from_secs(60);

/// Submits of one task whose outcome stayed unknown (a timeout, a broken
/// connection, a 2xx body that could not be decoded) before the task fails:
/// each is re-sent with the same `Idempotency-Key`, so an upstream that
/// honours it returns the task it created rather than charging again.
pub const MAX_SUBMIT_ATTEMPTS: i32 = 6;

/// Longest `Retry-After` a poll's snooze honours, like the pacer's own pause
/// ([`crate::pacing::MAX_RATE_LIMIT_PAUSE`]): a bogus or hostile value (an
/// HTTP date years ahead, `99999999`) cannot park a task past `TASK_TIMEOUT`.
pub const MAX_POLL_RETRY_AFTER: Duration = crate::pacing::MAX_RATE_LIMIT_PAUSE;

/// Longest upstream task id kept, bytes: the `external_task_id` column is
/// `VARCHAR(255)` on MySQL (migrations/mysql), and the client refuses longer
/// ids when it polls.
pub const MAX_UPSTREAM_ID_LEN: usize = 255;

/// Longest `error_message` stored for a failed task, characters: an upstream
/// error text is cut there (with `…`), so a 100 KB message cannot bloat the
/// row, the task view and the callback.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 1000;

/// Whether an upstream task id can be stored and polled: not empty, at most
/// [`MAX_UPSTREAM_ID_LEN`] bytes, no control characters (PostgreSQL refuses
/// NUL in text), not `.`/`..`. `Err` says why, for the task's `error_message`.
///
/// # Errors
/// The reason the id is unusable.
pub fn usable_upstream_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id == "." || id == ".." {
        return Err("apimart returned an unusable task id (empty, `.` or `..`)".into());
    }
    if id.len() > MAX_UPSTREAM_ID_LEN {
        return Err(format!(
            "apimart returned an unusable task id ({} bytes, over {MAX_UPSTREAM_ID_LEN})",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("apimart returned an unusable task id (control characters)".into());
    }
    Ok(())
}

/// `message` made safe to store and show: control characters (NUL, which
/// PostgreSQL refuses in text, escapes, line breaks) become spaces, and it is
/// cut to [`MAX_ERROR_MESSAGE_CHARS`] characters with a trailing `…`.
pub fn bounded_error_message(message: &str) -> String {
    let mut out: String = message
        .chars()
        .take(MAX_ERROR_MESSAGE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if message.chars().nth(MAX_ERROR_MESSAGE_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Which upstream call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `POST /images/generations` (with the client's own retries under the
    /// task's idempotency key).
    Submit,
    /// `GET /tasks/{id}` (one attempt; the engine reschedules).
    Poll,
}

/// What an upstream error means for the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The task fails with `kind` (its metrics label); `alert` raises an
    /// operator alert too (401/402: the account, not the task, is wrong).
    Fail {
        /// Short label ([`crate::engine::upstream_error_kind`]).
        kind: &'static str,
        /// Raise an operator alert.
        alert: bool,
    },
    /// The submit may have created an upstream task whose answer we lost:
    /// send it again later with the same `Idempotency-Key`.
    Resubmit,
    /// A transient failure of a poll: poll again later, no earlier than
    /// `at_least` when the upstream said so (`Retry-After`).
    PollLater {
        /// The upstream's `Retry-After`, if any.
        at_least: Option<Duration>,
    },
}

/// The Apimart error policy (README.md, "Apimart errors"):
///
/// | error | submit | poll |
/// |---|---|---|
/// | 401, 402 | fail + alert | fail + alert |
/// | 404 | fail | fail (`not_found`) |
/// | 400, 403, other 4xx, body `code` ≠ 200 | fail | fail |
/// | timeout, transport error after connecting, 2xx not decodable | re-send later, same key (at most [`MAX_SUBMIT_ATTEMPTS`]) | poll later (decode: fail) |
/// | 429, 5xx, connect error | fail (the client already retried under the key) | poll later |
///
/// `submit_attempts` is the task's count including the call that failed.
pub fn upstream_verdict(e: &ApimartError, call: Call, submit_attempts: i32) -> Verdict {
    let kind = crate::engine::upstream_error_kind(e);
    let fail = Verdict::Fail { kind, alert: false };
    match e {
        ApimartError::Unauthorized { .. } | ApimartError::InsufficientBalance { .. } => {
            Verdict::Fail { kind, alert: true }
        }
        _ => match call {
            Call::Submit => match e {
                ApimartError::Timeout
                | ApimartError::Transport { .. }
                | ApimartError::Decode { .. }
                    if submit_attempts < MAX_SUBMIT_ATTEMPTS =>
                {
                    Verdict::Resubmit
                }
                _ => fail,
            },
            Call::Poll => match e {
                ApimartError::RateLimited { .. }
                | ApimartError::Server { .. }
                | ApimartError::Timeout
                | ApimartError::Connect { .. }
                | ApimartError::Transport { .. } => Verdict::PollLater {
                    at_least: e.retry_after(),
                },
                _ => fail,
            },
        },
    }
}

/// When to poll a task first after the upstream accepted it: at the
/// upstream's `estimated_time`, clamped to `[poll_interval, max(poll_interval,
/// MAX_FIRST_POLL_DELAY)]`; `poll_interval` without an estimate.
pub fn first_poll_delay(estimate: Option<Duration>, poll_interval: Duration) -> Duration {
    estimate
        .unwrap_or(poll_interval)
        .clamp(poll_interval, MAX_FIRST_POLL_DELAY.max(poll_interval))
}

/// Wait before the next poll of a task polled `polls` times: exponential
/// backoff from `base` (doubling, at most `max`) with equal jitter (a point of
/// `[d / 2, d)` picked by `jitter` in `[0, 1)`), never under `base / 2`.
pub fn poll_delay(polls: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    with_jitter(backoff_delay(polls, base, max), jitter).max(base / 2)
}

/// Wait before a failed poll is tried again: [`poll_delay`], or the
/// upstream's `Retry-After` when that is longer.
pub fn poll_retry_delay(
    polls: u32,
    base: Duration,
    max: Duration,
    jitter: f64,
    at_least: Option<Duration>,
) -> Duration {
    let delay = poll_delay(polls, base, max, jitter);
    at_least.map_or(delay, |r| r.min(MAX_POLL_RETRY_AFTER).max(delay))
}

/// Wait before re-sending a submit whose outcome is unknown, after
/// `submit_attempts` tries: the poll backoff over the attempts, so a
/// struggling upstream is not hammered.
pub fn resubmit_delay(
    submit_attempts: i32,
    base: Duration,
    max: Duration,
    jitter: f64,
) -> Duration {
    poll_delay(
        u32::try_from(submit_attempts.max(0)).unwrap_or(0),
        base,
        max,
        jitter,
    )
}

/// The default step timeout for a lease of `lease`: the lease minus a fifth
/// (at least one second of margin when the lease allows it). A step that runs
/// longer is interrupted at its next upstream or download wait and the task
/// is snoozed.
pub fn default_step_timeout(lease: Duration) -> Duration {
    let margin = (lease / 5).max(Duration::from_secs(1).min(lease / 2));
    lease.saturating_sub(margin).max(Duration::from_millis(100))
}

/// What one callback delivery attempt leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackVerdict {
    /// The receiver answered 2xx.
    Delivered,
    /// Try again after `after`.
    Retry {
        /// Wait before the next attempt.
        after: Duration,
        /// Why this attempt failed (`HTTP 503`, a transport error).
        reason: String,
    },
    /// The attempts are spent: the row becomes `dead` (and an alert is raised).
    Dead {
        /// Why the last attempt failed.
        reason: String,
    },
}

/// The callback policy for attempt number `attempt` (1-based) that ended
/// with `result`: delivered; dead once `attempt >= max_attempts`; otherwise
/// retried after `backoff(attempt)`, or the receiver's `Retry-After` when
/// longer.
pub fn callback_outcome(
    result: &modelgen_callback::DeliveryResult,
    attempt: u32,
    max_attempts: u32,
    backoff: impl FnOnce(u32) -> Duration,
) -> CallbackVerdict {
    use modelgen_callback::DeliveryResult;
    let (reason, retry_after) = match result {
        DeliveryResult::Delivered { .. } => return CallbackVerdict::Delivered,
        DeliveryResult::Rejected {
            status,
            retry_after,
            ..
        } => (format!("HTTP {status}"), *retry_after),
        DeliveryResult::Failed { reason } => (reason.clone(), None),
    };
    if attempt >= max_attempts {
        return CallbackVerdict::Dead { reason };
    }
    let delay = backoff(attempt);
    CallbackVerdict::Retry {
        after: retry_after.map_or(delay, |r| r.max(delay)),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_retry_after_is_capped_and_never_overflows() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        let huge = poll_retry_delay(1, base, max, 0.5, Some(Duration::MAX));
        assert_eq!(huge, MAX_POLL_RETRY_AFTER);
        let small = poll_retry_delay(0, base, max, 0.0, Some(Duration::from_secs(7)));
        assert_eq!(small, Duration::from_secs(7));
    }

    #[test]
    fn unusable_upstream_ids_are_named() {
        assert!(usable_upstream_id("task_01ABC").is_ok());
        assert!(usable_upstream_id(&"x".repeat(MAX_UPSTREAM_ID_LEN)).is_ok());
        for bad in ["", ".", "..", "ctl\0x", "line\nbreak"] {
            assert!(usable_upstream_id(bad).is_err(), "{bad:?}");
        }
        let long = usable_upstream_id(&"x".repeat(MAX_UPSTREAM_ID_LEN + 1)).unwrap_err();
        assert!(long.contains("256 bytes"), "{long}");
    }

    #[test]
    fn error_messages_lose_control_characters_and_are_bounded() {
        assert_eq!(bounded_error_message("a\0b\nc"), "a b c");
        let long = bounded_error_message(&"é".repeat(MAX_ERROR_MESSAGE_CHARS + 5));
        assert_eq!(long.chars().count(), MAX_ERROR_MESSAGE_CHARS + 1);
        assert!(long.ends_with('…'));
        let exact = bounded_error_message(&"e".repeat(MAX_ERROR_MESSAGE_CHARS));
        assert!(!exact.ends_with('…'));
    }
    use proptest::prelude::*;

    fn server(status: u16) -> ApimartError {
        ApimartError::Server {
            status,
            message: "x".into(),
        }
    }

    fn decode() -> ApimartError {
        ApimartError::Decode {
            status: 200,
            body: "<html>".into(),
            reason: "not json".into(),
        }
    }

    #[test]
    fn account_errors_fail_with_an_alert_on_either_call() {
        for call in [Call::Submit, Call::Poll] {
            let e = ApimartError::Unauthorized {
                message: "bad key".into(),
            };
            assert_eq!(
                upstream_verdict(&e, call, 1),
                Verdict::Fail {
                    kind: "unauthorized",
                    alert: true
                }
            );
            let e = ApimartError::InsufficientBalance {
                message: "broke".into(),
            };
            assert_eq!(
                upstream_verdict(&e, call, 1),
                Verdict::Fail {
                    kind: "insufficient_balance",
                    alert: true
                }
            );
        }
    }

    #[test]
    fn a_garbled_2xx_submit_is_resent_until_the_attempts_run_out() {
        assert_eq!(
            upstream_verdict(&decode(), Call::Submit, 1),
            Verdict::Resubmit
        );
        assert_eq!(
            upstream_verdict(&decode(), Call::Submit, MAX_SUBMIT_ATTEMPTS - 1),
            Verdict::Resubmit
        );
        assert_eq!(
            upstream_verdict(&decode(), Call::Submit, MAX_SUBMIT_ATTEMPTS),
            Verdict::Fail {
                kind: "decode",
                alert: false
            }
        );
        assert_eq!(
            upstream_verdict(&ApimartError::Timeout, Call::Submit, 2),
            Verdict::Resubmit
        );
    }

    #[test]
    fn a_submit_answered_5xx_or_429_fails_after_the_clients_retries() {
        assert_eq!(
            upstream_verdict(&server(502), Call::Submit, 1),
            Verdict::Fail {
                kind: "server",
                alert: false
            }
        );
        let limited = ApimartError::RateLimited {
            retry_after: None,
            message: "slow".into(),
        };
        assert!(matches!(
            upstream_verdict(&limited, Call::Submit, 1),
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn transient_poll_failures_snooze_honouring_retry_after() {
        let limited = ApimartError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: "slow".into(),
        };
        assert_eq!(
            upstream_verdict(&limited, Call::Poll, 1),
            Verdict::PollLater {
                at_least: Some(Duration::from_secs(7))
            }
        );
        for e in [server(503), ApimartError::Timeout] {
            assert_eq!(
                upstream_verdict(&e, Call::Poll, 1),
                Verdict::PollLater { at_least: None }
            );
        }
        let gone = ApimartError::NotFound {
            message: "no".into(),
        };
        assert_eq!(
            upstream_verdict(&gone, Call::Poll, 1),
            Verdict::Fail {
                kind: "not_found",
                alert: false
            }
        );
        assert!(matches!(
            upstream_verdict(&decode(), Call::Poll, 1),
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn the_first_poll_comes_at_the_estimate() {
        let base = Duration::from_secs(2);
        assert_eq!(
            first_poll_delay(Some(Duration::from_secs(20)), base),
            Duration::from_secs(20)
        );
        assert_eq!(first_poll_delay(None, base), base);
        assert_eq!(
            first_poll_delay(Some(Duration::from_millis(10)), base),
            base
        );
        assert_eq!(
            first_poll_delay(Some(Duration::from_secs(3600)), base),
            MAX_FIRST_POLL_DELAY
        );
    }

    #[test]
    fn callbacks_retry_honouring_retry_after_until_their_attempts_run_out() {
        use modelgen_callback::DeliveryResult;
        let backoff = |_| Duration::from_secs(4);
        assert_eq!(
            callback_outcome(&DeliveryResult::Delivered { status: 204 }, 9, 3, backoff),
            CallbackVerdict::Delivered
        );
        let busy = DeliveryResult::Rejected {
            status: 503,
            retry_after: Some(Duration::from_secs(30)),
            body_excerpt: String::new(),
        };
        assert_eq!(
            callback_outcome(&busy, 1, 3, backoff),
            CallbackVerdict::Retry {
                after: Duration::from_secs(30),
                reason: "HTTP 503".into()
            }
        );
        let down = DeliveryResult::Failed {
            reason: "connection refused".into(),
        };
        assert_eq!(
            callback_outcome(&down, 2, 3, backoff),
            CallbackVerdict::Retry {
                after: Duration::from_secs(4),
                reason: "connection refused".into()
            }
        );
        assert_eq!(
            callback_outcome(&down, 3, 3, backoff),
            CallbackVerdict::Dead {
                reason: "connection refused".into()
            }
        );
    }

    #[test]
    fn the_default_step_timeout_leaves_a_margin_inside_the_lease() {
        assert_eq!(
            default_step_timeout(Duration::from_secs(60)),
            Duration::from_secs(48)
        );
        assert_eq!(
            default_step_timeout(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }

    /// One of every kind of upstream error, with arbitrary statuses,
    /// `Retry-After`s and body codes.
    fn any_error() -> impl Strategy<Value = ApimartError> {
        (
            0u8..12,
            100u16..600,
            proptest::option::of(0u64..120),
            0i64..1000,
        )
            .prop_map(|(which, status, secs, code)| {
                let message = "m".to_string();
                match which {
                    0 => ApimartError::BadRequest {
                        status,
                        message,
                        body: String::new(),
                    },
                    1 => ApimartError::Unauthorized { message },
                    2 => ApimartError::InsufficientBalance { message },
                    3 => ApimartError::Forbidden { message },
                    4 => ApimartError::NotFound { message },
                    5 => ApimartError::RateLimited {
                        retry_after: secs.map(Duration::from_secs),
                        message,
                    },
                    6 => server(500 + status % 100),
                    7 => ApimartError::Timeout,
                    8 => ApimartError::Connect { message },
                    9 => decode(),
                    10 => ApimartError::Upstream { code, message },
                    _ => ApimartError::Transport { message },
                }
            })
    }

    proptest! {
        /// A submit is re-sent only when the upstream may have acted on it,
        /// never when the answer was a refusal, and never past the cap;
        /// a poll is retried only when the same read may succeed later.
        #[test]
        fn verdicts_follow_the_errors_nature(e in any_error(), attempts in 1i32..20) {
            match upstream_verdict(&e, Call::Submit, attempts) {
                Verdict::Resubmit => {
                    prop_assert!(e.outcome_unknown());
                    prop_assert!(attempts < MAX_SUBMIT_ATTEMPTS);
                }
                Verdict::PollLater { .. } => prop_assert!(false, "a submit never polls"),
                Verdict::Fail { alert, .. } => prop_assert_eq!(
                    alert,
                    matches!(e, ApimartError::Unauthorized { .. } | ApimartError::InsufficientBalance { .. })
                ),
            }
            match upstream_verdict(&e, Call::Poll, attempts) {
                Verdict::Resubmit => prop_assert!(false, "a poll never re-submits"),
                Verdict::PollLater { at_least } => {
                    let transient = e.is_retryable()
                        || matches!(e, ApimartError::Transport { .. } | ApimartError::Server { .. });
                    prop_assert!(transient);
                    prop_assert_eq!(at_least, e.retry_after());
                }
                Verdict::Fail { .. } => {
                    let transient = matches!(
                        e,
                        ApimartError::Timeout | ApimartError::Connect { .. } | ApimartError::RateLimited { .. }
                    );
                    prop_assert!(!transient);
                }
            }
        }

        /// The first poll is never before the poll interval nor after the
        /// cap, and equals the estimate inside that range.
        #[test]
        fn first_poll_is_the_clamped_estimate(est in proptest::option::of(0u64..600_000), base in 1u64..30_000) {
            let base = Duration::from_millis(base);
            let got = first_poll_delay(est.map(Duration::from_millis), base);
            let hi = MAX_FIRST_POLL_DELAY.max(base);
            prop_assert!(got >= base && got <= hi);
            if let Some(e) = est.map(Duration::from_millis) && e >= base && e <= hi {
                prop_assert_eq!(got, e);
            }
        }

        /// Later polls stay within [base/2, max], and at a fixed jitter
        /// they never shrink as polls accumulate.
        #[test]
        fn poll_backoff_is_bounded_and_grows(polls in 0u32..64, base in 1u64..10_000, extra in 0u64..100_000, jitter in 0.0f64..1.0) {
            let base = Duration::from_millis(base);
            let max = base + Duration::from_millis(extra);
            let got = poll_delay(polls, base, max, jitter);
            prop_assert!(got >= base / 2);
            prop_assert!(got <= max);
            prop_assert!(poll_delay(polls + 1, base, max, 0.5) >= poll_delay(polls, base, max, 0.5));
        }

        /// A failed poll waits at least what the upstream asked for, up to
        /// [`MAX_POLL_RETRY_AFTER`], and never longer than that or its backoff.
        #[test]
        fn poll_retry_honours_retry_after(polls in 0u32..16, ra in proptest::option::of(0u64..120_000), jitter in 0.0f64..1.0) {
            let base = Duration::from_millis(500);
            let max = Duration::from_secs(10);
            let got = poll_retry_delay(polls, base, max, jitter, ra.map(Duration::from_millis));
            let backoff = poll_delay(polls, base, max, jitter);
            prop_assert!(got >= backoff);
            if let Some(r) = ra {
                let honoured = Duration::from_millis(r).min(MAX_POLL_RETRY_AFTER);
                prop_assert!(got >= honoured);
                prop_assert!(got <= honoured.max(backoff));
            }
        }

        /// The step timeout always fits inside the lease.
        #[test]
        fn step_timeout_fits_the_lease(lease in 200u64..3_600_000) {
            let lease = Duration::from_millis(lease);
            let t = default_step_timeout(lease);
            prop_assert!(t < lease);
            prop_assert!(t > Duration::ZERO);
        }
    }
}
