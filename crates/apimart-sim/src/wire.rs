//! Error bodies in the shapes Apimart is seen to use (docs/apimart.md "Errors"): OpenAI-style
//! `{"error":{"message","type","code","param"}}` (the common one), `{"success":false,
//! "message"}`, `{"code","msg"}`, plain text, and the HTML error page of a proxy in front of
//! the API.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Seconds sent in `Retry-After` on every injected 429 (docs/apimart.md: 429 may carry it);
/// a 429 of the rate limit carries the actual wait instead.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The shape of an error body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStyle {
    /// `{"error":{"message","type","code","param"}}`.
    #[default]
    OpenAi,
    /// `{"success":false,"message":…}`.
    Success,
    /// `{"code":<http status>,"msg":…}`.
    CodeMsg,
    /// `text/plain` such as `502 Bad Gateway`, as a proxy in front of the API would send.
    Text,
    /// `text/html`: the error page of a reverse proxy (`<html>…<h1>502 Bad Gateway</h1>…`).
    Html,
}

impl std::str::FromStr for ErrorStyle {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "openai" => Ok(Self::OpenAi),
            "success" => Ok(Self::Success),
            "codemsg" => Ok(Self::CodeMsg),
            "text" => Ok(Self::Text),
            "html" => Ok(Self::Html),
            _ => Err(()),
        }
    }
}

/// One error answer; built by the handlers, turned into a response once.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    status: u16,
    kind: &'static str,
    code: &'static str,
    message: String,
    param: Option<String>,
    style: ErrorStyle,
    /// `Retry-After` seconds of a 429; [`RETRY_AFTER_SECS`] when `None`.
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            style: ErrorStyle::OpenAi,
            retry_after: None,
        }
    }

    /// 400 `invalid_request_error`, the body upstream sends for bad parameters.
    pub(crate) fn invalid(
        code: &'static str,
        message: impl Into<String>,
        param: Option<String>,
    ) -> Self {
        let mut e = Self::new(400, "invalid_request_error", code, message);
        e.param = param;
        e
    }

    pub(crate) fn unauthorized(message: &str) -> Self {
        Self::new(401, "authentication_error", "invalid_api_key", message)
    }

    pub(crate) fn insufficient_balance() -> Self {
        Self::new(
            402,
            "insufficient_quota",
            "insufficient_balance",
            "Insufficient account balance, please top up (simulated)",
        )
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "invalid_request_error", "not_found", message)
    }

    /// The canned answer for an injected fault with HTTP `status`.
    pub(crate) fn injected(status: u16) -> Self {
        let (kind, code, message) = match status {
            400 => (
                "invalid_request_error",
                "invalid_request",
                "Invalid request (simulated)",
            ),
            401 => (
                "authentication_error",
                "invalid_api_key",
                "Invalid API key (simulated)",
            ),
            402 => (
                "insufficient_quota",
                "insufficient_balance",
                "Insufficient account balance (simulated)",
            ),
            403 => (
                "permission_error",
                "model_not_allowed",
                "Model not allowed for this key (simulated)",
            ),
            404 => (
                "invalid_request_error",
                "not_found",
                "Not found (simulated)",
            ),
            408 => (
                "timeout_error",
                "request_timeout",
                "Request timeout (simulated)",
            ),
            409 => ("invalid_request_error", "conflict", "Conflict (simulated)"),
            429 => (
                "rate_limit_error",
                "rate_limit_exceeded",
                "Rate limit exceeded, retry later (simulated)",
            ),
            500 => (
                "server_error",
                "internal_error",
                "Internal server error (simulated)",
            ),
            502 => ("upstream_error", "bad_gateway", "Bad gateway (simulated)"),
            503 => (
                "server_error",
                "service_unavailable",
                "Service temporarily unavailable (simulated)",
            ),
            504 => (
                "upstream_error",
                "gateway_timeout",
                "Gateway timeout (simulated)",
            ),
            _ => ("api_error", "simulated_fault", "Simulated fault"),
        };
        Self::new(status, kind, code, message)
    }

    /// 429 of the rate limit, asking to come back after `retry_after_secs`.
    pub(crate) fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
            "Too many requests: rate limit exceeded, retry later (simulated)",
        );
        e.retry_after = Some(retry_after_secs);
        e
    }

    pub(crate) fn with_style(mut self, style: Option<ErrorStyle>) -> Self {
        if let Some(style) = style {
            self.style = style;
        }
        self
    }

    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    #[cfg(test)]
    pub(crate) fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    pub(crate) fn into_response(self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = HttpResponse::build(status);
        if status == StatusCode::TOO_MANY_REQUESTS {
            let secs = self.retry_after.unwrap_or(RETRY_AFTER_SECS);
            builder.insert_header((RETRY_AFTER, secs.to_string()));
        }
        let reason = status.canonical_reason().unwrap_or("Error");
        match self.style {
            ErrorStyle::OpenAi => builder.json(json!({
                "error": {
                    "message": self.message,
                    "type": self.kind,
                    "code": self.code,
                    "param": self.param,
                }
            })),
            ErrorStyle::Success => builder.json(json!({"success": false, "message": self.message})),
            ErrorStyle::CodeMsg => builder.json(json!({"code": self.status, "msg": self.message})),
            ErrorStyle::Text => builder
                .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
                .body(format!("{} {reason}", status.as_u16())),
            ErrorStyle::Html => builder
                .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
                .body(format!(
                    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n\
                     <center><h1>{code} {reason}</h1></center>\r\n<hr><center>apimart-sim proxy</center>\r\n\
                     </body>\r\n</html>\r\n",
                    code = status.as_u16()
                )),
        }
    }
}
