//! A faithful local stand-in for the Apimart image API (routes and bodies as in APIMART.md /
//! docs.apimart.ai), for tests, demos, load runs, and for modelgen itself when no API key is
//! configured.
//!
//! * `POST /v1/images/generations` validates like upstream and answers `200 {"code":200,
//!   "data":…}` in either documented shape, honouring `Idempotency-Key`.
//! * `GET /v1/tasks/{id}` walks `pending` → `processing` → `completed`/`failed` with time.
//! * `GET /files/{id}/{n}.png` serves a real PNG composed from the request's images, until
//!   its `expires_at`.
//! * Faults on demand: `X-Sim-Fault: SPEC` or `[[sim:SPEC]]` in the prompt (see [`faults`]),
//!   the keys `sim-401`/`sim-402`, and random `error_rate`/`fail_rate`.
//! * `GET /_sim/stats`, `GET|POST /_sim/config` for scripts.
//!
//! The crate deliberately shares no code with `apimart-client`: it is an independent check
//! of the wire format.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use apimart_sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::default(), 0).await?;
//! println!("APIMART_BASE_URL={}", sim.base_url());
//! // … run the client against it …
//! assert_eq!(sim.stats().max_tasks_per_key, 1);
//! sim.stop().await;
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use serde::{Deserialize, Serialize};

mod config;
pub mod faults;
mod lifecycle;
mod render;
mod routes;
mod state;
mod validate;
mod wire;

pub use config::{
    ConfigError, ConfigPatch, ConfigView, MAX_IMAGE_LONG_SIDE, MAX_IMAGE_TTL, MAX_TASK_DURATION,
    MIN_IMAGE_LONG_SIDE, ShapeMode, SimConfig,
};
pub use faults::FaultSpec;
pub use render::BANNER_PROMPT_CHARS;
pub use routes::{
    IDEMPOTENCY_KEY, IDEMPOTENCY_REPLAYED, KEY_FORCE_401, KEY_FORCE_402, MAX_BODY_BYTES,
    MAX_IDEMPOTENCY_KEY_LEN,
};
pub use state::MAX_CACHED_IMAGE_BYTES;
pub use validate::{ASPECT_RATIOS, MAX_IMAGE_URLS, MAX_N, MAX_PROMPT_CHARS};
pub use wire::{ErrorStyle, RETRY_AFTER_SECS};

use state::Shared;

/// Worker threads of the simulator's HTTP server: handlers never block (drawing runs on
/// the blocking pool), so two keep up with load runs on a 2-core machine.
pub const SIM_WORKERS: usize = 2;
/// Seconds a graceful [`SimHandle::stop`] waits for in-flight requests (e.g. `slow=`
/// answers) before closing them.
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 2;

/// Counters since start, as served by `GET /_sim/stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SimStats {
    /// Every `POST /v1/images/generations` received (including faulted and rejected ones).
    pub submit_requests: u64,
    /// Distinct upstream tasks created.
    pub tasks_created: u64,
    /// Submits answered from an existing `Idempotency-Key` (same key, same body).
    pub idempotent_replays: u64,
    /// Submits that reused a key with a different body; answered 409 with an OpenAI-style
    /// error body (`type: idempotency_error`, `code: idempotency_key_reused`), no task.
    pub idempotency_conflicts: u64,
    /// Submits received without an `Idempotency-Key` header.
    pub submits_without_key: u64,
    /// Most tasks created under one idempotency key; stays 1 (0 before any keyed submit)
    /// when nothing was submitted twice.
    pub max_tasks_per_key: u64,
    /// Most tasks created from one identical body (JSON compared ignoring key order).
    /// A value above 1 reveals a double submit without (or with differing) keys, e.g.
    /// after a `lost=` fault, but it may be legitimate when a user repeats a request.
    #[serde(default)]
    pub max_tasks_per_body: u64,
    /// Every `GET /v1/tasks/{id}` received.
    pub status_requests: u64,
    /// Every `GET /files/…` received.
    pub image_downloads: u64,
    /// Faults injected: random (`error_rate`), per-request specs, `lost=`; not counting
    /// `fail_rate`/`fail` task outcomes, 401/402 keys or validation errors.
    pub faults_injected: u64,
}

/// Entry point: [`Simulator::start`].
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds `127.0.0.1:port` (0 = any free port), starts serving in the background on the
    /// current tokio (or actix) runtime, and returns at once.
    ///
    /// # Errors
    /// The bind error (port in use, …).
    pub async fn start(config: SimConfig, port: u16) -> std::io::Result<SimHandle> {
        Self::start_on(config, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
    }

    /// Like [`Simulator::start`] on any address, e.g. `0.0.0.0:8090` inside a container.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
        let listener = std::net::TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, local.port()));
        let data = web::Data::from(Arc::clone(&shared));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(routes::configure)
        })
        .workers(SIM_WORKERS)
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .listen(listener)?
        .run();
        let server_handle = server.handle();
        let join = tokio::spawn(server);
        tracing::info!(apimart_sim.addr = %local, "apimart simulator listening");
        Ok(SimHandle {
            addr: local,
            shared,
            server: server_handle,
            join,
        })
    }
}

/// A running simulator. Dropping it does not stop the server (it ends with the runtime);
/// call [`SimHandle::stop`] for a clean stop.
#[must_use = "the simulator keeps running; keep the handle to read stats and stop it"]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: actix_web::dev::ServerHandle,
    join: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// The bound port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT/v1`: includes `/v1`, like `APIMART_BASE_URL` (APIMART.md).
    /// A server bound to an unspecified address is reached through 127.0.0.1.
    #[must_use]
    pub fn base_url(&self) -> String {
        let ip = if self.addr.ip().is_unspecified() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            self.addr.ip()
        };
        format!("http://{}/v1", SocketAddr::new(ip, self.addr.port()))
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// The current configuration.
    #[must_use]
    pub fn config(&self) -> SimConfig {
        self.shared.config()
    }

    /// Replaces the configuration (sanitized, see [`SimConfig::sanitized`]). Rates and
    /// the API key apply to the next request; durations, TTL, shape and image size to
    /// tasks created afterwards.
    pub fn set_config(&self, config: SimConfig) {
        self.shared.set_config(config);
    }

    /// Stops accepting connections, lets in-flight requests finish (at most
    /// [`SHUTDOWN_TIMEOUT_SECS`]), and waits for the server to end.
    pub async fn stop(self) {
        self.server.stop(true).await;
        if let Ok(Err(e)) = self.join.await {
            tracing::warn!(error = %e, "apimart simulator ended with an error");
        }
    }
}
