//! The response envelope and the one place where errors become HTTP statuses
//! and envelope codes (README, "API").

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use modelgen_domain::FieldError;
use modelgen_persistence::{BlobError, RepoError};
use serde::Serialize;

/// Envelope code: success.
pub const CODE_OK: i32 = 0;
/// Envelope code: invalid parameters (HTTP 400).
pub const CODE_INVALID: i32 = 1001;
/// Envelope code: the Apimart call failed (HTTP 502; also a failed task's `error_code`).
pub const CODE_UPSTREAM: i32 = modelgen_engine::CODE_UPSTREAM;
/// Envelope code: task not found (HTTP 404).
pub const CODE_NOT_FOUND: i32 = 1003;
/// Envelope code: internal error (HTTP 500).
pub const CODE_INTERNAL: i32 = 1004;
/// Envelope code: missing or invalid bearer token (HTTP 401).
pub const CODE_UNAUTHORIZED: i32 = 1005;
/// Envelope code: conflict — `request_id` reused with another payload, or a
/// state change the task's status does not allow (HTTP 409).
pub const CODE_CONFLICT: i32 = 1006;
/// Envelope code: body or image too large (HTTP 413).
pub const CODE_TOO_LARGE: i32 = 1007;
/// Envelope code: the request body is not declared as UTF-8 JSON
/// (`Content-Type` missing, another type, or another charset; HTTP 415).
pub const CODE_UNSUPPORTED_MEDIA_TYPE: i32 = 1008;
/// Envelope code: the path exists but not with this method (HTTP 405, with an
/// `Allow` header listing the methods it has).
pub const CODE_METHOD_NOT_ALLOWED: i32 = 1009;
/// Envelope code: the queue of tasks waiting to be submitted upstream is at
/// `MAX_QUEUED_TASKS`; retry after the `Retry-After` header (HTTP 429).
pub const CODE_QUEUE_FULL: i32 = 1010;
/// Envelope code: a state-changing request a browser sent from another site
/// (`Sec-Fetch-Site: cross-site` or `same-site`; HTTP 403). Servers such as
/// the Java backend never send that header.
pub const CODE_CROSS_SITE: i32 = 1011;

/// `Retry-After` of every 503 (database or storage unavailable, not ready,
/// an engine loop stalled), seconds: long enough for a pool to reconnect or a
/// probe to run again, short enough that a client's retry is not held back
/// needlessly (README, "Rate-limit headers").
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// Every response body: `{"code": int, "msg": string, "data": object|null}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Envelope<T: Serialize> {
    /// 0 on success, else one of the `CODE_*` values.
    pub code: i32,
    /// `accepted`, `success`, or a human-readable error.
    pub msg: String,
    /// The payload, or error details, or null.
    pub data: Option<T>,
}

/// The `data` of a 400/1001: every bad field.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldErrors {
    /// One entry per bad field, e.g. `{"field": "body_profile.height_cm", "message": "must be > 0 and ≤ 300"}`.
    pub errors: Vec<FieldErrorView>,
}

/// One bad field.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldErrorView {
    /// JSON path of the field as the client wrote it.
    pub field: String,
    /// What is wrong, in English.
    pub message: String,
}

/// An error envelope: `code` is one of 1001–1011, `data` is null or details.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"code": 1003, "msg": "task task_01ARZ3NDEKTSV4RRFFQ69G5FAV not found", "data": null}))]
pub struct ErrorEnvelope {
    /// 1001 invalid parameters, 1002 Apimart failed, 1003 not found, 1004 internal,
    /// 1005 unauthorized, 1006 conflict, 1007 too large, 1008 unsupported media
    /// type, 1009 method not allowed, 1010 queue full, 1011 cross-site request.
    pub code: i32,
    /// Human-readable message.
    pub msg: String,
    /// `{"errors": [...]}` for 1001, `{"task_id", "status"}` for some 1006,
    /// `{"queued", "max_queued_tasks", "retry_after"}` for 1010, else null.
    pub data: Option<serde_json::Value>,
}

impl<T: Serialize> Envelope<T> {
    /// A success envelope.
    pub fn ok(msg: &str, data: T) -> Self {
        Envelope {
            code: CODE_OK,
            msg: msg.to_string(),
            data: Some(data),
        }
    }
}

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400/1001 with every bad field.
    #[error("invalid parameters")]
    Invalid(Vec<FieldError>),
    /// 400/1001 with a message only (e.g. base model not completed).
    #[error("{0}")]
    BadRequest(String),
    /// 404/1003.
    #[error("{0}")]
    NotFound(String),
    /// 401/1005.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 409/1006 with the current task status when relevant.
    #[error("{message}")]
    Conflict {
        /// What conflicted.
        message: String,
        /// Extra data (e.g. `{"task_id", "status"}`).
        data: Option<serde_json::Value>,
    },
    /// 413/1007.
    #[error("{0}")]
    TooLarge(String),
    /// 415/1008: the body is not declared as `application/json` in UTF-8.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 405/1009 with `Allow: <allow>`.
    #[error("method {method} is not allowed on {path}; allowed: {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path as sent (shortened).
        path: String,
        /// The methods the path has, comma-separated (the `Allow` header).
        allow: String,
    },
    /// 403/1011: a browser sent this state-changing request from another site.
    #[error(
        "cross-site request refused: a browser sent this {method} from another site (Sec-Fetch-Site: {site}); call modelgen from a server"
    )]
    CrossSite {
        /// The method used.
        method: String,
        /// The `Sec-Fetch-Site` value.
        site: String,
    },
    /// 429/1010 with `Retry-After`: too many tasks wait to be submitted.
    #[error(
        "queue full: {queued} tasks are waiting to be submitted (MAX_QUEUED_TASKS {limit}); retry after {retry_after} s"
    )]
    QueueFull {
        /// The backlog as this replica counts it.
        queued: u64,
        /// `MAX_QUEUED_TASKS`.
        limit: u64,
        /// Seconds, also in the `Retry-After` header.
        retry_after: u64,
    },
    /// 502/1002.
    #[error("{0}")]
    Upstream(String),
    /// 503/1004: a dependency is down; the message is safe to show.
    #[error("{0}")]
    Unavailable(String),
    /// 500/1004; the cause is logged, never answered.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A single-field validation error.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid(vec![FieldError {
            field: field.to_string(),
            message: message.into(),
        }])
    }

    fn code(&self) -> i32 {
        match self {
            ApiError::Invalid(_) | ApiError::BadRequest(_) => CODE_INVALID,
            ApiError::NotFound(_) => CODE_NOT_FOUND,
            ApiError::Unauthorized => CODE_UNAUTHORIZED,
            ApiError::Conflict { .. } => CODE_CONFLICT,
            ApiError::TooLarge(_) => CODE_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => CODE_UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed { .. } => CODE_METHOD_NOT_ALLOWED,
            ApiError::QueueFull { .. } => CODE_QUEUE_FULL,
            ApiError::CrossSite { .. } => CODE_CROSS_SITE,
            ApiError::Upstream(_) => CODE_UPSTREAM,
            ApiError::Unavailable(_) | ApiError::Internal(_) => CODE_INTERNAL,
        }
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::NotFound => ApiError::NotFound("task not found".into()),
            RepoError::Unavailable(cause) => {
                // The one place the cause of a 503 is logged (inside the
                // request's span); the client gets a message without it.
                tracing::warn!(error = %cause, "database unavailable; answering 503");
                ApiError::Unavailable("database unavailable".into())
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound | BlobError::InvalidKey(_) | BlobError::NotPublic(_) => {
                ApiError::NotFound("image not found".into())
            }
            BlobError::Store(reason) => {
                tracing::error!(%reason, "blob store failed");
                ApiError::Unavailable("image storage unavailable".into())
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::CrossSite { .. } => StatusCode::FORBIDDEN,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let data = match self {
            ApiError::Invalid(errors) => Some(serde_json::json!({ "errors": errors })),
            ApiError::Conflict { data, .. } => data.clone(),
            ApiError::QueueFull {
                queued,
                limit,
                retry_after,
            } => Some(serde_json::json!({
                "queued": queued, "max_queued_tasks": limit, "retry_after": retry_after
            })),
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                None
            }
            _ => None,
        };
        let msg = match self {
            ApiError::Invalid(errors) => match errors.as_slice() {
                [one] => format!("invalid parameters: {}: {}", one.field, one.message),
                _ => format!("invalid parameters ({} errors)", errors.len()),
            },
            other => other.to_string(),
        };
        let mut builder = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                builder.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                builder.insert_header((actix_web::http::header::ALLOW, allow.as_str()));
            }
            _ => {}
        }
        match self {
            ApiError::QueueFull {
                retry_after, limit, ..
            } => {
                builder.insert_header((
                    actix_web::http::header::RETRY_AFTER,
                    retry_after.to_string(),
                ));
                crate::http::insert_rate_limit(
                    &mut builder,
                    crate::admission::Quota {
                        limit: *limit,
                        remaining: 0,
                        reset: *retry_after,
                    },
                );
            }
            ApiError::Unavailable(_) => {
                builder.insert_header((
                    actix_web::http::header::RETRY_AFTER,
                    UNAVAILABLE_RETRY_AFTER_SECS.to_string(),
                ));
            }
            _ => {}
        }
        builder.json(Envelope {
            code: self.code(),
            msg,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error that answers 429 or 503 says when to come back.
    #[test]
    fn every_429_and_503_carries_retry_after() {
        let errors = [
            ApiError::QueueFull {
                queued: 7,
                limit: 5,
                retry_after: 12,
            },
            ApiError::Unavailable("database unavailable".into()),
            ApiError::from(RepoError::Unavailable("pool timed out".into())),
            ApiError::from(BlobError::Store("disk gone".into())),
        ];
        for error in errors {
            let response = error.error_response();
            let status = response.status();
            assert!(
                status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::SERVICE_UNAVAILABLE,
                "{error:?} answers {status}"
            );
            let retry_after = response
                .headers()
                .get(actix_web::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            assert!(
                retry_after.is_some_and(|s| s >= 1),
                "{error:?}: no Retry-After"
            );
        }
        let full = ApiError::QueueFull {
            queued: 7,
            limit: 5,
            retry_after: 12,
        }
        .error_response();
        let header = |name: &str| {
            full.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(header("ratelimit-limit").as_deref(), Some("5"));
        assert_eq!(header("ratelimit-remaining").as_deref(), Some("0"));
        assert_eq!(header("ratelimit-reset").as_deref(), Some("12"));
    }
}
