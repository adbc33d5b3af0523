//! Logging and metrics setup.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the tracing subscriber once per process (`RUST_LOG` filters,
/// default `info`). Later calls are no-ops, so tests can call it freely.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn,actix_web=warn"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
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
    describe_counter!(
        "upstream_requests_total",
        "Apimart calls by endpoint and final status"
    );
    describe_histogram!(
        "upstream_request_duration_seconds",
        Unit::Seconds,
        "Apimart call latency, retries included"
    );
    describe_counter!(
        "upstream_retries_total",
        "Retries made inside Apimart calls, by endpoint"
    );
    describe_counter!(
        "upstream_throttled_total",
        "Upstream calls delayed by the rate cap or a 429 pause"
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
    describe_counter!("alerts_total", "Alerts raised, by kind");
    metrics::counter!("upstream_submit_unknown_total").increment(0);
    metrics::counter!("callbacks_dead_total").increment(0);
    for kind in ["unauthorized", "insufficient_balance", "callback_dead"] {
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

/// Counts the Apimart client's in-call retries as `upstream_retries_total{endpoint}`.
pub struct UpstreamRetryMetrics;

impl apimart_client::CallObserver for UpstreamRetryMetrics {
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
}
