//! People's photos are personal data (README, "Personal data"). Two
//! operations keep them only as long as needed:
//!
//! - **Input retention.** Uploaded input images (`inputs/<task>/…`) are needed
//!   only while their task runs. `INPUT_RETENTION` after a task ends, a
//!   cleanup that runs by itself on every worker replica deletes them. It is
//!   leader-free: each replica claims bounded batches of due tasks under a
//!   lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), deletes their blobs
//!   (deleting a missing blob is not an error, so a crashed replica's batch
//!   is simply done again by the next one once its claim expires), then marks
//!   each task `inputs_purged_at`. Result images are never touched by it: a
//!   base model's result is the input of later edit and outfit tasks.
//! - **Erasure of a user's data** (`modelgen users purge <user_id>`,
//!   `DELETE /admin/users/{user_id}/data`). The user's running tasks are
//!   cancelled first (with their callback, as a client cancel), so no worker
//!   writes an image afterwards; then for each task its uploaded inputs and
//!   its result images are deleted from the blob store, and the row keeps
//!   only what accounting needs (ids, type, status, timestamps, counters):
//!   image rows go, prompt (which embeds the body profile), input references,
//!   payload digest and error message are blanked. Idempotent: running it
//!   again finds nothing more to delete. Tasks created after it started are
//!   not covered; stop the client's traffic for the user first.
//!
//! Both write a structured audit event (`event=modelgen.audit`) with counts
//! and no personal data beyond the user id.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use modelgen_domain::{TaskEvent, TaskId, TransitionError};
use modelgen_persistence::{
    BlobError, BlobStore, DataRetention, EventKind, EventLog, Fence, ImageRepository, NewTaskEvent,
    RepoError, TaskChange, TaskQuery, TaskRecord, TaskRepository,
};

use crate::error::{ApiError, Envelope};
use crate::http::HttpState;
use crate::ports::Clock;

/// Timeline entries deleted per transaction of the timeline retention
/// cleanup: short enough not to hold a writer (SQLite's one write lock).
pub const EVENT_PURGE_BATCH: i64 = 1000;
/// Tasks claimed per input retention batch: one short transaction each.
pub const RETENTION_BATCH: i64 = 100;
/// Most batches one sweep works through before it yields to the next
/// interval (10 000 tasks), so a large backlog is worked off in steps.
pub const RETENTION_MAX_BATCHES: usize = 100;
/// How long a retention claim holds a batch: far more than deleting a
/// hundred tasks' blobs takes; a crashed replica's batch is retried after it.
pub const RETENTION_CLAIM: Duration = Duration::from_secs(300);
/// Tasks of a user read per page during an erasure.
pub const PURGE_PAGE: i64 = 100;
/// Longest user id accepted by the erasure (as on task creation).
pub const MAX_USER_ID_CHARS: usize = 64;

/// The personal-data operations, over the repository and blob store seams.
#[derive(Clone)]
pub struct Privacy {
    /// Tasks (listing, cancel).
    pub tasks: Arc<dyn TaskRepository>,
    /// Result image rows (their blob keys).
    pub images: Arc<dyn ImageRepository>,
    /// Claims, marks and erasure.
    pub retention: Arc<dyn DataRetention>,
    /// Image bytes.
    pub blobs: Arc<dyn BlobStore>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Identity written into retention claims (the replica's lease owner).
    pub owner: String,
    /// Whether a cancel enqueues the task's callback.
    pub callbacks_enabled: bool,
    /// Task timelines, swept by `EVENT_RETENTION`.
    pub events: Arc<dyn EventLog>,
}

/// What one input retention sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Tasks marked `inputs_purged_at`.
    pub tasks: u64,
    /// Input images deleted from the blob store.
    pub input_images: u64,
    /// Tasks left for a later sweep because a blob could not be deleted.
    pub failed: u64,
}

/// What an erasure removed, or would remove in a dry run. Counts only, so it
/// can be logged and answered as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PurgeReport {
    /// The user.
    pub user_id: String,
    /// `true` when nothing was changed (the counts say what would be).
    pub dry_run: bool,
    /// The user's tasks found.
    pub tasks: u64,
    /// Running tasks cancelled first.
    pub cancelled: u64,
    /// Uploaded input images deleted.
    pub input_images: u64,
    /// Result images deleted.
    pub result_images: u64,
    /// Image rows deleted.
    pub image_rows: u64,
    /// Tasks whose data had been erased before (nothing more to delete).
    pub already_erased: u64,
    /// In a dry run, each task with the blob keys that would be deleted
    /// (keys name task ids only); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub items: Vec<PurgeItem>,
}

/// One task of a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PurgeItem {
    /// Task id.
    pub task_id: String,
    /// Current status.
    #[schema(value_type = modelgen_domain::openapi::TaskStatusSchema)]
    pub status: String,
    /// Whether it would be cancelled first.
    pub cancel: bool,
    /// Blob keys of uploaded inputs that would be deleted.
    pub input_images: Vec<String>,
    /// Blob keys of results that would be deleted.
    pub result_images: Vec<String>,
}

/// Why an erasure stopped. What it did so far stays done; running it again
/// finishes the job.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// The user id is empty, too long or has control characters.
    #[error("invalid user_id: {0}")]
    InvalidUser(String),
    /// The database failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The blob store failed.
    #[error("blob store: {0}")]
    Blob(#[from] BlobError),
}

impl From<PurgeError> for ApiError {
    fn from(e: PurgeError) -> Self {
        match e {
            PurgeError::InvalidUser(why) => ApiError::field("user_id", why),
            PurgeError::Repo(e) => e.into(),
            PurgeError::Blob(e) => ApiError::Internal(e.into()),
        }
    }
}

/// Who asked for an erasure, for the audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// `modelgen users purge`.
    Cli,
    /// `DELETE /admin/users/{user_id}/data`.
    AdminApi,
}

impl Actor {
    fn as_str(self) -> &'static str {
        match self {
            Actor::Cli => "cli",
            Actor::AdminApi => "admin_api",
        }
    }
}

/// Checks a user id as task creation does: 1 to 64 characters, no control
/// characters.
fn check_user_id(user_id: &str) -> Result<(), PurgeError> {
    if user_id.trim().is_empty() {
        return Err(PurgeError::InvalidUser("is required".into()));
    }
    if user_id.chars().count() > MAX_USER_ID_CHARS {
        return Err(PurgeError::InvalidUser(format!(
            "must be 1 to {MAX_USER_ID_CHARS} characters"
        )));
    }
    if user_id.chars().any(char::is_control) {
        return Err(PurgeError::InvalidUser(
            "must not contain control characters".into(),
        ));
    }
    Ok(())
}

impl Privacy {
    /// Deletes the uploaded inputs of every task that ended at least
    /// `retention` before now, in claimed batches (at most
    /// [`RETENTION_MAX_BATCHES`]), and marks the tasks. A blob that cannot be
    /// deleted leaves its task unmarked; its claim expires and a later sweep
    /// (on any replica) tries again.
    ///
    /// # Errors
    /// When a claim fails (the database is down); work done so far stays.
    pub async fn sweep_inputs(&self, retention: Duration) -> Result<SweepReport, RepoError> {
        let mut report = SweepReport::default();
        for _ in 0..RETENTION_MAX_BATCHES {
            let now = self.clock.now();
            let cutoff = now - TimeDelta::from_std(retention).unwrap_or(TimeDelta::MAX);
            let batch = self
                .retention
                .claim_input_purges(&self.owner, now, cutoff, RETENTION_CLAIM, RETENTION_BATCH)
                .await?;
            if batch.is_empty() {
                break;
            }
            for task in &batch {
                match self.delete_keys(task.uploaded_input_keys()).await {
                    Ok(n) => report.input_images += n,
                    Err(e) => {
                        warn!(task.id = %task.task_id, error = %e, "input images could not be deleted; a later sweep retries");
                        report.failed += 1;
                        continue;
                    }
                }
                match self
                    .retention
                    .mark_inputs_purged(&task.task_id, &self.owner, self.clock.now())
                    .await
                {
                    Ok(_) => report.tasks += 1,
                    // Our claim ran out and another replica took the task: it
                    // repeats the same idempotent deletes.
                    Err(RepoError::LeaseLost) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if report.tasks > 0 || report.failed > 0 {
            info!(
                event = "modelgen.audit",
                action = "input_retention",
                tasks = report.tasks,
                input_images = report.input_images,
                failed = report.failed,
                "input images past INPUT_RETENTION deleted"
            );
        }
        Ok(report)
    }

    /// Deletes the timeline entries written `retention` before now, in short
    /// batches (at most [`RETENTION_MAX_BATCHES`] of
    /// [`EVENT_PURGE_BATCH`]); returns how many. Any number of replicas may
    /// sweep at once: each batch deletes what is still there.
    ///
    /// # Errors
    /// When a batch fails (the database is down); batches done stay done.
    pub async fn sweep_events(&self, retention: Duration) -> Result<u64, RepoError> {
        let cutoff = self.clock.now() - TimeDelta::from_std(retention).unwrap_or(TimeDelta::MAX);
        let mut deleted = 0;
        for _ in 0..RETENTION_MAX_BATCHES {
            let n = self.events.purge_events(cutoff, EVENT_PURGE_BATCH).await?;
            deleted += n;
            if n < EVENT_PURGE_BATCH as u64 {
                break;
            }
        }
        if deleted > 0 {
            info!(
                action = "event_retention",
                events = deleted,
                "task timeline entries past EVENT_RETENTION deleted"
            );
        }
        Ok(deleted)
    }

    /// Runs [`Privacy::sweep_inputs`] (with `inputs`, the input retention)
    /// and [`Privacy::sweep_events`] (with `events`, the timeline retention)
    /// every `interval` (with jitter, so replicas started together spread
    /// out) until `token` is cancelled. A `None` retention keeps forever.
    pub async fn run_retention(
        self: Arc<Self>,
        inputs: Option<Duration>,
        events: Option<Duration>,
        interval: Duration,
        token: CancellationToken,
    ) {
        info!(
            input_retention_s = inputs.map(|r| r.as_secs()),
            event_retention_s = events.map(|r| r.as_secs()),
            interval_s = interval.as_secs(),
            "retention cleanup started"
        );
        loop {
            let wait = modelgen_domain::with_jitter(interval, fastrand::f64());
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
            if let Some(retention) = inputs {
                let sweep = self.sweep_inputs(retention);
                tokio::select! {
                    () = token.cancelled() => break,
                    result = sweep => if let Err(e) = result {
                        warn!(error = %e, "input retention sweep failed; retrying at the next interval");
                    },
                }
            }
            if let Some(retention) = events {
                let sweep = self.sweep_events(retention);
                tokio::select! {
                    () = token.cancelled() => break,
                    result = sweep => if let Err(e) = result {
                        warn!(error = %e, "timeline retention sweep failed; retrying at the next interval");
                    },
                }
            }
        }
    }

    /// Deletes `keys` from the blob store; returns how many were deleted
    /// (a key already gone counts too: the store cannot tell).
    async fn delete_keys<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<u64, BlobError> {
        let mut n = 0;
        for key in keys {
            self.blobs.delete(key).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Erases `user_id`'s data (see the module docs); with `dry_run`, only
    /// counts and lists what would go. Audited either way.
    ///
    /// # Errors
    /// [`PurgeError::InvalidUser`] for a malformed id; database and blob
    /// store failures (what was done stays done; run it again).
    pub async fn purge_user(
        &self,
        user_id: &str,
        dry_run: bool,
        actor: Actor,
    ) -> Result<PurgeReport, PurgeError> {
        check_user_id(user_id)?;
        let mut report = PurgeReport {
            user_id: user_id.to_owned(),
            dry_run,
            ..PurgeReport::default()
        };
        let mut before: Option<TaskId> = None;
        loop {
            let page = self
                .tasks
                .list_tasks(&TaskQuery {
                    user_id: Some(user_id.to_owned()),
                    before,
                    limit: PURGE_PAGE,
                    ..TaskQuery::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            before = Some(last.task_id);
            for task in page {
                self.purge_task(task, dry_run, &mut report).await?;
            }
        }
        info!(
            event = "modelgen.audit",
            action = if dry_run { "user_purge_dry_run" } else { "user_purge" },
            actor = actor.as_str(),
            user.id = %user_id,
            tasks = report.tasks,
            cancelled = report.cancelled,
            input_images = report.input_images,
            result_images = report.result_images,
            image_rows = report.image_rows,
            already_erased = report.already_erased,
            "user data purge"
        );
        Ok(report)
    }

    async fn purge_task(
        &self,
        task: TaskRecord,
        dry_run: bool,
        report: &mut PurgeReport,
    ) -> Result<(), PurgeError> {
        report.tasks += 1;
        if task.purged_at.is_some() {
            report.already_erased += 1;
        }
        let running = !task.status.is_terminal();
        let task = if running && !dry_run {
            self.cancel(&task).await?
        } else {
            task
        };
        if running {
            report.cancelled += 1;
        }
        // Inputs already deleted by the retention cleanup are not counted again.
        let inputs: Vec<&str> = if task.inputs_purged_at.is_some() {
            Vec::new()
        } else {
            task.uploaded_input_keys()
        };
        let images = self.images.images_for_task(&task.task_id).await?;
        // Only images in our store have blobs to delete; a remote (imported)
        // image is someone else's copy, and only its row is erased.
        let results: Vec<String> = images
            .iter()
            .filter_map(|i| i.location.storage_key().map(str::to_owned))
            .collect();
        if dry_run {
            report.input_images += inputs.len() as u64;
            report.result_images += results.len() as u64;
            report.image_rows += images.len() as u64;
            report.items.push(PurgeItem {
                task_id: task.task_id.to_string(),
                status: task.status.as_str().to_owned(),
                cancel: running,
                input_images: inputs.iter().map(|k| (*k).to_owned()).collect(),
                result_images: results,
            });
            return Ok(());
        }
        // Blobs first: should this stop half-way, the rows still name what
        // is left, and the next run deletes it.
        report.input_images += self.delete_keys(inputs).await?;
        report.result_images += self.delete_keys(results.iter().map(String::as_str)).await?;
        let erased = self
            .retention
            .erase_task_data(&task.task_id, self.clock.now())
            .await?;
        report.image_rows += erased.image_rows;
        Ok(())
    }

    /// Cancels a running task as a client cancel would; returns it as it is
    /// now (it may have ended on its own meanwhile).
    async fn cancel(&self, task: &TaskRecord) -> Result<TaskRecord, RepoError> {
        let change = TaskChange {
            event: Some(TaskEvent::Cancelled),
            enqueue_callback: self.callbacks_enabled,
            events: vec![
                NewTaskEvent::new(EventKind::Cancelled).message("the user's data was erased"),
            ],
            ..TaskChange::default()
        };
        match self
            .tasks
            .update_task(&task.task_id, &Fence::Unfenced, self.clock.now(), change)
            .await
        {
            Ok(cancelled) => {
                metrics::counter!("tasks_finished_total", "type" => cancelled.task_type.as_str(),
                    "status" => "cancelled", "error_kind" => "user_purge")
                .increment(1);
                Ok(cancelled)
            }
            Err(RepoError::AlreadyTerminal(_))
            | Err(RepoError::InvalidTransition(TransitionError::Terminal(_))) => {
                self.tasks.get_task(&task.task_id).await
            }
            Err(e) => Err(e),
        }
    }
}

/// Query of `DELETE /admin/users/{user_id}/data`. Unknown parameters are
/// refused (400/1001): a misspelled `dry_run` must not erase for real.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeQuery {
    dry_run: Option<String>,
}

/// `DELETE /admin/users/{user_id}/data`: erase a user's data.
#[utoipa::path(delete, path = "/admin/users/{user_id}/data", tag = "admin",
    description = "Erases a user's personal data: cancels the user's running tasks (each gets its callback), \
deletes their uploaded input images and result images from storage and the image rows, and blanks the \
prompts (which embed the body profile), input references and error messages. Ids, types, statuses, \
timestamps and counters stay for accounting. Idempotent. `dry_run=true` changes nothing and lists what \
would be deleted. Logged as an audit event (`event=modelgen.audit`).",
    params(
        ("user_id" = String, Path, description = "The user (1 to 64 characters)"),
        ("dry_run" = Option<bool>, Query, description = "`true`: change nothing, report what would be deleted; `false` (or absent): erase. Any other value, an empty one included, is 400/1001"),
    ),
    responses(
        (status = 200, description = "Done (or, with `dry_run`, what would be done)", body = Envelope<PurgeReport>),
        (status = 400, description = "Bad user_id or dry_run (1001)", body = crate::error::ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = crate::error::ErrorEnvelope),
        (status = 503, description = "Database unavailable (1004); run it again", body = crate::error::ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn purge_user_data(
    path: web::Path<String>,
    query: web::Query<PurgeQuery>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    // Exactly the two values the document declares: an erasure must not run
    // because `?dry_run=` (empty) or a typo was read as "false".
    let dry_run = match query.dry_run.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::field("dry_run", "must be true or false")),
    };
    let report = state
        .privacy
        .purge_user(&path, dry_run, Actor::AdminApi)
        .await?;
    Ok(HttpResponse::Ok().json(Envelope::ok("success", report)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_checked_like_on_creation() {
        assert!(check_user_id("u1").is_ok());
        assert!(check_user_id(&"x".repeat(64)).is_ok());
        for bad in ["", "  ", "a\u{0}b", "a\nb"] {
            assert!(check_user_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_user_id(&"x".repeat(65)).is_err());
    }
}
