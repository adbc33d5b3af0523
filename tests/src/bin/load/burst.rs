//! `load --mode burst` (`make burst`, docs/benchmarks.md "Bursts"): a burst of
//! creates from one user while another user keeps asking for single tasks.
//!
//! One `modelgen serve` (the same child process, database and simulator set-up
//! as the load mode), with `UPSTREAM_MAX_RPS=200` and `MAX_QUEUED_TASKS=10000`
//! unless `--env` says otherwise:
//! 1. **burst**: user A posts `--burst-requests` creates as fast as it can at
//!    `--burst-concurrency` connections, never retrying a refusal; each answer
//!    is 202 (accepted) or 429 (refused, with its `Retry-After`);
//! 2. **steady user**: from the start, user B posts one create every
//!    `--steady-every` seconds until A has no task left in `submitted` (its
//!    backlog is gone);
//! 3. **drain**: waits until every task of A and B is terminal; meanwhile
//!    `--reads` × `GET /tasks/{id}` right after the burst (during the drain),
//!    and the same again once everything is terminal (idle);
//! 4. lists every view of A and B for the terminal states and B's
//!    `created_at` → `submitted_at` latency (service clock).
//!
//! The simulator's request counters are sampled every second for the upstream
//! rate. The report is markdown, on stdout.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use modelgen_e2e::png_data_uri;
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    Args, Database, HttpPhase, LatencySummary, Outcome, RssSampler, Stack, body_profile,
    env_with_defaults, has_status, list_all, loadavg, mib, parse_rfc3339_ms, read_one,
    read_rss_kib, run_phase, start_stack, summarize, transport_kind,
};

/// Service settings of a burst run, before `--env` (which overrides them).
pub(super) const BURST_ENV: [(&str, &str); 2] =
    [("UPSTREAM_MAX_RPS", "200"), ("MAX_QUEUED_TASKS", "10000")];
/// How often the drain checks its users' tasks and samples the simulator.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What a burst run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct BurstReport {
    pub label: String,
    pub backend: String,
    pub loadavg_start: Vec<f64>,
    pub service_env: Vec<String>,
    pub sim_task_duration_s: f64,
    /// User A's creates.
    pub burst: HttpPhase,
    /// Creates refused with 429, and their `Retry-After` (seconds).
    pub refused: usize,
    pub retry_after_min_s: Option<u64>,
    pub retry_after_p50_s: Option<u64>,
    pub retry_after_max_s: Option<u64>,
    /// Other errors of A's creates (status or transport kind → count).
    pub burst_other_errors: BTreeMap<String, usize>,
    /// Seconds from the first create to the last answer of the burst.
    pub burst_s: f64,
    /// Seconds from the burst's end until A had no `submitted` task.
    pub backlog_gone_after_s: Option<f64>,
    /// Seconds from the burst's end until every task of A and B was terminal.
    pub all_terminal_after_s: Option<f64>,
    /// A's listed views by status.
    pub a_states: BTreeMap<String, usize>,
    /// B's creates: sent, accepted, and their views by status.
    pub b_sent: usize,
    pub b_accepted: usize,
    pub b_errors: BTreeMap<String, usize>,
    pub b_states: BTreeMap<String, usize>,
    /// B's `created_at` → `submitted_at`, milliseconds.
    pub b_create_to_submitted: LatencySummary,
    /// Failure messages of either user (message → count).
    pub failure_messages: BTreeMap<String, usize>,
    /// Upstream requests (submits + status polls) per second over the whole
    /// drain (first create → all terminal), and the busiest second.
    pub upstream_requests: u64,
    pub upstream_mean_rps: f64,
    pub upstream_peak_rps: f64,
    pub upstream_cap_rps: String,
    pub upstream_429: u64,
    pub upstream_tasks: u64,
    /// The pacer's rate at the end (`upstream_rate_limit_rps`).
    pub pacer_rate_end: Option<f64>,
    /// `GET /tasks/{id}` right after the burst, and once idle.
    pub reads_drain: HttpPhase,
    pub reads_idle: HttpPhase,
    pub peak_rss_kib: u64,
    pub log_database_locked: usize,
    pub log_warn_lines: usize,
    pub log_error_lines: usize,
    pub timed_out: bool,
}

/// User A's create: 202 is `Ok(id)`, a 429 is an error keyed
/// `429 retry_after=<secs>` so the refusals' `Retry-After` values can be
/// counted from the phase's error map.
async fn create_a(client: reqwest::Client, url: String, user: String, i: usize) -> Outcome {
    let seed = u32::try_from(i).unwrap_or(u32::MAX);
    let body = json!({
        "user_id": user,
        "user_image": png_data_uri(seed),
        "body_profile": body_profile(i),
    });
    match client.post(&url).json(&body).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let parsed: Value = match resp.json().await {
                Ok(v) => v,
                Err(e) => return Outcome::Err(format!("{status} body: {}", transport_kind(&e))),
            };
            match (status, parsed["data"]["task_id"].as_str()) {
                (202, Some(id)) => Outcome::Ok(Some(id.to_string())),
                (429, _) => Outcome::Err(format!(
                    "429 retry_after={}",
                    retry_after.as_deref().unwrap_or("none")
                )),
                _ => Outcome::Err(status.to_string()),
            }
        }
        Err(e) => Outcome::Err(transport_kind(&e)),
    }
}

/// Nearest-rank percentile of sorted `v`.
fn rank(v: &[u64], p: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let r = (p * v.len() as f64).ceil() as usize;
    Some(v[r.clamp(1, v.len()) - 1])
}

/// Splits A's error map into refusals (their `Retry-After` values, sorted)
/// and other errors.
fn refusals(errors: &BTreeMap<String, usize>) -> (Vec<u64>, usize, BTreeMap<String, usize>) {
    let mut retry_after = Vec::new();
    let mut refused = 0;
    let mut other = BTreeMap::new();
    for (k, n) in errors {
        match k.strip_prefix("429 retry_after=") {
            Some(v) => {
                refused += n;
                if let Ok(secs) = v.parse::<u64>() {
                    retry_after.extend(std::iter::repeat_n(secs, *n));
                }
            }
            None => {
                other.insert(k.clone(), *n);
            }
        }
    }
    retry_after.sort_unstable();
    (retry_after, refused, other)
}

/// The value of an unlabelled metric line `name value` in `/metrics`.
pub(super) fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Status counts and failure messages of `views`.
fn states(views: &[Value], failures: &mut BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for v in views {
        let status = v["status"].as_str().unwrap_or("?").to_string();
        if status == "failed" {
            let msg = v["error_message"].as_str().unwrap_or("").to_string();
            *failures.entry(msg).or_default() += 1;
        }
        *out.entry(status).or_default() += 1;
    }
    out
}

/// Whether `user` still has a task in `submitted` or `processing` (`None`
/// when a check failed).
async fn busy(client: &reqwest::Client, base: &str, user: &str) -> Option<bool> {
    let submitted = has_status(client, base, user, "submitted").await?;
    let processing = has_status(client, base, user, "processing").await?;
    Some(submitted || processing)
}

/// Runs one burst scenario on `db`.
pub(super) async fn run_burst(
    args: &Args,
    bin: &Path,
    workdir: &Path,
    db: &Database,
) -> anyhow::Result<BurstReport> {
    let loadavg_start = loadavg();
    let service_env = env_with_defaults(&BURST_ENV, &args.env);
    let Stack {
        sim,
        receiver,
        mut service,
    } = start_stack(args, bin, workdir, db, &service_env).await?;
    let pid = service.pid;
    let base = service.base_url();
    eprintln!(
        "burst: modelgen pid {pid} on {base} ({}), simulator {}",
        db.backend,
        sim.base_url()
    );
    let client = reqwest::Client::builder()
        .timeout(super::REQUEST_TIMEOUT)
        .pool_max_idle_per_host(args.burst_concurrency.max(args.concurrency).max(1))
        .build()
        .context("building the HTTP client")?;
    let suffix = ulid::Ulid::generate().to_string().to_lowercase();
    let (user_a, user_b) = (format!("burst-a-{suffix}"), format!("steady-b-{suffix}"));
    let t0 = Instant::now();
    let sampler = RssSampler::start(pid, t0);

    // The simulator's counters, every second, for the upstream rate.
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let upstream_samples: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
    let sampling = {
        let (stop, out, sim_addr) = (stop_sampling.clone(), upstream_samples.clone(), sim.addr());
        let client = client.clone();
        tokio::spawn(async move {
            let url = format!("http://{sim_addr}/_sim/stats");
            while !stop.load(Ordering::Relaxed) {
                if let Some(v) = super::get_json(&client, &url).await {
                    let n = v["submit_requests"].as_u64().unwrap_or(0)
                        + v["status_requests"].as_u64().unwrap_or(0);
                    if let Ok(mut s) = out.lock() {
                        s.push((t0.elapsed().as_secs_f64(), n));
                    }
                }
                tokio::time::sleep(CHECK_EVERY).await;
            }
        })
    };

    // User B: one create every `steady_every` seconds until A's backlog is gone.
    let stop_b = Arc::new(AtomicBool::new(false));
    let steady = {
        let (stop, client, url, user) = (
            stop_b.clone(),
            client.clone(),
            format!("{base}/models/default"),
            user_b.clone(),
        );
        let every = Duration::from_secs_f64(args.steady_every.max(0.1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut sent, mut accepted) = (0usize, 0usize);
            let mut errors: BTreeMap<String, usize> = BTreeMap::new();
            let mut i = 1_000_000usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                sent += 1;
                i += 1;
                match super::create_one(client.clone(), url.clone(), user.clone(), i).await {
                    Outcome::Ok(_) => accepted += 1,
                    Outcome::Err(k) => *errors.entry(k).or_default() += 1,
                }
            }
            (sent, accepted, errors)
        })
    };

    // User A: the burst.
    eprintln!(
        "burst: user A posts {} creates at {} connections",
        args.burst_requests, args.burst_concurrency
    );
    let burst = {
        let (client, url, user) = (
            client.clone(),
            format!("{base}/models/default"),
            user_a.clone(),
        );
        run_phase(
            args.burst_requests,
            args.burst_concurrency,
            Duration::from_secs_f64(args.phase_timeout.max(0.0)),
            move |i| create_a(client.clone(), url.clone(), user.clone(), i),
        )
        .await
    };
    let burst_end = Instant::now();
    let (retry_after, refused, other) = refusals(&burst.errors);
    eprintln!(
        "burst: {} accepted, {refused} refused in {:.1} s",
        burst.ok,
        burst_end.duration_since(t0).as_secs_f64()
    );

    // Reads while the backlog drains.
    let reads_for = |ids: Arc<Vec<String>>| {
        let (client, base) = (client.clone(), base.clone());
        run_phase(
            args.reads,
            args.concurrency,
            Duration::from_secs_f64(args.phase_timeout.max(0.0)),
            move |i| {
                let url = format!("{base}/tasks/{}", ids[i % ids.len().max(1)]);
                read_one(client.clone(), url)
            },
        )
    };
    let ids = Arc::new(burst.task_ids.clone());
    let reads_drain = if ids.is_empty() {
        HttpPhase::default()
    } else {
        reads_for(ids.clone()).await
    };

    // Drain: B stops when A has nothing left in `submitted`; the run waits
    // until both users' tasks are terminal.
    let deadline = burst_end + Duration::from_secs_f64(args.drain_timeout.max(0.0));
    let mut backlog_gone: Option<Instant> = None;
    let mut terminal: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let mut timed_out = false;
    loop {
        if backlog_gone.is_none()
            && has_status(&client, &base, &user_a, "submitted").await == Some(false)
        {
            backlog_gone = Some(Instant::now());
            stop_b.store(true, Ordering::Relaxed);
        }
        if backlog_gone.is_some()
            && steady.is_finished()
            && busy(&client, &base, &user_a).await == Some(false)
            && busy(&client, &base, &user_b).await == Some(false)
        {
            terminal = Some(Instant::now());
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            stop_b.store(true, Ordering::Relaxed);
            break;
        }
        if last_progress.elapsed() >= super::DRAIN_PROGRESS_EVERY {
            last_progress = Instant::now();
            let metrics = super::metrics_text(&client, &base).await;
            eprintln!(
                "burst: drain {:>5.0} s after the burst; queue depth {:?}, pacer {:?} req/s; A's backlog gone: {}",
                burst_end.elapsed().as_secs_f64(),
                metric_value(&metrics, "queue_depth"),
                metric_value(&metrics, "upstream_rate_limit_rps"),
                backlog_gone.is_some()
            );
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
    let (b_sent, b_accepted, b_errors) = steady.await.unwrap_or_default();
    let reads_idle = if ids.is_empty() {
        HttpPhase::default()
    } else {
        reads_for(ids.clone()).await
    };
    stop_sampling.store(true, Ordering::Relaxed);
    let _ = sampling.await;

    // Views, states and B's latency.
    let mut failure_messages = BTreeMap::new();
    let views_a = list_all(&client, &base, &user_a, burst.ok).await;
    let views_b = list_all(&client, &base, &user_b, b_accepted).await;
    let a_states = states(&views_a, &mut failure_messages);
    let b_states = states(&views_b, &mut failure_messages);
    let mut b_latency: Vec<f64> = views_b
        .iter()
        .filter_map(|v| {
            let c = v["created_at"].as_str().and_then(parse_rfc3339_ms)?;
            let s = v["submitted_at"].as_str().and_then(parse_rfc3339_ms)?;
            Some((s - c) as f64)
        })
        .collect();

    let metrics_text = super::metrics_text(&client, &base).await;
    let samples = sampler.finish();
    let peak_rss_kib = read_rss_kib(pid)
        .map(|(_, hwm)| hwm)
        .into_iter()
        .chain(samples.iter().map(|s| s.2.max(s.1)))
        .max()
        .unwrap_or(0);
    let _ = service.terminate().await;
    let log_text = std::fs::read_to_string(&service.log).unwrap_or_default();
    let stats = sim.stats();
    receiver.stop().await;
    sim.stop().await;

    let upstream = upstream_samples
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let peak = upstream
        .windows(2)
        .map(|w| (w[1].1 - w[0].1) as f64 / (w[1].0 - w[0].0).max(1e-3))
        .fold(0.0, f64::max);
    let requests = stats.submit_requests + stats.status_requests;
    let span = terminal.unwrap_or_else(Instant::now).duration_since(t0);
    Ok(BurstReport {
        label: args
            .label
            .clone()
            .unwrap_or_else(|| format!("burst-{}", db.backend)),
        backend: db.backend.to_string(),
        loadavg_start,
        service_env: service_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        sim_task_duration_s: args.task_duration,
        burst_s: burst_end.duration_since(t0).as_secs_f64(),
        refused,
        retry_after_min_s: retry_after.first().copied(),
        retry_after_p50_s: rank(&retry_after, 0.5),
        retry_after_max_s: retry_after.last().copied(),
        burst_other_errors: other,
        burst,
        backlog_gone_after_s: backlog_gone.map(|t| t.duration_since(burst_end).as_secs_f64()),
        all_terminal_after_s: terminal.map(|t| t.duration_since(burst_end).as_secs_f64()),
        a_states,
        b_sent,
        b_accepted,
        b_errors,
        b_states,
        b_create_to_submitted: summarize(&mut b_latency),
        failure_messages,
        upstream_requests: requests,
        upstream_mean_rps: requests as f64 / span.as_secs_f64().max(1e-3),
        upstream_peak_rps: peak,
        upstream_cap_rps: service_env
            .iter()
            .find(|(k, _)| k == "UPSTREAM_MAX_RPS")
            .map_or_else(|| "default".to_string(), |(_, v)| v.clone()),
        upstream_429: stats.rate_limited,
        upstream_tasks: stats.tasks_created,
        pacer_rate_end: metric_value(&metrics_text, "upstream_rate_limit_rps"),
        reads_drain,
        reads_idle,
        peak_rss_kib,
        log_database_locked: log_text
            .lines()
            .filter(|l| l.contains("database is locked"))
            .count(),
        log_warn_lines: log_text.lines().filter(|l| l.contains(" WARN ")).count(),
        log_error_lines: log_text.lines().filter(|l| l.contains(" ERROR ")).count(),
        timed_out,
    })
}

fn opt_secs(v: Option<f64>) -> String {
    v.map_or_else(|| "never".to_string(), |s| format!("{s:.1} s"))
}

fn opt_u(v: Option<u64>) -> String {
    v.map_or_else(|| "–".to_string(), |s| s.to_string())
}

fn counts(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report as markdown.
pub(super) fn render_burst(r: &BurstReport) -> String {
    let mut s = String::new();
    s += &format!("### {} ({})\n\n", r.label, r.backend);
    s += &format!(
        "Service env: {}; simulator tasks of {} s; load average at start {:?}.\n\n",
        r.service_env.join(" "),
        r.sim_task_duration_s,
        r.loadavg_start
    );
    s += "| | value |\n|---|---|\n";
    s += &format!(
        "| user A creates: accepted / refused (429) / other errors | {} / {} / {} |\n",
        r.burst.ok,
        r.refused,
        counts(&r.burst_other_errors)
    );
    s += &format!(
        "| burst: {} creates at {} req/s over {:.1} s, accepted p50 / p99 ms | {:.1} / {:.1} |\n",
        r.burst.attempted,
        (r.burst.attempted as f64 / r.burst_s.max(1e-3)).round(),
        r.burst_s,
        r.burst.latency.p50_ms,
        r.burst.latency.p99_ms
    );
    s += &format!(
        "| refusals' `Retry-After` min / p50 / max, s | {} / {} / {} |\n",
        opt_u(r.retry_after_min_s),
        opt_u(r.retry_after_p50_s),
        opt_u(r.retry_after_max_s)
    );
    s += &format!(
        "| A's backlog gone, after the burst's end | {} |\n",
        opt_secs(r.backlog_gone_after_s)
    );
    s += &format!(
        "| last accepted task terminal, after the burst's end | {}{} |\n",
        opt_secs(r.all_terminal_after_s),
        if r.timed_out {
            " (STOPPED BY --drain-timeout)"
        } else {
            ""
        }
    );
    s += &format!("| user A terminal states | {} |\n", counts(&r.a_states));
    s += &format!(
        "| user B creates: sent / accepted / errors | {} / {} / {} |\n",
        r.b_sent,
        r.b_accepted,
        counts(&r.b_errors)
    );
    s += &format!("| user B terminal states | {} |\n", counts(&r.b_states));
    let b = &r.b_create_to_submitted;
    s += &format!(
        "| user B create → submitted p50 / p99 / max, s ({} tasks) | {:.2} / {:.2} / {:.2} |\n",
        b.count,
        b.p50_ms / 1000.0,
        b.p99_ms / 1000.0,
        b.max_ms / 1000.0
    );
    if !r.failure_messages.is_empty() {
        s += &format!("| failure messages | {} |\n", counts(&r.failure_messages));
    }
    s += &format!(
        "| upstream requests (submits + polls) / tasks / per task | {} / {} / {:.2} |\n",
        r.upstream_requests,
        r.upstream_tasks,
        r.upstream_requests as f64 / (r.upstream_tasks.max(1)) as f64
    );
    s += &format!(
        "| upstream req/s: mean (first create → all terminal) / busiest second / cap | {:.1} / {:.0} / {} |\n",
        r.upstream_mean_rps, r.upstream_peak_rps, r.upstream_cap_rps
    );
    s += &format!(
        "| upstream 429s / pacer rate at the end, req/s | {} / {} |\n",
        r.upstream_429,
        r.pacer_rate_end
            .map_or_else(|| "–".to_string(), |v| format!("{v:.1}"))
    );
    for (name, p) in [
        ("during the drain", &r.reads_drain),
        ("idle", &r.reads_idle),
    ] {
        s += &format!(
            "| `GET /tasks/{{id}}` {name}: req/s, p50 / p99 ms, errors | {:.0}, {:.1} / {:.1}, {} |\n",
            p.ok_per_s,
            p.latency.p50_ms,
            p.latency.p99_ms,
            counts(&p.errors)
        );
    }
    s += &format!(
        "| `database is locked` lines / WARN / ERROR lines in the service log | {} / {} / {} |\n",
        r.log_database_locked, r.log_warn_lines, r.log_error_lines
    );
    s += &format!("| peak RSS (`VmHWM`) | {:.1} MiB |\n", mib(r.peak_rss_kib));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_split_from_other_errors() {
        let errors = BTreeMap::from([
            ("429 retry_after=3".to_string(), 2),
            ("429 retry_after=10".to_string(), 1),
            ("429 retry_after=none".to_string(), 1),
            ("503".to_string(), 4),
        ]);
        let (ra, refused, other) = refusals(&errors);
        assert_eq!(ra, vec![3, 3, 10]);
        assert_eq!(refused, 4);
        assert_eq!(other, BTreeMap::from([("503".to_string(), 4)]));
        assert_eq!(rank(&ra, 0.5), Some(3));
        assert_eq!(rank(&[], 0.5), None);
    }

    #[test]
    fn metric_values_are_read_from_unlabelled_lines() {
        let text = "# TYPE upstream_rate_limit_rps gauge\nupstream_rate_limit_rps 42.5\nupstream_rate_limit_rps_x 1\n";
        assert_eq!(metric_value(text, "upstream_rate_limit_rps"), Some(42.5));
        assert_eq!(metric_value(text, "queue_depth"), None);
    }
}
