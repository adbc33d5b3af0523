//! The engine's steps under trouble (issue 12, item 8), on SQLite with the
//! simulator: an undecodable 2xx submit is re-sent with the same key; a failed
//! poll is one request and a durable snooze; a failed download of image 2 of 2
//! keeps image 1; a panicking step, a step past its timeout and a step cut off
//! by the shutdown all leave the task to be resumed, never lost. The seams are
//! thin wrappers around the real simulator client and downloader. On
//! PostgreSQL, a task created through one database handle wakes the task loop
//! of an engine on another (LISTEN/NOTIFY).

#![expect(clippy::unwrap_used, reason = "tests")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apimart_client::{ApimartError, GenerationRequest, SubmitResponse, TaskStatusResponse};
use async_trait::async_trait;
use modelgen_api::engine::{Engine, EngineSettings};
use modelgen_api::ports::{FetchError, ImageChunks, ImageFetcher, ImageGenerator};
use modelgen_domain::{TaskId, TaskStatus};
use modelgen_e2e::Backend;
use modelgen_persistence::{Database, PoolOptions, TaskRecord, TaskRepository as _};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::helpers::{AppOptions, TestApp, spawn_app};

/// A completed default task to edit, so edits can carry simulator markers.
async fn base_task(app: &TestApp, user: &str) -> String {
    let base = app.create_default(user).await;
    assert_eq!(app.drive_until_terminal(&base).await["status"], "completed");
    base
}

async fn edit(app: &TestApp, user: &str, base: &str, instructions: &str) -> TaskId {
    let (status, body) = app
        .post(
            "/models/edit",
            &json!({"user_id": user, "base_model_task_id": base, "edit_instructions": instructions}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    TaskId::parse(body["data"]["task_id"].as_str().unwrap()).unwrap()
}

async fn task(app: &TestApp, id: &TaskId) -> TaskRecord {
    app.db.get_task(id).await.unwrap()
}

/// Runs `engine` until `id` is terminal (30 s at most).
async fn drive(engine: &Arc<Engine>, app: &TestApp, id: &TaskId) -> TaskRecord {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        engine.run_once().await.unwrap();
        let t = task(app, id).await;
        if t.status.is_terminal() {
            return t;
        }
        assert!(Instant::now() < end, "task {id} did not finish: {t:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `id` is due again and unleased.
async fn until_due(app: &TestApp, id: &TaskId) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let t = task(app, id).await;
        if t.lease_owner.is_none() && t.next_run_at <= chrono::Utc::now() {
            return;
        }
        assert!(Instant::now() < end, "task {id} never came due: {t:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_garbled_2xx_submit_is_resent_with_the_same_key_and_the_task_completes() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let base = base_task(&app, "garbled").await;
    let before = app.sim.stats();
    let id = edit(&app, "garbled", &base, "x [[sim:garbled]]").await;
    let done = drive(&app.engine, &app, &id).await;
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    assert_eq!(done.submit_attempts, 2, "one garbled answer, one re-send");
    let after = app.sim.stats();
    assert_eq!(after.tasks_created - before.tasks_created, 1);
    assert_eq!(after.idempotent_replays - before.idempotent_replays, 1);
    assert_eq!(after.max_tasks_per_key, 1, "never a second upstream task");
}

#[tokio::test]
async fn a_failed_poll_is_one_request_and_a_durable_snooze() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let base = base_task(&app, "poll").await;
    let id = edit(&app, "poll", &base, "x [[sim:status-once=503]]").await;
    app.engine.run_once().await.unwrap();
    let submitted = task(&app, &id).await;
    assert!(submitted.external_task_id.is_some(), "{submitted:?}");
    until_due(&app, &id).await;
    let polls_before = app.sim.stats().status_requests;
    app.engine.run_once().await.unwrap();
    let snoozed = task(&app, &id).await;
    assert_eq!(
        app.sim.stats().status_requests - polls_before,
        1,
        "the 503 is not retried inside the step"
    );
    assert_eq!(snoozed.status, TaskStatus::Submitted, "{snoozed:?}");
    assert_eq!(snoozed.poll_count, 1, "the failed poll is counted");
    assert!(
        snoozed.lease_owner.is_none(),
        "the permit and lease are free"
    );
    assert!(snoozed.next_run_at > submitted.next_run_at);
    assert_eq!(
        drive(&app.engine, &app, &id).await.status,
        TaskStatus::Completed
    );
}

/// Answers a completed task with its image twice (the second at another URL
/// of the same file), as an upstream returning two images would.
struct TwoImages(Arc<dyn ImageGenerator>);

#[async_trait]
impl ImageGenerator for TwoImages {
    async fn submit(
        &self,
        request: &GenerationRequest,
        key: &str,
    ) -> Result<SubmitResponse, ApimartError> {
        self.0.submit(request, key).await
    }

    async fn status(&self, id: &str) -> Result<TaskStatusResponse, ApimartError> {
        let mut resp = self.0.status(id).await?;
        if let Some(first) = resp.images.first().cloned() {
            let mut second = first;
            second.urls = second.urls.iter().map(|u| format!("{u}?copy=2")).collect();
            resp.images.push(second);
        }
        Ok(resp)
    }
}

/// Counts the downloads of every URL; the first download of the second
/// image fails transiently.
struct FlakySecond {
    inner: Arc<dyn ImageFetcher>,
    opens: Mutex<HashMap<String, u32>>,
    failed: AtomicBool,
}

#[async_trait]
impl ImageFetcher for FlakySecond {
    async fn open(&self, url: &str, max_bytes: usize) -> Result<ImageChunks, FetchError> {
        *self
            .opens
            .lock()
            .unwrap()
            .entry(url.to_owned())
            .or_default() += 1;
        if url.ends_with("?copy=2") && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(FetchError::Transient("connection reset".into()));
        }
        self.inner.open(url, max_bytes).await
    }
}

#[tokio::test]
async fn a_failed_second_download_keeps_the_first_image() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let fetcher = Arc::new(FlakySecond {
        inner: app.engine.fetcher.clone(),
        opens: Mutex::default(),
        failed: AtomicBool::new(false),
    });
    let engine = Arc::new(Engine {
        generator: Arc::new(TwoImages(app.engine.generator.clone())),
        fetcher: fetcher.clone(),
        ..(*app.engine).clone()
    });
    let id = TaskId::parse(&app.create_default("two").await).unwrap();
    let polls_before = app.sim.stats().status_requests;
    let done = drive(&engine, &app, &id).await;
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    let opens = fetcher.opens.lock().unwrap().clone();
    assert_eq!(opens.len(), 2, "{opens:?}");
    for (url, n) in &opens {
        let want = if url.ends_with("?copy=2") { 2 } else { 1 };
        assert_eq!(*n, want, "downloads of {url}: {opens:?}");
    }
    // No poll was repeated for the download: the polls made are those
    // until the upstream said `completed`, each counted on the task.
    assert_eq!(
        app.sim.stats().status_requests - polls_before,
        u64::try_from(done.poll_count).unwrap()
    );
    let (_, view) = app.get(&format!("/tasks/{id}")).await;
    assert_eq!(
        view["data"]["images"].as_array().unwrap().len(),
        2,
        "{view}"
    );
}

/// Panics on the first status poll, then reads the simulator.
struct PanicOnce {
    inner: Arc<dyn ImageGenerator>,
    fired: AtomicBool,
}

#[async_trait]
impl ImageGenerator for PanicOnce {
    async fn submit(
        &self,
        request: &GenerationRequest,
        key: &str,
    ) -> Result<SubmitResponse, ApimartError> {
        self.inner.submit(request, key).await
    }

    async fn status(&self, id: &str) -> Result<TaskStatusResponse, ApimartError> {
        if !self.fired.swap(true, Ordering::SeqCst) {
            panic!("injected panic");
        }
        self.inner.status(id).await
    }
}

#[tokio::test]
async fn a_panicking_step_releases_the_task_for_a_later_retry() {
    // A lease far longer than the test: only the caught panic's snooze can
    // hand the task back in time.
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![("lease_seconds".into(), "600".into())],
        },
    )
    .await;
    let engine = Arc::new(Engine {
        generator: Arc::new(PanicOnce {
            inner: app.engine.generator.clone(),
            fired: AtomicBool::new(false),
        }),
        ..(*app.engine).clone()
    });
    let id = TaskId::parse(&app.create_default("panic").await).unwrap();
    engine.run_once().await.unwrap();
    until_due(&app, &id).await;
    engine.run_once().await.unwrap();
    let after_panic = task(&app, &id).await;
    assert!(after_panic.lease_owner.is_none(), "{after_panic:?}");
    assert_eq!(after_panic.status, TaskStatus::Submitted);
    assert_eq!(
        drive(&engine, &app, &id).await.status,
        TaskStatus::Completed
    );
}

/// The first submit never answers (after telling `entered`); later ones go
/// to the simulator.
struct HangOnce {
    inner: Arc<dyn ImageGenerator>,
    hung: AtomicBool,
    entered: Notify,
}

#[async_trait]
impl ImageGenerator for HangOnce {
    async fn submit(
        &self,
        request: &GenerationRequest,
        key: &str,
    ) -> Result<SubmitResponse, ApimartError> {
        if !self.hung.swap(true, Ordering::SeqCst) {
            self.entered.notify_one();
            std::future::pending::<()>().await;
        }
        self.inner.submit(request, key).await
    }

    async fn status(&self, id: &str) -> Result<TaskStatusResponse, ApimartError> {
        self.inner.status(id).await
    }
}

fn hang_once(app: &TestApp) -> Arc<HangOnce> {
    Arc::new(HangOnce {
        inner: app.engine.generator.clone(),
        hung: AtomicBool::new(false),
        entered: Notify::new(),
    })
}

#[tokio::test]
async fn a_step_past_its_timeout_is_interrupted_and_resent() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![("lease_seconds".into(), "600".into())],
        },
    )
    .await;
    let engine = Arc::new(Engine {
        generator: hang_once(&app),
        settings: EngineSettings {
            step_timeout: Duration::from_secs(1),
            ..app.engine.settings.clone()
        },
        ..(*app.engine).clone()
    });
    let id = TaskId::parse(&app.create_default("slow").await).unwrap();
    // Returns although the submit never answers.
    tokio::time::timeout(Duration::from_secs(20), engine.run_once())
        .await
        .expect("the step timeout ends the step")
        .unwrap();
    let snoozed = task(&app, &id).await;
    assert!(snoozed.lease_owner.is_none(), "{snoozed:?}");
    assert_eq!(snoozed.submit_attempts, 1);
    assert!(snoozed.external_task_id.is_none());
    let done = drive(&engine, &app, &id).await;
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    assert_eq!(done.submit_attempts, 2, "re-sent under the same key");
}

#[tokio::test]
async fn the_shutdown_interrupts_a_step_and_hands_the_task_back_at_once() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![("lease_seconds".into(), "600".into())],
        },
    )
    .await;
    let generator = hang_once(&app);
    let shutdown = CancellationToken::new();
    let engine = Arc::new(Engine {
        generator: generator.clone(),
        shutdown: shutdown.clone(),
        ..(*app.engine).clone()
    });
    let id = TaskId::parse(&app.create_default("bye").await).unwrap();
    let entered = generator.entered.notified();
    let step = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_once().await }
    });
    entered.await;
    shutdown.cancel();
    let claimed = tokio::time::timeout(Duration::from_secs(20), step)
        .await
        .expect("the shutdown ends the step");
    assert_eq!(claimed.unwrap().unwrap(), 1);
    let handed_back = task(&app, &id).await;
    assert!(handed_back.lease_owner.is_none(), "{handed_back:?}");
    assert!(handed_back.next_run_at <= chrono::Utc::now());
    assert_eq!(handed_back.submit_attempts, 1);
    // Another worker (the app's own engine) takes it over and finishes it.
    assert_eq!(
        drive(&app.engine, &app, &id).await.status,
        TaskStatus::Completed
    );
}

#[tokio::test]
async fn on_postgres_a_task_created_elsewhere_wakes_an_idle_task_loop() {
    if Backend::Postgres.skipped() {
        return;
    }
    let app = spawn_app(Backend::Postgres, AppOptions::default()).await;
    // A second process's view: its own pool, its own wake-up, and an idle
    // interval far longer than the test, so only the announcement can wake it.
    let other = Database::connect(app.database_url(), PoolOptions::default())
        .await
        .unwrap();
    let announcements = other
        .task_notifications()
        .expect("PostgreSQL announces new tasks");
    let repo = Arc::new(other.clone());
    let engine = Arc::new(Engine {
        tasks: repo.clone(),
        images: repo.clone(),
        outbox: repo,
        wake: Arc::new(Notify::new()),
        settings: EngineSettings {
            owner: "other-process".into(),
            idle_interval: Duration::from_secs(600),
            ..app.engine.settings.clone()
        },
        ..(*app.engine).clone()
    });
    let token = CancellationToken::new();
    let _stop = token.clone().drop_guard();
    tokio::spawn(engine.clone().follow_wakeups(announcements, token.clone()));
    tokio::spawn(engine.clone().run_task_worker(token.clone()));
    // Wait until the loop has claimed nothing and sleeps in its idle wait
    // (its heartbeat stops moving), and let the listener connect.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let idle = engine
            .heartbeat
            .ages()
            .iter()
            .any(|(_, age)| *age >= Duration::from_millis(500));
        if idle {
            break;
        }
        assert!(Instant::now() < end, "the task loop never went idle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Created through the app's own database handle.
    let id = TaskId::parse(&app.create_default("elsewhere").await).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let t = task(&app, &id).await;
        if t.lease_owner.as_deref() == Some("other-process") || t.submit_attempts > 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the other engine never claimed the task: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Hostile upstream answers (found by a black-box attack): the submit's task
/// id replaced by `bad_id`, every submit hanging, or the first poll answered
/// 429 with a `Retry-After` of `Duration::MAX`.
struct Hostile {
    inner: Arc<dyn ImageGenerator>,
    bad_id: Option<&'static str>,
    hang_submits: bool,
    huge_retry_after_once: AtomicBool,
}

impl Hostile {
    fn new(app: &TestApp) -> Hostile {
        Hostile {
            inner: app.engine.generator.clone(),
            bad_id: None,
            hang_submits: false,
            huge_retry_after_once: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl ImageGenerator for Hostile {
    async fn submit(
        &self,
        request: &GenerationRequest,
        key: &str,
    ) -> Result<SubmitResponse, ApimartError> {
        if self.hang_submits {
            std::future::pending::<()>().await;
        }
        let mut answer = self.inner.submit(request, key).await?;
        if let Some(bad) = self.bad_id {
            answer.task_id = bad.to_owned();
        }
        Ok(answer)
    }

    async fn status(&self, id: &str) -> Result<TaskStatusResponse, ApimartError> {
        if self.huge_retry_after_once.swap(false, Ordering::SeqCst) {
            return Err(ApimartError::RateLimited {
                retry_after: Some(Duration::MAX),
                message: "slow down".into(),
            });
        }
        self.inner.status(id).await
    }
}

#[tokio::test]
async fn a_submit_answered_with_an_unusable_task_id_fails_the_task_with_the_reason() {
    for bad in ["ctl\0id", "", "..", "x\u{7f}y"] {
        let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
        let engine = Arc::new(Engine {
            generator: Arc::new(Hostile {
                bad_id: Some(bad),
                ..Hostile::new(&app)
            }),
            ..(*app.engine).clone()
        });
        let id = TaskId::parse(&app.create_default("badid").await).unwrap();
        let done = drive(&engine, &app, &id).await;
        assert_eq!(done.status, TaskStatus::Failed, "{bad:?}: {done:?}");
        assert_eq!(done.submit_attempts, 1, "{bad:?}: not re-sent");
        assert!(
            done.error_message
                .as_deref()
                .is_some_and(|m| m.contains("unusable task id")),
            "{bad:?}: {done:?}"
        );
    }
}

#[tokio::test]
async fn a_submit_cut_off_by_the_step_timeout_every_time_fails_after_the_attempt_cap() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![("lease_seconds".into(), "600".into())],
        },
    )
    .await;
    let engine = Arc::new(Engine {
        generator: Arc::new(Hostile {
            hang_submits: true,
            ..Hostile::new(&app)
        }),
        settings: EngineSettings {
            step_timeout: Duration::from_millis(200),
            ..app.engine.settings.clone()
        },
        ..(*app.engine).clone()
    });
    let id = TaskId::parse(&app.create_default("cutoff").await).unwrap();
    let done = drive(&engine, &app, &id).await;
    assert_eq!(done.status, TaskStatus::Failed, "{done:?}");
    assert_eq!(
        done.submit_attempts,
        modelgen_engine::decide::MAX_SUBMIT_ATTEMPTS,
        "{done:?}"
    );
    assert!(
        done.error_message
            .as_deref()
            .is_some_and(|m| m.contains("STEP_TIMEOUT")),
        "{done:?}"
    );
}

#[tokio::test]
async fn a_poll_answered_429_with_an_endless_retry_after_snoozes_at_most_a_minute() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let hostile = Arc::new(Hostile::new(&app));
    let engine = Arc::new(Engine {
        generator: hostile.clone(),
        ..(*app.engine).clone()
    });
    let id = TaskId::parse(&app.create_default("retryafter").await).unwrap();
    engine.run_once().await.unwrap();
    assert!(task(&app, &id).await.external_task_id.is_some());
    until_due(&app, &id).await;
    hostile.huge_retry_after_once.store(true, Ordering::SeqCst);
    let before = chrono::Utc::now();
    engine.run_once().await.unwrap();
    let snoozed = task(&app, &id).await;
    assert_eq!(snoozed.status, TaskStatus::Submitted, "{snoozed:?}");
    assert!(snoozed.lease_owner.is_none(), "{snoozed:?}");
    let wait = snoozed.next_run_at - before;
    assert!(
        wait <= chrono::TimeDelta::seconds(61) && wait >= chrono::TimeDelta::seconds(59),
        "snoozed for {wait:?}"
    );
}
