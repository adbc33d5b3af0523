//! A worker whose lease ran out while it downloaded a task's result must not
//! delete the images the worker that took the task over recorded. Found by the
//! chaos test on MariaDB: an outfit on a completed model failed with "input
//! image results/…/0.png … blob not found", because both workers stored the
//! result under the same key and the loser's clean-up deleted it.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use modelgen_api::engine::{Engine, EngineSettings};
use modelgen_api::ports::{Clock, FetchError, ImageChunks, ImageFetcher, SystemClock};
use modelgen_domain::TaskId;
use modelgen_e2e::Backend;

use crate::helpers::{AppOptions, spawn_app};

/// The system clock moved `ahead`: this worker sees every other worker's lease
/// as expired.
struct AheadClock(chrono::Duration);

impl Clock for AheadClock {
    fn now(&self) -> DateTime<Utc> {
        SystemClock.now() + self.0
    }
}

/// The first download stalls while `takeover` claims the task (its lease has
/// run out, as far as `takeover` can tell) and completes it; then it goes on
/// with the real download, as a slow worker would.
struct StallingFetcher {
    inner: Arc<dyn ImageFetcher>,
    takeover: Arc<Engine>,
    task_id: TaskId,
    stalled: AtomicBool,
}

#[async_trait]
impl ImageFetcher for StallingFetcher {
    async fn open(&self, url: &str, max_bytes: usize) -> Result<ImageChunks, FetchError> {
        if !self.stalled.swap(true, Ordering::SeqCst) {
            let end = Instant::now() + Duration::from_secs(30);
            loop {
                self.takeover.run_once().await.unwrap();
                let task = self.takeover.tasks.get_task(&self.task_id).await.unwrap();
                if task.status.is_terminal() {
                    break;
                }
                assert!(Instant::now() < end, "the other worker did not finish");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.inner.open(url, max_bytes).await
    }
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_mid_download_keeps_the_winners_images() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let id = app.create_default("takeover").await;
    let task_id = TaskId::parse(&id).unwrap();
    let settings = |owner: &str| EngineSettings {
        owner: owner.into(),
        // Long enough that the slow worker's heartbeat does not notice the
        // takeover before its own final write is refused.
        lease: Duration::from_secs(30),
        ..app.engine.settings.clone()
    };
    let takeover = Arc::new(Engine {
        settings: settings("worker-b"),
        clock: Arc::new(AheadClock(chrono::Duration::seconds(90))),
        ..(*app.engine).clone()
    });
    let fetcher = Arc::new(StallingFetcher {
        inner: app.engine.fetcher.clone(),
        takeover,
        task_id,
        stalled: AtomicBool::new(false),
    });
    let slow = Arc::new(Engine {
        settings: settings("worker-a"),
        fetcher: fetcher.clone(),
        ..(*app.engine).clone()
    });
    let end = Instant::now() + Duration::from_secs(30);
    while !fetcher.stalled.load(Ordering::SeqCst) {
        slow.run_once().await.unwrap();
        assert!(Instant::now() < end, "the slow worker never downloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (_, view) = app.get(&format!("/tasks/{id}")).await;
    let view = &view["data"];
    assert_eq!(view["status"], "completed", "{view}");
    let url = view["images"][0]["image_url"].as_str().unwrap();
    let response = app.client.get(url).send().await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "the recorded result image is still stored: {url}"
    );
    assert!(response.bytes().await.unwrap().starts_with(b"\x89PNG"));
}
