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
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use modelgen_persistence::{BlobStore, Database};
use serde::Serialize;

use crate::error::{CODE_INTERNAL, Envelope};
use crate::http::HttpState;

pub use modelgen_engine::health::{
    AUTH_FAILURE_STREAK, Degradation, EngineLoop, Heartbeat, UpstreamHealth, judge_balance,
    run_balance_checks,
};

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
    #[schema(schema_with = crate::openapi::liveness_status_schema)]
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
    #[schema(format = DateTime)]
    pub since: String,
}

/// `data` of `/readyz`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReadinessView {
    /// `ready`; `degraded` (still HTTP 200) when `degraded` is not empty;
    /// `not_ready` (HTTP 503) when `checks` is present.
    #[schema(schema_with = crate::openapi::readiness_status_schema)]
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
        HttpResponse::ServiceUnavailable()
            .insert_header((
                actix_web::http::header::RETRY_AFTER,
                crate::error::UNAVAILABLE_RETRY_AFTER_SECS.to_string(),
            ))
            .json(Envelope {
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
        (status = 503, description = "An engine loop is stuck: code 1004, `data.status` = `stalled`, `msg` names the loop", body = Envelope<LivenessView>,
            headers(("Retry-After" = u64, description = "Seconds before probing again (5)"))),
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
        (status = 503, description = "Not ready: code 1004, `data.status` = `not_ready`, `data.checks` maps each failed check (database, migrations, storage) to its reason", body = Envelope<ReadinessView>,
            headers(("Retry-After" = u64, description = "Seconds before probing again (5)"))),
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
        HttpResponse::ServiceUnavailable()
            .insert_header((
                actix_web::http::header::RETRY_AFTER,
                crate::error::UNAVAILABLE_RETRY_AFTER_SECS.to_string(),
            ))
            .json(Envelope {
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
    use apimart_client::ApimartError;
    use chrono::Utc;

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
        assert_eq!(
            response
                .headers()
                .get(actix_web::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("5"),
            "every 503 says when to come back"
        );

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
