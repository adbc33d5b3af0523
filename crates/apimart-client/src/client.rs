//! The HTTP client: request building, response handling, retries and tracing.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, StatusCode};
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::config::{ApiKey, ApimartConfig};
use crate::error::{self, ApimartError, MAX_KEPT_BODY_BYTES};
use crate::model::{Balance, GenerationRequest, SubmitResponse, TaskStatusResponse};
use crate::parse::{self, BodyProblem};
use crate::policy::RetryPolicy;
use crate::retry;

/// Request header carrying the idempotency key (docs/apimart.md, "Authentication").
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Response header set to `true` when upstream replays an earlier result for the key.
const IDEMPOTENCY_REPLAYED: &str = "Idempotency-Replayed";

/// Longest idempotency key upstream accepts, in characters (docs/apimart.md: 1–191 visible ASCII).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 191;

/// Longest task id we put in a URL, in bytes. Real ids are about 31 characters; the bound keeps
/// a garbage id from producing an absurd request line.
pub const MAX_TASK_ID_LEN: usize = 256;

/// Largest 2xx body we read, in bytes. A status answer with a few image URLs is under 10 KiB;
/// anything near this is not an Apimart answer and becomes `Decode`.
const MAX_SUCCESS_BODY_BYTES: usize = 1024 * 1024;

/// Largest error body we read, in bytes; only its message and first
/// [`MAX_KEPT_BODY_BYTES`] are kept.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Longest part of a raw error body written to the debug log, in bytes.
const MAX_LOGGED_BODY_BYTES: usize = 1024;

/// Typed async client for Apimart's image generation API.
///
/// Cheap to clone (the connection pool and settings sit behind an `Arc`); share one per
/// process. Its `Debug` output shows the base URL and retry policy, never the key.
#[derive(Clone)]
pub struct ApimartClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Base URL without trailing slash.
    base_url: String,
    /// Kept to scrub upstream echoes of the key from error texts.
    api_key: ApiKey,
    retry: RetryPolicy,
    observer: Option<std::sync::Arc<dyn crate::config::CallObserver>>,
}

impl fmt::Debug for ApimartClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApimartClient")
            .field("base_url", &self.inner.base_url)
            .field("api_key", &self.inner.api_key)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// A response whose headers and (size-capped) body have been read.
struct RawResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl ApimartClient {
    /// Builds a client. Fails with [`ApimartError::InvalidConfig`] when the key is empty or
    /// not sendable in a header, the base URL is not an `http(s)` URL without query or
    /// fragment (or is `https` without the `rustls` feature), a timeout is zero,
    /// `max_attempts` is 0, or the `User-Agent` is not a valid header value. No request is
    /// made.
    pub fn new(config: ApimartConfig) -> Result<Self, ApimartError> {
        let key = config.api_key.clone();
        // The base URL lands in error texts; it could carry the key by mistake.
        Self::build(config).map_err(|e| e.redact(key.expose()))
    }

    fn build(config: ApimartConfig) -> Result<Self, ApimartError> {
        let base_url = validate_base_url(&config.base_url)?;
        let key = config.api_key.expose();
        if key.trim().is_empty() {
            return Err(ApimartError::InvalidConfig("the API key is empty".into()));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            ApimartError::InvalidConfig(
                "the API key holds characters not allowed in an HTTP header".into(),
            )
        })?;
        auth.set_sensitive(true);
        if config.timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(ApimartError::InvalidConfig(
                "timeouts must be greater than zero".into(),
            ));
        }
        if config.retry.max_attempts == 0 {
            return Err(ApimartError::InvalidConfig(
                "retry max_attempts must be at least 1 (it counts the first try)".into(),
            ));
        }
        let user_agent = HeaderValue::from_str(&config.user_agent).map_err(|_| {
            ApimartError::InvalidConfig("the User-Agent is not a valid header value".into())
        })?;

        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, auth);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(user_agent)
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            // An API answer is never a redirect; following one would turn a POST into a GET
            // or send the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                ApimartError::InvalidConfig(format!("cannot build HTTP client: {}", chain(&e)))
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url,
                api_key: config.api_key,
                retry: config.retry,
                observer: config.observer,
            }),
        })
    }

    /// The base URL requests go to, without trailing slash (e.g. `https://api.apimart.ai/v1`).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Submits an image generation: `POST {base}/images/generations` with `req` as JSON
    /// (docs/apimart.md, "Submit"). Success is any 2xx whose body has `code: 200` and a task id,
    /// in either documented shape.
    ///
    /// `idempotency_key` is sent as `Idempotency-Key` when `Some`; it must be 1–191 visible
    /// ASCII characters ([`ApimartError::InvalidInput`] otherwise, nothing sent). Retries
    /// follow the [`RetryPolicy`], every attempt with the same key and the same body:
    /// - with a key: on everything [`ApimartError::is_retryable`] accepts;
    /// - without a key: only on [`ApimartError::Connect`], the one failure that proves the
    ///   request never reached the server. A 5xx or timeout is returned at once, because
    ///   repeating a non-idempotent POST blindly could create a second task.
    ///
    /// Errors: the status mapping of [`ApimartError`]; `Upstream` for a body `code` other than
    /// 200; `Decode` (with the body) when a 2xx body holds no task id.
    pub async fn submit_generation(
        &self,
        req: &GenerationRequest,
        idempotency_key: Option<&str>,
    ) -> Result<SubmitResponse, ApimartError> {
        if let Some(key) = idempotency_key {
            validate_idempotency_key(key)?;
        }
        let span = tracing::debug_span!(
            "apimart.submit",
            apimart.model = %req.model,
            apimart.task_id = Empty,
            idempotent = idempotency_key.is_some(),
            attempts = Empty,
            elapsed_ms = Empty,
        );
        let call_span = span.clone();
        let call = async {
            let started = Instant::now();
            // Serialised once: every attempt must carry the same bytes as the first.
            let body = serde_json::to_vec(req).map_err(|e| ApimartError::InvalidInput {
                field: "request",
                reason: format!("cannot serialise: {e}"),
            })?;
            let url = format!("{}/images/generations", self.inner.base_url);
            let retryable = |e: &ApimartError| match idempotency_key {
                Some(_) => e.is_retryable(),
                None => matches!(e, ApimartError::Connect { .. }),
            };
            let (result, attempts) = retry::run(&self.inner.retry, retryable, |_| {
                let mut request = self
                    .inner
                    .http
                    .post(&url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                if let Some(key) = idempotency_key {
                    request = request.header(IDEMPOTENCY_KEY, key);
                }
                async move {
                    let raw = self
                        .attempt(crate::config::Endpoint::Submit, request)
                        .await?;
                    let result = parse::parse_submit(&raw.body)
                        .map_err(|p| self.body_error(p, &raw))
                        .map(|submitted| SubmitResponse {
                            task_id: submitted.task_id,
                            status: submitted.status,
                            estimated_time: submitted.estimated_time,
                            replayed: header_is_true(&raw.headers, IDEMPOTENCY_REPLAYED),
                        });
                    self.attempt_answered(crate::config::Endpoint::Submit, &raw, &result);
                    result
                }
            })
            .await;
            if let Some(observer) = &self.inner.observer {
                observer.call_finished(
                    crate::config::Endpoint::Submit,
                    attempts,
                    result.as_ref().err(),
                );
            }
            // This call's own span, not `Span::current()`: when the span is
            // filtered out, the current span is the caller's, which may have
            // fields of the same name (the recorded id would print twice there).
            let span = &call_span;
            span.record("attempts", attempts);
            span.record("elapsed_ms", elapsed_ms(started));
            match &result {
                Ok(resp) => {
                    span.record("apimart.task_id", resp.task_id.as_str());
                    tracing::debug!(status = %resp.status, replayed = resp.replayed, "submitted");
                }
                Err(err) => tracing::debug!(error = %err, "submit failed"),
            }
            result
        };
        call.instrument(span).await
    }

    /// Reads a task: `GET {base}/tasks/{task_id}` (docs/apimart.md, "Status"), the id
    /// percent-encoded as one path segment. Retries follow the [`RetryPolicy`] on 408, 429
    /// (honouring `Retry-After`), 500, 502, 503, 504, timeouts and connect errors.
    ///
    /// Errors: [`ApimartError::InvalidInput`] for an empty, `.`/`..` or over-long
    /// ([`MAX_TASK_ID_LEN`]) id; `NotFound` for an unknown task; the status mapping of
    /// [`ApimartError`]; `Upstream` for a body `code` other than 200; `Decode` when the body has
    /// no `status`.
    pub async fn get_task_status(&self, task_id: &str) -> Result<TaskStatusResponse, ApimartError> {
        self.read_task(task_id, &self.inner.retry).await
    }

    /// [`Self::get_task_status`] with a single attempt: every failure, retryable or not, is
    /// returned at once, for a caller that schedules its own next try (e.g. a durable
    /// "poll again at" time) rather than waiting inside the call. Same errors as
    /// [`Self::get_task_status`].
    pub async fn get_task_status_once(
        &self,
        task_id: &str,
    ) -> Result<TaskStatusResponse, ApimartError> {
        let once = RetryPolicy {
            max_attempts: 1,
            ..self.inner.retry.clone()
        };
        self.read_task(task_id, &once).await
    }

    /// `GET {base}/tasks/{task_id}` under `policy`.
    async fn read_task(
        &self,
        task_id: &str,
        policy: &RetryPolicy,
    ) -> Result<TaskStatusResponse, ApimartError> {
        let segment = task_id_segment(task_id)?;
        let span = tracing::debug_span!(
            "apimart.get_task",
            apimart.task_id = %task_id,
            attempts = Empty,
            elapsed_ms = Empty,
        );
        let call_span = span.clone();
        let call = async {
            let started = Instant::now();
            let url = format!("{}/tasks/{segment}", self.inner.base_url);
            let (result, attempts) = retry::run(policy, ApimartError::is_retryable, |_| {
                let request = self.inner.http.get(&url);
                async move {
                    let endpoint = crate::config::Endpoint::TaskStatus;
                    let raw = self.attempt(endpoint, request).await?;
                    let result = parse::parse_status(&raw.body, task_id)
                        .map_err(|p| self.body_error(p, &raw));
                    self.attempt_answered(endpoint, &raw, &result);
                    result
                }
            })
            .await;
            if let Some(observer) = &self.inner.observer {
                observer.call_finished(
                    crate::config::Endpoint::TaskStatus,
                    attempts,
                    result.as_ref().err(),
                );
            }
            // This call's own span, not `Span::current()`: when the span is
            // filtered out, the current span is the caller's, which may have
            // fields of the same name (the recorded id would print twice there).
            let span = &call_span;
            span.record("attempts", attempts);
            span.record("elapsed_ms", elapsed_ms(started));
            match &result {
                Ok(status) => tracing::debug!(
                    status = %status.status,
                    progress = status.progress,
                    images = status.images.len(),
                    "task read"
                ),
                Err(err) => tracing::debug!(error = %err, "task read failed"),
            }
            result
        };
        call.instrument(span).await
    }

    /// One HTTP attempt: [`Self::execute`], reporting a failed attempt to the
    /// observer. A 2xx is reported by the caller through
    /// [`Self::attempt_answered`] once its body has been read.
    async fn attempt(
        &self,
        endpoint: crate::config::Endpoint,
        request: RequestBuilder,
    ) -> Result<RawResponse, ApimartError> {
        let result = self.execute(request).await;
        if let (Err(e), Some(observer)) = (&result, &self.inner.observer) {
            observer.attempt_finished(endpoint, e.http_status(), Some(e));
        }
        result
    }

    /// Reports an attempt that got a 2xx, with the outcome of reading its body.
    fn attempt_answered<T>(
        &self,
        endpoint: crate::config::Endpoint,
        raw: &RawResponse,
        result: &Result<T, ApimartError>,
    ) {
        if let Some(observer) = &self.inner.observer {
            observer.attempt_finished(endpoint, Some(raw.status.as_u16()), result.as_ref().err());
        }
    }

    /// Reads the account's balance: `GET {base}/balance` (docs/apimart.md, "Balance"), and
    /// `GET {base}/user/balance` when the first answers 404 (sources name both paths). For a
    /// readiness check or an alert before submits start failing with 402; see
    /// [`Balance::is_exhausted`]. Retries follow the [`RetryPolicy`] as for
    /// [`Self::get_task_status`].
    ///
    /// Errors: the status mapping of [`ApimartError`] (a bad key is `Unauthorized`);
    /// `Upstream` for a 2xx body whose `code` is not 200 or whose `success` is `false`;
    /// `Decode` when a 2xx body holds no balance field.
    pub async fn balance(&self) -> Result<Balance, ApimartError> {
        let span = tracing::debug_span!("apimart.balance", attempts = Empty, elapsed_ms = Empty);
        let call_span = span.clone();
        let call = async {
            let started = Instant::now();
            let (mut result, mut attempts_total) = self.balance_at("balance").await;
            if matches!(result, Err(ApimartError::NotFound { .. })) {
                let (second, attempts) = self.balance_at("user/balance").await;
                result = second;
                attempts_total += attempts;
            }
            if let Some(observer) = &self.inner.observer {
                observer.call_finished(
                    crate::config::Endpoint::Balance,
                    attempts_total,
                    result.as_ref().err(),
                );
            }
            let span = &call_span;
            span.record("attempts", attempts_total);
            span.record("elapsed_ms", elapsed_ms(started));
            match &result {
                Ok(b) => tracing::debug!(
                    remain_balance = ?b.remain_balance,
                    unlimited_quota = b.unlimited_quota,
                    "balance read"
                ),
                Err(err) => tracing::debug!(error = %err, "balance read failed"),
            }
            result
        };
        call.instrument(span).await
    }

    /// One balance read at `{base}/{path}`, with retries; also returns the attempts made.
    async fn balance_at(&self, path: &str) -> (Result<Balance, ApimartError>, u32) {
        let url = format!("{}/{path}", self.inner.base_url);
        retry::run(&self.inner.retry, ApimartError::is_retryable, |_| {
            let request = self.inner.http.get(&url);
            async move {
                let endpoint = crate::config::Endpoint::Balance;
                let raw = self.attempt(endpoint, request).await?;
                let result = parse::parse_balance(&raw.body, raw.status.as_u16())
                    .map_err(|p| self.body_error(p, &raw));
                self.attempt_answered(endpoint, &raw, &result);
                result
            }
        })
        .await
    }

    /// Sends one request and reads the answer; non-2xx statuses become errors here.
    async fn execute(&self, request: RequestBuilder) -> Result<RawResponse, ApimartError> {
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        if !status.is_success() {
            // A broken error body must not hide the status, which is what callers act on.
            let (body, _) = read_capped(response, MAX_ERROR_BODY_BYTES)
                .await
                .unwrap_or_default();
            let retry_after = headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| error::parse_retry_after(v, SystemTime::now()));
            let text = String::from_utf8_lossy(&body);
            // The raw body is for whoever debugs the upstream; the error keeps only its words.
            tracing::debug!(
                http.status = status.as_u16(),
                body = %error::truncate(
                    &error::redact_str(text.to_string(), self.inner.api_key.expose()),
                    MAX_LOGGED_BODY_BYTES
                ),
                "apimart error body"
            );
            return Err(error::from_status(status.as_u16(), retry_after, &text)
                .redact(self.inner.api_key.expose()));
        }
        let (body, complete) = read_capped(response, MAX_SUCCESS_BODY_BYTES)
            .await
            .map_err(|e| self.transport_error(&e))?;
        let raw = RawResponse {
            status,
            headers,
            body,
        };
        if !complete {
            return Err(self.body_error(
                BodyProblem::Invalid(format!("body exceeds {MAX_SUCCESS_BODY_BYTES} bytes")),
                &raw,
            ));
        }
        Ok(raw)
    }

    fn body_error(&self, problem: BodyProblem, raw: &RawResponse) -> ApimartError {
        let err = match problem {
            BodyProblem::Upstream { code, message } => ApimartError::Upstream { code, message },
            BodyProblem::Invalid(reason) => ApimartError::Decode {
                status: raw.status.as_u16(),
                // Redact before cutting, so a truncated key cannot survive as a prefix.
                body: String::from_utf8_lossy(&raw.body).into_owned(),
                reason,
            },
        };
        match err.redact(self.inner.api_key.expose()) {
            ApimartError::Decode {
                status,
                body,
                reason,
            } => ApimartError::Decode {
                status,
                body: error::truncate(&body, MAX_KEPT_BODY_BYTES),
                reason,
            },
            other => other,
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> ApimartError {
        let message = chain(e);
        // Connect first: a connect timeout is both, and it proves nothing was sent.
        let err = if e.is_connect() {
            ApimartError::Connect { message }
        } else if e.is_timeout() {
            ApimartError::Timeout
        } else if e.is_builder() {
            ApimartError::InvalidConfig(message)
        } else {
            ApimartError::Transport { message }
        };
        err.redact(self.inner.api_key.expose())
    }
}

/// Reads at most `cap` bytes of the body; the flag is `false` when the body was longer.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            let room = cap - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// An error and all its sources, joined by `: ` (reqwest's own message alone is vague).
fn chain(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

fn header_is_true(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn validate_base_url(raw: &str) -> Result<String, ApimartError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let bad = |why: &str| ApimartError::InvalidConfig(format!("base URL {trimmed:?} {why}"));
    let url = reqwest::Url::parse(trimmed).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    match url.scheme() {
        "http" => {}
        "https" if cfg!(feature = "rustls") => {}
        "https" => return Err(bad("needs TLS: enable the `rustls` feature")),
        _ => return Err(bad("must use http or https")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(trimmed.to_owned())
}

fn validate_idempotency_key(key: &str) -> Result<(), ApimartError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(ApimartError::InvalidInput {
            field: "idempotency_key",
            reason: format!(
                "must be 1-{MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters without spaces"
            ),
        })
    }
}

/// The task id as one percent-encoded path segment: every byte outside RFC 3986's unreserved
/// set is escaped, so `/`, `?`, `#` or `%` in an id cannot change the path or the query.
fn task_id_segment(task_id: &str) -> Result<String, ApimartError> {
    let refuse = |reason: &str| ApimartError::InvalidInput {
        field: "task_id",
        reason: reason.to_owned(),
    };
    if task_id.is_empty() {
        return Err(refuse("is empty"));
    }
    // URL parsers resolve these (even percent-encoded) as relative path steps.
    if task_id == "." || task_id == ".." {
        return Err(refuse("cannot be `.` or `..`"));
    }
    if task_id.len() > MAX_TASK_ID_LEN {
        return Err(refuse(&format!("is longer than {MAX_TASK_ID_LEN} bytes")));
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(task_id.len());
    for b in task_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_become_one_segment() {
        assert_eq!(
            task_id_segment("task_01K8ABC-x.y~z").ok().as_deref(),
            Some("task_01K8ABC-x.y~z")
        );
        assert_eq!(
            task_id_segment("a/b?c#d e%f").ok().as_deref(),
            Some("a%2Fb%3Fc%23d%20e%25f")
        );
        assert_eq!(task_id_segment("ü").ok().as_deref(), Some("%C3%BC"));
        for bad in ["", ".", ".."] {
            assert!(
                matches!(
                    task_id_segment(bad),
                    Err(ApimartError::InvalidInput {
                        field: "task_id",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert!(task_id_segment(&"x".repeat(MAX_TASK_ID_LEN + 1)).is_err());
    }

    #[test]
    fn idempotency_keys() {
        assert!(validate_idempotency_key("req-123_ABC:x").is_ok());
        assert!(validate_idempotency_key(&"k".repeat(191)).is_ok());
        for bad in [
            String::new(),
            "a b".into(),
            "k".repeat(192),
            "ключ".into(),
            "a\n".into(),
        ] {
            assert!(validate_idempotency_key(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            validate_base_url("http://127.0.0.1:9/v1/").ok().as_deref(),
            Some("http://127.0.0.1:9/v1")
        );
        assert_eq!(
            validate_base_url(" http://h/v1 ").ok().as_deref(),
            Some("http://h/v1")
        );
        for bad in [
            "",
            "not a url",
            "ftp://h/v1",
            "http://h/v1?x=1",
            "http://h/v1#f",
        ] {
            assert!(validate_base_url(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            validate_base_url("https://api.apimart.ai/v1").is_ok(),
            cfg!(feature = "rustls")
        );
    }
}
