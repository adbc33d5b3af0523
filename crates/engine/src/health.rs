//! What the engine reports about itself and about the upstream: the engine
//! loops' heartbeat ([`Heartbeat`], read by the liveness probe) and the
//! upstream account's health ([`UpstreamHealth`], fed by every Apimart answer
//! and by a periodic `GET /v1/balance`, read by the readiness probe). The
//! probes themselves are HTTP and live in the service (`crates/api/src/health.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apimart_client::{ApimartClient, ApimartError};
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;

/// Consecutive 401/402 answers from Apimart after which `/readyz` reports
/// the upstream as degraded. One is not enough: a single 402 can be one
/// task costing more than what is left while smaller ones still pass.
pub const AUTH_FAILURE_STREAK: u32 = 3;

/// An engine loop whose liveness `/healthz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineLoop {
    /// Claims due tasks and runs their steps.
    Tasks,
    /// Claims due callbacks and delivers them.
    Callbacks,
}

impl EngineLoop {
    /// Name in `/healthz` bodies and metric labels: `tasks` or `callbacks`.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineLoop::Tasks => "tasks",
            EngineLoop::Callbacks => "callbacks",
        }
    }

    fn index(self) -> usize {
        match self {
            EngineLoop::Tasks => 0,
            EngineLoop::Callbacks => 1,
        }
    }

    const ALL: [EngineLoop; 2] = [EngineLoop::Tasks, EngineLoop::Callbacks];
}

/// One loop's slot: whether it runs, and its last beat in milliseconds
/// since [`Heartbeat`]'s origin.
#[derive(Debug, Default)]
struct Beat {
    running: AtomicBool,
    at_ms: AtomicU64,
}

/// When each engine loop last went round; cheap to clone (shared).
///
/// A loop [`Heartbeat::beat`]s every time round: after each claim, and while
/// every worker permit is busy at least every `WORKER_IDLE_INTERVAL`, so a
/// beat says "the loop is scheduled and not blocked", not "work is finishing"
/// (a slow upstream must not get healthy workers restarted). A claim is
/// bounded by `DATABASE_CALL_TIMEOUT` and a callback round by
/// `CALLBACK_TIMEOUT`, so a loop silent for much longer is stuck.
///
/// Time is tokio's monotonic clock: immune to wall-clock jumps, and
/// controllable in tests (`tokio::time::pause`/`advance`).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    origin: Instant,
    beats: Arc<[Beat; 2]>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            origin: Instant::now(),
            beats: Arc::default(),
        }
    }
}

impl Heartbeat {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The loop has started: from now on a missing beat counts.
    pub fn started(&self, which: EngineLoop) {
        let beat = &self.beats[which.index()];
        beat.at_ms.store(self.now_ms(), Ordering::Relaxed);
        beat.running.store(true, Ordering::Relaxed);
    }

    /// The loop went round.
    pub fn beat(&self, which: EngineLoop) {
        self.beats[which.index()]
            .at_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// The loop has stopped on purpose (shutdown, or nothing to do): its
    /// silence no longer counts.
    pub fn stopped(&self, which: EngineLoop) {
        self.beats[which.index()]
            .running
            .store(false, Ordering::Relaxed);
    }

    /// Time since each running loop's last beat.
    pub fn ages(&self) -> Vec<(EngineLoop, Duration)> {
        let now = self.now_ms();
        EngineLoop::ALL
            .into_iter()
            .filter(|l| self.beats[l.index()].running.load(Ordering::Relaxed))
            .map(|l| {
                let at = self.beats[l.index()].at_ms.load(Ordering::Relaxed);
                (l, Duration::from_millis(now.saturating_sub(at)))
            })
            .collect()
    }

    /// The running loops silent for longer than `bound`, with their silence.
    pub fn stale(&self, bound: Duration) -> Vec<(EngineLoop, Duration)> {
        self.ages()
            .into_iter()
            .filter(|(_, age)| *age > bound)
            .collect()
    }
}

/// A reason the upstream is degraded, as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Degradation {
    /// `upstream_auth` (401/402 streak) or `upstream_balance` (balance read
    /// failed, or the account is exhausted).
    pub check: &'static str,
    /// Words for an operator; never the key.
    pub reason: String,
    /// When the condition was first seen.
    pub since: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct UpstreamState {
    /// Consecutive 401/402 answers, and the last one's words.
    auth_streak: u32,
    auth_reason: Option<String>,
    auth_since: Option<DateTime<Utc>>,
    /// The last balance check's failure (`None`: it passed, or none ran yet).
    balance_problem: Option<(String, DateTime<Utc>)>,
}

/// What the Apimart account looks like from this process; cheap to clone.
///
/// Fed by every generation call's answer ([`UpstreamHealth::observe`]) and
/// by the balance check ([`run_balance_checks`]). Any successful Apimart
/// answer (a submit, a status read, a balance read) ends a 401/402 streak.
#[derive(Debug, Clone, Default)]
pub struct UpstreamHealth {
    state: Arc<Mutex<UpstreamState>>,
}

impl UpstreamHealth {
    fn with<T>(&self, f: impl FnOnce(&mut UpstreamState) -> T) -> Option<T> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }

    /// Records one Apimart answer: a success ends the 401/402 streak, a
    /// 401/402 lengthens it, anything else (5xx, timeouts, 4xx about the
    /// request) says nothing about the key or the credit and is ignored.
    pub fn observe<T>(&self, result: &Result<T, ApimartError>, now: DateTime<Utc>) {
        match result {
            Ok(_) => self.succeeded(),
            Err(
                e @ (ApimartError::Unauthorized { .. } | ApimartError::InsufficientBalance { .. }),
            ) => {
                let reason = e.to_string();
                self.with(|s| {
                    s.auth_streak = s.auth_streak.saturating_add(1);
                    s.auth_since.get_or_insert(now);
                    s.auth_reason = Some(reason);
                });
            }
            Err(_) => {}
        }
    }

    fn succeeded(&self) {
        self.with(|s| {
            s.auth_streak = 0;
            s.auth_reason = None;
            s.auth_since = None;
        });
    }

    /// Records a balance check: `Ok(())` clears the balance problem (and,
    /// being a successful answer, any 401/402 streak); `Err(reason)` sets it.
    pub fn balance_checked(&self, outcome: Result<(), String>, now: DateTime<Utc>) {
        match outcome {
            Ok(()) => {
                self.succeeded();
                self.with(|s| s.balance_problem = None);
            }
            Err(reason) => {
                self.with(|s| {
                    let since = s.balance_problem.as_ref().map_or(now, |(_, t)| *t);
                    s.balance_problem = Some((reason, since));
                });
            }
        }
    }

    /// The current reasons for degraded; empty when the upstream looks fine.
    pub fn degradations(&self) -> Vec<Degradation> {
        self.with(|s| {
            let mut out = Vec::new();
            if s.auth_streak >= AUTH_FAILURE_STREAK {
                out.push(Degradation {
                    check: "upstream_auth",
                    reason: format!(
                        "{} consecutive 401/402 answers from Apimart (bad key or out of credit); last: {}",
                        s.auth_streak,
                        s.auth_reason.as_deref().unwrap_or("")
                    ),
                    since: s.auth_since.unwrap_or_else(Utc::now),
                });
            }
            if let Some((reason, since)) = &s.balance_problem {
                out.push(Degradation {
                    check: "upstream_balance",
                    reason: reason.clone(),
                    since: *since,
                });
            }
            out
        })
        .unwrap_or_default()
    }
}

/// What a balance read says about the account: `Ok` when it can pay,
/// `Err(reason)` when the read failed or the account is exhausted.
pub fn judge_balance(result: &Result<apimart_client::Balance, ApimartError>) -> Result<(), String> {
    match result {
        Ok(b) if b.is_exhausted() => Err(format!(
            "Apimart balance is exhausted (remain_balance {})",
            b.remain_balance
                .or(b.remain_credits)
                .map_or_else(|| "unknown".into(), |v| v.to_string())
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("GET /v1/balance failed: {e}")),
    }
}

/// Reads the Apimart balance every `interval` until `token` is cancelled
/// and records the outcome in `health`. A failing or exhausted balance also
/// raises an alert (`unauthorized`, `insufficient_balance` or
/// `balance_check_failed`; the webhook is rate-limited per kind).
pub async fn run_balance_checks(
    client: Arc<ApimartClient>,
    health: UpstreamHealth,
    alerts: Alerts,
    interval: Duration,
    token: CancellationToken,
) {
    loop {
        let result = tokio::select! {
            () = token.cancelled() => return,
            r = client.balance() => r,
        };
        let outcome = judge_balance(&result);
        if let Err(reason) = &outcome {
            let kind = match &result {
                Err(ApimartError::Unauthorized { .. }) => "unauthorized",
                Err(ApimartError::InsufficientBalance { .. }) | Ok(_) => "insufficient_balance",
                Err(_) => "balance_check_failed",
            };
            alerts.raise(kind, reason);
        }
        health.balance_checked(outcome, Utc::now());
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
