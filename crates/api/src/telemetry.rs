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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
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

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
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
