//! The OpenAPI 3.1 description, generated from the code with `utoipa`, and
//! the offline docs page (Swagger UI assets vendored into the binary by
//! `utoipa-swagger-ui`'s `vendored` feature: nothing is fetched from a CDN).
//!
//! `docs/openapi.json` in the repository is this document; a test fails when
//! it is stale (`UPDATE_OPENAPI=1 cargo test -p modelgen-api openapi` rewrites it).

use std::borrow::Cow;

use actix_web::HttpResponse;
use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use modelgen_callback::openapi::CallbackEventTypeSchema;
use modelgen_callback::signing::{
    DEFAULT_TOLERANCE_S, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP,
};
use modelgen_callback::{CallbackImage, CallbackPayload};
use modelgen_domain::openapi::{
    AngleSchema, AspectRatioSchema, GenderSchema, ImageMimeSchema, TaskStatusSchema,
    TaskTypeSchema, TerminalStatusSchema, string_enum,
};
use modelgen_domain::{TaskId, TaskStatus, TaskType};
use modelgen_persistence::{CallbackStatus, EventKind};

use crate::admin::{CallbackPage, CallbackView, Redelivered};
use crate::dto::{
    BodyProfileDto, CreateDefaultRequest, CreateEditRequest, CreateOutfitRequest, CreatedTask,
    ImageView, TaskPage, TaskView,
};
use crate::error::{ErrorEnvelope, FieldErrorView, FieldErrors};
use crate::privacy::{PurgeItem, PurgeReport};

/// Schema-only type of the `DeliveryStatus` component (a callback outbox
/// row's state), from [`CallbackStatus`].
#[derive(Debug, Clone, Copy)]
pub struct DeliveryStatusSchema;

impl utoipa::PartialSchema for DeliveryStatusSchema {
    fn schema() -> RefOr<Schema> {
        string_enum(
            [
                CallbackStatus::Pending,
                CallbackStatus::Delivered,
                CallbackStatus::Dead,
            ]
            .iter()
            .map(CallbackStatus::as_str),
            "A callback delivery: `pending` (an attempt is due), `delivered` (a 2xx came back), \
             `dead` (gave up; an operator can redeliver it).",
        )
    }
}

impl utoipa::ToSchema for DeliveryStatusSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("DeliveryStatus")
    }
}

/// Schema-only type of the `EventKind` component (a timeline entry's kind),
/// from [`EventKind::ALL`].
#[derive(Debug, Clone, Copy)]
pub struct EventKindSchema;

impl utoipa::PartialSchema for EventKindSchema {
    fn schema() -> RefOr<Schema> {
        string_enum(
            EventKind::ALL.iter().map(|kind| kind.as_str()),
            "What a task timeline entry records.",
        )
    }
}

impl utoipa::ToSchema for EventKindSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EventKind")
    }
}

/// `data.status` of `GET /healthz`.
pub fn liveness_status_schema() -> RefOr<Schema> {
    string_enum(["ok", "stalled"], "`ok`, or `stalled` (HTTP 503).")
}

/// `data.status` of `GET /readyz`.
pub fn readiness_status_schema() -> RefOr<Schema> {
    string_enum(
        ["ready", "degraded", "not_ready"],
        "`ready`, `degraded` (HTTP 200), or `not_ready` (HTTP 503).",
    )
}

/// `group_by` of `GET /usage`.
pub fn usage_group_schema() -> RefOr<Schema> {
    string_enum(["day", "type"], "`day` (UTC day of completion) or `type`.")
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer API_AUTH_TOKEN`; required only when the service is configured with a token",
                    ))
                    .build(),
            ),
        );
    }
}

/// The API document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "modelgen",
        description = "Digital-model image generation for fashion e-commerce over the Apimart image API. \
Every response is the envelope `{\"code\", \"msg\", \"data\"}`: code 0 success, 1001 invalid parameters (400), \
1002 Apimart failed (502), 1003 not found (404), 1004 internal (500/503), 1005 unauthorized (401), \
1006 conflict (409), 1007 too large (413), 1008 unsupported media type (415: request bodies must be \
`Content-Type: application/json`, UTF-8), 1009 method not allowed (405, with an `Allow` header). Terminal tasks are POSTed to CALLBACK_URL (see the README)."
    ),
    paths(
        crate::http::create_default,
        crate::http::create_edit,
        crate::http::create_outfit,
        crate::http::get_task,
        crate::http::list_tasks,
        crate::http::cancel_task,
        crate::http::get_image,
        crate::health::healthz,
        crate::health::readyz,
        crate::http::metrics_text,
        crate::admin::list_callbacks,
        crate::admin::redeliver,
        crate::admin::redeliver_all_dead,
        crate::privacy::purge_user_data,
        crate::timeline::task_events,
        crate::timeline::usage,
        crate::timeline::retry_tasks,
        crate::console::stats,
        crate::console::task_inputs,
        crate::console::task_input,
        crate::console::retry_task,
        crate::console::test_callback,
    ),
    components(schemas(
        CreateDefaultRequest, CreateEditRequest, CreateOutfitRequest, BodyProfileDto,
        CreatedTask, TaskView, ImageView, TaskPage, CallbackView, CallbackPage, Redelivered, ErrorEnvelope, FieldErrors,
        FieldErrorView, PurgeReport, PurgeItem, crate::health::LivenessView,
        crate::health::LoopBeat, crate::health::ReadinessView, crate::health::DegradedView,
        crate::timeline::EventView, crate::timeline::TaskEvents, crate::timeline::UsageItem,
        crate::timeline::UsageReport, crate::timeline::RetryFilter, crate::timeline::RetrySkip,
        crate::timeline::RetryReport, TaskStatusSchema, TerminalStatusSchema, TaskTypeSchema,
        AngleSchema, AspectRatioSchema, GenderSchema, ImageMimeSchema, DeliveryStatusSchema,
        EventKindSchema, CallbackEventTypeSchema, CallbackPayload, CallbackImage,
        crate::console::Stats, crate::console::StatsBucket, crate::console::LatencyStats,
        crate::console::UpstreamErrorCount, crate::console::QueueView,
        crate::console::CallbackCounts, crate::console::SpendToday, crate::console::InputView,
        crate::console::InputList, crate::console::TestEventResult, crate::console::TestEventBody
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "models", description = "Create the three jobs"),
        (name = "tasks", description = "Follow, list and cancel tasks"),
        (name = "images", description = "Stored images"),
        (name = "admin", description = "Callback outbox administration, retry of failed tasks by filter, and erasure of a user's data; the operator console's stats, input photos, single retry and test callback"),
        (name = "operations", description = "Probes and metrics"),
        (name = "callbacks", description = "What the service POSTs to `CALLBACK_URL` (see `webhooks`)"),
    )
)]
pub struct ApiDoc;

/// Response schemas whose fields the service may leave out (serde
/// `skip_serializing_if`): every other field of a response schema is always
/// sent (a `null` as `null`), so [`finish`] lists it as required.
const OMITTED_RESPONSE_FIELDS: &[(&str, &str)] = &[
    ("ImageView", "image_base64"),
    ("ReadinessView", "checks"),
    ("PurgeReport", "items"),
];

/// Schemas of request bodies: their `required` lists come from the
/// `#[schema(required = …)]` attributes, not from [`finish`].
const REQUEST_SCHEMAS: &[&str] = &[
    "CreateDefaultRequest",
    "CreateEditRequest",
    "CreateOutfitRequest",
    "BodyProfileDto",
    "RetryFilter",
];

/// The document as served and committed: [`ApiDoc`] finished by [`finish`].
pub fn openapi_document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    finish(&mut doc);
    doc
}

/// What the derive macros cannot say, added in this one place:
/// - every field of a response schema is required (the service always sends
///   it, `null` included), but for [`OMITTED_RESPONSE_FIELDS`];
/// - each `Envelope_X` is `{code, msg, data: X}` with `data` a reference to
///   `X` (not a copy of it) and all three required; the error envelope's
///   `code` lists the error codes;
/// - the errors every operation of a kind can answer (500 for all; 401 and
///   503 behind the token; 403 for state-changing methods; 400, 413 and 415
///   for a JSON body), and `Retry-After` on every 429;
/// - the callback, in the `webhooks` section (OpenAPI 3.1).
pub fn finish(doc: &mut Value) {
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, schema) in schemas.iter_mut() {
            if let Some(inner) = name.strip_prefix("Envelope_") {
                schema["properties"]["data"] =
                    json!({ "$ref": format!("#/components/schemas/{inner}") });
                schema["required"] = json!(["code", "msg", "data"]);
            } else if !REQUEST_SCHEMAS.contains(&name.as_str())
                && let Some(props) = schema.get("properties").and_then(Value::as_object)
            {
                let required: Vec<String> = props
                    .keys()
                    .filter(|field| {
                        !OMITTED_RESPONSE_FIELDS.contains(&(name.as_str(), field.as_str()))
                    })
                    .cloned()
                    .collect();
                schema["required"] = json!(required);
            }
        }
        if let Some(error) = schemas.get_mut("ErrorEnvelope") {
            error["properties"]["code"]["enum"] = json!(ERROR_CODES);
            error["properties"]["data"]["type"] = json!(["object", "null"]);
        }
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for operations in paths.values_mut() {
            let Some(operations) = operations.as_object_mut() else {
                continue;
            };
            for (method, operation) in operations.iter_mut() {
                add_common_errors(method, operation);
            }
        }
    }
    doc["webhooks"] = webhooks();
}

/// Every error code of the envelope (`crate::error`'s `CODE_*`).
const ERROR_CODES: [i32; 11] = [
    crate::error::CODE_INVALID,
    crate::error::CODE_UPSTREAM,
    crate::error::CODE_NOT_FOUND,
    crate::error::CODE_INTERNAL,
    crate::error::CODE_UNAUTHORIZED,
    crate::error::CODE_CONFLICT,
    crate::error::CODE_TOO_LARGE,
    crate::error::CODE_UNSUPPORTED_MEDIA_TYPE,
    crate::error::CODE_METHOD_NOT_ALLOWED,
    crate::error::CODE_QUEUE_FULL,
    crate::error::CODE_CROSS_SITE,
];

/// An error response in the envelope.
fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    })
}

/// Adds the errors an operation can answer whatever it does (see [`finish`]),
/// leaving the ones it already documents as they are.
fn add_common_errors(method: &str, operation: &mut Value) {
    let secured = operation.get("security").is_some();
    let has_body = operation.get("requestBody").is_some();
    let state_changing = matches!(method, "post" | "put" | "patch" | "delete");
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    };
    if has_body {
        add(
            "400",
            "Invalid parameters, or a body that is not JSON of this shape (1001); `data.errors` lists every bad field",
        );
        add(
            "413",
            "Body larger than `MAX_BODY_BYTES`, or an image over its limit (1007)",
        );
        add(
            "415",
            "Body not declared as `Content-Type: application/json` (UTF-8), or missing that header (1008)",
        );
    }
    if secured {
        add(
            "401",
            "Missing or invalid bearer token (1005), when the service has `API_AUTH_TOKEN`",
        );
        add("503", "Database unavailable (1004); retry later");
    }
    if state_changing {
        add(
            "403",
            "A browser sent this request from another site (`Sec-Fetch-Site: cross-site` or `same-site`; 1011)",
        );
    }
    add(
        "500",
        "Internal error (1004); the message is opaque, the details are in the service's log",
    );
    if let Some(queue_full) = responses.get_mut("429") {
        queue_full["headers"] = json!({
            "Retry-After": {
                "description": "Seconds to wait before trying again (the same number as `data.retry_after`).",
                "required": true,
                "schema": {"type": "integer", "minimum": 1, "maximum": 300}
            }
        });
    }
}

/// The callback of the `webhooks` example: a completed default task, built
/// with the payload's own builder so it carries every field the wire does.
fn callback_example() -> Value {
    let Ok(task_id) = "task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W".parse::<TaskId>() else {
        return Value::Null;
    };
    let url = "https://modelgen.example.com/images/results/task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W/0-01JQ8Z7A.png";
    let completed_at = chrono::DateTime::parse_from_rfc3339("2026-11-29T11:35:33.123Z")
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    let payload = CallbackPayload::new(&task_id, "u1", TaskType::Default, TaskStatus::Completed)
        .with_request_id(Some("r-1"))
        .with_images(vec![CallbackImage {
            image_url: url.to_owned(),
            width: Some(1024),
            height: Some(768),
            mime: Some("image/png".to_owned()),
        }])
        .with_cost(Some(0.02))
        .with_completed_at(completed_at);
    serde_json::to_value(payload).unwrap_or(Value::Null)
}

/// The `webhooks` section: the callback POSTed to `CALLBACK_URL` when a task
/// ends, signed as `crates/callback/src/signing.rs` does (Standard Webhooks).
fn webhooks() -> Value {
    let header = |name: &str, description: &str, schema: Value| json!({"name": name, "in": "header", "required": true, "description": description, "schema": schema});
    let parameters = json!([
        header(HEADER_WEBHOOK_ID, "Event id (`evt_` + ULID), stable across retries of one event: the deduplication key.",
            json!({"type": "string", "pattern": "^evt_", "example": "evt_01JQ8Z6X3M4N5P6Q7R8S9T0V1W"})),
        {
            "name": HEADER_WEBHOOK_TIMESTAMP, "in": "header", "required": false,
            "description": "When this attempt was signed, integer Unix seconds; present when `CALLBACK_SIGNING_SECRET` is set.",
            "schema": {"type": "string", "pattern": "^[0-9]{1,19}$", "example": "1764416133"}
        },
        {
            "name": HEADER_WEBHOOK_SIGNATURE, "in": "header", "required": false,
            "description": "Space-separated signatures `v1,<base64>`; present when `CALLBACK_SIGNING_SECRET` is set.",
            "schema": {"type": "string", "pattern": "^v1,[A-Za-z0-9+/]+=*( v1,[A-Za-z0-9+/]+=*)*$",
                "example": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="}
        },
        header("User-Agent", "`modelgen/<version>`.",
            json!({"type": "string", "pattern": "^modelgen/", "example": concat!("modelgen/", env!("CARGO_PKG_VERSION"))})),
    ]);
    json!({
        "taskEnded": {
            "post": {
                "summary": "A task reached a terminal state",
                "description": format!(
                    "POSTed to `CALLBACK_URL` once per terminal event of a task (first run, and again for a run an operator retried), \
    retried with backoff until the receiver answers 2xx (for `CALLBACK_HORIZON`, or `CALLBACK_MAX_RETRIES` attempts; then the delivery is `dead` and can be \
    redelivered from `/admin/callbacks`). Delivery is at least once: deduplicate on `webhook-id`, which stays the same across \
    retries and redeliveries of one event.\n\n\
    **Signature** ([Standard Webhooks](https://www.standardwebhooks.com/), scheme `v1`): `webhook-signature` is `v1,` followed by \
    the standard base64 of HMAC-SHA256 over the bytes `{{webhook-id}}.{{webhook-timestamp}}.{{body}}` (the raw request body, before \
    any JSON parsing). The key is `CALLBACK_SIGNING_SECRET`: when it starts with `whsec_`, the base64-decoded rest; otherwise its UTF-8 bytes. \
    A receiver recomputes the signature over the bytes it received, compares in constant time with each space-separated `v1,` entry, \
    and refuses a `webhook-timestamp` more than {DEFAULT_TOLERANCE_S} seconds away from its clock. Without `CALLBACK_SIGNING_SECRET` only \
    `webhook-id` is sent (no `webhook-timestamp`, no `webhook-signature`). With `CALLBACK_TOKEN`, `Authorization: Bearer <CALLBACK_TOKEN>` \
    is sent as well."
                ),
                "operationId": "taskEnded",
                "tags": ["callbacks"],
                "parameters": parameters.clone(),
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/CallbackPayload"},
                        "example": callback_example(),
                    }}
                },
                "responses": {
                    "2XX": {"description": "Received; any 2xx ends the delivery (the body is ignored)."},
                    "default": {"description": "Anything else (or no answer within `CALLBACK_TIMEOUT`) is retried with backoff."}
                }
            }
        },
        "testEvent": {
            "post": {
                "summary": "A test event an operator sent",
                "description": "POSTed to `CALLBACK_URL` by `POST /admin/callbacks/test` (the console's **Send test event**), once, \
    with the same headers and signature as `taskEnded`, and no retries. Tell it from a task's callback by `event_type: \"test\"`; \
    answer 2xx and change nothing.",
                "operationId": "testEvent",
                "tags": ["callbacks"],
                "parameters": parameters,
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/TestEventBody"},
                    }}
                },
                "responses": {
                    "2XX": {"description": "Received; the answer is reported to the operator."},
                    "default": {"description": "Reported to the operator as not delivered; nothing is retried."}
                }
            }
        }
    })
}

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn openapi_pretty_json() -> String {
    serde_json::to_string_pretty(&openapi_document()).unwrap_or_else(|_| "{}".to_string())
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(openapi_pretty_json())
}

/// `GET /docs` → the Swagger UI page.
pub async fn docs_redirect() -> HttpResponse {
    HttpResponse::Found()
        .insert_header(("Location", "/docs/"))
        .finish()
}

/// The Swagger UI service under `/docs/`, reading `/openapi.json` (the same
/// finished document; the route registered first, [`openapi_json`], serves it).
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").external_url_unchecked("/openapi.json", openapi_document())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` must be the generated document.
    #[test]
    fn committed_openapi_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = openapi_pretty_json() + "\n";
        if std::env::var("UPDATE_OPENAPI").is_ok() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test -p modelgen-api openapi` and commit it"
        );
    }

    #[test]
    fn document_is_openapi_3_1_and_lists_every_route_and_error_code() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_pretty_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/models/default",
            "/models/edit",
            "/models/outfit",
            "/tasks/{task_id}",
            "/tasks",
            "/tasks/{task_id}/cancel",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        let text = doc.to_string();
        for code in [
            "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010", "1011",
        ] {
            assert!(text.contains(code), "{code} not documented");
        }
    }
}
