//! The OpenAPI 3.1 description, generated from the code with `utoipa`, and
//! the offline docs page (Swagger UI assets vendored into the binary by
//! `utoipa-swagger-ui`'s `vendored` feature: nothing is fetched from a CDN).
//!
//! `docs/openapi.json` in the repository is this document; a test fails when
//! it is stale (`UPDATE_OPENAPI=1 cargo test -p modelgen-api openapi` rewrites it).

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::admin::{CallbackPage, CallbackView, Redelivered};
use crate::dto::{
    BodyProfileDto, CreateDefaultRequest, CreateEditRequest, CreateOutfitRequest, CreatedTask,
    ImageView, OneOrMany, TaskPage, TaskView,
};
use crate::error::{ErrorEnvelope, FieldErrorView, FieldErrors};
use crate::privacy::{PurgeItem, PurgeReport};

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
        CreateDefaultRequest, CreateEditRequest, CreateOutfitRequest, BodyProfileDto, OneOrMany,
        CreatedTask, TaskView, ImageView, TaskPage, CallbackView, CallbackPage, Redelivered, ErrorEnvelope, FieldErrors,
        FieldErrorView, PurgeReport, PurgeItem, crate::health::LivenessView,
        crate::health::LoopBeat, crate::health::ReadinessView, crate::health::DegradedView,
        crate::timeline::EventView, crate::timeline::TaskEvents, crate::timeline::UsageItem,
        crate::timeline::UsageReport, crate::timeline::RetryFilter, crate::timeline::RetrySkip,
        crate::timeline::RetryReport,
        crate::console::Stats, crate::console::StatsBucket, crate::console::LatencyStats,
        crate::console::UpstreamErrorCount, crate::console::QueueView,
        crate::console::CallbackCounts, crate::console::SpendToday, crate::console::InputView,
        crate::console::InputList, crate::console::TestEventResult
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "models", description = "Create the three jobs"),
        (name = "tasks", description = "Follow, list and cancel tasks"),
        (name = "images", description = "Stored images"),
        (name = "admin", description = "Callback outbox administration, retry of failed tasks by filter, and erasure of a user's data; the operator console's stats, input photos, single retry and test callback"),
        (name = "operations", description = "Probes and metrics"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn openapi_pretty_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_string())
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

/// The Swagger UI service under `/docs/`, reading `/openapi.json`.
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi())
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
