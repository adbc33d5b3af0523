//! Client configuration: the secret API key and the chained `with_*` settings.

use std::fmt;
use std::time::Duration;

use crate::policy::RetryPolicy;

/// The Apimart API key, sent as `Authorization: Bearer <key>` (docs/apimart.md, "Authentication").
///
/// Its `Debug` and `Display` print `***`, so the key cannot leak through logs or error
/// messages by accident; [`ApiKey::expose`] is the only way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key. Whitespace around it is kept as given; [`crate::ApimartClient::new`]
    /// rejects an empty key or one that cannot travel in an HTTP header.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself. Call it only where the key must leave the process.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Which API call an [`CallObserver`] hears about. `#[non_exhaustive]`: new calls add
/// variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /images/generations`.
    Submit,
    /// `GET /tasks/{id}`.
    TaskStatus,
    /// `GET /balance` (or `/user/balance`).
    Balance,
}

impl Endpoint {
    /// `submit`, `status` or `balance`, for metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Endpoint::Submit => "submit",
            Endpoint::TaskStatus => "status",
            Endpoint::Balance => "balance",
        }
    }
}

/// Hears about every finished call and every HTTP attempt inside it, e.g. to
/// count calls, attempts and retries in metrics. A call (`submit_generation`,
/// `get_task_status`) makes one or more attempts (the first try plus retries).
pub trait CallObserver: Send + Sync {
    /// Called once per `submit_generation` / `get_task_status` / `balance`, after the
    /// last attempt. `attempts` includes the first try, so `attempts - 1` retries were
    /// made (for `balance`, both paths count when the first answered 404); `error` is the
    /// call's final error, if it failed.
    fn call_finished(&self, endpoint: Endpoint, attempts: u32, error: Option<&crate::ApimartError>);

    /// Called after each HTTP attempt of a call, before any retry wait.
    /// `status` is the HTTP status when a response arrived (also for a 2xx
    /// whose body could not be used), `None` when none did (connect error,
    /// timeout, transport error); `error` is the attempt's error, if any.
    /// Requests refused before sending (invalid input) make no attempt.
    ///
    /// The default does nothing, so observers written for `call_finished`
    /// alone keep compiling.
    fn attempt_finished(
        &self,
        endpoint: Endpoint,
        status: Option<u16>,
        error: Option<&crate::ApimartError>,
    ) {
        let _ = (endpoint, status, error);
    }
}

/// Everything [`crate::ApimartClient::new`] needs. Build it with [`ApimartConfig::new`] and
/// the chained `with_*` setters; values are checked when the client is built.
#[derive(Clone, Debug)]
pub struct ApimartConfig {
    pub(crate) api_key: ApiKey,
    pub(crate) base_url: String,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) user_agent: String,
    pub(crate) observer: Option<std::sync::Arc<dyn CallObserver>>,
}

impl fmt::Debug for dyn CallObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallObserver")
    }
}

impl ApimartConfig {
    /// Apimart's public endpoint, version included (docs/apimart.md: the earlier service's
    /// `APIMART_BASE_URL` has the same meaning).
    pub const DEFAULT_BASE_URL: &str = "https://api.apimart.ai/v1";

    /// Default limit for a whole request (connect, send, headers and body), 30 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Default limit for opening the TCP (and TLS) connection, 10 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Default `User-Agent`: `apimart-client/<crate version>`.
    pub const DEFAULT_USER_AGENT: &str = concat!("apimart-client/", env!("CARGO_PKG_VERSION"));

    /// A configuration with the given key and every default: [`Self::DEFAULT_BASE_URL`],
    /// [`Self::DEFAULT_TIMEOUT`], [`Self::DEFAULT_CONNECT_TIMEOUT`], [`RetryPolicy::default`],
    /// [`Self::DEFAULT_USER_AGENT`].
    pub fn new(api_key: ApiKey) -> Self {
        Self {
            api_key,
            base_url: Self::DEFAULT_BASE_URL.to_owned(),
            timeout: Self::DEFAULT_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            retry: RetryPolicy::default(),
            user_agent: Self::DEFAULT_USER_AGENT.to_owned(),
            observer: None,
        }
    }

    /// Overrides the base URL. It **includes** the API version (`https://api.apimart.ai/v1`);
    /// the client appends `/images/generations` and `/tasks/{id}`. A trailing slash is
    /// ignored. It must be an `http` or `https` URL without query or fragment (`https` needs
    /// the `rustls` feature), else [`crate::ApimartClient::new`] fails with `InvalidConfig`.
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Limit for a whole request attempt (connect, send, response headers and body), default
    /// 30 s. Must be non-zero. Retries each get the full limit again.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Limit for opening the connection, default 10 s. Must be non-zero.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How failed calls are retried; see [`RetryPolicy`].
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Overrides the `User-Agent` header (default [`Self::DEFAULT_USER_AGENT`]).
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Reports every finished call (endpoint, attempts, error) to `observer`,
    /// e.g. to count retries in metrics. None by default.
    pub fn with_observer(mut self, observer: std::sync::Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The base URL as configured (trailing slash not yet removed).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The whole-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The `User-Agent` header value.
    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_never_prints() {
        let key = ApiKey::new("sk-very-secret");
        assert_eq!(format!("{key}"), "***");
        assert!(!format!("{key:?}").contains("sk-very-secret"));
        assert_eq!(key.expose(), "sk-very-secret");
    }

    #[test]
    fn config_debug_redacts_key() {
        let cfg = ApimartConfig::new(ApiKey::new("sk-very-secret"));
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("sk-very-secret"), "{debug}");
        assert!(debug.contains("https://api.apimart.ai/v1"), "{debug}");
    }
}
