//! The task engine: workers that claim due tasks under a lease, submit them to
//! Apimart, poll them, download and store results, and deliver callbacks from
//! the outbox (docs/design.md, "Leases and fencing" and "Completion and callbacks").
//!
//! Every write is fenced by the worker's lease, so a worker that lost its lease
//! (paused, partitioned, slow) cannot overwrite what a newer worker wrote.
//! Nothing here holds state across steps: a task's next step is decided from
//! its row alone, which is what lets any replica resume any task.

use std::sync::Arc;
use std::time::Duration;

use apimart_client::{ApimartError, GenerationRequest, TaskStatusResponse, UpstreamStatus};
use base64::Engine as _;
use bytes::BytesMut;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use modelgen_callback::{
    CallbackImage, CallbackPayload, CallbackRequest, CallbackSender, DeliveryResult,
};
use modelgen_domain::{
    ImageMime, PixelBudget, Progress, TransitionError, backoff_delay, format_timestamp,
};
use modelgen_persistence::{
    AttemptNote, AttemptOutcome, BlobError, BlobStore, CallbackOutbox, CallbackRecord, Fence,
    ImageLocation, ImageRepository, NewImage, RepoError, TaskChange, TaskRecord, TaskRepository,
};

use crate::alerts::Alerts;
use crate::decide::{self, Call, Verdict};
use crate::health::EngineLoop;
use crate::outcome::{SnoozeReason, StepOutcome, changes_for, cost_micros};
use crate::ports::{Clock, FetchError, ImageFetcher, ImageGenerator};
use crate::timeline::{StepTrace, events_for};
use modelgen_persistence::{BLOB_REF_PREFIX, RESULTS_PREFIX};

/// `error_message` (and metrics `error_kind`) of a task whose upstream run
/// went on past `TASK_TIMEOUT`, counted from its submission (`submitted_at`).
/// The earlier service's wording, kept.
pub const TIMEOUT_MESSAGE: &str = "timeout";
/// `error_message` (and metrics `error_kind`) of a task that waited to be
/// submitted for longer than `QUEUE_TIMEOUT`, counted from its creation (or
/// its operator retry). It was never sent upstream, or the answer to its
/// submit was lost (the unknown window).
pub const QUEUE_TIMEOUT_MESSAGE: &str = "queue_timeout";
/// Longest wait between in-step retries of a result download that failed
/// transiently, and the snooze before a new poll once they are spent.
pub const DOWNLOAD_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Tries of one result image's download within a step (the first included)
/// before the step gives up and snoozes the task.
pub const DOWNLOAD_ATTEMPTS: u32 = 3;
/// Most bytes of a result image read before its type and pixel size must be
/// known (a JPEG's size marker can follow large metadata segments).
pub const MAX_RESULT_HEAD_BYTES: usize = 1024 * 1024;
pub use crate::decide::MAX_FIRST_POLL_DELAY;

/// Tunables of the engine (from `Config`).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Identity written into leases (`host-pid-random`).
    pub owner: String,
    /// Lease length.
    pub lease: Duration,
    /// Longest a task step may run (upstream calls, input reads, downloads)
    /// before it is interrupted at its next wait and the task snoozed; its
    /// database writes always finish. Default
    /// [`decide::default_step_timeout`] of the lease.
    pub step_timeout: Duration,
    /// Tasks in flight at once in this replica.
    pub concurrency: usize,
    /// Tasks claimed per query.
    pub batch_size: i64,
    /// Idle wait between claims when nothing was due.
    pub idle_interval: Duration,
    /// Base interval between polls.
    pub poll_interval: Duration,
    /// Longest interval between polls.
    pub poll_max_interval: Duration,
    /// Tasks whose upstream run is not over this long after their submission
    /// fail with [`TIMEOUT_MESSAGE`].
    pub task_timeout: Duration,
    /// Tasks not submitted this long after they were queued fail with
    /// [`QUEUE_TIMEOUT_MESSAGE`].
    pub queue_timeout: Duration,
    /// Upstream model.
    pub model: String,
    /// Result image size cap, bytes.
    pub max_result_image_bytes: usize,
    /// Largest result image by its declared dimensions (`IMAGE_MAX_PIXELS`,
    /// `IMAGE_MAX_SIDE`); a result over it fails its task.
    pub result_pixel_budget: PixelBudget,
    /// Keep result images inline as base64 too.
    pub store_image_base64: bool,
    /// Whether terminal tasks enqueue callbacks.
    pub callbacks_enabled: bool,
    /// Callback attempts before `dead`.
    pub callback_max_attempts: u32,
    /// First callback retry delay.
    pub callback_base_delay: Duration,
    /// Longest callback retry delay.
    pub callback_max_delay: Duration,
}

/// The engine's dependencies, all behind traits.
#[derive(Clone)]
pub struct Engine {
    /// Tasks.
    pub tasks: Arc<dyn TaskRepository>,
    /// Images.
    pub images: Arc<dyn ImageRepository>,
    /// Outbox.
    pub outbox: Arc<dyn CallbackOutbox>,
    /// Image bytes.
    pub blobs: Arc<dyn BlobStore>,
    /// Apimart.
    pub generator: Arc<dyn ImageGenerator>,
    /// Result downloads.
    pub fetcher: Arc<dyn ImageFetcher>,
    /// Callback delivery; `None` when no `CALLBACK_URL`.
    pub sender: Option<Arc<dyn CallbackSender>>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Alerting.
    pub alerts: Alerts,
    /// Tunables.
    pub settings: EngineSettings,
    /// Poked when a task is created (here, or in another process through
    /// [`Engine::listen`]), to skip the task loop's idle wait.
    pub wake: Arc<Notify>,
    /// Poked when a step enqueues a callback, to skip the callback loop's
    /// idle wait.
    pub callback_wake: Arc<Notify>,
    /// Requests waiting for a task to change (`GET /tasks/{id}?wait=N`):
    /// the recorder wakes the task's waiters after each write.
    pub waiters: Arc<crate::waiters::TaskWaiters>,
    /// Cancelled when the process shuts down: failures of work cut off by
    /// the shutdown are expected, and logged as such rather than as errors.
    pub shutdown: CancellationToken,
    /// Steps and callback attempts that failed during the shutdown.
    pub interrupted: Arc<std::sync::atomic::AtomicU64>,
    /// Bumped by the task and callback loops every time round; `/healthz`
    /// fails when a running loop falls silent (crate::health::Heartbeat).
    pub heartbeat: crate::health::Heartbeat,
}

/// How a running step is told to stop at its next upstream, input or
/// download wait (see [`Engine::process_task`]).
struct StepSignals {
    /// Cancelled when the step must stop: lease lost, step timeout, or the
    /// shutdown (it is a child of [`Engine::shutdown`]).
    work: CancellationToken,
    /// Cancelled when the lease renewal found the lease gone.
    lease_lost: CancellationToken,
    /// What the step saw upstream, for its timeline entries (never locked
    /// across an await).
    trace: std::sync::Mutex<StepTrace>,
}

impl StepSignals {
    /// Updates the step's trace (a poisoned lock only loses timeline detail).
    fn trace(&self, f: impl FnOnce(&mut StepTrace)) {
        if let Ok(mut t) = self.trace.lock() {
            f(&mut t);
        }
    }
}

/// Whether a refused write means "the task is no longer ours": another
/// worker holds the lease, or it turned terminal (cancelled, erased).
fn superseded(e: &RepoError) -> bool {
    matches!(
        e,
        RepoError::LeaseLost
            | RepoError::AlreadyTerminal(_)
            | RepoError::InvalidTransition(TransitionError::Terminal(_))
    )
}

/// Polls made so far, for the poll backoff.
fn polls(task: &TaskRecord) -> u32 {
    u32::try_from(task.poll_count.max(0)).unwrap_or(0)
}

/// Which of a task's two clocks ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimedOut {
    /// Not submitted within `QUEUE_TIMEOUT` of being queued.
    Queue,
    /// Not finished within `TASK_TIMEOUT` of the upstream accepting it.
    Upstream,
}

/// The timeout decision for a non-terminal task at `now` (pure): a task not
/// yet accepted upstream ([`TaskRecord::upstream_started_at`] is `None`) is
/// bounded by `queue_timeout` from [`TaskRecord::run_started_at`]; one
/// accepted is bounded by `task_timeout` from its submission only, however
/// long it waited before.
pub fn timed_out(
    task: &TaskRecord,
    now: DateTime<Utc>,
    settings: &EngineSettings,
) -> Option<TimedOut> {
    match task.upstream_started_at() {
        None => {
            (now - task.run_started_at() >= d(settings.queue_timeout)).then_some(TimedOut::Queue)
        }
        Some(submitted) => {
            (now - submitted >= d(settings.task_timeout)).then_some(TimedOut::Upstream)
        }
    }
}

/// `td` as a `TimeDelta`, at most [`MAX_DELAY`], so `now + d(td)` cannot
/// overflow whatever a setting or an upstream header says.
fn d(td: Duration) -> TimeDelta {
    TimeDelta::from_std(td.min(MAX_DELAY)).unwrap_or(TimeDelta::MAX)
}

/// The longest delay the engine ever schedules (a year): far beyond every
/// timeout, and far from `DateTime`'s limits.
const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A short label for an upstream error, for logs and metrics.
pub fn upstream_error_kind(e: &ApimartError) -> &'static str {
    match e {
        ApimartError::BadRequest { .. } => "bad_request",
        ApimartError::Unauthorized { .. } => "unauthorized",
        ApimartError::InsufficientBalance { .. } => "insufficient_balance",
        ApimartError::Forbidden { .. } => "forbidden",
        ApimartError::NotFound { .. } => "not_found",
        ApimartError::RateLimited { .. } => "rate_limited",
        ApimartError::Server { .. } => "server",
        ApimartError::Timeout => "timeout",
        ApimartError::Connect { .. } => "connect",
        ApimartError::Decode { .. } => "decode",
        ApimartError::Upstream { .. } => "upstream",
        _ => "other",
    }
}

impl Engine {
    fn fence(&self) -> Fence {
        Fence::Lease(self.settings.owner.clone())
    }

    /// Logs a failed piece of work: an error, unless the process is shutting
    /// down, when work cut off is expected (counted, logged at debug; the
    /// total is logged once at exit).
    fn work_failed(&self, error: &RepoError, what: &'static str) {
        if self.shutdown.is_cancelled() {
            self.interrupted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            debug!(%error, what, "work interrupted by the shutdown");
        } else {
            error!(%error, "{what}");
        }
    }

    /// Runs the task worker until `token` is cancelled, then lets in-flight
    /// steps finish (they are bounded by their own timeouts) and releases leases.
    pub async fn run_task_worker(self: Arc<Self>, token: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut running = JoinSet::new();
        info!(worker.owner = %self.settings.owner, "task worker started");
        self.heartbeat.started(EngineLoop::Tasks);
        loop {
            self.heartbeat.beat(EngineLoop::Tasks);
            while running.try_join_next().is_some() {}
            if token.is_cancelled() {
                break;
            }
            let free = permits.available_permits();
            if free == 0 {
                // Every permit is busy: still go round every idle interval, so
                // the heartbeat says the loop is alive while slow steps run.
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = running.join_next() => continue,
                    _ = tokio::time::sleep(self.settings.idle_interval) => continue,
                }
            }
            let limit = (free as i64).min(self.settings.batch_size);
            let now = self.clock.now();
            let claimed = match self
                .tasks
                .claim_due_tasks(&self.settings.owner, now, self.settings.lease, limit)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    self.work_failed(&e, "claiming tasks failed");
                    Vec::new()
                }
            };
            metrics::counter!("lease_claims_total", "kind" => "task")
                .increment(claimed.len() as u64);
            if claimed.is_empty() {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.idle_interval) => {}
                }
                continue;
            }
            for task in claimed {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let engine = self.clone();
                running.spawn(async move {
                    engine.process_task(task).await;
                    drop(permit);
                });
            }
        }
        self.heartbeat.stopped(EngineLoop::Tasks);
        info!(
            in_flight = running.len(),
            "task worker stopping; finishing in-flight steps"
        );
        while running.join_next().await.is_some() {}
        match self
            .tasks
            .release_all_task_leases(&self.settings.owner)
            .await
        {
            Ok(n) => info!(released = n, "task leases released"),
            Err(e) => warn!(error = %e, "could not release task leases"),
        }
    }

    /// Forwards `announcements` (one item per task created in any process,
    /// e.g. `modelgen_persistence::Database::task_notifications`) to the task
    /// loop's wake-up until `token` is cancelled or the stream ends, so a
    /// task created by another replica is claimed at once rather than at the
    /// next idle interval.
    pub async fn follow_wakeups(
        self: Arc<Self>,
        mut announcements: futures_util::stream::BoxStream<'static, ()>,
        token: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                next = announcements.next() => match next {
                    Some(()) => self.wake.notify_one(),
                    None => return,
                },
            }
        }
    }

    /// Claims one batch and processes it to the end of each task's current
    /// step. Returns how many tasks were claimed. Used by tests and the CLI to
    /// drive the engine step by step.
    ///
    /// # Errors
    /// When the claim query fails.
    pub async fn run_once(self: &Arc<Self>) -> Result<usize, RepoError> {
        let claimed = self
            .tasks
            .claim_due_tasks(
                &self.settings.owner,
                self.clock.now(),
                self.settings.lease,
                self.settings.batch_size,
            )
            .await?;
        let n = claimed.len();
        let mut set = JoinSet::new();
        for task in claimed {
            let engine = self.clone();
            set.spawn(async move { engine.process_task(task).await });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    /// One step of one claimed task: the step runs while a heartbeat renews
    /// the lease beside it; then the recorder writes the step's outcome.
    ///
    /// Nothing here drops a future in the middle of a database call: the
    /// heartbeat, the step timeout and the shutdown only *signal* (a
    /// cancellation token the step checks around its upstream, input and
    /// download waits), and the step returns an outcome that the recorder
    /// writes to completion. A panic in the step is caught, logged with the
    /// task id, counted (`engine_step_panics_total`) and recorded as a snooze.
    pub async fn process_task(self: Arc<Self>, task: TaskRecord) {
        let span = info_span!("task", task.id = %task.task_id, task.r#type = %task.task_type,
            apimart.task_id = tracing::field::Empty);
        if let Some(external) = &task.external_task_id {
            span.record("apimart.task_id", external.as_str());
        }
        let engine = self.clone();
        async move {
            let signals = StepSignals {
                work: engine.shutdown.child_token(),
                lease_lost: CancellationToken::new(),
                trace: std::sync::Mutex::new(StepTrace::default()),
            };
            let stop = CancellationToken::new();
            let id = task.task_id;
            let heartbeat = engine.renew_lease(&id, &stop, &signals);
            let run = async {
                let result = engine.run_step(task, &signals).await;
                stop.cancel();
                result
            };
            let (result, ()) = tokio::join!(run, heartbeat);
            if let Err(e) = result {
                engine.work_failed(&e, "task step failed; it resumes when the lease expires");
            }
        }
        .instrument(span)
        .await;
    }

    /// Renews the lease every third of its length until `stop`; when the
    /// lease turns out lost, tells the step (`lease_lost`, `work`) and ends.
    /// A renewal in flight is never abandoned: `stop` is looked at between
    /// renewals only.
    async fn renew_lease(
        &self,
        id: &modelgen_domain::TaskId,
        stop: &CancellationToken,
        signals: &StepSignals,
    ) {
        let every = self.settings.lease / 3;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let now = self.clock.now();
            match self
                .tasks
                .renew_task_lease(id, &self.settings.owner, now, self.settings.lease)
                .await
            {
                Ok(()) => {}
                Err(RepoError::LeaseLost) => {
                    warn!("lease lost during step; another worker will resume the task");
                    signals.lease_lost.cancel();
                    signals.work.cancel();
                    return;
                }
                Err(e) => warn!(error = %e, "lease renewal failed"),
            }
        }
    }

    /// Runs the step under the step timeout with panics caught, then records
    /// its outcome.
    async fn run_step(&self, task: TaskRecord, signals: &StepSignals) -> Result<(), RepoError> {
        let step = std::panic::AssertUnwindSafe(self.step(task.clone(), signals)).catch_unwind();
        tokio::pin!(step);
        let caught = tokio::select! {
            r = &mut step => r,
            () = tokio::time::sleep(self.settings.step_timeout) => {
                warn!(
                    timeout_ms = self.settings.step_timeout.as_millis() as u64,
                    "step ran past the step timeout; interrupting it"
                );
                metrics::counter!("engine_step_timeouts_total").increment(1);
                signals.work.cancel();
                step.await
            }
        };
        let outcome = match caught {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => return Err(e),
            Err(_panic) => {
                // The panic's payload may quote request data: not logged.
                error!("task step panicked; the task is retried later");
                metrics::counter!("engine_step_panics_total", "kind" => "task").increment(1);
                StepOutcome::Snooze {
                    until: self.clock.now() + d(self.settings.poll_max_interval),
                    reason: SnoozeReason::Panicked,
                    progress: None,
                    count_poll: false,
                }
            }
        };
        let trace = signals.trace.lock().map(|t| t.clone()).unwrap_or_default();
        self.record(&task, outcome, &trace).await
    }

    /// Awaits `fut` unless the step is told to stop first: then the outcome
    /// of the interruption ([`Engine::interrupted`]). Only for waits that
    /// are safe to abandon (upstream calls, input reads, downloads), never
    /// around a database write.
    async fn guarded<T>(
        &self,
        signals: &StepSignals,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, StepOutcome> {
        tokio::select! {
            biased;
            () = signals.work.cancelled() => Err(self.interrupted(signals)),
            v = fut => Ok(v),
        }
    }

    /// What an interrupted step records: nothing when the lease is lost; a
    /// snooze due at once when the process shuts down (any replica resumes
    /// it); after a step timeout, a snooze of one poll interval. A submit cut
    /// off this way was counted before the call, so it is re-sent with the
    /// same `Idempotency-Key`.
    fn interrupted(&self, signals: &StepSignals) -> StepOutcome {
        let now = self.clock.now();
        if signals.lease_lost.is_cancelled() {
            StepOutcome::LostLease
        } else if self.shutdown.is_cancelled() {
            // Counted in the exit line's `interrupted=N`, with the other work
            // the shutdown cut off.
            self.interrupted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            StepOutcome::Snooze {
                until: now,
                reason: SnoozeReason::Shutdown,
                progress: None,
                count_poll: false,
            }
        } else {
            StepOutcome::Snooze {
                until: now + d(self.settings.poll_interval),
                reason: SnoozeReason::StepTimeout,
                progress: None,
                count_poll: false,
            }
        }
    }

    async fn step(
        &self,
        task: TaskRecord,
        signals: &StepSignals,
    ) -> Result<StepOutcome, RepoError> {
        let now = self.clock.now();
        if task.status.is_terminal() {
            return Ok(StepOutcome::Release);
        }
        match timed_out(&task, now, &self.settings) {
            Some(TimedOut::Queue) => {
                warn!("task waited too long to be submitted (QUEUE_TIMEOUT)");
                return Ok(StepOutcome::Fail {
                    kind: QUEUE_TIMEOUT_MESSAGE,
                    message: QUEUE_TIMEOUT_MESSAGE.into(),
                    alert: false,
                });
            }
            Some(TimedOut::Upstream) => {
                warn!("task timed out upstream (TASK_TIMEOUT)");
                return Ok(StepOutcome::Fail {
                    kind: TIMEOUT_MESSAGE,
                    message: TIMEOUT_MESSAGE.into(),
                    alert: false,
                });
            }
            None => {}
        }
        match task.external_task_id.clone() {
            None => self.submit(task, signals).await,
            Some(external) => self.poll(task, &external, signals).await,
        }
    }

    /// The recorder: the one place that writes a step's result. Turns
    /// `outcome` into its fenced writes ([`changes_for`]), the last of which
    /// carries the step's timeline entries ([`events_for`], same
    /// transaction), and runs them to completion, then the metrics (`tasks_finished_total`,
    /// `task_duration_seconds`, `task_polls`, `task_snoozes_total{reason}`),
    /// the alerts and the callback loop's wake-up. A write refused because
    /// the task is no longer ours (lease lost, cancelled, erased) drops the
    /// outcome quietly and deletes the result blobs it would have recorded.
    ///
    /// # Errors
    /// A database error: nothing more is written, and the task resumes when
    /// its lease expires.
    async fn record(
        &self,
        task: &TaskRecord,
        outcome: StepOutcome,
        trace: &StepTrace,
    ) -> Result<(), RepoError> {
        match &outcome {
            StepOutcome::Release => {
                return self
                    .tasks
                    .release_task_lease(&task.task_id, &self.settings.owner)
                    .await;
            }
            StepOutcome::LostLease => {
                debug!("task changed under this worker; nothing recorded");
                return Ok(());
            }
            StepOutcome::Fail {
                kind,
                message,
                alert: true,
            } => {
                self.alerts
                    .raise(kind, &format!("Apimart answered {kind}: {message}"));
            }
            _ => {}
        }
        let mut done = None;
        let mut changes = changes_for(&outcome, task.status, self.settings.callbacks_enabled);
        if let Some(last) = changes.last_mut() {
            last.events = events_for(&outcome, trace, &self.settings.owner);
        }
        for change in changes {
            match self
                .tasks
                .update_task(&task.task_id, &self.fence(), self.clock.now(), change)
                .await
            {
                Ok(t) => done = Some(t),
                Err(e) if superseded(&e) => {
                    if let StepOutcome::Complete { images, .. } = &outcome {
                        // Cancelled (or its data erased) while we downloaded: the
                        // images belong to no task row and must not linger.
                        self.discard_results(images).await;
                    }
                    debug!("task changed under this worker; outcome dropped");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        let Some(done) = done else { return Ok(()) };
        self.waiters.notify(done.task_id.as_str());
        match outcome {
            StepOutcome::Fail { kind, .. } => self.finished(&done, kind),
            StepOutcome::Complete { cost_micros, .. } => {
                if let Some(micros) = cost_micros {
                    metrics::counter!("upstream_cost_micros_total", "model" => done.model.clone())
                        .increment(u64::try_from(micros).unwrap_or(0));
                }
                self.finished(&done, "none");
            }
            StepOutcome::Snooze { reason, .. } => {
                metrics::counter!("task_snoozes_total", "reason" => reason.as_str()).increment(1);
            }
            StepOutcome::Submitted { .. } | StepOutcome::Release | StepOutcome::LostLease => {}
        }
        Ok(())
    }

    fn finished(&self, task: &TaskRecord, error_kind: &'static str) {
        metrics::counter!("tasks_finished_total", "type" => task.task_type.as_str(),
            "status" => task.status.as_str(), "error_kind" => error_kind)
        .increment(1);
        if let Some(done) = task.completed_at {
            let secs = (done - task.created_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("task_duration_seconds", "type" => task.task_type.as_str(),
                "status" => task.status.as_str())
            .record(secs);
        }
        metrics::histogram!("task_polls", "type" => task.task_type.as_str())
            .record(f64::from(task.poll_count.max(0)));
        info!(task.status = %task.status, error_kind, "task finished");
        if self.settings.callbacks_enabled {
            self.callback_wake.notify_one();
        }
    }

    async fn image_urls(&self, task: &TaskRecord) -> Result<Vec<String>, String> {
        let mut urls = Vec::with_capacity(task.input_images.len());
        for reference in &task.input_images {
            if let Some(key) = reference.strip_prefix(BLOB_REF_PREFIX) {
                let bytes = self
                    .blobs
                    .get(key)
                    .await
                    .map_err(|e| format!("input image {key} unavailable: {e}"))?;
                let mime = ImageMime::sniff(&bytes)
                    .ok_or_else(|| format!("input image {key} is not a PNG, JPEG or WebP"))?;
                urls.push(format!(
                    "data:{};base64,{}",
                    mime.as_str(),
                    base64::engine::general_purpose::STANDARD.encode(&bytes)
                ));
            } else {
                urls.push(reference.clone());
            }
        }
        Ok(urls)
    }

    /// Submit step. The attempt is written *before* the call (an intent, not
    /// a result): if we crash after Apimart accepted but before we stored its
    /// id, the next worker sees the attempt and re-sends the same
    /// Idempotency-Key.
    async fn submit(
        &self,
        task: TaskRecord,
        signals: &StepSignals,
    ) -> Result<StepOutcome, RepoError> {
        let recorded = TaskChange {
            count_submit_attempt: true,
            ..TaskChange::default()
        };
        let task = match self
            .tasks
            .update_task(&task.task_id, &self.fence(), self.clock.now(), recorded)
            .await
        {
            Ok(t) => t,
            Err(e) if superseded(&e) => return Ok(StepOutcome::LostLease),
            Err(e) => return Err(e),
        };
        signals.trace(|t| t.submit_attempt = Some(task.submit_attempts));
        if task.submit_attempts > 1 {
            metrics::counter!("upstream_submit_unknown_total").increment(1);
            warn!(
                submit.attempt = task.submit_attempts,
                "previous submit outcome unknown; re-sending with the same Idempotency-Key"
            );
        }
        let image_urls = match self.guarded(signals, self.image_urls(&task)).await {
            Err(interrupted) => return Ok(interrupted),
            Ok(Ok(u)) => u,
            Ok(Err(msg)) => {
                error!(reason = %msg, "task inputs unreadable");
                return Ok(StepOutcome::Fail {
                    kind: "input",
                    message: msg,
                    alert: false,
                });
            }
        };
        let request = GenerationRequest {
            model: task.model.clone(),
            prompt: task.prompt.clone(),
            size: task.size.clone(),
            n: 1,
            image_urls,
            resolution: None,
        };
        let key = task.task_id.to_string();
        let result = match self
            .guarded(
                signals,
                crate::timeline::observe(self.generator.submit(&request, &key)),
            )
            .await
        {
            Err(interrupted) => return Ok(self.submit_cut_off(&task, interrupted)),
            Ok((r, call)) => {
                signals.trace(|t| {
                    t.upstream_task_id = r.as_ref().ok().map(|resp| resp.task_id.clone());
                    t.submit = Some(call);
                });
                r
            }
        };
        Ok(match result {
            Ok(resp) if decide::usable_upstream_id(&resp.task_id).is_err() => {
                let message = decide::usable_upstream_id(&resp.task_id)
                    .err()
                    .unwrap_or_default();
                warn!(reason = %message, "submit answered with an unusable task id; task fails");
                StepOutcome::Fail {
                    kind: "bad_answer",
                    message,
                    alert: false,
                }
            }
            Ok(resp) => {
                // The task span carries the id from here on; repeating it as an
                // event field would print it twice on this line.
                tracing::Span::current().record("apimart.task_id", resp.task_id.as_str());
                info!(replayed = resp.replayed, "submitted upstream");
                let first =
                    decide::first_poll_delay(resp.estimated_time, self.settings.poll_interval);
                StepOutcome::Submitted {
                    external_id: resp.task_id,
                    first_poll_at: self.clock.now() + d(first),
                }
            }
            Err(e) => self.upstream_outcome(&task, &e, Call::Submit),
        })
    }

    /// A submit cut off by the step timeout is an attempt whose outcome is
    /// unknown (its request may have left): it is re-sent after the resubmit
    /// backoff, and the task fails once [`decide::MAX_SUBMIT_ATTEMPTS`] are
    /// spent, as for any unknown outcome. Other interruptions (shutdown, lost
    /// lease) pass through.
    fn submit_cut_off(&self, task: &TaskRecord, outcome: StepOutcome) -> StepOutcome {
        let StepOutcome::Snooze {
            reason: SnoozeReason::StepTimeout,
            ..
        } = outcome
        else {
            return outcome;
        };
        metrics::counter!("upstream_submit_unknown_total").increment(1);
        if task.submit_attempts >= decide::MAX_SUBMIT_ATTEMPTS {
            warn!(
                submit.attempt = task.submit_attempts,
                "submit cut off by the step timeout again; task fails"
            );
            return StepOutcome::Fail {
                kind: "timeout",
                message: format!(
                    "apimart: submit outcome unknown after {} attempts (each cut off by STEP_TIMEOUT)",
                    task.submit_attempts
                ),
                alert: false,
            };
        }
        let s = &self.settings;
        let wait = decide::resubmit_delay(
            task.submit_attempts,
            s.poll_interval,
            s.poll_max_interval,
            fastrand::f64(),
        );
        StepOutcome::Snooze {
            until: self.clock.now() + d(wait),
            reason: SnoozeReason::StepTimeout,
            progress: None,
            count_poll: false,
        }
    }

    /// The outcome of a failed upstream call, from
    /// [`decide::upstream_verdict`] (README.md, "Apimart errors").
    fn upstream_outcome(&self, task: &TaskRecord, e: &ApimartError, call: Call) -> StepOutcome {
        if call == Call::Submit && e.outcome_unknown() {
            metrics::counter!("upstream_submit_unknown_total").increment(1);
        }
        let now = self.clock.now();
        let s = &self.settings;
        match decide::upstream_verdict(e, call, task.submit_attempts) {
            Verdict::Fail { kind, alert } => {
                warn!(error = %e, "upstream call failed; task fails");
                let message = match e {
                    ApimartError::NotFound { message } if call == Call::Poll => {
                        format!("apimart task not found: {message}")
                    }
                    _ if alert => format!("apimart {kind}: {e}"),
                    _ => format!("apimart: {e}"),
                };
                StepOutcome::Fail {
                    kind,
                    message,
                    alert,
                }
            }
            Verdict::Resubmit => {
                warn!(error = %e, submit.attempt = task.submit_attempts,
                    "submit outcome unknown; re-sending later with the same Idempotency-Key");
                let wait = decide::resubmit_delay(
                    task.submit_attempts,
                    s.poll_interval,
                    s.poll_max_interval,
                    fastrand::f64(),
                );
                StepOutcome::Snooze {
                    until: now + d(wait),
                    reason: SnoozeReason::SubmitUnknown,
                    progress: None,
                    count_poll: false,
                }
            }
            Verdict::PollLater { at_least } => {
                warn!(error = %e, "status poll failed; retrying later");
                let wait = decide::poll_retry_delay(
                    polls(task),
                    s.poll_interval,
                    s.poll_max_interval,
                    fastrand::f64(),
                    at_least,
                );
                StepOutcome::Snooze {
                    until: now + d(wait),
                    reason: SnoozeReason::PollFailed,
                    progress: None,
                    count_poll: true,
                }
            }
        }
    }

    async fn poll(
        &self,
        task: TaskRecord,
        external: &str,
        signals: &StepSignals,
    ) -> Result<StepOutcome, RepoError> {
        let polled = self
            .guarded(
                signals,
                crate::timeline::observe(self.generator.status(external)),
            )
            .await;
        let resp = match polled {
            Err(interrupted) => return Ok(interrupted),
            Ok((result, call)) => {
                signals.trace(|t| {
                    t.upstream_task_id = Some(external.to_owned());
                    if let Ok(r) = &result {
                        t.upstream_status = Some(upstream_status_name(&r.status));
                        t.progress = Some(i32::from(r.progress));
                    }
                    t.poll = Some(call);
                });
                match result {
                    Ok(r) => r,
                    Err(e) => return Ok(self.upstream_outcome(&task, &e, Call::Poll)),
                }
            }
        };
        debug!(upstream.status = ?resp.status, upstream.progress = resp.progress, "polled");
        let progress = Progress::clamped(i64::from(resp.progress));
        Ok(match &resp.status {
            UpstreamStatus::Completed => return self.complete(task, &resp, signals).await,
            UpstreamStatus::Failed => {
                let msg = resp
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "upstream task failed".into());
                StepOutcome::Fail {
                    kind: "upstream_failed",
                    message: format!("apimart: {msg}"),
                    alert: false,
                }
            }
            UpstreamStatus::Cancelled => StepOutcome::Fail {
                kind: "upstream_cancelled",
                message: "apimart: task cancelled upstream".into(),
                alert: false,
            },
            status => StepOutcome::Snooze {
                until: self.clock.now()
                    + d(decide::poll_delay(
                        polls(&task),
                        self.settings.poll_interval,
                        self.settings.poll_max_interval,
                        fastrand::f64(),
                    )),
                reason: SnoozeReason::Running,
                progress: matches!(status, UpstreamStatus::Processing).then_some(progress),
                count_poll: true,
            },
        })
    }

    /// Download step: every result image is streamed into the blob store. A
    /// transient failure of image k retries image k alone, in the step, up
    /// to [`DOWNLOAD_ATTEMPTS`] times (the images already stored are kept,
    /// nothing is polled again); only then is everything stored discarded
    /// and the task snoozed for a new poll.
    async fn complete(
        &self,
        task: TaskRecord,
        resp: &TaskStatusResponse,
        signals: &StepSignals,
    ) -> Result<StepOutcome, RepoError> {
        let fail = |kind: &'static str, message: String| StepOutcome::Fail {
            kind,
            message,
            alert: false,
        };
        if resp.images.is_empty() {
            return Ok(fail(
                "no_images",
                "apimart completed the task without images".into(),
            ));
        }
        let now = self.clock.now();
        let mut rows = Vec::with_capacity(resp.images.len());
        for (i, image) in resp.images.iter().enumerate() {
            let Some(url) = image.urls.first() else {
                self.discard_results(&rows).await;
                return Ok(fail(
                    "no_images",
                    "apimart returned an image without a url".into(),
                ));
            };
            if image.expires_at.is_some_and(|exp| exp <= now.timestamp()) {
                self.discard_results(&rows).await;
                return Ok(fail(
                    "expired",
                    "result image expired before it could be downloaded".into(),
                ));
            }
            let mut attempt = 1;
            let stored = loop {
                let result = match self
                    .guarded(signals, self.store_result(&task, i, url, now))
                    .await
                {
                    Ok(r) => r,
                    Err(interrupted) => {
                        self.discard_results(&rows).await;
                        return Ok(interrupted);
                    }
                };
                match result {
                    Err(StoreResult::Fetch(FetchError::Transient(reason)))
                        if attempt < DOWNLOAD_ATTEMPTS =>
                    {
                        warn!(%reason, image = i, attempt, "result download failed; retrying it");
                        metrics::counter!("result_download_retries_total").increment(1);
                        let wait = backoff_delay(
                            attempt - 1,
                            self.settings.poll_interval,
                            DOWNLOAD_RETRY_DELAY,
                        );
                        attempt += 1;
                        if let Err(interrupted) =
                            self.guarded(signals, tokio::time::sleep(wait)).await
                        {
                            self.discard_results(&rows).await;
                            return Ok(interrupted);
                        }
                    }
                    other => break other,
                }
            };
            let outcome = match stored {
                Ok(row) => {
                    rows.push(row);
                    continue;
                }
                Err(StoreResult::Fetch(FetchError::Transient(reason))) => {
                    warn!(%reason, "result download failed; polling again later");
                    // Apimart has finished its run: show that (`processing` at
                    // 100 %, the nearest status until our copy is stored) rather
                    // than a stale `submitted` while the download is retried.
                    StepOutcome::Snooze {
                        until: now + d(DOWNLOAD_RETRY_DELAY),
                        reason: SnoozeReason::DownloadFailed,
                        progress: Some(Progress::clamped(100)),
                        count_poll: true,
                    }
                }
                Err(StoreResult::Fetch(e @ FetchError::Refused(_))) => {
                    // The upstream named an address downloads may not reach: no
                    // retry can change that, and nothing was sent there.
                    warn!(error = %e, "result image URL refused; task fails");
                    fail("refused", e.to_string())
                }
                Err(StoreResult::Fetch(e)) => {
                    fail("download", format!("could not download result image: {e}"))
                }
                Err(StoreResult::Invalid(msg)) => fail("bad_image", msg),
                Err(StoreResult::Blob(e)) => {
                    error!(error = %e, "storing result image failed");
                    self.discard_results(&rows).await;
                    return Err(RepoError::Unavailable(format!("blob store: {e}")));
                }
            };
            self.discard_results(&rows).await;
            return Ok(outcome);
        }
        Ok(StepOutcome::Complete {
            images: rows,
            progress: Progress::clamped(i64::from(resp.progress)),
            cost_micros: cost_micros(resp.cost),
        })
    }

    /// Deletes result blobs stored by a step that will not record them
    /// (best effort: a failure is logged, the step goes on).
    async fn discard_results(&self, rows: &[NewImage]) {
        for row in rows {
            let Some(key) = row.location.storage_key() else {
                continue;
            };
            if let Err(e) = self.blobs.delete(key).await {
                warn!(error = %e, blob.key = %key, "could not delete an unrecorded result image");
            }
        }
    }

    /// Downloads result image `index` from `url` and streams it into the blob
    /// store under `results/<task>/<index>-<ulid>.<ext>`: only the head (enough to
    /// tell the type and the pixel size) is buffered, the rest goes up as it
    /// arrives (the whole image is held only for an inline base64 copy).
    async fn store_result(
        &self,
        task: &TaskRecord,
        index: usize,
        url: &str,
        now: DateTime<Utc>,
    ) -> Result<NewImage, StoreResult> {
        let mut chunks = self
            .fetcher
            .open(url, self.settings.max_result_image_bytes)
            .await
            .map_err(StoreResult::Fetch)?;
        let mut head = BytesMut::new();
        let (mime, size) = loop {
            let ended = match chunks.next().await {
                Some(chunk) => {
                    head.extend_from_slice(&chunk.map_err(StoreResult::Fetch)?);
                    false
                }
                None => true,
            };
            let mime = ImageMime::sniff(&head);
            if let Some(mime) = mime
                && let Ok(size) = imagesize::blob_size(&head)
            {
                break (mime, size);
            }
            if ended || head.len() >= MAX_RESULT_HEAD_BYTES {
                return Err(StoreResult::Invalid(match mime {
                    None => "result image is not a PNG, JPEG or WebP".into(),
                    Some(_) => "result image unreadable: no size in its header".into(),
                }));
            }
        };
        check_result_dimensions(
            self.settings.result_pixel_budget,
            size.width as u64,
            size.height as u64,
        )
        .map_err(StoreResult::Invalid)?;
        // Each download gets keys of its own (`<index>-<ulid>`): a worker whose
        // lease ran out while it downloaded deletes what *it* stored
        // (`discard_results`), never the blobs the worker that took over and
        // completed the task recorded under the same task.
        let key = format!(
            "{}{}/{index}-{}.{}",
            RESULTS_PREFIX,
            task.task_id,
            ulid::Ulid::generate(),
            mime.extension()
        );
        let inline = self
            .settings
            .store_image_base64
            .then(|| Arc::new(std::sync::Mutex::new(BytesMut::new())));
        let copy = inline.clone();
        let body = futures_util::stream::once(futures_util::future::ready(Ok(head.freeze())))
            .chain(chunks)
            .map(move |chunk| {
                if let (Ok(bytes), Some(copy)) = (&chunk, &copy)
                    && let Ok(mut all) = copy.lock()
                {
                    all.extend_from_slice(bytes);
                }
                chunk.map_err(std::io::Error::other)
            });
        let len = match self.blobs.put_stream(&key, Box::pin(body)).await {
            Ok(n) => n,
            Err(BlobError::Source(e)) => {
                let cause = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<FetchError>())
                    .cloned()
                    .unwrap_or_else(|| FetchError::Transient(e.to_string()));
                return Err(StoreResult::Fetch(cause));
            }
            Err(e) => return Err(StoreResult::Blob(e)),
        };
        let image_base64 = inline.and_then(|all| {
            all.lock()
                .ok()
                .map(|bytes| base64::engine::general_purpose::STANDARD.encode(&bytes[..]))
        });
        Ok(NewImage {
            task_id: task.task_id,
            angle: task.angle,
            location: ImageLocation::Stored(key),
            image_base64,
            mime: Some(mime.as_str().into()),
            width: Some(i32::try_from(size.width).unwrap_or(i32::MAX)),
            height: Some(i32::try_from(size.height).unwrap_or(i32::MAX)),
            bytes: Some(i64::try_from(len).unwrap_or(i64::MAX)),
            created_at: now,
        })
    }

    // ---- callbacks ---------------------------------------------------------

    /// Runs the callback worker until `token` is cancelled.
    pub async fn run_callback_worker(self: Arc<Self>, token: CancellationToken) {
        if self.sender.is_none() {
            return;
        }
        info!("callback worker started");
        self.heartbeat.started(EngineLoop::Callbacks);
        loop {
            self.heartbeat.beat(EngineLoop::Callbacks);
            if token.is_cancelled() {
                break;
            }
            let n = match self.deliver_due_callbacks().await {
                Ok(n) => n,
                Err(e) => {
                    self.work_failed(&e, "claiming callbacks failed");
                    0
                }
            };
            if n == 0 {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = self.callback_wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.idle_interval) => {}
                }
            }
        }
        self.heartbeat.stopped(EngineLoop::Callbacks);
        info!("callback worker stopped");
    }

    /// Claims due outbox rows and makes one delivery attempt each (concurrently).
    /// Returns how many were claimed.
    ///
    /// # Errors
    /// When the claim query fails.
    pub async fn deliver_due_callbacks(self: &Arc<Self>) -> Result<usize, RepoError> {
        let Some(sender) = self.sender.clone() else {
            return Ok(0);
        };
        let claimed = self
            .outbox
            .claim_due_callbacks(
                &self.settings.owner,
                self.clock.now(),
                self.settings.lease,
                self.settings.batch_size,
            )
            .await?;
        metrics::counter!("lease_claims_total", "kind" => "callback")
            .increment(claimed.len() as u64);
        let n = claimed.len();
        let mut set = JoinSet::new();
        for record in claimed {
            let engine = self.clone();
            let sender = sender.clone();
            set.spawn(async move {
                let span =
                    info_span!("callback", event.id = %record.event_id, task.id = %record.task_id);
                if let Err(e) = engine
                    .deliver(&*sender, record)
                    .instrument(span.clone())
                    .await
                {
                    span.in_scope(|| {
                        engine.work_failed(&e, "callback attempt could not be recorded")
                    });
                }
            });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    /// The payload of a task's callback, built from its current (terminal) row.
    ///
    /// # Errors
    /// When the task or its images cannot be read.
    pub async fn callback_payload(
        &self,
        task_id: &modelgen_domain::TaskId,
    ) -> Result<CallbackPayload, RepoError> {
        let task = self.tasks.get_task(task_id).await?;
        self.payload_of(&task).await
    }

    /// The callback payload of `task` (terminal), its images read now.
    async fn payload_of(&self, task: &TaskRecord) -> Result<CallbackPayload, RepoError> {
        let task_id = &task.task_id;
        let records = self.images.images_for_task(task_id).await?;
        let mut images = Vec::with_capacity(records.len());
        for i in &records {
            // Rendered now, for this attempt: current PUBLIC_BASE_URL, or a
            // presigned URL valid from now on.
            let image_url = crate::image_url(&*self.blobs, i)
                .await
                .map_err(|e| RepoError::Unavailable(format!("rendering an image URL: {e}")))?;
            images.push(CallbackImage {
                image_url,
                width: i.width,
                height: i.height,
                mime: i.mime.clone(),
            });
        }
        Ok(CallbackPayload {
            task_id: task.task_id.to_string(),
            request_id: task.request_id.clone(),
            user_id: task.user_id.clone(),
            task_type: task.task_type.as_str().into(),
            status: task.status.as_str().into(),
            angle: task.angle.map(|a| a.as_str().into()),
            image: images.first().cloned(),
            image_url: images.first().map(|i| i.image_url.clone()),
            images,
            error_code: task.error_code,
            error_message: task.error_message.clone(),
            completed_at: task.completed_at.map(format_timestamp),
            event_type: if task.retries > 0 {
                format!("task.retry_{}", task.status.as_str())
            } else {
                format!("task.{}", task.status.as_str())
            },
            cost: task.cost_micros.map(|m| m as f64 / 1_000_000.0),
        })
    }

    async fn deliver(
        &self,
        sender: &dyn CallbackSender,
        record: CallbackRecord,
    ) -> Result<(), RepoError> {
        let task = self.tasks.get_task(&record.task_id).await?;
        let mut payload = self.payload_of(&task).await?;
        // The row says which run it reports (a redelivery of an earlier
        // run's row keeps its type).
        payload.event_type.clone_from(&record.event_type);
        let body = serde_json::to_vec(&payload).map_err(|e| RepoError::Corrupt {
            id: record.event_id.clone(),
            reason: e.to_string(),
        })?;
        let started = std::time::Instant::now();
        let request = CallbackRequest {
            event_id: &record.event_id,
            body: &body,
        };
        // The task's own receiver when it was created with one, else CALLBACK_URL.
        let result = match task.callback_url.as_deref() {
            Some(url) => sender.send_to(url, request).await,
            None => sender.send(request).await,
        };
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let attempt = u32::try_from(record.attempts.max(0)).unwrap_or(0) + 1;
        let now = self.clock.now();
        let settings = &self.settings;
        let outcome =
            decide::callback_outcome(&result, attempt, settings.callback_max_attempts, |a| {
                modelgen_callback::next_attempt_delay(
                    a,
                    settings.callback_base_delay,
                    settings.callback_max_delay,
                    fastrand::f64(),
                )
            });
        self.record_callback(&record, attempt, now, &result, outcome, latency_ms)
            .await
    }

    /// The callback recorder: logs, alerts and counts one attempt's
    /// `outcome` and writes it (`record_callback_attempt`, fenced by the
    /// outbox lease; a lost lease drops it quietly).
    async fn record_callback(
        &self,
        record: &CallbackRecord,
        attempt: u32,
        now: DateTime<Utc>,
        result: &DeliveryResult,
        outcome: decide::CallbackVerdict,
        latency_ms: i64,
    ) -> Result<(), RepoError> {
        let (written, label) = match outcome {
            decide::CallbackVerdict::Delivered => {
                if let DeliveryResult::Delivered { status } = result {
                    info!(http.status = status, attempt, "callback delivered");
                }
                (AttemptOutcome::Delivered, "delivered")
            }
            decide::CallbackVerdict::Dead { reason } => {
                self.alerts.raise(
                    "callback_dead",
                    &format!(
                        "callback {} for task {} is dead after {attempt} attempts: {reason}",
                        record.event_id, record.task_id
                    ),
                );
                metrics::counter!("callbacks_dead_total").increment(1);
                (AttemptOutcome::Dead { error: reason }, "dead")
            }
            decide::CallbackVerdict::Retry { after, reason } => {
                warn!(attempt, %reason, retry_in_ms = after.as_millis() as u64, "callback failed; will retry");
                (
                    AttemptOutcome::Retry {
                        next_attempt_at: now + d(after),
                        error: reason,
                    },
                    "retry",
                )
            }
        };
        metrics::counter!("callback_deliveries_total", "outcome" => label).increment(1);
        let note = AttemptNote {
            replica: Some(self.settings.owner.clone()),
            http_status: delivery_status(result),
            latency_ms: Some(latency_ms),
        };
        match self
            .outbox
            .record_callback_attempt_noted(
                &record.event_id,
                &self.settings.owner,
                now,
                written,
                note,
            )
            .await
        {
            Ok(_) | Err(RepoError::LeaseLost) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Checks a downloaded result's declared dimensions against the pixel budget,
/// before anything stores or decodes it; the error is the task's
/// `error_message` (the task fails at once: a retry would get the same image).
///
/// # Errors
/// The message, e.g. `result image declares 50000 × 50000 pixels, over the
/// limit of 8192 pixels a side and 40000000 pixels in all`.
pub fn check_result_dimensions(budget: PixelBudget, width: u64, height: u64) -> Result<(), String> {
    budget
        .check(width, height)
        .map_err(|e| format!("result {e}"))
}

enum StoreResult {
    /// The download failed (before or while streaming).
    Fetch(FetchError),
    /// Not an image we accept.
    Invalid(String),
    /// The blob store failed.
    Blob(BlobError),
}

/// The HTTP status a callback attempt got, when the receiver answered.
fn delivery_status(result: &DeliveryResult) -> Option<i32> {
    match result {
        DeliveryResult::Delivered { status } | DeliveryResult::Rejected { status, .. } => {
            Some(i32::from(*status))
        }
        _ => None,
    }
}

/// Apimart's status as the timeline shows it: its canonical name, at most
/// 32 characters (an unknown status is the upstream's own text).
fn upstream_status_name(status: &UpstreamStatus) -> String {
    status.as_str().chars().take(32).collect()
}
