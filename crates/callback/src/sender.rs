//! One delivery attempt of a callback over HTTP (the modelgen README, "Callbacks to the Java
//! backend"). Retries are not made here: the outbox worker records each outcome and
//! schedules the next attempt durably (see [`crate::backoff`]).
//!
//! Request: `POST {url}` with `Content-Type: application/json`, `webhook-id` always (so a
//! receiver can deduplicate even unsigned deliveries), `Authorization: Bearer …` when a
//! token is set, and `webhook-timestamp` + `webhook-signature` when a signing secret is set
//! (Standard Webhooks, <https://www.standardwebhooks.com/>). Redirects are not followed:
//! a 3xx is reported as [`DeliveryResult::Rejected`], because following it would turn the
//! POST into a GET or carry the credentials to another address.
//!
//! Secrets: the token, the signing secret and the body are never logged nor put in any
//! `Debug` output or failure reason.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use reqwest::{Response, Url, redirect};

use crate::signing::{
    HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, SigningSecret, sign,
};

/// Default whole-request timeout (connect, send, response headers and the body excerpt):
/// 10 s, the earlier service's `HTTP_TIMEOUT`; long enough for a busy receiver, short
/// enough that a hung one does not hold an outbox worker.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `User-Agent`, `modelgen-callback/<crate version>`.
pub const DEFAULT_USER_AGENT: &str = concat!("modelgen-callback/", env!("CARGO_PKG_VERSION"));

/// Most characters of a rejecting response's body kept in
/// [`DeliveryResult::Rejected::body_excerpt`]: enough for an error message, small enough
/// for an outbox column and a log line.
pub const MAX_BODY_EXCERPT_CHARS: usize = 256;

/// Most bytes read from a rejecting response's body (4 UTF-8 bytes per kept character),
/// so a receiver answering with a huge body cannot make us buffer it.
const MAX_BODY_READ_BYTES: usize = MAX_BODY_EXCERPT_CHARS * 4;

/// What replaces the token wherever it could surface (e.g. a receiver echoing it).
const REDACTED: &str = "***";

/// One delivery attempt's request.
#[derive(Clone, Copy)]
pub struct CallbackRequest<'a> {
    /// The `webhook-id`: stable across retries of the same event, visible ASCII only
    /// (it is sent as a header). See [`crate::CallbackPayload::event_id`].
    pub event_id: &'a str,
    /// The serialised [`crate::CallbackPayload`], byte-identical on every retry.
    pub body: &'a [u8],
}

impl fmt::Debug for CallbackRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body may carry user data: show its size only.
        f.debug_struct("CallbackRequest")
            .field("event_id", &self.event_id)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The outcome of one attempt, for the outbox worker to record and act on.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryResult {
    /// The receiver answered 2xx: done, never send this event again.
    Delivered {
        /// The HTTP status (200–299).
        status: u16,
    },
    /// The receiver answered with a non-2xx status (3xx included: redirects are not
    /// followed). Retry later, no sooner than `retry_after` when given.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The receiver's `Retry-After` (delay-seconds or HTTP-date, RFC 9110 §10.2.3),
        /// as a delay from now; `None` when absent or unparsable. Not capped: the worker
        /// applies its own ceiling.
        retry_after: Option<Duration>,
        /// The first ≤ [`MAX_BODY_EXCERPT_CHARS`] characters of the response body (lossy
        /// UTF-8), with the bearer token masked should the receiver echo it.
        body_excerpt: String,
    },
    /// No HTTP answer: timeout, connection refused, DNS, TLS, invalid event id. Retry later.
    Failed {
        /// What went wrong, starting with its kind (`timeout`, `connect`, `request`, …).
        /// Never contains the token, the secret, the body or the URL's query.
        reason: String,
    },
}

impl DeliveryResult {
    /// Whether the receiver accepted the callback (any 2xx).
    pub fn is_delivered(&self) -> bool {
        matches!(self, DeliveryResult::Delivered { .. })
    }
}

/// Sends one callback attempt. Implemented over HTTP by [`HttpCallbackSender`]; mocked by
/// `MockCallbackSender` (feature `mock`).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait::async_trait]
pub trait CallbackSender: Send + Sync {
    /// One attempt (no retries inside: the outbox worker schedules retries durably).
    /// Never panics and never returns early without a [`DeliveryResult`].
    async fn send<'a>(&self, request: CallbackRequest<'a>) -> DeliveryResult;

    /// As [`CallbackSender::send`], to `url` instead of the configured URL
    /// (a task's own `callback_url`, checked by the caller), with the same
    /// signing and timeout; the token (`Authorization`) is sent only when
    /// `url` has the configured URL's origin (scheme, host and port), so
    /// another host never learns it. An `url` that is not an absolute
    /// `http(s)://` URL is a [`DeliveryResult::Failed`] (`request: …`).
    async fn send_to<'a>(&self, url: &'a str, request: CallbackRequest<'a>) -> DeliveryResult;
}

/// How to reach the receiver. Build with [`SenderConfig::new`] and the `with_*` setters.
/// `Debug` masks the token and the secret.
#[derive(Clone)]
pub struct SenderConfig {
    /// The receiver, `CALLBACK_URL`: an absolute `http://` or `https://` URL (https needs
    /// the `rustls` feature, on by default).
    pub url: String,
    /// `CALLBACK_TOKEN`, sent as `Authorization: Bearer <token>` when set. Must be
    /// non-empty visible ASCII.
    pub token: Option<String>,
    /// When set, each request is signed with the Standard Webhooks headers.
    pub signing_secret: Option<SigningSecret>,
    /// Whole-request timeout, must be non-zero; default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// `User-Agent` header; default [`DEFAULT_USER_AGENT`].
    pub user_agent: String,
}

impl SenderConfig {
    /// A config for `url` with no token, no signing, the default timeout and user agent.
    pub fn new(url: impl Into<String>) -> Self {
        SenderConfig {
            url: url.into(),
            token: None,
            signing_secret: None,
            timeout: DEFAULT_TIMEOUT,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
        }
    }

    /// Sets the bearer token.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the signing secret.
    #[must_use]
    pub fn with_signing_secret(mut self, secret: SigningSecret) -> Self {
        self.signing_secret = Some(secret);
        self
    }

    /// Sets the whole-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the `User-Agent`.
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }
}

impl fmt::Debug for SenderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderConfig")
            .field("url", &redacted_url_str(&self.url))
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field("signing_secret", &self.signing_secret)
            .field("timeout", &self.timeout)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// Why a [`SenderConfig`] cannot be used. Messages never contain the token or secret.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// `url` does not parse as an absolute URL.
    #[error("callback URL is not a valid absolute URL: {0}")]
    InvalidUrl(#[source] url::ParseError),
    /// `url` is not `http://` or `https://`.
    #[error("callback URL scheme `{scheme}` is not http or https")]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
    },
    /// The token is empty or has characters not allowed in an HTTP header.
    #[error("callback token is empty or not a valid HTTP header value")]
    InvalidToken,
    /// The user agent has characters not allowed in an HTTP header.
    #[error("callback user agent is not a valid HTTP header value")]
    InvalidUserAgent,
    /// The timeout is zero, which would fail every attempt.
    #[error("callback timeout must be greater than zero")]
    ZeroTimeout,
    /// The HTTP client could not be built (e.g. the TLS backend failed to initialise).
    #[error("cannot build the callback HTTP client")]
    Client(#[source] reqwest::Error),
}

/// [`CallbackSender`] over HTTP with reqwest. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct HttpCallbackSender {
    client: reqwest::Client,
    url: Url,
    /// `Bearer <token>`, marked sensitive so `http`'s own `Debug` hides it too.
    authorization: Option<HeaderValue>,
    /// Kept only to mask it in receiver-supplied text and transport errors.
    token: Option<String>,
    signing_secret: Option<SigningSecret>,
    timeout: Duration,
}

impl fmt::Debug for HttpCallbackSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCallbackSender")
            .field("url", &redacted_url(&self.url))
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field("signing_secret", &self.signing_secret)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpCallbackSender {
    /// Validates `config` and builds the HTTP client (no request is made).
    ///
    /// # Errors
    /// [`SenderError::InvalidUrl`], [`SenderError::UnsupportedScheme`],
    /// [`SenderError::InvalidToken`], [`SenderError::InvalidUserAgent`],
    /// [`SenderError::ZeroTimeout`], [`SenderError::Client`].
    pub fn new(config: SenderConfig) -> Result<Self, SenderError> {
        let url = Url::parse(&config.url).map_err(SenderError::InvalidUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SenderError::UnsupportedScheme {
                scheme: url.scheme().to_owned(),
            });
        }
        if config.timeout.is_zero() {
            return Err(SenderError::ZeroTimeout);
        }
        let authorization = match &config.token {
            Some(token) if token.is_empty() => return Err(SenderError::InvalidToken),
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| SenderError::InvalidToken)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let user_agent =
            HeaderValue::from_str(&config.user_agent).map_err(|_| SenderError::InvalidUserAgent)?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(user_agent)
            .redirect(redirect::Policy::none())
            .build()
            .map_err(SenderError::Client)?;
        Ok(HttpCallbackSender {
            client,
            url,
            authorization,
            token: config.token,
            signing_secret: config.signing_secret,
            timeout: config.timeout,
        })
    }

    /// The headers of one attempt; `None` when the event id cannot be a header value.
    fn headers(
        &self,
        request: &CallbackRequest<'_>,
        timestamp: i64,
        with_token: bool,
    ) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            HeaderName::from_static(HEADER_WEBHOOK_ID),
            HeaderValue::from_str(request.event_id).ok()?,
        );
        if let Some(authorization) = self.authorization.as_ref().filter(|_| with_token) {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        if let Some(secret) = &self.signing_secret {
            let signature = sign(secret, request.event_id, timestamp, request.body);
            headers.insert(
                HeaderName::from_static(HEADER_WEBHOOK_TIMESTAMP),
                HeaderValue::from(timestamp),
            );
            headers.insert(
                HeaderName::from_static(HEADER_WEBHOOK_SIGNATURE),
                HeaderValue::from_str(&signature).ok()?,
            );
        }
        Some(headers)
    }

    /// Masks the token in text that did not come from us.
    fn redact(&self, text: String) -> String {
        match &self.token {
            Some(token) if !token.is_empty() && text.contains(token.as_str()) => {
                text.replace(token.as_str(), REDACTED)
            }
            _ => text,
        }
    }

    async fn rejected(&self, status: u16, mut response: Response) -> DeliveryResult {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        // Read a little past the excerpt so a token straddling its end is still masked whole.
        let extra = self.token.as_ref().map_or(0, String::len);
        let raw = read_prefix(&mut response, MAX_BODY_READ_BYTES + extra).await;
        let text = self.redact(String::from_utf8_lossy(&raw).into_owned());
        DeliveryResult::Rejected {
            status,
            retry_after,
            body_excerpt: text.chars().take(MAX_BODY_EXCERPT_CHARS).collect(),
        }
    }

    fn failure_reason(&self, error: reqwest::Error) -> String {
        let kind = if error.is_timeout() {
            "timeout"
        } else if error.is_connect() {
            "connect"
        } else if error.is_body() {
            "body"
        } else if error.is_request() {
            "request"
        } else {
            "transport"
        };
        // The URL may carry credentials in its user info or query; drop it.
        let error = error.without_url();
        let mut reason = format!("{kind}: {error}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        if error.is_timeout() {
            reason.push_str(&format!(" (timeout {} ms)", self.timeout.as_millis()));
        }
        self.redact(reason)
    }
}

#[async_trait::async_trait]
impl CallbackSender for HttpCallbackSender {
    async fn send<'a>(&self, request: CallbackRequest<'a>) -> DeliveryResult {
        self.attempt(self.url.clone(), request, true).await
    }

    async fn send_to<'a>(&self, url: &'a str, request: CallbackRequest<'a>) -> DeliveryResult {
        match Url::parse(url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                // The token authenticates us to the configured receiver: it
                // goes only to that receiver's origin, never to another host.
                let with_token = url.origin() == self.url.origin();
                self.attempt(url, request, with_token).await
            }
            // The URL may carry credentials: it is not repeated.
            _ => DeliveryResult::Failed {
                reason: "request: the task's callback URL is not an absolute http(s) URL"
                    .to_owned(),
            },
        }
    }
}

impl HttpCallbackSender {
    /// One attempt to `url`.
    async fn attempt(
        &self,
        url: Url,
        request: CallbackRequest<'_>,
        with_token: bool,
    ) -> DeliveryResult {
        let started = Instant::now();
        let timestamp = chrono::Utc::now().timestamp();
        let Some(headers) = self.headers(&request, timestamp, with_token) else {
            return DeliveryResult::Failed {
                reason: "request: event id is not a valid HTTP header value".to_owned(),
            };
        };
        let sent = self
            .client
            .post(url)
            .headers(headers)
            .body(request.body.to_vec())
            .send()
            .await;
        let result = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                if response.status().is_success() {
                    DeliveryResult::Delivered { status }
                } else {
                    self.rejected(status, response).await
                }
            }
            Err(error) => DeliveryResult::Failed {
                reason: self.failure_reason(error),
            },
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            DeliveryResult::Delivered { status } => tracing::debug!(
                callback.event_id = request.event_id,
                http.status = status,
                elapsed_ms,
                "callback delivered"
            ),
            DeliveryResult::Rejected { status, .. } => tracing::debug!(
                callback.event_id = request.event_id,
                http.status = status,
                elapsed_ms,
                "callback rejected"
            ),
            DeliveryResult::Failed { reason } => tracing::debug!(
                callback.event_id = request.event_id, callback.reason = %reason, elapsed_ms,
                "callback attempt failed"
            ),
        }
        result
    }
}

/// Up to `limit` bytes of the body; whatever arrived before an error is kept.
async fn read_prefix(response: &mut Response, limit: usize) -> Vec<u8> {
    let mut buffer = Vec::new();
    while buffer.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(limit - buffer.len());
                buffer.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    buffer
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds (`120`) or an HTTP-date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) turned into a delay from `now` (zero if already past).
/// Returns `None` for anything else, e.g. a negative or fractional number.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits but too large for u64: as good as "not in any useful future".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `scheme://host[:port]/path`, without user info, query or fragment (which may carry
/// credentials).
fn redacted_url(url: &Url) -> String {
    format!(
        "{}{}",
        url.origin().ascii_serialization(),
        if url.cannot_be_a_base() {
            ""
        } else {
            url.path()
        }
    )
}

fn redacted_url_str(url: &str) -> String {
    Url::parse(url).map_or_else(|_| "<invalid url>".to_owned(), |url| redacted_url(&url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", "-1", "1.5", "soon", "12 s"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn config_debug_masks_secrets_and_url_credentials() {
        let config = SenderConfig::new("https://user:pw@java.example/cb?key=qs-secret#frag")
            .with_token("tok-123456")
            .with_signing_secret(SigningSecret::parse("whsec_c2VjcmV0").expect("valid"));
        let debug = format!("{config:?}");
        for hidden in ["tok-123456", "pw@", ":pw", "qs-secret", "c2VjcmV0", "frag"] {
            assert!(!debug.contains(hidden), "{hidden} leaked in {debug}");
        }
        assert!(debug.contains("https://java.example/cb"), "{debug}");
    }

    #[test]
    fn new_validates_the_config() {
        let ok = SenderConfig::new("http://127.0.0.1:9/cb");
        assert!(HttpCallbackSender::new(ok.clone()).is_ok());
        assert!(matches!(
            HttpCallbackSender::new(SenderConfig::new("not a url")),
            Err(SenderError::InvalidUrl(_))
        ));
        assert!(matches!(
            HttpCallbackSender::new(SenderConfig::new("ftp://127.0.0.1/cb")),
            Err(SenderError::UnsupportedScheme { scheme }) if scheme == "ftp"
        ));
        assert!(matches!(
            HttpCallbackSender::new(ok.clone().with_token("")),
            Err(SenderError::InvalidToken)
        ));
        let err = HttpCallbackSender::new(ok.clone().with_token("line\nbreak-secret"))
            .expect_err("invalid token");
        assert!(matches!(err, SenderError::InvalidToken));
        assert!(!format!("{err} {err:?}").contains("break-secret"));
        assert!(matches!(
            HttpCallbackSender::new(ok.clone().with_timeout(Duration::ZERO)),
            Err(SenderError::ZeroTimeout)
        ));
        assert!(matches!(
            HttpCallbackSender::new(ok.with_user_agent("bad\r\nagent")),
            Err(SenderError::InvalidUserAgent)
        ));
    }

    #[test]
    fn request_debug_hides_the_body() {
        let request = CallbackRequest {
            event_id: "evt_1",
            body: b"{\"user_id\":\"private\"}",
        };
        let debug = format!("{request:?}");
        assert!(!debug.contains("private"));
        assert!(debug.contains("evt_1"));
    }
}
