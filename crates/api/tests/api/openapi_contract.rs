//! The OpenAPI document (docs/openapi.json) against the running service:
//! every example in it is sent and answered as documented, and every JSON
//! body the main flows are served validates against the schema the document
//! gives for its status code (a JSON Schema validator, not hand checks).

#![expect(
    clippy::expect_used,
    reason = "test helpers: a broken request or setup should stop the test loudly"
)]

use std::time::{Duration, Instant};

use modelgen_e2e::Backend;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{AppOptions, TestApp, body_profile, spawn_app, tiny_png};

/// The committed document (the served one is checked to be the same).
fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let text = std::fs::read_to_string(path).expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// Validates JSON values against schemas of one OpenAPI document.
struct Contract {
    doc: Value,
}

impl Contract {
    fn new(doc: Value) -> Contract {
        Contract { doc }
    }

    /// Errors of `instance` against `schema` (a schema object of the document,
    /// usually a `$ref` to `#/components/schemas/…`). The document's
    /// components are embedded in the root so local references resolve;
    /// formats (`date-time`, `uri`) are checked.
    fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let mut root = schema.clone();
        if let Some(object) = root.as_object_mut() {
            object.insert("components".into(), self.doc["components"].clone());
        } else {
            return vec![format!("not a schema: {schema}")];
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema does not compile: {e}: {schema}"));
        validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    /// The named component schema.
    fn component(name: &str) -> Value {
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    /// Asserts `status` is documented for `method template` and `body`
    /// validates against that response's JSON schema.
    fn check(&self, method: &str, template: &str, status: u16, body: &Value) {
        let operation = &self.doc["paths"][template][method];
        assert!(
            operation.is_object(),
            "{method} {template} is not in the document"
        );
        let response = &operation["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {template} answered {status}, which the document does not list: {body}"
        );
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} {status} has no JSON schema"
        );
        let errors = self.errors(schema, body);
        assert!(
            errors.is_empty(),
            "{method} {template} {status}: body does not match the document: {errors:#?}\n{body:#}"
        );
    }
}

/// One request: (status, headers, JSON body or null).
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = app.client.request(method, format!("{}{path}", app.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, json)
}

const TOKEN: &str = "contract-token";

/// Sends `body` as JSON with the token and checks the answer against the
/// document; returns (status, body).
async fn send(
    app: &TestApp,
    contract: &Contract,
    method: &str,
    template: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let verb: reqwest::Method = method.to_uppercase().parse().expect("method");
    let payload = body.map(|b| ("application/json", serde_json::to_vec(b).expect("json")));
    let (status, _, json) = call(app, verb, path, Some(TOKEN), payload).await;
    contract.check(method, template, status, &json);
    (status, json)
}

async fn spawn_contract_app(receiver: &MockServer) -> TestApp {
    spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![
                ("api_auth_token".into(), format!("{TOKEN:?}")),
                ("max_body_bytes".into(), "20000".into()),
                (
                    "callback_url".into(),
                    format!("{:?}", format!("{}/hook", receiver.uri())),
                ),
                (
                    "callback_signing_secret".into(),
                    "\"whsec_c2VjcmV0\"".into(),
                ),
            ],
        },
    )
    .await
}

async fn callback_receiver() -> MockServer {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    receiver
}

/// The example of a request body: the media type's, else its schema's.
fn body_example(doc: &Value, operation: &Value) -> Option<Value> {
    let media = &operation["requestBody"]["content"]["application/json"];
    if let Some(example) = media.get("example") {
        return Some(example.clone());
    }
    let reference = media["schema"]["$ref"].as_str()?;
    let name = reference.strip_prefix("#/components/schemas/")?;
    doc["components"]["schemas"][name].get("example").cloned()
}

#[tokio::test]
async fn every_example_in_the_document_is_answered_as_documented() {
    let receiver = callback_receiver().await;
    let app = spawn_contract_app(&receiver).await;
    let doc = document();
    let contract = Contract::new(doc.clone());

    // The document the service serves is the committed one.
    let (status, _, served) = call(&app, reqwest::Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        served, doc,
        "GET /openapi.json differs from docs/openapi.json"
    );

    let mut sent = Vec::new();
    let paths = doc["paths"].as_object().expect("paths");
    for (template, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            let body = body_example(&doc, operation);
            let mut path = template.clone();
            let mut query = Vec::new();
            let mut has_param_example = false;
            let mut missing_path_param = false;
            for param in operation["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap_or_default();
                let example = param
                    .get("example")
                    .or_else(|| param["schema"].get("example"));
                match (param["in"].as_str(), example) {
                    (Some("path"), Some(e)) => {
                        has_param_example = true;
                        let text = e.as_str().map_or_else(|| e.to_string(), str::to_owned);
                        path = path.replace(&format!("{{{name}}}"), &text);
                    }
                    (Some("path"), None) => missing_path_param = true,
                    (Some("query"), Some(e)) => {
                        has_param_example = true;
                        let text = e.as_str().map_or_else(|| e.to_string(), str::to_owned);
                        query.push(format!("{name}={text}"));
                    }
                    _ => {}
                }
            }
            if (body.is_none() && !has_param_example) || missing_path_param {
                continue;
            }
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let (status, answer) =
                send(&app, &contract, method, template, &path, body.as_ref()).await;
            assert!(
                status < 500,
                "{method} {path}: the example got {status}: {answer}"
            );
            sent.push((method.clone(), template.clone(), status, answer));
        }
    }

    // The complaint of issue 13: "Try it out" on POST /models/default with the
    // prefilled example must create a task.
    let default = sent
        .iter()
        .find(|(m, t, _, _)| m == "post" && t == "/models/default")
        .expect("POST /models/default has an example");
    assert_eq!(
        default.2, 202,
        "the default example was refused: {}",
        default.3
    );
    for template in ["/models/edit", "/models/outfit"] {
        let (_, _, status, answer) = sent
            .iter()
            .find(|(m, t, _, _)| m == "post" && t == template)
            .unwrap_or_else(|| panic!("POST {template} has an example"));
        // The example names a base model this fresh database does not have:
        // a valid shape, answered 404 (not 400).
        assert_eq!(*status, 404, "{template}: {answer}");
    }

    // The path parameter examples were sent too: an unknown task is 404.
    for (verb, template) in [
        ("get", "/tasks/{task_id}"),
        ("post", "/tasks/{task_id}/cancel"),
        ("get", "/tasks/{task_id}/events"),
    ] {
        let answered = sent.iter().find(|(m, t, _, _)| m == verb && t == template);
        assert!(
            answered.is_some_and(|(_, _, status, _)| *status == 404),
            "{verb} {template}: the task_id example was not sent or not answered 404"
        );
    }

    // Component examples and the callback example validate against their schemas.
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        if let Some(example) = schema.get("example") {
            let errors = contract.errors(&Contract::component(name), example);
            assert!(errors.is_empty(), "example of {name}: {errors:#?}");
        }
    }
    let hook = &doc["webhooks"]["taskEnded"]["post"]["requestBody"]["content"]["application/json"];
    let errors = contract.errors(&hook["schema"], &hook["example"]);
    assert!(errors.is_empty(), "callback example: {errors:#?}");
}

/// Drives the engine until `task_id` is terminal, delivering callbacks.
async fn finish(app: &TestApp, task_id: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        app.engine.run_once().await.expect("engine step");
        let (_, _, body) = call(
            app,
            reqwest::Method::GET,
            &format!("/tasks/{task_id}"),
            Some(TOKEN),
            None,
        )
        .await;
        if matches!(
            body["data"]["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return body;
        }
        assert!(Instant::now() < end, "task {task_id} did not end: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_body_the_main_flows_serve_validates_against_the_document() {
    use reqwest::Method;
    let receiver = callback_receiver().await;
    let app = spawn_contract_app(&receiver).await;
    let c = Contract::new(document());
    let json_body = |v: &Value| Some(("application/json", serde_json::to_vec(v).expect("json")));

    // Probes (open without the token).
    for probe in ["/healthz", "/readyz"] {
        let (status, _, body) = call(&app, Method::GET, probe, None, None).await;
        c.check("get", probe, status, &body);
    }

    // 401: a token is configured and not sent.
    let create = json!({"user_id": "flow", "request_id": "f-1", "user_image": tiny_png(), "body_profile": body_profile()});
    let (status, _, body) = call(
        &app,
        Method::POST,
        "/models/default",
        None,
        json_body(&create),
    )
    .await;
    assert_eq!(status, 401);
    c.check("post", "/models/default", status, &body);

    // Create, replay (200), conflicting replay (409).
    let (status, created) = send(
        &app,
        &c,
        "post",
        "/models/default",
        "/models/default",
        Some(&create),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let base = created["data"]["task_id"]
        .as_str()
        .expect("task_id")
        .to_owned();
    let (status, _) = send(
        &app,
        &c,
        "post",
        "/models/default",
        "/models/default",
        Some(&create),
    )
    .await;
    assert_eq!(status, 200);
    let mut other = create.clone();
    other["size"] = json!("1:1");
    let (status, _) = send(
        &app,
        &c,
        "post",
        "/models/default",
        "/models/default",
        Some(&other),
    )
    .await;
    assert_eq!(status, 409);

    // 400 (every bad field), 413, 415.
    let bad = json!({"user_id": "", "user_image": "data:image/png;base64,@@", "body_profile": {"height_cm": -1}, "size": "7:7"});
    let (status, body) = send(
        &app,
        &c,
        "post",
        "/models/default",
        "/models/default",
        Some(&bad),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["data"]["errors"]
            .as_array()
            .is_some_and(|e| e.len() >= 3),
        "{body}"
    );
    let (status, _, body) = call(
        &app,
        Method::POST,
        "/models/default",
        Some(TOKEN),
        Some(("application/json", vec![b' '; 30_000])),
    )
    .await;
    assert_eq!(status, 413);
    c.check("post", "/models/default", status, &body);
    let (status, _, body) = call(
        &app,
        Method::POST,
        "/models/default",
        Some(TOKEN),
        Some(("text/plain", b"{}".to_vec())),
    )
    .await;
    assert_eq!(status, 415);
    c.check("post", "/models/default", status, &body);

    // The task, completed; its timeline; the callback it sent.
    let (status, _) = send(
        &app,
        &c,
        "get",
        "/tasks/{task_id}",
        &format!("/tasks/{base}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let done = finish(&app, &base).await;
    c.check("get", "/tasks/{task_id}", 200, &done);
    assert_eq!(done["data"]["status"], "completed", "{done}");
    let (status, _) = send(
        &app,
        &c,
        "get",
        "/tasks/{task_id}",
        &format!("/tasks/{base}?include=image_base64"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &app,
        &c,
        "get",
        "/tasks/{task_id}",
        &format!("/tasks/{base}?include=nope"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = send(
        &app,
        &c,
        "get",
        "/tasks/{task_id}",
        "/tasks/task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W",
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Edit and outfit on it; cancel one (200), again (409).
    let edit =
        json!({"user_id": "flow", "base_model_task_id": base, "edit_instructions": "shorter hair"});
    let (status, edited) = send(
        &app,
        &c,
        "post",
        "/models/edit",
        "/models/edit",
        Some(&edit),
    )
    .await;
    assert_eq!(status, 202, "{edited}");
    let edit_id = edited["data"]["task_id"]
        .as_str()
        .expect("task_id")
        .to_owned();
    let outfit = json!({"user_id": "flow", "base_model_task_id": base, "angle": "back", "outfit_images": [tiny_png()], "outfit_description": "white shirt"});
    let (status, dressed) = send(
        &app,
        &c,
        "post",
        "/models/outfit",
        "/models/outfit",
        Some(&outfit),
    )
    .await;
    assert_eq!(status, 202, "{dressed}");
    let outfit_id = dressed["data"]["task_id"]
        .as_str()
        .expect("task_id")
        .to_owned();
    let (status, _) = send(
        &app,
        &c,
        "post",
        "/tasks/{task_id}/cancel",
        &format!("/tasks/{edit_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &app,
        &c,
        "post",
        "/tasks/{task_id}/cancel",
        &format!("/tasks/{edit_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = send(
        &app,
        &c,
        "post",
        "/tasks/{task_id}/cancel",
        "/tasks/task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W/cancel",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let dressed = finish(&app, &outfit_id).await;
    c.check("get", "/tasks/{task_id}", 200, &dressed);
    let edit_bad = json!({"user_id": "flow", "base_model_task_id": "task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W", "edit_instructions": "x"});
    let (status, _) = send(
        &app,
        &c,
        "post",
        "/models/edit",
        "/models/edit",
        Some(&edit_bad),
    )
    .await;
    assert_eq!(status, 404);

    // Lists, timeline, usage.
    let (status, _) = send(
        &app,
        &c,
        "get",
        "/tasks",
        "/tasks?user_id=flow&limit=2",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, page) = send(
        &app,
        &c,
        "get",
        "/tasks",
        "/tasks?status=cancelled&type=edit",
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let (status, _) = send(&app, &c, "get", "/tasks", "/tasks?limit=0", None).await;
    assert_eq!(status, 400);
    let (status, _) = send(
        &app,
        &c,
        "get",
        "/tasks/{task_id}/events",
        &format!("/tasks/{base}/events"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &app,
        &c,
        "get",
        "/tasks/{task_id}/events",
        "/tasks/task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W/events",
        None,
    )
    .await;
    assert_eq!(status, 404);
    for (path, want) in [
        ("/usage", 200),
        ("/usage?group_by=type&user_id=flow", 200),
        ("/usage?group_by=week", 400),
    ] {
        let (status, _) = send(&app, &c, "get", "/usage", path, None).await;
        assert_eq!(status, want, "{path}");
    }

    // The three terminal tasks' callbacks, delivered.
    let end = Instant::now() + Duration::from_secs(10);
    while receiver.received_requests().await.unwrap_or_default().len() < 3 {
        app.engine
            .deliver_due_callbacks()
            .await
            .expect("deliver callbacks");
        assert!(Instant::now() < end, "callbacks were not delivered in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Admin.
    let (status, outbox) = send(
        &app,
        &c,
        "get",
        "/admin/callbacks",
        "/admin/callbacks",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let event = outbox["data"]["items"][0]["event_id"]
        .as_str()
        .expect("a delivery")
        .to_owned();
    let (status, _) = send(
        &app,
        &c,
        "post",
        "/admin/callbacks/{event_id}/redeliver",
        &format!("/admin/callbacks/{event}/redeliver"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &app,
        &c,
        "get",
        "/admin/callbacks",
        "/admin/callbacks?status=sent",
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = send(
        &app,
        &c,
        "post",
        "/admin/callbacks/{event_id}/redeliver",
        "/admin/callbacks/evt_01JQ8Z6X3M4N5P6Q7R8S9T0V1W/redeliver",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(
        &app,
        &c,
        "post",
        "/admin/callbacks/redeliver-dead",
        "/admin/callbacks/redeliver-dead",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &app,
        &c,
        "post",
        "/admin/tasks/retry",
        "/admin/tasks/retry",
        Some(&json!({"dry_run": true})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &app,
        &c,
        "post",
        "/admin/tasks/retry",
        "/admin/tasks/retry",
        Some(&json!({"since": "yesterday"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = send(
        &app,
        &c,
        "delete",
        "/admin/users/{user_id}/data",
        "/admin/users/flow/data?dry_run=true",
        None,
    )
    .await;
    assert_eq!(status, 200);

    // The console's admin routes.
    for (path, want) in [
        ("/admin/stats?window=1h", 200),
        ("/admin/stats?window=24h", 200),
        ("/admin/stats?window=7d", 400),
    ] {
        let (status, body) = send(&app, &c, "get", "/admin/stats", path, None).await;
        assert_eq!(status, want, "{path}: {body}");
    }
    let (status, inputs) = send(
        &app,
        &c,
        "get",
        "/admin/tasks/{task_id}/inputs",
        &format!("/admin/tasks/{base}/inputs"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{inputs}");
    // An input's bytes are an image, not JSON; past the last one is a 404 envelope.
    let (status, headers, _) = call(
        &app,
        Method::GET,
        &format!("/admin/tasks/{base}/inputs/0"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let (status, _) = send(
        &app,
        &c,
        "get",
        "/admin/tasks/{task_id}/inputs/{n}",
        &format!("/admin/tasks/{base}/inputs/99"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(
        &app,
        &c,
        "post",
        "/admin/tasks/{task_id}/retry",
        &format!("/admin/tasks/{base}/retry"),
        None,
    )
    .await;
    assert_eq!(status, 409, "a completed task is not retried");
    let (status, tested) = send(
        &app,
        &c,
        "post",
        "/admin/callbacks/test",
        "/admin/callbacks/test",
        None,
    )
    .await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["data"]["delivered"], true, "{tested}");

    // 405 and an unknown route: the error envelope.
    for (verb, path, want) in [(Method::PUT, "/tasks", 405), (Method::GET, "/nowhere", 404)] {
        let (status, _, body) = call(&app, verb, path, Some(TOKEN), None).await;
        assert_eq!(status, want, "{path}");
        let errors = c.errors(&Contract::component("ErrorEnvelope"), &body);
        assert!(errors.is_empty(), "{path}: {errors:#?}");
    }

    // The callbacks the service POSTed: body and headers as the `webhooks` section says.
    let requests = receiver.received_requests().await.unwrap_or_default();
    assert!(!requests.is_empty(), "no callback was delivered");
    let mut tests = 0;
    for request in &requests {
        let body: Value = serde_json::from_slice(&request.body).expect("callback body is JSON");
        let hook = if body["event_type"] == "test" {
            tests += 1;
            &c.doc["webhooks"]["testEvent"]["post"]
        } else {
            &c.doc["webhooks"]["taskEnded"]["post"]
        };
        let errors = c.errors(
            &hook["requestBody"]["content"]["application/json"]["schema"],
            &body,
        );
        assert!(errors.is_empty(), "callback body: {errors:#?}\n{body:#}");
        for param in hook["parameters"].as_array().expect("parameters") {
            let name = param["name"].as_str().expect("name");
            let value = request.headers.get(name).and_then(|v| v.to_str().ok());
            // A signing secret is configured: every documented header is sent.
            let value = value.unwrap_or_else(|| panic!("callback header {name} missing"));
            let errors = c.errors(&param["schema"], &json!(value));
            assert!(
                errors.is_empty(),
                "callback header {name}: {value}: {errors:#?}"
            );
        }
    }
    assert_eq!(tests, 1, "the test event reached the receiver once");
}

/// The validator the tests above rely on refuses bodies that break the
/// document: a missing required field, a value outside an enum, a wrong
/// format, a field of the wrong type.
#[test]
fn the_contract_check_catches_a_wrong_body() {
    let c = Contract::new(document());
    let view = json!({
        "task_id": "task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W", "request_id": null, "user_id": "u1",
        "type": "default", "status": "completed", "progress": 100, "angle": null,
        "base_model_task_id": null,
        "image": {"image_url": "https://img.example/a.png", "width": 4, "height": 3, "mime": "image/png"},
        "images": [{"image_url": "https://img.example/a.png", "width": 4, "height": 3, "mime": "image/png"}],
        "error_code": null, "error_message": null,
        "created_at": "2026-11-29T11:35:33.123Z", "updated_at": "2026-11-29T11:35:33.123Z",
        "completed_at": "2026-11-29T11:35:33.123Z", "queued_at": "2026-11-29T11:35:33.123Z",
        "submitted_at": "2026-11-29T11:35:33.123Z", "queue_position": null, "estimated_start_at": null,
        "cost": null, "retries": 0, "callback_url": null
    });
    let envelope = |data: &Value| json!({"code": 0, "msg": "success", "data": data});
    let schema = Contract::component("Envelope_TaskView");
    assert_eq!(c.errors(&schema, &envelope(&view)), Vec::<String>::new());

    let mut broken = Vec::new();
    let mut missing = view.clone();
    missing
        .as_object_mut()
        .expect("object")
        .remove("completed_at");
    broken.push(("a required null field left out", missing));
    let mut status = view.clone();
    status["status"] = json!("done");
    broken.push(("a status outside the enum", status));
    let mut time = view.clone();
    time["created_at"] = json!("yesterday");
    broken.push(("a time that is not date-time", time));
    let mut progress = view.clone();
    progress["progress"] = json!(101);
    broken.push(("progress above 100", progress));
    let mut kind = view.clone();
    kind["type"] = json!(["default"]);
    broken.push(("a type of the wrong JSON type", kind));
    for (what, body) in broken {
        assert!(
            !c.errors(&schema, &envelope(&body)).is_empty(),
            "{what} passed validation"
        );
    }
    let no_data = json!({"code": 0, "msg": "success"});
    assert!(
        !c.errors(&schema, &no_data).is_empty(),
        "envelope without data passed"
    );
    let bad_error = json!({"code": 42, "msg": "x", "data": null});
    assert!(
        !c.errors(&Contract::component("ErrorEnvelope"), &bad_error)
            .is_empty(),
        "an unknown error code passed"
    );
}
