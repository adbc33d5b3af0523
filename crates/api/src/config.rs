//! The one typed configuration of the service.
//!
//! Loaded from, in order (later wins): built-in defaults, an optional TOML file
//! (`--config`), a `.env` file in the working directory, then environment
//! variables. Keys are the environment variable names in lower case (`port`,
//! `database_url` …); environment names are matched in any case, as the earlier
//! Python service did. The earlier service's variables (`DATABASE_URL`,
//! `APIMART_API_KEY`, `TASK_POLL_INTERVAL`, …) keep their meaning, and its
//! other variables are accepted and reported as ignored (see [`crate::legacy`]).
//! Booleans take the spellings it took (`True`, `false`, `1`, `yes`, `off` …).
//! Unknown keys in the file and bad values fail startup, naming the key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

/// A secret value: deserialized from any scalar, never printed (`Debug` and
/// `Serialize` show `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; only for the place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Scalar::deserialize(deserializer).map(|s| Secret(s.0))
    }
}

/// A string field that environment parsing may have turned into a number or
/// boolean (figment parses `APIMART_API_KEY=12345` as an integer).
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            S(String),
            I(i64),
            U(u64),
            F(f64),
            B(bool),
        }
        Ok(Scalar(match Any::deserialize(deserializer)? {
            Any::S(s) => s,
            Any::I(i) => i.to_string(),
            Any::U(u) => u.to_string(),
            Any::F(f) => f.to_string(),
            Any::B(b) => b.to_string(),
        }))
    }
}

fn opt_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?
        .map(|s| s.0)
        .filter(|s| !s.trim().is_empty()))
}

/// The spellings of `true` and `false` accepted in boolean settings, in any
/// ASCII case: those of pydantic, which read the earlier service's `.env`
/// (docs/legacy.md, "Configuration").
pub const TRUE_WORDS: [&str; 6] = ["true", "1", "yes", "on", "t", "y"];
/// See [`TRUE_WORDS`].
pub const FALSE_WORDS: [&str; 6] = ["false", "0", "no", "off", "f", "n"];

/// A boolean from a boolean, `0`/`1`, or one of [`TRUE_WORDS`]/[`FALSE_WORDS`];
/// `None` for a blank string.
fn parse_bool_like<E: serde::de::Error>(value: Scalar) -> Result<Option<bool>, E> {
    let t = value.0.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if TRUE_WORDS.iter().any(|w| w.eq_ignore_ascii_case(t)) {
        Ok(Some(true))
    } else if FALSE_WORDS.iter().any(|w| w.eq_ignore_ascii_case(t)) {
        Ok(Some(false))
    } else {
        Err(E::custom(format!(
            "`{}` is not a boolean; use true or false (also 1/0, yes/no, on/off, t/f, y/n, any case)",
            t.chars().take(32).collect::<String>()
        )))
    }
}

fn bool_like<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    parse_bool_like(Scalar::deserialize(d)?)?
        .ok_or_else(|| serde::de::Error::custom("is empty; use true or false"))
}

fn opt_bool_like<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Scalar>::deserialize(d)? {
        Some(v) => parse_bool_like(v),
        None => Ok(None),
    }
}

fn opt_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?
        .map(|s| s.0)
        .filter(|s| !s.trim().is_empty())
        .map(Secret))
}

/// Query parameters of database URLs whose values are settings, not
/// secrets: shown by `config check` (every other query value is `***`).
const PLAIN_QUERY_PARAMS: &[&str] = &[
    "charset",
    "collation",
    "sslmode",
    "ssl_mode",
    "ssl-mode",
    "connect_timeout",
    "application_name",
    "mode",
    "cache",
];

/// Serializes a URL with its password (if any) replaced by `***`, and the
/// values of its query parameters too, except known settings such as
/// `charset` ([`PLAIN_QUERY_PARAMS`]).
fn redact_url_password<S: serde::Serializer>(
    value: &str,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url::Url::parse(value) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            // Query values often carry tokens (`?token=…`, under any name):
            // only the values of known connection settings are shown.
            if u.query().is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let shown = if PLAIN_QUERY_PARAMS
                            .iter()
                            .any(|p| p.eq_ignore_ascii_case(&k))
                        {
                            v.into_owned()
                        } else {
                            "***".to_owned()
                        };
                        (k.into_owned(), shown)
                    })
                    .collect();
                let mut query = u.query_pairs_mut();
                query.clear();
                for (name, value) in pairs {
                    query.append_pair(&name, &value);
                }
                drop(query);
            }
            serializer.serialize_str(u.as_str())
        }
        Err(_) => serializer.serialize_str(value),
    }
}
/// As [`redact_url_password`], for optional URLs.
fn redact_opt_url_password<S: serde::Serializer>(
    value: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => redact_url_password(v, serializer),
        None => serializer.serialize_none(),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting of the service. Durations are in seconds (fractions allowed),
/// sizes in bytes. See the README's configuration table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Interface to listen on.
    pub host: String,
    /// TCP port; 0 picks a free one.
    pub port: u16,
    /// Where images are served from: modelgen's own address for `file://`
    /// storage (URLs `{public_base_url}/images/{key}`; default
    /// `http://{host}:{port}`), or the public address of the `STORAGE_URL`
    /// location (bucket and prefix; a CDN or public bucket) for `s3://`
    /// storage (URLs `{public_base_url}/{key}`; default the bucket's own URL).
    #[serde(deserialize_with = "opt_scalar")]
    pub public_base_url: Option<String>,
    /// `sqlite://path`, `postgres://…`, `mysql://…` (also the earlier service's
    /// `mysql+aiomysql://…?charset=utf8mb4`). Printed with its password redacted.
    #[serde(serialize_with = "redact_url_password")]
    pub database_url: String,
    /// Pool size.
    pub database_max_connections: usize,
    /// Seconds to wait for a pooled connection.
    pub database_acquire_timeout: f64,
    /// Seconds to open a database connection (or check a pooled one).
    pub database_connect_timeout: f64,
    /// Server-side limit of one statement and one lock wait, seconds
    /// (PostgreSQL `statement_timeout`/`lock_timeout`, SQLite busy timeout).
    pub database_statement_timeout: f64,
    /// Client-side bound of one database call, connection included, seconds;
    /// past it the call fails (503 on the request path).
    pub database_call_timeout: f64,
    /// Run pending migrations at startup.
    #[serde(deserialize_with = "bool_like")]
    pub auto_migrate: bool,
    /// `file://dir` (relative to the working directory), `file:///abs/dir` or
    /// `s3://bucket/prefix`; default `file://data/images`, or the earlier
    /// service's Aliyun OSS bucket when `OSS_ACCESS_KEY_ID` is set (see `storage`).
    #[serde(deserialize_with = "opt_scalar")]
    pub storage_url: Option<String>,
    /// Also keep each result image inline as base64 in `ai_generation_image.image_base64`.
    #[serde(deserialize_with = "opt_bool_like")]
    pub store_image_base64: Option<bool>,
    /// Alias of `store_image_base64`.
    #[serde(deserialize_with = "opt_bool_like")]
    pub image_base64: Option<bool>,
    /// `public` (`PUBLIC_BASE_URL`-based URLs) or `presigned` (time-limited S3 URLs).
    pub image_url_mode: crate::storage::ImageUrlMode,
    /// Lifetime of a presigned URL, seconds (1 to 604800).
    pub image_url_expiry: f64,
    /// Endpoint clients reach the S3 store at, when it differs from the one
    /// modelgen uses (written into presigned URLs and the default public base).
    #[serde(deserialize_with = "opt_scalar")]
    pub s3_public_endpoint: Option<String>,
    /// S3 endpoint (AWS SDK name); default AWS S3.
    #[serde(deserialize_with = "opt_scalar")]
    pub aws_endpoint_url: Option<String>,
    /// S3 endpoint (older spelling, as `object_store` reads it).
    #[serde(deserialize_with = "opt_scalar")]
    pub aws_endpoint: Option<String>,
    /// Signing region.
    #[serde(deserialize_with = "opt_scalar")]
    pub aws_region: Option<String>,
    /// Signing region when `AWS_REGION` is unset.
    #[serde(deserialize_with = "opt_scalar")]
    pub aws_default_region: Option<String>,
    /// S3 access key id.
    #[serde(deserialize_with = "opt_scalar")]
    pub aws_access_key_id: Option<String>,
    /// S3 secret access key.
    #[serde(deserialize_with = "opt_secret")]
    pub aws_secret_access_key: Option<Secret>,
    /// Session token of temporary S3 credentials.
    #[serde(deserialize_with = "opt_secret")]
    pub aws_session_token: Option<Secret>,
    /// `true`: `https://bucket.endpoint/key`; `false`: path style
    /// `https://endpoint/bucket/key`. Default: virtual-hosted on AWS S3, path
    /// style with a custom endpoint.
    #[serde(deserialize_with = "opt_bool_like")]
    pub aws_virtual_hosted_style_request: Option<bool>,
    /// Allow a plain `http://` S3 endpoint.
    #[serde(deserialize_with = "bool_like")]
    pub aws_allow_http: bool,
    /// The earlier service's Aliyun OSS endpoint (`oss-cn-shenzhen.aliyuncs.com`).
    #[serde(deserialize_with = "opt_scalar")]
    pub oss_endpoint: Option<String>,
    /// The earlier service's OSS bucket (default `suitme`, as there).
    #[serde(deserialize_with = "opt_scalar")]
    pub oss_bucket: Option<String>,
    /// The earlier service's OSS access key id; selects Aliyun OSS storage.
    #[serde(deserialize_with = "opt_scalar")]
    pub oss_access_key_id: Option<String>,
    /// The earlier service's OSS access key secret.
    #[serde(deserialize_with = "opt_secret")]
    pub oss_access_key_secret: Option<Secret>,
    /// When set, `GET /metrics` needs `Authorization: Bearer <token>`.
    #[serde(deserialize_with = "opt_secret")]
    pub metrics_auth_token: Option<Secret>,
    /// Apimart API key; when absent the built-in simulator is used.
    #[serde(deserialize_with = "opt_secret")]
    pub apimart_api_key: Option<Secret>,
    /// Apimart base URL including the version (`https://api.apimart.ai/v1`).
    #[serde(serialize_with = "redact_url_password")]
    pub apimart_base_url: String,
    /// Upstream model name.
    pub apimart_model: String,
    /// Timeout of one upstream HTTP request, seconds.
    pub http_timeout: f64,
    /// Attempts per upstream call (first try included).
    pub retry_max_attempts: u32,
    /// First retry delay, seconds.
    pub retry_base_delay: f64,
    /// Longest retry delay, seconds.
    pub retry_max_delay: f64,
    /// Base interval between status polls, seconds.
    pub task_poll_interval: f64,
    /// Longest interval between status polls, seconds.
    pub task_poll_max_interval: f64,
    /// A task still running upstream this many seconds after the upstream
    /// accepted it fails with `timeout`.
    pub task_timeout: f64,
    /// A task not yet accepted upstream this many seconds after it was
    /// created (or retried) fails with `queue_timeout` (default 24 h).
    pub queue_timeout: f64,
    /// Creates are refused (429/1010) while this many tasks wait to be
    /// submitted; `0`: no limit; unset: derived, see [`Config::max_queued_tasks`].
    pub max_queued_tasks: Option<u64>,
    /// Longest `GET /tasks/{task_id}?wait=N` (or `Prefer: wait=N`) hold,
    /// seconds; a longer wait asked for is cut to this (`MAX_WAIT`, default 60).
    pub max_wait: u64,
    /// Most requests held waiting for a task at once by this replica
    /// (`MAX_WAITERS`, default 10 000); past it a wait is answered at once.
    pub max_waiters: usize,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Largest accepted input image after base64 decoding, bytes.
    pub max_image_bytes: usize,
    /// Largest result image downloaded from upstream, bytes.
    pub max_result_image_bytes: usize,
    /// Addresses downloads may reach although they are loopback, private, link-local or
    /// otherwise internal (`OUTBOUND_ALLOWLIST`): IPs, CIDR blocks and IP:port entries,
    /// comma-separated (docs/outbound.md). Empty: only public addresses.
    #[serde(deserialize_with = "opt_scalar")]
    pub outbound_allowlist: Option<String>,
    /// Most pixels (width × height, as the image header declares them) of an
    /// input image or a downloaded result (`IMAGE_MAX_PIXELS`).
    pub image_max_pixels: u64,
    /// Most pixels on either side of an input image or a result (`IMAGE_MAX_SIDE`).
    pub image_max_side: u32,
    /// Directory whose `default.j2`/`edit.j2`/`outfit.j2` override the built-in prompts.
    #[serde(deserialize_with = "opt_scalar")]
    pub prompt_templates_dir: Option<String>,
    /// Where terminal tasks are POSTed; no callbacks when absent.
    #[serde(
        deserialize_with = "opt_scalar",
        serialize_with = "redact_opt_url_password"
    )]
    pub callback_url: Option<String>,
    /// Hosts a task's own `callback_url` may name (`CALLBACK_URL_ALLOWED_HOSTS`),
    /// comma-separated host names or IP addresses, compared case-insensitively;
    /// empty or unset: per-task callback URLs are refused (400/1001).
    #[serde(deserialize_with = "opt_scalar")]
    pub callback_url_allowed_hosts: Option<String>,
    /// Sent as `Authorization: Bearer` on callbacks.
    #[serde(deserialize_with = "opt_secret")]
    pub callback_token: Option<Secret>,
    /// Standard Webhooks secret (`whsec_…`); callbacks are signed when set.
    #[serde(deserialize_with = "opt_secret")]
    pub callback_signing_secret: Option<Secret>,
    /// Delivery attempts before a callback is `dead`; default: as many as fit `callback_horizon`.
    pub callback_max_retries: Option<u32>,
    /// How long failed callbacks keep being retried, seconds (default 24 h).
    pub callback_horizon: f64,
    /// First callback retry delay, seconds.
    pub callback_base_delay: f64,
    /// Longest callback retry delay, seconds.
    pub callback_max_delay: f64,
    /// Timeout of one callback request, seconds.
    pub callback_timeout: f64,
    /// Require `Authorization: Bearer API_AUTH_TOKEN`: `true` requires it,
    /// `false` never does (even with a token set, as in the earlier service),
    /// unset requires it whenever a token is set.
    #[serde(deserialize_with = "opt_bool_like")]
    pub api_auth_enabled: Option<bool>,
    /// The bearer token clients must send.
    #[serde(deserialize_with = "opt_secret")]
    pub api_auth_token: Option<Secret>,
    /// The ceiling of this replica's Apimart requests per second (submits and
    /// polls together). The pacer starts at 20 (or this, when lower), rises
    /// while Apimart answers and halves on a 429 (`crates/engine/src/pacing.rs`).
    pub upstream_max_rps: u32,
    /// Where alerts (Apimart 401/402, dead callbacks) are POSTed as JSON; none when absent.
    #[serde(
        deserialize_with = "opt_scalar",
        serialize_with = "redact_opt_url_password"
    )]
    pub alert_webhook_url: Option<String>,
    /// At most one alert webhook per kind per this many seconds.
    pub alert_interval: f64,
    /// Tasks worked on at once by this replica.
    pub worker_concurrency: usize,
    /// Tasks claimed per database round trip.
    pub worker_batch_size: i64,
    /// Lease length, seconds; a crashed replica's tasks resume after it.
    pub lease_seconds: f64,
    /// Longest a task step (upstream calls, input reads, result downloads)
    /// runs before it is interrupted and the task snoozed, seconds; `0` (the
    /// default) means the lease minus a fifth.
    pub step_timeout: f64,
    /// How often idle workers look for due work, seconds.
    pub worker_idle_interval: f64,
    /// `/healthz` answers 503 when an engine loop (tasks, callbacks) of this
    /// process has not gone round for this many seconds (crate::health::Heartbeat).
    pub worker_stall_timeout: f64,
    /// Seconds between two reads of the Apimart balance (`GET /v1/balance`),
    /// whose failure `/readyz` reports as degraded; 0 turns the check off.
    pub balance_check_interval: f64,
    /// Task duration of the built-in simulator, seconds.
    pub sim_task_duration: f64,
    /// Where the built-in simulator keeps its tasks across restarts; default: see
    /// [`Config::sim_state_path`].
    #[serde(deserialize_with = "opt_scalar")]
    pub sim_state_dir: Option<String>,
    /// Requests per second the built-in simulator accepts before answering 429 (0: no limit).
    pub sim_rate_limit: u32,
    /// Seconds to finish in-flight work after SIGTERM.
    pub shutdown_grace: f64,
    /// Seconds after a task ends before its uploaded input images are
    /// deleted (default 7 days); 0 keeps them forever.
    pub input_retention: f64,
    /// Seconds between two sweeps of the input retention cleanup.
    pub retention_sweep_interval: f64,
    /// Seconds a task timeline entry (`GET /tasks/{task_id}/events`) is kept
    /// after it was written (default 30 days); 0 keeps them forever. Swept
    /// with the input retention cleanup, every `RETENTION_SWEEP_INTERVAL`.
    pub event_retention: f64,
    /// `text` or `json`.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 8000,
            public_base_url: None,
            database_url: "sqlite://data/modelgen.db".into(),
            database_max_connections: 10,
            database_acquire_timeout: 5.0,
            database_connect_timeout: 2.0,
            database_statement_timeout: 3.0,
            database_call_timeout: 5.0,
            auto_migrate: true,
            storage_url: None,
            store_image_base64: None,
            image_base64: None,
            image_url_mode: crate::storage::ImageUrlMode::Public,
            image_url_expiry: 3600.0,
            s3_public_endpoint: None,
            aws_endpoint_url: None,
            aws_endpoint: None,
            aws_region: None,
            aws_default_region: None,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            aws_session_token: None,
            aws_virtual_hosted_style_request: None,
            aws_allow_http: false,
            oss_endpoint: None,
            oss_bucket: None,
            oss_access_key_id: None,
            oss_access_key_secret: None,
            metrics_auth_token: None,
            apimart_api_key: None,
            apimart_base_url: "https://api.apimart.ai/v1".into(),
            apimart_model: "gemini-2.5-flash-image-preview".into(),
            http_timeout: 30.0,
            retry_max_attempts: 5,
            retry_base_delay: 1.0,
            retry_max_delay: 32.0,
            task_poll_interval: 2.0,
            task_poll_max_interval: 30.0,
            task_timeout: 600.0,
            queue_timeout: 24.0 * 3600.0,
            max_queued_tasks: None,
            max_wait: 60,
            max_waiters: 10_000,
            max_body_bytes: 32 * 1024 * 1024,
            max_image_bytes: 10 * 1024 * 1024,
            max_result_image_bytes: 30 * 1024 * 1024,
            outbound_allowlist: None,
            image_max_pixels: modelgen_domain::DEFAULT_MAX_PIXELS,
            image_max_side: modelgen_domain::DEFAULT_MAX_SIDE,
            prompt_templates_dir: None,
            callback_url: None,
            callback_url_allowed_hosts: None,
            callback_token: None,
            callback_signing_secret: None,
            callback_max_retries: None,
            callback_horizon: 24.0 * 3600.0,
            callback_base_delay: 2.0,
            callback_max_delay: 3600.0,
            callback_timeout: 10.0,
            api_auth_enabled: None,
            api_auth_token: None,
            upstream_max_rps: 100,
            alert_webhook_url: None,
            alert_interval: 300.0,
            worker_concurrency: 16,
            worker_batch_size: 32,
            lease_seconds: 60.0,
            step_timeout: 0.0,
            worker_idle_interval: 0.5,
            worker_stall_timeout: 120.0,
            balance_check_interval: 60.0,
            sim_task_duration: 3.0,
            sim_state_dir: None,
            sim_rate_limit: 0,
            shutdown_grace: 30.0,
            input_retention: 7.0 * 24.0 * 3600.0,
            retention_sweep_interval: 300.0,
            event_retention: 30.0 * 24.0 * 3600.0,
            log_format: LogFormat::Text,
        }
    }
}

/// The environment variables read (upper-case field names).
pub const ENV_KEYS: &[&str] = &[
    "HOST",
    "PORT",
    "PUBLIC_BASE_URL",
    "DATABASE_URL",
    "DATABASE_MAX_CONNECTIONS",
    "DATABASE_ACQUIRE_TIMEOUT",
    "DATABASE_CONNECT_TIMEOUT",
    "DATABASE_STATEMENT_TIMEOUT",
    "DATABASE_CALL_TIMEOUT",
    "AUTO_MIGRATE",
    "STORAGE_URL",
    "STORE_IMAGE_BASE64",
    "IMAGE_BASE64",
    "IMAGE_URL_MODE",
    "IMAGE_URL_EXPIRY",
    "S3_PUBLIC_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
    "AWS_ALLOW_HTTP",
    "OSS_ENDPOINT",
    "OSS_BUCKET",
    "OSS_ACCESS_KEY_ID",
    "OSS_ACCESS_KEY_SECRET",
    "METRICS_AUTH_TOKEN",
    "APIMART_API_KEY",
    "APIMART_BASE_URL",
    "APIMART_MODEL",
    "HTTP_TIMEOUT",
    "RETRY_MAX_ATTEMPTS",
    "RETRY_BASE_DELAY",
    "RETRY_MAX_DELAY",
    "TASK_POLL_INTERVAL",
    "TASK_POLL_MAX_INTERVAL",
    "TASK_TIMEOUT",
    "QUEUE_TIMEOUT",
    "MAX_QUEUED_TASKS",
    "MAX_WAIT",
    "MAX_WAITERS",
    "MAX_BODY_BYTES",
    "MAX_IMAGE_BYTES",
    "MAX_RESULT_IMAGE_BYTES",
    "OUTBOUND_ALLOWLIST",
    "IMAGE_MAX_PIXELS",
    "IMAGE_MAX_SIDE",
    "PROMPT_TEMPLATES_DIR",
    "CALLBACK_URL",
    "CALLBACK_URL_ALLOWED_HOSTS",
    "CALLBACK_TOKEN",
    "CALLBACK_SIGNING_SECRET",
    "CALLBACK_MAX_RETRIES",
    "CALLBACK_HORIZON",
    "CALLBACK_BASE_DELAY",
    "CALLBACK_MAX_DELAY",
    "CALLBACK_TIMEOUT",
    "API_AUTH_ENABLED",
    "API_AUTH_TOKEN",
    "UPSTREAM_MAX_RPS",
    "ALERT_WEBHOOK_URL",
    "ALERT_INTERVAL",
    "WORKER_CONCURRENCY",
    "WORKER_BATCH_SIZE",
    "LEASE_SECONDS",
    "STEP_TIMEOUT",
    "WORKER_IDLE_INTERVAL",
    "WORKER_STALL_TIMEOUT",
    "BALANCE_CHECK_INTERVAL",
    "SIM_TASK_DURATION",
    "SIM_STATE_DIR",
    "SIM_RATE_LIMIT",
    "SHUTDOWN_GRACE",
    "INPUT_RETENTION",
    "RETENTION_SWEEP_INTERVAL",
    "EVENT_RETENTION",
    "LOG_FORMAT",
];

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value could not be read (wrong type, unknown key in the file…); the
    /// message names the key.
    #[error("configuration error: {0}")]
    Load(String),
    /// Values that parse but do not make sense together.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Defaults, then `file` (TOML) when given, then `.env`, then the environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        // A missing .env is normal; a malformed one is worth a loud failure.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(ConfigError::Load(format!(".env: {e}"))),
        }
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        Self::from_figment(figment.merge(Env::raw().only(ENV_KEYS)))
    }

    /// Extracts and checks a config from any figment (tests build their own).
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key.
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            let errors: Vec<String> = e
                .into_iter()
                .map(|err| {
                    let key = err.path.join(".").to_uppercase();
                    if key.is_empty() {
                        err.kind.to_string()
                    } else {
                        format!("{key}: {}", err.kind)
                    }
                })
                .collect();
            ConfigError::Load(errors.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Problems a value-by-value parse cannot see.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let positive = [
            ("HTTP_TIMEOUT", self.http_timeout),
            ("RETRY_BASE_DELAY", self.retry_base_delay),
            ("RETRY_MAX_DELAY", self.retry_max_delay),
            ("TASK_POLL_INTERVAL", self.task_poll_interval),
            ("TASK_POLL_MAX_INTERVAL", self.task_poll_max_interval),
            ("TASK_TIMEOUT", self.task_timeout),
            ("QUEUE_TIMEOUT", self.queue_timeout),
            ("DATABASE_ACQUIRE_TIMEOUT", self.database_acquire_timeout),
            ("DATABASE_CONNECT_TIMEOUT", self.database_connect_timeout),
            (
                "DATABASE_STATEMENT_TIMEOUT",
                self.database_statement_timeout,
            ),
            ("DATABASE_CALL_TIMEOUT", self.database_call_timeout),
            ("RETENTION_SWEEP_INTERVAL", self.retention_sweep_interval),
            ("CALLBACK_HORIZON", self.callback_horizon),
            ("CALLBACK_BASE_DELAY", self.callback_base_delay),
            ("CALLBACK_MAX_DELAY", self.callback_max_delay),
            ("CALLBACK_TIMEOUT", self.callback_timeout),
            ("LEASE_SECONDS", self.lease_seconds),
            ("WORKER_IDLE_INTERVAL", self.worker_idle_interval),
            ("SIM_TASK_DURATION", self.sim_task_duration),
            ("SHUTDOWN_GRACE", self.shutdown_grace),
            ("ALERT_INTERVAL", self.alert_interval),
            ("WORKER_STALL_TIMEOUT", self.worker_stall_timeout),
        ];
        for (name, value) in positive {
            // Also bounds the value so Duration::from_secs_f64 cannot panic.
            if !(value.is_finite() && value > 0.0 && value < 1e9) {
                problems.push(format!("{name} must be a positive number of seconds"));
            }
        }
        if !(self.step_timeout.is_finite() && self.step_timeout >= 0.0 && self.step_timeout < 1e9) {
            problems.push(
                "STEP_TIMEOUT must be a number of seconds, 0 (the lease minus a fifth) or more"
                    .into(),
            );
        }
        if !(self.input_retention.is_finite()
            && self.input_retention >= 0.0
            && self.input_retention < 1e12)
        {
            problems.push(
                "INPUT_RETENTION must be a number of seconds, 0 (keep forever) or more".into(),
            );
        }
        if !(self.event_retention.is_finite()
            && self.event_retention >= 0.0
            && self.event_retention < 1e12)
        {
            problems.push(
                "EVENT_RETENTION must be a number of seconds, 0 (keep forever) or more".into(),
            );
        }
        if !(self.balance_check_interval.is_finite()
            && self.balance_check_interval >= 0.0
            && self.balance_check_interval < 1e9)
        {
            problems.push(
                "BALANCE_CHECK_INTERVAL must be a number of seconds, 0 (no check) or more".into(),
            );
        }
        // A loop goes round at least every WORKER_IDLE_INTERVAL, a claim waits
        // DATABASE_CALL_TIMEOUT at most, a callback round CALLBACK_TIMEOUT plus
        // its writes: a shorter stall bound would restart healthy workers.
        let round =
            self.worker_idle_interval + self.callback_timeout + 2.0 * self.database_call_timeout;
        if self.worker_stall_timeout.is_finite() && self.worker_stall_timeout <= round {
            problems.push(format!(
                "WORKER_STALL_TIMEOUT must exceed WORKER_IDLE_INTERVAL + CALLBACK_TIMEOUT + 2 × DATABASE_CALL_TIMEOUT ({round}s), the longest healthy round of an engine loop"
            ));
        }
        if self.task_poll_interval > self.task_poll_max_interval {
            problems.push("TASK_POLL_INTERVAL must not exceed TASK_POLL_MAX_INTERVAL".into());
        }
        if self.retry_base_delay > self.retry_max_delay {
            problems.push("RETRY_BASE_DELAY must not exceed RETRY_MAX_DELAY".into());
        }
        if self.callback_base_delay > self.callback_max_delay {
            problems.push("CALLBACK_BASE_DELAY must not exceed CALLBACK_MAX_DELAY".into());
        }
        if self.retry_max_attempts == 0 {
            problems.push("RETRY_MAX_ATTEMPTS must be at least 1".into());
        }
        if self.upstream_max_rps == 0 {
            problems.push("UPSTREAM_MAX_RPS must be at least 1".into());
        }
        if self.worker_concurrency == 0 {
            problems.push("WORKER_CONCURRENCY must be at least 1".into());
        }
        if self.worker_batch_size < 1 {
            problems.push("WORKER_BATCH_SIZE must be at least 1".into());
        }
        if !self.callback_url_allowed_hosts().is_empty() && self.callback_url.is_none() {
            problems.push(
                "CALLBACK_URL_ALLOWED_HOSTS needs CALLBACK_URL (the receiver of tasks created without their own callback_url)".into(),
            );
        }
        if self.max_waiters == 0 {
            problems.push("MAX_WAITERS must be at least 1".into());
        }
        if self.database_max_connections == 0 {
            problems.push("DATABASE_MAX_CONNECTIONS must be at least 1".into());
        }
        if self.callback_max_retries == Some(0) {
            problems.push("CALLBACK_MAX_RETRIES must be at least 1".into());
        }
        if self.max_image_bytes == 0 || self.max_body_bytes == 0 {
            problems.push("MAX_IMAGE_BYTES and MAX_BODY_BYTES must be positive".into());
        }
        if self.image_max_pixels == 0 || self.image_max_side == 0 {
            problems.push("IMAGE_MAX_PIXELS and IMAGE_MAX_SIDE must be positive".into());
        }
        for (name, value) in [
            ("APIMART_BASE_URL", Some(&self.apimart_base_url)),
            ("CALLBACK_URL", self.callback_url.as_ref()),
            ("PUBLIC_BASE_URL", self.public_base_url.as_ref()),
            ("ALERT_WEBHOOK_URL", self.alert_webhook_url.as_ref()),
        ] {
            if let Some(v) = value {
                match url::Url::parse(v) {
                    Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                    _ => problems.push(format!("{name} must be an http(s) URL")),
                }
            }
        }
        if let Err(e) = self.outbound_allowlist() {
            problems.push(format!("OUTBOUND_ALLOWLIST: {e}"));
        }
        if let Err(e) = modelgen_persistence::Backend::parse_url(&self.database_url) {
            problems.push(format!("DATABASE_URL: {e}"));
        }
        problems.extend(crate::storage::problems(self));
        if self.auth_required() && self.api_auth_token.is_none() {
            problems.push("API_AUTH_ENABLED is true but API_AUTH_TOKEN is not set".into());
        }
        if let Some(secret) = &self.callback_signing_secret
            && let Err(e) = modelgen_callback::SigningSecret::parse(secret.expose())
        {
            problems.push(format!("CALLBACK_SIGNING_SECRET: {e}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The image pixel budget (`IMAGE_MAX_PIXELS`, `IMAGE_MAX_SIDE`); the
    /// default budget when either is 0, which [`Config::validate`] refuses.
    pub fn pixel_budget(&self) -> modelgen_domain::PixelBudget {
        modelgen_domain::PixelBudget::new(self.image_max_pixels, self.image_max_side)
            .unwrap_or_default()
    }

    /// Whether requests must carry the API token: as `API_AUTH_ENABLED` says
    /// when it is set, else whenever `API_AUTH_TOKEN` is set.
    pub fn auth_required(&self) -> bool {
        self.api_auth_enabled
            .unwrap_or(self.api_auth_token.is_some())
    }

    /// The parsed `OUTBOUND_ALLOWLIST` (empty when unset).
    ///
    /// # Errors
    /// The first entry that is not an IP address, a CIDR block or an IP:port.
    pub fn outbound_allowlist(
        &self,
    ) -> Result<modelgen_outbound::Allowlist, modelgen_outbound::AllowlistError> {
        modelgen_outbound::Allowlist::parse(self.outbound_allowlist.as_deref().unwrap_or_default())
    }

    /// The hosts of `CALLBACK_URL_ALLOWED_HOSTS`, trimmed and lower-cased
    /// (empty when unset).
    pub fn callback_url_allowed_hosts(&self) -> Vec<String> {
        self.callback_url_allowed_hosts
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect()
    }

    /// Whether result images are also kept inline as base64
    /// (`IMAGE_BASE64`, or its older name `STORE_IMAGE_BASE64`).
    pub fn image_base64_enabled(&self) -> bool {
        self.image_base64
            .or(self.store_image_base64)
            .unwrap_or(false)
    }

    /// modelgen's own base URL (for `file://` storage, images are under
    /// `{this}/images/`), without a trailing slash.
    pub fn public_base_url(&self, bound_port: u16) -> String {
        match &self.public_base_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}:{}", self.host, bound_port),
        }
    }

    /// The pause between two Apimart balance checks; `None` when
    /// `BALANCE_CHECK_INTERVAL` is 0 (no check).
    pub fn balance_check_interval(&self) -> Option<Duration> {
        (self.balance_check_interval > 0.0).then(|| Self::secs(self.balance_check_interval))
    }

    /// The backlog at which creates are refused, `None` for no limit
    /// (`MAX_QUEUED_TASKS=0`). Unset, it is what one replica drains within
    /// `QUEUE_TIMEOUT` at its nominal rate
    /// ([`crate::admission::default_max_queued`]: 432 000 with the defaults).
    pub fn max_queued_tasks(&self) -> Option<u64> {
        match self.max_queued_tasks {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(crate::admission::default_max_queued(
                Self::secs(self.queue_timeout),
                self.upstream_pacing().start,
            )),
        }
    }

    /// The upstream pacer's parameters: ceiling `UPSTREAM_MAX_RPS`, the
    /// shipped start, floor and AIMD steps
    /// ([`modelgen_engine::pacing::AimdSettings::with_ceiling`]).
    pub fn upstream_pacing(&self) -> modelgen_engine::pacing::AimdSettings {
        modelgen_engine::pacing::AimdSettings::with_ceiling(self.upstream_max_rps)
    }

    /// How long uploaded input images are kept after their task ends;
    /// `None` when `INPUT_RETENTION` is 0 (kept forever).
    pub fn input_retention(&self) -> Option<Duration> {
        (self.input_retention > 0.0).then(|| Self::secs(self.input_retention))
    }

    /// How long task timeline entries are kept; `None` when
    /// `EVENT_RETENTION` is 0 (kept forever).
    pub fn event_retention(&self) -> Option<Duration> {
        (self.event_retention > 0.0).then(|| Self::secs(self.event_retention))
    }

    /// The built-in simulator's state directory: `SIM_STATE_DIR` when set; else
    /// `apimart-sim/` beside the SQLite database file (`data/apimart-sim` by default); else
    /// beside the `file://` image directory; else `data/apimart-sim`. The simulator's tasks
    /// thus live and go with the service's own data.
    pub fn sim_state_path(&self) -> PathBuf {
        const DIR: &str = "apimart-sim";
        if let Some(dir) = &self.sim_state_dir {
            return PathBuf::from(dir);
        }
        let beside = |path: &str| {
            let path = path
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
                .trim_end_matches('/');
            (!path.is_empty()).then(|| {
                Path::new(path)
                    .parent()
                    .map_or_else(|| PathBuf::from(DIR), |parent| parent.join(DIR))
            })
        };
        self.database_url
            .strip_prefix("sqlite://")
            .and_then(beside)
            .or_else(|| {
                self.storage_url
                    .as_deref()
                    .unwrap_or(crate::storage::DEFAULT_STORAGE_URL)
                    .strip_prefix("file://")
                    .and_then(beside)
            })
            .unwrap_or_else(|| Path::new("data").join(DIR))
    }

    /// The effective step timeout: `STEP_TIMEOUT`, or when it is `0` the lease
    /// minus a fifth (`modelgen_engine::decide::default_step_timeout`).
    pub fn step_timeout(&self) -> Duration {
        if self.step_timeout > 0.0 {
            Self::secs(self.step_timeout)
        } else {
            modelgen_engine::decide::default_step_timeout(Self::secs(self.lease_seconds))
        }
    }

    /// Seconds as a [`Duration`]; values are checked finite and positive by [`Config::validate`].
    pub fn secs(value: f64) -> Duration {
        Duration::try_from_secs_f64(value).unwrap_or(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        for (k, v) in pairs {
            f = f.merge(Toml::string(&format!("{k} = {v}")));
        }
        Config::from_figment(f)
    }

    #[test]
    fn defaults_are_valid() {
        let c = with(&[]).unwrap();
        assert_eq!(c.port, 8000);
        assert_eq!(c.public_base_url(8000), "http://127.0.0.1:8000");
    }

    #[test]
    fn the_stall_bound_must_exceed_a_healthy_round_and_the_balance_check_may_be_off() {
        let c = with(&[]).unwrap();
        assert_eq!(c.balance_check_interval(), Some(Duration::from_secs(60)));
        assert_eq!(
            with(&[("balance_check_interval", "0")])
                .unwrap()
                .balance_check_interval(),
            None
        );
        let err = with(&[("balance_check_interval", "-1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("BALANCE_CHECK_INTERVAL"), "{err}");
        // 0.5 + 10 + 2 × 5 = 20.5 s is the longest healthy round by default.
        let err = with(&[("worker_stall_timeout", "20")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WORKER_STALL_TIMEOUT"), "{err}");
        assert!(with(&[("worker_stall_timeout", "21")]).is_ok());
    }

    #[test]
    fn the_simulator_state_lives_beside_the_data() {
        let path = |pairs: &[(&str, &str)]| with(pairs).unwrap().sim_state_path();
        assert_eq!(path(&[]), Path::new("data/apimart-sim"));
        assert_eq!(
            path(&[("database_url", "\"sqlite:///srv/mg/modelgen.db\"")]),
            Path::new("/srv/mg/apimart-sim")
        );
        assert_eq!(
            path(&[("database_url", "\"sqlite://modelgen.db\"")]),
            Path::new("apimart-sim")
        );
        assert_eq!(
            path(&[
                ("database_url", "\"postgres://db/modelgen\""),
                ("storage_url", "\"file:///var/lib/mg/images/\"")
            ]),
            Path::new("/var/lib/mg/apimart-sim")
        );
        assert_eq!(
            path(&[
                ("database_url", "\"postgres://db/modelgen\""),
                ("sim_state_dir", "\"/tmp/sim\"")
            ]),
            Path::new("/tmp/sim")
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = with(&[("no_such_key", "1")]).unwrap_err().to_string();
        assert!(err.contains("no_such_key"), "{err}");
        let err = with(&[("port", "\"eighty\"")]).unwrap_err().to_string();
        assert!(err.contains("PORT"), "{err}");
        let err = with(&[("task_timeout", "-1")]).unwrap_err().to_string();
        assert!(err.contains("TASK_TIMEOUT"), "{err}");
        for bad in [
            "mysqlx://x/db",
            "mysql://x",
            "mysql://x/db?charset=latin1",
            "sqlite:relative.db",
        ] {
            let err = with(&[("database_url", &format!("{bad:?}"))])
                .unwrap_err()
                .to_string();
            assert!(err.contains("DATABASE_URL"), "{bad}: {err}");
        }
        for ok in [
            "mysql://app:pw@db:3306/modelgen",
            "mysql+aiomysql://app:pw@db:3306/modelgen?charset=utf8mb4",
        ] {
            assert!(
                with(&[("database_url", &format!("{ok:?}"))]).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn booleans_take_the_earlier_services_spellings() {
        for (text, want) in [
            ("\"True\"", true),
            ("\"FALSE\"", false),
            ("\"yes\"", true),
            ("\"off\"", false),
            ("\"t\"", true),
            ("\"N\"", false),
            ("1", true),
            ("0", false),
            ("true", true),
        ] {
            let c = with(&[("auto_migrate", text), ("store_image_base64", text)])
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (c.auto_migrate, c.store_image_base64),
                (want, Some(want)),
                "{text}"
            );
        }
        let err = with(&[("auto_migrate", "\"maybe\"")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AUTO_MIGRATE") && err.contains("not a boolean"),
            "{err}"
        );
    }

    #[test]
    fn api_auth_enabled_false_wins_over_a_token_as_in_the_earlier_service() {
        let token = ("api_auth_token", "\"tok\"");
        assert!(
            with(&[token]).unwrap().auth_required(),
            "a token alone turns auth on"
        );
        assert!(
            !with(&[token, ("api_auth_enabled", "\"False\"")])
                .unwrap()
                .auth_required()
        );
        assert!(
            with(&[token, ("api_auth_enabled", "\"True\"")])
                .unwrap()
                .auth_required()
        );
        assert!(!with(&[]).unwrap().auth_required());
        assert!(
            !with(&[("api_auth_enabled", "\"\"")])
                .unwrap()
                .auth_required()
        );
        let err = with(&[("api_auth_enabled", "true")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("API_AUTH_TOKEN is not set"), "{err}");
    }

    #[test]
    fn the_outbound_allowlist_is_checked_at_load() {
        let c = with(&[(
            "outbound_allowlist",
            "\"127.0.0.1/32, ::1/128,10.0.0.5:9000\"",
        )])
        .unwrap();
        assert_eq!(
            c.outbound_allowlist().unwrap().to_string(),
            "127.0.0.1/32,::1/128,10.0.0.5:9000"
        );
        assert!(with(&[]).unwrap().outbound_allowlist().unwrap().is_empty());
        let err = with(&[("outbound_allowlist", "\"127.0.0.1,localhost:8080\"")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OUTBOUND_ALLOWLIST")
                && err.contains("localhost:8080")
                && err.contains("host name"),
            "{err}"
        );
        let err = with(&[("outbound_allowlist", "\"10.0.0.0/40\"")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("OUTBOUND_ALLOWLIST"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let c = with(&[
            ("apimart_api_key", "\"sk-very-secret\""),
            ("api_auth_token", "12345"),
        ])
        .unwrap();
        assert_eq!(c.api_auth_token.as_ref().map(Secret::expose), Some("12345"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-very-secret") && !shown.contains("12345"));
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("sk-very-secret"));
        let pg = with(&[("database_url", "\"postgres://app:hunter2@db/modelgen\"")]).unwrap();
        let json = serde_json::to_string(&pg).unwrap();
        assert!(
            !json.contains("hunter2") && json.contains("postgres://app:***@db/modelgen"),
            "{json}"
        );
        assert!(c.auth_required());
    }

    #[test]
    fn passwords_and_query_values_in_url_settings_never_print() {
        let urls = with(&[
            (
                "callback_url",
                "\"http://hook:cbPASS1@cb.example/x?token=qsPASS4&v=1\"",
            ),
            ("alert_webhook_url", "\"https://a:alPASS2@alerts.example/\""),
            ("apimart_base_url", "\"https://u:apPASS3@api.example/v1\""),
        ])
        .unwrap();
        let json = serde_json::to_string(&urls).unwrap();
        for secret in ["cbPASS1", "alPASS2", "apPASS3", "qsPASS4"] {
            assert!(!json.contains(secret), "{secret} printed: {json}");
        }
        assert!(
            json.contains("http://hook:***@cb.example/x?token=***&v=***"),
            "{json}"
        );
        let db = with(&[(
            "database_url",
            "\"mysql+aiomysql://app:dbPASS5@db/m?charset=utf8mb4\"",
        )])
        .unwrap();
        let json = serde_json::to_string(&db).unwrap();
        assert!(
            json.contains("mysql+aiomysql://app:***@db/m?charset=utf8mb4"),
            "a setting like charset is shown, the password is not: {json}"
        );
        // The values themselves are untouched for use.
        assert_eq!(
            urls.callback_url.as_deref(),
            Some("http://hook:cbPASS1@cb.example/x?token=qsPASS4&v=1")
        );
    }
}
