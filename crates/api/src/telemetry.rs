//! Logging and metrics setup.
//!
//! Logs go to standard output through a non-blocking, lossy writer
//! (`tracing-appender`): every log call only queues its line, and one
//! background thread writes the queue out. When the reader of the output is
//! slow or gone (`modelgen serve | head -3`, a stuck log shipper), lines are
//! dropped and counted in `log_lines_dropped_total{reason}`; the service goes
//! on and still stops on SIGTERM. A failed write is never reported on stderr
//! either (stderr is often the same broken pipe).

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Log lines queued for the writer thread before new ones are dropped: about
/// 8 MiB of typical lines, several seconds of the busiest logging.
pub const LOG_QUEUE_LINES: usize = 16_384;
/// Longest wait, at exit, for queued log lines to be written out.
pub const LOG_FLUSH_TIMEOUT: Duration = Duration::from_millis(1_500);

/// Lines the output refused (closed pipe, I/O error).
static LINES_FAILED: AtomicU64 = AtomicU64::new(0);
/// Lines dropped because the queue was full (the output is not being read).
static QUEUE_DROPS: OnceLock<ErrorCounter> = OnceLock::new();
/// Flushes and stops the writer thread when dropped.
static LOG_GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// Standard output (the service).
    Stdout,
    /// Standard error (commands whose standard output is their result).
    Stderr,
}

/// The output for the writer thread: a line the output refuses (closed
/// pipe, any I/O error) is counted and dropped, never returned as an error,
/// so nothing above it reports it (on a stderr that is likely broken too) or
/// retries it.
struct Lossy(LogOutput);

impl Write for Lossy {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = match self.0 {
            LogOutput::Stdout => io::stdout().lock().write_all(buf),
            LogOutput::Stderr => io::stderr().lock().write_all(buf),
        };
        if written.is_err() {
            LINES_FAILED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = match self.0 {
            LogOutput::Stdout => io::stdout().lock().flush(),
            LogOutput::Stderr => io::stderr().lock().flush(),
        };
        Ok(())
    }
}

/// Installs the tracing subscriber once per process, logging to standard
/// output (`RUST_LOG` filters, default `info`). Later calls are no-ops, so
/// tests can call it freely. Call [`flush_logs`] before the process exits.
pub fn init_logging(format: LogFormat) {
    init_logging_to(format, LogOutput::Stdout);
}

/// [`init_logging`] with the output chosen.
pub fn init_logging_to(format: LogFormat, output: LogOutput) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn,actix_web=warn"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = match output {
        LogOutput::Stdout => io::IsTerminal::is_terminal(&io::stdout()),
        LogOutput::Stderr => io::IsTerminal::is_terminal(&io::stderr()),
    };
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("modelgen-log")
        .finish(Lossy(output));
    let counter = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer)
        // Its own failure reports go to stderr with `eprintln!`, which panics
        // when stderr is a closed pipe.
        .log_internal_errors(false);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_ok() {
        let _ = QUEUE_DROPS.set(counter);
        if let Ok(mut slot) = LOG_GUARD.lock() {
            *slot = Some(guard);
        }
    }
}

/// Writes out the queued log lines, waiting [`LOG_FLUSH_TIMEOUT`] at most:
/// when the output is not being read the rest is dropped, and the process
/// exits anyway.
pub fn flush_logs() {
    let Some(guard) = LOG_GUARD.lock().ok().and_then(|mut slot| slot.take()) else {
        return;
    };
    // Dropping the guard waits for the writer thread, and may itself write
    // to a blocked stdout: do it on a thread that the exit does not wait for.
    let (done, wait) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("modelgen-log-flush".into())
        .spawn(move || {
            drop(guard);
            let _ = done.send(());
        });
    if spawned.is_ok() {
        let _ = wait.recv_timeout(LOG_FLUSH_TIMEOUT);
    }
}

/// Log lines lost so far, by reason: `queue_full` (the output is not read
/// fast enough) and `write_failed` (the output refused them, e.g. a closed
/// pipe). Exported as `log_lines_dropped_total{reason}`.
pub fn log_lines_dropped() -> [(&'static str, u64); 2] {
    let queued = QUEUE_DROPS
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX));
    [
        ("queue_full", queued),
        ("write_failed", LINES_FAILED.load(Ordering::Relaxed)),
    ]
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Histogram buckets (seconds) for every `*_seconds` metric: from 5 ms
/// (a fast HTTP answer) to 15 min (beyond the default task timeout).
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    900.0,
];

/// Describes every metric and creates the unlabelled counters at zero, so a
/// scrape shows them (with `# HELP`) before they first move: an operator
/// watching `upstream_submit_unknown_total` sees 0, not "no data".
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency"
    );
    describe_counter!("tasks_created_total", "Tasks created, by type");
    describe_counter!(
        "tasks_finished_total",
        "Tasks that reached a terminal state, by type, status and error kind"
    );
    describe_histogram!(
        "task_duration_seconds",
        Unit::Seconds,
        "Time from creation to terminal state"
    );
    describe_histogram!("task_polls", "Status polls per finished task");
    describe_gauge!(
        "tasks_in_flight",
        "Non-terminal tasks by status (read at scrape time)"
    );
    describe_gauge!(
        "queue_depth",
        "Tasks waiting to be submitted upstream, all replicas (read at most once per second)"
    );
    describe_gauge!(
        "queue_oldest_age_seconds",
        Unit::Seconds,
        "How long the oldest task waiting to be submitted has waited; 0 when none waits"
    );
    describe_gauge!(
        "queue_drain_rate",
        "Tasks accepted upstream per second over the last 60 s, all replicas"
    );
    describe_counter!(
        "tasks_refused_total",
        "Creates refused before anything was stored, by reason (queue_full: 429/1010)"
    );
    describe_counter!(
        "upstream_calls_total",
        "Logical Apimart calls (a submit or a status read, retries included) by endpoint and outcome"
    );
    describe_counter!(
        "upstream_http_attempts_total",
        "HTTP requests sent to Apimart (every attempt of every call) by endpoint and HTTP status"
    );
    describe_histogram!(
        "upstream_request_duration_seconds",
        Unit::Seconds,
        "Apimart call latency per logical call, retries included"
    );
    describe_counter!(
        "upstream_retries_total",
        "Retries made inside Apimart calls, by endpoint"
    );
    describe_counter!(
        "upstream_throttled_total",
        "Upstream calls that waited: for a pacing slot (rps_cap) or a 429's pause (rate_limited)"
    );
    describe_gauge!(
        "upstream_rate_limit_rps",
        "The upstream pacer's current rate, requests/s (adaptive, at most UPSTREAM_MAX_RPS)"
    );
    describe_counter!(
        "upstream_submit_unknown_total",
        "Submits whose outcome was unknown (re-sent with the same Idempotency-Key)"
    );
    describe_counter!("callback_deliveries_total", "Callback attempts by outcome");
    describe_counter!(
        "callbacks_dead_total",
        "Callbacks that used up their attempts"
    );
    describe_counter!("lease_claims_total", "Rows claimed under a lease, by kind");
    describe_gauge!("db_pool_connections", "Database pool connections by state");
    describe_gauge!(
        "db_pool_waiting",
        "Callers waiting for a database connection"
    );
    describe_gauge!(
        "db_writer_connections",
        "SQLite: the writer connection (0 or 1 in use)"
    );
    describe_gauge!(
        "db_writer_waiting",
        "SQLite: writes queued for the writer connection"
    );
    describe_counter!("alerts_total", "Alerts raised, by kind");
    describe_gauge!(
        "engine_loop_last_beat_seconds",
        "Seconds since each running engine loop (tasks, callbacks) last went round (read at scrape time); /healthz fails beyond WORKER_STALL_TIMEOUT"
    );
    describe_gauge!(
        "upstream_degraded",
        "1 while /readyz reports the upstream check (upstream_auth, upstream_balance) as degraded"
    );
    describe_counter!(
        "log_lines_dropped_total",
        "Log lines lost because the log output was full (queue_full) or refused them (write_failed)"
    );
    metrics::counter!("upstream_submit_unknown_total").increment(0);
    metrics::counter!("callbacks_dead_total").increment(0);
    for kind in [
        "unauthorized",
        "insufficient_balance",
        "balance_check_failed",
        "callback_dead",
    ] {
        metrics::counter!("alerts_total", "kind" => kind).increment(0);
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    describe_metrics();
                    handle
                }
                // Another recorder is installed (embedding process): render an empty one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Counts what the Apimart client reports: every HTTP attempt as
/// `upstream_http_attempts_total{endpoint,status}` (the HTTP status, or
/// `timeout`/`connect`/`transport`/… when no response arrived), and the
/// retries inside each call as `upstream_retries_total{endpoint}`. Logical
/// calls are counted by [`crate::pacing`] as `upstream_calls_total`.
pub struct UpstreamMetrics;

impl apimart_client::CallObserver for UpstreamMetrics {
    fn call_finished(
        &self,
        endpoint: apimart_client::Endpoint,
        attempts: u32,
        _error: Option<&apimart_client::ApimartError>,
    ) {
        if attempts > 1 {
            metrics::counter!("upstream_retries_total", "endpoint" => endpoint.as_str())
                .increment(u64::from(attempts - 1));
        }
    }

    fn attempt_finished(
        &self,
        endpoint: apimart_client::Endpoint,
        status: Option<u16>,
        error: Option<&apimart_client::ApimartError>,
    ) {
        let status = match (status, error) {
            (Some(code), _) => code.to_string(),
            (None, Some(e)) => crate::engine::upstream_error_kind(e).to_string(),
            (None, None) => "unknown".to_string(),
        };
        metrics::counter!("upstream_http_attempts_total", "endpoint" => endpoint.as_str(), "status" => status)
            .increment(1);
    }
}
