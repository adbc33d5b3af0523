//! A faithful local stand-in for the Apimart image API (routes and bodies as in
//! docs/apimart.md), for tests, demos, load runs, and for modelgen itself when no API key is
//! configured.
//!
//! * `POST /v1/images/generations` validates like upstream and answers `200 {"code":200,
//!   "data":…}` in either documented shape, honouring `Idempotency-Key`.
//! * `GET /v1/tasks/{id}` walks `pending` → `processing` → `completed`/`failed` with time;
//!   a completed task reports its `cost` and `credits_cost`.
//! * `GET /v1/balance` (and `/v1/user/balance`) reports the account, which completed tasks
//!   pay for; a submit the account cannot pay for answers 402.
//! * `GET /files/{id}/{n}.png` serves a real PNG composed from the request's images, until
//!   its `expires_at`.
//! * Faults on demand: `X-Sim-Fault: SPEC` or `[[sim:SPEC]]` in the prompt (see [`faults`]),
//!   the keys `sim-401`/`sim-402`, random `error_rate`/`fail_rate`, and a rate limit
//!   ([`SimConfig::rate_limit`]) answering 429 with `Retry-After`.
//! * `GET /_sim/stats`, `GET|POST /_sim/config` for scripts.
//! * With a state directory ([`Simulator::start_persistent`]) tasks, keys and results
//!   survive a restart, and task clocks run on wall-clock time meanwhile.
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

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use serde::{Deserialize, Serialize};

mod config;
pub mod faults;
mod lifecycle;
mod render;
mod routes;
mod state;
mod store;
mod validate;
mod wire;

pub use config::{
    CREDITS_PER_UNIT, ConfigError, ConfigPatch, ConfigView, DEFAULT_BALANCE,
    DEFAULT_COST_PER_IMAGE, MAX_IMAGE_LONG_SIDE, MAX_IMAGE_TTL, MAX_MONEY, MAX_TASK_DURATION,
    MIN_IMAGE_LONG_SIDE, ShapeMode, SimConfig,
};
pub use faults::{BalanceFault, FaultSpec};
pub use render::BANNER_PROMPT_CHARS;
pub use routes::{
    IDEMPOTENCY_KEY, IDEMPOTENCY_REPLAYED, KEY_FORCE_401, KEY_FORCE_402, MAX_BODY_BYTES,
    MAX_IDEMPOTENCY_KEY_LEN,
};
pub use state::{MAX_CACHED_IMAGE_BYTES, MAX_STORED_BLOB_BYTES};
pub use store::{STATE_FILE, StoreError};
pub use validate::{ASPECT_RATIOS, MAX_IMAGE_URLS, MAX_N, MAX_PROMPT_CHARS};
pub use wire::{ErrorStyle, RETRY_AFTER_SECS};

use state::Shared;

/// Worker threads of the simulator's HTTP server: handlers never block (drawing runs on
/// the blocking pool), so two keep up with load runs on a 2-core machine.
pub const SIM_WORKERS: usize = 2;
/// Seconds a graceful [`SimHandle::stop`] waits for in-flight requests (e.g. `slow=`
/// answers) before closing them.
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 2;

/// Counters, as served by `GET /_sim/stats`. Request counters count since this process
/// started; `max_tasks_per_key` and `max_tasks_per_body` cover every task in the state, so
/// with a state directory the double-submit check spans restarts.
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
    /// Faults injected: random (`error_rate`), per-request specs, `lost=`, `garbled`; not
    /// counting `fail_rate`/`fail` task outcomes, 401/402 keys, validation errors or the
    /// rate limit.
    pub faults_injected: u64,
    /// Requests answered 429 by the rate limit ([`SimConfig::rate_limit`]).
    #[serde(default)]
    pub rate_limited: u64,
    /// Every `GET /v1/balance` or `/v1/user/balance` received.
    #[serde(default)]
    pub balance_requests: u64,
}

/// Why a simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The address could not be bound (port in use, …).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state directory cannot be used.
    #[error(transparent)]
    State(#[from] StoreError),
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
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, local.port()));
        serve(shared, listener, None)
    }

    /// Like [`Simulator::start_on`], keeping the state in `state_dir` (created when
    /// missing): tasks with their wall-clock timings, idempotency keys, fired one-shot
    /// faults, and the inputs or drawn results of tasks whose URLs are still valid, in one
    /// SQLite file ([`STATE_FILE`]). A simulator started again on the same directory
    /// answers for every task the earlier one created; a task whose time ran out while
    /// nothing was running is terminal on its first poll.
    ///
    /// With port 0 the simulator listens on the port it used last time when that port is
    /// free (so result URLs handed out before the restart keep working), else on any free
    /// port; result URLs are always built from the request's `Host`, so a poll after the
    /// restart reports URLs that work. A non-zero port is used as given.
    ///
    /// # Errors
    /// [`SimError::State`] when the directory cannot be created, is held by another
    /// simulator process ([`StoreError::Locked`]) or holds an unreadable state;
    /// [`SimError::Bind`] when the address cannot be bound.
    pub async fn start_persistent(
        config: SimConfig,
        addr: SocketAddr,
        state_dir: &Path,
    ) -> Result<SimHandle, SimError> {
        // Blocking, but once at start and short (one read of the task records).
        let mut store = store::Store::open(state_dir)?;
        let loaded = store.load()?;
        let bind = |a: SocketAddr| {
            TcpListener::bind(a).map_err(|source| SimError::Bind { addr: a, source })
        };
        let listener = match loaded.port {
            Some(last) if addr.port() == 0 => {
                bind(SocketAddr::new(addr.ip(), last)).or_else(|e| {
                    tracing::warn!(apimart_sim.port = last, error = %e, "the simulator's earlier port is taken; result URLs handed out before the restart will not resolve (a new poll reports working ones)");
                    bind(addr)
                })?
            }
            _ => bind(addr)?,
        };
        let local = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        let tasks = loaded.tasks.len();
        let shared = Arc::new(Shared::restore(config, local.port(), store, loaded)?);
        shared.remember_port()?;
        tracing::info!(apimart_sim.state = %state_dir.display(), tasks, "apimart simulator state loaded");
        serve(shared, listener, Some(state_dir.to_path_buf()))
            .map_err(|source| SimError::Bind { addr, source })
    }
}

fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    state_dir: Option<PathBuf>,
) -> std::io::Result<SimHandle> {
    let local = listener.local_addr()?;
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
        state_dir,
    })
}

/// A running simulator. Dropping it does not stop the server (it ends with the runtime);
/// call [`SimHandle::stop`] for a clean stop.
#[must_use = "the simulator keeps running; keep the handle to read stats and stop it"]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: actix_web::dev::ServerHandle,
    join: tokio::task::JoinHandle<std::io::Result<()>>,
    state_dir: Option<PathBuf>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// The bound port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where the state is kept (`None`: in memory only).
    #[must_use]
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// The address clients reach the simulator at (its result URLs too): the bound
    /// address, with 127.0.0.1 for a server bound to an unspecified address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        let ip = if self.addr.ip().is_unspecified() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            self.addr.ip()
        };
        SocketAddr::new(ip, self.addr.port())
    }

    /// `http://127.0.0.1:PORT/v1`: includes `/v1`, like `APIMART_BASE_URL` (docs/apimart.md).
    /// A server bound to an unspecified address is reached through 127.0.0.1.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr())
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
    /// [`SHUTDOWN_TIMEOUT_SECS`]), waits for the server to end, and closes the state (so
    /// another simulator may open the same directory at once).
    pub async fn stop(self) {
        self.server.stop(true).await;
        if let Ok(Err(e)) = self.join.await {
            tracing::warn!(error = %e, "apimart simulator ended with an error");
        }
        self.shared.close_store();
    }
}
