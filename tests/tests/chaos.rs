//! Chaos: several `modelgen serve` replicas on one PostgreSQL (or MariaDB) database and one
//! image directory, the Apimart simulator answering 10 % of its API requests
//! with a random 500/502/503/429, a callback receiver failing 20 % of the
//! deliveries, and a replica killed with SIGKILL and restarted every 2–3 s
//! while tasks run. Nothing may be lost or done twice:
//!
//! * every task reaches `completed` (the simulator's `fail_rate` is 0);
//! * creates retried on another replica after a kill (same `request_id`)
//!   never create a second task;
//! * no task is submitted upstream twice (`max_tasks_per_key == 1`) and the
//!   simulator created exactly one upstream task per modelgen task;
//! * every terminal task has a 2xx callback, all deliveries of a task carry
//!   one `webhook-id`, and every signature verifies.
//!
//! Size: `CHAOS_TASKS` (default 40, quick enough for `make test`) and
//! `CHAOS_REPLICAS` (default 3); `make chaos` runs 500 tasks with the figures
//! printed (`--nocapture`). `CHAOS_KILL_EVERY_MS` (default 2000) sets the pause
//! between kills (2–3 s by default). Runs once on PostgreSQL and once on
//! MySQL/MariaDB; `MODELGEN_SKIP_PG=1` / `MODELGEN_SKIP_MYSQL=1` skip one.

#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "tests: a broken harness should stop loudly"
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use apimart_sim::{SimConfig, Simulator};
use modelgen_e2e::{
    Backend, CallbackReceiver, Cluster, DbProbe, Received, Service, TestDb, png_data_uri,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const CALLBACK_TOKEN: &str = "cb-token-chaos";
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SIM_KEY: &str = "chaos-key";
/// Tasks are spread over this many users (each user's list is checked).
const USERS: usize = 10;
/// Creates in flight at once (the Java backend's connection pool, say).
const SUBMIT_CONCURRENCY: usize = 16;
/// How long one create (with its failovers) may take before it counts as lost.
const CREATE_DEADLINE: Duration = Duration::from_secs(60);
/// Page size when listing a user's tasks: small, so that pagination (the
/// cursor) is part of the "nothing lost, nothing doubled" check.
const LIST_PAGE: usize = 3;
/// Violations printed in full; the rest are counted.
const MAX_VIOLATIONS_SHOWN: usize = 40;
/// Log lines shown per replica when the test fails.
const LOG_TAIL_LINES: usize = 80;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn user_of(i: usize) -> String {
    format!("chaos-u{}", i % USERS)
}

fn default_body(i: usize) -> Value {
    json!({
        "user_id": user_of(i),
        "request_id": format!("chaos-{i}"),
        "user_image": png_data_uri(i as u32),
        "body_profile": {
            "gender": if i % 2 == 0 { "female" } else { "male" },
            "height_cm": 150 + (i % 50),
            "weight_kg": 45 + (i / 50) % 50,
            "age": 20 + i % 40,
            "skin_tone": "light",
        },
    })
}

/// Derived task `i` (an edit or an outfit) on the completed base `base_id`,
/// which belongs to `user_of(base_index)`.
fn derived_body(i: usize, base_index: usize, base_id: &str) -> (&'static str, Value) {
    let user = user_of(base_index);
    if i % 2 == 0 {
        (
            "/models/edit",
            json!({
                "user_id": user, "request_id": format!("chaos-{i}"),
                "base_model_task_id": base_id,
                "edit_instructions": format!("chaos edit {i}: shorter hair, smiling"),
            }),
        )
    } else {
        let angle = ["front", "side", "back"][i % 3];
        (
            "/models/outfit",
            json!({
                "user_id": user, "request_id": format!("chaos-{i}"),
                "base_model_task_id": base_id,
                "angle": angle,
                "outfit_images": [png_data_uri(1_000_000 + i as u32)],
            }),
        )
    }
}

/// The answer to one create, after failovers.
#[derive(Debug, Clone)]
struct Created {
    index: usize,
    user: String,
    kind: &'static str,
    task_id: String,
    /// 202 (created) or 200 (replayed: an earlier try was accepted but its
    /// answer was lost with the replica).
    status: u16,
    failovers: u32,
}

/// Creates through the cluster; anything but 202/200 with a task id is an error.
async fn create(
    cluster: &Cluster,
    index: usize,
    kind: &'static str,
    path: &str,
    body: &Value,
) -> Result<Created, String> {
    let reply = cluster
        .post(index, path, body, CREATE_DEADLINE)
        .await
        .map_err(|e| format!("create #{index} ({kind}) failed: {e}"))?;
    let task_id = reply.body["data"]["task_id"].as_str().unwrap_or_default();
    if !matches!(reply.status, 200 | 202) || !task_id.starts_with("task_") {
        return Err(format!(
            "create #{index} ({kind}) answered {}: {}",
            reply.status, reply.body
        ));
    }
    Ok(Created {
        index,
        user: body["user_id"].as_str().unwrap_or_default().to_string(),
        kind,
        task_id: task_id.to_string(),
        status: reply.status,
        failovers: reply.failovers,
    })
}

/// Waits (through the cluster) until `task_id` is completed.
async fn wait_completed(cluster: &Cluster, task_id: &str, until: Instant) -> Result<(), String> {
    let path = format!("/tasks/{task_id}");
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("base {task_id} not completed before the deadline"));
        }
        if let Ok(r) = cluster.get(0, &path, left).await {
            match r.body["data"]["status"].as_str() {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    return Err(format!("base {task_id} ended {}", r.body["data"]));
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Task counts by status, straight from the database.
async fn status_counts(db: &DbProbe) -> BTreeMap<String, i64> {
    db.counts_by("ai_generation_task", "status").await
}

fn terminal(counts: &BTreeMap<String, i64>) -> i64 {
    ["completed", "failed", "cancelled"]
        .iter()
        .map(|s| counts.get(*s).copied().unwrap_or(0))
        .sum()
}

/// What the workload observed.
struct Workload {
    created: Vec<Created>,
    errors: Vec<String>,
    submit_time: Duration,
    chaos_time: Duration,
    all_terminal: bool,
}

/// Submits every task (defaults first, then edits/outfits on completed
/// defaults), then waits until all are terminal or `deadline` passes.
async fn run_workload(
    cluster: Cluster,
    db: &DbProbe,
    n_tasks: usize,
    kills: &std::sync::atomic::AtomicUsize,
    deadline: Duration,
) -> Workload {
    let started = Instant::now();
    let until = started + deadline;
    let n_derived = if n_tasks >= 2 { n_tasks / 5 } else { 0 };
    let n_default = n_tasks - n_derived;
    let permits = Arc::new(Semaphore::new(SUBMIT_CONCURRENCY));
    let mut errors = Vec::new();
    let mut created: Vec<Created> = Vec::with_capacity(n_tasks);

    let mut jobs = JoinSet::new();
    for i in 0..n_default {
        let (cluster, permits) = (cluster.clone(), permits.clone());
        jobs.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            create(&cluster, i, "default", "/models/default", &default_body(i)).await
        });
    }
    while let Some(joined) = jobs.join_next().await {
        match joined.expect("create job") {
            Ok(c) => created.push(c),
            Err(e) => errors.push(e),
        }
    }
    created.sort_by_key(|c| c.index);
    let bases: Vec<(usize, String)> = created
        .iter()
        .map(|c| (c.index, c.task_id.clone()))
        .collect();
    for (j, (base_index, base_id)) in bases.iter().cloned().enumerate().take(n_derived) {
        let (cluster, permits) = (cluster.clone(), permits.clone());
        let i = n_default + j;
        jobs.spawn(async move {
            wait_completed(&cluster, &base_id, until).await?;
            let (path, body) = derived_body(i, base_index, &base_id);
            let kind = if path.ends_with("edit") {
                "edit"
            } else {
                "outfit"
            };
            let _permit = permits.acquire_owned().await.expect("semaphore");
            create(&cluster, i, kind, path, &body).await
        });
    }
    while let Some(joined) = jobs.join_next().await {
        match joined.expect("create job") {
            Ok(c) => created.push(c),
            Err(e) => errors.push(e),
        }
    }
    let submit_time = started.elapsed();
    println!(
        "chaos: {} creates answered in {:.1} s ({} errors)",
        created.len(),
        submit_time.as_secs_f64(),
        errors.len()
    );

    let mut last_report = Instant::now();
    let all_terminal = loop {
        let counts = status_counts(db).await;
        let done = terminal(&counts);
        if done >= n_tasks as i64 {
            break true;
        }
        if Instant::now() >= until {
            break false;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            println!(
                "chaos: t={:.0}s terminal {done}/{n_tasks} {counts:?}, kills so far {}",
                started.elapsed().as_secs_f64(),
                kills.load(Ordering::Relaxed)
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    Workload {
        created,
        errors,
        submit_time,
        chaos_time: started.elapsed(),
        all_terminal,
    }
}

/// Kills a random replica with SIGKILL and restarts it every `every_ms` to
/// 1.5 × `every_ms` (measured from the end of the previous restart), until `stop`.
async fn chaos_monkey(
    services: &mut [Service],
    stop: &AtomicBool,
    kills: &std::sync::atomic::AtomicUsize,
    every_ms: u64,
) -> Vec<usize> {
    let mut per_replica = vec![0; services.len()];
    loop {
        let pause_until =
            Instant::now() + Duration::from_millis(every_ms + fastrand::u64(0..=every_ms / 2));
        while Instant::now() < pause_until {
            if stop.load(Ordering::Relaxed) {
                return per_replica;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let victim = fastrand::usize(0..services.len());
        services[victim].kill9();
        kills.fetch_add(1, Ordering::Relaxed);
        per_replica[victim] += 1;
        services[victim].restart().await;
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for an
/// opaque cursor in a query string.
fn query_escape(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every task of `user`, through the paginated list endpoint.
async fn list_user_tasks(cluster: &Cluster, user: &str) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let mut path = format!("/tasks?user_id={user}&limit={LIST_PAGE}");
        if !cursor.is_empty() {
            path.push_str(&format!("&cursor={}", query_escape(&cursor)));
        }
        let r = cluster.get(0, &path, CREATE_DEADLINE).await?;
        if r.status != 200 {
            return Err(format!("GET {path}: {} {}", r.status, r.body));
        }
        for item in r.body["data"]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            ids.push(item["task_id"].as_str().unwrap_or_default().to_string());
        }
        match r.body["data"]["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = c.to_string(),
            _ => return Ok(ids),
        }
    }
}

/// The log without terminal colour codes (`ESC [ … m`), which the service
/// writes even to a file.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unix_secs(r: &Received) -> i64 {
    r.at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[actix_web::test]
async fn chaos_three_replicas_kill9_nothing_lost() {
    chaos(Backend::Postgres).await;
}

#[actix_web::test]
async fn chaos_three_replicas_kill9_nothing_lost_on_mariadb() {
    chaos(Backend::Mysql).await;
}

async fn chaos(backend: Backend) {
    if backend.skipped() {
        println!(
            "chaos: {backend:?} tests are turned off (MODELGEN_SKIP_PG / MODELGEN_SKIP_MYSQL)"
        );
        return;
    }
    let n_tasks = env_usize("CHAOS_TASKS", 40).max(1);
    let n_replicas = env_usize("CHAOS_REPLICAS", 3).max(1);
    let kill_every_ms = env_usize("CHAOS_KILL_EVERY_MS", 2000).max(100) as u64;
    let chaos_deadline = Duration::from_secs(60) + Duration::from_millis(600 * n_tasks as u64);
    let drain_deadline = Duration::from_secs(60) + Duration::from_millis(100 * n_tasks as u64);
    println!(
        "chaos: {n_tasks} tasks, {n_replicas} replicas, a kill every {kill_every_ms}-{} ms, deadline {chaos_deadline:?}",
        kill_every_ms * 3 / 2
    );

    let db = TestDb::fresh(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(
        SimConfig {
            task_duration: Duration::from_millis(2500),
            estimated_time: Duration::from_millis(2500),
            error_rate: 0.10,
            fail_rate: 0.0,
            api_key: Some(SIM_KEY.into()),
            ..SimConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let receiver = CallbackReceiver::start().await;
    receiver.set_fail_rate(0.2);

    // No task may time out within the run: a timeout would hide a stuck task
    // as "failed" instead of showing it as not terminal.
    let task_timeout = (chaos_deadline + Duration::from_secs(120)).as_secs();
    let base_env: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.clone()),
        (
            "STORAGE_URL",
            format!("file://{}", dir.path().join("images").display()),
        ),
        ("APIMART_API_KEY", SIM_KEY.into()),
        ("APIMART_BASE_URL", sim.base_url()),
        ("OUTBOUND_ALLOWLIST", sim.addr().to_string()),
        ("CALLBACK_URL", receiver.url()),
        ("CALLBACK_TOKEN", CALLBACK_TOKEN.into()),
        ("CALLBACK_SIGNING_SECRET", SIGNING_SECRET.into()),
        ("CALLBACK_BASE_DELAY", "0.2".into()),
        ("CALLBACK_MAX_DELAY", "2".into()),
        ("CALLBACK_MAX_RETRIES", "50".into()),
        ("CALLBACK_TIMEOUT", "5".into()),
        ("LEASE_SECONDS", "2".into()),
        ("TASK_POLL_INTERVAL", "0.3".into()),
        ("TASK_POLL_MAX_INTERVAL", "1".into()),
        ("WORKER_IDLE_INTERVAL", "0.2".into()),
        ("RETRY_BASE_DELAY", "0.05".into()),
        ("RETRY_MAX_DELAY", "0.5".into()),
        ("RETRY_MAX_ATTEMPTS", "8".into()),
        ("TASK_TIMEOUT", task_timeout.to_string()),
        ("UPSTREAM_MAX_RPS", "200".into()),
        ("SHUTDOWN_GRACE", "5".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let with = |auto_migrate: bool| {
        let mut env = base_env.clone();
        env.push(("AUTO_MIGRATE".into(), auto_migrate.to_string()));
        env
    };
    // Only the first replica migrates; the others start once it is healthy.
    let mut services = vec![Service::start(dir.path(), with(true)).await];
    for _ in 1..n_replicas {
        services.push(Service::start(dir.path(), with(false)).await);
    }
    let cluster = Cluster::new(services.iter().map(|s| s.port).collect());
    let pg = DbProbe::connect(&db).await;

    // ---- chaos phase -------------------------------------------------------
    let stop = AtomicBool::new(false);
    let kills = std::sync::atomic::AtomicUsize::new(0);
    let workload = async {
        let w = run_workload(cluster.clone(), &pg, n_tasks, &kills, chaos_deadline).await;
        stop.store(true, Ordering::Relaxed);
        w
    };
    let (work, kills_per_replica) = tokio::join!(
        workload,
        chaos_monkey(&mut services, &stop, &kills, kill_every_ms)
    );
    let kills_total: usize = kills_per_replica.iter().sum();

    // ---- callback drain ----------------------------------------------------
    let drain_started = Instant::now();
    let task_rows: Vec<(String, String, i32)> = pg
        .text_rows("SELECT task_id, status, submit_attempts FROM ai_generation_task")
        .await
        .expect("read the task rows")
        .into_iter()
        .map(|r| {
            let text = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            (text(0), text(1), text(2).parse().unwrap_or(0))
        })
        .collect();
    let db_status: HashMap<String, String> = task_rows
        .iter()
        .map(|(id, status, _)| (id.clone(), status.clone()))
        .collect();
    let resubmitted = task_rows.iter().filter(|r| r.2 > 1).count();
    let terminal_ids: HashSet<String> = db_status
        .iter()
        .filter(|(_, s)| matches!(s.as_str(), "completed" | "failed" | "cancelled"))
        .map(|(id, _)| id.clone())
        .collect();
    let drained = loop {
        let delivered: HashSet<String> = receiver
            .received()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .filter_map(|r| r.body["task_id"].as_str().map(str::to_string))
            .collect();
        let outbox: BTreeMap<String, i64> = pg.counts_by("callback_delivery", "status").await;
        // Wait for the outbox too: a delivery answered 2xx whose replica died
        // before recording it is delivered again (same webhook-id), and the
        // duplicate count is only final once nothing is pending.
        if terminal_ids.is_subset(&delivered) && !outbox.contains_key("pending") {
            break true;
        }
        if drain_started.elapsed() >= drain_deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let drain_time = drain_started.elapsed();
    let outbox: BTreeMap<String, i64> = pg.counts_by("callback_delivery", "status").await;

    // ---- checks ------------------------------------------------------------
    let mut violations: Vec<String> = work.errors.clone();
    let counts = status_counts(&pg).await;
    let db_total: i64 = counts.values().sum();
    let by_kind = |k: &str| work.created.iter().filter(|c| c.kind == k).count();
    let created_202 = work.created.iter().filter(|c| c.status == 202).count();
    let replayed_200 = work.created.iter().filter(|c| c.status == 200).count();
    let failovers: u32 = work.created.iter().map(|c| c.failovers).sum();
    let created_ids: HashSet<&str> = work.created.iter().map(|c| c.task_id.as_str()).collect();

    if work.created.len() != n_tasks {
        violations.push(format!(
            "only {} of {n_tasks} creates were answered",
            work.created.len()
        ));
    }
    if created_ids.len() != work.created.len() {
        violations.push(format!(
            "{} creates answered only {} distinct task ids",
            work.created.len(),
            created_ids.len()
        ));
    }
    if db_total != n_tasks as i64 {
        violations.push(format!(
            "the database holds {db_total} tasks for {n_tasks} submitted (duplicates from retried creates?)"
        ));
    }
    if !work.all_terminal {
        let stuck: Vec<&String> = db_status
            .iter()
            .filter(|(_, s)| !matches!(s.as_str(), "completed" | "failed" | "cancelled"))
            .map(|(id, _)| id)
            .take(10)
            .collect();
        violations.push(format!(
            "not every task is terminal after {chaos_deadline:?}: {counts:?}; e.g. {stuck:?}"
        ));
    }
    let completed = counts.get("completed").copied().unwrap_or(0);
    if completed != n_tasks as i64 {
        let others: Vec<(&String, &String)> = db_status
            .iter()
            .filter(|(_, s)| s.as_str() != "completed")
            .take(10)
            .collect();
        violations.push(format!(
            "{completed} of {n_tasks} tasks completed (the simulator's fail_rate is 0): {others:?}"
        ));
    }

    // The list endpoint sees exactly the created tasks, once each.
    let mut listed: Vec<String> = Vec::new();
    let users: std::collections::BTreeSet<&str> =
        work.created.iter().map(|c| c.user.as_str()).collect();
    for user in users {
        match list_user_tasks(&cluster, user).await {
            Ok(ids) => listed.extend(ids),
            Err(e) => violations.push(format!("listing {user}: {e}")),
        }
    }
    let listed_set: HashSet<&str> = listed.iter().map(String::as_str).collect();
    if listed.len() != n_tasks || listed_set != created_ids {
        violations.push(format!(
            "GET /tasks lists {} tasks ({} distinct) for {n_tasks} submitted",
            listed.len(),
            listed_set.len()
        ));
    }

    let stats = sim.stats();
    if stats.max_tasks_per_key != 1 {
        violations.push(format!(
            "a task was submitted upstream twice: max_tasks_per_key = {}",
            stats.max_tasks_per_key
        ));
    }
    if stats.max_tasks_per_body > 1 {
        violations.push(format!(
            "one upstream body created {} tasks (every planned task is distinct)",
            stats.max_tasks_per_body
        ));
    }
    if stats.tasks_created != db_total as u64 {
        violations.push(format!(
            "the simulator created {} tasks for {db_total} modelgen tasks",
            stats.tasks_created
        ));
    }

    // Callbacks.
    let received = receiver.received();
    let secret = modelgen_callback::SigningSecret::parse(SIGNING_SECRET).unwrap();
    let mut per_task: HashMap<String, Vec<&Received>> = HashMap::new();
    let mut bad_signatures = 0usize;
    let mut bad_auth = 0usize;
    for r in &received {
        let task = r.body["task_id"]
            .as_str()
            .unwrap_or("<no task_id>")
            .to_string();
        let id = r
            .headers
            .get("webhook-id")
            .map(String::as_str)
            .unwrap_or("");
        let ts: i64 = r
            .headers
            .get("webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let sig = r
            .headers
            .get("webhook-signature")
            .map(String::as_str)
            .unwrap_or("");
        if let Err(e) = modelgen_callback::verify(&secret, id, ts, &r.raw, sig, unix_secs(r), 300) {
            bad_signatures += 1;
            if bad_signatures <= 5 {
                violations.push(format!("signature of {id} ({task}) does not verify: {e:?}"));
            }
        }
        if r.headers.get("authorization").map(String::as_str)
            != Some(&*format!("Bearer {CALLBACK_TOKEN}"))
        {
            bad_auth += 1;
        }
        per_task.entry(task).or_default().push(r);
    }
    if bad_signatures > 0 {
        violations.push(format!("{bad_signatures} callbacks with a bad signature"));
    }
    if bad_auth > 0 {
        violations.push(format!("{bad_auth} callbacks without the bearer token"));
    }
    let mut duplicates_2xx = 0usize;
    let mut tasks_with_2xx: HashSet<String> = HashSet::new();
    let mut webhook_ids: HashSet<String> = HashSet::new();
    for (task, deliveries) in &per_task {
        let ids: HashSet<&str> = deliveries
            .iter()
            .map(|r| {
                r.headers
                    .get("webhook-id")
                    .map(String::as_str)
                    .unwrap_or("")
            })
            .collect();
        webhook_ids.extend(ids.iter().map(|s| s.to_string()));
        if ids.len() != 1 {
            violations.push(format!(
                "task {task}: deliveries carry {} webhook-ids: {ids:?}",
                ids.len()
            ));
        }
        let ok: Vec<&&Received> = deliveries
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect();
        if !ok.is_empty() {
            tasks_with_2xx.insert(task.clone());
            duplicates_2xx += ok.len() - 1;
        }
        if let Some(status) = db_status.get(task) {
            if let Some(wrong) = ok.iter().find(|r| r.body["status"] != status.as_str()) {
                violations.push(format!(
                    "task {task} is {status} but its callback says {}",
                    wrong.body["status"]
                ));
            }
        } else {
            violations.push(format!("callback for a task that does not exist: {task}"));
        }
    }
    if tasks_with_2xx != terminal_ids {
        let lost: Vec<&String> = terminal_ids.difference(&tasks_with_2xx).take(10).collect();
        let extra: Vec<&String> = tasks_with_2xx.difference(&terminal_ids).take(10).collect();
        violations.push(format!(
            "callbacks lost: {} terminal tasks have no 2xx delivery (e.g. {lost:?}); {} delivered tasks are not terminal (e.g. {extra:?}); drained: {drained}",
            terminal_ids.difference(&tasks_with_2xx).count(),
            tasks_with_2xx.difference(&terminal_ids).count(),
        ));
    }
    if outbox.get("dead").copied().unwrap_or(0) > 0
        || outbox.get("pending").copied().unwrap_or(0) > 0
    {
        violations.push(format!("the outbox is not all delivered: {outbox:?}"));
    }
    let answered_2xx = received
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .count();

    // ---- figures -----------------------------------------------------------
    println!();
    println!("==================== chaos figures ====================");
    println!(
        "replicas                        {n_replicas} (one {backend:?} database, one image directory)"
    );
    println!(
        "tasks submitted                 {} of {n_tasks} planned (default {}, edit {}, outfit {})",
        work.created.len(),
        by_kind("default"),
        by_kind("edit"),
        by_kind("outfit")
    );
    println!(
        "create answers                  202 created: {created_202}, 200 replayed: {replayed_200}, failed-over requests: {failovers}"
    );
    println!(
        "tasks in database / listed      {db_total} / {} (distinct {})",
        listed.len(),
        listed_set.len()
    );
    println!(
        "tasks terminal                  {}/{n_tasks}",
        terminal(&counts)
    );
    println!("by final status                 {counts:?}");
    println!("re-submitted after unknown outcome (submit_attempts > 1): {resubmitted}");
    println!("kills (kill -9 + restart)       {kills_total} (per replica {kills_per_replica:?})");
    println!(
        "timings                         creates {:.1} s, until all terminal {:.1} s, callback drain {:.1} s",
        work.submit_time.as_secs_f64(),
        work.chaos_time.as_secs_f64(),
        drain_time.as_secs_f64()
    );
    println!(
        "simulator                       submit_requests {}, tasks_created {}, idempotent_replays {}, max_tasks_per_key {}, max_tasks_per_body {}, status_requests {}, image_downloads {}, faults_injected {}",
        stats.submit_requests,
        stats.tasks_created,
        stats.idempotent_replays,
        stats.max_tasks_per_key,
        stats.max_tasks_per_body,
        stats.status_requests,
        stats.image_downloads,
        stats.faults_injected
    );
    println!(
        "callbacks                       received {}, answered 2xx {answered_2xx}, refused {}, tasks with a 2xx {}/{}, duplicate 2xx (same webhook-id) {duplicates_2xx}, distinct webhook-ids {}, signatures verified {}/{}",
        received.len(),
        received.len() - answered_2xx,
        tasks_with_2xx.len(),
        terminal_ids.len(),
        webhook_ids.len(),
        received.len() - bad_signatures,
        received.len()
    );
    println!("outbox                          {outbox:?}");
    for (i, s) in services.iter().enumerate() {
        let log = strip_ansi(&s.log_text());
        let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
        let warns = log.lines().filter(|l| l.contains(" WARN ")).count();
        println!(
            "replica {i} log                   {} ERROR lines, {warns} WARN lines",
            errors.len()
        );
        for l in errors.iter().take(3) {
            println!("    {l}");
        }
    }
    println!("violations                      {}", violations.len());
    for v in violations.iter().take(MAX_VIOLATIONS_SHOWN) {
        println!("  - {v}");
    }
    println!("=======================================================");

    if !violations.is_empty() {
        for (i, s) in services.iter().enumerate() {
            println!(
                "---- replica {i} (port {}) log tail ----\n{}",
                s.port,
                strip_ansi(&s.log_tail(LOG_TAIL_LINES))
            );
        }
        panic!(
            "chaos: {} invariant(s) violated; first: {}",
            violations.len(),
            violations[0]
        );
    }
    for mut s in services {
        s.kill9();
    }
    sim.stop().await;
    receiver.stop().await;
}
