//! `load`: a bounded load run against the real `modelgen` binary, for
//! `docs/benchmarks.md`. Our standards measure speed and memory with
//! benchmarks like this one, never with assertions in tests.
//!
//! It starts the Apimart simulator in-process, a callback receiver (both from
//! the e2e harness), and `modelgen serve` as a child process on a fresh SQLite
//! file (default) or a fresh PostgreSQL database (`--database-url
//! postgres://…` names the server; a database is created there and dropped at
//! the end), everything on 127.0.0.1 and in its own temp dir. Then three
//! phases, each bounded in count and in time, so the run always ends:
//!
//! 1. **create**: `--requests` × `POST /models/default` (a different tiny PNG
//!    each) at `--concurrency`;
//! 2. **end-to-end**: waits until those tasks are terminal and their
//!    callbacks arrived, checking sparsely (two `limit=1` list queries per
//!    second), then reads every task view once;
//! 3. **read**: `--reads` × `GET /tasks/{id}` at `--concurrency`.
//!
//! Throughout, the child's `VmRSS`/`VmHWM` (`/proc/<pid>/status`) are sampled
//! every 250 ms. The report is printed as markdown tables and, with
//! `--out`, written as JSON.
//!
//! `--mode burst` runs the burst scenario instead (one user's burst against
//! admission control while another user posts single tasks): see
//! `load/burst.rs` and `make burst`. `--mode memory` measures memory with
//! 100 000 tasks in flight and with 10 MB input images: see
//! `load/memory.rs` and `make bench-memory`.

#[path = "load/burst.rs"]
mod burst;
#[path = "load/memory.rs"]
mod memory;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use apimart_sim::{SimConfig, SimHandle, SimStats, Simulator};
use clap::Parser;
use modelgen_e2e::{CallbackReceiver, free_port, png_data_uri};
use serde::Serialize;
use serde_json::{Value, json};

/// How often the child's memory is sampled (the brief's 250 ms).
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How often the drain phase checks for non-terminal tasks and callbacks: sparse,
/// so the checks do not compete with the workers for the database.
const DRAIN_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the drain phase prints a progress line.
const DRAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Per-request client timeout; a request slower than this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `modelgen` may take to answer `/healthz` after spawning.
const HEALTH_DEADLINE: Duration = Duration::from_secs(60);
/// How long `modelgen` may take to exit after SIGTERM (its `SHUTDOWN_GRACE`
/// default is 30 s) before it is killed.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(45);
/// Page size of the final listing (the API's maximum).
const LIST_PAGE: usize = 100;
/// API key shared by the simulator and the service.
const SIM_KEY: &str = "load-key";
/// Most distinct failure messages kept in the report.
const MAX_FAILURE_MESSAGES: usize = 10;

/// Command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "load",
    about = "Load run: modelgen child process + in-process Apimart simulator + callback receiver"
)]
struct Args {
    /// `load`: the three phases above; `burst`: the burst scenario (`load/burst.rs`);
    /// `memory`: tasks in flight and large images (`load/memory.rs`).
    #[arg(long, value_enum, default_value_t = Mode::Load)]
    mode: Mode,
    /// Burst mode: user A's creates.
    #[arg(long, default_value_t = 20_000)]
    burst_requests: usize,
    /// Burst mode: user A's connections.
    #[arg(long, default_value_t = 16)]
    burst_concurrency: usize,
    /// Burst mode: seconds between user B's creates.
    #[arg(long, default_value_t = 2.0)]
    steady_every: f64,
    /// Memory mode, part 1: tasks created and held in flight upstream; 0 skips part 1.
    #[arg(long, default_value_t = 100_000)]
    memory_tasks: usize,
    /// Memory mode, part 1: connections the creates use.
    #[arg(long, default_value_t = 16)]
    memory_concurrency: usize,
    /// Memory mode, part 1: the service's `UPSTREAM_MAX_RPS` (pacer ceiling, requests/s),
    /// raised from the shipped 100 so that N tasks reach the upstream in minutes.
    #[arg(long, default_value_t = 1000)]
    memory_rps: u32,
    /// Memory mode: simulator task duration, seconds (`TASK_TIMEOUT` is set to twice it),
    /// long enough that no task finishes during the run.
    #[arg(long, default_value_t = 3600.0)]
    memory_task_duration: f64,
    /// Memory mode, part 1: longest wait from the first create until the simulator has
    /// accepted every created task, seconds (the creates are bounded by it too).
    #[arg(long, default_value_t = 1800.0)]
    memory_fill_timeout: f64,
    /// Memory mode, part 1: the measuring window with every task in flight, seconds.
    #[arg(long, default_value_t = 60.0)]
    memory_window: f64,
    /// Memory mode, part 2: numbers K of concurrent large-image creates, one fresh
    /// service each (comma-separated); empty skips part 2.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_values_t = [1usize, 4])]
    memory_image_concurrency: Vec<usize>,
    /// Memory mode, part 2: the large PNG's size at most, bytes (the service's
    /// `MAX_IMAGE_BYTES` is 10 MiB after base64 decoding).
    #[arg(long, default_value_t = 10 * 1024 * 1024 - 64 * 1024)]
    memory_image_bytes: usize,
    /// The simulator's rate limit, requests/s (429 with `Retry-After` beyond it); 0: none.
    #[arg(long, default_value_t = 0)]
    sim_rate_limit: u32,
    /// The `modelgen` binary. Default: `$MODELGEN_BIN`, else `modelgen` next to this executable.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// PostgreSQL server (loopback only), e.g. `postgres://postgres@127.0.0.1:5432/postgres`:
    /// a fresh database is created there and dropped afterwards. Default: a SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Phase 1: number of `POST /models/default`.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Requests in flight at once (phases 1 and 3).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Phase 3: number of `GET /tasks/{id}`.
    #[arg(long, default_value_t = 5000)]
    reads: usize,
    /// Simulator task duration (and `estimated_time`), seconds.
    #[arg(long, default_value_t = 2.0)]
    task_duration: f64,
    /// Long side of the simulator's result PNGs, pixels (small keeps rendering cheap).
    #[arg(long, default_value_t = 256)]
    image_long_side: u32,
    /// Time bound of phases 1 and 3 each, seconds: no new request starts after it.
    #[arg(long, default_value_t = 300.0)]
    phase_timeout: f64,
    /// Time bound of phase 2 from its start, seconds.
    #[arg(long, default_value_t = 900.0)]
    drain_timeout: f64,
    /// Extra service setting `KEY=VALUE` (repeatable), e.g. `--env UPSTREAM_MAX_RPS=200`.
    #[arg(long = "env", value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// `RUST_LOG` of the service (its log goes to a file in the temp dir).
    #[arg(long, default_value = "info")]
    rust_log: String,
    /// Write the report as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A label for the report (e.g. `sqlite-default`).
    #[arg(long)]
    label: Option<String>,
    /// Keep the temp dir (database, images, service log) and print its path.
    #[arg(long)]
    keep: bool,
}

/// What `load` runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Create, end-to-end, read.
    Load,
    /// One user's burst while another posts single tasks.
    Burst,
    /// Memory with tasks in flight and with large input images.
    Memory,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

// ---- statistics --------------------------------------------------------------

/// Latency distribution in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Default, Serialize)]
struct LatencySummary {
    count: usize,
    mean_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn summarize(samples_ms: &mut [f64]) -> LatencySummary {
    if samples_ms.is_empty() {
        return LatencySummary::default();
    }
    samples_ms.sort_by(f64::total_cmp);
    let n = samples_ms.len();
    let rank = |p: f64| {
        // Nearest rank: the smallest value with at least p of the samples at or below it.
        let r = (p * n as f64).ceil() as usize;
        samples_ms[r.clamp(1, n) - 1]
    };
    LatencySummary {
        count: n,
        mean_ms: samples_ms.iter().sum::<f64>() / n as f64,
        p50_ms: rank(0.50),
        p90_ms: rank(0.90),
        p99_ms: rank(0.99),
        max_ms: samples_ms[n - 1],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---- HTTP phases -------------------------------------------------------------

/// How one request ended.
enum Outcome {
    /// Expected status; for creates, the new task id.
    Ok(Option<String>),
    /// Unexpected HTTP status or a transport error, as a report key.
    Err(String),
}

/// Result of a fixed-count, fixed-concurrency request phase.
#[derive(Debug, Clone, Default, Serialize)]
struct HttpPhase {
    /// Requests sent.
    attempted: usize,
    /// Requests that got the expected status.
    ok: usize,
    /// Errors by HTTP status or transport failure kind.
    errors: BTreeMap<String, usize>,
    /// From the first request sent to the last answer, seconds.
    wall_s: f64,
    /// `ok / wall_s`.
    ok_per_s: f64,
    /// Latency of the successful requests (send to full body read).
    latency: LatencySummary,
    /// Whether the phase's time bound stopped it before `attempted` reached its target.
    stopped_by_deadline: bool,
    /// Task ids created (phase 1 only; not serialised).
    #[serde(skip)]
    task_ids: Vec<String>,
}

fn transport_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// Runs `make(i)` for `i in 0..n`, `concurrency` at a time, until done or
/// `budget` has passed (requests in flight then finish).
async fn run_phase<F, Fut>(n: usize, concurrency: usize, budget: Duration, make: F) -> HttpPhase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Outcome> + Send,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let end = started + budget;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let make = make.clone();
        let next = next.clone();
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut errors: BTreeMap<String, usize> = BTreeMap::new();
            let mut ids = Vec::new();
            let mut attempted = 0usize;
            loop {
                if Instant::now() >= end {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                attempted += 1;
                let t = Instant::now();
                let outcome = make(i).await;
                let took = t.elapsed();
                match outcome {
                    Outcome::Ok(id) => {
                        lat.push(ms(took));
                        ids.extend(id);
                    }
                    Outcome::Err(k) => *errors.entry(k).or_default() += 1,
                }
            }
            (attempted, lat, errors, ids)
        });
    }
    let mut phase = HttpPhase::default();
    let mut lat = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((attempted, l, errors, ids)) => {
                phase.attempted += attempted;
                lat.extend(l);
                for (k, v) in errors {
                    *phase.errors.entry(k).or_default() += v;
                }
                phase.task_ids.extend(ids);
            }
            Err(e) => *phase.errors.entry(format!("worker: {e}")).or_default() += 1,
        }
    }
    let wall = started.elapsed();
    phase.ok = lat.len();
    phase.wall_s = wall.as_secs_f64();
    phase.ok_per_s = if phase.wall_s > 0.0 {
        phase.ok as f64 / phase.wall_s
    } else {
        0.0
    };
    phase.latency = summarize(&mut lat);
    phase.stopped_by_deadline = phase.attempted < n;
    phase
}

fn body_profile(i: usize) -> Value {
    json!({
        "gender": if i % 2 == 0 { "female" } else { "male" },
        "height_cm": 150 + (i % 40),
        "weight_kg": 45 + (i % 40),
        "age": 18 + (i % 50),
        "skin_tone": "light",
    })
}

async fn create_one(client: reqwest::Client, url: String, user: String, i: usize) -> Outcome {
    let seed = u32::try_from(i).unwrap_or(u32::MAX);
    let body = json!({
        "user_id": user,
        "user_image": png_data_uri(seed),
        "body_profile": body_profile(i),
    });
    post_create(&client, &url, &body).await
}

/// `POST` of a create `body` to `url`: `Ok(task id)` on 202, else the status
/// (or transport failure kind) as the error key.
async fn post_create(client: &reqwest::Client, url: &str, body: &Value) -> Outcome {
    match client.post(url).json(body).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let parsed: Value = match resp.json().await {
                Ok(v) => v,
                Err(e) => return Outcome::Err(format!("{status} body: {}", transport_kind(&e))),
            };
            match (status, parsed["data"]["task_id"].as_str()) {
                (202, Some(id)) => Outcome::Ok(Some(id.to_string())),
                _ => Outcome::Err(status.to_string()),
            }
        }
        Err(e) => Outcome::Err(transport_kind(&e)),
    }
}

async fn read_one(client: reqwest::Client, url: String) -> Outcome {
    match client.get(&url).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.bytes().await {
                Ok(_) if status == 200 => Outcome::Ok(None),
                Ok(_) => Outcome::Err(status.to_string()),
                Err(e) => Outcome::Err(format!("{status} body: {}", transport_kind(&e))),
            }
        }
        Err(e) => Outcome::Err(transport_kind(&e)),
    }
}

// ---- end-to-end phase --------------------------------------------------------

/// Outcome of waiting for the created tasks to finish.
#[derive(Debug, Clone, Default, Serialize)]
struct EndToEnd {
    /// Tasks created in phase 1.
    created: usize,
    /// Views found in the final listing of the run's user.
    listed: usize,
    completed: usize,
    failed: usize,
    cancelled: usize,
    /// Still `submitted`/`processing` at the end of the phase.
    not_terminal: usize,
    /// Seconds from the first create until the check first saw no non-terminal
    /// task (resolution [`DRAIN_CHECK_EVERY`]); `None` when it never did.
    all_terminal_after_s: Option<f64>,
    /// The same, counted from the end of phase 1 ("time to drain").
    drain_after_create_s: Option<f64>,
    /// Seconds from the first create until every created task had a 2xx callback.
    all_callbacks_after_s: Option<f64>,
    /// Distinct created tasks with a delivered (2xx) callback.
    callbacks_distinct: usize,
    /// Every callback POST received (a delivery can repeat, e.g. after a lost answer).
    callbacks_total: usize,
    /// From the earliest `created_at` to the latest `completed_at`, seconds (service clock).
    service_span_s: f64,
    /// `completed / service_span_s`.
    completed_per_s: f64,
    /// `created_at` → `completed_at` of completed tasks.
    created_to_completed: LatencySummary,
    /// `error_message` → count, for failed tasks.
    failure_messages: BTreeMap<String, usize>,
    /// Whether `--drain-timeout` ended the phase.
    timed_out: bool,
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC timestamp as the
/// service writes them (`2026-11-29T11:35:33.123Z`; `+00:00` is accepted too).
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let hh: i64 = t.next()?.parse().ok()?;
    let mm: i64 = t.next()?.parse().ok()?;
    let ss: i64 = t.next()?.parse().ok()?;
    let frac_ms: i64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        digits.parse().ok()?
    };
    // Days from 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + hh) * 60 + mm) * 60 + ss) * 1000 + frac_ms)
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let resp = client.get(url).send().await.ok()?;
    if resp.status().as_u16() != 200 {
        return None;
    }
    resp.json().await.ok()
}

/// The service's `/metrics` text (empty when the scrape failed).
async fn metrics_text(client: &reqwest::Client, base: &str) -> String {
    match client.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Whether the user still has a task in `status` (`None` when the check failed).
async fn has_status(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    status: &str,
) -> Option<bool> {
    let url = format!("{base}/tasks?user_id={user}&status={status}&limit=1");
    let v = get_json(client, &url).await?;
    Some(!v["data"]["items"].as_array()?.is_empty())
}

/// Every task view of `user`, newest first, at most `max` of them.
async fn list_all(client: &reqwest::Client, base: &str, user: &str, max: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    // Bounded: one page more than needed covers the last, partial page.
    for _ in 0..(max / LIST_PAGE + 2) {
        let mut url = format!("{base}/tasks?user_id={user}&limit={LIST_PAGE}");
        if let Some(c) = &cursor {
            url.push_str("&cursor=");
            url.push_str(c);
        }
        let Some(v) = get_json(client, &url).await else {
            break;
        };
        if let Some(items) = v["data"]["items"].as_array() {
            out.extend(items.iter().cloned());
        }
        match v["data"]["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
            _ => break,
        }
    }
    out
}

/// What phase 2 waits for.
struct DrainInput<'a> {
    client: &'a reqwest::Client,
    /// `http://127.0.0.1:PORT` of the service.
    base: &'a str,
    /// The run's `user_id`.
    user: &'a str,
    receiver: &'a CallbackReceiver,
    /// Tasks created in phase 1.
    ids: &'a [String],
    /// Start of phase 1.
    t0: Instant,
    /// End of phase 1.
    create_end: Instant,
    /// Time bound of phase 2.
    budget: Duration,
}

/// Phase 2.
async fn drain(input: DrainInput<'_>) -> EndToEnd {
    let DrainInput {
        client,
        base,
        user,
        receiver,
        ids,
        t0,
        create_end,
        budget,
    } = input;
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let end = Instant::now() + budget;
    let mut e2e = EndToEnd {
        created: ids.len(),
        ..EndToEnd::default()
    };
    let mut terminal_at: Option<Instant> = None;
    let mut callbacks_at: Option<Instant> = None;
    let mut last_progress = Instant::now();
    loop {
        if terminal_at.is_none() {
            let submitted = has_status(client, base, user, "submitted").await;
            let processing = has_status(client, base, user, "processing").await;
            if submitted == Some(false) && processing == Some(false) {
                terminal_at = Some(Instant::now());
            }
        }
        let received = receiver.received();
        let delivered: HashSet<&str> = received
            .iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| r.body["task_id"].as_str())
            .filter(|id| wanted.contains(id))
            .collect();
        e2e.callbacks_distinct = delivered.len();
        e2e.callbacks_total = received.len();
        if callbacks_at.is_none() && delivered.len() == wanted.len() {
            callbacks_at = Some(Instant::now());
        }
        if terminal_at.is_some() && callbacks_at.is_some() {
            break;
        }
        if Instant::now() >= end {
            e2e.timed_out = true;
            break;
        }
        if last_progress.elapsed() >= DRAIN_PROGRESS_EVERY {
            last_progress = Instant::now();
            eprintln!(
                "load: drain {:>5.0} s: callbacks {}/{}, all terminal: {}",
                t0.elapsed().as_secs_f64(),
                delivered.len(),
                wanted.len(),
                terminal_at.is_some()
            );
        }
        tokio::time::sleep(DRAIN_CHECK_EVERY).await;
    }
    e2e.all_terminal_after_s = terminal_at.map(|t| (t - t0).as_secs_f64());
    e2e.drain_after_create_s =
        terminal_at.map(|t| t.saturating_duration_since(create_end).as_secs_f64());
    e2e.all_callbacks_after_s = callbacks_at.map(|t| (t - t0).as_secs_f64());

    let views = list_all(client, base, user, ids.len()).await;
    e2e.listed = views.len();
    let mut durations = Vec::new();
    let mut first_created = i64::MAX;
    let mut last_completed = i64::MIN;
    for v in &views {
        let created = v["created_at"].as_str().and_then(parse_rfc3339_ms);
        let done = v["completed_at"].as_str().and_then(parse_rfc3339_ms);
        if let Some(c) = created {
            first_created = first_created.min(c);
        }
        match v["status"].as_str() {
            Some("completed") => {
                e2e.completed += 1;
                if let (Some(c), Some(d)) = (created, done) {
                    durations.push((d - c) as f64);
                    last_completed = last_completed.max(d);
                }
            }
            Some("failed") => {
                e2e.failed += 1;
                let msg = v["error_message"].as_str().unwrap_or("").to_string();
                if e2e.failure_messages.len() < MAX_FAILURE_MESSAGES
                    || e2e.failure_messages.contains_key(&msg)
                {
                    *e2e.failure_messages.entry(msg).or_default() += 1;
                }
            }
            Some("cancelled") => e2e.cancelled += 1,
            _ => e2e.not_terminal += 1,
        }
    }
    if last_completed > first_created {
        e2e.service_span_s = (last_completed - first_created) as f64 / 1000.0;
        e2e.completed_per_s = e2e.completed as f64 / e2e.service_span_s;
    }
    e2e.created_to_completed = summarize(&mut durations);
    e2e
}

// ---- the child process and /proc ----------------------------------------------

/// `(VmRSS, VmHWM)` of `pid` in KiB.
fn read_rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// User + system CPU time of a process (`/proc/<pid>/stat`), `ticks_per_s` from `getconf CLK_TCK`.
fn read_cpu(which: &str, ticks_per_s: f64) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{which}/stat")).ok()?;
    // The command name may contain spaces; fields after it start with the state (field 3).
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_s)
}

/// `(busy, total)` CPU seconds of the whole machine since boot (`/proc/stat`,
/// all cores; idle and iowait count as not busy).
fn read_machine_cpu(ticks_per_s: f64) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: f64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4)?;
    Some(((total - idle) / ticks_per_s, total / ticks_per_s))
}

/// Busy share (0–100 %) of all cores between two [`read_machine_cpu`] readings.
fn busy_pct(a: Option<(f64, f64)>, b: Option<(f64, f64)>) -> f64 {
    match (a, b) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => 100.0 * (b1 - b0) / (t1 - t0),
        _ => 0.0,
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The modelgen child; killed (SIGKILL) on drop unless already stopped.
struct ServiceChild {
    child: Option<Child>,
    pid: u32,
    port: u16,
    log: PathBuf,
}

impl ServiceChild {
    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM (to this child only), then waits up to [`SHUTDOWN_DEADLINE`];
    /// returns the exit code and how long the exit took.
    async fn terminate(&mut self) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let Some(mut child) = self.child.take() else {
            return (None, Duration::ZERO);
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return (status.code(), started.elapsed()),
                Ok(None) if started.elapsed() < SHUTDOWN_DEADLINE => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return (None, started.elapsed());
                }
            }
        }
    }
}

impl Drop for ServiceChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `modelgen serve` with `serve_args` after `serve` (e.g. `--api-only`).
async fn spawn_service(
    bin: &Path,
    workdir: &Path,
    env: &[(String, String)],
    rust_log: &str,
    serve_args: &[&str],
) -> anyhow::Result<ServiceChild> {
    let port = free_port();
    let log = workdir.join("modelgen.log");
    let out = std::fs::File::create(&log).context("creating the service log")?;
    let err = out.try_clone().context("creating the service log")?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .args(serve_args)
        .current_dir(workdir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("RUST_LOG", rust_log)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let mut service = ServiceChild {
        pid: child.id(),
        child: Some(child),
        port,
        log,
    };
    let client = reqwest::Client::new();
    let url = format!("{}/healthz", service.base_url());
    let end = Instant::now() + HEALTH_DEADLINE;
    loop {
        if let Some(c) = service.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            bail!(
                "modelgen exited early with {status}; log:\n{}",
                service.log_tail(40)
            );
        }
        if client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(service);
        }
        if Instant::now() >= end {
            bail!(
                "modelgen did not become healthy within {HEALTH_DEADLINE:?}; log:\n{}",
                service.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `defaults` (service settings of a mode) with every key `overrides` (`--env`)
/// names replaced, then `overrides` themselves.
fn env_with_defaults(
    defaults: &[(&str, &str)],
    overrides: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = defaults
        .iter()
        .filter(|(k, _)| !overrides.iter().any(|(key, _)| key == k))
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    env.extend(overrides.iter().cloned());
    env
}

/// The parts of one run, all on 127.0.0.1: the in-process simulator, a
/// callback receiver, and `modelgen serve` wired to both.
struct Stack {
    sim: SimHandle,
    receiver: CallbackReceiver,
    service: ServiceChild,
}

/// [`start_stack_with`] for the load and burst modes: simulator tasks of
/// `--task-duration`, plain `modelgen serve`.
async fn start_stack(
    args: &Args,
    bin: &Path,
    workdir: &Path,
    db: &Database,
    service_env: &[(String, String)],
) -> anyhow::Result<Stack> {
    let task_duration = Duration::from_secs_f64(args.task_duration);
    start_stack_with(args, bin, workdir, db, service_env, task_duration, &[]).await
}

/// Starts a [`Stack`]: the simulator with tasks of `task_duration` (also its
/// `estimated_time`), `--image-long-side` results and `--sim-rate-limit`, a
/// callback receiver, and `modelgen serve` (then `serve_args`) on `db` with
/// its images in `workdir/images`, plus the settings `service_env`.
async fn start_stack_with(
    args: &Args,
    bin: &Path,
    workdir: &Path,
    db: &Database,
    service_env: &[(String, String)],
    task_duration: Duration,
    serve_args: &[&str],
) -> anyhow::Result<Stack> {
    let sim = Simulator::start(
        SimConfig {
            task_duration,
            estimated_time: task_duration,
            api_key: Some(SIM_KEY.into()),
            image_long_side: args.image_long_side,
            rate_limit: std::num::NonZeroU32::new(args.sim_rate_limit),
            ..SimConfig::default()
        },
        0,
    )
    .await
    .context("starting the simulator")?;
    let receiver = CallbackReceiver::start().await;
    let mut env: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), db.url.clone()),
        (
            "STORAGE_URL".into(),
            format!("file://{}", workdir.join("images").display()),
        ),
        ("APIMART_API_KEY".into(), SIM_KEY.into()),
        ("APIMART_BASE_URL".into(), sim.base_url()),
        ("OUTBOUND_ALLOWLIST".into(), sim.addr().to_string()),
        ("CALLBACK_URL".into(), receiver.url()),
    ];
    env.extend(service_env.iter().cloned());
    let service = spawn_service(bin, workdir, &env, &args.rust_log, serve_args).await?;
    Ok(Stack {
        sim,
        receiver,
        service,
    })
}

/// Background sampler of the child's memory, on a thread of its own (so a
/// busy runtime does not delay it): `(seconds since t0, VmRSS KiB, VmHWM KiB)`.
struct RssSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(f64, u64, u64)>>>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    /// Samples every [`RSS_SAMPLE_EVERY`].
    fn start(pid: u32, t0: Instant) -> RssSampler {
        RssSampler::every(pid, t0, RSS_SAMPLE_EVERY)
    }

    /// Samples every `period`, the first at once.
    fn every(pid: u32, t0: Instant, period: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some((rss, hwm)) = read_rss_kib(pid)
                    && let Ok(mut v) = out.lock()
                {
                    v.push((t0.elapsed().as_secs_f64(), rss, hwm));
                }
                std::thread::sleep(period);
            }
        });
        RssSampler {
            stop,
            samples,
            thread,
        }
    }

    /// Stops sampling; every sample taken.
    fn finish(self) -> Vec<(f64, u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

// ---- PostgreSQL --------------------------------------------------------------

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The URL of database `name` on the server of `admin`.
fn url_with_database(admin: &str, name: &str) -> anyhow::Result<String> {
    let (head, query) = match admin.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (admin, String::new()),
    };
    let (scheme, rest) = head
        .split_once("://")
        .context("--database-url must look like postgres://user@127.0.0.1:5432/db")?;
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    Ok(format!("{scheme}://{authority}/{name}{query}"))
}

async fn pg_exec(admin: &str, sql: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await.context(sql.to_string())?;
    drop(client);
    let _ = task.await;
    Ok(())
}

/// A database created for this run (PostgreSQL) or a SQLite file in the work dir.
struct Database {
    url: String,
    backend: &'static str,
    /// `(admin url, database name)` to drop at the end.
    pg: Option<(String, String)>,
}

/// Drops the run's PostgreSQL database (nothing to do for SQLite, whose file
/// goes with the temp dir); a failure is printed, not returned.
async fn drop_database(db: &Database) {
    if let Some((admin, name)) = &db.pg
        && let Err(e) = pg_exec(
            admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await
    {
        eprintln!("load: could not drop database {name}: {e:#}");
    }
}

async fn create_database(args: &Args, workdir: &Path) -> anyhow::Result<Database> {
    let Some(admin) = &args.database_url else {
        return Ok(Database {
            url: format!("sqlite://{}", workdir.join("modelgen.db").display()),
            backend: "sqlite",
            pg: None,
        });
    };
    if !(admin.starts_with("postgres://") || admin.starts_with("postgresql://")) {
        bail!("--database-url must be a postgres:// URL (SQLite is the default)");
    }
    let config: tokio_postgres::Config = admin.parse().context("parsing --database-url")?;
    for host in config.get_hosts() {
        if let tokio_postgres::config::Host::Tcp(h) = host
            && !is_loopback_host(h)
        {
            bail!("--database-url must point at a loopback address, not {h}");
        }
    }
    let name = format!(
        "mg_load_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    pg_exec(admin, &format!("CREATE DATABASE {name}")).await?;
    Ok(Database {
        url: url_with_database(admin, &name)?,
        backend: "postgres",
        pg: Some((admin.clone(), name)),
    })
}

// ---- report ------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
struct Machine {
    nproc: usize,
    mem_total_mib: u64,
    kernel: String,
    loadavg_start: Vec<f64>,
    loadavg_end: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct Settings {
    backend: String,
    requests: usize,
    concurrency: usize,
    reads: usize,
    sim_task_duration_s: f64,
    sim_image_long_side: u32,
    phase_timeout_s: f64,
    drain_timeout_s: f64,
    rust_log: String,
    /// Service settings given with `--env` (everything else is the service default).
    service_env: Vec<String>,
    bin: String,
}

/// Resident memory of the modelgen process, KiB.
#[derive(Debug, Clone, Default, Serialize)]
struct Memory {
    start_kib: u64,
    after_create_kib: u64,
    after_drain_kib: u64,
    after_reads_kib: u64,
    /// Last sample before SIGTERM.
    final_kib: u64,
    /// `VmHWM`: the kernel's peak resident set.
    peak_kib: u64,
    samples: usize,
    /// `[seconds since start, VmRSS KiB]` every 250 ms.
    timeline: Vec<(f64, u64)>,
}

/// CPU seconds (user + system) per phase.
#[derive(Debug, Clone, Default, Serialize)]
struct Cpu {
    modelgen_create_s: f64,
    modelgen_drain_s: f64,
    modelgen_read_s: f64,
    /// This process: simulator, callback receiver and load client together.
    harness_create_s: f64,
    harness_drain_s: f64,
    harness_read_s: f64,
    /// Whole machine, every process (PostgreSQL and other users too), % of all cores.
    machine_busy_create_pct: f64,
    machine_busy_drain_pct: f64,
    machine_busy_read_pct: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    label: String,
    started_unix_s: u64,
    machine: Machine,
    settings: Settings,
    create: HttpPhase,
    end_to_end: EndToEnd,
    read: HttpPhase,
    memory: Memory,
    cpu: Cpu,
    upstream: SimStats,
    /// Selected lines of the service's `/metrics` at the end (no histogram buckets).
    service_metrics: Vec<String>,
    shutdown_exit_code: Option<i32>,
    shutdown_s: f64,
    log_bytes: u64,
    log_warn_lines: usize,
    log_error_lines: usize,
}

/// Metric families kept from `/metrics`.
const KEPT_METRICS: &[&str] = &[
    "tasks_finished_total",
    "task_duration_seconds",
    "task_polls",
    "upstream_calls_total",
    "upstream_http_attempts_total",
    "upstream_request_duration_seconds",
    "upstream_retries_total",
    "upstream_throttled_total",
    "upstream_rate_limit_rps",
    "upstream_submit_unknown_total",
    "callback_deliveries_total",
    "lease_claims_total",
    "db_pool_connections",
    "db_pool_waiting",
    "db_writer_connections",
    "db_writer_waiting",
];

fn kept_metrics(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            !name.ends_with("_bucket")
                && KEPT_METRICS.iter().any(|k| {
                    name == *k
                        || name
                            .strip_prefix(k)
                            .is_some_and(|s| s == "_sum" || s == "_count")
                })
        })
        .map(str::to_string)
        .collect()
}

fn opt_s(v: Option<f64>) -> String {
    v.map_or_else(|| "never".to_string(), |s| format!("{s:.1} s"))
}

fn errors_text(e: &BTreeMap<String, usize>) -> String {
    if e.is_empty() {
        return "none".into();
    }
    e.iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Service settings given on top of the shipped ones, for a report: `defaults` when none.
fn env_text(env: &[String]) -> String {
    if env.is_empty() {
        "defaults".to_string()
    } else {
        env.join(" ")
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let st = &r.settings;
    s += &format!("== modelgen load run: {} ({}) ==\n", r.label, st.backend);
    s += &format!(
        "machine: {} cores, {} MiB RAM, kernel {}; load average start {:?}, end {:?}\n",
        m.nproc, m.mem_total_mib, m.kernel, m.loadavg_start, m.loadavg_end
    );
    s += &format!(
        "settings: N={} creates, C={}, M={} reads; simulator task {} s (estimated_time the same), images {} px; RUST_LOG={}; service env: {}\n\n",
        st.requests,
        st.concurrency,
        st.reads,
        st.sim_task_duration_s,
        st.sim_image_long_side,
        st.rust_log,
        env_text(&st.service_env)
    );
    s += "| phase | sent | ok | req/s | p50 ms | p90 ms | p99 ms | max ms | errors |\n";
    s += "|---|---|---|---|---|---|---|---|---|\n";
    for (name, p) in [
        ("POST /models/default", &r.create),
        ("GET /tasks/{id}", &r.read),
    ] {
        s += &format!(
            "| {name} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {}{} |\n",
            p.attempted,
            p.ok,
            p.ok_per_s,
            p.latency.p50_ms,
            p.latency.p90_ms,
            p.latency.p99_ms,
            p.latency.max_ms,
            errors_text(&p.errors),
            if p.stopped_by_deadline {
                " (stopped by time bound)"
            } else {
                ""
            }
        );
    }
    let e = &r.end_to_end;
    let c = &e.created_to_completed;
    s += "\n| end-to-end | value |\n|---|---|\n";
    s += &format!(
        "| tasks created / listed | {} / {} |\n",
        e.created, e.listed
    );
    s += &format!(
        "| completed / failed / cancelled / not terminal | {} / {} / {} / {} |\n",
        e.completed, e.failed, e.cancelled, e.not_terminal
    );
    s += &format!(
        "| all terminal, from first create | {} |\n",
        opt_s(e.all_terminal_after_s)
    );
    s += &format!(
        "| time to drain, from last create answer | {} |\n",
        opt_s(e.drain_after_create_s)
    );
    s += &format!(
        "| all callbacks received, from first create | {} ({} distinct, {} POSTs) |\n",
        opt_s(e.all_callbacks_after_s),
        e.callbacks_distinct,
        e.callbacks_total
    );
    s += &format!(
        "| completed tasks/s (first created_at → last completed_at, {:.1} s) | {:.2} |\n",
        e.service_span_s, e.completed_per_s
    );
    s += &format!(
        "| created → completed p50 / p90 / p99 / max | {:.2} / {:.2} / {:.2} / {:.2} s |\n",
        c.p50_ms / 1000.0,
        c.p90_ms / 1000.0,
        c.p99_ms / 1000.0,
        c.max_ms / 1000.0
    );
    if !e.failure_messages.is_empty() {
        s += &format!("| failure messages | {:?} |\n", e.failure_messages);
    }
    if e.timed_out {
        s += "| drain | STOPPED BY --drain-timeout |\n";
    }
    let mem = &r.memory;
    s += "\n| modelgen RSS (MiB) | start | after create | after drain | after reads | final | peak (VmHWM) |\n";
    s += "|---|---|---|---|---|---|---|\n";
    s += &format!(
        "| | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
        mib(mem.start_kib),
        mib(mem.after_create_kib),
        mib(mem.after_drain_kib),
        mib(mem.after_reads_kib),
        mib(mem.final_kib),
        mib(mem.peak_kib)
    );
    let cpu = &r.cpu;
    s += "\n| CPU (user+sys) | create | drain | reads |\n|---|---|---|---|\n";
    s += &format!(
        "| modelgen, s | {:.1} | {:.1} | {:.1} |\n| load process (simulator + receiver + client), s | {:.1} | {:.1} | {:.1} |\n| whole machine busy, % of {} cores | {:.0} | {:.0} | {:.0} |\n",
        cpu.modelgen_create_s,
        cpu.modelgen_drain_s,
        cpu.modelgen_read_s,
        cpu.harness_create_s,
        cpu.harness_drain_s,
        cpu.harness_read_s,
        m.nproc,
        cpu.machine_busy_create_pct,
        cpu.machine_busy_drain_pct,
        cpu.machine_busy_read_pct
    );
    let u = &r.upstream;
    s += &format!(
        "\nupstream (simulator): {} submits, {} tasks, {} status polls ({:.2} per task), {} downloads, {} replays\n",
        u.submit_requests,
        u.tasks_created,
        u.status_requests,
        if u.tasks_created > 0 {
            u.status_requests as f64 / u.tasks_created as f64
        } else {
            0.0
        },
        u.image_downloads,
        u.idempotent_replays
    );
    let requests = u.submit_requests + u.status_requests;
    s += &format!(
        "upstream requests (submits + polls): {requests}, {:.2} per task; answered 429 by the simulator: {}\n",
        if u.tasks_created > 0 {
            requests as f64 / u.tasks_created as f64
        } else {
            0.0
        },
        u.rate_limited
    );
    s += &format!(
        "shutdown: exit {:?} after {:.2} s; service log {} bytes, {} WARN lines, {} ERROR lines\n",
        r.shutdown_exit_code, r.shutdown_s, r.log_bytes, r.log_warn_lines, r.log_error_lines
    );
    s += "service metrics at the end:\n";
    for l in &r.service_metrics {
        s += &format!("  {l}\n");
    }
    s
}

fn machine(loadavg_start: Vec<f64>) -> Machine {
    let mem_total_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024);
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, usize::from),
        mem_total_mib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        loadavg_start,
        loadavg_end: Vec::new(),
    }
}

fn default_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MODELGEN_BIN") {
        return PathBuf::from(p);
    }
    // A binary target lives in target/<profile>/, next to `modelgen`.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("modelgen")))
        .unwrap_or_else(|| PathBuf::from("modelgen"))
}

// ---- main --------------------------------------------------------------------

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.task_duration.is_nan() || args.task_duration < 0.0 {
        bail!("--task-duration must be a non-negative number of seconds");
    }
    let bin = args.bin.clone().unwrap_or_else(default_bin);
    if !bin.exists() {
        bail!(
            "{} is missing: build it first (`cargo build --release -p modelgen-api --bin modelgen`) or pass --bin",
            bin.display()
        );
    }
    let workdir = tempfile::Builder::new()
        .prefix("modelgen-load-")
        .tempdir()
        .context("creating the temp dir")?;
    let db = create_database(&args, workdir.path()).await?;
    let result = match args.mode {
        Mode::Load => run(&args, &bin, workdir.path(), &db)
            .await
            .map(|r| (render_text(&r), serde_json::to_vec_pretty(&r))),
        Mode::Burst => burst::run_burst(&args, &bin, workdir.path(), &db)
            .await
            .map(|r| (burst::render_burst(&r), serde_json::to_vec_pretty(&r))),
        Mode::Memory => memory::run_memory(&args, &bin, workdir.path(), &db)
            .await
            .map(|r| (memory::render_memory(&r), serde_json::to_vec_pretty(&r))),
    };
    drop_database(&db).await;
    if args.keep {
        let kept = workdir.keep();
        eprintln!("load: kept {}", kept.display());
    }
    let (text, json) = result?;
    println!("{text}");
    if let Some(out) = &args.out {
        let json = json?;
        std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("load: report written to {}", out.display());
    }
    Ok(())
}

async fn run(args: &Args, bin: &Path, workdir: &Path, db: &Database) -> anyhow::Result<Report> {
    let loadavg_start = loadavg();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let Stack {
        sim,
        receiver,
        mut service,
    } = start_stack(args, bin, workdir, db, &args.env).await?;
    let pid = service.pid;
    let base = service.base_url();
    eprintln!(
        "load: modelgen pid {pid} on {base} ({}), simulator {}, receiver {}",
        db.backend,
        sim.base_url(),
        receiver.url()
    );

    let ticks = clock_ticks();
    let cpu_child = || read_cpu(&pid.to_string(), ticks).unwrap_or(0.0);
    let cpu_self = || read_cpu("self", ticks).unwrap_or(0.0);
    let rss_now = || read_rss_kib(pid).map_or(0, |(rss, _)| rss);

    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(args.concurrency.max(1))
        .build()
        .context("building the HTTP client")?;
    let user = format!("load-{}", ulid::Ulid::generate().to_string().to_lowercase());
    let t0 = Instant::now();
    let sampler = RssSampler::start(pid, t0);
    let mut memory = Memory {
        start_kib: rss_now(),
        ..Memory::default()
    };
    let (c0, h0, m0) = (cpu_child(), cpu_self(), read_machine_cpu(ticks));

    // Phase 1: creates.
    eprintln!(
        "load: phase 1: {} creates at concurrency {}",
        args.requests, args.concurrency
    );
    let create = {
        let (client, url, user) = (
            client.clone(),
            format!("{base}/models/default"),
            user.clone(),
        );
        run_phase(
            args.requests,
            args.concurrency,
            Duration::from_secs_f64(args.phase_timeout.max(0.0)),
            move |i| create_one(client.clone(), url.clone(), user.clone(), i),
        )
        .await
    };
    let create_end = Instant::now();
    memory.after_create_kib = rss_now();
    let (c1, h1, m1) = (cpu_child(), cpu_self(), read_machine_cpu(ticks));

    // Phase 2: end-to-end.
    eprintln!(
        "load: phase 2: waiting for {} tasks and their callbacks",
        create.task_ids.len()
    );
    let end_to_end = drain(DrainInput {
        client: &client,
        base: &base,
        user: &user,
        receiver: &receiver,
        ids: &create.task_ids,
        t0,
        create_end,
        budget: Duration::from_secs_f64(args.drain_timeout.max(0.0)),
    })
    .await;
    memory.after_drain_kib = rss_now();
    let (c2, h2, m2) = (cpu_child(), cpu_self(), read_machine_cpu(ticks));

    // Phase 3: reads.
    eprintln!(
        "load: phase 3: {} reads at concurrency {}",
        args.reads, args.concurrency
    );
    let read = if create.task_ids.is_empty() {
        HttpPhase::default()
    } else {
        let ids = Arc::new(create.task_ids.clone());
        let (client, base) = (client.clone(), base.clone());
        run_phase(
            args.reads,
            args.concurrency,
            Duration::from_secs_f64(args.phase_timeout.max(0.0)),
            move |i| {
                let url = format!("{base}/tasks/{}", ids[i % ids.len()]);
                read_one(client.clone(), url)
            },
        )
        .await
    };
    memory.after_reads_kib = rss_now();
    let (c3, h3, m3) = (cpu_child(), cpu_self(), read_machine_cpu(ticks));

    let metrics_text = metrics_text(&client, &base).await;
    let samples = sampler.finish();
    memory.final_kib = samples.last().map_or_else(rss_now, |s| s.1);
    memory.peak_kib = read_rss_kib(pid)
        .map(|(_, hwm)| hwm)
        .into_iter()
        .chain(samples.iter().map(|s| s.2.max(s.1)))
        .max()
        .unwrap_or(0);
    memory.samples = samples.len();
    memory.timeline = samples.iter().map(|s| (s.0, s.1)).collect();
    let (exit_code, shutdown) = service.terminate().await;

    let log_text = std::fs::read_to_string(&service.log).unwrap_or_default();
    let upstream = sim.stats();
    receiver.stop().await;
    sim.stop().await;

    let mut machine = machine(loadavg_start);
    machine.loadavg_end = loadavg();
    Ok(Report {
        label: args.label.clone().unwrap_or_else(|| db.backend.to_string()),
        started_unix_s,
        machine,
        settings: Settings {
            backend: db.backend.into(),
            requests: args.requests,
            concurrency: args.concurrency,
            reads: args.reads,
            sim_task_duration_s: args.task_duration,
            sim_image_long_side: args.image_long_side,
            phase_timeout_s: args.phase_timeout,
            drain_timeout_s: args.drain_timeout,
            rust_log: args.rust_log.clone(),
            service_env: args.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            bin: bin.display().to_string(),
        },
        create,
        end_to_end,
        read,
        memory,
        cpu: Cpu {
            modelgen_create_s: c1 - c0,
            modelgen_drain_s: c2 - c1,
            modelgen_read_s: c3 - c2,
            harness_create_s: h1 - h0,
            harness_drain_s: h2 - h1,
            harness_read_s: h3 - h2,
            machine_busy_create_pct: busy_pct(m0, m1),
            machine_busy_drain_pct: busy_pct(m1, m2),
            machine_busy_read_pct: busy_pct(m2, m3),
        },
        upstream,
        service_metrics: kept_metrics(&metrics_text),
        shutdown_exit_code: exit_code,
        shutdown_s: shutdown.as_secs_f64(),
        log_bytes: log_text.len() as u64,
        log_warn_lines: log_text.lines().filter(|l| l.contains(" WARN ")).count(),
        log_error_lines: log_text.lines().filter(|l| l.contains(" ERROR ")).count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_the_service_format() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-29T11:35:33.123Z"),
            Some(1_795_952_133_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-03-01T00:00:00+00:00"),
            Some(1_709_251_200_000)
        );
        assert_eq!(parse_rfc3339_ms("2024-03-01T00:00:00"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&mut v);
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(summarize(&mut []).count, 0);
    }

    #[test]
    fn database_url_is_rewritten() {
        assert_eq!(
            url_with_database("postgres://postgres@127.0.0.1:5432/postgres", "x").ok(),
            Some("postgres://postgres@127.0.0.1:5432/x".into())
        );
        assert_eq!(
            url_with_database("postgres://u@localhost?sslmode=disable", "x").ok(),
            Some("postgres://u@localhost/x?sslmode=disable".into())
        );
        assert!(is_loopback_host("127.0.0.1") && is_loopback_host("[::1]"));
        assert!(!is_loopback_host("10.0.0.1"));
    }
}
