//! The client's error type, the mapping from HTTP error responses to it, and `Retry-After`.

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// Longest raw body kept in an error (`BadRequest::body`, `Decode::body`), in bytes: enough to
/// debug a response, small enough for a log line.
pub const MAX_KEPT_BODY_BYTES: usize = 2 * 1024;

/// Longest message extracted from a JSON error body, in bytes; upstream messages are a
/// sentence, anything longer is a dump.
const MAX_MESSAGE_BYTES: usize = 512;

/// Longest message made from an error body that is not JSON (an HTML error page of a proxy,
/// a text dump), in characters: its first visible words, without markup (see
/// `text::plain_text`). Such messages end up in stored task errors and callbacks.
pub const MAX_PLAIN_MESSAGE_CHARS: usize = 200;

/// Statuses worth another try (docs/apimart.md: the official client retries 408, 429, 502, 503,
/// 504; we add 500, which Apimart also returns for transient failures).
const RETRYABLE_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// What went wrong in a call to Apimart. Variants follow what a caller does next: fix the
/// request, fix the account, wait and retry, or find out whether a submit went through.
///
/// Messages are taken from the upstream body (docs/apimart.md, "Errors") and never contain the API
/// key: an upstream echo of the key is replaced by `***`.
#[derive(Debug, thiserror::Error)]
pub enum ApimartError {
    /// HTTP 400, or another 4xx (and any unexpected 1xx/3xx) not listed below: the request
    /// cannot succeed as sent. `body` is the raw body, at most [`MAX_KEPT_BODY_BYTES`].
    #[error("apimart rejected the request (HTTP {status}): {message}")]
    BadRequest {
        /// The HTTP status.
        status: u16,
        /// Best message found in the body.
        message: String,
        /// Raw body, truncated.
        body: String,
    },
    /// HTTP 401: the API key is missing or wrong.
    #[error("apimart rejected the API key (HTTP 401): {message}")]
    Unauthorized {
        /// Best message found in the body.
        message: String,
    },
    /// HTTP 402: the Apimart account has no balance left.
    #[error("apimart account balance is insufficient (HTTP 402): {message}")]
    InsufficientBalance {
        /// Best message found in the body.
        message: String,
    },
    /// HTTP 403: the key may not use this model or resource.
    #[error("apimart refused access (HTTP 403): {message}")]
    Forbidden {
        /// Best message found in the body.
        message: String,
    },
    /// HTTP 404: unknown task id (or a wrong base URL).
    #[error("apimart resource not found (HTTP 404): {message}")]
    NotFound {
        /// Best message found in the body.
        message: String,
    },
    /// HTTP 429. `retry_after` comes from the `Retry-After` header (seconds or HTTP date).
    #[error("apimart rate limit reached (HTTP 429): {message}")]
    RateLimited {
        /// How long upstream asked us to wait, when it said so.
        retry_after: Option<Duration>,
        /// Best message found in the body.
        message: String,
    },
    /// HTTP 408 or 5xx. For a submit the outcome is unknown except for 408. Displayed as
    /// `upstream server error (HTTP 502 Bad Gateway): <message>`.
    #[error("{}", server_error_text(*status, message))]
    Server {
        /// The HTTP status.
        status: u16,
        /// Best message found in the body (the first words of a non-JSON body, without
        /// markup, at most [`MAX_PLAIN_MESSAGE_CHARS`]), or the status's reason phrase.
        message: String,
    },
    /// The request did not complete within the configured timeout after the connection was
    /// open: upstream may or may not have acted on it.
    #[error("apimart request timed out; its outcome is unknown")]
    Timeout,
    /// The connection could not be opened (refused, DNS, TLS, connect timeout): the request
    /// never reached the server, so retrying is always safe.
    #[error("could not connect to apimart: {message}")]
    Connect {
        /// The transport error chain.
        message: String,
    },
    /// A 2xx response we could not understand. For a submit, a task may exist upstream whose
    /// id we lost. `body` is the raw body, at most [`MAX_KEPT_BODY_BYTES`].
    #[error("could not decode apimart response (HTTP {status}): {reason}")]
    Decode {
        /// The HTTP status (2xx).
        status: u16,
        /// Raw body, truncated.
        body: String,
        /// What was wrong with it.
        reason: String,
    },
    /// HTTP 2xx but the body reports a failure: its `code` is not 200 (docs/apimart.md:
    /// success carries `code: 200`), or, on a balance read, its `success` is `false`.
    #[error("apimart returned error code {code}: {message}")]
    Upstream {
        /// The body's `code` (the HTTP status when the body has `success: false` only).
        code: i64,
        /// The body's `msg`/`message`/`error.message`.
        message: String,
    },
    /// The configuration given to [`crate::ApimartClient::new`] is unusable.
    #[error("invalid apimart client configuration: {0}")]
    InvalidConfig(String),
    /// An argument cannot be sent as given (an empty or `..` task id, an idempotency key that
    /// is not 1–191 visible ASCII characters). Nothing was sent.
    #[error("invalid {field} for apimart: {reason}")]
    InvalidInput {
        /// Which argument: `task_id` or `idempotency_key`.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// Any other transport failure after the connection was open (connection reset, broken
    /// body). Upstream may have acted on the request.
    #[error("apimart transport error: {message}")]
    Transport {
        /// The transport error chain.
        message: String,
    },
}

impl ApimartError {
    /// Whether the same call may succeed if tried again later: 429, 408/500/502/503/504,
    /// timeouts, connect errors, and a body `code` among those statuses. Whether it is *safe*
    /// to repeat a submit is a separate question: see [`Self::outcome_unknown`].
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Timeout | Self::Connect { .. } => true,
            Self::Server { status, .. } => RETRYABLE_STATUSES.contains(status),
            Self::Upstream { code, .. } => u16::try_from(*code)
                .map(|c| RETRYABLE_STATUSES.contains(&c))
                .unwrap_or(false),
            _ => false,
        }
    }

    /// The HTTP status upstream answered with, when there was an HTTP answer whose status is
    /// not stored elsewhere: `None` for `Upstream` (HTTP 2xx with an error `code`), `Timeout`,
    /// `Connect`, `Transport`, `InvalidConfig` and `InvalidInput`.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::BadRequest { status, .. }
            | Self::Server { status, .. }
            | Self::Decode { status, .. } => Some(*status),
            Self::Unauthorized { .. } => Some(401),
            Self::InsufficientBalance { .. } => Some(402),
            Self::Forbidden { .. } => Some(403),
            Self::NotFound { .. } => Some(404),
            Self::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// The wait upstream asked for with `Retry-After` (429 only).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether upstream may have acted on the request although we got no usable answer: a
    /// timeout, a 5xx, a transport error after the connection was open, or a 2xx we could not
    /// decode. For a submit this means a task may exist: repeat it only with the same
    /// idempotency key.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Timeout | Self::Transport { .. } | Self::Decode { .. } => true,
            Self::Server { status, .. } => *status != 408,
            _ => false,
        }
    }

    /// Replaces every occurrence of `secret` in the error's text with `***`.
    pub(crate) fn redact(self, secret: &str) -> Self {
        let r = |s: String| redact_str(s, secret);
        match self {
            Self::BadRequest {
                status,
                message,
                body,
            } => Self::BadRequest {
                status,
                message: r(message),
                body: r(body),
            },
            Self::Unauthorized { message } => Self::Unauthorized {
                message: r(message),
            },
            Self::InsufficientBalance { message } => Self::InsufficientBalance {
                message: r(message),
            },
            Self::Forbidden { message } => Self::Forbidden {
                message: r(message),
            },
            Self::NotFound { message } => Self::NotFound {
                message: r(message),
            },
            Self::RateLimited {
                retry_after,
                message,
            } => Self::RateLimited {
                retry_after,
                message: r(message),
            },
            Self::Server { status, message } => Self::Server {
                status,
                message: r(message),
            },
            Self::Connect { message } => Self::Connect {
                message: r(message),
            },
            Self::Decode {
                status,
                body,
                reason,
            } => Self::Decode {
                status,
                body: r(body),
                reason: r(reason),
            },
            Self::Upstream { code, message } => Self::Upstream {
                code,
                message: r(message),
            },
            Self::InvalidConfig(message) => Self::InvalidConfig(r(message)),
            Self::InvalidInput { field, reason } => Self::InvalidInput {
                field,
                reason: r(reason),
            },
            Self::Transport { message } => Self::Transport {
                message: r(message),
            },
            Self::Timeout => Self::Timeout,
        }
    }
}

/// Shortest secret we search for: a shorter one would blank out ordinary words; real keys are
/// far longer.
const MIN_REDACTED_SECRET_LEN: usize = 6;

/// `s` with every occurrence of `secret` (when long enough to be one) replaced by `***`.
pub(crate) fn redact_str(s: String, secret: &str) -> String {
    if secret.len() >= MIN_REDACTED_SECRET_LEN && s.contains(secret) {
        s.replace(secret, "***")
    } else {
        s
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The error for a non-2xx response. `body` is the raw body (lossily decoded).
pub(crate) fn from_status(status: u16, retry_after: Option<Duration>, body: &str) -> ApimartError {
    let message = error_message(body).unwrap_or_else(|| default_message(status));
    match status {
        401 => ApimartError::Unauthorized { message },
        402 => ApimartError::InsufficientBalance { message },
        403 => ApimartError::Forbidden { message },
        404 => ApimartError::NotFound { message },
        429 => ApimartError::RateLimited {
            retry_after,
            message,
        },
        408 | 500..=599 => ApimartError::Server { status, message },
        _ => ApimartError::BadRequest {
            status,
            message,
            body: truncate(body, MAX_KEPT_BODY_BYTES),
        },
    }
}

fn default_message(status: u16) -> String {
    format!("HTTP {}", status_line(status))
}

/// `502 Bad Gateway`: the status and its reason phrase (RFC 9110).
fn status_line(status: u16) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("unexpected status");
    format!("{status} {reason}")
}

/// The text of [`ApimartError::Server`]; a message that only repeats the status is left out.
fn server_error_text(status: u16, message: &str) -> String {
    let head = format!("upstream server error (HTTP {})", status_line(status));
    if message.is_empty() || message == default_message(status) {
        head
    } else {
        format!("{head}: {message}")
    }
}

/// The best human message in an error body, in any of the shapes docs/apimart.md lists:
/// `{"error":{"message","type","code","param"}}`, `{"error":"…"}`, `{"success":false,
/// "message"}`, `{"code","msg"}`, `{"code","message"}`, or plain text. A body that is not
/// JSON (plain text, or the HTML error page of a proxy) gives its first visible words,
/// without markup, at most [`MAX_PLAIN_MESSAGE_CHARS`] characters.
pub(crate) fn error_message(body: &str) -> Option<String> {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return None;
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(json) => json_message(&json)
            .filter(|m| !m.trim().is_empty())
            .map(|m| truncate(m.trim(), MAX_MESSAGE_BYTES)),
        Err(_) => Some(crate::text::plain_text(trimmed, MAX_PLAIN_MESSAGE_CHARS))
            .filter(|m| !m.is_empty()),
    }
}

/// The message inside a JSON error body, if any.
pub(crate) fn json_message(json: &Value) -> Option<String> {
    fn text(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|s| !s.trim().is_empty())
    }
    match json.get("error") {
        Some(Value::Object(err)) => {
            if let Some(msg) = text(err.get("message")) {
                return Some(match text(err.get("param")) {
                    Some(param) => format!("{msg} (param: {param})"),
                    None => msg.to_owned(),
                });
            }
            if let Some(kind) = text(err.get("type")) {
                return Some(kind.to_owned());
            }
        }
        Some(Value::String(s)) if !s.trim().is_empty() => return Some(s.clone()),
        _ => {}
    }
    ["message", "msg", "detail", "error_description"]
        .iter()
        .find_map(|k| text(json.get(*k)))
        .map(str::to_owned)
        .or_else(|| match json {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            _ => None,
        })
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110 §10.2.3), relative to `now`. A date in
/// the past means "now" (zero); anything unparsable is `None`.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits but too large for u64: upstream wants a very long pause.
        return Some(
            value
                .parse()
                .map(Duration::from_secs)
                .unwrap_or(Duration::MAX),
        );
    }
    if let Ok(date) = httpdate::parse_http_date(value) {
        return Some(date.duration_since(now).unwrap_or(Duration::ZERO));
    }
    // Not allowed by the RFC, but seen in the wild: fractional seconds.
    value
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_every_documented_shape() {
        let cases = [
            (
                r#"{"error":{"message":"bad size","type":"invalid_request_error","code":"x","param":"size"}}"#,
                "bad size (param: size)",
            ),
            (r#"{"error":{"type":"quota_exceeded"}}"#, "quota_exceeded"),
            (r#"{"error":"nope"}"#, "nope"),
            (r#"{"success":false,"message":"no credit"}"#, "no credit"),
            (r#"{"code":401,"msg":"token invalid"}"#, "token invalid"),
            (r#"{"code":500,"message":"boom"}"#, "boom"),
            ("Bad Gateway\n", "Bad Gateway"),
            (
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
                "502 Bad Gateway nginx",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(error_message(body).as_deref(), Some(want), "{body}");
        }
        assert_eq!(error_message("  "), None);
        assert_eq!(error_message("{}"), None);
        assert_eq!(error_message("[1,2]"), None);
    }

    #[test]
    fn server_errors_name_the_status_and_reason_once() {
        let html = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>";
        assert_eq!(
            from_status(502, None, html).to_string(),
            "upstream server error (HTTP 502 Bad Gateway): 502 Bad Gateway nginx"
        );
        assert_eq!(
            from_status(503, None, "").to_string(),
            "upstream server error (HTTP 503 Service Unavailable)"
        );
        assert_eq!(
            from_status(500, None, "<p>").to_string(),
            "upstream server error (HTTP 500 Internal Server Error)"
        );
    }

    #[test]
    fn status_mapping() {
        assert!(matches!(
            from_status(400, None, ""),
            ApimartError::BadRequest { status: 400, .. }
        ));
        assert!(matches!(
            from_status(422, None, ""),
            ApimartError::BadRequest { status: 422, .. }
        ));
        assert!(matches!(
            from_status(302, None, ""),
            ApimartError::BadRequest { status: 302, .. }
        ));
        assert!(matches!(
            from_status(408, None, ""),
            ApimartError::Server { status: 408, .. }
        ));
        assert!(matches!(
            from_status(501, None, ""),
            ApimartError::Server { status: 501, .. }
        ));
        match from_status(503, None, "") {
            ApimartError::Server { message, .. } => {
                assert_eq!(message, "HTTP 503 Service Unavailable")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn classification() {
        let server = |status| ApimartError::Server {
            status,
            message: String::new(),
        };
        assert!(server(503).is_retryable() && server(503).outcome_unknown());
        assert!(server(408).is_retryable() && !server(408).outcome_unknown());
        assert!(!server(501).is_retryable() && server(501).outcome_unknown());
        assert!(ApimartError::Timeout.outcome_unknown());
        let connect = ApimartError::Connect {
            message: String::new(),
        };
        assert!(connect.is_retryable() && !connect.outcome_unknown());
        let up = |code| ApimartError::Upstream {
            code,
            message: String::new(),
        };
        assert!(up(503).is_retryable() && !up(400).is_retryable() && !up(-1).is_retryable());
        assert_eq!(up(500).http_status(), None);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::MAX)
        );
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn redaction_replaces_secret_everywhere() {
        let err = ApimartError::BadRequest {
            status: 400,
            message: "key sk-secret-1 is bad".into(),
            body: "{\"key\":\"sk-secret-1\"}".into(),
        }
        .redact("sk-secret-1");
        let text = format!("{err:?} {err}");
        assert!(!text.contains("sk-secret-1"), "{text}");
        assert!(text.contains("***"));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
