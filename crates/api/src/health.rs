//! Liveness and readiness probes.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use modelgen_persistence::{BlobStore, Database};
use serde_json::json;

use crate::error::{CODE_INTERNAL, CODE_OK};
use crate::http::HttpState;

/// What `/readyz` checks: the database answers, its migrations are all
/// applied, and the blob store takes writes.
#[derive(Clone)]
pub struct Readiness {
    /// The database.
    pub db: Database,
    /// The blob store.
    pub blobs: Arc<dyn BlobStore>,
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

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive (code 0, `data.status` = `ok`)")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"code": CODE_OK, "msg": "success", "data": {"status": "ok"}}))
}

/// `GET /readyz`: 200 when ready, 503 with the reasons otherwise.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready: database reachable, migrations applied, storage writable"),
        (status = 503, description = "Not ready; `data.checks` maps each failed check (database, migrations, storage) to its reason", body = crate::error::ErrorEnvelope),
    ))]
pub async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let problems = state.readiness.problems().await;
    if problems.is_empty() {
        HttpResponse::Ok()
            .json(json!({"code": CODE_OK, "msg": "success", "data": {"status": "ready"}}))
    } else {
        let checks: serde_json::Map<String, serde_json::Value> = problems
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
            .collect();
        HttpResponse::ServiceUnavailable().json(json!({
            "code": CODE_INTERNAL,
            "msg": "not ready",
            "data": {"status": "not_ready", "checks": checks}
        }))
    }
}
