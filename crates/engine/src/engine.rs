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
use futures_util::StreamExt as _;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use modelgen_callback::{
    CallbackImage, CallbackPayload, CallbackRequest, CallbackSender, DeliveryResult,
};
use modelgen_domain::{
    ImageMime, PixelBudget, Progress, TaskEvent, TaskStatus, TransitionError, backoff_delay,
    format_timestamp, with_jitter,
};
use modelgen_persistence::{
    AttemptOutcome, BlobError, BlobStore, CallbackOutbox, CallbackRecord, Fence, ImageLocation,
    ImageRepository, NewImage, RepoError, TaskChange, TaskRecord, TaskRepository,
};

use crate::CODE_UPSTREAM;
use crate::alerts::Alerts;
use crate::health::EngineLoop;
use crate::ports::{Clock, FetchError, ImageFetcher, ImageGenerator};
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
/// Delay before retrying a result download that failed transiently.
pub const DOWNLOAD_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Most bytes of a result image read before its type and pixel size must be
/// known (a JPEG's size marker can follow large metadata segments).
pub const MAX_RESULT_HEAD_BYTES: usize = 1024 * 1024;
/// Longest wait before the first status poll, whatever Apimart estimates.
pub const MAX_FIRST_POLL_DELAY: Duration = Duration::from_secs(60);

/// Tunables of the engine (from `Config`).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Identity written into leases (`host-pid-random`).
    pub owner: String,
    /// Lease length.
    pub lease: Duration,
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
    /// Poked when a task is created or a callback enqueued, to skip the idle wait.
    pub wake: Arc<Notify>,
    /// Cancelled when the process shuts down: failures of work cut off by
    /// the shutdown are expected, and logged as such rather than as errors.
    pub shutdown: CancellationToken,
    /// Steps and callback attempts that failed during the shutdown.
    pub interrupted: Arc<std::sync::atomic::AtomicU64>,
    /// Bumped by the task and callback loops every time round; `/healthz`
    /// fails when a running loop falls silent (crate::health::Heartbeat).
    pub heartbeat: crate::health::Heartbeat,
}

/// How a step ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Done,
    /// The lease was lost or the task changed under us (e.g. cancelled): stop quietly.
    Superseded,
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

fn d(td: Duration) -> TimeDelta {
    TimeDelta::from_std(td).unwrap_or(TimeDelta::MAX)
}

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

    /// One step of one claimed task, with the lease renewed in the background
    /// while the step runs. The step is abandoned when the lease is lost.
    pub async fn process_task(self: Arc<Self>, task: TaskRecord) {
        let span = info_span!("task", task.id = %task.task_id, task.r#type = %task.task_type,
            apimart.task_id = tracing::field::Empty);
        if let Some(external) = &task.external_task_id {
            span.record("apimart.task_id", external.as_str());
        }
        let id = task.task_id;
        let engine = self.clone();
        async move {
            let heartbeat = async {
                let every = engine.settings.lease / 3;
                loop {
                    tokio::time::sleep(every).await;
                    let now = engine.clock.now();
                    match engine
                        .tasks
                        .renew_task_lease(&id, &engine.settings.owner, now, engine.settings.lease)
                        .await
                    {
                        Ok(()) => {}
                        Err(RepoError::LeaseLost) => return,
                        Err(e) => warn!(error = %e, "lease renewal failed"),
                    }
                }
            };
            tokio::select! {
                result = engine.step(task) => match result {
                    Ok(Step::Done) => {}
                    Ok(Step::Superseded) => debug!("task changed under this worker; step dropped"),
                    Err(e) => engine.work_failed(&e, "task step failed; it resumes when the lease expires"),
                },
                () = heartbeat => warn!("lease lost during step; another worker will resume the task"),
            }
        }
        .instrument(span)
        .await;
    }

    async fn step(&self, task: TaskRecord) -> Result<Step, RepoError> {
        let now = self.clock.now();
        if task.status.is_terminal() {
            self.tasks
                .release_task_lease(&task.task_id, &self.settings.owner)
                .await?;
            return Ok(Step::Done);
        }
        match timed_out(&task, now, &self.settings) {
            Some(TimedOut::Queue) => {
                warn!("task waited too long to be submitted (QUEUE_TIMEOUT)");
                return self
                    .fail(&task, QUEUE_TIMEOUT_MESSAGE.into(), QUEUE_TIMEOUT_MESSAGE)
                    .await;
            }
            Some(TimedOut::Upstream) => {
                warn!("task timed out upstream (TASK_TIMEOUT)");
                return self
                    .fail(&task, TIMEOUT_MESSAGE.into(), TIMEOUT_MESSAGE)
                    .await;
            }
            None => {}
        }
        match task.external_task_id.clone() {
            None => self.submit(task).await,
            Some(external) => self.poll(task, &external).await,
        }
    }

    /// Applies a change; maps "someone else owns this now" to [`Step::Superseded`].
    async fn write(
        &self,
        task: &TaskRecord,
        change: TaskChange,
    ) -> Result<Result<TaskRecord, Step>, RepoError> {
        match self
            .tasks
            .update_task(&task.task_id, &self.fence(), self.clock.now(), change)
            .await
        {
            Ok(t) => Ok(Ok(t)),
            Err(RepoError::LeaseLost)
            | Err(RepoError::AlreadyTerminal(_))
            | Err(RepoError::InvalidTransition(TransitionError::Terminal(_))) => {
                Ok(Err(Step::Superseded))
            }
            Err(e) => Err(e),
        }
    }

    /// [`Engine::write`] for a change that ends the step.
    async fn write_step(&self, task: &TaskRecord, change: TaskChange) -> Result<Step, RepoError> {
        Ok(match self.write(task, change).await? {
            Ok(_) => Step::Done,
            Err(s) => s,
        })
    }

    async fn fail(
        &self,
        task: &TaskRecord,
        message: String,
        kind: &'static str,
    ) -> Result<Step, RepoError> {
        let change = TaskChange {
            event: Some(TaskEvent::Failed),
            error: Some((CODE_UPSTREAM, message)),
            enqueue_callback: self.settings.callbacks_enabled,
            release_lease: true,
            ..TaskChange::default()
        };
        match self.write(task, change).await? {
            Ok(done) => {
                self.finished(&done, kind);
                Ok(Step::Done)
            }
            Err(s) => Ok(s),
        }
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
            self.wake.notify_one();
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

    async fn submit(&self, task: TaskRecord) -> Result<Step, RepoError> {
        // Record the attempt before calling upstream: if we crash after Apimart
        // accepted but before we stored its id, the next worker sees the
        // attempt and re-sends the same Idempotency-Key.
        let recorded = TaskChange {
            count_submit_attempt: true,
            ..TaskChange::default()
        };
        let task = match self.write(&task, recorded).await? {
            Ok(t) => t,
            Err(s) => return Ok(s),
        };
        if task.submit_attempts > 1 {
            metrics::counter!("upstream_submit_unknown_total").increment(1);
            warn!(
                submit.attempt = task.submit_attempts,
                "previous submit outcome unknown; re-sending with the same Idempotency-Key"
            );
        }
        let image_urls = match self.image_urls(&task).await {
            Ok(u) => u,
            Err(msg) => {
                error!(reason = %msg, "task inputs unreadable");
                return self.fail(&task, msg, "input").await;
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
        let result = self
            .generator
            .submit(&request, &task.task_id.to_string())
            .await;
        match result {
            Ok(resp) => {
                // The task span carries the id from here on; repeating it as an
                // event field would print it twice on this line.
                tracing::Span::current().record("apimart.task_id", resp.task_id.as_str());
                info!(replayed = resp.replayed, "submitted upstream");
                let first = resp
                    .estimated_time
                    .map(|e| e / 2)
                    .unwrap_or(self.settings.poll_interval)
                    .clamp(
                        self.settings.poll_interval,
                        MAX_FIRST_POLL_DELAY.max(self.settings.poll_interval),
                    );
                let change = TaskChange {
                    external_task_id: Some(resp.task_id),
                    next_run_at: Some(self.clock.now() + d(first)),
                    release_lease: true,
                    ..TaskChange::default()
                };
                self.write_step(&task, change).await
            }
            Err(e) => {
                if e.outcome_unknown() {
                    metrics::counter!("upstream_submit_unknown_total").increment(1);
                }
                self.upstream_failed(&task, e, true).await
            }
        }
    }

    /// The Apimart error policy (docs/design.md, "Polling and pacing"): 400/403/404 fail the task
    /// with the message kept; 401/402 fail it and raise an alert; transient
    /// errors (already retried with backoff inside the client) fail a submit,
    /// and reschedule a poll (the task timeout bounds it).
    async fn upstream_failed(
        &self,
        task: &TaskRecord,
        e: ApimartError,
        submitting: bool,
    ) -> Result<Step, RepoError> {
        let kind = upstream_error_kind(&e);
        match &e {
            ApimartError::Unauthorized { .. } | ApimartError::InsufficientBalance { .. } => {
                self.alerts
                    .raise(kind, &format!("Apimart answered {kind}: {e}"));
                self.fail(task, format!("apimart {kind}: {e}"), kind).await
            }
            ApimartError::RateLimited { .. }
            | ApimartError::Server { .. }
            | ApimartError::Timeout
            | ApimartError::Connect { .. }
            | ApimartError::Transport { .. }
                if !submitting =>
            {
                warn!(error = %e, "status poll failed; retrying later");
                let delay = self.poll_delay(task);
                let wait = e.retry_after().map_or(delay, |r| r.max(delay));
                let change = TaskChange {
                    count_poll: true,
                    next_run_at: Some(self.clock.now() + d(wait)),
                    release_lease: true,
                    ..TaskChange::default()
                };
                self.write_step(task, change).await
            }
            _ => {
                warn!(error = %e, "upstream call failed; task fails");
                self.fail(task, format!("apimart: {e}"), kind).await
            }
        }
    }

    /// Wait before the next poll: exponential backoff with jitter over the
    /// polls made so far, from `poll_interval` up to `poll_max_interval`.
    fn poll_delay(&self, task: &TaskRecord) -> Duration {
        with_jitter(
            backoff_delay(
                task.poll_count.max(0) as u32,
                self.settings.poll_interval,
                self.settings.poll_max_interval,
            ),
            fastrand::f64(),
        )
        .max(self.settings.poll_interval / 2)
    }

    fn next_poll(&self, task: &TaskRecord) -> DateTime<Utc> {
        self.clock.now() + d(self.poll_delay(task))
    }

    async fn poll(&self, task: TaskRecord, external: &str) -> Result<Step, RepoError> {
        let result = self.generator.status(external).await;
        let resp = match result {
            Ok(r) => r,
            Err(ApimartError::NotFound { message }) => {
                return self
                    .fail(
                        &task,
                        format!("apimart task not found: {message}"),
                        "not_found",
                    )
                    .await;
            }
            Err(e) => return self.upstream_failed(&task, e, false).await,
        };
        debug!(upstream.status = ?resp.status, upstream.progress = resp.progress, "polled");
        match &resp.status {
            UpstreamStatus::Completed => self.complete(task, &resp).await,
            UpstreamStatus::Failed => {
                let msg = resp
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "upstream task failed".into());
                self.fail(&task, format!("apimart: {msg}"), "upstream_failed")
                    .await
            }
            UpstreamStatus::Cancelled => {
                self.fail(
                    &task,
                    "apimart: task cancelled upstream".into(),
                    "upstream_cancelled",
                )
                .await
            }
            status => {
                let event = match status {
                    UpstreamStatus::Processing => Some(TaskEvent::Progressed(Progress::clamped(
                        i64::from(resp.progress),
                    ))),
                    _ => None,
                };
                let change = TaskChange {
                    event,
                    count_poll: true,
                    next_run_at: Some(self.next_poll(&task)),
                    release_lease: true,
                    ..TaskChange::default()
                };
                self.write_step(&task, change).await
            }
        }
    }

    async fn complete(
        &self,
        task: TaskRecord,
        resp: &TaskStatusResponse,
    ) -> Result<Step, RepoError> {
        if resp.images.is_empty() {
            return self
                .fail(
                    &task,
                    "apimart completed the task without images".into(),
                    "no_images",
                )
                .await;
        }
        let now = self.clock.now();
        let mut rows = Vec::with_capacity(resp.images.len());
        for (i, image) in resp.images.iter().enumerate() {
            let Some(url) = image.urls.first() else {
                return self
                    .fail(
                        &task,
                        "apimart returned an image without a url".into(),
                        "no_images",
                    )
                    .await;
            };
            if image.expires_at.is_some_and(|exp| exp <= now.timestamp()) {
                return self
                    .fail(
                        &task,
                        "result image expired before it could be downloaded".into(),
                        "expired",
                    )
                    .await;
            }
            match self.store_result(&task, i, url, now).await {
                Ok(row) => rows.push(row),
                Err(StoreResult::Fetch(FetchError::Transient(reason))) => {
                    warn!(%reason, "result download failed; retrying");
                    self.discard_results(&rows).await;
                    // Apimart has finished its run: show that (`processing` at
                    // 100 %, the nearest status until our copy is stored) rather
                    // than a stale `submitted` while the download is retried.
                    let change = TaskChange {
                        event: Some(TaskEvent::Progressed(Progress::clamped(100))),
                        count_poll: true,
                        next_run_at: Some(now + d(DOWNLOAD_RETRY_DELAY)),
                        release_lease: true,
                        ..TaskChange::default()
                    };
                    return self.write_step(&task, change).await;
                }
                Err(StoreResult::Fetch(e @ FetchError::Refused(_))) => {
                    // The upstream named an address downloads may not reach: no
                    // retry can change that, and nothing was sent there.
                    warn!(error = %e, "result image URL refused; task fails");
                    self.discard_results(&rows).await;
                    return self.fail(&task, e.to_string(), "refused").await;
                }
                Err(StoreResult::Fetch(e)) => {
                    self.discard_results(&rows).await;
                    return self
                        .fail(
                            &task,
                            format!("could not download result image: {e}"),
                            "download",
                        )
                        .await;
                }
                Err(StoreResult::Invalid(msg)) => {
                    self.discard_results(&rows).await;
                    return self.fail(&task, msg, "bad_image").await;
                }
                Err(StoreResult::Blob(e)) => {
                    error!(error = %e, "storing result image failed");
                    return Err(RepoError::Unavailable(format!("blob store: {e}")));
                }
            }
        }
        // The state machine requires passing through processing.
        let task = if task.status == TaskStatus::Submitted {
            let change = TaskChange {
                event: Some(TaskEvent::Progressed(Progress::clamped(i64::from(
                    resp.progress,
                )))),
                ..TaskChange::default()
            };
            match self.write(&task, change).await? {
                Ok(t) => t,
                Err(s) => {
                    self.discard_results(&rows).await;
                    return Ok(s);
                }
            }
        } else {
            task
        };
        let stored = rows.clone();
        let change = TaskChange {
            event: Some(TaskEvent::Completed),
            images: rows,
            count_poll: true,
            enqueue_callback: self.settings.callbacks_enabled,
            release_lease: true,
            ..TaskChange::default()
        };
        match self.write(&task, change).await {
            Ok(Ok(done)) => {
                self.finished(&done, "none");
                Ok(Step::Done)
            }
            Ok(Err(s)) => {
                // Cancelled (or its data erased) while we downloaded: the
                // images belong to no task row and must not linger.
                self.discard_results(&stored).await;
                Ok(s)
            }
            Err(e) => Err(e),
        }
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
                    _ = self.wake.notified() => {}
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
            image_url: images.first().map(|i| i.image_url.clone()),
            images,
            error_code: task.error_code,
            error_message: task.error_message.clone(),
            completed_at: task.completed_at.map(format_timestamp),
        })
    }

    async fn deliver(
        &self,
        sender: &dyn CallbackSender,
        record: CallbackRecord,
    ) -> Result<(), RepoError> {
        let payload = self.callback_payload(&record.task_id).await?;
        let body = serde_json::to_vec(&payload).map_err(|e| RepoError::Corrupt {
            id: record.event_id.clone(),
            reason: e.to_string(),
        })?;
        let result = sender
            .send(CallbackRequest {
                event_id: &record.event_id,
                body: &body,
            })
            .await;
        let attempt = u32::try_from(record.attempts.max(0)).unwrap_or(0) + 1;
        let now = self.clock.now();
        let (outcome, label) = match result {
            DeliveryResult::Delivered { status } => {
                info!(http.status = status, attempt, "callback delivered");
                (AttemptOutcome::Delivered, "delivered")
            }
            other => {
                let (reason, retry_after) = match other {
                    DeliveryResult::Rejected {
                        status,
                        retry_after,
                        ..
                    } => (format!("HTTP {status}"), retry_after),
                    DeliveryResult::Failed { reason } => (reason, None),
                    DeliveryResult::Delivered { .. } => (String::new(), None),
                };
                if attempt >= self.settings.callback_max_attempts {
                    self.alerts.raise(
                        "callback_dead",
                        &format!(
                            "callback {} for task {} is dead after {attempt} attempts: {reason}",
                            record.event_id, record.task_id
                        ),
                    );
                    metrics::counter!("callbacks_dead_total").increment(1);
                    (AttemptOutcome::Dead { error: reason }, "dead")
                } else {
                    let delay = modelgen_callback::next_attempt_delay(
                        attempt,
                        self.settings.callback_base_delay,
                        self.settings.callback_max_delay,
                        fastrand::f64(),
                    );
                    let delay = retry_after.map_or(delay, |r| r.max(delay));
                    warn!(attempt, %reason, retry_in_ms = delay.as_millis() as u64, "callback failed; will retry");
                    (
                        AttemptOutcome::Retry {
                            next_attempt_at: now + d(delay),
                            error: reason,
                        },
                        "retry",
                    )
                }
            }
        };
        metrics::counter!("callback_deliveries_total", "outcome" => label).increment(1);
        match self
            .outbox
            .record_callback_attempt(&record.event_id, &self.settings.owner, now, outcome)
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
