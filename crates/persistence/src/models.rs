//! Insert, update and record types of the three tables, in domain types.
//! Timestamps are UTC, stored with microsecond precision (sub-microsecond
//! parts are truncated on write, on both backends); durations are
//! `std::time::Duration`.

use chrono::{DateTime, Utc};
use modelgen_domain::{Angle, Progress, TaskEvent, TaskId, TaskStatus, TaskType};

/// A task to insert (`ai_generation_task`); starts `submitted`, 0 %, due at `created_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Primary key.
    pub task_id: TaskId,
    /// Idempotency key, unique per `user_id` when present (≤ 64 chars).
    pub request_id: Option<String>,
    /// Caller's user id (1–64 chars).
    pub user_id: String,
    /// Which job.
    pub task_type: TaskType,
    /// For edit/outfit: the completed task whose image is the base model.
    pub base_model_task_id: Option<TaskId>,
    /// For outfit: the angle.
    pub angle: Option<Angle>,
    /// Aspect ratio sent upstream, e.g. `4:3`.
    pub size: String,
    /// Rendered prompt sent upstream.
    pub prompt: String,
    /// Upstream model name.
    pub model: String,
    /// References of the input images, in upstream order: blob-store keys
    /// (`blob:<key>`) or `https://`/`http://` URLs.
    pub input_images: Vec<String>,
    /// Hash of the normalised request payload, to tell an idempotent replay
    /// (same hash) from a reused key with another payload (other hash).
    pub request_fingerprint: Option<String>,
    /// Creation time; also `updated_at` and the first `next_run_at`.
    pub created_at: DateTime<Utc>,
    /// The task's own callback receiver (see [`TaskRecord::callback_url`]);
    /// `None`: `CALLBACK_URL`.
    pub callback_url: Option<String>,
}

/// A stored task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Primary key.
    pub task_id: TaskId,
    /// Idempotency key.
    pub request_id: Option<String>,
    /// Owner.
    pub user_id: String,
    /// Job.
    pub task_type: TaskType,
    /// Base model task for edit/outfit.
    pub base_model_task_id: Option<TaskId>,
    /// Outfit angle.
    pub angle: Option<Angle>,
    /// Aspect ratio.
    pub size: String,
    /// Prompt sent upstream.
    pub prompt: String,
    /// Upstream model.
    pub model: String,
    /// Input image references (see [`NewTask::input_images`]).
    pub input_images: Vec<String>,
    /// Payload hash for idempotency.
    pub request_fingerprint: Option<String>,
    /// Apimart's task id once a submit succeeded.
    pub external_task_id: Option<String>,
    /// Lifecycle status.
    pub status: TaskStatus,
    /// Percent.
    pub progress: Progress,
    /// Envelope-style error code when failed (e.g. 1002), else `None`.
    pub error_code: Option<i32>,
    /// Human-readable failure reason (`"timeout"`, upstream message…).
    pub error_message: Option<String>,
    /// Submit attempts started (recorded before each upstream call).
    pub submit_attempts: i32,
    /// Status polls made.
    pub poll_count: i32,
    /// When a worker should next look at the task.
    pub next_run_at: DateTime<Utc>,
    /// Worker holding the lease, if any.
    pub lease_owner: Option<String>,
    /// When that lease ends.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When a terminal state was entered.
    pub completed_at: Option<DateTime<Utc>>,
    /// When the current run started, if an operator retried the task
    /// ([`crate::TaskRepository::retry_task`]); `None` means `created_at`.
    pub started_at: Option<DateTime<Utc>>,
    /// When the input retention cleanup processed the task: its uploaded
    /// input images (`blob:inputs/…`) are deleted from then on. `None` while
    /// they are kept.
    pub inputs_purged_at: Option<DateTime<Utc>>,
    /// When the owner's data was erased ([`crate::DataRetention::erase_task_data`]):
    /// images deleted, prompt, inputs and messages blanked.
    pub purged_at: Option<DateTime<Utc>>,
    /// When the upstream accepted the current run (the write that stored
    /// `external_task_id`); `None` while the task waits to be submitted.
    /// `TASK_TIMEOUT` counts from here, `QUEUE_TIMEOUT` until here.
    pub submitted_at: Option<DateTime<Utc>>,
    /// The task's place in the fair submit order ([`crate::fair`]) while it
    /// waits to be submitted upstream (`submitted`, no `submitted_at`, not
    /// parked); `None` otherwise. Cleared when the upstream id is stored or
    /// the task ends, set again by an operator retry.
    pub queue_rank: Option<i64>,
    /// What the upstream charged for the task, in millionths of the account's
    /// balance unit (docs/apimart.md, "Cost"), stored when it completed;
    /// `None` when it did not report one (and for failed or cancelled tasks).
    pub cost_micros: Option<i64>,
    /// How many times an operator retried the task
    /// ([`crate::TaskRepository::retry_task`]); 0 for its first run.
    pub retries: i32,
    /// Where this task's callback goes instead of `CALLBACK_URL` (the
    /// create's `callback_url`, checked against `CALLBACK_URL_ALLOWED_HOSTS`
    /// before it was stored); `None`: `CALLBACK_URL`.
    pub callback_url: Option<String>,
}

impl TaskRecord {
    /// When the current run started: the last retry, else creation. The
    /// queue timeout (`QUEUE_TIMEOUT`) counts from here.
    pub fn run_started_at(&self) -> DateTime<Utc> {
        self.started_at.unwrap_or(self.created_at)
    }

    /// When the upstream accepted the current run, if it has: `submitted_at`,
    /// or, for a row that has an upstream id but no stamp (written before the
    /// column existed, or imported), the start of its run. The task timeout
    /// (`TASK_TIMEOUT`) counts from here. `None` while the task is queued
    /// (also in the unknown window after a submit whose answer was lost).
    pub fn upstream_started_at(&self) -> Option<DateTime<Utc>> {
        self.submitted_at.or_else(|| {
            self.external_task_id
                .as_ref()
                .map(|_| self.run_started_at())
        })
    }

    /// Blob keys of the images the client uploaded for this task
    /// (`inputs/<task_id>/<n>.<ext>`), which belong to it alone. A base
    /// model's result used as input (`blob:results/…`) is another task's
    /// result, and `https://` inputs were never stored: neither is listed.
    pub fn uploaded_input_keys(&self) -> Vec<&str> {
        self.input_images
            .iter()
            .filter_map(|r| r.strip_prefix(BLOB_REF_PREFIX))
            .filter(|key| key.starts_with(INPUTS_PREFIX))
            .collect()
    }

    /// When the images this task needs to run again were deleted: its
    /// uploads by the input retention cleanup, or everything by an erasure.
    /// `None` when it could run again.
    pub fn inputs_gone_since(&self) -> Option<DateTime<Utc>> {
        self.purged_at.or_else(|| {
            self.inputs_purged_at
                .filter(|_| !self.uploaded_input_keys().is_empty())
        })
    }
}

/// The submit queue as one replica sees it at one instant
/// ([`crate::TaskRepository::queue_stats`]). The queue is every task not yet
/// accepted upstream: `status = 'submitted' AND submitted_at IS NULL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Tasks waiting to be submitted (the backlog), across all replicas.
    pub depth: u64,
    /// `next_run_at` of the first task in submit order, `None` when the queue
    /// is empty. A queued task is due from when it was queued, so this is
    /// when the oldest waiting task joined the queue.
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Tasks the upstream accepted (`submitted_at`) within the window asked
    /// for, by every replica: the drain rate is this over the window.
    pub submitted_in_window: u64,
}

/// Prefix of an input reference that points into the blob store
/// (`blob:<key>`); other references are `https://` URLs.
pub const BLOB_REF_PREFIX: &str = "blob:";
/// Blob-store prefix of uploaded input images (`inputs/<task_id>/<n>.<ext>`).
pub const INPUTS_PREFIX: &str = "inputs/";
/// Blob-store prefix of result images (`results/<task_id>/<n>.<ext>`).
pub const RESULTS_PREFIX: &str = "results/";

/// What erasing one task's data removed ([`crate::DataRetention::erase_task_data`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ErasedTask {
    /// The task after erasure.
    pub task: TaskRecord,
    /// Image rows deleted (0 when run again).
    pub image_rows: u64,
}

/// How a write is guarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// Only if this owner still holds an unexpired lease on the row.
    Lease(String),
    /// No lease check (client actions such as cancel); the state machine still applies.
    Unfenced,
}

/// One atomic change to a task, applied in one transaction with the row locked
/// (`SELECT … FOR UPDATE` on PostgreSQL, an immediate transaction on SQLite).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskChange {
    /// State-machine event (via `modelgen_domain::transition`); `None` keeps the state.
    pub event: Option<TaskEvent>,
    /// Set `external_task_id`; when the task had none, `submitted_at` becomes
    /// the change's `now` in the same write.
    pub external_task_id: Option<String>,
    /// Set `error_code` and `error_message`.
    pub error: Option<(i32, String)>,
    /// Set `next_run_at`.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Add one to `submit_attempts`.
    pub count_submit_attempt: bool,
    /// Add one to `poll_count`.
    pub count_poll: bool,
    /// Image rows to insert in the same transaction.
    pub images: Vec<NewImage>,
    /// When the change makes the task terminal, insert its callback outbox row
    /// (event `task.<status>`) in the same transaction.
    pub enqueue_callback: bool,
    /// Clear `lease_owner`/`lease_expires_at` in the same write.
    pub release_lease: bool,
    /// Set `cost_micros` (the upstream's reported cost, see
    /// [`TaskRecord::cost_micros`]).
    pub cost_micros: Option<i64>,
    /// Timeline events to append in the same transaction, in order
    /// (`task_events`, stamped with the change's `now`). Written only when
    /// the change is applied: a refused change (lease lost, invalid
    /// transition) writes none.
    pub events: Vec<NewTaskEvent>,
}

/// What happened to a task, as one timeline entry (`task_events.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The task was stored (request path).
    Created,
    /// A worker took the task's lease for a step (`replica` says which).
    Claimed,
    /// The upstream accepted a submit (`upstream_task_id`, `attempt`, `latency_ms`).
    Submitted,
    /// A submit failed or its outcome is unknown (`attempt`, `http_status`,
    /// `latency_ms`, `message`).
    SubmitFailed,
    /// A status poll answered (`upstream_status`, `progress`, `latency_ms`).
    Polled,
    /// A status poll failed (`http_status`, `latency_ms`, `message`).
    PollFailed,
    /// The step was put off for another reason (`message` says which).
    Snoozed,
    /// The result images were stored (`message`: how many).
    Downloaded,
    /// The task completed.
    Completed,
    /// The task failed (`error_code`, `message`).
    Failed,
    /// The task was cancelled.
    Cancelled,
    /// An operator put the failed task back in the queue.
    Retried,
    /// One callback delivery attempt (`attempt`, `http_status`, `latency_ms`,
    /// `message` on error).
    CallbackAttempt,
    /// The receiver answered 2xx.
    CallbackDelivered,
    /// The delivery gave up after its last attempt.
    CallbackDead,
    /// An operator asked for the callback to be delivered again.
    CallbackRedelivered,
}

impl EventKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [EventKind; 16] = [
        EventKind::Created,
        EventKind::Claimed,
        EventKind::Submitted,
        EventKind::SubmitFailed,
        EventKind::Polled,
        EventKind::PollFailed,
        EventKind::Snoozed,
        EventKind::Downloaded,
        EventKind::Completed,
        EventKind::Failed,
        EventKind::Cancelled,
        EventKind::Retried,
        EventKind::CallbackAttempt,
        EventKind::CallbackDelivered,
        EventKind::CallbackDead,
        EventKind::CallbackRedelivered,
    ];

    /// Stored and wire form: `created`, `claimed`, `submitted`,
    /// `submit_failed`, `polled`, `poll_failed`, `snoozed`, `downloaded`,
    /// `completed`, `failed`, `cancelled`, `retried`, `callback_attempt`,
    /// `callback_delivered`, `callback_dead`, `callback_redelivered`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Claimed => "claimed",
            EventKind::Submitted => "submitted",
            EventKind::SubmitFailed => "submit_failed",
            EventKind::Polled => "polled",
            EventKind::PollFailed => "poll_failed",
            EventKind::Snoozed => "snoozed",
            EventKind::Downloaded => "downloaded",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
            EventKind::Retried => "retried",
            EventKind::CallbackAttempt => "callback_attempt",
            EventKind::CallbackDelivered => "callback_delivered",
            EventKind::CallbackDead => "callback_dead",
            EventKind::CallbackRedelivered => "callback_redelivered",
        }
    }

    /// The kind of a stored name, `None` for an unknown one.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A timeline entry to append; the task id and the time come from the write
/// that carries it. Every detail is optional: each kind fills in what it
/// knows ([`EventKind`]). Messages are operator text (upstream and receiver
/// errors), never request data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTaskEvent {
    /// What happened.
    pub kind: EventKind,
    /// The replica (lease owner) that did it.
    pub replica: Option<String>,
    /// Submit attempt or callback attempt number, from 1.
    pub attempt: Option<i32>,
    /// Apimart's task id.
    pub upstream_task_id: Option<String>,
    /// Apimart's status as a poll reported it (`pending`, `processing`, …).
    pub upstream_status: Option<String>,
    /// Percent, 0–100.
    pub progress: Option<i32>,
    /// HTTP status of the upstream or callback answer.
    pub http_status: Option<i32>,
    /// How long the upstream or callback call took, milliseconds.
    pub latency_ms: Option<i64>,
    /// Envelope error code (e.g. 1002) of a failure.
    pub error_code: Option<i32>,
    /// Why (an error, a reason), at most [`MAX_EVENT_MESSAGE_CHARS`].
    pub message: Option<String>,
}

/// Longest `message` stored on a timeline entry, in characters; longer ones
/// are cut.
pub const MAX_EVENT_MESSAGE_CHARS: usize = 1000;

impl NewTaskEvent {
    /// An entry of `kind` with no details.
    pub fn new(kind: EventKind) -> Self {
        NewTaskEvent {
            kind,
            replica: None,
            attempt: None,
            upstream_task_id: None,
            upstream_status: None,
            progress: None,
            http_status: None,
            latency_ms: None,
            error_code: None,
            message: None,
        }
    }

    /// Sets `replica`.
    #[must_use]
    pub fn by(mut self, replica: &str) -> Self {
        self.replica = Some(replica.to_owned());
        self
    }

    /// Sets `message`, cut to [`MAX_EVENT_MESSAGE_CHARS`].
    #[must_use]
    pub fn message(mut self, message: impl Into<String>) -> Self {
        let message: String = message.into();
        self.message = Some(message.chars().take(MAX_EVENT_MESSAGE_CHARS).collect());
        self
    }
}

/// A stored timeline entry (`task_events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEventRecord {
    /// Increasing with insert order: a task's entries sort by it, oldest first.
    pub seq: i64,
    /// The task.
    pub task_id: TaskId,
    /// When it was written (the writer's clock, microseconds).
    pub at: DateTime<Utc>,
    /// Its kind, and the details it was written with.
    pub event: NewTaskEvent,
}

/// A sum of upstream cost over completed tasks, by day or by task type
/// ([`crate::EventLog::usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageGroup {
    /// By UTC day of `completed_at`.
    Day,
    /// By task type.
    Type,
}

/// Filters of a usage sum: completed tasks whose `completed_at` is in
/// `[from, to)`, of one user when `user_id` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    /// Only this user's tasks.
    pub user_id: Option<String>,
    /// Start, inclusive.
    pub from: DateTime<Utc>,
    /// End, exclusive.
    pub to: DateTime<Utc>,
    /// How to group.
    pub group_by: UsageGroup,
}

/// One group of a usage sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// `YYYY-MM-DD` (UTC) or the task type.
    pub key: String,
    /// Completed tasks in the group.
    pub count: u64,
    /// Their summed cost, millionths of the balance unit (tasks without a
    /// reported cost add 0).
    pub cost_micros: i64,
    /// How many of them reported a cost.
    pub costed: u64,
}

/// Where an image's bytes are: in our blob store, or at a URL someone else serves.
///
/// A stored image has no frozen URL: the URL handed to clients is rendered from
/// its key whenever it is read ([`crate::BlobStore::url`]), so a change of
/// `PUBLIC_BASE_URL`, of the bucket's domain or of the URL mode applies to old
/// images too. A remote image (e.g. imported from the earlier service, whose
/// images live on its own OSS bucket) is served at its URL as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageLocation {
    /// Blob-store key, e.g. `results/task_…/0-01J….png` (column `storage_key`).
    Stored(String),
    /// Absolute `http(s)` URL of an image we do not hold (column `remote_url`).
    Remote(String),
}

impl ImageLocation {
    /// The blob-store key of a stored image.
    pub fn storage_key(&self) -> Option<&str> {
        match self {
            ImageLocation::Stored(key) => Some(key),
            ImageLocation::Remote(_) => None,
        }
    }

    /// The URL of a remote image.
    pub fn remote_url(&self) -> Option<&str> {
        match self {
            ImageLocation::Stored(_) => None,
            ImageLocation::Remote(url) => Some(url),
        }
    }
}

/// A result image to insert (`ai_generation_image`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewImage {
    /// Task it belongs to.
    pub task_id: TaskId,
    /// Outfit angle, copied from the task.
    pub angle: Option<Angle>,
    /// Where the bytes are.
    pub location: ImageLocation,
    /// Optional inline copy (standard base64, no data-URI prefix), when
    /// `IMAGE_BASE64`/`STORE_IMAGE_BASE64` is on. Read back only on request
    /// ([`crate::ImageRepository::inline_images_for_task`]).
    pub image_base64: Option<String>,
    /// `image/png`, `image/jpeg` or `image/webp`; `None` when unknown (remote images).
    pub mime: Option<String>,
    /// Pixels; `None` when unknown (remote images).
    pub width: Option<i32>,
    /// Pixels; `None` when unknown (remote images).
    pub height: Option<i32>,
    /// Size in bytes; `None` when unknown (remote images).
    pub bytes: Option<i64>,
    /// Insert time.
    pub created_at: DateTime<Utc>,
}

/// A stored image row, without its inline base64 copy (which can be megabytes:
/// it is read only on request, by [`crate::ImageRepository::inline_images_for_task`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// Surrogate key, increasing in insert order.
    pub id: i64,
    /// Task it belongs to.
    pub task_id: TaskId,
    /// Outfit angle.
    pub angle: Option<Angle>,
    /// Where the bytes are.
    pub location: ImageLocation,
    /// MIME type, when known.
    pub mime: Option<String>,
    /// Pixels, when known.
    pub width: Option<i32>,
    /// Pixels, when known.
    pub height: Option<i32>,
    /// Size in bytes, when known.
    pub bytes: Option<i64>,
    /// Insert time.
    pub created_at: DateTime<Utc>,
}

/// Filters for listing tasks (descending task id order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskQuery {
    /// Only this user's tasks.
    pub user_id: Option<String>,
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only this type.
    pub task_type: Option<TaskType>,
    /// Keyset cursor: only tasks with an id lower than this one (ids of new tasks,
    /// `task_` + ULID, sort by time; imported ids sort by their text).
    pub before: Option<TaskId>,
    /// At most this many rows (caller caps it).
    pub limit: i64,
    /// Only tasks with this `error_code`.
    pub error_code: Option<i32>,
    /// Only tasks created at or after this instant.
    pub created_since: Option<DateTime<Utc>>,
    /// Only tasks created before this instant.
    pub created_until: Option<DateTime<Utc>>,
    /// Only tasks that ended (`completed_at`) at or after this instant.
    pub ended_since: Option<DateTime<Utc>>,
    /// Only tasks that ended before this instant.
    pub ended_until: Option<DateTime<Utc>>,
}

/// Result of [`crate::TaskRepository::insert_task`].
#[derive(Debug, Clone, PartialEq)]
pub enum InsertOutcome {
    /// A new row was written.
    Created(TaskRecord),
    /// A task with the same `(user_id, request_id)` already existed (maybe
    /// inserted by another replica a moment ago); nothing was written.
    Existing(TaskRecord),
}

/// Delivery state of an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackStatus {
    /// Waiting for (another) attempt.
    Pending,
    /// A 2xx was received.
    Delivered,
    /// Gave up after the last attempt; can be redelivered by an operator.
    Dead,
}

impl CallbackStatus {
    /// Database/wire form: `pending`, `delivered`, `dead`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CallbackStatus::Pending => "pending",
            CallbackStatus::Delivered => "delivered",
            CallbackStatus::Dead => "dead",
        }
    }
}

/// A stored outbox row (`callback_delivery`).
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackRecord {
    /// Stable event id (`evt_` + ULID), sent as `webhook-id` on every attempt.
    pub event_id: String,
    /// Task the event is about.
    pub task_id: TaskId,
    /// `task.completed`, `task.failed` or `task.cancelled`.
    pub event_type: String,
    /// Delivery state.
    pub status: CallbackStatus,
    /// Attempts made so far.
    pub attempts: i32,
    /// When the next attempt is due.
    pub next_attempt_at: DateTime<Utc>,
    /// Last failure (HTTP status or transport error), for operators.
    pub last_error: Option<String>,
    /// Lease holder while an attempt is in flight.
    pub lease_owner: Option<String>,
    /// Lease end.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Insert time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When a 2xx was received.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The task's run it reports: its `retries` when the row was enqueued
    /// (0 for the first run). A retried run's callback is a row of its own,
    /// with event type `task.retry_<status>`; earlier runs' rows are kept.
    pub run: i32,
}

/// What the timeline records about one callback attempt, beside its outcome
/// ([`crate::CallbackOutbox::record_callback_attempt_noted`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptNote {
    /// The replica that made it.
    pub replica: Option<String>,
    /// The receiver's HTTP status, when it answered.
    pub http_status: Option<i32>,
    /// How long the attempt took, milliseconds.
    pub latency_ms: Option<i64>,
}

/// What one delivery attempt ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// 2xx: mark delivered.
    Delivered,
    /// Failed; try again at `next_attempt_at`.
    Retry {
        /// When.
        next_attempt_at: DateTime<Utc>,
        /// Why it failed.
        error: String,
    },
    /// Failed for the last time: mark dead.
    Dead {
        /// Why it failed.
        error: String,
    },
}

/// Prefix of `request_fingerprint` on a task brought over from another system
/// (`import:<source>`, e.g. `import:legacy:edit_task:42`). It marks the row as
/// imported: a re-import updates only such rows, never a task modelgen created.
pub const IMPORT_FINGERPRINT_PREFIX: &str = "import:";

/// `next_run_at` of an unfinished imported task that is not to be resumed
/// ("parked"): the end of year 9999, the latest instant stored, so the
/// workers never find it due. It stays as it was imported until a re-import
/// with resumption, a cancel, or an erasure.
pub fn parked_until() -> DateTime<Utc> {
    chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map_or(DateTime::<Utc>::MAX_UTC, |naive| naive.and_utc())
}

/// A task brought over from another system (`modelgen import legacy`) with
/// the state it had there, written by [`crate::TaskImport::upsert_imported_task`].
/// Timestamps are UTC (the caller converts the source's zone); they are stored
/// with microsecond precision.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedTask {
    /// Primary key: the id the task had in the source.
    pub task_id: TaskId,
    /// Idempotency key, unique per `user_id` when present.
    pub request_id: Option<String>,
    /// Owner.
    pub user_id: String,
    /// Job.
    pub task_type: TaskType,
    /// For edit/outfit: the base model task (imported too).
    pub base_model_task_id: Option<TaskId>,
    /// Outfit angle.
    pub angle: Option<Angle>,
    /// Apimart's task id, when the source kept it (polling of an unfinished
    /// task continues with it).
    pub external_task_id: Option<String>,
    /// Status in the source.
    pub status: TaskStatus,
    /// Percent.
    pub progress: Progress,
    /// Envelope-style error code of a failed task.
    pub error_code: Option<i32>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change in the source.
    pub updated_at: DateTime<Utc>,
    /// When it ended (terminal tasks).
    pub completed_at: Option<DateTime<Utc>>,
    /// For an unfinished task: `Some(t)` makes it due at `t` with its run
    /// (and so its timeout) starting at `t` — the workers resume it; `None`
    /// parks it ([`parked_until`]). Ignored for terminal tasks.
    pub resume_at: Option<DateTime<Utc>>,
    /// Where it came from (`legacy:<table>:<id>`); stored after
    /// [`IMPORT_FINGERPRINT_PREFIX`] in `request_fingerprint`.
    pub source: String,
    /// Its result images, in order.
    pub images: Vec<ImportedImage>,
}

/// A result image of an [`ImportedTask`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedImage {
    /// Outfit angle.
    pub angle: Option<Angle>,
    /// A remote URL, or a key in our blob store when the bytes were copied.
    pub location: ImageLocation,
    /// MIME type, when known.
    pub mime: Option<String>,
    /// Pixels, when known.
    pub width: Option<i32>,
    /// Pixels, when known.
    pub height: Option<i32>,
    /// Size in bytes, when known.
    pub bytes: Option<i64>,
    /// Insert time in the source.
    pub created_at: DateTime<Utc>,
}

/// Why an imported task was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSkip {
    /// A task modelgen created (not an imported one) already has this id.
    NotImported,
    /// The task's owner had their data erased in modelgen; it is not brought back.
    Erased,
    /// The task changed in modelgen (e.g. a resumed task progressed) after
    /// the source's last change; modelgen's state is newer and is kept.
    NewerInModelgen,
    /// A worker holds the task's lease right now; try again later.
    Busy,
    /// Another task of the same user already has this `request_id`.
    RequestIdTaken,
}

impl ImportSkip {
    /// A short reason, for summaries.
    pub fn reason(&self) -> &'static str {
        match self {
            ImportSkip::NotImported => "a task created by modelgen already has this id",
            ImportSkip::Erased => "its owner's data was erased in modelgen",
            ImportSkip::NewerInModelgen => {
                "it changed in modelgen after its last change in the source"
            }
            ImportSkip::Busy => "a worker is running it right now",
            ImportSkip::RequestIdTaken => "another task of this user already has this request_id",
        }
    }
}

/// What [`crate::TaskImport::upsert_imported_task`] did (or, from
/// [`plan_import`], would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// No task had this id: inserted with its images.
    Created,
    /// The imported task differed from the source: its fields and images were replaced.
    Updated,
    /// Already imported exactly so: nothing written.
    Unchanged,
    /// Nothing written, for this reason.
    Skipped(ImportSkip),
}

impl ImportOutcome {
    /// Whether a task with this id is in modelgen afterwards (so a task that
    /// names it as base model can link to it).
    pub fn task_present(&self) -> bool {
        match self {
            ImportOutcome::Created | ImportOutcome::Updated | ImportOutcome::Unchanged => true,
            ImportOutcome::Skipped(skip) => matches!(
                skip,
                ImportSkip::Erased | ImportSkip::NewerInModelgen | ImportSkip::Busy
            ),
        }
    }
}

/// Decides what importing `incoming` does, given the task with the same id
/// already stored (`existing`, with its images) at `now`. Pure; the
/// repository applies the same decision inside its transaction, and a dry run
/// calls it on what it reads.
///
/// Rules: no such task → [`ImportOutcome::Created`]; an erased one →
/// [`ImportSkip::Erased`]; a task not imported (its `request_fingerprint`
/// lacks [`IMPORT_FINGERPRINT_PREFIX`]) → [`ImportSkip::NotImported`];
/// the same source fields and images (and, for an unfinished task, no
/// resumption asked of a parked one) → [`ImportOutcome::Unchanged`];
/// otherwise, when modelgen's `updated_at` is later than the source's →
/// [`ImportSkip::NewerInModelgen`], when a worker's lease is live →
/// [`ImportSkip::Busy`], else [`ImportOutcome::Updated`]. Lease, counters
/// and a resumed task's schedule are never taken from the source.
pub fn plan_import(
    existing: Option<(&TaskRecord, &[ImageRecord])>,
    incoming: &ImportedTask,
    now: DateTime<Utc>,
) -> ImportOutcome {
    let Some((task, images)) = existing else {
        return ImportOutcome::Created;
    };
    // An erasure blanks the import mark too: look at it first.
    if task.purged_at.is_some() {
        return ImportOutcome::Skipped(ImportSkip::Erased);
    }
    if !task
        .request_fingerprint
        .as_deref()
        .is_some_and(|f| f.starts_with(IMPORT_FINGERPRINT_PREFIX))
    {
        return ImportOutcome::Skipped(ImportSkip::NotImported);
    }
    if same_as_source(task, images, incoming) {
        return ImportOutcome::Unchanged;
    }
    if task.updated_at > crate::rows::truncate(incoming.updated_at) {
        return ImportOutcome::Skipped(ImportSkip::NewerInModelgen);
    }
    if task.lease_owner.is_some() && task.lease_expires_at.is_some_and(|exp| exp > now) {
        return ImportOutcome::Skipped(ImportSkip::Busy);
    }
    ImportOutcome::Updated
}

/// Whether the stored task already holds what `incoming` brings.
fn same_as_source(task: &TaskRecord, images: &[ImageRecord], incoming: &ImportedTask) -> bool {
    use crate::rows::truncate;
    let parked = task.next_run_at >= parked_until() - chrono::TimeDelta::seconds(1);
    let resume_wanted = !incoming.status.is_terminal() && incoming.resume_at.is_some() && parked;
    let fields = task.request_id == incoming.request_id
        && task.user_id == incoming.user_id
        && task.task_type == incoming.task_type
        && task.base_model_task_id == incoming.base_model_task_id
        && task.angle == incoming.angle
        && task.external_task_id == incoming.external_task_id
        && task.status == incoming.status
        && task.progress == incoming.progress
        && task.error_code == incoming.error_code
        && task.error_message == incoming.error_message
        && task.created_at == truncate(incoming.created_at)
        && task.updated_at == truncate(incoming.updated_at)
        && task.completed_at == incoming.completed_at.map(truncate)
        && task.request_fingerprint.as_deref()
            == Some(format!("{IMPORT_FINGERPRINT_PREFIX}{}", incoming.source).as_str());
    let same_images = images.len() == incoming.images.len()
        && images.iter().zip(&incoming.images).all(|(have, want)| {
            have.angle == want.angle
                && have.location == want.location
                && have.mime == want.mime
                && have.width == want.width
                && have.height == want.height
                && have.bytes == want.bytes
                && have.created_at == truncate(want.created_at)
        });
    fields && same_images && !resume_wanted
}
