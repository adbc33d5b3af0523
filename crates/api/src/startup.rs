//! Building and running the service: one constructor for `main` and the tests.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use apimart_client::{ApiKey, ApimartClient, ApimartConfig, RetryPolicy};
use apimart_sim::{SimConfig, SimHandle, Simulator};
use modelgen_callback::{CallbackSender, HttpCallbackSender, SenderConfig, SigningSecret};
use modelgen_domain::PromptTemplates;
use modelgen_persistence::{BlobStore, Database, ObjectBlobStore, PoolOptions};

use crate::admin::Admin;
use crate::alerts::Alerts;
use crate::config::Config;
use crate::engine::{Engine, EngineSettings};
use crate::health::{Heartbeat, Readiness, UpstreamHealth};
use crate::http::HttpState;
use crate::ports::{HttpImageFetcher, SystemClock};
use crate::privacy::Privacy;
use crate::service::TaskService;
use crate::telemetry;

/// Which parts of the service this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// HTTP API and workers.
    #[default]
    All,
    /// HTTP API only (scale the API apart from the workers).
    ApiOnly,
    /// Workers only; its HTTP port serves only `/healthz`, `/readyz` and
    /// `/metrics` (probes and scraping), never the API.
    WorkersOnly,
}

/// A built, not yet running service.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    /// The Apimart client and pause of the balance check, when one runs.
    balance_checks: Option<(Arc<ApimartClient>, Duration)>,
    upstream: UpstreamHealth,
    alerts: Alerts,
    token: CancellationToken,
    engine: Arc<Engine>,
    privacy: Arc<Privacy>,
    /// `INPUT_RETENTION` and `EVENT_RETENTION` (`None`: kept forever) and
    /// the sweep interval.
    retention: (Option<Duration>, Option<Duration>, Duration),
    role: Role,
    grace: Duration,
    sim: Option<SimHandle>,
    db: Database,
}

/// Identity written into leases: host, process id and a random suffix, so two
/// processes on one host never share leases.
fn worker_owner() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "modelgen".into());
    let suffix = ulid::Ulid::generate().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[20..])
}

/// Opens the blob store named by the config (`STORAGE_URL`, the `AWS_*` or
/// `OSS_*` settings), rendering local image URLs for the configured `PORT`
/// (the CLI; a serving process uses [`open_blob_store_with`] and its bound port).
///
/// # Errors
/// An unusable `STORAGE_URL`, S3 setting or URL mode, naming the variable.
pub fn open_blob_store(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    let storage = crate::storage::resolve(config)
        .map_err(|e| anyhow::anyhow!("storage configuration: {e}"))?;
    open_blob_store_with(config, &storage, config.port)
}

/// Opens the database named by the config (migrating when `auto_migrate`).
///
/// # Errors
/// Unreachable database, unsupported URL, failed migration.
pub async fn open_database(config: &Config) -> anyhow::Result<Database> {
    let db = Database::connect(
        &config.database_url,
        PoolOptions {
            max_connections: config.database_max_connections,
            acquire_timeout: Config::secs(config.database_acquire_timeout),
            connect_timeout: Config::secs(config.database_connect_timeout),
            statement_timeout: Config::secs(config.database_statement_timeout),
            call_timeout: Config::secs(config.database_call_timeout),
        },
    )
    .await
    .context("DATABASE_URL: cannot open the database")?;
    Ok(db)
}

/// Opens the blob store named by the config, with its URL mode (`bound_port`
/// is this process's HTTP port, 0 without one).
///
/// # Errors
/// An unusable `STORAGE_URL`, S3 setting or URL mode, naming the variable.
pub fn open_blob_store_with(
    config: &Config,
    storage: &crate::storage::Storage,
    bound_port: u16,
) -> anyhow::Result<Arc<dyn BlobStore>> {
    let store = match storage {
        crate::storage::Storage::Local { url } => {
            ObjectBlobStore::from_url(url).context("STORAGE_URL")?
        }
        crate::storage::Storage::S3 { settings, .. } => {
            ObjectBlobStore::s3(settings).context("STORAGE_URL (S3 settings)")?
        }
    };
    let mode = crate::storage::url_mode(config, storage, bound_port)
        .map_err(|e| anyhow::anyhow!("IMAGE_URL_MODE: {e}"))?;
    Ok(Arc::new(store.with_urls(mode).context("IMAGE_URL_MODE")?))
}

impl Application {
    /// Builds everything from `config`: database (migrated when
    /// `auto_migrate`), blob store, Apimart client (or the built-in simulator
    /// when no key is set), callback sender, engine and HTTP server bound to
    /// `host:port` (port 0 picks a free one).
    ///
    /// # Errors
    /// Any dependency that cannot be set up, with the setting to blame.
    pub async fn build(config: Config, role: Role) -> anyhow::Result<Application> {
        let metrics = telemetry::prometheus();
        let db = open_database(&config).await?;
        if config.auto_migrate {
            let applied = db.migrate().await.context("running migrations")?;
            if !applied.is_empty() {
                info!(migrations = ?applied, "migrations applied");
            }
        }
        let storage = crate::storage::resolve(&config)
            .map_err(|e| anyhow::anyhow!("storage configuration: {e}"))?;
        let prompts = Arc::new(match &config.prompt_templates_dir {
            Some(dir) => PromptTemplates::from_dir(std::path::Path::new(dir))
                .context("PROMPT_TEMPLATES_DIR")?,
            None => PromptTemplates::builtin(),
        });

        // Every role listens on HOST:PORT; a workers-only replica serves only
        // the probes and the metrics there (crate::http::configure_probes).
        let listener = TcpListener::bind((config.host.as_str(), config.port))
            .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
        let port = listener.local_addr()?.port();
        // Image URLs name the API's address: a workers-only replica's own port
        // serves no images (storage::warnings asks for PUBLIC_BASE_URL then).
        let url_port = if role == Role::WorkersOnly { 0 } else { port };
        let public_base_url = config.public_base_url(url_port);
        let blobs = open_blob_store_with(&config, &storage, url_port)?;
        for warning in crate::storage::warnings(&config, role) {
            warn!("{warning}");
        }

        let retry = RetryPolicy {
            max_attempts: config.retry_max_attempts,
            base_delay: Config::secs(config.retry_base_delay),
            max_delay: Config::secs(config.retry_max_delay),
            ..RetryPolicy::default()
        };
        let (api_key, base_url, sim) = match &config.apimart_api_key {
            Some(key) => (
                ApiKey::new(key.expose()),
                config.apimart_base_url.clone(),
                None,
            ),
            None if role == Role::ApiOnly => {
                (ApiKey::new("unused"), config.apimart_base_url.clone(), None)
            }
            None => {
                // Its state lives beside the service's data, so a restart finds the tasks
                // that the database says are running upstream.
                let state_dir = config.sim_state_path();
                let sim = Simulator::start_persistent(
                    SimConfig {
                        task_duration: Config::secs(config.sim_task_duration),
                        estimated_time: Config::secs(config.sim_task_duration),
                        rate_limit: std::num::NonZeroU32::new(config.sim_rate_limit),
                        ..SimConfig::default()
                    },
                    std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
                    &state_dir,
                )
                .await
                .with_context(|| {
                    format!(
                        "starting the built-in Apimart simulator (SIM_STATE_DIR={})",
                        state_dir.display()
                    )
                })?;
                warn!(
                    simulator.url = %sim.base_url(),
                    simulator.state_dir = %state_dir.display(),
                    "APIMART_API_KEY is not set: using the BUILT-IN APIMART SIMULATOR; images are synthetic. Set APIMART_API_KEY to use the real Apimart."
                );
                (ApiKey::new("simulator"), sim.base_url(), Some(sim))
            }
        };
        // Downloads reach public addresses, what OUTBOUND_ALLOWLIST names, and the
        // built-in simulator's own address (its result URLs), nothing more.
        let mut allowlist = config
            .outbound_allowlist()
            .map_err(|e| anyhow::anyhow!("OUTBOUND_ALLOWLIST: {e}"))?;
        if let Some(sim) = &sim {
            allowlist = allowlist.with_socket(sim.addr());
        }
        info!(outbound.allowlist = %allowlist, "outbound downloads allowed to internal addresses");
        let outbound = modelgen_outbound::OutboundPolicy::new(allowlist);
        let callback_outbound = outbound.clone();
        let pacer = crate::pacing::Pacer::new(config.upstream_pacing());
        let client = Arc::new(
            ApimartClient::new(
                ApimartConfig::new(api_key)
                    .with_base_url(base_url)
                    .with_timeout(Config::secs(config.http_timeout))
                    .with_retry(retry)
                    .with_user_agent(concat!("modelgen/", env!("CARGO_PKG_VERSION")))
                    // Every HTTP attempt (a 429 retried inside the client too)
                    // adjusts the pacer's rate, then is counted.
                    .with_observer(
                        pacer.observer(Some(Arc::new(crate::telemetry::UpstreamMetrics))),
                    ),
            )
            .context("APIMART_BASE_URL: cannot build the Apimart client")?,
        );
        // Only a process holding a real key (or the built-in simulator) asks for
        // the balance: an api-only replica without one has no account to watch.
        let balance_checks = match config.balance_check_interval() {
            Some(every) if config.apimart_api_key.is_some() || sim.is_some() => {
                Some((client.clone(), every))
            }
            _ => None,
        };
        let upstream = UpstreamHealth::default();
        let heartbeat = Heartbeat::default();

        let sender: Option<Arc<dyn CallbackSender>> = match &config.callback_url {
            Some(url) => {
                let signing_secret = match &config.callback_signing_secret {
                    Some(s) => {
                        Some(SigningSecret::parse(s.expose()).context("CALLBACK_SIGNING_SECRET")?)
                    }
                    None => None,
                };
                Some(Arc::new(
                    HttpCallbackSender::new(SenderConfig {
                        url: url.clone(),
                        token: config
                            .callback_token
                            .as_ref()
                            .map(|t| t.expose().to_string()),
                        signing_secret,
                        timeout: Config::secs(config.callback_timeout),
                        user_agent: concat!("modelgen/", env!("CARGO_PKG_VERSION")).into(),
                    })
                    .context("CALLBACK_URL: cannot build the callback sender")?,
                ))
            }
            None => None,
        };
        let callback_base = Config::secs(config.callback_base_delay);
        let callback_cap = Config::secs(config.callback_max_delay);
        let callback_max_attempts = config.callback_max_retries.unwrap_or_else(|| {
            modelgen_callback::attempts_for_horizon(
                callback_base,
                callback_cap,
                Config::secs(config.callback_horizon),
            )
        });

        let wake = Arc::new(Notify::new());
        let alerts = match &config.alert_webhook_url {
            Some(url) => Alerts::with_webhook(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .context("building the alert webhook client")?,
                url.clone(),
                Config::secs(config.alert_interval),
            ),
            None => Alerts::default(),
        };
        let generator = Arc::new(
            crate::pacing::PacedGenerator::new(client, pacer).with_health(upstream.clone()),
        );
        let repo = Arc::new(db.clone());
        let token = CancellationToken::new();
        let owner = worker_owner();
        let privacy = Arc::new(Privacy {
            tasks: repo.clone(),
            images: repo.clone(),
            retention: repo.clone(),
            blobs: blobs.clone(),
            clock: Arc::new(SystemClock),
            owner: owner.clone(),
            callbacks_enabled: sender.is_some(),
            events: repo.clone(),
        });
        let waiters = modelgen_engine::waiters::TaskWaiters::new(config.max_waiters);
        let engine = Arc::new(Engine {
            tasks: repo.clone(),
            images: repo.clone(),
            outbox: repo.clone(),
            blobs: blobs.clone(),
            generator,
            fetcher: Arc::new(HttpImageFetcher::new(
                Config::secs(config.http_timeout),
                outbound,
            )),
            sender: sender.clone(),
            clock: Arc::new(SystemClock),
            alerts: alerts.clone(),
            settings: EngineSettings {
                owner,
                lease: Config::secs(config.lease_seconds),
                step_timeout: config.step_timeout(),
                concurrency: config.worker_concurrency,
                batch_size: config.worker_batch_size,
                idle_interval: Config::secs(config.worker_idle_interval),
                poll_interval: Config::secs(config.task_poll_interval),
                poll_max_interval: Config::secs(config.task_poll_max_interval),
                task_timeout: Config::secs(config.task_timeout),
                queue_timeout: Config::secs(config.queue_timeout),
                model: config.apimart_model.clone(),
                max_result_image_bytes: config.max_result_image_bytes,
                result_pixel_budget: config.pixel_budget(),
                store_image_base64: config.image_base64_enabled(),
                callbacks_enabled: sender.is_some(),
                callback_max_attempts,
                callback_base_delay: callback_base,
                callback_max_delay: callback_cap,
            },
            wake: wake.clone(),
            callback_wake: Arc::new(Notify::new()),
            waiters: waiters.clone(),
            shutdown: token.clone(),
            interrupted: Arc::default(),
            heartbeat: heartbeat.clone(),
        });

        let admission = Arc::new(crate::admission::Admission::new(
            repo.clone(),
            Arc::new(SystemClock),
            config.max_queued_tasks(),
            config.upstream_pacing().start,
        ));
        let server = {
            {
                let state = web::Data::new(HttpState {
                    service: TaskService {
                        tasks: repo.clone(),
                        images: repo.clone(),
                        blobs: blobs.clone(),
                        prompts,
                        model: config.apimart_model.clone(),
                        max_image_bytes: config.max_image_bytes,
                        pixel_budget: config.pixel_budget(),
                        wake,
                        callbacks_enabled: sender.is_some(),
                        admission,
                        waiters,
                        shutdown: token.clone(),
                        max_wait: config.max_wait,
                        callback_urls: Arc::new(crate::callback_url::CallbackUrlPolicy::new(
                            config.callback_url_allowed_hosts(),
                            callback_outbound,
                        )),
                    },
                    blobs: blobs.clone(),
                    readiness: Readiness {
                        db: db.clone(),
                        blobs,
                        upstream: upstream.clone(),
                        heartbeat,
                        stall_timeout: Config::secs(config.worker_stall_timeout),
                    },
                    metrics,
                    auth_token: if config.auth_required() {
                        config.api_auth_token.clone()
                    } else {
                        None
                    },
                    max_body_bytes: config.max_body_bytes,
                    admin: Admin {
                        outbox: repo.clone(),
                    },
                    events: repo,
                    privacy: privacy.clone(),
                    serve_images: config.image_url_mode == crate::storage::ImageUrlMode::Public,
                    metrics_token: config.metrics_auth_token.clone(),
                });
                let probes_only = role == Role::WorkersOnly;
                HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .wrap(from_fn(crate::http::middleware))
                        .configure(if probes_only {
                            crate::http::configure_probes
                        } else {
                            crate::http::configure
                        })
                })
                .listen(listener)?
                .disable_signals()
                .shutdown_timeout(config.shutdown_grace.ceil() as u64)
                .run()
            }
        };
        info!(port, role = ?role, public_base_url = %public_base_url, storage = %storage.describe(),
            image_url_mode = ?config.image_url_mode, database = db.backend().as_str(), "modelgen built");
        Ok(Application {
            port,
            server,
            token,
            engine,
            privacy,
            retention: (
                config.input_retention(),
                config.event_retention(),
                Config::secs(config.retention_sweep_interval),
            ),
            balance_checks,
            upstream,
            alerts,
            role,
            grace: Config::secs(config.shutdown_grace),
            sim,
            db,
        })
    }

    /// The bound HTTP port (on workers-only: the probes' and metrics' port).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The engine (tests drive it step by step).
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// The database.
    pub fn database(&self) -> Database {
        self.db.clone()
    }

    /// The personal-data operations (tests run retention sweeps themselves).
    pub fn privacy(&self) -> Arc<Privacy> {
        self.privacy.clone()
    }

    /// Cancelling this token stops the service gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Runs until SIGINT/SIGTERM (or the shutdown token): then stops accepting
    /// connections, lets in-flight requests and worker steps finish within the
    /// grace period, releases leases and returns.
    ///
    /// # Errors
    /// When the HTTP server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tokio::spawn(watch_signals(self.token.clone()));
        let workers = self.role != Role::ApiOnly;
        self.run(workers).await
    }

    /// Serves HTTP only, without the background workers and without signal
    /// handling: tests drive the engine themselves through [`Application::engine`].
    ///
    /// # Errors
    /// When the HTTP server fails.
    pub async fn run_http_only(self) -> anyhow::Result<()> {
        self.run(false).await
    }

    async fn run(self, with_workers: bool) -> anyhow::Result<()> {
        let token = self.token.clone();
        let mut workers = Vec::new();
        if with_workers {
            workers.push(tokio::spawn(
                self.engine.clone().run_task_worker(token.clone()),
            ));
            workers.push(tokio::spawn(
                self.engine.clone().run_callback_worker(token.clone()),
            ));
            // Tasks created by other processes wake this one's task loop
            // (PostgreSQL LISTEN/NOTIFY; none on SQLite and MySQL).
            if let Some(announcements) = self.db.task_notifications() {
                workers.push(tokio::spawn(
                    self.engine
                        .clone()
                        .follow_wakeups(announcements, token.clone()),
                ));
            }
            let (inputs, events, interval) = self.retention;
            if inputs.is_some() || events.is_some() {
                workers.push(tokio::spawn(self.privacy.clone().run_retention(
                    inputs,
                    events,
                    interval,
                    token.clone(),
                )));
            }
        }
        // Tasks finished by other processes wake this one's waiting requests
        // (PostgreSQL LISTEN/NOTIFY; on SQLite and MySQL this process's own
        // changes wake them).
        if let Some(changes) = self.db.task_change_notifications() {
            workers.push(tokio::spawn(
                self.engine.waiters.clone().follow(changes, token.clone()),
            ));
        }
        // HTTP drain and worker drain run at the same time, both within one grace period.
        let cancelled_at = Arc::new(std::sync::OnceLock::new());
        {
            let token = token.clone();
            let cancelled_at = cancelled_at.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                let _ = cancelled_at.set(std::time::Instant::now());
            });
        }
        if let Some((client, every)) = self.balance_checks.clone() {
            workers.push(tokio::spawn(crate::health::run_balance_checks(
                client,
                self.upstream.clone(),
                self.alerts.clone(),
                every,
                token.clone(),
            )));
        }
        let server = self.server;
        let handle = server.handle();
        let stopper = token.clone();
        tokio::spawn(async move {
            stopper.cancelled().await;
            handle.stop(true).await;
        });
        server.await?;
        token.cancel();
        let spent = cancelled_at.get().map_or(Duration::ZERO, |t| t.elapsed());
        let all = futures_util::future::join_all(workers);
        if tokio::time::timeout(self.grace.saturating_sub(spent), all)
            .await
            .is_err()
        {
            warn!(
                "workers did not finish within the grace period; their leases expire on their own"
            );
        }
        if let Some(sim) = self.sim {
            sim.stop().await;
        }
        // Work cut off by the shutdown is expected: its leases expire, or
        // were released, and another run picks it up.
        info!(
            interrupted = self
                .engine
                .interrupted
                .load(std::sync::atomic::Ordering::Relaxed),
            "modelgen stopped"
        );
        Ok(())
    }
}

async fn watch_signals(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            warn!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received; shutting down"),
            _ = int.recv() => info!("SIGINT received; shutting down"),
            () = token.cancelled() => return,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = token.cancelled() => return,
        }
    }
    token.cancel();
}
