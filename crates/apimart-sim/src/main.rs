//! `apimart-sim`: runs the Apimart simulator as a standalone server until Ctrl-C.
//!
//! Prints `apimart-sim listening on http://127.0.0.1:PORT/v1` on stdout once bound, so
//! scripts can read the base URL (use it as `APIMART_BASE_URL`). Stops gracefully on
//! Ctrl-C or SIGTERM. With `--state-dir` its tasks survive a restart.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use apimart_sim::{ShapeMode, SimConfig, Simulator};
use clap::Parser;

/// Local stand-in for the Apimart image API (see the crate README for routes and faults).
#[derive(Debug, Parser)]
#[command(name = "apimart-sim", version)]
struct Args {
    /// Port to listen on (0 = any free port).
    #[arg(long, env = "APIMART_SIM_PORT", default_value_t = 8090)]
    port: u16,
    /// Address to bind; 0.0.0.0 to serve other containers.
    #[arg(long, env = "APIMART_SIM_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Time from submit to a terminal state, in milliseconds.
    #[arg(long, env = "APIMART_SIM_DURATION_MS", default_value_t = 3000)]
    duration_ms: u64,
    /// Reported `estimated_time`, in milliseconds (default: the duration).
    #[arg(long, env = "APIMART_SIM_ESTIMATED_MS")]
    estimated_ms: Option<u64>,
    /// Fraction (0..=1) of API requests answered with a random 500/502/503/429.
    #[arg(long, env = "APIMART_SIM_ERROR_RATE", default_value_t = 0.0, value_parser = rate)]
    error_rate: f64,
    /// Fraction (0..=1) of tasks that end `failed`.
    #[arg(long, env = "APIMART_SIM_FAIL_RATE", default_value_t = 0.0, value_parser = rate)]
    fail_rate: f64,
    /// Require exactly this bearer token (default: any non-empty token).
    #[arg(long, env = "APIMART_SIM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Validity of result URLs after completion, in seconds.
    #[arg(long, env = "APIMART_SIM_IMAGE_TTL_S", default_value_t = 24 * 3600)]
    image_ttl_s: u64,
    /// Response shapes: array, object or alternate.
    #[arg(long, env = "APIMART_SIM_SHAPE", default_value = "alternate")]
    shape: ShapeMode,
    /// Long side of result PNGs in pixels (16..=4096).
    #[arg(long, env = "APIMART_SIM_IMAGE_LONG_SIDE", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(16..=4096))]
    image_long_side: u32,
    /// Most API requests per second (submits, polls, balance reads); beyond it 429 with
    /// `Retry-After`. 0: no limit.
    #[arg(long, env = "APIMART_SIM_RATE_LIMIT", default_value_t = 0)]
    rate_limit: u32,
    /// Cost of one result image, in balance units (reported as `cost`; paid from the balance).
    #[arg(long, env = "APIMART_SIM_COST_PER_IMAGE", default_value_t = apimart_sim::DEFAULT_COST_PER_IMAGE,
          value_parser = money)]
    cost_per_image: f64,
    /// Starting balance of the simulated account, in balance units.
    #[arg(long, env = "APIMART_SIM_BALANCE", default_value_t = apimart_sim::DEFAULT_BALANCE,
          value_parser = money)]
    balance: f64,
    /// An unlimited quota instead of `--balance`.
    #[arg(long, env = "APIMART_SIM_UNLIMITED_QUOTA")]
    unlimited_quota: bool,
    /// Keep tasks, idempotency keys and results in this directory (SQLite file
    /// `apimart-sim.db`), so they survive a restart. Default: in memory only.
    #[arg(long, env = "APIMART_SIM_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

fn money(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=apimart_sim::MAX_MONEY).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not within 0..={}", apimart_sim::MAX_MONEY))
    }
}

fn rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not within 0..=1"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let task_duration = Duration::from_millis(args.duration_ms);
    let config = SimConfig {
        task_duration,
        estimated_time: args
            .estimated_ms
            .map_or(task_duration, Duration::from_millis),
        image_ttl: Duration::from_secs(args.image_ttl_s),
        error_rate: args.error_rate,
        fail_rate: args.fail_rate,
        api_key: args.api_key,
        response_shape: args.shape,
        image_long_side: args.image_long_side,
        rate_limit: NonZeroU32::new(args.rate_limit),
        cost_per_image: args.cost_per_image,
        balance: (!args.unlimited_quota).then_some(args.balance),
        balance_status: None,
    };
    let addr = SocketAddr::new(args.host, args.port);
    let sim = match &args.state_dir {
        Some(dir) => Simulator::start_persistent(config, addr, dir)
            .await
            .with_context(|| format!("starting on {addr} with state in {}", dir.display()))?,
        None => Simulator::start_on(config, addr)
            .await
            .with_context(|| format!("binding {addr}"))?,
    };
    println!("apimart-sim listening on {}", sim.base_url());
    stop_signal().await?;
    sim.stop().await;
    Ok(())
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM (what container runtimes send).
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("stop signal received, stopping");
    Ok(())
}
