//! HTTP routes, the bearer-token check, request spans and metrics, and the
//! envelope for every error the framework itself would otherwise answer.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use tracing::Instrument as _;

use modelgen_domain::{FieldError, ImageMime};
use modelgen_persistence::BlobStore;

use crate::config::Secret;
use crate::dto::{
    CreateDefaultRequest, CreateEditRequest, CreateOutfitRequest, CreatedTask, TaskPage, TaskView,
};
use crate::error::{ApiError, Envelope, ErrorEnvelope};
use crate::health::Readiness;
use crate::service::TaskService;

/// Blob-store prefix of result images, the only ones `/images/{key}` serves.
pub const RESULTS_PREFIX: &str = modelgen_persistence::RESULTS_PREFIX;

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct HttpState {
    /// Request-path logic.
    pub service: TaskService,
    /// Image bytes, served at `/images/{key}`.
    pub blobs: Arc<dyn BlobStore>,
    /// Readiness checks.
    pub readiness: Readiness,
    /// Prometheus exposition.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// When set, every route but health, metrics, docs and images needs `Authorization: Bearer <token>`.
    pub auth_token: Option<Secret>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Admin operations on the callback outbox.
    pub admin: crate::admin::Admin,
    /// Erasure of a user's data.
    pub privacy: Arc<crate::privacy::Privacy>,
    /// Whether `/images/{key}` serves results (`IMAGE_URL_MODE=public`); in
    /// presigned mode it answers 404, so expiry cannot be bypassed.
    pub serve_images: bool,
    /// When set, `GET /metrics` needs `Authorization: Bearer <token>` (`METRICS_AUTH_TOKEN`).
    pub metrics_token: Option<Secret>,
    /// Task timelines and usage sums.
    pub events: Arc<dyn modelgen_persistence::EventLog>,
    /// Sends the console's test callback; `None` without `CALLBACK_URL`.
    pub callback_tester: Option<crate::console::CallbackTester>,
    /// Origin of result image URLs, added to the console's `img-src` (e.g.
    /// `PUBLIC_BASE_URL`'s, or an S3 endpoint's).
    pub console_image_origin: Option<String>,
}

/// Whether the request carries exactly one `Authorization: Bearer <token>`
/// header with this token (compared in constant time).
fn bearer_matches(req: &HttpRequest, token: &Secret) -> bool {
    let mut values = req.headers().get_all(header::AUTHORIZATION);
    let first = values.next();
    // Two Authorization headers are ambiguous: refuse rather than pick one.
    if values.next().is_some() {
        return false;
    }
    first
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, presented)| presented.trim())
        .is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.expose().as_bytes())))
}

/// Registers every route on an actix `App`. Each path is one resource with
/// one method; another method on it answers 405/1009 with `Allow`, and a path
/// that is none of these answers 404/1003.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::NotFound(format!("not found: {e}")).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::field("query", e.to_string()).into()),
    )
    .service(endpoint("/models/default", Method::POST, create_default))
    .service(endpoint("/models/edit", Method::POST, create_edit))
    .service(endpoint("/models/outfit", Method::POST, create_outfit))
    .service(endpoint("/tasks", Method::GET, list_tasks))
    .service(endpoint("/tasks/{task_id}", Method::GET, get_task))
    .service(endpoint(
        "/tasks/{task_id}/events",
        Method::GET,
        crate::timeline::task_events,
    ))
    .service(endpoint("/usage", Method::GET, crate::timeline::usage))
    .service(endpoint(
        "/admin/tasks/retry",
        Method::POST,
        crate::timeline::retry_tasks,
    ))
    .service(endpoint(
        "/tasks/{task_id}/cancel",
        Method::POST,
        cancel_task,
    ))
    .service(endpoint("/admin/stats", Method::GET, crate::console::stats))
    .service(endpoint(
        "/admin/tasks/{task_id}/inputs",
        Method::GET,
        crate::console::task_inputs,
    ))
    .service(endpoint(
        "/admin/tasks/{task_id}/inputs/{n}",
        Method::GET,
        crate::console::task_input,
    ))
    .service(endpoint(
        "/admin/tasks/{task_id}/retry",
        Method::POST,
        crate::console::retry_task,
    ))
    .service(endpoint(
        "/admin/callbacks/test",
        Method::POST,
        crate::console::test_callback,
    ))
    .service(endpoint(
        "/console",
        Method::GET,
        crate::console::console_file,
    ))
    .service(endpoint(
        "/console/{file:.*}",
        Method::GET,
        crate::console::console_file,
    ))
    .service(endpoint("/images/{key:.+}", Method::GET, get_image))
    .service(endpoint("/healthz", Method::GET, crate::health::healthz))
    .service(endpoint("/readyz", Method::GET, crate::health::readyz))
    .service(endpoint("/metrics", Method::GET, metrics_text))
    .service(endpoint(
        "/openapi.json",
        Method::GET,
        crate::openapi::openapi_json,
    ))
    .service(endpoint(
        "/docs",
        Method::GET,
        crate::openapi::docs_redirect,
    ))
    .service(crate::openapi::swagger_ui())
    .service(endpoint(
        "/admin/callbacks",
        Method::GET,
        crate::admin::list_callbacks,
    ))
    .service(endpoint(
        "/admin/callbacks/redeliver-dead",
        Method::POST,
        crate::admin::redeliver_all_dead,
    ))
    .service(endpoint(
        "/admin/callbacks/{event_id}/redeliver",
        Method::POST,
        crate::admin::redeliver,
    ))
    .service(endpoint(
        "/admin/users/{user_id}/data",
        Method::DELETE,
        crate::privacy::purge_user_data,
    ))
    .default_service(web::to(not_found));
}

/// Registers the routes of a `serve --workers-only` replica: `/healthz`,
/// `/readyz` and `/metrics` (still behind `METRICS_AUTH_TOKEN`; GET and
/// HEAD); every other path is 404 in the envelope, so no API request can
/// land on a worker.
pub fn configure_probes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/healthz", Method::GET, crate::health::healthz))
        .service(endpoint("/readyz", Method::GET, crate::health::readyz))
        .service(endpoint("/metrics", Method::GET, metrics_text))
        .default_service(web::to(not_found));
}

/// A path served by `handler` for `method` (a GET path also answers HEAD,
/// which every general-purpose server must support: RFC 9110 §9.1); any
/// other method gets 405/1009 with `Allow` listing the ones it has (RFC 9110
/// §15.5.6).
fn endpoint<F, Args>(path: &str, method: Method, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    let (route, allow) = if method == Method::GET {
        (
            web::route()
                .guard(actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head())),
            "GET, HEAD".to_string(),
        )
    } else {
        (web::method(method.clone()), method.to_string())
    };
    web::resource(path)
        .route(route.to(handler))
        .default_service(web::to(move |req: HttpRequest| {
            let allow = allow.clone();
            async move { Err::<HttpResponse, _>(method_not_allowed(&req, allow)) }
        }))
}

/// Longest path echoed in a message, characters.
const MAX_ECHOED_PATH_CHARS: usize = 100;

/// The request path for a message, cut at [`MAX_ECHOED_PATH_CHARS`].
fn echoed_path(req: &HttpRequest) -> String {
    let path = req.path();
    let mut shown: String = path.chars().take(MAX_ECHOED_PATH_CHARS).collect();
    if shown.len() < path.len() {
        shown.push('…');
    }
    shown
}

fn method_not_allowed(req: &HttpRequest, allow: String) -> ApiError {
    ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: echoed_path(req),
        allow,
    }
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        echoed_path(&req)
    )))
}

/// Paths open without a token: probes, metrics, API description and its
/// Swagger UI page, the operator console's static files (its data calls
/// carry the token), images
/// (their keys hold unguessable task ids and the Java side hands them to browsers).
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/docs"
    ) || path.starts_with("/images/")
        // The Swagger UI page and its assets: a browser cannot send the
        // token for them; the calls it tries carry it (its Authorize button).
        || path.starts_with("/docs/")
        || crate::console::is_console_path(path)
}

/// Middleware: request id, span, metrics, bearer-token check.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| ulid::Ulid::generate().to_string());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let span = tracing::info_span!("request", request.id = %request_id, http.method = %method, http.route = %route);

    let state = req.app_data::<web::Data<HttpState>>().cloned();
    let denied = match state.as_ref().and_then(|s| s.auth_token.clone()) {
        Some(token) if !is_public(req.path()) => !bearer_matches(req.request(), &token),
        _ => false,
    };
    let refused = if denied {
        Some(ApiError::Unauthorized)
    } else {
        browser_refusal(req.request())
    };

    let mut response = if let Some(refusal) = refused {
        let (http_req, _) = req.into_parts();
        ServiceResponse::new(http_req, actix_web::ResponseError::error_response(&refusal))
            .map_into_right_body()
    } else {
        next.call(req)
            .instrument(span.clone())
            .await?
            .map_into_left_body()
    };

    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route.clone(), "method" => method.clone()).record(elapsed);
    span.in_scope(|| {
        tracing::info!(
            http.status = status,
            elapsed_ms = (elapsed * 1000.0) as u64,
            "request finished"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), v);
    }
    Ok(response)
}

/// What a browser can send another site's server without a CORS preflight
/// (the Fetch standard's "CORS-safelisted" request types): an HTML form or a
/// `fetch` with one of these types, or with no body at all.
const SIMPLE_REQUEST_TYPES: [&str; 3] = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

/// Refuses, for every state-changing method (anything but GET, HEAD and
/// OPTIONS), what only a cross-site browser request looks like, before any
/// handler runs: more than one `Content-Type` header (415/1008: ambiguous,
/// a proxy may read the other one), a form or `text/plain` type on any route
/// — the ones that take no body too, e.g. cancel — (415/1008), and
/// `Sec-Fetch-Site: cross-site|same-site` (403/1011), which browsers set on
/// every request and servers never do. `None` lets the request through.
pub fn browser_refusal(req: &HttpRequest) -> Option<ApiError> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let headers = req.headers();
    let mut types = headers.get_all(header::CONTENT_TYPE);
    if let Some(first) = types.next() {
        if types.next().is_some() {
            return Some(ApiError::UnsupportedMediaType(
                "more than one Content-Type header; send exactly one: application/json".into(),
            ));
        }
        let essence = first
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if SIMPLE_REQUEST_TYPES
            .iter()
            .any(|t| essence.eq_ignore_ascii_case(t))
        {
            return Some(ApiError::UnsupportedMediaType(format!(
                "Content-Type `{}` is what a cross-site HTML form sends: modelgen takes JSON bodies only (Content-Type: application/json), and no body where a route takes none",
                echoed_media_type(essence)
            )));
        }
    }
    let site = headers.get("sec-fetch-site")?.to_str().ok()?;
    (site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site")).then(|| {
        ApiError::CrossSite {
            method: req.method().to_string(),
            site: site.to_ascii_lowercase(),
        }
    })
}

/// Checks the declared type ([`check_json_content_type`], 415/1008), reads the
/// body with the size cap (413/1007) and parses it as JSON into `T`
/// ([`decode_json_body`], 400/1001 naming the field).
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    max: usize,
) -> Result<T, ApiError> {
    check_json_content_type(
        req.headers()
            .get(header::CONTENT_TYPE)
            .map(HeaderValue::as_bytes),
    )?;
    let too_large = || ApiError::TooLarge(format!("request body exceeds {max} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large());
    }
    let read = async {
        let mut payload = payload;
        let mut body: Vec<u8> = Vec::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadRequest(format!("could not read body: {e}")))?;
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            if let Some(room) =
                room_for_declared(declared, body.len() + chunk.len(), body.capacity())
            {
                body.reserve_exact(room - body.len());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    // A client that announces a body and then stalls must not hold a connection forever.
    let body = tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "request body not received within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ))
        })??;
    decode_json_body(&body)
}

/// The capacity a request body being read should be given at once, if any:
/// its declared `Content-Length` (`declared`, already checked against the size
/// cap), once a quarter of it has arrived (`received`, this chunk included) and
/// the buffer's `capacity` is smaller. Bytes.
///
/// Without it the buffer grows by doubling: a 13.9 MB body (a 10 MB image in
/// base64) ended in a 16 MiB buffer, copied on each growth, and the peak of a
/// create was 3.4 times the image (docs/benchmarks.md, "Memory"). Waiting for a
/// quarter keeps a client that declares a large body and then stalls from
/// holding more than four times what it sent.
fn room_for_declared(declared: Option<usize>, received: usize, capacity: usize) -> Option<usize> {
    let declared = declared?;
    (received >= declared / 4 && capacity < declared).then_some(declared)
}

/// Longest media type or charset echoed in a 415 message, characters.
const MAX_ECHOED_MEDIA_TYPE_CHARS: usize = 64;

/// A client's media type or charset, fit for a message: visible ASCII only, shortened.
fn echoed_media_type(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(char::is_ascii_graphic)
        .take(MAX_ECHOED_MEDIA_TYPE_CHARS)
        .collect();
    if text.chars().count() > MAX_ECHOED_MEDIA_TYPE_CHARS {
        out.push('…');
    }
    out
}

/// Checks that a request body is declared as UTF-8 JSON: `Content-Type`
/// (the header's raw value, `None` when absent) must be `application/json`
/// in any case, with any parameters; a `charset` parameter, when present,
/// must name UTF-8 (`utf-8` or `utf8`, any case, quoted or not). Media type
/// syntax: RFC 9110 §8.3.1; JSON is UTF-8 on the wire: RFC 8259 §8.1.
///
/// Everything else is refused, a missing header included, because every
/// other way of sending a body is one a web page can use cross-site without
/// a CORS preflight (HTML forms send `application/x-www-form-urlencoded`,
/// `multipart/form-data` or `text/plain`; `fetch` with a byte body sends no
/// `Content-Type` at all). `+json` types are refused too: the API only
/// speaks plain JSON.
///
/// # Errors
/// [`ApiError::UnsupportedMediaType`] (415/1008), saying what to send.
pub fn check_json_content_type(value: Option<&[u8]>) -> Result<(), ApiError> {
    const HINT: &str = "send the body as UTF-8 JSON with Content-Type: application/json";
    let Some(raw) = value else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type is missing; {HINT}"
        )));
    };
    let Ok(text) = std::str::from_utf8(raw) else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type is not readable text; {HINT}"
        )));
    };
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type `{}` is not supported; {HINT}",
            echoed_media_type(essence)
        )));
    }
    for param in parts {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if !(value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "charset `{}` is not supported: the body must be UTF-8 JSON (Content-Type: application/json; charset=utf-8)",
                echoed_media_type(value)
            )));
        }
    }
    Ok(())
}

/// The UTF-8 byte order mark, which RFC 8259 §8.1 lets a parser ignore.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses a request body (already read, within the size cap) as one JSON
/// object into `T`. Pure: the HTTP layer and the fuzz tests use it alike.
///
/// # Errors
/// 400/1001: a body that is not UTF-8 (field `body`, with the byte offset),
/// empty, not an object, malformed JSON (line and column), a field of the
/// wrong type (its JSON path), or data after the object.
pub fn decode_json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = body.strip_prefix(UTF8_BOM).unwrap_or(body);
    if let Err(e) = std::str::from_utf8(body) {
        return Err(ApiError::field(
            "body",
            format!(
                "is not valid UTF-8 (at byte {}): the body must be UTF-8 encoded JSON",
                e.valid_up_to()
            ),
        ));
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::field("body", "a JSON object is required")),
        Some(b'{') => {}
        Some(_) => return Err(ApiError::field("body", "must be a JSON object")),
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." || path == "?" || path.is_empty() {
            "body".to_string()
        } else {
            path
        };
        let message = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!(
                    "malformed JSON at line {} column {}",
                    inner.line(),
                    inner.column()
                )
            }
            _ => {
                // serde's message ends with " at line L column C"; keep the useful part.
                let text = inner.to_string();
                client_message(text.split(" at line ").next().unwrap_or(&text))
            }
        };
        ApiError::Invalid(vec![FieldError { field, message }])
    })?;
    de.end().map_err(|e| {
        ApiError::field(
            "body",
            format!(
                "unexpected data after the JSON object at line {} column {}",
                e.line(),
                e.column()
            ),
        )
    })?;
    Ok(value)
}

/// Longest wait for a request body once its headers arrived.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest quoted value kept in an error message, characters.
const MAX_ECHOED_VALUE_CHARS: usize = 40;

/// Makes a serde type error fit for a client: shortens echoed values (they may
/// be whole images) and replaces Rust type names with JSON terms.
fn client_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(256));
    let mut rest = text;
    // Shorten every `"…"` run.
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let close = after.find('"').unwrap_or(after.len());
        let quoted = &after[..close];
        if quoted.chars().count() > MAX_ECHOED_VALUE_CHARS {
            out.extend(quoted.chars().take(MAX_ECHOED_VALUE_CHARS));
            out.push('…');
        } else {
            out.push_str(quoted);
        }
        rest = after.get(close..).unwrap_or("");
        if let Some(stripped) = rest.strip_prefix('"') {
            out.push('"');
            rest = stripped;
        }
    }
    out.push_str(rest);
    let mut out = out
        .replace(
            "data did not match any variant of untagged enum OneOrMany",
            "expected an image string or a list of image strings",
        )
        .replace("f64", "a number")
        .replace("u16", "an integer");
    while let Some(i) = out.find("struct ") {
        let end = out[i + 7..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(out.len(), |e| i + 7 + e);
        out.replace_range(i..end, "a JSON object");
    }
    out
}

/// The `Idempotency-Key` header, if sent. A key that is present but empty or
/// not visible ASCII is an error, never silently dropped: dropping it would
/// turn a client's safe retry into a second task.
fn idempotency_header(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    match req.headers().get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if !k.trim().is_empty() => Ok(Some(k.to_string())),
            _ => Err(ApiError::field(
                "Idempotency-Key",
                "must be 1 to 64 visible ASCII characters",
            )),
        },
    }
}

/// Header: `MAX_QUEUED_TASKS` (draft-ietf-httpapi-ratelimit-headers, the
/// `RateLimit-*` trio; docs/design.md says why).
pub const HEADER_RATELIMIT_LIMIT: &str = "RateLimit-Limit";
/// Header: creates left before the queue is full.
pub const HEADER_RATELIMIT_REMAINING: &str = "RateLimit-Remaining";
/// Header: seconds until the whole limit is free again.
pub const HEADER_RATELIMIT_RESET: &str = "RateLimit-Reset";

/// Adds the `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
/// headers of `quota` (creates and their 429).
pub fn insert_rate_limit(
    builder: &mut actix_web::HttpResponseBuilder,
    quota: crate::admission::Quota,
) {
    builder
        .insert_header((HEADER_RATELIMIT_LIMIT, quota.limit.to_string()))
        .insert_header((HEADER_RATELIMIT_REMAINING, quota.remaining.to_string()))
        .insert_header((HEADER_RATELIMIT_RESET, quota.reset.to_string()));
}

fn created_response(created: crate::service::Created) -> HttpResponse {
    let mut builder = if created.replayed {
        let mut b = HttpResponse::Ok();
        b.insert_header(("Idempotency-Replayed", "true"));
        b
    } else {
        HttpResponse::Accepted()
    };
    if let Some(quota) = created.rate_limit {
        insert_rate_limit(&mut builder, quota);
    }
    if created.replayed {
        builder.json(Envelope::ok("success", created.task))
    } else {
        builder.json(Envelope::ok("accepted", created.task))
    }
}

/// `POST /models/default`: create an F1 task (202), or replay one (200).
#[utoipa::path(post, path = "/models/default", tag = "models",
    description = "F1: the digital model of a user from a front photo and a body profile.",
    request_body = CreateDefaultRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Idempotency key per user (same as `request_id`, at most 64 chars)")),
    responses(
        (status = 202, description = "Task accepted (code 0, msg `accepted`)", body = Envelope<CreatedTask>, headers(
            ("RateLimit-Limit" = u64, description = "`MAX_QUEUED_TASKS` (absent when there is no limit)"),
            ("RateLimit-Remaining" = u64, description = "Creates left before the queue of tasks waiting to be submitted is full, as this replica counts it"),
            ("RateLimit-Reset" = u64, description = "Seconds until the queue as it stands has drained at the measured rate"))),
        (status = 200, description = "Idempotent replay of an existing task; header `Idempotency-Replayed: true`", body = Envelope<CreatedTask>, headers(
            ("Idempotency-Replayed" = String, description = "`true`"),
            ("RateLimit-Limit" = u64, description = "As on 202"),
            ("RateLimit-Remaining" = u64, description = "As on 202"),
            ("RateLimit-Reset" = u64, description = "As on 202"))),
        (status = 400, description = "Invalid parameters (1001), every bad field listed", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = ErrorEnvelope),
        (status = 409, description = "`request_id` reused with another payload (1006)", body = ErrorEnvelope),
        (status = 413, description = "Body too large (1007)", body = ErrorEnvelope),
        (status = 415, description = "Body not declared as `Content-Type: application/json` (UTF-8), or missing that header (1008)", body = ErrorEnvelope),
        (status = 429, description = "Queue full (1010): `MAX_QUEUED_TASKS` tasks wait to be submitted upstream; nothing was stored. Header `Retry-After` (seconds, 1–300) estimates when there is room, from the measured drain rate. A replay of an existing idempotency key is still answered 200", body = ErrorEnvelope, headers(
            ("Retry-After" = u64, description = "Seconds, 1–300"),
            ("RateLimit-Limit" = u64, description = "`MAX_QUEUED_TASKS`"),
            ("RateLimit-Remaining" = u64, description = "0"),
            ("RateLimit-Reset" = u64, description = "The same seconds as `Retry-After`"))),
        (status = 500, description = "Internal error (1004)", body = ErrorEnvelope),
        (status = 503, description = "Database or storage unavailable (1004); nothing was stored", body = ErrorEnvelope, headers(
            ("Retry-After" = u64, description = "Seconds before retrying (5)"))),
    ),
    security(("bearer" = []), ())
)]
pub async fn create_default(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&req, payload, state.max_body_bytes).await?;
    let key = idempotency_header(&req)?;
    Ok(created_response(
        state.service.create_default(body, key.as_deref()).await?,
    ))
}

/// `POST /models/edit`: create an F2 task on a completed base model.
#[utoipa::path(post, path = "/models/edit", tag = "models",
    description = "F2: an edit of a completed default or edit task of the same user.",
    request_body = CreateEditRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Idempotency key per user (same as `request_id`, at most 64 chars)")),
    responses(
        (status = 202, description = "Task accepted (code 0, msg `accepted`)", body = Envelope<CreatedTask>, headers(
            ("RateLimit-Limit" = u64, description = "`MAX_QUEUED_TASKS` (absent when there is no limit)"),
            ("RateLimit-Remaining" = u64, description = "Creates left before the queue of tasks waiting to be submitted is full, as this replica counts it"),
            ("RateLimit-Reset" = u64, description = "Seconds until the queue as it stands has drained at the measured rate"))),
        (status = 200, description = "Idempotent replay of an existing task; header `Idempotency-Replayed: true`", body = Envelope<CreatedTask>, headers(
            ("Idempotency-Replayed" = String, description = "`true`"),
            ("RateLimit-Limit" = u64, description = "As on 202"),
            ("RateLimit-Remaining" = u64, description = "As on 202"),
            ("RateLimit-Reset" = u64, description = "As on 202"))),
        (status = 400, description = "Invalid parameters (1001), every bad field listed", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = ErrorEnvelope),
        (status = 409, description = "`request_id` reused with another payload (1006)", body = ErrorEnvelope),
        (status = 413, description = "Body too large (1007)", body = ErrorEnvelope),
        (status = 415, description = "Body not declared as `Content-Type: application/json` (UTF-8), or missing that header (1008)", body = ErrorEnvelope),
        (status = 429, description = "Queue full (1010): `MAX_QUEUED_TASKS` tasks wait to be submitted upstream; nothing was stored. Header `Retry-After` (seconds, 1–300) estimates when there is room, from the measured drain rate. A replay of an existing idempotency key is still answered 200", body = ErrorEnvelope, headers(
            ("Retry-After" = u64, description = "Seconds, 1–300"),
            ("RateLimit-Limit" = u64, description = "`MAX_QUEUED_TASKS`"),
            ("RateLimit-Remaining" = u64, description = "0"),
            ("RateLimit-Reset" = u64, description = "The same seconds as `Retry-After`"))),
        (status = 500, description = "Internal error (1004)", body = ErrorEnvelope),
        (status = 503, description = "Database or storage unavailable (1004); nothing was stored", body = ErrorEnvelope, headers(
            ("Retry-After" = u64, description = "Seconds before retrying (5)"))),
        (status = 404, description = "Base model task unknown or of another user (1003)", body = ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn create_edit(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&req, payload, state.max_body_bytes).await?;
    let key = idempotency_header(&req)?;
    Ok(created_response(
        state.service.create_edit(body, key.as_deref()).await?,
    ))
}

/// `POST /models/outfit`: create an F3 task on a completed base model.
#[utoipa::path(post, path = "/models/outfit", tag = "models",
    description = "F3: the model wearing 1 to 5 garments, seen from the front, side or back.",
    request_body = CreateOutfitRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Idempotency key per user (same as `request_id`, at most 64 chars)")),
    responses(
        (status = 202, description = "Task accepted (code 0, msg `accepted`)", body = Envelope<CreatedTask>, headers(
            ("RateLimit-Limit" = u64, description = "`MAX_QUEUED_TASKS` (absent when there is no limit)"),
            ("RateLimit-Remaining" = u64, description = "Creates left before the queue of tasks waiting to be submitted is full, as this replica counts it"),
            ("RateLimit-Reset" = u64, description = "Seconds until the queue as it stands has drained at the measured rate"))),
        (status = 200, description = "Idempotent replay of an existing task; header `Idempotency-Replayed: true`", body = Envelope<CreatedTask>, headers(
            ("Idempotency-Replayed" = String, description = "`true`"),
            ("RateLimit-Limit" = u64, description = "As on 202"),
            ("RateLimit-Remaining" = u64, description = "As on 202"),
            ("RateLimit-Reset" = u64, description = "As on 202"))),
        (status = 400, description = "Invalid parameters (1001), every bad field listed", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = ErrorEnvelope),
        (status = 409, description = "`request_id` reused with another payload (1006)", body = ErrorEnvelope),
        (status = 413, description = "Body too large (1007)", body = ErrorEnvelope),
        (status = 415, description = "Body not declared as `Content-Type: application/json` (UTF-8), or missing that header (1008)", body = ErrorEnvelope),
        (status = 429, description = "Queue full (1010): `MAX_QUEUED_TASKS` tasks wait to be submitted upstream; nothing was stored. Header `Retry-After` (seconds, 1–300) estimates when there is room, from the measured drain rate. A replay of an existing idempotency key is still answered 200", body = ErrorEnvelope, headers(
            ("Retry-After" = u64, description = "Seconds, 1–300"),
            ("RateLimit-Limit" = u64, description = "`MAX_QUEUED_TASKS`"),
            ("RateLimit-Remaining" = u64, description = "0"),
            ("RateLimit-Reset" = u64, description = "The same seconds as `Retry-After`"))),
        (status = 500, description = "Internal error (1004)", body = ErrorEnvelope),
        (status = 503, description = "Database or storage unavailable (1004); nothing was stored", body = ErrorEnvelope, headers(
            ("Retry-After" = u64, description = "Seconds before retrying (5)"))),
        (status = 404, description = "Base model task unknown or of another user (1003)", body = ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn create_outfit(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let body = json_body(&req, payload, state.max_body_bytes).await?;
    let key = idempotency_header(&req)?;
    Ok(created_response(
        state.service.create_outfit(body, key.as_deref()).await?,
    ))
}

/// Query of `GET /tasks/{task_id}`.
#[derive(Debug, Deserialize)]
pub struct TaskQueryParams {
    /// Comma-separated extras; only `image_base64`.
    pub include: Option<String>,
    /// Seconds to hold the request until the task is terminal (0 to
    /// `MAX_WAIT`; more is cut to `MAX_WAIT`); a string so a bad value is a
    /// 1001 field error.
    pub wait: Option<String>,
}

/// Parses a wait in whole seconds (`wait=N`): digits only, 0 to
/// 9 223 372 036 854 775 807 (the document's `int64`, a Java `long`); the
/// caller cuts it to `MAX_WAIT`.
fn parse_wait_seconds(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().and_then(|n| u64::try_from(n).ok())
}

/// The wait a request asks for: `?wait=N`, else the `wait` preference of
/// `Prefer` (RFC 7240 §4.3; other preferences are ignored); `None` when
/// neither is given.
///
/// # Errors
/// 400/1001 naming `wait` or `Prefer` when the value is not a whole number
/// of seconds.
fn requested_wait(req: &HttpRequest, query: Option<&str>) -> Result<Option<u64>, ApiError> {
    const MESSAGE: &str = "must be a whole number of seconds (0 to 9223372036854775807)";
    if let Some(raw) = query {
        return parse_wait_seconds(raw)
            .map(Some)
            .ok_or_else(|| ApiError::field("wait", MESSAGE));
    }
    for value in req.headers().get_all("prefer") {
        let Ok(value) = value.to_str() else {
            return Err(ApiError::field("Prefer", "must be visible ASCII"));
        };
        for preference in value.split(',') {
            let token = preference.split(';').next().unwrap_or_default();
            let (name, raw) = token.split_once('=').unwrap_or((token, ""));
            if name.trim().eq_ignore_ascii_case("wait") {
                return parse_wait_seconds(raw.trim().trim_matches('"'))
                    .map(Some)
                    .ok_or_else(|| ApiError::field("Prefer", format!("wait {MESSAGE}")));
            }
        }
    }
    Ok(None)
}

/// What `include=` may name.
const INCLUDE_IMAGE_BASE64: &str = "image_base64";

/// `GET /tasks/{task_id}`: the task view.
#[utoipa::path(get, path = "/tasks/{task_id}", tag = "tasks",
    params(
        ("task_id" = String, Path, max_length = 128, example = "task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W", description = "A task id: `task_` + ULID for new tasks; imported tasks keep their own ids (1–128 characters of ASCII letters, digits and `- . _ ~ ! $ & ' ( ) * + , ; = : @`). Unknown or malformed ids are 404/1003."),
        ("include" = Option<String>, Query, description = "`image_base64`: add each image's inline base64 copy (`images[].image_base64`), when one was stored (`IMAGE_BASE64=true`). Never included by default."),
        ("wait" = Option<u64>, Query, description = "Hold the request until the task is terminal (`completed`, `failed`, `cancelled`) or this many seconds have passed, then answer the current view. A whole number of seconds (an `int64`); more than `MAX_WAIT` (default 60) is cut to `MAX_WAIT`. With `MAX_WAITERS` requests held already, the answer comes at once without `Preference-Applied`."),
        ("Prefer" = Option<String>, Header, description = "`wait=N` (RFC 7240): the same as `?wait=N`, which wins when both are given. Other preferences are ignored."),
    ),
    responses(
        (status = 200, description = "The task", body = Envelope<TaskView>, headers(
            ("Preference-Applied" = String, description = "`wait=N` (N after the cut to `MAX_WAIT`) when the request was held for a wait"))),
        (status = 400, description = "Unknown `include` value, or a `wait` (query or `Prefer`) that is not a whole number of seconds (1001)", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = ErrorEnvelope),
        (status = 404, description = "Unknown task (1003)", body = ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn get_task(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<TaskQueryParams>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let wait = requested_wait(&req, query.wait.as_deref())?
        .map(|n| n.min(state.service.max_wait))
        .unwrap_or(0);
    let mut include_base64 = false;
    for part in query.include.as_deref().unwrap_or("").split(',') {
        match part.trim() {
            "" => {}
            INCLUDE_IMAGE_BASE64 => include_base64 = true,
            other => {
                return Err(ApiError::field(
                    "include",
                    format!(
                        "unknown value `{}`; allowed: {INCLUDE_IMAGE_BASE64}",
                        other.chars().take(40).collect::<String>()
                    ),
                ));
            }
        }
    }
    let (view, outcome) = state
        .service
        .get_waiting(&path, include_base64, std::time::Duration::from_secs(wait))
        .await?;
    let mut response = HttpResponse::Ok();
    if outcome == crate::service::WaitOutcome::Honoured {
        response.insert_header(("Preference-Applied", format!("wait={wait}")));
    }
    Ok(response.json(Envelope::ok("success", view)))
}

/// `POST /tasks/{task_id}/cancel`: cancel a running task.
#[utoipa::path(post, path = "/tasks/{task_id}/cancel", tag = "tasks",
    params(("task_id" = String, Path, max_length = 128, example = "task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W", description = "A task id: `task_` + ULID for new tasks; imported tasks keep their own ids (1–128 characters of ASCII letters, digits and `- . _ ~ ! $ & ' ( ) * + , ; = : @`). Unknown or malformed ids are 404/1003.")),
    responses(
        (status = 200, description = "Cancelled; the callback is enqueued", body = Envelope<TaskView>),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = ErrorEnvelope),
        (status = 404, description = "Unknown task (1003)", body = ErrorEnvelope),
        (status = 409, description = "Already terminal (1006); `data.status` is the current status", body = ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn cancel_task(
    path: web::Path<String>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let view = state.service.cancel(&path).await?;
    Ok(HttpResponse::Ok().json(Envelope::ok("success", view)))
}

/// Query of `GET /tasks`; all strings so every bad value is a 1001 field error.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only this user.
    pub user_id: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only this type.
    #[serde(rename = "type")]
    pub task_type: Option<String>,
    /// Page size.
    pub limit: Option<String>,
    /// Opaque cursor.
    pub cursor: Option<String>,
    /// Only tasks created at or after this RFC 3339 instant.
    pub from: Option<String>,
    /// Only tasks created before this RFC 3339 instant.
    pub to: Option<String>,
}

/// `GET /tasks`: list tasks in descending `task_id` order (bytewise: newest
/// first for ids modelgen creates; imported legacy ids sort by their bytes,
/// docs/legacy.md), with a keyset cursor.
#[utoipa::path(get, path = "/tasks", tag = "tasks",
    params(
        ("user_id" = Option<String>, Query, description = "Only this user's tasks"),
        ("status" = Option<String>, Query, description = "Only tasks in this status: a `TaskStatus` value (submitted | processing | completed | failed | cancelled); empty means no filter"),
        ("type" = Option<String>, Query, description = "Only tasks of this type: a `TaskType` value (default | edit | outfit); empty means no filter"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("from" = Option<String>, Query, description = "Only tasks created at or after this instant (RFC 3339 date-time, e.g. `2026-12-01T00:00:00Z`); empty means no bound"),
        ("to" = Option<String>, Query, description = "Only tasks created before this instant (RFC 3339 date-time); empty means no bound"),
    ),
    responses(
        (status = 200, description = "Newest first", body = Envelope<TaskPage>),
        (status = 400, description = "Bad filter, limit or cursor (1001)", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn list_tasks(
    query: web::Query<ListQuery>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    // An empty `limit=` is refused, as the earlier service's integer parameter
    // refused it (found by `make api-check`: the document says integer).
    let limit = match q.limit.as_deref() {
        None => None,
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|_| ApiError::field("limit", "must be an integer between 1 and 100"))?,
        ),
    };
    let page = state
        .service
        .list(
            q.user_id.filter(|u| !u.is_empty()),
            q.status.as_deref().filter(|s| !s.is_empty()),
            q.task_type.as_deref().filter(|s| !s.is_empty()),
            limit,
            q.cursor.as_deref().filter(|s| !s.is_empty()),
            (
                q.from.as_deref().filter(|s| !s.is_empty()),
                q.to.as_deref().filter(|s| !s.is_empty()),
            ),
        )
        .await?;
    Ok(HttpResponse::Ok().json(Envelope::ok("success", page)))
}

/// `GET /images/{key}`: a stored result image.
#[utoipa::path(get, path = "/images/{key}", tag = "images",
    description = "Serves result images from the blob store (local directory or S3) when `IMAGE_URL_MODE=public`. Input photos are never served; in presigned mode nothing is (404), so URL expiry cannot be bypassed.",
    params(("key" = String, Path, description = "Storage key, e.g. `results/task_…/0-01J….png`")),
    responses(
        (status = 200, description = "The image bytes", content_type = "image/png"),
        (status = 404, description = "No such image (1003)", body = ErrorEnvelope),
    )
)]
pub async fn get_image(
    path: web::Path<String>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    // Only results are public; users' input photos stay private (they are sent
    // to Apimart as data URIs and never need a URL).
    if !state.serve_images || !modelgen_persistence::is_public_key(&path) {
        return Err(ApiError::NotFound("image not found".into()));
    }
    let bytes = state.blobs.get(&path).await?;
    let mime = ImageMime::sniff(&bytes).map_or("application/octet-stream", |m| m.as_str());
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, mime))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(bytes))
}

/// `GET /metrics`: Prometheus exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    description = "Open unless `METRICS_AUTH_TOKEN` is set; then it needs `Authorization: Bearer <METRICS_AUTH_TOKEN>` (independent of `API_AUTH_TOKEN`).",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain"),
        (status = 401, description = "`METRICS_AUTH_TOKEN` is set and the request does not carry it (1005)", body = ErrorEnvelope),
    )
)]
pub async fn metrics_text(
    req: HttpRequest,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = &state.metrics_token
        && !bearer_matches(&req, token)
    {
        return Err(ApiError::Unauthorized);
    }
    // Gauges that describe shared state are read at scrape time.
    let db = &state.readiness.db;
    let pool = db.pool_status();
    metrics::gauge!("db_pool_connections", "state" => "in_use")
        .set(pool.open.saturating_sub(pool.idle) as f64);
    metrics::gauge!("db_pool_connections", "state" => "idle").set(pool.idle as f64);
    metrics::gauge!("db_pool_connections", "state" => "max").set(pool.max as f64);
    metrics::gauge!("db_pool_waiting").set(pool.waiting as f64);
    // SQLite: the one connection every write of this process goes through.
    if let Some(writer) = db.writer_pool_status() {
        metrics::gauge!("db_writer_connections", "state" => "in_use")
            .set(writer.open.saturating_sub(writer.idle) as f64);
        metrics::gauge!("db_writer_waiting").set(writer.waiting as f64);
    }
    for (which, age) in state.readiness.heartbeat.ages() {
        metrics::gauge!("engine_loop_last_beat_seconds", "loop" => which.as_str())
            .set(age.as_secs_f64());
    }
    let degraded = state.readiness.upstream.degradations();
    for check in ["upstream_auth", "upstream_balance"] {
        let on = degraded.iter().any(|d| d.check == check);
        metrics::gauge!("upstream_degraded", "check" => check).set(if on { 1.0 } else { 0.0 });
    }
    for (reason, n) in crate::telemetry::log_lines_dropped() {
        metrics::counter!("log_lines_dropped_total", "reason" => reason).absolute(n);
    }
    // The submit queue (depth, oldest age, drain rate): refreshed at most
    // once per second per replica, shared with admission control.
    if let Err(e) = state.service.admission.snapshot().await {
        tracing::warn!(error = %e, "could not read the submit queue for metrics");
    }
    match db.count_active_tasks().await {
        Ok(counts) => {
            for status in [
                modelgen_domain::TaskStatus::Submitted,
                modelgen_domain::TaskStatus::Processing,
            ] {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("tasks_in_flight", "status" => status.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not count in-flight tasks for metrics"),
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn a_body_gets_its_declared_size_once_a_quarter_of_it_has_arrived() {
        let mb = 1 << 20;
        // No declared length, or too little received: grow as it comes.
        assert_eq!(room_for_declared(None, 20 * mb, 0), None);
        assert_eq!(room_for_declared(Some(14 * mb), 3 * mb, 4 * mb), None);
        // A quarter in: the whole declared size, once.
        assert_eq!(
            room_for_declared(Some(14 * mb), 14 * mb / 4, 2 * mb),
            Some(14 * mb)
        );
        assert_eq!(room_for_declared(Some(14 * mb), 5 * mb, 14 * mb), None);
        // Small and empty bodies.
        assert_eq!(room_for_declared(Some(300), 300, 0), Some(300));
        assert_eq!(room_for_declared(Some(0), 0, 0), None);
    }

    #[test]
    fn waits_are_whole_seconds_from_the_query_or_the_prefer_header() {
        assert_eq!(parse_wait_seconds(" 30 "), Some(30));
        assert_eq!(parse_wait_seconds("0"), Some(0));
        assert_eq!(
            parse_wait_seconds("9223372036854775807"),
            Some(9_223_372_036_854_775_807)
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "+3",
            "3s",
            "9223372036854775808",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_wait_seconds(bad), None, "{bad:?}");
        }
        let prefer = TestRequest::default()
            .insert_header(("Prefer", "respond-async, wait=\"7\"; x=y"))
            .to_http_request();
        assert_eq!(requested_wait(&prefer, None).ok().flatten(), Some(7));
        assert_eq!(
            requested_wait(&prefer, Some("3")).ok().flatten(),
            Some(3),
            "the query wins"
        );
        let other = TestRequest::default()
            .insert_header(("Prefer", "return=minimal"))
            .to_http_request();
        assert_eq!(requested_wait(&other, None).ok().flatten(), None);
        let bad = TestRequest::default()
            .insert_header(("Prefer", "wait=soon"))
            .to_http_request();
        assert!(requested_wait(&bad, None).is_err());
    }
}
