//! The operator's view of what happened and what it cost: a task's timeline
//! (`GET /tasks/{task_id}/events`), upstream spend (`GET /usage`), and the
//! retry of failed tasks by filter after an outage (`POST /admin/tasks/retry`,
//! also `modelgen tasks retry --failed …`). The timeline is written by the
//! repositories in the transaction of each change (docs/design.md, "Task
//! timeline"); this module only reads it.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use modelgen_domain::{FieldError, TaskStatus, format_timestamp};
use modelgen_persistence::{
    EventLog, IMPORT_FINGERPRINT_PREFIX, RepoError, TaskEventRecord, TaskQuery, TaskRepository,
    UsageGroup, UsageQuery,
};

use crate::error::{ApiError, Envelope};
use crate::http::HttpState;
use crate::service::{micros_to_units, parse_instant};

/// Most timeline entries `GET /tasks/{task_id}/events` returns (the oldest
/// ones). A task polled for `TASK_TIMEOUT` at the longest poll interval stays
/// far below it.
pub const MAX_EVENTS: i64 = 2000;
/// Longest range `GET /usage` sums, days.
pub const MAX_USAGE_DAYS: i64 = 366;
/// Most tasks one bulk retry takes; run it again for more (`more: true`).
pub const MAX_BULK_RETRY: usize = 1000;
/// Tasks read per page while a bulk retry collects its matches.
const RETRY_PAGE: i64 = 200;

/// One timeline entry, as `GET /tasks/{task_id}/events` shows it. Fields a
/// kind does not use are `null`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct EventView {
    /// Increasing with time for a task's entries (oldest first).
    pub seq: i64,
    /// When it was written, RFC 3339 UTC with milliseconds.
    #[schema(format = DateTime)]
    pub at: String,
    /// `created`, `claimed`, `submitted`, `submit_failed`, `polled`,
    /// `poll_failed`, `snoozed`, `downloaded`, `completed`, `failed`,
    /// `cancelled`, `retried`, `callback_attempt`, `callback_delivered`,
    /// `callback_dead` or `callback_redelivered`.
    #[schema(value_type = crate::openapi::EventKindSchema)]
    pub kind: String,
    /// The replica (worker lease owner, `host-pid-random`) that did it.
    pub replica: Option<String>,
    /// Submit attempt (`submitted`, `submit_failed`) or callback attempt
    /// (`callback_attempt`) number, from 1.
    pub attempt: Option<i32>,
    /// Apimart's task id.
    pub upstream_task_id: Option<String>,
    /// Apimart's status as a poll reported it (`pending`, `processing`,
    /// `completed`, `failed`, …).
    pub upstream_status: Option<String>,
    /// Progress a poll reported, 0–100.
    pub progress: Option<i32>,
    /// HTTP status of the upstream's or the callback receiver's answer.
    pub http_status: Option<i32>,
    /// How long that call took, milliseconds.
    pub latency_ms: Option<i64>,
    /// Envelope error code of a failure (`failed`: 1002).
    pub error_code: Option<i32>,
    /// Why: the upstream's or the receiver's error, a snooze reason, the
    /// failure message (at most 1000 characters).
    pub message: Option<String>,
}

impl From<&TaskEventRecord> for EventView {
    fn from(r: &TaskEventRecord) -> Self {
        let e = &r.event;
        EventView {
            seq: r.seq,
            at: format_timestamp(r.at),
            kind: e.kind.as_str().to_owned(),
            replica: e.replica.clone(),
            attempt: e.attempt,
            upstream_task_id: e.upstream_task_id.clone(),
            upstream_status: e.upstream_status.clone(),
            progress: e.progress,
            http_status: e.http_status,
            latency_ms: e.latency_ms,
            error_code: e.error_code,
            message: e.message.clone(),
        }
    }
}

/// `GET /tasks/{task_id}/events` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TaskEvents {
    /// The task.
    pub task_id: String,
    /// Its timeline, oldest first (entries older than `EVENT_RETENTION` are
    /// deleted).
    pub items: Vec<EventView>,
}

/// `GET /tasks/{task_id}/events`: the task's timeline.
#[utoipa::path(get, path = "/tasks/{task_id}/events", tag = "tasks",
    params(("task_id" = String, Path, max_length = 128, example = "task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W", description = "A task id. Unknown or malformed ids are 404/1003.")),
    responses(
        (status = 200, description = "`data.items`: the timeline, oldest first (at most 2000 entries)", body = Envelope<TaskEvents>),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = crate::error::ErrorEnvelope),
        (status = 404, description = "Unknown task (1003)", body = crate::error::ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn task_events(
    path: web::Path<String>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let id = state.service.find(&path).await?.task_id;
    let items = state
        .events
        .events_for_task(&id, MAX_EVENTS)
        .await?
        .iter()
        .map(EventView::from)
        .collect();
    Ok(HttpResponse::Ok().json(Envelope::ok(
        "success",
        TaskEvents {
            task_id: id.to_string(),
            items,
        },
    )))
}

/// Query of `GET /usage`; all strings so every bad value is a 1001 field error.
#[derive(Debug, Deserialize)]
pub struct UsageParams {
    /// Only this user.
    pub user_id: Option<String>,
    /// Start (inclusive), RFC 3339.
    pub from: Option<String>,
    /// End (exclusive), RFC 3339.
    pub to: Option<String>,
    /// `day` or `type`.
    pub group_by: Option<String>,
}

/// One group of `GET /usage`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct UsageItem {
    /// `YYYY-MM-DD` (UTC day of completion) or the task type.
    pub key: String,
    /// Tasks completed.
    pub count: u64,
    /// Their summed upstream cost, in the Apimart account's balance unit
    /// (docs/apimart.md, "Cost"); tasks without a reported cost add 0.
    pub cost: f64,
    /// How many of them reported a cost.
    pub costed: u64,
}

/// `GET /usage` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct UsageReport {
    /// `day` or `type`.
    #[schema(schema_with = crate::openapi::usage_group_schema)]
    pub group_by: String,
    /// The range summed: `[from, to)`, RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub from: String,
    /// End of the range (exclusive).
    #[schema(format = DateTime)]
    pub to: String,
    /// The user asked for, if any.
    pub user_id: Option<String>,
    /// Groups in key order; groups without completed tasks are left out.
    pub items: Vec<UsageItem>,
    /// Tasks completed in the range.
    pub total_count: u64,
    /// Their summed cost.
    pub total_cost: f64,
}

/// `GET /usage`: tasks completed in `[from, to)` and what the upstream
/// charged for them, by UTC day or by task type.
#[utoipa::path(get, path = "/usage", tag = "tasks",
    params(
        ("user_id" = Option<String>, Query, description = "Only this user's tasks"),
        ("from" = Option<String>, Query, description = "Start, inclusive (RFC 3339, e.g. `2026-12-01T00:00:00Z`); default: `to` minus 30 days"),
        ("to" = Option<String>, Query, description = "End, exclusive (RFC 3339); default: now. At most 366 days after `from`"),
        ("group_by" = Option<String>, Query, description = "`day` (default) or `type`"),
    ),
    responses(
        (status = 200, description = "Count and cost per group", body = Envelope<UsageReport>),
        (status = 400, description = "Bad user id, time, range or group (1001)", body = crate::error::ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = crate::error::ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn usage(
    query: web::Query<UsageParams>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let report = usage_report(&*state.events, query.into_inner(), Utc::now()).await?;
    Ok(HttpResponse::Ok().json(Envelope::ok("success", report)))
}

/// Checks `params` (every bad field at once) and sums the usage at `now`.
///
/// # Errors
/// [`ApiError::Invalid`] naming the bad fields; database errors.
pub async fn usage_report(
    events: &dyn EventLog,
    params: UsageParams,
    now: DateTime<Utc>,
) -> Result<UsageReport, ApiError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let user_id = nonempty(params.user_id);
    if let Some(u) = &user_id
        && (u.chars().count() > 64 || u.chars().any(char::is_control))
    {
        errors.push(field(
            "user_id",
            "must be 1–64 characters without control characters",
        ));
    }
    let to = match nonempty(params.to) {
        Some(v) => parse_instant(&v, "to").map_err(|e| errors.push(e)).ok(),
        None => Some(now),
    };
    let from = match nonempty(params.from) {
        Some(v) => parse_instant(&v, "from").map_err(|e| errors.push(e)).ok(),
        None => to.map(|t| t - TimeDelta::days(30)),
    };
    let group_by = match nonempty(params.group_by).as_deref() {
        None | Some("day") => Some(UsageGroup::Day),
        Some("type") => Some(UsageGroup::Type),
        Some(_) => {
            errors.push(field("group_by", "must be day or type"));
            None
        }
    };
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            errors.push(field("from", "must be before `to`"));
        } else if to - from > TimeDelta::days(MAX_USAGE_DAYS) {
            errors.push(field(
                "to",
                format!("the range is at most {MAX_USAGE_DAYS} days"),
            ));
        }
    }
    let (Some(from), Some(to), Some(group_by), true) = (from, to, group_by, errors.is_empty())
    else {
        return Err(ApiError::Invalid(errors));
    };
    let rows = events
        .usage(&UsageQuery {
            user_id: user_id.clone(),
            from,
            to,
            group_by,
        })
        .await?;
    let total_count = rows.iter().map(|r| r.count).sum();
    let total_micros: i64 = rows
        .iter()
        .fold(0_i64, |sum, r| sum.saturating_add(r.cost_micros));
    Ok(UsageReport {
        group_by: match group_by {
            UsageGroup::Day => "day",
            UsageGroup::Type => "type",
        }
        .to_owned(),
        from: format_timestamp(from),
        to: format_timestamp(to),
        user_id,
        items: rows
            .into_iter()
            .map(|r| UsageItem {
                key: r.key,
                count: r.count,
                cost: micros_to_units(r.cost_micros),
                costed: r.costed,
            })
            .collect(),
        total_count,
        total_cost: micros_to_units(total_micros),
    })
}

fn field(name: &str, message: impl ToString) -> FieldError {
    FieldError {
        field: name.into(),
        message: message.to_string(),
    }
}

/// `POST /admin/tasks/retry` body: which failed tasks to put back in the
/// queue. Every filter given must hold; with none, every failed task (at most
/// [`MAX_BULK_RETRY`], newest first).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryFilter {
    /// Only this user's tasks.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Only tasks failed with this `error_code` (e.g. 1002).
    #[serde(default)]
    pub error_code: Option<i32>,
    /// Only tasks that failed at or after this instant (RFC 3339).
    #[serde(default)]
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// Only tasks that failed before this instant (RFC 3339).
    #[serde(default)]
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// Only say which tasks would be retried; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A task a bulk retry left alone, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RetrySkip {
    /// The task.
    pub task_id: String,
    /// Why (its inputs were deleted, it was imported, it changed meanwhile).
    pub reason: String,
}

/// `POST /admin/tasks/retry` answer (also printed by `modelgen tasks retry --failed`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RetryReport {
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// Failed tasks the filter matched (at most 1000).
    pub matched: usize,
    /// Tasks put back in the queue (a dry run: that would be).
    pub retried: usize,
    /// Their ids, newest first.
    pub task_ids: Vec<String>,
    /// Matched tasks that could not be retried, and why.
    pub skipped: Vec<RetrySkip>,
    /// More failed tasks match than one call takes: run it again.
    pub more: bool,
}

/// The filter, checked: a [`TaskQuery`] for failed tasks.
///
/// # Errors
/// [`ApiError::Invalid`] naming every bad field.
pub fn retry_query(filter: &RetryFilter) -> Result<TaskQuery, ApiError> {
    let mut errors = Vec::new();
    let since = filter
        .since
        .as_deref()
        .and_then(|v| parse_instant(v, "since").map_err(|e| errors.push(e)).ok());
    let until = filter
        .until
        .as_deref()
        .and_then(|v| parse_instant(v, "until").map_err(|e| errors.push(e)).ok());
    if let Some(u) = &filter.user_id
        && (u.is_empty() || u.chars().count() > 64 || u.chars().any(char::is_control))
    {
        errors.push(field(
            "user_id",
            "must be 1–64 characters without control characters",
        ));
    }
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        errors.push(field("since", "must be before `until`"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    Ok(TaskQuery {
        user_id: filter.user_id.clone(),
        status: Some(TaskStatus::Failed),
        error_code: filter.error_code,
        ended_since: since,
        ended_until: until,
        limit: RETRY_PAGE,
        ..TaskQuery::default()
    })
}

/// Retries (or, with `dry_run`, lists) the failed tasks `query` matches, at
/// most [`MAX_BULK_RETRY`], newest first. Each retry is its own transaction
/// ([`TaskRepository::retry_task`]): a task that cannot be retried is
/// reported in `skipped` and the others go on.
///
/// # Errors
/// Database errors while listing (retries already made stay made).
pub async fn retry_failed(
    tasks: &Arc<dyn TaskRepository>,
    mut query: TaskQuery,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<RetryReport, RepoError> {
    let mut matched = Vec::new();
    let mut more = false;
    loop {
        let page = tasks.list_tasks(&query).await?;
        let Some(last) = page.last() else { break };
        query.before = Some(last.task_id);
        let full = page.len() as i64 == query.limit;
        for task in page {
            if matched.len() == MAX_BULK_RETRY {
                more = true;
                break;
            }
            matched.push(task);
        }
        if more || !full {
            break;
        }
    }
    let mut report = RetryReport {
        dry_run,
        matched: matched.len(),
        retried: 0,
        task_ids: Vec::new(),
        skipped: Vec::new(),
        more,
    };
    for task in matched {
        let id = task.task_id.to_string();
        if dry_run {
            if task
                .request_fingerprint
                .as_deref()
                .is_some_and(|f| f.starts_with(IMPORT_FINGERPRINT_PREFIX))
            {
                report.skipped.push(RetrySkip {
                    task_id: id,
                    reason: "imported from the earlier service, which kept no inputs to run it"
                        .into(),
                });
                continue;
            }
            match task.inputs_gone_since() {
                Some(at) => report.skipped.push(RetrySkip {
                    task_id: id,
                    reason: format!("its input images were deleted at {}", format_timestamp(at)),
                }),
                None => report.task_ids.push(id),
            }
            continue;
        }
        match tasks.retry_task(&task.task_id, now).await {
            Ok(_) => report.task_ids.push(id),
            Err(RepoError::InputsPurged { purged_at }) => report.skipped.push(RetrySkip {
                task_id: id,
                reason: format!(
                    "its input images were deleted at {}",
                    format_timestamp(purged_at)
                ),
            }),
            Err(RepoError::Conflict(reason)) => report.skipped.push(RetrySkip {
                task_id: id,
                reason,
            }),
            Err(RepoError::NotFound) => report.skipped.push(RetrySkip {
                task_id: id,
                reason: "no longer exists".into(),
            }),
            Err(e) => return Err(e),
        }
    }
    report.retried = report.task_ids.len();
    if !dry_run && report.retried > 0 {
        metrics::counter!("tasks_retried_total").increment(report.retried as u64);
    }
    Ok(report)
}

/// `POST /admin/tasks/retry`: put failed tasks back in the queue by filter,
/// after an outage (a bad key, an empty balance). They keep their ids; their
/// next callback has event type `task.retry_<status>`, and the earlier
/// callback's record is kept.
#[utoipa::path(post, path = "/admin/tasks/retry", tag = "admin",
    request_body = RetryFilter,
    responses(
        (status = 200, description = "What was (or, with `dry_run`, would be) retried", body = Envelope<RetryReport>),
        (status = 400, description = "Bad filter (1001)", body = crate::error::ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = crate::error::ErrorEnvelope),
        (status = 415, description = "Not `application/json` (1008)", body = crate::error::ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn retry_tasks(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let filter: RetryFilter = crate::http::json_body(&req, payload, state.max_body_bytes).await?;
    let query = retry_query(&filter)?;
    let report = retry_failed(&state.service.tasks, query, filter.dry_run, Utc::now()).await?;
    if report.retried > 0 && !report.dry_run {
        state.service.wake.notify_one();
        tracing::info!(
            action = "bulk_retry",
            retried = report.retried,
            skipped = report.skipped.len(),
            "failed tasks put back in the queue"
        );
    }
    Ok(HttpResponse::Ok().json(Envelope::ok("success", report)))
}
