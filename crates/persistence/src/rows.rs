//! Row structs as diesel sees them, and their conversion to and from the domain
//! records in [`crate::models`]. Everything that can fail when reading a row back
//! fails with [`RepoError::Corrupt`] naming the row.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Timelike, Utc};
use diesel::prelude::*;
use modelgen_domain::{Angle, Progress, TaskId, TaskStatus, TaskType};

use crate::error::RepoError;
use crate::models::{
    CallbackRecord, CallbackStatus, EventKind, IMPORT_FINGERPRINT_PREFIX, ImageLocation,
    ImageRecord, ImportedImage, ImportedTask, MAX_EVENT_MESSAGE_CHARS, NewImage, NewTask,
    NewTaskEvent, TaskEventRecord, TaskRecord,
};
use crate::schema::{ai_generation_image, ai_generation_task, callback_delivery, task_events};

/// Earliest instant stored: `0001-01-01T00:00:00Z`. Earlier instants would print
/// with a sign in SQLite's text encoding and break its text ordering.
const MIN_STORED_YEAR: i32 = 1;
/// Latest instant stored: the end of year 9999, for the same reason.
const MAX_STORED_YEAR: i32 = 9999;

/// Converts a domain timestamp into the stored form: naive UTC, truncated to whole
/// microseconds (PostgreSQL's and MySQL's `DATETIME(6)` precision, so that every
/// backend returns exactly what was written) and clamped to years 1..=9999.
pub(crate) fn to_db(t: DateTime<Utc>) -> NaiveDateTime {
    let naive = t.naive_utc();
    let min = NaiveDate::from_ymd_opt(MIN_STORED_YEAR, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or(NaiveDateTime::MIN);
    let max = NaiveDate::from_ymd_opt(MAX_STORED_YEAR, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .unwrap_or(NaiveDateTime::MAX);
    let clamped = naive.clamp(min, max);
    let nanos = clamped.nanosecond();
    clamped
        .with_nanosecond(nanos - nanos % 1_000)
        .unwrap_or(clamped)
}

/// A domain timestamp truncated the way [`to_db`] stores it.
pub(crate) fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    from_db(to_db(t))
}

/// Reads a stored timestamp back as UTC.
pub(crate) fn from_db(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

/// `now + d`, saturating instead of overflowing (a lease of `Duration::MAX` is
/// "forever", not an error).
pub(crate) fn add(now: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A row of `ai_generation_task`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ai_generation_task)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg, diesel::mysql::Mysql))]
pub(crate) struct TaskRow {
    pub task_id: String,
    pub request_id: Option<String>,
    pub user_id: String,
    pub task_type: String,
    pub base_model_task_id: Option<String>,
    pub angle: Option<String>,
    pub size: String,
    pub prompt: String,
    pub model: String,
    pub input_images: String,
    pub request_fingerprint: Option<String>,
    pub external_task_id: Option<String>,
    pub status: String,
    pub progress: i32,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub submit_attempts: i32,
    pub poll_count: i32,
    pub next_run_at: NaiveDateTime,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub completed_at: Option<NaiveDateTime>,
    pub started_at: Option<NaiveDateTime>,
    pub inputs_purged_at: Option<NaiveDateTime>,
    pub purged_at: Option<NaiveDateTime>,
    pub submitted_at: Option<NaiveDateTime>,
    pub queue_rank: Option<i64>,
    pub cost_micros: Option<i64>,
    pub retries: i32,
    pub callback_url: Option<String>,
}

/// The columns `update_task` may change, written all at once (`None` writes NULL).
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = ai_generation_task, treat_none_as_null = true)]
pub(crate) struct TaskUpdateRow {
    pub external_task_id: Option<String>,
    pub status: String,
    pub progress: i32,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub submit_attempts: i32,
    pub poll_count: i32,
    pub next_run_at: NaiveDateTime,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<NaiveDateTime>,
    pub updated_at: NaiveDateTime,
    pub completed_at: Option<NaiveDateTime>,
    pub submitted_at: Option<NaiveDateTime>,
    pub queue_rank: Option<i64>,
    pub cost_micros: Option<i64>,
}

fn corrupt(id: &str, reason: impl std::fmt::Display) -> RepoError {
    RepoError::Corrupt {
        id: id.to_owned(),
        reason: reason.to_string(),
    }
}

fn parse_task_id(row_id: &str, value: &str) -> Result<TaskId, RepoError> {
    value
        .parse()
        .map_err(|e| corrupt(row_id, format!("task id `{value}`: {e}")))
}

fn parse_angle(row_id: &str, value: Option<&str>) -> Result<Option<Angle>, RepoError> {
    value
        .map(|a| {
            a.parse()
                .map_err(|e| corrupt(row_id, format!("angle: {e}")))
        })
        .transpose()
}

impl TaskRow {
    /// The row of a freshly inserted task (`submitted`, 0 %, due at creation),
    /// queued at `queue_rank` ([`crate::fair::queue_rank`]).
    pub(crate) fn from_new(task: &NewTask, queue_rank: i64) -> Result<Self, RepoError> {
        let created = to_db(task.created_at);
        let input_images = serde_json::to_string(&task.input_images)
            .map_err(|e| corrupt(&task.task_id.to_string(), format!("input_images: {e}")))?;
        Ok(TaskRow {
            task_id: task.task_id.to_string(),
            request_id: task.request_id.clone(),
            user_id: task.user_id.clone(),
            task_type: task.task_type.as_str().to_owned(),
            base_model_task_id: task.base_model_task_id.map(|id| id.to_string()),
            angle: task.angle.map(|a| a.as_str().to_owned()),
            size: task.size.clone(),
            prompt: task.prompt.clone(),
            model: task.model.clone(),
            input_images,
            request_fingerprint: task.request_fingerprint.clone(),
            external_task_id: None,
            status: TaskStatus::Submitted.as_str().to_owned(),
            progress: 0,
            error_code: None,
            error_message: None,
            submit_attempts: 0,
            poll_count: 0,
            next_run_at: created,
            lease_owner: None,
            lease_expires_at: None,
            created_at: created,
            updated_at: created,
            completed_at: None,
            started_at: None,
            inputs_purged_at: None,
            purged_at: None,
            submitted_at: None,
            queue_rank: Some(queue_rank),
            cost_micros: None,
            retries: 0,
            callback_url: task.callback_url.clone(),
        })
    }

    /// The domain record, or [`RepoError::Corrupt`] when a column holds a value
    /// the domain types reject.
    pub(crate) fn into_record(self) -> Result<TaskRecord, RepoError> {
        let id = self.task_id.as_str();
        let status: TaskStatus = self
            .status
            .parse()
            .map_err(|e| corrupt(id, format!("status: {e}")))?;
        let task_type: TaskType = self
            .task_type
            .parse()
            .map_err(|e| corrupt(id, format!("task_type: {e}")))?;
        if !(0..=100).contains(&self.progress) {
            return Err(corrupt(
                id,
                format!("progress {} out of 0..=100", self.progress),
            ));
        }
        let input_images: Vec<String> = serde_json::from_str(&self.input_images)
            .map_err(|e| corrupt(id, format!("input_images: {e}")))?;
        Ok(TaskRecord {
            task_id: parse_task_id(id, id)?,
            base_model_task_id: self
                .base_model_task_id
                .as_deref()
                .map(|b| parse_task_id(id, b))
                .transpose()?,
            angle: parse_angle(id, self.angle.as_deref())?,
            request_id: self.request_id,
            user_id: self.user_id,
            task_type,
            size: self.size,
            prompt: self.prompt,
            model: self.model,
            input_images,
            request_fingerprint: self.request_fingerprint,
            external_task_id: self.external_task_id,
            status,
            progress: Progress::clamped(i64::from(self.progress)),
            error_code: self.error_code,
            error_message: self.error_message,
            submit_attempts: self.submit_attempts,
            poll_count: self.poll_count,
            next_run_at: from_db(self.next_run_at),
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at.map(from_db),
            created_at: from_db(self.created_at),
            updated_at: from_db(self.updated_at),
            completed_at: self.completed_at.map(from_db),
            started_at: self.started_at.map(from_db),
            inputs_purged_at: self.inputs_purged_at.map(from_db),
            purged_at: self.purged_at.map(from_db),
            submitted_at: self.submitted_at.map(from_db),
            queue_rank: self.queue_rank,
            cost_micros: self.cost_micros,
            retries: self.retries,
            callback_url: self.callback_url,
        })
    }
}

/// Converts rows in order, failing on the first corrupt one.
pub(crate) fn task_records(rows: Vec<TaskRow>) -> Result<Vec<TaskRecord>, RepoError> {
    rows.into_iter().map(TaskRow::into_record).collect()
}

/// A row of `ai_generation_image` as read back, without `image_base64` (which
/// can be megabytes and is read only on request).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ai_generation_image)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg, diesel::mysql::Mysql))]
pub(crate) struct ImageRow {
    pub id: i64,
    pub task_id: String,
    pub angle: Option<String>,
    pub storage_key: Option<String>,
    pub remote_url: Option<String>,
    pub mime: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub bytes: Option<i64>,
    pub created_at: NaiveDateTime,
}

/// A row of `ai_generation_image` to insert (the id is assigned by the database).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = ai_generation_image)]
pub(crate) struct NewImageRow {
    pub task_id: String,
    pub angle: Option<String>,
    pub storage_key: Option<String>,
    pub remote_url: Option<String>,
    pub image_base64: Option<String>,
    pub mime: Option<String>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub bytes: Option<i64>,
    pub created_at: NaiveDateTime,
}

impl From<&NewImage> for NewImageRow {
    fn from(image: &NewImage) -> Self {
        NewImageRow {
            task_id: image.task_id.to_string(),
            angle: image.angle.map(|a| a.as_str().to_owned()),
            storage_key: image.location.storage_key().map(str::to_owned),
            remote_url: image.location.remote_url().map(str::to_owned),
            image_base64: image.image_base64.clone(),
            mime: image.mime.clone(),
            width: image.width,
            height: image.height,
            bytes: image.bytes,
            created_at: to_db(image.created_at),
        }
    }
}

impl ImageRow {
    /// The domain record; [`RepoError::Corrupt`] when the row has neither (or
    /// both) a storage key and a remote URL.
    pub(crate) fn into_record(self) -> Result<ImageRecord, RepoError> {
        let row_id = format!("image {}", self.id);
        let location = match (self.storage_key, self.remote_url) {
            (Some(key), None) => ImageLocation::Stored(key),
            (None, Some(url)) => ImageLocation::Remote(url),
            _ => {
                return Err(corrupt(
                    &row_id,
                    "exactly one of storage_key and remote_url must be set",
                ));
            }
        };
        Ok(ImageRecord {
            id: self.id,
            task_id: parse_task_id(&row_id, &self.task_id)?,
            angle: parse_angle(&row_id, self.angle.as_deref())?,
            location,
            mime: self.mime,
            width: self.width,
            height: self.height,
            bytes: self.bytes,
            created_at: from_db(self.created_at),
        })
    }
}

/// A row of `callback_delivery`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = callback_delivery)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg, diesel::mysql::Mysql))]
pub(crate) struct CallbackRow {
    pub event_id: String,
    pub task_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub delivered_at: Option<NaiveDateTime>,
    pub run: i32,
}

/// Prefix of outbox event ids (`evt_` + ULID), sent as `webhook-id`.
pub(crate) const EVENT_ID_PREFIX: &str = "evt_";

impl CallbackRow {
    /// A fresh `pending` outbox row for `task_id`'s terminal `status` in
    /// its run `run` (the task's `retries`), due at `now`.
    pub(crate) fn pending(task_id: &str, status: TaskStatus, now: NaiveDateTime, run: i32) -> Self {
        CallbackRow {
            event_id: format!("{EVENT_ID_PREFIX}{}", ulid::Ulid::generate()),
            task_id: task_id.to_owned(),
            event_type: event_type(status, run),
            run,
            status: CallbackStatus::Pending.as_str().to_owned(),
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            lease_owner: None,
            lease_expires_at: None,
            created_at: now,
            updated_at: now,
            delivered_at: None,
        }
    }

    /// The domain record.
    pub(crate) fn into_record(self) -> Result<CallbackRecord, RepoError> {
        let id = self.event_id.as_str();
        let status = match self.status.as_str() {
            "pending" => CallbackStatus::Pending,
            "delivered" => CallbackStatus::Delivered,
            "dead" => CallbackStatus::Dead,
            other => return Err(corrupt(id, format!("callback status `{other}`"))),
        };
        Ok(CallbackRecord {
            task_id: parse_task_id(id, &self.task_id)?,
            event_id: self.event_id,
            event_type: self.event_type,
            status,
            attempts: self.attempts,
            next_attempt_at: from_db(self.next_attempt_at),
            last_error: self.last_error,
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at.map(from_db),
            created_at: from_db(self.created_at),
            updated_at: from_db(self.updated_at),
            delivered_at: self.delivered_at.map(from_db),
            run: self.run,
        })
    }
}

/// Converts rows in order, failing on the first corrupt one.
pub(crate) fn callback_records(rows: Vec<CallbackRow>) -> Result<Vec<CallbackRecord>, RepoError> {
    rows.into_iter().map(CallbackRow::into_record).collect()
}

/// The outbox event type of a terminal status: `task.completed`, `task.failed`,
/// `task.cancelled` for a task's first run; `task.retry_completed`,
/// `task.retry_failed`, `task.retry_cancelled` for a run an operator retried
/// (`run` > 0).
pub(crate) fn event_type(status: TaskStatus, run: i32) -> String {
    if run > 0 {
        format!("task.retry_{}", status.as_str())
    } else {
        format!("task.{}", status.as_str())
    }
}

/// A row of `task_events` to insert (`seq` is the database's).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = task_events, treat_none_as_default_value = false)]
pub(crate) struct NewEventRow {
    pub task_id: String,
    pub at: NaiveDateTime,
    pub kind: String,
    pub replica: Option<String>,
    pub attempt: Option<i32>,
    pub upstream_task_id: Option<String>,
    pub upstream_status: Option<String>,
    pub progress: Option<i32>,
    pub http_status: Option<i32>,
    pub latency_ms: Option<i64>,
    pub error_code: Option<i32>,
    pub message: Option<String>,
}

impl NewEventRow {
    /// The row of `event` about `task_id`, written at `at`.
    pub(crate) fn new(task_id: &str, at: NaiveDateTime, event: &NewTaskEvent) -> Self {
        NewEventRow {
            task_id: task_id.to_owned(),
            at,
            kind: event.kind.as_str().to_owned(),
            replica: event.replica.clone(),
            attempt: event.attempt,
            upstream_task_id: event.upstream_task_id.clone(),
            upstream_status: event.upstream_status.clone(),
            progress: event.progress,
            http_status: event.http_status,
            latency_ms: event.latency_ms,
            error_code: event.error_code,
            message: event
                .message
                .as_ref()
                .map(|m| m.chars().take(MAX_EVENT_MESSAGE_CHARS).collect()),
        }
    }
}

/// A row of `task_events` as read back.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = task_events)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg, diesel::mysql::Mysql))]
pub(crate) struct EventRow {
    pub seq: i64,
    pub task_id: String,
    pub at: NaiveDateTime,
    pub kind: String,
    pub replica: Option<String>,
    pub attempt: Option<i32>,
    pub upstream_task_id: Option<String>,
    pub upstream_status: Option<String>,
    pub progress: Option<i32>,
    pub http_status: Option<i32>,
    pub latency_ms: Option<i64>,
    pub error_code: Option<i32>,
    pub message: Option<String>,
}

impl EventRow {
    /// The domain record, or [`RepoError::Corrupt`] for an unknown kind.
    pub(crate) fn into_record(self) -> Result<TaskEventRecord, RepoError> {
        let row_id = format!("task_events#{}", self.seq);
        let kind = EventKind::parse(&self.kind)
            .ok_or_else(|| corrupt(&row_id, format!("event kind `{}`", self.kind)))?;
        Ok(TaskEventRecord {
            seq: self.seq,
            task_id: parse_task_id(&row_id, &self.task_id)?,
            at: from_db(self.at),
            event: NewTaskEvent {
                kind,
                replica: self.replica,
                attempt: self.attempt,
                upstream_task_id: self.upstream_task_id,
                upstream_status: self.upstream_status,
                progress: self.progress,
                http_status: self.http_status,
                latency_ms: self.latency_ms,
                error_code: self.error_code,
                message: self.message,
            },
        })
    }
}

/// The columns an import writes on an earlier imported task (`None` writes NULL).
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = ai_generation_task, treat_none_as_null = true)]
pub(crate) struct ImportUpdateRow {
    pub request_id: Option<String>,
    pub user_id: String,
    pub task_type: String,
    pub base_model_task_id: Option<String>,
    pub angle: Option<String>,
    pub request_fingerprint: Option<String>,
    pub external_task_id: Option<String>,
    pub status: String,
    pub progress: i32,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    pub next_run_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub completed_at: Option<NaiveDateTime>,
    pub started_at: Option<NaiveDateTime>,
    pub submitted_at: Option<NaiveDateTime>,
    pub queue_rank: Option<i64>,
}

impl TaskRow {
    /// The row of an imported task. `schedule` is `(next_run_at, started_at)`,
    /// `queue_rank` its place in the submit queue (see
    /// [`ImportUpdateRow::from_imported`]). The source keeps no prompt, model,
    /// size or inputs: those are empty.
    pub(crate) fn from_imported(
        task: &ImportedTask,
        schedule: (NaiveDateTime, Option<NaiveDateTime>),
        queue_rank: Option<i64>,
    ) -> Self {
        let update = ImportUpdateRow::from_imported(task, schedule, queue_rank);
        TaskRow {
            task_id: task.task_id.to_string(),
            request_id: update.request_id,
            user_id: update.user_id,
            task_type: update.task_type,
            base_model_task_id: update.base_model_task_id,
            angle: update.angle,
            size: String::new(),
            prompt: String::new(),
            model: String::new(),
            input_images: "[]".to_owned(),
            request_fingerprint: update.request_fingerprint,
            external_task_id: update.external_task_id,
            status: update.status,
            progress: update.progress,
            error_code: update.error_code,
            error_message: update.error_message,
            submit_attempts: 0,
            poll_count: 0,
            next_run_at: update.next_run_at,
            lease_owner: None,
            lease_expires_at: None,
            created_at: update.created_at,
            updated_at: update.updated_at,
            completed_at: update.completed_at,
            started_at: update.started_at,
            inputs_purged_at: None,
            purged_at: None,
            submitted_at: update.submitted_at,
            queue_rank: update.queue_rank,
            cost_micros: None,
            retries: 0,
            callback_url: None,
        }
    }
}

impl ImportUpdateRow {
    /// The source's fields of `task`, with `schedule` = `(next_run_at,
    /// started_at)` and `queue_rank` (`Some` only for a task that waits to be
    /// submitted here: resumed, `submitted`, without an upstream id).
    pub(crate) fn from_imported(
        task: &ImportedTask,
        schedule: (NaiveDateTime, Option<NaiveDateTime>),
        queue_rank: Option<i64>,
    ) -> Self {
        ImportUpdateRow {
            request_id: task.request_id.clone(),
            user_id: task.user_id.clone(),
            task_type: task.task_type.as_str().to_owned(),
            base_model_task_id: task.base_model_task_id.map(|id| id.to_string()),
            angle: task.angle.map(|a| a.as_str().to_owned()),
            request_fingerprint: Some(format!("{IMPORT_FINGERPRINT_PREFIX}{}", task.source)),
            external_task_id: task.external_task_id.clone(),
            status: task.status.as_str().to_owned(),
            progress: i32::from(task.progress.get()),
            error_code: task.error_code,
            error_message: task.error_message.clone(),
            next_run_at: schedule.0,
            created_at: to_db(task.created_at),
            updated_at: to_db(task.updated_at),
            completed_at: task.completed_at.map(to_db),
            started_at: schedule.1,
            // The earlier service submitted upstream when it created a task:
            // one with an upstream id was accepted then, or, resumed here,
            // counts its TASK_TIMEOUT from the resume (`started_at`). It is
            // never in the submit queue (nor counted by admission control).
            submitted_at: task
                .external_task_id
                .as_ref()
                .map(|_| schedule.1.unwrap_or_else(|| to_db(task.created_at))),
            queue_rank,
        }
    }
}

impl NewImageRow {
    /// The row of an imported task's image.
    pub(crate) fn from_imported(task_id: &TaskId, image: &ImportedImage) -> Self {
        NewImageRow {
            task_id: task_id.to_string(),
            angle: image.angle.map(|a| a.as_str().to_owned()),
            storage_key: image.location.storage_key().map(str::to_owned),
            remote_url: image.location.remote_url().map(str::to_owned),
            image_base64: None,
            mime: image.mime.clone(),
            width: image.width,
            height: image.height,
            bytes: image.bytes,
            created_at: to_db(image.created_at),
        }
    }
}
