//! `TestApp`: the real application on port 0 with its own fresh database,
//! talking to the Apimart simulator on its own port. Workers are not started:
//! tests drive the engine step by step and wait on conditions with deadlines.

#![expect(
    clippy::expect_used,
    reason = "test harness: a broken setup should stop the test loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use apimart_sim::{SimConfig, SimHandle, Simulator};
use figment::Figment;
use figment::providers::{Format as _, Serialized, Toml};
use modelgen_api::engine::Engine;
use modelgen_api::{Application, Config, Role};
use modelgen_e2e::{Backend, TestDb};
use modelgen_persistence::Database;
use tokio_util::sync::CancellationToken;

/// Sample photo (NASA, public domain) as a data URI.
pub fn person_jpeg() -> String {
    modelgen_e2e::fixture_data_uri("person_front.jpg")
}

/// A 1×1 PNG as a data URI.
pub fn tiny_png() -> String {
    // 1x1 transparent PNG.
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==".into()
}

/// A valid body profile.
pub fn body_profile() -> serde_json::Value {
    serde_json::json!({"gender": "male", "height_cm": 180, "weight_kg": 75, "age": 35, "skin_tone": "medium"})
}

/// Options for [`spawn_app`].
#[derive(Default, Clone)]
pub struct AppOptions {
    /// Extra config lines (`key = value` TOML).
    pub extra: Vec<(String, String)>,
}

/// A running application.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// HTTP client, for requests the JSON helpers do not cover.
    pub client: reqwest::Client,
    /// The harness's JSON client for this app.
    api: modelgen_e2e::Api,
    /// The engine, driven by the test.
    pub engine: Arc<Engine>,
    /// The database.
    pub db: Database,
    /// The personal-data operations (retention sweeps, erasure).
    pub privacy: Arc<modelgen_api::privacy::Privacy>,
    /// The simulator.
    pub sim: SimHandle,
    token: CancellationToken,
    /// The options' extra settings, for [`TestApp::spawn_replica`].
    extra: Vec<(String, String)>,
    _dir: tempfile::TempDir,
    _db: TestDb,
}

/// Starts the app on a fresh database of `backend`.
pub async fn spawn_app(backend: Backend, options: AppOptions) -> TestApp {
    spawn_app_allowing(backend, options, &[]).await
}

/// [`spawn_app`] whose downloads may also reach `allow` (besides the simulator).
pub async fn spawn_app_allowing(
    backend: Backend,
    options: AppOptions,
    allow: &[std::net::SocketAddr],
) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        modelgen_api::telemetry::init_logging(modelgen_api::config::LogFormat::Text);
    }
    let options_extra = options.extra.clone();
    let db = TestDb::fresh(backend).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Simulator::start(
        SimConfig {
            task_duration: Duration::from_millis(300),
            estimated_time: Duration::from_millis(300),
            api_key: Some("test-key".into()),
            ..SimConfig::default()
        },
        0,
    )
    .await
    .expect("simulator");
    let mut lines = config_lines(&db.url, dir.path(), &sim, allow);
    lines.extend(options.extra);
    let config = build_config(lines);
    let app = Application::build(config, Role::All)
        .await
        .expect("build app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let engine = app.engine();
    let database = app.database();
    let privacy = app.privacy();
    let token = app.shutdown_token();
    tokio::spawn(app.run_http_only());
    TestApp {
        api: modelgen_e2e::Api::new(base.clone()),
        base,
        client: reqwest::Client::new(),
        engine,
        db: database,
        privacy,
        sim,
        token,
        extra: options_extra,
        _dir: dir,
        _db: db,
    }
}

fn build_config(lines: Vec<(String, String)>) -> Config {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    for (k, v) in lines {
        figment = figment.merge(Toml::string(&format!("{k} = {v}")));
    }
    Config::from_figment(figment).expect("test config")
}

/// The settings every test app starts from.
fn config_lines(
    db_url: &str,
    dir: &std::path::Path,
    sim: &SimHandle,
    allow: &[std::net::SocketAddr],
) -> Vec<(String, String)> {
    vec![
        ("port".to_string(), "0".to_string()),
        ("database_url".into(), format!("{db_url:?}")),
        (
            "storage_url".into(),
            format!("{:?}", format!("file://{}", dir.join("images").display())),
        ),
        ("apimart_api_key".into(), "\"test-key\"".into()),
        ("apimart_base_url".into(), format!("{:?}", sim.base_url())),
        // The simulator's result URLs are on loopback: downloads may reach it, nothing else.
        (
            "outbound_allowlist".into(),
            format!(
                "{:?}",
                std::iter::once(sim.addr())
                    .chain(allow.iter().copied())
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
        ("task_poll_interval".into(), "0.05".into()),
        ("task_poll_max_interval".into(), "0.1".into()),
        ("retry_base_delay".into(), "0.01".into()),
        ("retry_max_delay".into(), "0.05".into()),
        ("callback_base_delay".into(), "0.05".into()),
        ("callback_max_delay".into(), "0.1".into()),
    ]
}

/// A second replica of a [`TestApp`]: its own HTTP server and engine on the
/// same database, storage and simulator; no workers.
pub struct Replica {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its engine (its waiter registry is `engine.waiters`).
    pub engine: Arc<Engine>,
    token: CancellationToken,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl TestApp {
    /// Starts another replica on this app's database, storage and simulator,
    /// with the same settings.
    pub async fn spawn_replica(&self) -> Replica {
        let mut lines = config_lines(self.database_url(), self._dir.path(), &self.sim, &[]);
        lines.extend(self.extra.clone());
        let app = Application::build(build_config(lines), Role::All)
            .await
            .expect("build replica");
        let replica = Replica {
            base: format!("http://127.0.0.1:{}", app.port()),
            engine: app.engine(),
            token: app.shutdown_token(),
        };
        tokio::spawn(app.run_http_only());
        replica
    }

    /// The URL of this app's database (`DATABASE_URL`).
    pub fn database_url(&self) -> &str {
        &self._db.url
    }

    /// The blob store's directory (`STORAGE_URL`).
    pub fn images_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("images")
    }

    /// Number of stored input images (files under the blob store's `inputs/`).
    pub fn stored_inputs(&self) -> usize {
        fn count(dir: &std::path::Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        count(&self._dir.path().join("images").join("inputs"))
    }

    /// The blob store directory of this app (local storage).
    pub fn storage_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("images")
    }

    /// POST JSON → (status, body).
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.api.post(path, body).await
    }

    /// POST raw bytes declared as JSON → (status, body).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        self.api.post_raw(path, body).await
    }

    /// DELETE → (status, body).
    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.api.delete(path).await
    }

    /// GET → (status, body).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.api.get(path).await
    }

    /// Creates a default task and returns its id.
    pub async fn create_default(&self, user: &str) -> String {
        let (status, body) = self
            .post("/models/default", &serde_json::json!({"user_id": user, "user_image": tiny_png(), "body_profile": body_profile()}))
            .await;
        assert_eq!(status, 202, "{body}");
        body["data"]["task_id"]
            .as_str()
            .expect("task_id")
            .to_string()
    }

    /// Drives the engine (tasks and callbacks) until `task_id` is terminal.
    pub async fn drive_until_terminal(&self, task_id: &str) -> serde_json::Value {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            self.engine.run_once().await.expect("engine step");
            let (_, body) = self.get(&format!("/tasks/{task_id}")).await;
            if matches!(
                body["data"]["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return body["data"].clone();
            }
            assert!(
                Instant::now() < end,
                "task {task_id} did not finish: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Number of tasks of a user, via the list endpoint.
    pub async fn count_tasks(&self, user: &str) -> usize {
        let (status, body) = self.get(&format!("/tasks?user_id={user}&limit=100")).await;
        assert_eq!(status, 200, "{body}");
        body["data"]["items"].as_array().map_or(0, Vec::len)
    }
}

/// A multi-thread runtime for proptest bodies (they are synchronous).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
