//! Harness for the end-to-end tests: the real `modelgen` binary as a child
//! process, the Apimart simulator and a callback receiver on loopback ports,
//! and a fresh database per test (a SQLite file, or a new PostgreSQL or
//! MySQL/MariaDB database dropped afterwards).

#![expect(
    clippy::expect_used,
    reason = "test harness: a broken setup should stop the test loudly"
)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;

pub mod bombs;

/// Default deadline for waiting on background work.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The `modelgen` binary next to this test executable (`target/<profile>/modelgen`).
pub fn modelgen_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MODELGEN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/modelgen
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("modelgen");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`, which `make test` does)",
        bin.display()
    );
    bin
}

/// A sample photo as a data URI.
pub fn fixture_data_uri(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let bytes = std::fs::read(&path).expect("fixture");
    format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A free loopback port (bound then released; the tiny race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `check` until it returns `Some` or `deadline` passes.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which database backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temp dir.
    Sqlite,
    /// A fresh database on the local PostgreSQL server.
    Postgres,
    /// A fresh database on the local MySQL/MariaDB server.
    Mysql,
}

impl Backend {
    /// Whether this backend's tests are skipped (`MODELGEN_SKIP_PG=1`,
    /// `MODELGEN_SKIP_MYSQL=1`); SQLite never is.
    pub fn skipped(self) -> bool {
        match self {
            Backend::Sqlite => false,
            Backend::Postgres => skip_pg(),
            Backend::Mysql => skip_mysql(),
        }
    }

    /// SQLite, PostgreSQL and MySQL, minus the skipped ones.
    pub fn all_under_test() -> Vec<Backend> {
        [Backend::Sqlite, Backend::Postgres, Backend::Mysql]
            .into_iter()
            .filter(|b| !b.skipped())
            .collect()
    }
}

/// A fresh database for one test; dropped (PostgreSQL, MySQL) when this goes away.
pub struct TestDb {
    /// URL to hand to modelgen.
    pub url: String,
    /// The backend.
    pub backend: Backend,
    /// (admin URL, database name) of a server database to drop.
    server: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

/// Admin URL of the PostgreSQL server used by tests.
pub fn pg_admin_url() -> String {
    std::env::var("MODELGEN_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Whether PostgreSQL tests are skipped (only when `MODELGEN_SKIP_PG=1`).
pub fn skip_pg() -> bool {
    std::env::var("MODELGEN_SKIP_PG").is_ok_and(|v| v == "1")
}

/// Admin URL of the MySQL/MariaDB server used by tests
/// (`MODELGEN_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`).
pub fn mysql_admin_url() -> String {
    std::env::var("MODELGEN_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// Whether MySQL tests are skipped (only when `MODELGEN_SKIP_MYSQL=1`).
pub fn skip_mysql() -> bool {
    std::env::var("MODELGEN_SKIP_MYSQL").is_ok_and(|v| v == "1")
}

/// Opens a driver connection to a MySQL database (e.g. [`TestDb::url`]) for
/// checks that go around the service.
pub async fn mysql_connect(url: &str) -> anyhow::Result<mysql_async::Conn> {
    Ok(mysql_async::Conn::new(mysql_async::Opts::from_url(url)?).await?)
}

async fn mysql_exec(admin: &str, sql: &str) -> anyhow::Result<()> {
    use mysql_async::prelude::Queryable as _;
    let mut conn = mysql_connect(admin).await?;
    conn.query_drop(sql).await?;
    conn.disconnect().await?;
    Ok(())
}

async fn pg_exec(admin: &str, sql: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await?;
    drop(client);
    let _ = task.await;
    Ok(())
}

impl TestDb {
    /// Creates the database.
    pub async fn fresh(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!(
            "mg_e2e_{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        let (url, server) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("modelgen.db").display()),
                None,
            ),
            Backend::Postgres => {
                let admin = pg_admin_url();
                pg_exec(&admin, &format!("CREATE DATABASE {name}"))
                    .await
                    .expect("PostgreSQL must be reachable (set MODELGEN_SKIP_PG=1 to skip PostgreSQL tests)");
                (with_database(&admin, &name), Some((admin, name)))
            }
            Backend::Mysql => {
                let admin = mysql_admin_url();
                mysql_exec(&admin, &format!("CREATE DATABASE `{name}`"))
                    .await
                    .expect("MySQL/MariaDB must be reachable (set MODELGEN_SKIP_MYSQL=1 to skip MySQL tests)");
                (with_database(&admin, &name), Some((admin, name)))
            }
        };
        TestDb {
            url,
            backend,
            server,
            _dir: dir,
        }
    }

    /// The database's name on its server (`None` for SQLite).
    pub fn name(&self) -> Option<&str> {
        self.server.as_ref().map(|(_, name)| name.as_str())
    }

    /// Drops the database now (e.g. to take it away under a running service);
    /// dropping `self` later does not mind.
    pub async fn drop_now(&self) {
        let Some((admin, name)) = &self.server else {
            return;
        };
        drop_database(self.backend, admin, name)
            .await
            .expect("drop the test database");
    }
}

/// `admin` (a server URL) with its database replaced by `name`.
fn with_database(admin: &str, name: &str) -> String {
    let base = admin
        .split('?')
        .next()
        .and_then(|a| a.rsplit_once('/'))
        .map(|(b, _)| b.to_string())
        .expect("admin url has a path");
    format!("{base}/{name}")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.server.take() {
            let backend = self.backend;
            // Drop runs outside async; use a small runtime on another thread.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    if let Err(e) = rt.block_on(drop_database(backend, &admin, &name)) {
                        eprintln!("warning: could not drop test database {name}: {e}");
                    }
                }
            })
            .join();
        }
    }
}

/// Drops a test database, ending the sessions still on it first (a service
/// killed mid-transaction, a frozen proxy): MySQL would otherwise wait for
/// their locks without end.
async fn drop_database(backend: Backend, admin: &str, name: &str) -> anyhow::Result<()> {
    let backend = match backend {
        Backend::Sqlite => return Ok(()),
        Backend::Postgres => modelgen_persistence::Backend::Postgres,
        Backend::Mysql => modelgen_persistence::Backend::Mysql,
    };
    modelgen_persistence::testing::drop_database(backend, admin, name).await?;
    Ok(())
}

/// One request the callback receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Lower-case header names to values.
    pub headers: HashMap<String, String>,
    /// Parsed JSON body.
    pub body: serde_json::Value,
    /// Raw body.
    pub raw: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
    /// When it arrived (wall clock, so it can be compared with `webhook-timestamp`).
    pub at: std::time::SystemTime,
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// While true, answer 503.
    down: Mutex<bool>,
    /// Fraction of requests answered 500 when up.
    fail_rate: Mutex<f64>,
    /// How long each answer is held back.
    delay: Mutex<Duration>,
}

/// An HTTP server that records callbacks.
pub struct CallbackReceiver {
    /// Its port.
    pub port: u16,
    state: Arc<ReceiverState>,
    handle: actix_web::dev::ServerHandle,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<ReceiverState>>,
) -> HttpResponse {
    let down = state.down.lock().map(|d| *d).unwrap_or(false);
    let rate = state.fail_rate.lock().map(|r| *r).unwrap_or(0.0);
    let status: u16 = if down || (rate > 0.0 && fastrand::f64() < rate) {
        503
    } else {
        200
    };
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let parsed = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if let Ok(mut r) = state.received.lock() {
        r.push(Received {
            headers,
            body: parsed,
            raw: body.to_vec(),
            status,
            at: std::time::SystemTime::now(),
        });
    }
    // Recorded on arrival; answered only after the delay.
    let delay = state.delay.lock().map(|d| *d).unwrap_or_default();
    if !delay.is_zero() {
        actix_web::rt::time::sleep(delay).await;
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default()).finish()
}

impl CallbackReceiver {
    /// Starts on a free port.
    pub async fn start() -> CallbackReceiver {
        let state = Arc::new(ReceiverState::default());
        let data = web::Data::new(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        CallbackReceiver {
            port,
            state,
            handle,
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.port)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Answer 503 to everything while `down`.
    pub fn set_down(&self, down: bool) {
        if let Ok(mut d) = self.state.down.lock() {
            *d = down;
        }
    }

    /// Answer 503 to this fraction of requests.
    pub fn set_fail_rate(&self, rate: f64) {
        if let Ok(mut r) = self.state.fail_rate.lock() {
            *r = rate;
        }
    }

    /// Hold every answer back this long (a slow receiver).
    pub fn set_delay(&self, delay: Duration) {
        if let Ok(mut d) = self.state.delay.lock() {
            *d = delay;
        }
    }

    /// Successful (2xx) deliveries for a task.
    pub fn delivered_for(&self, task_id: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200 && r.body["task_id"] == task_id)
            .collect()
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// A running `modelgen` child process.
pub struct Service {
    /// HTTP port.
    pub port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    workdir: PathBuf,
    log: PathBuf,
}

impl Service {
    /// Starts `modelgen serve` with `env` (plus HOST/PORT) in `workdir` and
    /// waits for `/healthz`.
    pub async fn start(workdir: &Path, env: Vec<(String, String)>) -> Service {
        Service::start_with_args(workdir, env, &["serve"]).await
    }

    /// As [`Service::start`], with other arguments (e.g. `serve --api-only`).
    pub async fn start_with_args(
        workdir: &Path,
        env: Vec<(String, String)>,
        args: &[&str],
    ) -> Service {
        let mut s = Service {
            port: free_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            child: None,
            workdir: workdir.to_path_buf(),
            log: workdir.join(format!("modelgen-{}.log", ulid::Ulid::generate())),
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let mut cmd = Command::new(modelgen_bin());
        cmd.args(&self.args)
            .current_dir(&self.workdir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string())
            .env(
                "RUST_LOG",
                std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn modelgen"));
        let url = format!("{}/healthz", self.base_url());
        let client = reqwest::Client::new();
        let child = self.child.as_mut().expect("child");
        let end = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "modelgen exited early with {status}; log:\n{}",
                    self.log_text()
                );
            }
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(
                Instant::now() < end,
                "modelgen did not become healthy; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no lease release.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sets (or replaces) an environment variable for the next (re)start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Starts the process again with the same settings and port.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    /// SIGTERM, then wait for exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A small JSON client for the service.
#[derive(Clone)]
pub struct Api {
    /// Base URL.
    pub base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Api {
    /// For a service at `base`, no token, no request timeout.
    pub fn new(base: String) -> Api {
        Api {
            base,
            token: None,
            client: reqwest::Client::new(),
        }
    }

    /// The same client with a per-request timeout: a hanging request fails
    /// the test instead of hanging the suite.
    pub fn with_timeout(self, timeout: Duration) -> Api {
        Api {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("http client"),
            ..self
        }
    }

    /// The same client sending `Authorization: Bearer <token>` (none when `None`).
    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// POST JSON; returns (status, body).
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.post_raw(path, serde_json::to_vec(body).expect("json"))
            .await
    }

    /// POST raw bytes declared as JSON; returns (status, body).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let r = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// GET; returns (status, body).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// DELETE; returns (status, body).
    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .request(reqwest::Method::DELETE, path)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// GET as text; returns (status, content type, body).
    pub async fn get_text(&self, path: &str) -> (u16, String, String) {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, ct, r.text().await.unwrap_or_default())
    }

    /// Waits until the task's status is `want`.
    pub async fn wait_status(&self, task_id: &str, want: &str, deadline: Duration) {
        let path = format!("/tasks/{task_id}");
        wait_for(&format!("task {task_id} {want}"), deadline, || async {
            let (_, body) = self.get(&path).await;
            (body["data"]["status"] == want).then_some(())
        })
        .await;
    }

    /// GET raw bytes of an absolute URL.
    pub async fn get_bytes(&self, url: &str) -> (u16, Vec<u8>, String) {
        let r = self.client.get(url).send().await.expect("request");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (
            status,
            r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
            ct,
        )
    }

    /// Waits until the task is terminal; returns its view.
    pub async fn wait_terminal(&self, task_id: &str, deadline: Duration) -> serde_json::Value {
        let path = format!("/tasks/{task_id}");
        wait_for(&format!("task {task_id} terminal"), deadline, || async {
            let (status, body) = self.get(&path).await;
            (status == 200
                && matches!(
                    body["data"]["status"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                ))
            .then_some(body["data"].clone())
        })
        .await
    }
}

impl Service {
    /// The last `lines` lines of the process log (for failure reports).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `modelgen <args>` once with this service's settings (same environment
    /// and working directory, logs off so stdout holds only the command's output)
    /// and returns its output. Used for operator commands such as
    /// `callbacks list`.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = tokio::process::Command::new(modelgen_bin());
        cmd.args(args)
            .current_dir(&self.workdir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "off")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().await.expect("run modelgen")
    }

    /// `modelgen callbacks list --limit 500` parsed: the outbox rows, newest first.
    pub async fn callbacks_list(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["callbacks", "list", "--limit", "500"]).await;
        assert!(
            out.status.success(),
            "modelgen callbacks list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("callbacks list prints JSON");
        match parsed {
            serde_json::Value::Array(rows) => rows,
            other => other["items"].as_array().cloned().unwrap_or_default(),
        }
    }
}

/// Opens a connection to a PostgreSQL database (e.g. [`TestDb::url`]) for
/// checks that go around the service.
pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A connection to a test database that goes around the service, for checks
/// (row counts by status, say) on PostgreSQL or MySQL alike.
pub enum DbProbe {
    /// A PostgreSQL client.
    Pg(tokio_postgres::Client),
    /// A MySQL/MariaDB connection (queries take `&mut`, hence the lock).
    Mysql(tokio::sync::Mutex<mysql_async::Conn>),
}

impl DbProbe {
    /// Connects to `db` (PostgreSQL or MySQL; panics on SQLite, which tests
    /// read through the service instead).
    pub async fn connect(db: &TestDb) -> DbProbe {
        match db.backend {
            Backend::Postgres => DbProbe::Pg(pg_connect(&db.url).await),
            Backend::Mysql => DbProbe::Mysql(tokio::sync::Mutex::new(
                mysql_connect(&db.url)
                    .await
                    .expect("connect to the test database"),
            )),
            Backend::Sqlite => panic!("DbProbe is for the server databases"),
        }
    }

    /// Runs `sql` (the same text on both servers) and returns every column of
    /// every row as text (`None` for NULL). Errors are returned, not panicked on,
    /// so callers polling during chaos can retry.
    pub async fn text_rows(&self, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        match self {
            DbProbe::Pg(client) => Ok(client
                .simple_query(sql)
                .await?
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()),
            DbProbe::Mysql(conn) => {
                use mysql_async::prelude::Queryable as _;
                let rows: Vec<mysql_async::Row> = conn.lock().await.query(sql).await?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        row.unwrap()
                            .into_iter()
                            .map(|v| match v {
                                mysql_async::Value::NULL => None,
                                mysql_async::Value::Bytes(b) => {
                                    Some(String::from_utf8_lossy(&b).into_owned())
                                }
                                other => Some(other.as_sql(true)),
                            })
                            .collect()
                    })
                    .collect())
            }
        }
    }

    /// `SELECT <key>, count(*) FROM <table> GROUP BY <key>` as a map (empty on error).
    pub async fn counts_by(
        &self,
        table: &str,
        key: &str,
    ) -> std::collections::BTreeMap<String, i64> {
        self.text_rows(&format!(
            "SELECT {key}, count(*) FROM {table} GROUP BY {key}"
        ))
        .await
        .map(|rows| {
            rows.into_iter()
                .filter_map(|r| {
                    let k = r.first()?.clone()?;
                    let n = r.get(1)?.as_deref()?.parse().ok()?;
                    Some((k, n))
                })
                .collect()
        })
        .unwrap_or_default()
    }
}

/// How long one request through [`Cluster`] may take before it counts as failed.
pub const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A reply obtained through [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterReply {
    /// HTTP status of the answer that ended the attempts.
    pub status: u16,
    /// Its JSON body (`Null` when not JSON).
    pub body: serde_json::Value,
    /// Requests that failed (unreachable replica, cut connection or 5xx) before it.
    pub failovers: u32,
}

/// Several replicas of one deployment behind a client-side "load balancer":
/// a request that cannot reach a replica (killed, restarting), loses its
/// connection, or gets a 5xx answer is sent again to the next replica, as a
/// retrying client of a real deployment would. Only safe for idempotent
/// requests (reads, and creates that carry a `request_id`).
#[derive(Clone)]
pub struct Cluster {
    ports: Vec<u16>,
    client: reqwest::Client,
}

impl Cluster {
    /// For replicas listening on `ports` of 127.0.0.1 (ports survive a restart).
    pub fn new(ports: Vec<u16>) -> Cluster {
        assert!(!ports.is_empty(), "a cluster needs a replica");
        Cluster {
            ports,
            client: reqwest::Client::builder()
                .timeout(CLUSTER_REQUEST_TIMEOUT)
                .build()
                .expect("http client"),
        }
    }

    /// The replicas' ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// POSTs JSON, first to replica `first % n`, failing over until a replica
    /// answers below 500 or `deadline` passes (then the last failure is returned).
    pub async fn post(
        &self,
        first: usize,
        path: &str,
        body: &serde_json::Value,
        deadline: Duration,
    ) -> Result<ClusterReply, String> {
        self.send(first, deadline, |base| {
            self.client.post(format!("{base}{path}")).json(body)
        })
        .await
    }

    /// GETs `path` with the same failover as [`Cluster::post`].
    pub async fn get(
        &self,
        first: usize,
        path: &str,
        deadline: Duration,
    ) -> Result<ClusterReply, String> {
        self.send(first, deadline, |base| {
            self.client.get(format!("{base}{path}"))
        })
        .await
    }

    async fn send<F>(
        &self,
        first: usize,
        deadline: Duration,
        build: F,
    ) -> Result<ClusterReply, String>
    where
        F: Fn(&str) -> reqwest::RequestBuilder,
    {
        let end = Instant::now() + deadline;
        let mut failovers = 0u32;
        let mut i = first;
        loop {
            let port = self.ports[i % self.ports.len()];
            let failure = match build(&format!("http://127.0.0.1:{port}")).send().await {
                Ok(r) if r.status().as_u16() < 500 => {
                    let status = r.status().as_u16();
                    match r.bytes().await {
                        Ok(b) => {
                            return Ok(ClusterReply {
                                status,
                                body: serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
                                failovers,
                            });
                        }
                        // The replica died while answering.
                        Err(e) => format!("port {port}: body cut: {e}"),
                    }
                }
                Ok(r) => format!("port {port}: HTTP {}", r.status()),
                Err(e) => format!("port {port}: {e}"),
            };
            failovers += 1;
            if Instant::now() >= end {
                return Err(format!("gave up after {failovers} failures: {failure}"));
            }
            i += 1;
            // After a whole round of failures, give the replicas a moment.
            if failovers as usize % self.ports.len() == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A small valid PNG (`side`×`side` RGB, uncompressed deflate) whose pixels
/// derive from `seed`, so different seeds give different bytes.
pub fn tiny_png(seed: u32, side: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).expect("chunk").to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let side = side.clamp(1, 64);
    let mut raw = Vec::new();
    for y in 0..side {
        raw.push(0); // filter: none
        for x in 0..side {
            let v = seed
                .wrapping_mul(2_654_435_761)
                .wrapping_add(x * 31 + y * 17);
            raw.extend_from_slice(&v.to_be_bytes()[1..4]);
        }
    }
    // zlib stream with one stored (uncompressed) deflate block: raw ≤ 64·193 < 65535.
    let len = u16::try_from(raw.len()).expect("small image");
    let mut z = vec![0x78, 0x01, 0x01];
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(!len).to_le_bytes());
    z.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &z);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// [`tiny_png`] as a `data:image/png;base64,…` URI.
pub fn png_data_uri(seed: u32) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(tiny_png(seed, 8))
    )
}

/// Starts `modelgen serve --workers-only` with `env` in `workdir`, its probes
/// on a free loopback port (use [`Service::start_with_args`] to reach them);
/// its output goes to `workers-<ulid>.log` there. The caller kills it.
pub fn spawn_workers_only(workdir: &Path, env: Vec<(String, String)>) -> Child {
    let log =
        std::fs::File::create(workdir.join(format!("workers-{}.log", ulid::Ulid::generate())))
            .expect("log file");
    let err = log.try_clone().expect("log file");
    Command::new(modelgen_bin())
        .args(["serve", "--workers-only"])
        .current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", free_port().to_string())
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn modelgen --workers-only")
}

/// The `OUTBOUND_ALLOWLIST` entry for an upstream at `base_url`
/// (`http://127.0.0.1:PORT/v1` → `127.0.0.1:PORT`): its result URLs are on loopback,
/// which downloads may reach only when allowed (docs/outbound.md).
pub fn allowlist_for(base_url: &str) -> String {
    base_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned()
}

/// The environment of a `modelgen` under test: its database, an image
/// directory under `dir`, the simulator at `apimart_base_url` with `api_key`,
/// and fast timings (polls every 0.2–0.5 s, 2 s leases, short retries) so
/// tests finish quickly. `overrides` replace or add variables.
pub fn fast_env(
    db: &TestDb,
    dir: &Path,
    apimart_base_url: &str,
    api_key: &str,
    overrides: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.clone()),
        (
            "STORAGE_URL",
            format!("file://{}", dir.join("images").display()),
        ),
        ("APIMART_API_KEY", api_key.to_string()),
        ("APIMART_BASE_URL", apimart_base_url.to_string()),
        // The simulator's result URLs are on loopback: downloads may reach exactly it.
        ("OUTBOUND_ALLOWLIST", allowlist_for(apimart_base_url)),
        ("TASK_POLL_INTERVAL", "0.2".into()),
        ("TASK_POLL_MAX_INTERVAL", "0.5".into()),
        ("WORKER_IDLE_INTERVAL", "0.1".into()),
        ("RETRY_BASE_DELAY", "0.05".into()),
        ("RETRY_MAX_DELAY", "0.2".into()),
        ("LEASE_SECONDS", "2".into()),
        ("SHUTDOWN_GRACE", "5".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (key, value) in overrides {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.clone()));
    }
    env
}
