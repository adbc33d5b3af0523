//! Operator actions on the callback outbox, shared by the admin endpoints and
//! the CLI: list (e.g. dead) deliveries, redeliver one, redeliver all dead.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use modelgen_persistence::{CallbackOutbox, CallbackRecord, CallbackStatus, RepoError};

use crate::error::{ApiError, Envelope};
use crate::http::HttpState;
use modelgen_domain::format_timestamp;

/// Largest page of `GET /admin/callbacks`.
pub const MAX_CALLBACK_PAGE: i64 = 500;

/// Outbox administration.
#[derive(Clone)]
pub struct Admin {
    /// The outbox.
    pub outbox: Arc<dyn CallbackOutbox>,
}

/// `GET /admin/callbacks` page: `{"items": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CallbackPage {
    /// Deliveries, newest first.
    pub items: Vec<CallbackView>,
}

/// `POST /admin/callbacks/redeliver-dead` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Redelivered {
    /// How many dead deliveries were queued again.
    pub redelivered: u64,
}

/// A delivery as shown to operators.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CallbackView {
    /// Stable event id (`webhook-id`).
    pub event_id: String,
    /// Task.
    pub task_id: String,
    /// `task.completed` …
    #[schema(value_type = modelgen_callback::openapi::CallbackEventTypeSchema)]
    pub event_type: String,
    /// `pending`, `delivered` or `dead`.
    #[schema(value_type = crate::openapi::DeliveryStatusSchema)]
    pub status: String,
    /// Attempts made.
    #[schema(minimum = 0)]
    pub attempts: i32,
    /// Next attempt (pending rows).
    #[schema(format = DateTime)]
    pub next_attempt_at: String,
    /// Last failure.
    pub last_error: Option<String>,
    /// When delivered.
    #[schema(format = DateTime)]
    pub delivered_at: Option<String>,
    /// When enqueued.
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&CallbackRecord> for CallbackView {
    fn from(r: &CallbackRecord) -> Self {
        CallbackView {
            event_id: r.event_id.clone(),
            task_id: r.task_id.to_string(),
            event_type: r.event_type.clone(),
            status: r.status.as_str().into(),
            attempts: r.attempts,
            next_attempt_at: format_timestamp(r.next_attempt_at),
            last_error: r.last_error.clone(),
            delivered_at: r.delivered_at.map(format_timestamp),
            created_at: format_timestamp(r.created_at),
        }
    }
}

/// Parses `pending|delivered|dead`.
pub fn parse_status(s: &str) -> Option<CallbackStatus> {
    match s {
        "pending" => Some(CallbackStatus::Pending),
        "delivered" => Some(CallbackStatus::Delivered),
        "dead" => Some(CallbackStatus::Dead),
        _ => None,
    }
}

impl Admin {
    /// Deliveries with `status` (all when `None`), newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(
        &self,
        status: Option<CallbackStatus>,
        limit: i64,
    ) -> Result<Vec<CallbackView>, RepoError> {
        Ok(self
            .outbox
            .list_callbacks(status, limit)
            .await?
            .iter()
            .map(CallbackView::from)
            .collect())
    }

    /// Puts one delivery back to pending.
    ///
    /// # Errors
    /// [`RepoError::NotFound`] for an unknown event id.
    pub async fn redeliver(&self, event_id: &str) -> Result<CallbackView, RepoError> {
        Ok(CallbackView::from(
            &self.outbox.redeliver(event_id, Utc::now()).await?,
        ))
    }

    /// Puts every dead delivery back to pending; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn redeliver_all_dead(&self) -> Result<u64, RepoError> {
        self.outbox.redeliver_all_dead(Utc::now()).await
    }
}

/// Query of `GET /admin/callbacks`.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    status: Option<String>,
    limit: Option<String>,
}

/// `GET /admin/callbacks?status=dead&limit=100`.
#[utoipa::path(get, path = "/admin/callbacks", tag = "admin",
    params(
        ("status" = Option<String>, Query, description = "Only deliveries in this state: a `DeliveryStatus` value (pending | delivered | dead); empty means no filter"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 100"),
    ),
    responses(
        (status = 200, description = "`data.items`: deliveries, newest first", body = Envelope<CallbackPage>),
        (status = 400, description = "Bad status or limit (1001)", body = crate::error::ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = crate::error::ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn list_callbacks(
    query: web::Query<CallbackQuery>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            parse_status(s)
                .ok_or_else(|| ApiError::field("status", "must be pending, delivered or dead"))?,
        ),
    };
    let limit = match query.limit.as_deref() {
        // `limit=` (empty) is not an integer: refused, as the document says.
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_CALLBACK_PAGE).contains(l))
            .ok_or_else(|| ApiError::field("limit", "must be an integer between 1 and 500"))?,
    };
    let items = state.admin.list(status, limit).await?;
    Ok(HttpResponse::Ok().json(Envelope::ok("success", CallbackPage { items })))
}

/// `POST /admin/callbacks/{event_id}/redeliver`.
#[utoipa::path(post, path = "/admin/callbacks/{event_id}/redeliver", tag = "admin",
    params(("event_id" = String, Path, description = "`evt_…`; the redelivery keeps it as `webhook-id`")),
    responses(
        (status = 200, description = "Queued again", body = Envelope<CallbackView>),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = crate::error::ErrorEnvelope),
        (status = 404, description = "Unknown event (1003)", body = crate::error::ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn redeliver(
    path: web::Path<String>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    // Event ids are `evt_` + a ULID; anything else cannot exist (and a NUL
    // would be refused by PostgreSQL).
    let plausible = path.len() <= 64
        && path.starts_with("evt_")
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !plausible {
        return Err(ApiError::NotFound("callback not found".into()));
    }
    match state.admin.redeliver(&path).await {
        Ok(view) => Ok(HttpResponse::Ok().json(Envelope::ok("success", view))),
        Err(RepoError::NotFound) => Err(ApiError::NotFound(format!(
            "callback {} not found",
            path.as_str()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `POST /admin/callbacks/redeliver-dead`.
#[utoipa::path(post, path = "/admin/callbacks/redeliver-dead", tag = "admin",
    responses(
        (status = 200, description = "`data.redelivered`: how many dead deliveries were queued again", body = Envelope<Redelivered>),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = crate::error::ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn redeliver_all_dead(state: web::Data<HttpState>) -> Result<HttpResponse, ApiError> {
    let n = state.admin.redeliver_all_dead().await?;
    Ok(HttpResponse::Ok().json(Envelope::ok("success", Redelivered { redelivered: n })))
}
