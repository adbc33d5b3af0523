//! The repository traits: the only way the rest of modelgen touches the database.
//!
//! Every state change is one transaction inside the implementation; callers never
//! read-modify-write across calls. Worker writes are fenced by their lease.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use modelgen_domain::TaskId;

use crate::error::RepoError;
use crate::models::{
    AttemptNote, AttemptOutcome, CallbackRecord, CallbackStatus, EndedTask, ErasedTask, Fence,
    ImageRecord, ImportOutcome, ImportedTask, InsertOutcome, NewTask, QueueStats, TaskChange,
    TaskEventRecord, TaskQuery, TaskRecord, UpstreamFailure, UsageQuery, UsageRow,
};

/// Tasks (`ai_generation_task`).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait TaskRepository: Send + Sync {
    /// Inserts a task, queued at its fair rank ([`crate::fair::queue_rank`]
    /// of the queue's head and the user's last queued rank, two index lookups
    /// in the same write transaction). When `(user_id, request_id)` already
    /// exists (including a race with another replica), returns
    /// [`InsertOutcome::Existing`] with that row. A created task's timeline
    /// starts with `created`, written in the same transaction.
    async fn insert_task(&self, task: NewTask) -> Result<InsertOutcome, RepoError>;

    /// One task. [`RepoError::NotFound`] when absent.
    async fn get_task(&self, id: &TaskId) -> Result<TaskRecord, RepoError>;

    /// One task and its result images (in insert order, without the inline
    /// base64 copies), read in one statement: the task left-joined with its
    /// images on the image table's `task_id` index, so `GET /tasks/{id}` is one
    /// round trip. [`RepoError::NotFound`] when the task is absent.
    async fn get_task_with_images(
        &self,
        id: &TaskId,
    ) -> Result<(TaskRecord, Vec<ImageRecord>), RepoError>;

    /// The task `user_id` created with idempotency key `request_id`, if any
    /// (read before admission control refuses a create, so that a replay is
    /// still answered). One lookup on the unique `(user_id, request_id)` index.
    async fn find_by_request_id(
        &self,
        user_id: &str,
        request_id: &str,
    ) -> Result<Option<TaskRecord>, RepoError>;

    /// The submit queue at `now`: its depth (ranked tasks, see
    /// [`crate::fair`]), its oldest entry, and how many tasks the upstream
    /// accepted in the last `window`. Index range reads: the depth counts the
    /// ranked range of `idx_task_queue` (O(depth) entries), the oldest entry
    /// and the rate read `idx_task_submitted_status` (the rate costs
    /// O(submissions in the window)).
    async fn queue_stats(
        &self,
        now: DateTime<Utc>,
        window: Duration,
    ) -> Result<QueueStats, RepoError>;

    /// How many queued tasks are ahead of `task` in the fair submit order
    /// (the claim order of the submit lane: `queue_rank`, then `next_run_at`,
    /// then `task_id`; see [`crate::fair`]), as the queue stands now; `None`
    /// when `task` is not queued (`status` is not `submitted`, `submitted_at`
    /// is set, or it has no `queue_rank`: parked, or written by an older
    /// replica). One covering index range count on `idx_task_queue`,
    /// O(position) entries.
    async fn queue_position(&self, task: &TaskRecord) -> Result<Option<u64>, RepoError>;

    /// Tasks matching `query` (every filter set must hold) in descending
    /// task id order, bytewise (newest first for ULID ids), at most
    /// `query.limit`.
    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskRecord>, RepoError>;

    /// Claims up to `limit` non-terminal tasks with `next_run_at <= now` whose
    /// lease is free or expired, setting `lease_owner = owner` and
    /// `lease_expires_at = now + lease` and appending `claimed` (replica
    /// `owner`) to each one's timeline in the same transaction, from two lanes: polls (tasks without
    /// a `queue_rank`: running upstream, or queued by an older replica), in
    /// `next_run_at` order, and submits (ranked tasks), in fair order
    /// (`queue_rank`, `next_run_at`, `task_id`). Polls come first, but
    /// submits get at least a quarter of `limit` while tasks are queued, and a
    /// slot one lane leaves unused goes to the other
    /// ([`crate::fair::split_claim`]). Returned polls first, each lane in its
    /// order. Each lane is one index range read (`idx_task_queue`): the cost
    /// is O(limit), not O(backlog). Two concurrent callers never get the same
    /// task (`FOR UPDATE SKIP LOCKED` on PostgreSQL and MySQL, an immediate
    /// transaction on SQLite). A claim does not change `updated_at` (it is not
    /// a business change). `limit <= 0` returns nothing.
    async fn claim_due_tasks(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, RepoError>;

    /// Extends the caller's lease to `now + lease`. [`RepoError::LeaseLost`] when
    /// the caller no longer holds an unexpired lease.
    async fn renew_task_lease(
        &self,
        id: &TaskId,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<(), RepoError>;

    /// Gives the lease back (no-op when not held by `owner`).
    async fn release_task_lease(&self, id: &TaskId, owner: &str) -> Result<(), RepoError>;

    /// Releases every lease `owner` holds (graceful shutdown); returns how many.
    async fn release_all_task_leases(&self, owner: &str) -> Result<u64, RepoError>;

    /// Applies `change` atomically under `fence` at time `now` and returns the
    /// new row. Errors: [`RepoError::NotFound`], [`RepoError::LeaseLost`] (fence
    /// failed, nothing written), [`RepoError::InvalidTransition`] (state machine
    /// refused, nothing written), [`RepoError::AlreadyTerminal`] (a
    /// [`TaskEvent::Cancelled`](modelgen_domain::TaskEvent::Cancelled) with
    /// [`Fence::Unfenced`] on a terminal task, nothing written).
    ///
    /// `updated_at` becomes the transition's stamp when the event changes the
    /// state; otherwise `max(now, updated_at + 1 ms)` when the change sets any
    /// other task field or adds images; a change that only releases the lease
    /// (or changes nothing) leaves it. `completed_at` is set when a terminal
    /// state is entered. With `enqueue_callback`, whenever the resulting status
    /// is terminal (also with no event, to repair a missing row) one
    /// `callback_delivery` row for the task's current run (`task.<status>`,
    /// or `task.retry_<status>` after an operator retry) is inserted unless
    /// one exists. `change.events` are appended to the timeline, stamped
    /// `now`, in the same transaction.
    /// Timestamps are stored with microsecond precision (truncated). The
    /// task keeps its `queue_rank` only while it stays `submitted` without an
    /// upstream id: the write that stores the id, or any other status, clears it.
    async fn update_task(
        &self,
        id: &TaskId,
        fence: &Fence,
        now: DateTime<Utc>,
        change: TaskChange,
    ) -> Result<TaskRecord, RepoError>;

    /// Operator action: puts a `failed` task back to `submitted` (progress 0,
    /// error, upstream id, cost, `submitted_at`, counters and lease cleared,
    /// due now, `started_at = now`, `completed_at` cleared, `retries` + 1,
    /// queued at a fresh fair rank as a new task of its user) and appends
    /// `retried` to its timeline, in one transaction. Its earlier callback
    /// rows are kept: the retried run's outcome gets a row of its own
    /// (`run` = the new `retries`, event type `task.retry_<status>`). This is
    /// the one deliberate exception to "terminal states never change".
    /// Errors: [`RepoError::NotFound`]; [`RepoError::Conflict`] when the task is
    /// not `failed`, was imported ([`crate::TaskImport`]: the source kept no
    /// inputs to run it with), or while the input retention cleanup holds it;
    /// [`RepoError::InputsPurged`] when the images it needs were deleted
    /// ([`TaskRecord::inputs_gone_since`]): nothing is written, so it does
    /// not fail again upstream.
    async fn retry_task(&self, id: &TaskId, now: DateTime<Utc>) -> Result<TaskRecord, RepoError>;

    /// Database reachable and answering (readiness).
    async fn ping(&self) -> Result<(), RepoError>;
}

/// Result images (`ai_generation_image`); rows are written by [`TaskRepository::update_task`].
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ImageRepository: Send + Sync {
    /// Images of one task, in insert order.
    async fn images_for_task(&self, id: &TaskId) -> Result<Vec<ImageRecord>, RepoError>;

    /// Images of several tasks in one query (a page of `GET /tasks`), in
    /// insert order; each record names its task.
    async fn images_for_tasks(&self, ids: &[TaskId]) -> Result<Vec<ImageRecord>, RepoError>;

    /// The inline base64 copies of one task's images that have one, as
    /// `(image id, standard base64)` in insert order. Kept apart from the other
    /// reads because each copy can be megabytes.
    async fn inline_images_for_task(&self, id: &TaskId) -> Result<Vec<(i64, String)>, RepoError>;
}

/// The callback outbox (`callback_delivery`); rows are written by
/// [`TaskRepository::update_task`] with `enqueue_callback`.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait CallbackOutbox: Send + Sync {
    /// Claims up to `limit` `pending` rows with `next_attempt_at <= now` and a
    /// free or expired lease (same guarantees as task claims).
    async fn claim_due_callbacks(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<CallbackRecord>, RepoError>;

    /// Records one attempt's outcome (attempts + 1, lease released), fenced by
    /// `owner`'s lease (held and `lease_expires_at > now`).
    /// [`RepoError::LeaseLost`] when the lease is gone, [`RepoError::NotFound`]
    /// when no such row. `Delivered` sets `delivered_at = now`; `Retry` keeps the
    /// row `pending` due at its `next_attempt_at`; both failures keep `last_error`.
    /// The timeline gets its entries as with
    /// [`CallbackOutbox::record_callback_attempt_noted`] (replica `owner`, no
    /// HTTP status or latency).
    async fn record_callback_attempt(
        &self,
        event_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        outcome: AttemptOutcome,
    ) -> Result<CallbackRecord, RepoError>;

    /// [`CallbackOutbox::record_callback_attempt`], and in the same
    /// transaction the task's timeline entries: `callback_attempt` (attempt
    /// number, `note`'s replica, HTTP status and latency, the error of a
    /// failure), then `callback_delivered` or `callback_dead` when the
    /// outcome is one. Nothing is written when the lease is gone.
    async fn record_callback_attempt_noted(
        &self,
        event_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        outcome: AttemptOutcome,
        note: AttemptNote,
    ) -> Result<CallbackRecord, RepoError>;

    /// Rows by status (all when `None`), newest first, at most `limit`.
    async fn list_callbacks(
        &self,
        status: Option<CallbackStatus>,
        limit: i64,
    ) -> Result<Vec<CallbackRecord>, RepoError>;

    /// One row. [`RepoError::NotFound`] when absent.
    async fn get_callback(&self, event_id: &str) -> Result<CallbackRecord, RepoError>;

    /// Callback rows of one task.
    async fn callbacks_for_task(&self, id: &TaskId) -> Result<Vec<CallbackRecord>, RepoError>;

    /// Puts a `dead` (or `delivered`) row back to `pending`, due now, attempts
    /// reset to 0, same event id, and appends `callback_redelivered` to the
    /// task's timeline in the same transaction. [`RepoError::NotFound`] when
    /// absent. A lease in flight on a `pending` row is left alone (its
    /// outcome still records).
    async fn redeliver(
        &self,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<CallbackRecord, RepoError>;

    /// Puts every `dead` row back to `pending` (each task's timeline gets
    /// `callback_redelivered`, in the same transaction); returns how many.
    async fn redeliver_all_dead(&self, now: DateTime<Utc>) -> Result<u64, RepoError>;
}

/// Personal data: the input retention cleanup and the erasure of a user's
/// data (README, "Personal data"). Blob deletion is the caller's; these
/// methods keep the task rows in step with it.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait DataRetention: Send + Sync {
    /// Claims up to `limit` tasks whose uploaded inputs are due for deletion:
    /// terminal, ended (`completed_at`) at or before `ended_before`, not
    /// processed yet (`inputs_purged_at` is null), with a free or expired
    /// lease — longest ended first. The claim is a lease (`lease_owner =
    /// owner`, `lease_expires_at = now + lease`): concurrent callers (any
    /// number of replicas) get disjoint tasks, and a claim left by a crashed
    /// caller expires. `limit <= 0` returns nothing.
    async fn claim_input_purges(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        ended_before: DateTime<Utc>,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, RepoError>;

    /// Records that a claimed task's uploaded inputs are deleted
    /// (`inputs_purged_at = now`, kept when already set) and releases the
    /// claim. [`RepoError::LeaseLost`] when `owner` no longer holds an
    /// unexpired claim (nothing written; whoever holds it now does the same
    /// idempotent work), [`RepoError::NotFound`] when no such task.
    async fn mark_inputs_purged(
        &self,
        id: &TaskId,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<TaskRecord, RepoError>;

    /// Erases one terminal task's personal data in one transaction: deletes
    /// its image rows; blanks `prompt` (which embeds the body profile),
    /// `input_images`, `request_fingerprint` (a digest of the payload) and
    /// `error_message`; sets `purged_at` and `inputs_purged_at` to `now`
    /// (each kept when already set). Ids, type, status, angle, size, model,
    /// counters, error code, lease and timestamps stay, for accounting.
    /// Idempotent: a second call deletes nothing and changes nothing.
    /// Errors: [`RepoError::NotFound`]; [`RepoError::Conflict`] when the task
    /// is not terminal (cancel it first).
    async fn erase_task_data(
        &self,
        id: &TaskId,
        now: DateTime<Utc>,
    ) -> Result<ErasedTask, RepoError>;
}

/// Tasks brought over from another system (`modelgen import legacy`): the
/// write path of the importer, keyed by task id.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait TaskImport: Send + Sync {
    /// Inserts `task` with its images, or brings an earlier import of it up
    /// to date, in one transaction, as [`crate::plan_import`] decides at
    /// `now`: [`ImportOutcome::Created`] inserts the task (and its images;
    /// no callback is queued: the source already reported the outcome);
    /// [`ImportOutcome::Updated`] replaces the source's fields and the
    /// image rows, keeping lease and counters, and a schedule the workers
    /// already follow (a parked unfinished task is made due when
    /// `resume_at` asks for it); [`ImportOutcome::Unchanged`] and
    /// [`ImportOutcome::Skipped`] write nothing. A `request_id` another task
    /// of the user holds is [`crate::ImportSkip::RequestIdTaken`].
    ///
    /// Running it twice with the same task writes once: nothing is duplicated.
    async fn upsert_imported_task(
        &self,
        task: &ImportedTask,
        now: DateTime<Utc>,
    ) -> Result<ImportOutcome, RepoError>;
}

/// The task timeline (`task_events`, written by the other repositories in
/// the transaction of each change) and what the upstream charged
/// (`cost_micros`).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EventLog: Send + Sync {
    /// One task's timeline, oldest first (by `seq`), at most `limit` entries
    /// from the start. Empty for an unknown task (the caller tells "no such
    /// task" from the task table).
    async fn events_for_task(
        &self,
        id: &TaskId,
        limit: i64,
    ) -> Result<Vec<TaskEventRecord>, RepoError>;

    /// Deletes up to `limit` timeline entries written before `before`, oldest
    /// first, in one short transaction; returns how many (the retention
    /// cleanup calls it until it returns less than `limit`).
    async fn purge_events(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, RepoError>;

    /// Completed tasks and their summed cost, grouped as `query` asks, in key
    /// order. One indexed range read of `completed_at`.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, RepoError>;

    /// Tasks that ended (any terminal status) in `[from, to)`, oldest end
    /// first, at most `limit` (the operator console's outcome and latency
    /// charts). One indexed range read of `completed_at`.
    async fn ended_tasks(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<EndedTask>, RepoError>;

    /// Failed upstream calls (`submit_failed`, `poll_failed` timeline
    /// entries) written in `[from, to)`, oldest first, at most `limit` (the
    /// console's upstream error chart). One indexed range read of the
    /// timeline's `at`.
    async fn upstream_failures(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<UpstreamFailure>, RepoError>;

    /// Callback deliveries per status, statuses without rows left out (the
    /// console's pending and dead counts). Read from the outbox's status index.
    async fn count_callbacks(&self) -> Result<Vec<(CallbackStatus, u64)>, RepoError>;
}
