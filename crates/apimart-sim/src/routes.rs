//! HTTP handlers: Apimart's routes (docs/apimart.md), the result files and the `/_sim`
//! control routes. Handlers decide under the state lock, then sleep (`slow=`) and answer
//! outside it.

use std::time::Duration;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use serde_json::Value;

use crate::config::{CREDITS_PER_UNIT, ConfigPatch, SimConfig};
use crate::faults::{BalanceFault, FAULT_HEADER, FaultSpec, strip_markers};
use crate::render::{InputImage, banner_label, render_all};
use crate::state::{
    FileDecision, Language, NewTask, Shared, StatusDecision, SubmitDecision, canonical_hash,
};
use crate::validate::{ImageRef, validate};
use crate::wire::{ApiError, ErrorStyle};

/// Largest accepted submit body, in bytes: 16 references as base64 data URIs of a few MB
/// each must fit (upstream's own limit is undocumented).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Longest accepted `Idempotency-Key` (docs/apimart.md: 1–191 visible ASCII characters).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 191;
/// Header naming the idempotency key on submit (docs/apimart.md "Authentication").
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Header set to `true` on a replayed submit (docs/apimart.md "Authentication").
pub const IDEMPOTENCY_REPLAYED: &str = "idempotency-replayed";
/// API key that makes every API call answer 401 (alert tests).
pub const KEY_FORCE_401: &str = "sim-401";
/// API key of an empty account: submits and polls answer 402, the balance reads zero
/// (alert tests).
pub const KEY_FORCE_402: &str = "sim-402";
/// Statuses drawn by the random `error_rate` faults.
const RANDOM_FAULTS: [u16; 4] = [500, 502, 503, 429];

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/images/generations", web::post().to(submit))
        .route("/v1/tasks/{id}", web::get().to(task_status))
        .route("/v1/balance", web::get().to(balance))
        .route("/v1/user/balance", web::get().to(balance))
        .route("/files/{id}/{file}", web::get().to(download))
        .route("/_sim/stats", web::get().to(sim_stats))
        .route("/_sim/config", web::get().to(sim_config_get))
        .route("/_sim/config", web::post().to(sim_config_post))
        .default_service(web::to(unknown_route));
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn header_spec(req: &HttpRequest) -> FaultSpec {
    header_str(req.headers(), FAULT_HEADER)
        .map(FaultSpec::parse)
        .unwrap_or_default()
}

/// Bearer check plus the `sim-401`/`sim-402` keys.
fn check_auth(req: &HttpRequest, cfg: &SimConfig) -> Result<(), ApiError> {
    let token = header_str(req.headers(), header::AUTHORIZATION.as_str())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(ApiError::unauthorized(
            "Missing bearer token in the Authorization header",
        ));
    };
    match token {
        KEY_FORCE_401 => Err(ApiError::unauthorized(
            "Invalid API key (simulated sim-401)",
        )),
        KEY_FORCE_402 => Err(ApiError::insufficient_balance()),
        _ => match &cfg.api_key {
            Some(key) if key != token => Err(ApiError::unauthorized("Invalid API key")),
            _ => Ok(()),
        },
    }
}

/// Which bearer token a request carries, once accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// A key of a working account.
    Paying,
    /// [`KEY_FORCE_402`]: an account with nothing left.
    Empty,
}

/// [`check_auth`] for the balance route: the empty account may read its (zero) balance.
fn check_balance_auth(req: &HttpRequest, cfg: &SimConfig) -> Result<Caller, ApiError> {
    match check_auth(req, cfg) {
        Ok(()) => Ok(Caller::Paying),
        Err(e) if e.status() == 402 => Ok(Caller::Empty),
        Err(e) => Err(e),
    }
}

/// The rate limit ([`SimConfig::rate_limit`]): a 429 with the wait in `Retry-After`
/// (whole seconds, at least 1) when this request is beyond it.
fn rate_limit(shared: &Shared, cfg: &SimConfig) -> Result<(), ApiError> {
    shared.admit(cfg).map_err(|wait| {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError::rate_limited(secs.max(1))
    })
}

/// A global random fault (`error_rate`), already counted.
fn random_fault(shared: &Shared, cfg: &SimConfig, spec: &FaultSpec) -> Option<ApiError> {
    if cfg.error_rate <= 0.0 || fastrand::f64() >= cfg.error_rate {
        return None;
    }
    shared.count(|s| s.faults_injected += 1);
    let status = RANDOM_FAULTS[fastrand::usize(..RANDOM_FAULTS.len())];
    // A 502 comes from a proxy in front of the API, which answers in plain text.
    let style = spec.body.unwrap_or(if status == 502 {
        ErrorStyle::Text
    } else {
        ErrorStyle::OpenAi
    });
    Some(ApiError::injected(status).with_style(Some(style)))
}

async fn delay(slow: Option<Duration>) {
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
}

/// `http://host:port`: the request's Host when it looks like one, else 127.0.0.1:port.
fn file_base(req: &HttpRequest, port: u16) -> String {
    let host = header_str(req.headers(), header::HOST.as_str()).filter(|h| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    });
    match host {
        Some(h) => format!("http://{h}"),
        None => format!("http://127.0.0.1:{port}"),
    }
}

fn valid_idempotency_key(key: &str) -> bool {
    (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

fn decode_input(r: &ImageRef<'_>) -> InputImage {
    match r {
        ImageRef::Url { host } => InputImage::Url {
            host: (*host).to_owned(),
        },
        ImageRef::Data { payload } => {
            let cleaned: String = payload
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
                .decode(cleaned.as_bytes())
                .map_or(InputImage::Undecodable, InputImage::Encoded)
        }
    }
}

async fn submit(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let key_header = req.headers().get(IDEMPOTENCY_KEY);
    shared.count(|s| {
        s.submit_requests += 1;
        if key_header.is_none() {
            s.submits_without_key += 1;
        }
    });
    let cfg = shared.config();
    let header_faults = header_spec(&req);
    if let Err(e) = check_auth(&req, &cfg).and_then(|()| rate_limit(&shared, &cfg)) {
        return e.into_response();
    }
    if let Some(e) = random_fault(&shared, &cfg, &header_faults) {
        return e.into_response();
    }
    let key = match key_header.map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if valid_idempotency_key(k) => Some(k.to_owned()),
        Some(_) => {
            return ApiError::invalid(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
                ),
                Some("Idempotency-Key".into()),
            )
            .into_response();
        }
    };
    let bytes = match payload.to_bytes_limited(MAX_BODY_BYTES).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return ApiError::invalid("invalid_body", "Could not read the request body", None)
                .into_response();
        }
        Err(_) => {
            return ApiError::new(
                413,
                "invalid_request_error",
                "payload_too_large",
                format!("Request body exceeds {MAX_BODY_BYTES} bytes"),
            )
            .into_response();
        }
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return ApiError::invalid("invalid_json", format!("Invalid JSON body: {e}"), None)
                .into_response();
        }
    };
    let request = match validate(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let mut spec = FaultSpec::from_prompt(request.prompt);
    spec.merge(&header_faults);
    let new = NewTask {
        n: request.n,
        ratio: request.size,
        prompt_label: banner_label(strip_markers(request.prompt).trim()),
        inputs: request.images.iter().map(decode_input).collect(),
        body_hash: canonical_hash(&body),
        idempotency_key: key,
        spec: spec.clone(),
    };
    match shared.submit(new, &cfg) {
        SubmitDecision::Created {
            body,
            task_id,
            lost,
            garbled,
        } => {
            delay(spec.slow).await;
            match lost {
                Some(status) => {
                    tracing::debug!(apimart.task_id = %task_id, status, "sim submit reply lost");
                    ApiError::injected(status)
                        .with_style(spec.body)
                        .into_response()
                }
                None if garbled => {
                    tracing::debug!(apimart.task_id = %task_id, "sim submit reply garbled");
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(garble(&body))
                }
                None => HttpResponse::Ok().json(body),
            }
        }
        SubmitDecision::Replay { body, slow } => {
            delay(spec.slow.or(slow)).await;
            HttpResponse::Ok()
                .insert_header((IDEMPOTENCY_REPLAYED, "true"))
                .json(body)
        }
        SubmitDecision::Conflict => ApiError::new(
            409,
            "idempotency_error",
            "idempotency_key_reused",
            "Idempotency-Key was already used with a different request body",
        )
        .into_response(),
        SubmitDecision::Fault(status) => {
            delay(spec.slow).await;
            ApiError::injected(status)
                .with_style(spec.body)
                .into_response()
        }
        SubmitDecision::InsufficientBalance => ApiError::insufficient_balance().into_response(),
        SubmitDecision::StoreFailed => ApiError::injected(500).into_response(),
    }
}

/// A success body cut off in the middle (an undecodable 2xx, e.g. a connection closed by a
/// proxy mid-body): the first half of the JSON text, never valid JSON.
fn garble(body: &Value) -> String {
    let text = body.to_string();
    let mut cut = text.len() / 2;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_owned()
}

/// `GET /v1/balance` and `/v1/user/balance`: `{"success":true,"remain_balance",
/// "remain_credits","used_balance","used_credits","unlimited_quota"}` (docs/apimart.md
/// "Balance"). The balance decreases by the `cost` of each completed task. With an
/// unlimited quota the remaining figures are -1.
async fn balance(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    shared.count(|s| s.balance_requests += 1);
    let cfg = shared.config();
    let spec = header_spec(&req);
    let caller = match check_balance_auth(&req, &cfg) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = rate_limit(&shared, &cfg) {
        return e.into_response();
    }
    let status = match spec.balance {
        Some(BalanceFault::Status(s)) => Some(s),
        _ => cfg.balance_status,
    };
    if let Some(status) = status {
        shared.count(|s| s.faults_injected += 1);
        return ApiError::injected(status)
            .with_style(spec.body)
            .into_response();
    }
    let mut account = shared.account(&cfg);
    if caller == Caller::Empty || spec.balance == Some(BalanceFault::Zero) {
        account.remain = 0.0;
        account.unlimited = false;
    }
    let credits = |units: f64| {
        if units < 0.0 {
            units
        } else {
            units * CREDITS_PER_UNIT
        }
    };
    HttpResponse::Ok().json(serde_json::json!({
        "success": true,
        "remain_balance": account.remain,
        "remain_credits": credits(account.remain),
        "used_balance": account.used,
        "used_credits": credits(account.used),
        "unlimited_quota": account.unlimited,
    }))
}

async fn task_status(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    shared.count(|s| s.status_requests += 1);
    let cfg = shared.config();
    let extra = header_spec(&req);
    if let Err(e) = check_auth(&req, &cfg).and_then(|()| rate_limit(&shared, &cfg)) {
        return e.into_response();
    }
    if let Some(e) = random_fault(&shared, &cfg, &extra) {
        return e.into_response();
    }
    let id = req.match_info().get("id").unwrap_or_default();
    let lang = req
        .query_string()
        .split('&')
        .find_map(|kv| kv.strip_prefix("language="))
        .map(Language::parse)
        .unwrap_or_default();
    match shared.poll(id, &extra, lang, &file_base(&req, shared.port)) {
        StatusDecision::Unknown => {
            ApiError::not_found(format!("Task {id} not found")).into_response()
        }
        StatusDecision::Fault {
            status,
            style,
            slow,
        } => {
            delay(slow).await;
            ApiError::injected(status).with_style(style).into_response()
        }
        StatusDecision::Ok { body, slow } => {
            delay(slow).await;
            HttpResponse::Ok().json(body)
        }
    }
}

async fn download(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    shared.count(|s| s.image_downloads += 1);
    let id = req.match_info().get("id").unwrap_or_default().to_owned();
    let index = req
        .match_info()
        .get("file")
        .and_then(|f| f.strip_suffix(".png"))
        .and_then(|n| n.parse::<usize>().ok());
    let Some(index) = index else {
        return ApiError::not_found("No such file").into_response();
    };
    let (png, slow) = match shared.file(&id, index, &header_spec(&req)) {
        FileDecision::NotFound => return ApiError::not_found("No such file").into_response(),
        FileDecision::Expired => {
            return ApiError::new(
                410,
                "invalid_request_error",
                "expired",
                "The result URL has expired",
            )
            .into_response();
        }
        FileDecision::Unavailable => return ApiError::injected(503).into_response(),
        FileDecision::Ready { png, slow } => (png, slow),
        FileDecision::Render { job, slow } => match web::block(move || render_all(&job)).await {
            Ok(Ok(pngs)) => {
                let all = shared.store_images(&id, pngs);
                match all.get(index) {
                    Some(png) => (png.clone(), slow),
                    None => return ApiError::not_found("No such file").into_response(),
                }
            }
            Ok(Err(e)) => {
                tracing::error!(apimart.task_id = %id, error = %e, "sim could not encode a result image");
                return ApiError::injected(500).into_response();
            }
            Err(e) => {
                tracing::error!(apimart.task_id = %id, error = %e, "sim render thread failed");
                return ApiError::injected(500).into_response();
            }
        },
    };
    delay(slow).await;
    HttpResponse::Ok().content_type("image/png").body(png)
}

async fn sim_stats(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.stats())
}

async fn sim_config_get(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.config().view())
}

async fn sim_config_post(body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let patch: ConfigPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return ApiError::invalid("invalid_config", format!("Invalid config patch: {e}"), None)
                .into_response();
        }
    };
    match shared.update_config(|cfg| cfg.apply(&patch).map(|()| cfg.view())) {
        Ok(view) => {
            tracing::info!(config = ?view, "sim config changed");
            HttpResponse::Ok().json(view)
        }
        Err(e) => ApiError::invalid("invalid_config", e.to_string(), None).into_response(),
    }
}

async fn unknown_route(req: HttpRequest) -> HttpResponse {
    ApiError::not_found(format!("Unknown route {} {}", req.method(), req.path())).into_response()
}
