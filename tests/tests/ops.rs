//! The operational surface, end to end: `/metrics`, `/healthz` and `/readyz`,
//! the logs, `modelgen config check`, the other CLI commands against a real
//! database, and graceful shutdown. Everything runs against the real
//! `modelgen` binary, with the Apimart simulator and a callback receiver on
//! loopback.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use apimart_sim::{SimConfig, SimHandle, Simulator};
use base64::Engine as _;
use modelgen_e2e::{
    Api, Backend, CallbackReceiver, DEADLINE, Service, TestDb, fixture_data_uri, modelgen_bin,
    skip_mysql, skip_pg, wait_for,
};
use serde_json::{Value, json};

/// Longest a single HTTP request to the service may take: a probe that hangs
/// is a failure, not a reason to hang the suite.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a CLI command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// `SHUTDOWN_GRACE` given to services in these tests, seconds.
const GRACE_SECS: u64 = 5;

// ---------------------------------------------------------------- helpers

/// The harness client, with the per-request timeout of these tests.
type Http = Api;

fn body_profile() -> Value {
    json!({"gender": "female", "height_cm": 168, "weight_kg": 55, "age": 30, "skin_tone": "light"})
}

/// Creates a default task for `user`; returns its id.
async fn create_default(http: &Http, user: &str) -> String {
    let (status, body) = http
        .post(
            "/models/default",
            &json!({"user_id": user, "user_image": fixture_data_uri("person_front.jpg"), "body_profile": body_profile()}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body["data"]["task_id"].as_str().unwrap().to_string()
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A service with its database, simulator and callback receiver.
struct Ops {
    // Field order is drop order: the process goes before its database.
    service: Service,
    sim: SimHandle,
    receiver: CallbackReceiver,
    http: Http,
    db: TestDb,
    dir: tempfile::TempDir,
}

impl Ops {
    /// Starts everything. The simulator requires `api_key`; `extra` env
    /// entries come last, so they override the defaults here.
    async fn start(backend: Backend, api_key: &str, extra: &[(&str, &str)]) -> Ops {
        Ops::start_with(TestDb::fresh(backend).await, api_key, extra).await
    }

    /// [`Ops::start`] on an existing database.
    async fn start_with(db: TestDb, api_key: &str, extra: &[(&str, &str)]) -> Ops {
        let dir = tempfile::tempdir().unwrap();
        let sim = Simulator::start(
            SimConfig {
                task_duration: Duration::from_millis(500),
                estimated_time: Duration::from_millis(500),
                api_key: Some(api_key.into()),
                ..SimConfig::default()
            },
            0,
        )
        .await
        .unwrap();
        let receiver = CallbackReceiver::start().await;
        let storage = format!("file://{}", dir.path().join("images").display());
        let mut env = kv(&[
            ("DATABASE_URL", &db.url),
            ("STORAGE_URL", &storage),
            ("APIMART_API_KEY", api_key),
            ("APIMART_BASE_URL", &sim.base_url()),
            ("OUTBOUND_ALLOWLIST", &sim.addr().to_string()),
            ("CALLBACK_URL", &receiver.url()),
            ("CALLBACK_BASE_DELAY", "0.1"),
            ("CALLBACK_MAX_DELAY", "0.3"),
            ("TASK_POLL_INTERVAL", "0.2"),
            ("TASK_POLL_MAX_INTERVAL", "0.5"),
            ("WORKER_IDLE_INTERVAL", "0.1"),
            ("RETRY_BASE_DELAY", "0.05"),
            ("RETRY_MAX_DELAY", "0.2"),
            ("LEASE_SECONDS", "3"),
            ("SHUTDOWN_GRACE", &GRACE_SECS.to_string()),
        ]);
        env.extend(kv(extra));
        let token = env
            .iter()
            .rev()
            .find(|(k, _)| k == "API_AUTH_TOKEN")
            .map(|(_, v)| v.clone());
        let service = Service::start(dir.path(), env).await;
        let http = Api::new(service.base_url())
            .with_timeout(REQUEST_TIMEOUT)
            .with_token(token.as_deref());
        Ops {
            service,
            sim,
            receiver,
            http,
            db,
            dir,
        }
    }

    /// Env for CLI commands against this service's database.
    fn cli_env(&self) -> Vec<(String, String)> {
        kv(&[("DATABASE_URL", &self.db.url)])
    }
}

/// Runs `modelgen ARGS` with only PATH and `env`, in `dir` (so no stray `.env`
/// is read), and returns its output.
fn run_modelgen(dir: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    std::process::Command::new(modelgen_bin())
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("run modelgen")
}

/// [`run_modelgen`] for async tests, with a deadline.
async fn modelgen(dir: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(modelgen_bin());
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(CLI_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("`modelgen {}` did not finish", args.join(" ")))
        .expect("run modelgen")
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stdout of a successful command, parsed as one JSON document.
fn json_stdout(out: &Output) -> Value {
    assert!(out.status.success(), "{}", show(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", show(out)))
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text exposition format (comments skipped, label
/// values unescaped). Panics on a line it cannot read: the format is a contract.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or_else(|| panic!("no value on metrics line {line:?}"));
        let name = line[..name_end].to_string();
        let mut labels = HashMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end = loop {
                // Skip separators, then read `key="value"` or the closing brace.
                while let Some(&(_, c)) = chars.peek() {
                    if c == ',' || c.is_whitespace() {
                        chars.next();
                    } else {
                        break;
                    }
                }
                let Some((i, c)) = chars.next() else {
                    panic!("unterminated labels on {line:?}");
                };
                if c == '}' {
                    break i + 1;
                }
                let mut key = String::from(c);
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert_eq!(
                    chars.next().map(|(_, c)| c),
                    Some('"'),
                    "label value not quoted on {line:?}"
                );
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => panic!("bad escape on {line:?}"),
                        },
                        Some((_, '"')) => break,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value on {line:?}"),
                    }
                }
                labels.insert(key.trim().to_string(), value);
            };
            rest = &body[end..];
        }
        let value_text = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value on {line:?}"));
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value {v:?} on {line:?}")),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// Sum of the samples named `name` whose labels include every `filters` pair
/// (0 when none: a counter never incremented is not exported).
fn metric_sum(samples: &[Sample], name: &str, filters: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            filters
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .fold(0.0, |sum, s| sum + s.value)
}

async fn scrape(http: &Http) -> Vec<Sample> {
    let (status, ct, text) = http.get_text("/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(ct.starts_with("text/plain"), "content-type {ct}");
    parse_prometheus(&text)
}

// ---------------------------------------------------------------- 1. metrics

#[test]
fn prometheus_parser_reads_labels_escapes_and_histograms() {
    let samples = parse_prometheus(
        "# HELP x y\n# TYPE c counter\n\
         c{a=\"1\",b=\"q\\\"x\\\\y\"} 3\nc{a=\"2\"} 4.5\nplain 7\n\
         h_bucket{le=\"+Inf\"} 2\nh_count 2\n",
    );
    assert_eq!(metric_sum(&samples, "c", &[]), 7.5);
    assert_eq!(metric_sum(&samples, "c", &[("a", "2")]), 4.5);
    assert_eq!(metric_sum(&samples, "c", &[("b", "q\"x\\y")]), 3.0);
    assert_eq!(metric_sum(&samples, "c", &[("a", "3")]), 0.0);
    assert_eq!(metric_sum(&samples, "plain", &[]), 7.0);
    assert_eq!(metric_sum(&samples, "h_count", &[]), 2.0);
    assert_eq!(samples[3].labels["le"], "+Inf");
}

#[actix_web::test]
async fn metrics_appear_and_move_after_a_task_runs() {
    let ops = Ops::start(Backend::Sqlite, "ops-metrics-key", &[]).await;
    let before = scrape(&ops.http).await;

    let id = create_default(&ops.http, "u-metrics").await;
    let task = ops.http.wait_terminal(&id, DEADLINE).await;
    assert_eq!(task["status"], "completed", "{task}");
    wait_for("callback delivered", DEADLINE, || async {
        (!ops.receiver.delivered_for(&id).is_empty()).then_some(())
    })
    .await;
    // The delivery is counted once the service has read the receiver's answer.
    let after = wait_for("callback delivery counted", DEADLINE, || async {
        let s = scrape(&ops.http).await;
        (metric_sum(&s, "callback_deliveries_total", &[("outcome", "delivered")])
            > metric_sum(
                &before,
                "callback_deliveries_total",
                &[("outcome", "delivered")],
            ))
        .then_some(s)
    })
    .await;

    for (name, filters) in [
        ("tasks_created_total", &[("type", "default")][..]),
        ("tasks_finished_total", &[("status", "completed")][..]),
        ("upstream_calls_total", &[("endpoint", "submit")][..]),
        ("upstream_calls_total", &[("endpoint", "status")][..]),
        (
            "upstream_http_attempts_total",
            &[("endpoint", "submit")][..],
        ),
        (
            "upstream_http_attempts_total",
            &[("endpoint", "status")][..],
        ),
        ("callback_deliveries_total", &[("outcome", "delivered")][..]),
        ("http_requests_total", &[][..]),
        ("http_requests_total", &[("method", "POST")][..]),
    ] {
        let (b, a) = (
            metric_sum(&before, name, filters),
            metric_sum(&after, name, filters),
        );
        assert!(a > b, "{name}{filters:?} did not increase: {b} -> {a}");
    }
    let count = metric_sum(
        &after,
        "task_duration_seconds_count",
        &[("type", "default"), ("status", "completed")],
    );
    assert!(count >= 1.0, "task_duration_seconds_count = {count}");
    // A histogram, not a summary: buckets are exported.
    assert!(
        metric_sum(&after, "task_duration_seconds_bucket", &[("le", "+Inf")]) >= 1.0,
        "task_duration_seconds has no +Inf bucket"
    );

    // An edit whose first submit and first poll answer 503: each is one
    // logical call made of two HTTP attempts.
    let (status, body) = ops
        .http
        .post(
            "/models/edit",
            &json!({"user_id": "u-metrics", "base_model_task_id": id,
                    "edit_instructions": "shorter hair [[sim:submit-once=503,status-once=503]]"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let edit = body["data"]["task_id"].as_str().unwrap().to_string();
    let task = ops.http.wait_terminal(&edit, DEADLINE).await;
    assert_eq!(task["status"], "completed", "{task}");
    let last = scrape(&ops.http).await;
    let moved = |name: &str, filters: &[(&str, &str)]| {
        metric_sum(&last, name, filters) - metric_sum(&after, name, filters)
    };
    assert_eq!(
        moved(
            "upstream_http_attempts_total",
            &[("endpoint", "submit"), ("status", "503")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "upstream_http_attempts_total",
            &[("endpoint", "submit"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "upstream_calls_total",
            &[("endpoint", "submit"), ("outcome", "ok")]
        ),
        1.0,
        "one logical submit, whatever its attempts"
    );
    assert!(
        moved(
            "upstream_http_attempts_total",
            &[("endpoint", "status"), ("status", "503")]
        ) >= 1.0
    );
    // Every HTTP attempt is either a call's first try or one of its retries.
    for endpoint in ["submit", "status"] {
        let e = &[("endpoint", endpoint)][..];
        assert_eq!(
            metric_sum(&last, "upstream_http_attempts_total", e),
            metric_sum(&last, "upstream_calls_total", e)
                + metric_sum(&last, "upstream_retries_total", e),
            "{endpoint}: attempts != calls + retries"
        );
    }
    let _ = (&ops.sim, &ops.dir);
}

// ---------------------------------------------------------------- 2. readiness

async fn assert_healthz_ok(http: &Http) {
    let (status, body) = http.get("/healthz").await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
}

async fn assert_ready(http: &Http) {
    let (status, body) = http.get("/readyz").await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert_eq!(body["data"]["status"], "ready", "{body}");
}

/// Waits until `/readyz` answers 503 naming `check`; returns the body.
async fn wait_not_ready(http: &Http, check: &str) -> Value {
    let body = wait_for(&format!("/readyz 503 ({check})"), DEADLINE, || async {
        let (status, body) = http.get("/readyz").await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["code"], 1004, "{body}");
    assert!(body["msg"].is_string(), "{body}");
    assert_eq!(body["data"]["status"], "not_ready", "{body}");
    let reason = body["data"]["checks"][check].as_str().unwrap_or("");
    assert!(!reason.trim().is_empty(), "no {check} reason: {body}");
    body
}

async fn readyz_when_the_database_goes_away(backend: Backend) {
    let ops = Ops::start(
        backend,
        "ops-ready-key",
        &[("DATABASE_ACQUIRE_TIMEOUT", "1")],
    )
    .await;
    assert_ready(&ops.http).await;
    assert_healthz_ok(&ops.http).await;

    // Take the database away under the running service. TestDb's own drop
    // later uses `DROP DATABASE IF EXISTS`, so it does not mind.
    let name = ops.db.name().unwrap().to_string();
    assert!(name.starts_with("mg_e2e_"), "{name}");
    ops.db.drop_now().await;

    wait_not_ready(&ops.http, "database").await;
    assert_healthz_ok(&ops.http).await;
    let _ = (&ops.sim, &ops.receiver, &ops.dir);
}

#[actix_web::test]
async fn readyz_turns_503_when_the_database_is_unreachable() {
    if skip_pg() {
        return;
    }
    readyz_when_the_database_goes_away(Backend::Postgres).await;
}

#[actix_web::test]
async fn readyz_turns_503_when_the_database_is_unreachable_on_mariadb() {
    if skip_mysql() {
        return;
    }
    readyz_when_the_database_goes_away(Backend::Mysql).await;
}

#[actix_web::test]
async fn readyz_turns_503_when_the_storage_is_unwritable() {
    let ops = Ops::start(Backend::Sqlite, "ops-storage-key", &[]).await;
    assert_ready(&ops.http).await;

    // Tests run as root, for whom a read-only mode blocks nothing: replace
    // the storage directory by a regular file instead.
    let images = ops.dir.path().join("images");
    assert!(images.is_dir(), "the service created {}", images.display());
    let moved = ops.dir.path().join("images.moved");
    std::fs::rename(&images, &moved).unwrap();
    std::fs::write(&images, b"not a directory").unwrap();

    wait_not_ready(&ops.http, "storage").await;
    assert_healthz_ok(&ops.http).await;

    // Put it back: ready again, so the file was the cause.
    std::fs::remove_file(&images).unwrap();
    std::fs::rename(&moved, &images).unwrap();
    wait_for("/readyz 200 again", DEADLINE, || async {
        (ops.http.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let _ = (&ops.sim, &ops.receiver);
}

// ---------------------------------------------------------------- 2b. workers-only probes, degraded upstream

/// A workers-only replica and an API-only replica on one database: the
/// worker answers `/healthz`, `/readyz` and `/metrics` (behind
/// `METRICS_AUTH_TOKEN`) on its own port and nothing else, and its metrics
/// show the engine's counters moving once the task it ran is done.
async fn workers_only_probes_and_metrics(backend: Backend) {
    let db = TestDb::fresh(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(
        SimConfig {
            task_duration: Duration::from_millis(300),
            estimated_time: Duration::from_millis(300),
            api_key: Some("probe-key".into()),
            ..SimConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let mut env = modelgen_e2e::fast_env(
        &db,
        dir.path(),
        &sim.base_url(),
        "probe-key",
        &[("METRICS_AUTH_TOKEN", "scrape-secret".into())],
    );
    let api_service =
        Service::start_with_args(dir.path(), env.clone(), &["serve", "--api-only"]).await;
    env.push(("PUBLIC_BASE_URL".into(), api_service.base_url()));
    // Service waits for a 200 from /healthz on the worker's own port.
    let worker_service =
        Service::start_with_args(dir.path(), env, &["serve", "--workers-only"]).await;
    assert_ne!(api_service.port, worker_service.port);
    let api = Api::new(api_service.base_url()).with_timeout(REQUEST_TIMEOUT);
    let worker = Api::new(worker_service.base_url()).with_timeout(REQUEST_TIMEOUT);
    let scraper = worker.with_token(Some("scrape-secret"));

    let (status, live) = worker.get("/healthz").await;
    assert_eq!(status, 200, "{live}");
    assert_eq!(live["data"]["status"], "ok", "{live}");
    assert_eq!(live["data"]["loops"]["tasks"]["stale"], false, "{live}");
    // The API-only replica runs no engine loop.
    let (_, api_live) = api.get("/healthz").await;
    assert_eq!(api_live["data"]["loops"], json!({}), "{api_live}");
    assert_ready(&worker).await;

    // Metrics keep their token; the API is not served on the worker's port.
    assert_eq!(worker.get_text("/metrics").await.0, 401);
    for (method, path) in [
        ("POST", "/models/default"),
        ("GET", "/tasks"),
        ("GET", "/openapi.json"),
        ("GET", "/admin/callbacks"),
    ] {
        let (status, body) = if method == "POST" {
            worker
                .post(path, &json!({"user_id": "u-probe", "user_image": fixture_data_uri("person_front.jpg"), "body_profile": body_profile()}))
                .await
        } else {
            worker.get(path).await
        };
        assert_eq!(
            (status, body["code"].as_i64()),
            (404, Some(1003)),
            "{method} {path}: {body}"
        );
    }
    let before = scrape(&scraper).await;
    assert!(
        before
            .iter()
            .any(|s| s.name == "engine_loop_last_beat_seconds"
                && s.labels.get("loop").map(String::as_str) == Some("tasks")),
        "no engine_loop_last_beat_seconds{{loop=tasks}}"
    );

    let id = create_default(&api, "u-probe").await;
    let task = api.wait_terminal(&id, DEADLINE).await;
    assert_eq!(task["status"], "completed", "{task}");
    let after = scrape(&scraper).await;
    for (name, filters) in [
        ("lease_claims_total", &[("kind", "task")][..]),
        (
            "upstream_calls_total",
            &[("endpoint", "submit"), ("outcome", "ok")][..],
        ),
        ("upstream_calls_total", &[("endpoint", "status")][..]),
        ("tasks_finished_total", &[("status", "completed")][..]),
    ] {
        let (b, a) = (
            metric_sum(&before, name, filters),
            metric_sum(&after, name, filters),
        );
        assert!(
            a > b,
            "{name}{filters:?} did not increase on the worker: {b} -> {a}"
        );
    }
    // The create was counted by the API replica, not the worker.
    assert_eq!(
        metric_sum(&after, "tasks_created_total", &[]),
        0.0,
        "the worker created a task"
    );
    drop(worker_service);
    drop(api_service);
    let _ = (&sim, &dir);
}

#[actix_web::test]
async fn workers_only_replica_serves_probes_and_metrics_on_its_port() {
    workers_only_probes_and_metrics(Backend::Sqlite).await;
}

#[actix_web::test]
async fn workers_only_replica_serves_probes_and_metrics_on_postgres() {
    if skip_pg() {
        return;
    }
    workers_only_probes_and_metrics(Backend::Postgres).await;
}

/// Waits until `/readyz` is 200 `degraded` naming `check`; returns its reason.
async fn wait_degraded(http: &Http, check: &str) -> String {
    let body = wait_for(&format!("/readyz degraded ({check})"), DEADLINE, || async {
        let (status, body) = http.get("/readyz").await;
        (status == 200 && body["data"]["degraded"].get(check).is_some()).then_some(body)
    })
    .await;
    assert_eq!(body["code"], 0, "{body}");
    assert_eq!(body["data"]["status"], "degraded", "{body}");
    assert!(
        body["data"]["degraded"][check]["since"].is_string(),
        "{body}"
    );
    let reason = body["data"]["degraded"][check]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!reason.trim().is_empty(), "no {check} reason: {body}");
    reason
}

async fn wait_ready_again(http: &Http) {
    wait_for("/readyz ready again", DEADLINE, || async {
        let (status, body) = http.get("/readyz").await;
        (status == 200 && body["data"]["status"] == "ready").then_some(())
    })
    .await;
    assert_ready(http).await;
}

/// Creates `n` tasks and waits until each has failed; returns their error messages.
async fn failed_tasks(http: &Http, user: &str, n: usize) -> Vec<String> {
    let mut errors = Vec::new();
    for _ in 0..n {
        let id = create_default(http, user).await;
        let task = http.wait_terminal(&id, DEADLINE).await;
        assert_eq!(task["status"], "failed", "{task}");
        errors.push(task["error"].to_string());
    }
    errors
}

#[actix_web::test]
async fn readyz_is_degraded_while_the_balance_check_fails_or_the_key_is_refused() {
    let ops = Ops::start(
        Backend::Sqlite,
        "ops-degraded-key",
        &[("BALANCE_CHECK_INTERVAL", "0.2")],
    )
    .await;
    assert_ready(&ops.http).await;

    // GET /v1/balance answers 500: degraded (still 200), with the reason.
    ops.sim.set_config(SimConfig {
        balance_status: Some(500),
        ..ops.sim.config()
    });
    let reason = wait_degraded(&ops.http, "upstream_balance").await;
    assert!(reason.contains("balance"), "{reason}");
    assert!(reason.contains("500"), "{reason}");
    let metrics = scrape(&ops.http).await;
    assert_eq!(
        metric_sum(
            &metrics,
            "upstream_degraded",
            &[("check", "upstream_balance")]
        ),
        1.0
    );
    assert_healthz_ok(&ops.http).await;
    ops.sim.set_config(SimConfig {
        balance_status: None,
        ..ops.sim.config()
    });
    wait_ready_again(&ops.http).await;

    // The key is refused: a streak of 401s from submits (and the balance read).
    ops.sim.set_config(SimConfig {
        api_key: Some("rotated-key".into()),
        ..ops.sim.config()
    });
    failed_tasks(&ops.http, "u-degraded", 3).await;
    let reason = wait_degraded(&ops.http, "upstream_auth").await;
    assert!(reason.contains("401"), "{reason}");
    assert!(
        !reason.contains("ops-degraded-key"),
        "the key leaked: {reason}"
    );

    // The key works again: the next balance read clears both, and work flows.
    ops.sim.set_config(SimConfig {
        api_key: Some("ops-degraded-key".into()),
        ..ops.sim.config()
    });
    wait_ready_again(&ops.http).await;
    let id = create_default(&ops.http, "u-degraded").await;
    assert_eq!(
        ops.http.wait_terminal(&id, DEADLINE).await["status"],
        "completed"
    );
    let _ = (&ops.receiver, &ops.dir);
}

#[actix_web::test]
async fn readyz_is_degraded_after_a_402_streak_until_a_task_succeeds() {
    // No balance check: only the tasks' own answers speak.
    let ops = Ops::start(
        Backend::Sqlite,
        "ops-credit-key",
        &[("BALANCE_CHECK_INTERVAL", "0")],
    )
    .await;
    ops.sim.set_config(SimConfig {
        balance: Some(0.0),
        ..ops.sim.config()
    });
    // Two refusals are not a streak yet.
    failed_tasks(&ops.http, "u-credit", 2).await;
    assert_ready(&ops.http).await;
    failed_tasks(&ops.http, "u-credit", 1).await;
    let reason = wait_degraded(&ops.http, "upstream_auth").await;
    assert!(reason.contains("402"), "{reason}");
    assert!(reason.contains("3 consecutive"), "{reason}");

    // Credit is back: the first task that goes through ends the streak.
    ops.sim.set_config(SimConfig {
        balance: Some(1_000.0),
        ..ops.sim.config()
    });
    let id = create_default(&ops.http, "u-credit").await;
    assert_eq!(
        ops.http.wait_terminal(&id, DEADLINE).await["status"],
        "completed"
    );
    assert_ready(&ops.http).await;
    let _ = (&ops.receiver, &ops.dir);
}

// ---------------------------------------------------------------- 3. logs

/// Every maximal run of base64-alphabet characters of `text` at least `min` long.
fn base64_runs(text: &str, min: usize) -> Vec<&str> {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=';
    text.split(|c: char| !is_b64(c))
        .filter(|r| r.len() >= min)
        .collect()
}

/// The first `window`-char slice of `needle` that appears in `haystack`.
fn shared_slice(needle: &str, haystack: &str, window: usize) -> Option<String> {
    let windows: HashSet<&[u8]> = needle.as_bytes().windows(window).collect();
    base64_runs(haystack, window).into_iter().find_map(|run| {
        run.as_bytes()
            .windows(window)
            .find(|w| windows.contains(w))
            .map(|w| String::from_utf8_lossy(w).into_owned())
    })
}

/// Whether `value` holds an object key `key` whose value is `want`, at any depth.
fn has_key_value(value: &Value, key: &str, want: &str) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| (k == key && v == want) || has_key_value(v, key, want)),
        Value::Array(items) => items.iter().any(|v| has_key_value(v, key, want)),
        _ => false,
    }
}

#[test]
fn shared_slice_finds_a_window_inside_a_longer_run() {
    let needle = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0123456789abcdef";
    let haystack = format!("x \"{}\" y", &needle[3..48]);
    assert!(shared_slice(needle, &haystack, 40).is_some());
    assert!(shared_slice(needle, &needle[..39], 40).is_none());
}

#[actix_web::test]
async fn logs_never_contain_secrets_tokens_or_image_data() {
    const APIMART_KEY: &str = "sk-opsapimartKEY7Hq2Lw9Xv4Rt8Zp3Nc6Bd1";
    const API_TOKEN: &str = "apitoken-OPS-5Gk8Qw2Jz7Lm4Vx9Ps3Hd6Ry1";
    const WRONG_TOKEN: &str = "wrongtoken-OPS-8Tn3Wc6Yb1Fq5Ks9Xe2Mu7";
    const CALLBACK_TOKEN: &str = "cbtoken-OPS-4Jr9Pd2Vh7Nx5Qs1Lk8Gw3";
    let secret_key = base64::engine::general_purpose::STANDARD
        .encode(b"ops-signing-key-0123456789abcdefghijklmn");
    let signing_secret = format!("whsec_{secret_key}");

    let mut ops = Ops::start(
        Backend::Sqlite,
        APIMART_KEY,
        &[
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
            ("API_AUTH_TOKEN", API_TOKEN),
            ("CALLBACK_TOKEN", CALLBACK_TOKEN),
            ("CALLBACK_SIGNING_SECRET", &signing_secret),
        ],
    )
    .await;
    let http = &ops.http;
    let image = fixture_data_uri("person_front.jpg");
    let image_b64 = image.split_once(',').unwrap().1.to_string();
    assert!(image_b64.len() > 1000);

    // A task that runs to completion, with its callback.
    let (status, body) = http
        .post(
            "/models/default",
            &json!({"user_id": "u-logs", "request_id": "r-logs", "user_image": image, "body_profile": body_profile()}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["data"]["task_id"].as_str().unwrap().to_string();

    // Wrong and missing tokens.
    for token in [Some(WRONG_TOKEN), None] {
        let (status, body) = http
            .with_token(token)
            .post(
                "/models/default",
                &json!({"user_id": "u-logs", "user_image": image, "body_profile": body_profile()}),
            )
            .await;
        assert_eq!((status, body["code"].as_i64()), (401, Some(1005)), "{body}");
    }
    let (status, _) = http
        .with_token(Some(WRONG_TOKEN))
        .get(&format!("/tasks/{id}"))
        .await;
    assert_eq!(status, 401);

    // Bad inputs that carry the image data in various wrong places.
    let mid = image_b64.len() / 2;
    let corrupted = format!(
        "data:image/jpeg;base64,{}!!{}",
        &image_b64[..mid],
        &image_b64[mid..]
    );
    let wrong_mime = format!("data:image/png;base64,{image_b64}");
    let bad_bodies: Vec<Vec<u8>> = vec![
        serde_json::to_vec(&json!({"user_id": "u-logs", "user_image": corrupted, "body_profile": body_profile()})).unwrap(),
        serde_json::to_vec(&json!({"user_id": "u-logs", "user_image": wrong_mime, "body_profile": body_profile()})).unwrap(),
        // The image where an object is expected: a type error about a long string.
        serde_json::to_vec(&json!({"user_id": "u-logs", "user_image": image, "body_profile": image})).unwrap(),
        // The image as a user id (too long) and as an unknown size.
        serde_json::to_vec(&json!({"user_id": image_b64, "user_image": image, "body_profile": body_profile(), "size": image_b64})).unwrap(),
        // Legacy bare base64 with a bad profile.
        serde_json::to_vec(&json!({"user_id": "u-logs", "user_image_base64": image_b64, "body_profile": {"gender": "x", "height_cm": -1}})).unwrap(),
        // Truncated JSON in the middle of the image.
        format!("{{\"user_id\":\"u-logs\",\"user_image\":\"{}", &image[..image.len() / 2]).into_bytes(),
    ];
    for body in bad_bodies {
        let (status, answer) = http.post_raw("/models/default", body).await;
        assert_eq!(
            (status, answer["code"].as_i64()),
            (400, Some(1001)),
            "{answer}"
        );
    }
    let (status, answer) = http
        .post(
            "/models/outfit",
            &json!({"user_id": "u-logs", "base_model_task_id": id, "angle": "up", "outfit_images": [wrong_mime, image_b64]}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");

    let task = http.wait_terminal(&id, DEADLINE).await;
    assert_eq!(task["status"], "completed", "{task}");
    let delivered = wait_for("callback delivered", DEADLINE, || async {
        let d = ops.receiver.delivered_for(&id);
        (!d.is_empty()).then_some(d)
    })
    .await;
    // The secrets were really in use.
    assert_eq!(
        delivered[0]
            .headers
            .get("authorization")
            .map(String::as_str),
        Some(&*format!("Bearer {CALLBACK_TOKEN}"))
    );
    assert!(delivered[0].headers.contains_key("webhook-signature"));
    assert!(ops.sim.stats().tasks_created >= 1);

    // Stop the service so everything it had to say is in the file.
    let (code, killed) = terminate_within(&mut ops.service, ops.dir.path());
    assert_eq!(
        (code, killed),
        (Some(0), false),
        "{}",
        ops.service.log_text()
    );
    let log = ops.service.log_text();

    let mut debug_lines = 0;
    let mut task_lines = 0;
    for (n, line) in log.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line {} is not JSON ({e}): {line}", n + 1));
        assert!(v.is_object(), "log line {} is not an object: {line}", n + 1);
        if v["level"] == "DEBUG" {
            debug_lines += 1;
        }
        if has_key_value(&v, "task.id", &id) {
            task_lines += 1;
        }
    }
    assert!(debug_lines > 0, "RUST_LOG=debug produced no DEBUG line");
    assert!(task_lines > 0, "no log line carries task.id = {id}");

    for (what, secret) in [
        ("APIMART_API_KEY", APIMART_KEY),
        ("API_AUTH_TOKEN", API_TOKEN),
        ("the wrong token", WRONG_TOKEN),
        ("CALLBACK_TOKEN", CALLBACK_TOKEN),
        ("CALLBACK_SIGNING_SECRET", signing_secret.as_str()),
        ("CALLBACK_SIGNING_SECRET's key", secret_key.as_str()),
    ] {
        if let Some(at) = log.find(secret) {
            let line = log[..at].lines().count();
            panic!("{what} is in the log (line {line})");
        }
    }
    if let Some(slice) = shared_slice(&image_b64, &log, 40) {
        panic!("image data is in the log: …{slice}…");
    }
    let _ = &ops.dir;
}

// ---------------------------------------------------------------- 4. config check

#[test]
fn config_check_on_good_and_bad_configs() {
    const KEY: &str = "sk-zzzOPSconfigcheck9Qw3Er5Ty7Ui";
    const PASSWORD: &str = "pwOPS4Hn8Jm2Kb6";
    const TOKEN: &str = "tokOPS7Xc2Vb9Nm4";
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("postgres://app:{PASSWORD}@127.0.0.1:5432/modelgen");
    let good = kv(&[
        ("APIMART_API_KEY", KEY),
        ("DATABASE_URL", &db_url),
        ("API_AUTH_TOKEN", TOKEN),
        ("CALLBACK_URL", "http://127.0.0.1:9/hook"),
        ("CALLBACK_TOKEN", TOKEN),
        ("PORT", "8123"),
    ]);
    let out = run_modelgen(dir.path(), &good, &["config", "check"]);
    let text = show(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("configuration OK"), "{text}");
    assert!(text.contains("PORT = 8123"), "{text}");
    assert!(
        text.contains("postgres://app:***@127.0.0.1:5432/modelgen"),
        "{text}"
    );
    for secret in [KEY, PASSWORD, TOKEN] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    // What downloads may reach (docs/outbound.md).
    assert!(
        text.contains("# downloads: public addresses (docs/outbound.md)"),
        "{text}"
    );
    let mut allowing = good.clone();
    allowing.push((
        "OUTBOUND_ALLOWLIST".into(),
        " 10.1.0.0/16, 127.0.0.1:9100".into(),
    ));
    let text = show(&run_modelgen(dir.path(), &allowing, &["config", "check"]));
    assert!(
        text.contains("# downloads: public addresses, and 10.1.0.0/16,127.0.0.1:9100"),
        "{text}"
    );

    // Bad values: non-zero exit, the variable named on stderr, no secret shown.
    for (var, value) in [
        ("PORT", "eighty"),
        ("TASK_TIMEOUT", "-1"),
        ("DATABASE_URL", "mysql://x"),
        ("CALLBACK_URL", "not-a-url"),
        ("CALLBACK_SIGNING_SECRET", "whsec_!!not-base64!!"),
        ("LOG_FORMAT", "xml"),
        ("WORKER_CONCURRENCY", "0"),
        ("OUTBOUND_ALLOWLIST", "127.0.0.1/32,metadata.internal:80"),
        ("OUTBOUND_ALLOWLIST", "10.0.0.0/33"),
    ] {
        let mut env = good.clone();
        env.push((var.into(), value.into()));
        let out = run_modelgen(dir.path(), &env, &["config", "check"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{var}={value} accepted:\n{}",
            show(&out)
        );
        assert!(
            stderr.contains(var),
            "{var}={value}: stderr does not name it:\n{}",
            show(&out)
        );
        assert!(!show(&out).contains("configuration OK"), "{}", show(&out));
        for secret in [KEY, PASSWORD, TOKEN] {
            assert!(
                !show(&out).contains(secret),
                "{secret} printed:\n{}",
                show(&out)
            );
        }
    }

    // A TOML file: its values are used, and the environment wins over it.
    let file = dir.path().join("modelgen.toml");
    std::fs::write(&file, "port = 9001\ntask_timeout = 120\n").unwrap();
    let file_arg = file.to_str().unwrap();
    let out = run_modelgen(
        dir.path(),
        &kv(&[("TASK_TIMEOUT", "77")]),
        &["--config", file_arg, "config", "check"],
    );
    let text = show(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("PORT = 9001"), "{text}");
    assert!(text.contains("TASK_TIMEOUT = 77"), "{text}");

    // An unknown key in the file is named.
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "port = 9001\nno_such_setting_xyz = 1\n").unwrap();
    let out = run_modelgen(
        dir.path(),
        &[],
        &["config", "check", "--config", bad_file.to_str().unwrap()],
    );
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no_such_setting_xyz"),
        "{}",
        show(&out)
    );

    // A missing file is an error naming it.
    let missing = dir.path().join("missing.toml");
    let out = run_modelgen(
        dir.path(),
        &[],
        &["--config", missing.to_str().unwrap(), "config", "check"],
    );
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.toml"),
        "{}",
        show(&out)
    );
    // Serving with a bad configuration fails the same way, before binding.
    let mut env = good.clone();
    env.push(("PORT".into(), "eighty".into()));
    let out = run_modelgen(dir.path(), &env, &["serve"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PORT"),
        "{}",
        show(&out)
    );
}

// ---------------------------------------------------------------- 5. CLI

/// The outbox rows of `task_id` in a `callbacks list` output.
fn rows_for<'a>(list: &'a Value, task_id: &str) -> Vec<&'a Value> {
    list.as_array()
        .or_else(|| list["items"].as_array())
        .map(|items| items.iter().filter(|i| i["task_id"] == task_id).collect())
        .unwrap_or_default()
}

/// Waits until the callback of `task_id` is dead (seen through the CLI).
async fn wait_dead_cli(ops: &Ops, task_id: &str) -> Value {
    let env = ops.cli_env();
    wait_for(&format!("callback of {task_id} dead"), DEADLINE, || async {
        let out = modelgen(ops.dir.path(), &env, &["callbacks", "list", "--dead"]).await;
        let list = json_stdout(&out);
        rows_for(&list, task_id).first().map(|v| (*v).clone())
    })
    .await
}

/// Failed (503) attempts the receiver saw for `task_id`.
fn failed_attempts(receiver: &CallbackReceiver, task_id: &str) -> Vec<modelgen_e2e::Received> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.status != 200 && r.body["task_id"] == task_id)
        .collect()
}

/// Waits for a 2xx delivery of `task_id` and checks it carries `event_id`,
/// as every failed attempt did.
async fn assert_redelivered(ops: &Ops, task_id: &str, event_id: &str) {
    let delivered = wait_for(&format!("redelivery of {task_id}"), DEADLINE, || async {
        let d = ops.receiver.delivered_for(task_id);
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(
        delivered[0].headers.get("webhook-id").map(String::as_str),
        Some(event_id)
    );
    let failed = failed_attempts(&ops.receiver, task_id);
    assert_eq!(
        failed.len(),
        2,
        "CALLBACK_MAX_RETRIES=2 attempts before dead"
    );
    for f in &failed {
        assert_eq!(
            f.headers.get("webhook-id").map(String::as_str),
            Some(event_id)
        );
    }
}

async fn cli_commands(backend: Backend) {
    const TOKEN: &str = "ops-cli-admin-token";
    // Migrations first, from the CLI only: the service then runs without AUTO_MIGRATE.
    let db = TestDb::fresh(backend).await;
    let scratch = tempfile::tempdir().unwrap();
    let db_env = kv(&[("DATABASE_URL", &db.url)]);
    let applied = |out: &Output| -> usize {
        assert!(out.status.success(), "{}", show(out));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let n = text
            .split_whitespace()
            .skip_while(|w| *w != "applied")
            .nth(1)
            .and_then(|n| n.parse().ok());
        n.unwrap_or_else(|| panic!("no `applied N` in:\n{}", show(out)))
    };
    let first = applied(&modelgen(scratch.path(), &db_env, &["migrate"]).await);
    assert!(first >= 1, "a fresh database needs migrations");
    assert_eq!(
        applied(&modelgen(scratch.path(), &db_env, &["migrate"]).await),
        0
    );

    let ops = Ops::start_with(
        db,
        "ops-cli-key",
        &[
            ("AUTO_MIGRATE", "false"),
            ("API_AUTH_TOKEN", TOKEN),
            ("CALLBACK_MAX_RETRIES", "2"),
            ("CALLBACK_BASE_DELAY", "0.1"),
            ("CALLBACK_MAX_DELAY", "0.2"),
        ],
    )
    .await;
    let env = ops.cli_env();

    // One task whose callback goes dead while the receiver is down.
    ops.receiver.set_down(true);
    let t1 = create_default(&ops.http, "u-cli").await;
    let task = ops.http.wait_terminal(&t1, DEADLINE).await;
    assert_eq!(task["status"], "completed", "{task}");

    let shown = json_stdout(&modelgen(ops.dir.path(), &env, &["tasks", "show", &t1]).await);
    assert_eq!(shown["task"]["task_id"], t1.as_str(), "{shown}");
    assert_eq!(shown["task"]["status"], "completed", "{shown}");
    assert_eq!(shown["task"]["type"], "default", "{shown}");
    let callbacks = shown["callbacks"].as_array().expect("callbacks array");
    assert_eq!(callbacks.len(), 1, "{shown}");
    let ev1 = callbacks[0]["event_id"].as_str().unwrap().to_string();
    assert!(ev1.starts_with("evt_"), "{ev1}");

    let dead = wait_dead_cli(&ops, &t1).await;
    assert_eq!(dead["event_id"], ev1.as_str(), "{dead}");
    assert_eq!(dead["status"], "dead", "{dead}");
    assert_eq!(dead["attempts"], 2, "{dead}");
    assert_eq!(failed_attempts(&ops.receiver, &t1).len(), 2);

    // Redeliver it by id from the CLI, receiver up: same webhook-id.
    ops.receiver.set_down(false);
    let out = modelgen(ops.dir.path(), &env, &["callbacks", "redeliver", &ev1]).await;
    let view = json_stdout(&out);
    assert_eq!(view["event_id"], ev1.as_str(), "{view}");
    assert_eq!(view["status"], "pending", "{view}");
    assert_redelivered(&ops, &t1, &ev1).await;
    wait_for("delivery of t1 recorded", DEADLINE, || async {
        let shown = json_stdout(&modelgen(ops.dir.path(), &env, &["tasks", "show", &t1]).await);
        (shown["callbacks"][0]["status"] == "delivered").then_some(())
    })
    .await;

    // Two more dead callbacks; one redelivered over HTTP, one with --all-dead.
    ops.receiver.set_down(true);
    let t2 = create_default(&ops.http, "u-cli").await;
    let t3 = create_default(&ops.http, "u-cli").await;
    for t in [&t2, &t3] {
        ops.http.wait_terminal(t, DEADLINE).await;
    }
    let admin = &ops.http;
    let anonymous = ops.http.with_token(None);
    let items = wait_for("t2 and t3 dead over HTTP", DEADLINE, || async {
        let (status, body) = admin.get("/admin/callbacks?status=dead").await;
        assert_eq!(status, 200, "{body}");
        let items = body["data"].clone();
        (!rows_for(&items, &t2).is_empty() && !rows_for(&items, &t3).is_empty()).then_some(items)
    })
    .await;
    assert!(
        rows_for(&items, &t1).is_empty(),
        "t1 was redelivered: {items}"
    );
    let ev2 = rows_for(&items, &t2)[0]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ev3 = rows_for(&items, &t3)[0]["event_id"]
        .as_str()
        .unwrap()
        .to_string();

    let (status, body) = anonymous.get("/admin/callbacks?status=dead").await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1005)), "{body}");
    let (status, body) = anonymous
        .post(&format!("/admin/callbacks/{ev2}/redeliver"), &json!({}))
        .await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1005)), "{body}");
    let (status, body) = ops
        .http
        .with_token(Some("not-the-token"))
        .post(&format!("/admin/callbacks/{ev2}/redeliver"), &json!({}))
        .await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1005)), "{body}");

    ops.receiver.set_down(false);
    let (status, body) = admin
        .post(&format!("/admin/callbacks/{ev2}/redeliver"), &json!({}))
        .await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert_eq!(body["data"]["event_id"], ev2.as_str(), "{body}");
    assert_redelivered(&ops, &t2, &ev2).await;
    assert!(
        ops.receiver.delivered_for(&t3).is_empty(),
        "t3 was delivered without a redeliver"
    );

    let out = modelgen(
        ops.dir.path(),
        &env,
        &["callbacks", "redeliver", "--all-dead"],
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.trim_start().starts_with("1 dead callback"),
        "exactly t3 was dead:\n{}",
        show(&out)
    );
    assert_redelivered(&ops, &t3, &ev3).await;
    wait_for("no dead callbacks left", DEADLINE, || async {
        let list =
            json_stdout(&modelgen(ops.dir.path(), &env, &["callbacks", "list", "--dead"]).await);
        list.as_array().is_some_and(Vec::is_empty).then_some(())
    })
    .await;

    // Unknown and malformed ids: non-zero exit with a clear message.
    let unknown = "task_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let out = modelgen(ops.dir.path(), &env, &["tasks", "show", unknown]).await;
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        stderr.contains(&unknown.to_lowercase()) && stderr.contains("not found"),
        "{}",
        show(&out)
    );
    let out = modelgen(ops.dir.path(), &env, &["tasks", "show", "not-a-task"]).await;
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not-a-task"),
        "{}",
        show(&out)
    );
    let out = modelgen(
        ops.dir.path(),
        &env,
        &["callbacks", "redeliver", "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV"],
    )
    .await;
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("evt_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        "{}",
        show(&out)
    );

    // --help lists every subcommand.
    for (args, subcommands) in [
        (
            &["--help"][..],
            &["serve", "migrate", "tasks", "callbacks", "config"][..],
        ),
        (&["tasks", "--help"][..], &["show"][..]),
        (&["callbacks", "--help"][..], &["list", "redeliver"][..]),
        (&["config", "--help"][..], &["check"][..]),
    ] {
        let out = modelgen(ops.dir.path(), &[], args).await;
        assert!(out.status.success(), "{}", show(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        for sub in subcommands {
            assert!(
                help.lines().any(|l| l.trim_start().starts_with(sub)),
                "`modelgen {}` does not list {sub}:\n{help}",
                args.join(" ")
            );
        }
    }
    let _ = &ops.sim;
}

#[actix_web::test]
async fn cli_commands_against_a_real_database_sqlite() {
    cli_commands(Backend::Sqlite).await;
}

#[actix_web::test]
async fn cli_commands_against_a_real_database_postgres() {
    if skip_pg() {
        return;
    }
    cli_commands(Backend::Postgres).await;
}

#[actix_web::test]
async fn cli_commands_against_a_real_database_mariadb() {
    if skip_mysql() {
        return;
    }
    cli_commands(Backend::Mysql).await;
}

// ---------------------------------------------------------------- 6. SIGTERM

/// PIDs of `modelgen` processes running in `dir` (ours: each test has its own dir).
fn modelgen_pids_in(dir: &Path) -> Vec<u32> {
    let bin = std::fs::canonicalize(modelgen_bin()).ok();
    let dir = std::fs::canonicalize(dir).ok();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    let p = PathBuf::from(format!("/proc/{pid}"));
                    std::fs::read_link(p.join("cwd")).ok() == dir
                        && std::fs::read_link(p.join("exe")).ok() == bin
                })
                .collect()
        })
        .unwrap_or_default()
}

/// SIGTERM through [`Service::terminate`], with a watchdog: when the process
/// is still there `SHUTDOWN_GRACE` + 10 s later (start-up slack), the
/// watchdog SIGKILLs it. Returns the exit code and whether the watchdog fired.
fn terminate_within(service: &mut Service, dir: &Path) -> (Option<i32>, bool) {
    let limit = Duration::from_secs(GRACE_SECS + 10);
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let dir = dir.to_path_buf();
    let watchdog = std::thread::spawn(move || {
        if wait.recv_timeout(limit).is_ok() {
            return false;
        }
        for pid in modelgen_pids_in(&dir) {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        true
    });
    let code = service.terminate();
    let _ = done.send(());
    (code, watchdog.join().unwrap_or(true))
}

async fn sigterm(backend: Backend) {
    let mut ops = Ops::start(backend, "ops-term-key", &[]).await;
    let env = ops.cli_env();
    let base = create_default(&ops.http, "u-term").await;
    let task = ops.http.wait_terminal(&base, DEADLINE).await;
    assert_eq!(task["status"], "completed", "{task}");

    // A long task whose upstream answers are slow, so a step is often in flight;
    // without an estimate it is polled from the start (with one, the first poll
    // would come only when it is done).
    let (status, body) = ops
        .http
        .post(
            "/models/edit",
            &json!({"user_id": "u-term", "base_model_task_id": base,
                    "edit_instructions": "longer hair [[sim:duration=8000,slow=700,no-estimate]]"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["data"]["task_id"].as_str().unwrap().to_string();
    ops.http.wait_status(&id, "processing", DEADLINE).await;
    // The lease is held while a step runs.
    wait_for("a worker holds the lease", DEADLINE, || async {
        let shown = json_stdout(&modelgen(ops.dir.path(), &env, &["tasks", "show", &id]).await);
        shown["lease_owner"].is_string().then_some(())
    })
    .await;

    let (code, killed) = terminate_within(&mut ops.service, ops.dir.path());
    assert!(
        !killed,
        "modelgen did not exit within SHUTDOWN_GRACE; log:\n{}",
        ops.service.log_text()
    );
    assert_eq!(code, Some(0), "log:\n{}", ops.service.log_text());

    let shown = json_stdout(&modelgen(ops.dir.path(), &env, &["tasks", "show", &id]).await);
    assert!(
        shown["lease_owner"].is_null(),
        "lease kept after SIGTERM: {shown}"
    );
    assert_eq!(shown["task"]["status"], "processing", "{shown}");
    assert!(shown["external_task_id"].is_string(), "{shown}");

    // Restarted, the service picks the task up and finishes it.
    ops.service.restart().await;
    let task = ops.http.wait_terminal(&id, DEADLINE).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(
        ops.sim.stats().max_tasks_per_key,
        1,
        "a task was submitted upstream twice"
    );
    let (code, killed) = terminate_within(&mut ops.service, ops.dir.path());
    assert_eq!((code, killed), (Some(0), false));
    let _ = &ops.receiver;
}

#[actix_web::test]
async fn sigterm_exits_zero_and_releases_leases() {
    sigterm(Backend::Sqlite).await;
}

#[actix_web::test]
async fn sigterm_exits_zero_and_releases_leases_postgres() {
    if skip_pg() {
        return;
    }
    sigterm(Backend::Postgres).await;
}

// ---------------------------------------------------------------- 7. issue 11 holes

/// `modelgen serve` with stdout and stderr on one pipe, as in
/// `modelgen serve 2>&1 | …`, with the simulator built in.
struct Piped {
    child: std::process::Child,
    reader: Option<std::process::ChildStdout>,
    http: Http,
    _dir: tempfile::TempDir,
}

impl Piped {
    async fn start() -> Piped {
        let dir = tempfile::tempdir().unwrap();
        let port = modelgen_e2e::free_port();
        let db = format!("sqlite://{}", dir.path().join("modelgen.db").display());
        let storage = format!("file://{}", dir.path().join("images").display());
        // `exec` keeps the PID: SIGTERM reaches modelgen itself.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" serve 2>&1")
            .arg(modelgen_bin())
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(kv(&[
                ("HOST", "127.0.0.1"),
                ("PORT", &port.to_string()),
                ("DATABASE_URL", &db),
                ("STORAGE_URL", &storage),
                ("SHUTDOWN_GRACE", &GRACE_SECS.to_string()),
                ("RUST_LOG", "info"),
            ]))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let reader = child.stdout.take();
        let http = Api::new(format!("http://127.0.0.1:{port}")).with_timeout(REQUEST_TIMEOUT);
        let mut piped = Piped {
            child,
            reader,
            http,
            _dir: dir,
        };
        let end = std::time::Instant::now() + DEADLINE;
        loop {
            assert!(
                piped.child.try_wait().unwrap().is_none(),
                "modelgen exited during start-up"
            );
            let client = reqwest::Client::new();
            let up = client
                .get(format!("{}/healthz", piped.http.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            assert!(std::time::Instant::now() < end, "modelgen did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        piped
    }

    /// SIGTERM, then the exit code, or `None` when it was still running
    /// `SHUTDOWN_GRACE` + 10 s later (it is then killed).
    fn terminate(&mut self) -> Option<Option<i32>> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let end = std::time::Instant::now() + Duration::from_secs(GRACE_SECS + 10);
        while std::time::Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests that each write a log line; every one must be answered.
async fn log_some_lines(http: &Http, n: usize) {
    for i in 0..n {
        let (status, body) = http.get("/healthz").await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
}

#[actix_web::test]
async fn a_closed_log_pipe_loses_log_lines_never_the_process() {
    let mut svc = Piped::start().await;
    // Like `| head -3`: read three lines, then the reader goes away.
    {
        use std::io::BufRead as _;
        let mut lines = std::io::BufReader::new(svc.reader.take().unwrap()).lines();
        for _ in 0..3 {
            lines.next().unwrap().unwrap();
        }
    }
    log_some_lines(&svc.http, 50).await;
    let samples = scrape(&svc.http).await;
    assert!(
        metric_sum(
            &samples,
            "log_lines_dropped_total",
            &[("reason", "write_failed")]
        ) >= 1.0,
        "lost lines are counted"
    );
    assert_healthz_ok(&svc.http).await;
    assert_eq!(
        svc.terminate(),
        Some(Some(0)),
        "SIGTERM must end it cleanly"
    );
}

#[actix_web::test]
async fn a_full_log_pipe_loses_log_lines_never_the_process() {
    let mut svc = Piped::start().await;
    // The reader stays, and never reads: the pipe (64 KiB) fills up.
    let _reader = svc.reader.take();
    log_some_lines(&svc.http, 1_500).await;
    assert_healthz_ok(&svc.http).await;
    let (status, _) = svc.http.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        svc.terminate(),
        Some(Some(0)),
        "SIGTERM must end it cleanly"
    );
}

#[actix_web::test]
async fn a_hung_database_answers_503_fast_and_the_service_recovers() {
    if skip_pg() {
        return;
    }
    hung_database(Backend::Postgres).await;
}

#[actix_web::test]
async fn a_hung_database_answers_503_fast_and_the_service_recovers_mariadb() {
    if skip_mysql() {
        return;
    }
    hung_database(Backend::Mysql).await;
}

async fn hung_database(backend: Backend) {
    let db = TestDb::fresh(backend).await;
    let server = reqwest::Url::parse(&db.url).unwrap();
    let proxy = modelgen_persistence::testing::FreezableProxy::start(format!(
        "{}:{}",
        server.host_str().unwrap(),
        server.port_or_known_default().unwrap()
    ))
    .await
    .unwrap();
    let through = proxy.url_through(&db.url).unwrap();
    let ops = Ops::start_with(
        db,
        "ops-hung-key",
        &[
            ("DATABASE_URL", &through),
            ("DATABASE_CONNECT_TIMEOUT", "0.5"),
            ("DATABASE_STATEMENT_TIMEOUT", "0.5"),
            ("DATABASE_CALL_TIMEOUT", "1"),
            ("DATABASE_ACQUIRE_TIMEOUT", "1"),
        ],
    )
    .await;
    let id = create_default(&ops.http, "u-hung").await;

    proxy.freeze();
    // The configured bound is 1 s; allow for a loaded machine, but far below
    // the ~10 s of the fixed pool timeouts (and the no-bound of a hung read).
    let bound = Duration::from_secs(4);
    for i in 0..3 {
        let started = std::time::Instant::now();
        let r = reqwest::Client::new()
            .get(format!("{}/tasks/{id}", ops.http.base))
            .header("x-request-id", format!("hung-{i}"))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap();
        let waited = started.elapsed();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!((status, body["code"].as_i64()), (503, Some(1004)), "{body}");
        assert!(
            body["msg"].is_string() && body.get("data").is_some(),
            "{body}"
        );
        assert!(waited < bound, "request {i} took {waited:?}");
    }
    let started = std::time::Instant::now();
    let (status, _) = ops.http.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        started.elapsed() < bound,
        "/readyz took {:?}",
        started.elapsed()
    );
    assert_healthz_ok(&ops.http).await;
    // Each 503's cause is logged once, in its request's span.
    let log = ops.service.log_text();
    for i in 0..3 {
        let tag = format!("hung-{i}");
        let causes = log
            .lines()
            .filter(|l| l.contains(&tag) && l.contains("database unavailable"))
            .count();
        assert_eq!(causes, 1, "cause of {tag} logged {causes} times:\n{log}");
    }

    proxy.thaw();
    wait_for("the service serves again", DEADLINE, || async {
        (ops.http.get(&format!("/tasks/{id}")).await.0 == 200).then_some(())
    })
    .await;
    let _ = (&ops.sim, &ops.receiver, &ops.dir);
}

#[actix_web::test]
async fn sigterm_with_callbacks_in_flight_exits_zero_without_error_lines() {
    let mut ops = Ops::start(Backend::Sqlite, "ops-inflight-key", &[]).await;
    // Callbacks take 3 s to be answered: SIGTERM comes while they are in flight.
    ops.receiver.set_delay(Duration::from_secs(3));
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(create_default(&ops.http, &format!("u-inflight-{i}")).await);
    }
    for id in &ids {
        let task = ops.http.wait_terminal(id, DEADLINE).await;
        assert_eq!(task["status"], "completed", "{task}");
    }
    wait_for("callbacks in flight", DEADLINE, || async {
        (ops.receiver.received().len() >= ids.len()).then_some(())
    })
    .await;
    let (code, killed) = terminate_within(&mut ops.service, ops.dir.path());
    let log = ops.service.log_text();
    assert!(!killed, "did not exit within SHUTDOWN_GRACE:\n{log}");
    assert_eq!(code, Some(0), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "ERROR lines at shutdown:\n{}",
        errors.join("\n")
    );
    let _ = (&ops.sim, &ops.db);
}

#[actix_web::test]
async fn task_log_lines_name_the_apimart_task_once() {
    let ops = Ops::start(Backend::Sqlite, "ops-span-key", &[]).await;
    let id = create_default(&ops.http, "u-span").await;
    let task = ops.http.wait_terminal(&id, DEADLINE).await;
    assert_eq!(task["status"], "completed", "{task}");
    let log = ops.service.log_text();
    let named: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&id) && l.contains("apimart.task_id"))
        .collect();
    assert!(
        named.iter().any(|l| l.contains("submitted upstream")),
        "no submit line:\n{log}"
    );
    for line in named {
        assert_eq!(line.matches("apimart.task_id").count(), 1, "{line}");
    }
    let _ = (&ops.sim, &ops.receiver, &ops.db, &ops.dir);
}

/// Input retention running by itself in the real binary, then
/// `modelgen users purge` (dry run, real, again) and `tasks retry` of an
/// erased task.
async fn personal_data(backend: Backend) {
    let ops = Ops::start(
        backend,
        "ops-purge-key",
        &[
            ("INPUT_RETENTION", "1"),
            ("RETENTION_SWEEP_INTERVAL", "0.2"),
        ],
    )
    .await;
    let storage = format!("file://{}", ops.dir.path().join("images").display());
    let mut env = ops.cli_env();
    env.extend(kv(&[("STORAGE_URL", &storage)]));
    let images = ops.dir.path().join("images");

    let base = create_default(&ops.http, "u-purge").await;
    let task = ops.http.wait_terminal(&base, DEADLINE).await;
    assert_eq!(task["status"], "completed", "{task}");
    let (status, body) = ops
        .http
        .post(
            "/models/edit",
            &json!({"user_id": "u-purge", "base_model_task_id": base,
                    "edit_instructions": "shorter hair [[sim:fail]]"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let failed = body["data"]["task_id"].as_str().unwrap().to_string();
    let task = ops.http.wait_terminal(&failed, DEADLINE).await;
    assert_eq!(task["status"], "failed", "{task}");
    let other = create_default(&ops.http, "u-other").await;
    ops.http.wait_terminal(&other, DEADLINE).await;

    // The cleanup runs by itself: the uploaded photo goes, the result stays.
    wait_for("input retention", DEADLINE, || async {
        let shown = json_stdout(&modelgen(ops.dir.path(), &env, &["tasks", "show", &base]).await);
        shown["inputs_purged_at"].is_string().then_some(())
    })
    .await;
    assert!(
        !images.join("inputs").join(&base).exists(),
        "input photo kept"
    );
    let result = only_file_in(&images.join("results").join(&base));
    let other_result = only_file_in(&images.join("results").join(&other));
    assert!(result.is_file(), "result deleted by the input retention");

    let dry = json_stdout(
        &modelgen(
            ops.dir.path(),
            &env,
            &["users", "purge", "u-purge", "--dry-run"],
        )
        .await,
    );
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["tasks"], 2, "{dry}");
    assert_eq!(dry["result_images"], 1, "{dry}");
    assert_eq!(dry["items"].as_array().map(Vec::len), Some(2), "{dry}");
    assert!(result.is_file(), "the dry run deleted the result");

    let purge = modelgen(ops.dir.path(), &env, &["users", "purge", "u-purge"]).await;
    let done = json_stdout(&purge);
    // The audit event goes to stderr (stdout is the result): the user id and
    // counts, never the prompt or body profile.
    let stderr = String::from_utf8_lossy(&purge.stderr);
    let audit = stderr
        .lines()
        .find(|l| l.contains("modelgen.audit") && l.contains("user_purge"))
        .unwrap_or_else(|| panic!("no audit event:\n{}", show(&purge)));
    assert!(
        audit.contains("u-purge") && audit.contains("actor=\"cli\""),
        "{audit}"
    );
    assert!(
        !audit.contains("female") && !audit.contains("skin"),
        "{audit}"
    );
    assert_eq!(
        (
            &done["dry_run"],
            &done["tasks"],
            &done["result_images"],
            &done["image_rows"]
        ),
        (&json!(false), &json!(2), &json!(1), &json!(1)),
        "{done}"
    );
    assert!(!result.exists(), "result kept after the purge");
    assert!(other_result.is_file(), "another user's result deleted");
    let (status, view) = ops.http.get(&format!("/tasks/{base}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["data"]["images"], json!([]), "{view}");
    assert_eq!(view["data"]["status"], "completed", "{view}");
    let shown = json_stdout(&modelgen(ops.dir.path(), &env, &["tasks", "show", &base]).await);
    assert!(shown["purged_at"].is_string(), "{shown}");

    let again = json_stdout(&modelgen(ops.dir.path(), &env, &["users", "purge", "u-purge"]).await);
    assert_eq!(
        (&again["image_rows"], &again["already_erased"]),
        (&json!(0), &json!(2)),
        "{again}"
    );

    // A retry of an erased task is refused with a clear message, not run.
    let out = modelgen(ops.dir.path(), &env, &["tasks", "retry", &failed]).await;
    assert!(!out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("input images were deleted"),
        "{}",
        show(&out)
    );
    let shown = json_stdout(&modelgen(ops.dir.path(), &env, &["tasks", "show", &failed]).await);
    assert_eq!(shown["task"]["status"], "failed", "{shown}");

    // Audit events: the user id and counts, nothing else about the person.
    let log = ops.service.log_text();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("modelgen.audit"))
        .collect();
    assert!(audit.iter().any(|l| l.contains("input_retention")), "{log}");
    let _ = (&ops.sim, &ops.receiver, &ops.db);
}

#[actix_web::test]
async fn personal_data_retention_and_purge_sqlite() {
    personal_data(Backend::Sqlite).await;
}

#[actix_web::test]
async fn personal_data_retention_and_purge_postgres() {
    if skip_pg() {
        return;
    }
    personal_data(Backend::Postgres).await;
}

#[actix_web::test]
async fn sigterm_exits_zero_and_releases_leases_mariadb() {
    if skip_mysql() {
        return;
    }
    sigterm(Backend::Mysql).await;
}

#[actix_web::test]
async fn personal_data_retention_and_purge_mariadb() {
    if skip_mysql() {
        return;
    }
    personal_data(Backend::Mysql).await;
}

/// The one file in `dir` (a task's stored results: `<index>-<ulid>.<ext>`).
fn only_file_in(dir: &std::path::Path) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().expect("one file")
}
