//! Liveness and readiness probes, and what they watch: the engine loops'
//! heartbeat ([`Heartbeat`]) and the upstream account's health
//! ([`UpstreamHealth`], fed by every Apimart answer and by a periodic
//! `GET /v1/balance`).
//!
//! - `GET /healthz` (liveness): 200 while every engine loop this process runs
//!   has gone round within `WORKER_STALL_TIMEOUT`; 503 naming the stale loop
//!   otherwise, so the orchestrator restarts a stuck worker. A process
//!   without workers (`serve --api-only`) is alive when it answers.
//! - `GET /readyz` (readiness): 503 when this replica cannot work (database,
//!   migrations, storage); 200 otherwise. Upstream trouble (a streak of
//!   401/402 answers, a failing or exhausted balance) is reported as
//!   `status: "degraded"` with the reasons in `data.degraded`, **still 200**:
//!   the Apimart key and its credit are shared by every replica, so taking a
//!   replica out of the load balancer for them would take all of them out
//!   and turn "new tasks will fail upstream" into "nothing answers at all"
//!   (reads, cancels, callbacks of finished work). Alert on the `degraded`
//!   field or on the `upstream_degraded` gauge instead (docs/design.md,
//!   "Health and readiness").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{HttpResponse, web};
use apimart_client::{ApimartClient, ApimartError};
use chrono::{DateTime, Utc};
use modelgen_persistence::{BlobStore, Database};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::error::{CODE_INTERNAL, Envelope};
use crate::http::HttpState;

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

/// What `/readyz` checks: the database answers, its migrations are all
/// applied, and the blob store takes writes (not ready: 503); and the
/// upstream account (degraded: still 200). What `/healthz` checks: the
/// engine loops' heartbeat.
#[derive(Clone)]
pub struct Readiness {
    /// The database.
    pub db: Database,
    /// The blob store.
    pub blobs: Arc<dyn BlobStore>,
    /// The upstream account's health.
    pub upstream: UpstreamHealth,
    /// The engine loops' heartbeat (no running loop: always alive).
    pub heartbeat: Heartbeat,
    /// `WORKER_STALL_TIMEOUT`: a running loop silent for longer is stuck.
    pub stall_timeout: Duration,
}

impl Readiness {
    /// Every failed check, as `(check, reason)`; empty when ready.
    pub async fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        match self.db.pending_migrations().await {
            Ok(p) if p.is_empty() => {}
            Ok(p) => problems.push((
                "migrations",
                format!("{} pending: {}", p.len(), p.join(", ")),
            )),
            Err(e) => problems.push(("database", e.to_string())),
        }
        if let Err(e) = self.blobs.check_writable().await {
            problems.push(("storage", e.to_string()));
        }
        problems
    }
}

/// One engine loop in the `/healthz` body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LoopBeat {
    /// Seconds since the loop last went round (millisecond precision).
    pub last_beat_seconds_ago: f64,
    /// Whether that exceeds `WORKER_STALL_TIMEOUT`.
    pub stale: bool,
}

/// `data` of `/healthz`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LivenessView {
    /// `ok`, or `stalled` (HTTP 503) when a loop is stale.
    pub status: String,
    /// The engine loops this process runs (`tasks`, `callbacks`), by name;
    /// empty on `serve --api-only`.
    pub loops: BTreeMap<String, LoopBeat>,
}

/// One upstream problem in the `/readyz` body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DegradedView {
    /// Words for an operator (the last Apimart error, the balance read's failure).
    pub reason: String,
    /// When the problem was first seen, RFC 3339 UTC.
    pub since: String,
}

/// `data` of `/readyz`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReadinessView {
    /// `ready`; `degraded` (still HTTP 200) when `degraded` is not empty;
    /// `not_ready` (HTTP 503) when `checks` is present.
    pub status: String,
    /// Only when not ready: each failed check (`database`, `migrations`,
    /// `storage`) and its reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<BTreeMap<String, String>>,
    /// Upstream problems by check: `upstream_auth` (at least
    /// [`AUTH_FAILURE_STREAK`] consecutive 401/402 answers from Apimart),
    /// `upstream_balance` (`GET /v1/balance` failing, or the balance
    /// exhausted). `{}` when the upstream looks fine.
    pub degraded: BTreeMap<String, DegradedView>,
}

/// The `/healthz` answer for `heartbeat` with `bound`: 200 `ok` when every
/// running loop beat within `bound`, else 503 `stalled` naming each stale
/// loop.
pub fn liveness(heartbeat: &Heartbeat, bound: Duration) -> HttpResponse {
    let loops: BTreeMap<String, LoopBeat> = heartbeat
        .ages()
        .into_iter()
        .map(|(l, age)| {
            (
                l.as_str().to_string(),
                LoopBeat {
                    last_beat_seconds_ago: round_ms(age),
                    stale: age > bound,
                },
            )
        })
        .collect();
    let stale: Vec<&str> = loops
        .iter()
        .filter(|(_, b)| b.stale)
        .map(|(name, _)| name.as_str())
        .collect();
    if stale.is_empty() {
        HttpResponse::Ok().json(Envelope::ok(
            "success",
            LivenessView {
                status: "ok".into(),
                loops,
            },
        ))
    } else {
        let msg = format!(
            "engine loop stalled: {} (silent beyond WORKER_STALL_TIMEOUT = {}s)",
            stale.join(", "),
            round_ms(bound)
        );
        HttpResponse::ServiceUnavailable().json(Envelope {
            code: CODE_INTERNAL,
            msg,
            data: Some(LivenessView {
                status: "stalled".into(),
                loops,
            }),
        })
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// `GET /healthz`: the process is alive, and so is every engine loop it runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    description = "Liveness: point the orchestrator's liveness probe here. Served by every process, `serve --workers-only` included (on its HOST:PORT, which serves nothing but `/healthz`, `/readyz` and `/metrics`). 503 when an engine loop (`tasks`, `callbacks`) of this process has not gone round for longer than `WORKER_STALL_TIMEOUT`: restart it.",
    responses(
        (status = 200, description = "Alive: code 0, `data.status` = `ok`", body = Envelope<LivenessView>),
        (status = 503, description = "An engine loop is stuck: code 1004, `data.status` = `stalled`, `msg` names the loop", body = Envelope<LivenessView>),
    ))]
pub async fn healthz(state: web::Data<HttpState>) -> HttpResponse {
    let r = &state.readiness;
    liveness(&r.heartbeat, r.stall_timeout)
}

/// `GET /readyz`: 200 when ready (`status` `ready`, or `degraded` with the
/// upstream reasons), 503 with the reasons when not ready.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    description = "Readiness: point the orchestrator's readiness probe here. 503 when this replica cannot work (database, migrations, storage). Upstream trouble — 3 consecutive 401/402 answers from Apimart, or `GET /v1/balance` failing or exhausted (read every `BALANCE_CHECK_INTERVAL`) — is `data.status` = `degraded` with `data.degraded` naming each reason, and still **200**: the key and its credit are shared by every replica, so a 503 would take all replicas out of the load balancer at once and stop reads and cancels too. Alert on `data.degraded` or the `upstream_degraded` gauge. Any successful Apimart answer ends a 401/402 streak; a good balance read ends both.",
    responses(
        (status = 200, description = "Ready (`data.status` = `ready`), or ready with upstream trouble (`degraded`)", body = Envelope<ReadinessView>),
        (status = 503, description = "Not ready: code 1004, `data.status` = `not_ready`, `data.checks` maps each failed check (database, migrations, storage) to its reason", body = Envelope<ReadinessView>),
    ))]
pub async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let problems = state.readiness.problems().await;
    let degraded: BTreeMap<String, DegradedView> = state
        .readiness
        .upstream
        .degradations()
        .into_iter()
        .map(|d| {
            (
                d.check.to_string(),
                DegradedView {
                    reason: d.reason,
                    since: d.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                },
            )
        })
        .collect();
    if problems.is_empty() {
        let status = if degraded.is_empty() {
            "ready"
        } else {
            "degraded"
        };
        HttpResponse::Ok().json(Envelope::ok(
            "success",
            ReadinessView {
                status: status.into(),
                checks: None,
                degraded,
            },
        ))
    } else {
        let checks = problems
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        HttpResponse::ServiceUnavailable().json(Envelope {
            code: CODE_INTERNAL,
            msg: "not ready".into(),
            data: Some(ReadinessView {
                status: "not_ready".into(),
                checks: Some(checks),
                degraded,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unauthorized() -> Result<(), ApimartError> {
        Err(ApimartError::Unauthorized {
            message: "invalid key".into(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn healthz_fails_when_a_running_loop_is_silent_beyond_the_bound() {
        let hb = Heartbeat::default();
        let bound = Duration::from_secs(60);
        // No loop running (an API-only process): alive however long.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(liveness(&hb, bound).status(), 200);

        hb.started(EngineLoop::Tasks);
        hb.started(EngineLoop::Callbacks);
        tokio::time::advance(Duration::from_secs(59)).await;
        hb.beat(EngineLoop::Callbacks);
        assert_eq!(liveness(&hb, bound).status(), 200);

        // The task loop has been silent for 61 s: stalled, and named.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            hb.stale(bound).iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            vec![EngineLoop::Tasks]
        );
        let response = liveness(&hb, bound);
        assert_eq!(response.status(), 503);

        // It goes round again: alive.
        hb.beat(EngineLoop::Tasks);
        assert_eq!(liveness(&hb, bound).status(), 200);

        // A loop stopped on purpose is not stuck.
        hb.stopped(EngineLoop::Tasks);
        hb.stopped(EngineLoop::Callbacks);
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(liveness(&hb, bound).status(), 200);
    }

    #[test]
    fn a_401_402_streak_degrades_and_any_success_ends_it() {
        let h = UpstreamHealth::default();
        let now = Utc::now();
        for _ in 0..AUTH_FAILURE_STREAK - 1 {
            h.observe(&unauthorized(), now);
        }
        assert!(h.degradations().is_empty(), "below the streak");
        // Other failures neither lengthen nor end the streak.
        h.observe::<()>(&Err(ApimartError::Timeout), now);
        h.observe(
            &Err::<(), _>(ApimartError::InsufficientBalance {
                message: "no credit".into(),
            }),
            now,
        );
        let d = h.degradations();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].check, "upstream_auth");
        assert!(d[0].reason.contains("402"), "{}", d[0].reason);
        assert!(d[0].reason.contains("3 consecutive"), "{}", d[0].reason);

        h.observe::<()>(&Ok(()), now);
        assert!(h.degradations().is_empty());
    }

    #[test]
    fn a_failing_balance_degrades_until_a_good_read() {
        let h = UpstreamHealth::default();
        let t0 = Utc::now();
        let failed: Result<apimart_client::Balance, _> = Err(ApimartError::Server {
            status: 503,
            message: "down".into(),
        });
        h.balance_checked(judge_balance(&failed), t0);
        h.balance_checked(judge_balance(&failed), t0 + chrono::TimeDelta::seconds(60));
        let d = h.degradations();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].check, "upstream_balance");
        assert!(d[0].reason.contains("/v1/balance"), "{}", d[0].reason);
        assert_eq!(d[0].since, t0, "since the first failure");

        let mut empty = apimart_client::Balance::new();
        empty.remain_balance = Some(0.0);
        h.balance_checked(judge_balance(&Ok(empty)), t0);
        assert!(h.degradations()[0].reason.contains("exhausted"));

        let mut fine = apimart_client::Balance::new();
        fine.remain_balance = Some(12.5);
        // A good read also ends a 401/402 streak.
        for _ in 0..AUTH_FAILURE_STREAK {
            h.observe(&unauthorized(), t0);
        }
        h.balance_checked(judge_balance(&Ok(fine)), t0);
        assert!(h.degradations().is_empty());
    }
}
