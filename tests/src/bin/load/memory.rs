//! `load --mode memory` (`make bench-memory`, docs/benchmarks.md "Memory"):
//! issue 8's two memory targets, measured on the `modelgen` child process.
//!
//! 1. **In flight** (`--memory-tasks` N, default 100 000; 0 skips it): one
//!    `modelgen serve` on the run's database against the in-process simulator,
//!    whose tasks last `--memory-task-duration` (3600 s), with
//!    `TASK_TIMEOUT` twice that, `MAX_QUEUED_TASKS=0` and
//!    `UPSTREAM_MAX_RPS=--memory-rps` (1000) unless `--env` says otherwise.
//!    N creates (a different tiny PNG each) at `--memory-concurrency` (16)
//!    connections; then a wait, at most `--memory-fill-timeout` from the first
//!    create, until the simulator has accepted every created task; then a
//!    window of `--memory-window` seconds with all of them running upstream:
//!    the child's resident set, its CPU time (`/proc/<pid>/stat`) and the
//!    status polls the simulator answered in it.
//! 2. **Large images** (`--memory-image-concurrency`, default `1,4`): for each
//!    K, twice: `modelgen serve --api-only` (the create request alone, no
//!    workers) and `modelgen serve` (the create, then the engine's submit, which
//!    sends the image upstream as a data URI). Each time a fresh database,
//!    simulator and service (shipped settings and `--env`), a warm-up of tiny
//!    creates, then the kernel's peak resident set is reset (`5` into
//!    `/proc/<pid>/clear_refs`) and K creates are sent at once, each carrying
//!    the same PNG of random pixels (stored deflate blocks, so it does not
//!    compress) of at most `--memory-image-bytes`. The peak (`VmHWM`, and a
//!    5 ms sampler of `VmRSS` beside it) is read when every create has
//!    answered and, with workers, again once the simulator has received the K
//!    submits. Reported: the peak over the baseline resident set, and that over
//!    K × the image's bytes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::json;

use super::{
    Args, Database, HttpPhase, Stack, body_profile, burst::metric_value, clock_ticks,
    create_database, create_one, drop_database, env_text, env_with_defaults, loadavg, metrics_text,
    mib, post_create, read_cpu, read_machine_cpu, read_rss_kib, run_phase, start_stack_with,
};

/// Tiny creates sent before a large-image baseline is taken.
const WARM_UP_CREATES: usize = 8;
/// Longest wait for the simulator to receive expected submits in part 2.
const SUBMIT_DEADLINE: Duration = Duration::from_secs(120);
/// Pause before a baseline is read, so the warm-up's work has settled.
const SETTLE: Duration = Duration::from_secs(2);
/// How often part 2 samples `VmRSS` beside the kernel's `VmHWM`.
const FAST_SAMPLE_EVERY: Duration = Duration::from_millis(5);
/// How often part 1 prints progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often part 1 checks the simulator's count of accepted tasks.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What `--mode memory` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct MemoryReport {
    pub label: String,
    pub backend: String,
    pub nproc: usize,
    pub loadavg_start: Vec<f64>,
    /// Part 1; `None` when skipped.
    pub in_flight: Option<InFlight>,
    /// Part 2; `None` when skipped.
    pub large_images: Option<LargeImages>,
}

/// Part 1: N tasks running upstream at once.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct InFlight {
    /// Creates asked for.
    pub tasks: usize,
    /// Service settings on top of the shipped ones.
    pub service_env: Vec<String>,
    /// The pacer's ceiling (`UPSTREAM_MAX_RPS`) of this run, requests/s.
    pub upstream_max_rps: String,
    pub sim_task_duration_s: f64,
    /// The creates (202 is ok; anything else is an error by status).
    pub create: HttpPhase,
    /// Tasks the simulator accepted when the window began.
    pub accepted_upstream: u64,
    /// Seconds from the first create until the simulator had accepted every
    /// created task; `None` when `--memory-fill-timeout` came first.
    pub all_in_flight_after_s: Option<f64>,
    /// Child `VmRSS`, KiB: at start, after the creates, when every task was in
    /// flight, mean and largest over the window, at its end.
    pub rss_start_kib: u64,
    pub rss_after_create_kib: u64,
    pub rss_all_in_flight_kib: u64,
    pub rss_window_mean_kib: u64,
    pub rss_window_max_kib: u64,
    pub rss_window_end_kib: u64,
    /// Child `VmHWM` at the window's end: the peak of the whole part.
    pub peak_kib: u64,
    /// The window, seconds, and what happened in it.
    pub window_s: f64,
    /// The child's user + system CPU time in the window, seconds, and that as a
    /// share of one core.
    pub cpu_s: f64,
    pub cpu_pct_of_core: f64,
    /// Status polls and submits the simulator answered in the window.
    pub polls: u64,
    pub submits: u64,
    /// This process (simulator, receiver, client) in the window: CPU seconds.
    pub harness_cpu_s: f64,
    /// Whole machine busy in the window, % of all cores.
    pub machine_busy_pct: f64,
    /// `upstream_rate_limit_rps` and `queue_depth` after the window.
    pub pacer_rate_end: Option<f64>,
    pub queue_depth_end: Option<f64>,
    pub log_warn_lines: usize,
    pub log_error_lines: usize,
    pub shutdown_exit_code: Option<i32>,
}

/// Part 2: creates with a large input image.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct LargeImages {
    /// The PNG: its bytes (what the service decodes from base64) and sides.
    pub image_bytes: usize,
    pub width: u32,
    pub height: u32,
    /// One create's JSON body, bytes (the image as base64 and the rest).
    pub body_bytes: usize,
    pub service_env: Vec<String>,
    pub runs: Vec<LargeImageRun>,
}

/// K concurrent large-image creates on a fresh service.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct LargeImageRun {
    pub k: usize,
    /// `serve --api-only` (no workers: the create alone) or `serve`.
    pub api_only: bool,
    /// Creates answered 202, and every other answer by status or failure kind.
    pub accepted: usize,
    pub other: BTreeMap<String, usize>,
    /// `K × image_bytes`.
    pub image_bytes_total: u64,
    /// Child `VmRSS` after the warm-up, when the peak was reset, KiB.
    pub baseline_kib: u64,
    /// Whether writing `/proc/<pid>/clear_refs` worked (else the 5 ms sampler's
    /// largest `VmRSS` is the peak).
    pub peak_reset: bool,
    /// Peak when every create had answered, and (with workers) once the
    /// simulator had received the K submits, KiB (`VmHWM`, or the sampler's
    /// when larger).
    pub peak_at_answers_kib: u64,
    pub peak_after_submits_kib: Option<u64>,
    /// Largest `VmRSS` the 5 ms sampler saw, KiB.
    pub sampled_max_kib: u64,
    /// With workers: whether the simulator received the K submits within its deadline.
    pub submitted_upstream: bool,
    /// Slowest create, milliseconds.
    pub slowest_create_ms: f64,
}

impl LargeImageRun {
    /// `peak − baseline` in MiB and, in brackets, that over `K × image bytes`,
    /// for a peak in KiB; `–` for none.
    fn delta_text(&self, peak_kib: Option<u64>) -> String {
        peak_kib.map_or_else(
            || "–".to_string(),
            |peak| {
                let delta = peak.saturating_sub(self.baseline_kib);
                let ratio = (delta * 1024) as f64 / (self.image_bytes_total.max(1)) as f64;
                format!("{:.1} ({ratio:.2})", mib(delta))
            },
        )
    }
}

/// Service settings of part 1, before `--env` (which overrides them).
fn in_flight_env(args: &Args) -> [(&'static str, String); 3] {
    [
        (
            "TASK_TIMEOUT",
            format!("{}", (2.0 * args.memory_task_duration).ceil()),
        ),
        ("MAX_QUEUED_TASKS", "0".into()),
        ("UPSTREAM_MAX_RPS", args.memory_rps.to_string()),
    ]
}

/// Runs both parts: part 1 on `db`, part 2 on fresh databases next to it.
pub(super) async fn run_memory(
    args: &Args,
    bin: &Path,
    workdir: &Path,
    db: &Database,
) -> anyhow::Result<MemoryReport> {
    if args.memory_task_duration.is_nan() || args.memory_task_duration <= 0.0 {
        bail!("--memory-task-duration must be a positive number of seconds");
    }
    let mut report = MemoryReport {
        label: args
            .label
            .clone()
            .unwrap_or_else(|| format!("memory-{}", db.backend)),
        backend: db.backend.to_string(),
        nproc: std::thread::available_parallelism().map_or(0, usize::from),
        loadavg_start: loadavg(),
        ..MemoryReport::default()
    };
    let client = reqwest::Client::builder()
        .timeout(super::REQUEST_TIMEOUT)
        .pool_max_idle_per_host(args.memory_concurrency.max(16))
        .build()
        .context("building the HTTP client")?;
    if args.memory_tasks > 0 {
        report.in_flight = Some(in_flight(args, bin, workdir, db, &client).await?);
    }
    if !args.memory_image_concurrency.is_empty() {
        report.large_images = Some(large_images(args, bin, workdir, &client).await?);
    }
    Ok(report)
}

/// Part 1.
async fn in_flight(
    args: &Args,
    bin: &Path,
    workdir: &Path,
    db: &Database,
    client: &reqwest::Client,
) -> anyhow::Result<InFlight> {
    let defaults = in_flight_env(args);
    let defaults: Vec<(&str, &str)> = defaults.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let service_env = env_with_defaults(&defaults, &args.env);
    let task_duration = Duration::from_secs_f64(args.memory_task_duration);
    let Stack {
        sim,
        receiver,
        mut service,
    } = start_stack_with(args, bin, workdir, db, &service_env, task_duration, &[]).await?;
    let (pid, base) = (service.pid, service.base_url());
    eprintln!(
        "memory: part 1: modelgen pid {pid} on {base} ({}); {} creates at {} connections",
        db.backend, args.memory_tasks, args.memory_concurrency
    );
    let ticks = clock_ticks();
    let t0 = Instant::now();
    let sampler = super::RssSampler::start(pid, t0);
    let rss_now = || read_rss_kib(pid).map_or(0, |(rss, _)| rss);
    let rss_start_kib = rss_now();
    let fill_budget = Duration::from_secs_f64(args.memory_fill_timeout.max(0.0));
    let deadline = t0 + fill_budget;

    // The creates, with a progress line every PROGRESS_EVERY.
    let creating = AtomicBool::new(true);
    let creates = async {
        let user = format!(
            "memory-{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        let (client, url) = (client.clone(), format!("{base}/models/default"));
        let phase = run_phase(
            args.memory_tasks,
            args.memory_concurrency,
            fill_budget,
            move |i| create_one(client.clone(), url.clone(), user.clone(), i),
        )
        .await;
        creating.store(false, Ordering::Relaxed);
        phase
    };
    let progress = async {
        let mut last = Instant::now();
        while creating.load(Ordering::Relaxed) {
            tokio::time::sleep(CHECK_EVERY).await;
            if last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                eprintln!(
                    "memory: {:>5.0} s: creating; {} accepted upstream, RSS {:.1} MiB",
                    t0.elapsed().as_secs_f64(),
                    sim.stats().tasks_created,
                    mib(rss_now())
                );
            }
        }
    };
    let (create, ()) = tokio::join!(creates, progress);
    let rss_after_create_kib = rss_now();
    eprintln!(
        "memory: {} creates accepted in {:.1} s ({:.0}/s), errors {:?}",
        create.ok, create.wall_s, create.ok_per_s, create.errors
    );

    // Until the simulator has accepted every created task.
    let wanted = create.ok as u64;
    let mut all_in_flight: Option<Instant> = None;
    let mut last = Instant::now();
    loop {
        if sim.stats().tasks_created >= wanted {
            all_in_flight = Some(Instant::now());
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            let metrics = metrics_text(client, &base).await;
            eprintln!(
                "memory: {:>5.0} s: {}/{wanted} accepted upstream; queue depth {:?}, pacer {:?} req/s, RSS {:.1} MiB",
                t0.elapsed().as_secs_f64(),
                sim.stats().tasks_created,
                metric_value(&metrics, "queue_depth"),
                metric_value(&metrics, "upstream_rate_limit_rps"),
                mib(rss_now())
            );
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
    let rss_all_in_flight_kib = rss_now();

    // The window: nothing but the service's own work (no scrapes).
    let window = Duration::from_secs_f64(args.memory_window.max(0.0));
    eprintln!(
        "memory: {} tasks in flight after {:.1} s; measuring for {:.0} s",
        sim.stats().tasks_created,
        t0.elapsed().as_secs_f64(),
        window.as_secs_f64()
    );
    let (s0, w0) = (sim.stats(), t0.elapsed().as_secs_f64());
    let (c0, h0, m0) = (
        read_cpu(&pid.to_string(), ticks),
        read_cpu("self", ticks),
        read_machine_cpu(ticks),
    );
    tokio::time::sleep(window).await;
    let (c1, h1, m1) = (
        read_cpu(&pid.to_string(), ticks),
        read_cpu("self", ticks),
        read_machine_cpu(ticks),
    );
    let (s1, w1) = (sim.stats(), t0.elapsed().as_secs_f64());
    let rss_window_end_kib = rss_now();
    let peak_kib = read_rss_kib(pid).map_or(0, |(_, hwm)| hwm);
    let metrics = metrics_text(client, &base).await;
    let samples = sampler.finish();
    let in_window: Vec<u64> = samples
        .iter()
        .filter(|s| s.0 >= w0 && s.0 <= w1)
        .map(|s| s.1)
        .collect();
    let (shutdown_exit_code, _) = service.terminate().await;
    let log_text = std::fs::read_to_string(&service.log).unwrap_or_default();
    receiver.stop().await;
    sim.stop().await;

    let window_s = w1 - w0;
    let cpu_s = match (c0, c1) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    Ok(InFlight {
        tasks: args.memory_tasks,
        service_env: service_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        upstream_max_rps: service_env
            .iter()
            .find(|(k, _)| k == "UPSTREAM_MAX_RPS")
            .map_or_else(|| "default".to_string(), |(_, v)| v.clone()),
        sim_task_duration_s: args.memory_task_duration,
        create,
        accepted_upstream: s0.tasks_created,
        all_in_flight_after_s: all_in_flight.map(|t| t.duration_since(t0).as_secs_f64()),
        rss_start_kib,
        rss_after_create_kib,
        rss_all_in_flight_kib,
        rss_window_mean_kib: if in_window.is_empty() {
            0
        } else {
            in_window.iter().sum::<u64>() / in_window.len() as u64
        },
        rss_window_max_kib: in_window.iter().copied().max().unwrap_or(0),
        rss_window_end_kib,
        peak_kib,
        window_s,
        cpu_s,
        cpu_pct_of_core: if window_s > 0.0 {
            100.0 * cpu_s / window_s
        } else {
            0.0
        },
        polls: s1.status_requests - s0.status_requests,
        submits: s1.submit_requests - s0.submit_requests,
        harness_cpu_s: match (h0, h1) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        },
        machine_busy_pct: super::busy_pct(m0, m1),
        pacer_rate_end: metric_value(&metrics, "upstream_rate_limit_rps"),
        queue_depth_end: metric_value(&metrics, "queue_depth"),
        log_warn_lines: log_text.lines().filter(|l| l.contains(" WARN ")).count(),
        log_error_lines: log_text.lines().filter(|l| l.contains(" ERROR ")).count(),
        shutdown_exit_code,
    })
}

/// A PNG of `side`² random 8-bit RGB pixels, unfiltered, in stored
/// (uncompressed) deflate blocks.
fn encode_noise(side: u32) -> anyhow::Result<Vec<u8>> {
    let mut pixels = vec![0_u8; side as usize * side as usize * 3];
    fastrand::Rng::with_seed(u64::from(side)).fill(&mut pixels);
    let mut out = Vec::with_capacity(pixels.len() + pixels.len() / 1000 + 1024);
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::NoCompression);
    encoder.set_filter(png::Filter::NoFilter);
    let mut writer = encoder.write_header().context("PNG header")?;
    writer.write_image_data(&pixels).context("PNG data")?;
    writer.finish().context("PNG end")?;
    Ok(out)
}

/// The largest square [`encode_noise`] PNG of at most `max_bytes`, and its side.
fn noise_png(max_bytes: usize) -> anyhow::Result<(Vec<u8>, u32)> {
    // Three bytes a pixel; the filter bytes, chunks and deflate framing add a little.
    let mut side = ((max_bytes / 3) as f64).sqrt() as u32;
    while side > 0 {
        let png = encode_noise(side)?;
        if png.len() <= max_bytes {
            return Ok((png, side));
        }
        let over = png.len() - max_bytes;
        side = side.saturating_sub(1 + u32::try_from(over / (3 * side as usize)).unwrap_or(side));
    }
    bail!("--memory-image-bytes {max_bytes} is too small for a PNG")
}

/// Part 2.
async fn large_images(
    args: &Args,
    bin: &Path,
    workdir: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<LargeImages> {
    let (png, side) = noise_png(args.memory_image_bytes)?;
    let image = modelgen_e2e::bombs::png_data_uri(&png);
    let mut out = LargeImages {
        image_bytes: png.len(),
        width: side,
        height: side,
        service_env: args.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        ..LargeImages::default()
    };
    drop(png);
    for &k in &args.memory_image_concurrency {
        for api_only in [true, false] {
            let shot = Shot { k, api_only };
            let dir = workdir.join(format!(
                "large-images-k{k}-{}",
                if api_only { "api" } else { "serve" }
            ));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let db = create_database(args, &dir).await?;
            let image = (image.as_str(), out.image_bytes);
            let run = large_image_run(args, bin, &dir, &db, client, image, shot).await;
            drop_database(&db).await;
            let (run, body_bytes) = run?;
            out.body_bytes = body_bytes;
            out.runs.push(run);
        }
    }
    Ok(out)
}

/// One service of part 2: K concurrent creates, with or without workers.
#[derive(Clone, Copy)]
struct Shot {
    k: usize,
    api_only: bool,
}

/// Waits until the simulator has accepted `n` tasks, at most `deadline`;
/// whether it did.
async fn until_accepted(sim: &apimart_sim::SimHandle, n: u64, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while sim.stats().tasks_created < n {
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// One `shot` of part 2 on a fresh service, with `image` (its data URI and its
/// decoded length); the run and one create's body length.
async fn large_image_run(
    args: &Args,
    bin: &Path,
    dir: &Path,
    db: &Database,
    client: &reqwest::Client,
    image: (&str, usize),
    shot: Shot,
) -> anyhow::Result<(LargeImageRun, usize)> {
    let (image, image_bytes) = image;
    let Shot { k, api_only } = shot;
    let task_duration = Duration::from_secs_f64(args.memory_task_duration);
    let serve_args: &[&str] = if api_only { &["--api-only"] } else { &[] };
    let Stack {
        sim,
        receiver,
        mut service,
    } = start_stack_with(args, bin, dir, db, &args.env, task_duration, serve_args).await?;
    let (pid, base) = (service.pid, service.base_url());
    let url = format!("{base}/models/default");
    let user = format!(
        "memory-k{k}-{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );

    // Warm-up: tiny creates, all submitted upstream (with workers), then a pause.
    let warm_up = {
        let (client, url, user) = (client.clone(), url.clone(), user.clone());
        run_phase(WARM_UP_CREATES, 4, super::REQUEST_TIMEOUT, move |i| {
            create_one(client.clone(), url.clone(), user.clone(), i)
        })
        .await
    };
    let warmed = warm_up.ok as u64;
    if !api_only {
        until_accepted(&sim, warmed, SUBMIT_DEADLINE).await;
    }
    tokio::time::sleep(SETTLE).await;

    let body = Arc::new(json!({
        "user_id": user,
        "user_image": image,
        "body_profile": body_profile(0),
    }));
    let body_bytes = serde_json::to_vec(body.as_ref()).map_or(0, |b| b.len());
    let peak_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let baseline_kib = read_rss_kib(pid).map_or(0, |(rss, _)| rss);
    let sampler = super::RssSampler::every(pid, Instant::now(), FAST_SAMPLE_EVERY);
    eprintln!(
        "memory: part 2: K={k} creates of {} bytes each, modelgen{} pid {pid}, baseline {:.1} MiB",
        body_bytes,
        if api_only { " --api-only" } else { "" },
        mib(baseline_kib)
    );
    let phase = {
        let (client, url) = (client.clone(), url.clone());
        run_phase(k, k, super::REQUEST_TIMEOUT, move |_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            async move { post_create(&client, &url, &body).await }
        })
        .await
    };
    let hwm_at_answers = read_rss_kib(pid).map_or(0, |(_, hwm)| hwm);
    let sampled_at_answers = sampler_max(&sampler);
    let submitted_upstream =
        !api_only && until_accepted(&sim, warmed + phase.ok as u64, SUBMIT_DEADLINE).await;
    let hwm_after_submits = read_rss_kib(pid).map_or(0, |(_, hwm)| hwm);
    let samples = sampler.finish();
    let sampled_max_kib = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let _ = service.terminate().await;
    receiver.stop().await;
    sim.stop().await;

    let pick = |hwm: u64, sampled: u64| {
        if peak_reset {
            hwm.max(sampled)
        } else {
            sampled
        }
    };
    let mut other = phase.errors.clone();
    if phase.attempted < k {
        *other.entry("not sent".into()).or_default() += k - phase.attempted;
    }
    let run = LargeImageRun {
        k,
        api_only,
        accepted: phase.ok,
        other,
        image_bytes_total: (k * image_bytes) as u64,
        baseline_kib,
        peak_reset,
        peak_at_answers_kib: pick(hwm_at_answers, sampled_at_answers),
        peak_after_submits_kib: (!api_only).then(|| pick(hwm_after_submits, sampled_max_kib)),
        sampled_max_kib,
        submitted_upstream,
        slowest_create_ms: phase.latency.max_ms,
    };
    eprintln!(
        "memory: K={k}: {} accepted; peak − baseline when answered {}, once submitted {}",
        run.accepted,
        run.delta_text(Some(run.peak_at_answers_kib)),
        run.delta_text(run.peak_after_submits_kib)
    );
    Ok((run, body_bytes))
}

/// Largest `VmRSS` a running sampler has seen so far, KiB.
fn sampler_max(sampler: &super::RssSampler) -> u64 {
    sampler
        .samples
        .lock()
        .map(|v| v.iter().map(|s| s.1).max().unwrap_or(0))
        .unwrap_or(0)
}

fn opt_s(v: Option<f64>) -> String {
    v.map_or_else(|| "never".to_string(), |s| format!("{s:.1} s"))
}

/// Part 1's table: `(label, value)` rows.
fn in_flight_rows(f: &InFlight) -> Vec<(&'static str, String)> {
    let or_dash = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.0}"));
    let per_s = |n: u64, secs: f64| n as f64 / secs.max(1e-3);
    vec![
        (
            "creates: sent / accepted (202) / other",
            format!(
                "{} / {} / {}",
                f.create.attempted,
                f.create.ok,
                super::errors_text(&f.create.errors)
            ),
        ),
        (
            "create rate, req/s (p50 / p99 ms)",
            format!(
                "{:.0} ({:.1} / {:.1})",
                f.create.ok_per_s, f.create.latency.p50_ms, f.create.latency.p99_ms
            ),
        ),
        (
            "all accepted upstream (running), after the first create (tasks, submits/s)",
            format!(
                "{} ({}, {:.0})",
                opt_s(f.all_in_flight_after_s),
                f.accepted_upstream,
                f.all_in_flight_after_s
                    .map_or(0.0, |t| per_s(f.accepted_upstream, t))
            ),
        ),
        (
            "RSS at start / after the creates / all in flight, MiB",
            format!(
                "{:.1} / {:.1} / {:.1}",
                mib(f.rss_start_kib),
                mib(f.rss_after_create_kib),
                mib(f.rss_all_in_flight_kib)
            ),
        ),
        (
            "RSS over the window: mean / max / at its end, MiB",
            format!(
                "{:.1} / {:.1} / {:.1}",
                mib(f.rss_window_mean_kib),
                mib(f.rss_window_max_kib),
                mib(f.rss_window_end_kib)
            ),
        ),
        (
            "**peak RSS (`VmHWM`), whole part, MiB**",
            format!("**{:.1}**", mib(f.peak_kib)),
        ),
        (
            "window, s; modelgen CPU in it: s / % of one core",
            format!(
                "{:.1}; {:.1} / {:.1}",
                f.window_s, f.cpu_s, f.cpu_pct_of_core
            ),
        ),
        (
            "upstream status polls in the window: total / per s / submits; pacer ceiling",
            format!(
                "{} / {:.0} / {}; {} req/s",
                f.polls,
                per_s(f.polls, f.window_s),
                f.submits,
                f.upstream_max_rps
            ),
        ),
        (
            "modelgen CPU per poll, ms",
            if f.polls > 0 {
                format!("{:.2}", 1000.0 * f.cpu_s / f.polls as f64)
            } else {
                "–".into()
            },
        ),
        (
            "load process (simulator + client) CPU s / whole machine busy % in the window",
            format!("{:.1} / {:.0}", f.harness_cpu_s, f.machine_busy_pct),
        ),
        (
            "pacer rate / queue depth after the window",
            format!(
                "{} / {}",
                or_dash(f.pacer_rate_end),
                or_dash(f.queue_depth_end)
            ),
        ),
        (
            "WARN / ERROR lines in the service log; exit code after SIGTERM",
            format!(
                "{} / {}; {:?}",
                f.log_warn_lines, f.log_error_lines, f.shutdown_exit_code
            ),
        ),
    ]
}

/// The report as markdown.
pub(super) fn render_memory(r: &MemoryReport) -> String {
    let mut s = format!(
        "### {} ({}, {} cores, load average at start {:?})\n\n",
        r.label, r.backend, r.nproc, r.loadavg_start
    );
    if let Some(f) = &r.in_flight {
        s += &format!(
            "**{} tasks in flight**: simulator tasks of {} s; service env: {}.\n\n",
            f.tasks,
            f.sim_task_duration_s,
            f.service_env.join(" ")
        );
        s += "| in flight | value |\n|---|---|\n";
        for (label, value) in in_flight_rows(f) {
            s += &format!("| {label} | {value} |\n");
        }
        s += "\n";
    }
    if let Some(l) = &r.large_images {
        s += &format!(
            "**Large images**: a {}×{} PNG of random pixels, {} bytes ({:.2} MiB; a create's body {} bytes); a fresh service for each K; service env: {}.\n\n",
            l.width,
            l.height,
            l.image_bytes,
            l.image_bytes as f64 / (1024.0 * 1024.0),
            l.body_bytes,
            env_text(&l.service_env)
        );
        s += "| K | service | accepted (202) / other | image bytes sent | baseline RSS, MiB | **peak − baseline when answered, MiB (ratio)** | peak − baseline once submitted upstream, MiB (ratio) | 5 ms sampler max, MiB | slowest create, ms |\n";
        s += "|---|---|---|---|---|---|---|---|---|\n";
        for run in &l.runs {
            s += &format!(
                "| {} | {} | {} / {} | {} | {:.1} | **{}** | {}{} | {:.1} | {:.0} |\n",
                run.k,
                if run.api_only {
                    "`serve --api-only`"
                } else {
                    "`serve`"
                },
                run.accepted,
                super::errors_text(&run.other),
                run.image_bytes_total,
                mib(run.baseline_kib),
                run.delta_text(Some(run.peak_at_answers_kib)),
                run.delta_text(run.peak_after_submits_kib),
                if run.api_only || run.submitted_upstream {
                    ""
                } else {
                    " (not all submits seen)"
                },
                mib(run.sampled_max_kib),
                run.slowest_create_ms
            );
        }
        s += "\nratio = (peak − baseline) / (K × image bytes); the target is < 3. `serve --api-only` runs no workers, so its peak is the create requests alone; with `serve` the engine submits the tasks upstream meanwhile (the image as a data URI in the body). The peak is the kernel's `VmHWM` after a reset through `/proc/<pid>/clear_refs`";
        s += if l.runs.iter().all(|r| r.peak_reset) {
            ".\n"
        } else {
            " where that worked, else the 5 ms sampler's largest `VmRSS`.\n"
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_noise_png_fits_its_budget_and_does_not_compress() {
        let budget = 200_000;
        let (png, side) = noise_png(budget).unwrap_or_default();
        assert!(png.len() <= budget, "{} bytes", png.len());
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        // Stored blocks: the file is the raw pixels and a little framing.
        let raw = side as usize * (side as usize * 3 + 1);
        assert!(
            png.len() >= raw && png.len() < raw + raw / 100 + 200,
            "{side}"
        );
        assert!(png.len() > budget * 99 / 100, "{} bytes", png.len());
    }
}
