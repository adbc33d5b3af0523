//! Hostile input over real HTTP (issue 11): request bodies must be declared as
//! UTF-8 JSON (415/1008 otherwise, the cross-site form hole closed), a wrong
//! method on an existing path is 405/1009 with `Allow`, and images whose
//! headers declare more pixels than the budget — as inputs or as results —
//! are refused without being decoded.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt as _;
use modelgen_api::ports::{FetchError, ImageChunks, ImageFetcher};
use modelgen_e2e::Backend;
use modelgen_e2e::bombs::{png_data_uri, png_declaring, png_inflating};
use serde_json::{Value, json};

use crate::helpers::{AppOptions, TestApp, body_profile, person_jpeg, spawn_app, tiny_png};

/// POSTs `body` to `path` with `Content-Type: content_type` (none when `None`).
async fn post_typed(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut rb = app.client.post(format!("{}{path}", app.base)).body(body);
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn default_body(user: &str) -> Vec<u8> {
    json!({"user_id": user, "user_image": tiny_png(), "body_profile": body_profile()})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn json_in_any_case_with_a_utf8_charset_is_accepted() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    for ct in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/json; charset=\"utf-8\"",
        "application/json; charset=utf8",
        "APPLICATION/JSON ; version=1",
    ] {
        let (status, body) =
            post_typed(&app, "/models/default", Some(ct), default_body("ok")).await;
        assert_eq!(status, 202, "{ct}: {body}");
    }
    // A UTF-8 byte order mark before the object is ignored (RFC 8259 §8.1).
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(default_body("ok"));
    let (status, body) = post_typed(&app, "/models/default", Some("application/json"), bom).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn bodies_not_declared_as_utf8_json_are_415_and_create_nothing() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let cases: [(Option<&str>, &str); 10] = [
        // What an HTML form posts cross-site without a preflight.
        (
            Some("application/x-www-form-urlencoded"),
            "application/x-www-form-urlencoded",
        ),
        (Some("text/plain"), "text/plain"),
        (Some("text/plain; charset=utf-8"), "text/plain"),
        (
            Some("multipart/form-data; boundary=x"),
            "multipart/form-data",
        ),
        // What `fetch` with a byte body sends: no Content-Type at all.
        (None, "missing"),
        (Some(""), "``"),
        (Some("application/problem+json"), "application/problem+json"),
        (Some("application/jsonp"), "application/jsonp"),
        (Some("application/json; charset=GBK"), "UTF-8"),
        (Some("application/json; charset=utf-16"), "UTF-8"),
    ];
    for path in ["/models/default", "/models/edit", "/models/outfit"] {
        for (ct, says) in cases {
            let (status, body) = post_typed(&app, path, ct, default_body("form")).await;
            assert_eq!(
                (status, body["code"].as_i64()),
                (415, Some(1008)),
                "{path} {ct:?}: {body}"
            );
            let msg = body["msg"].as_str().unwrap();
            assert!(msg.contains(says), "{ct:?}: {msg}");
            assert!(msg.contains("application/json"), "{ct:?}: {msg}");
            assert!(body["data"].is_null(), "{body}");
        }
    }
    assert_eq!(app.count_tasks("form").await, 0);
    assert_eq!(app.stored_inputs(), 0);
}

#[tokio::test]
async fn a_gbk_body_is_refused_with_a_message_that_asks_for_utf8() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    // {"user_id": "张三", …} with the name in GBK (张 = D5C5, 三 = C8FD).
    let mut gbk = b"{\"user_id\": \"".to_vec();
    gbk.extend([0xD5, 0xC5, 0xC8, 0xFD]);
    gbk.extend(b"\", \"user_image\": \"");
    gbk.extend(tiny_png().as_bytes());
    gbk.extend(b"\", \"body_profile\": {}}");

    let (status, body) = post_typed(
        &app,
        "/models/default",
        Some("application/json; charset=GBK"),
        gbk.clone(),
    )
    .await;
    assert_eq!((status, body["code"].as_i64()), (415, Some(1008)), "{body}");
    let msg = body["msg"].as_str().unwrap();
    assert!(msg.contains("`GBK`") && msg.contains("UTF-8"), "{msg}");

    // Declared as JSON, but the bytes are not UTF-8: 400 naming the body.
    let (status, body) = post_typed(&app, "/models/default", Some("application/json"), gbk).await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    assert_eq!(body["data"]["errors"][0]["field"], "body", "{body}");
    let message = body["data"]["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("not valid UTF-8 (at byte 13)") && message.contains("UTF-8 encoded JSON"),
        "{message}"
    );
    assert_eq!(app.stored_inputs(), 0);
}

/// `(method, path, Allow)` for a wrong method on every kind of route.
const WRONG_METHODS: [(&str, &str, &str); 10] = [
    ("GET", "/models/default", "POST"),
    ("PUT", "/models/edit", "POST"),
    ("DELETE", "/models/outfit", "POST"),
    ("POST", "/tasks", "GET, HEAD"),
    (
        "DELETE",
        "/tasks/task_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "GET, HEAD",
    ),
    (
        "GET",
        "/tasks/task_01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel",
        "POST",
    ),
    ("POST", "/healthz", "GET, HEAD"),
    ("PATCH", "/metrics", "GET, HEAD"),
    ("GET", "/admin/users/u1/data", "DELETE"),
    ("GET", "/admin/callbacks/redeliver-dead", "POST"),
];

#[tokio::test]
async fn a_wrong_method_on_an_existing_path_is_405_with_allow_and_unknown_paths_stay_404() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![("api_auth_token".into(), "\"tok\"".into())],
        },
    )
    .await;
    for (method, path, allow) in WRONG_METHODS {
        let r = app
            .client
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(
            r.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], 1009, "{body}");
        let msg = body["msg"].as_str().unwrap();
        assert!(
            msg.contains(method) && msg.contains(allow),
            "{method} {path}: {msg}"
        );
    }
    // HEAD is served wherever GET is, without a body.
    for path in ["/healthz", "/tasks?limit=1", "/openapi.json"] {
        let r = app
            .client
            .head(format!("{}{path}", app.base))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "HEAD {path}");
        assert!(
            r.bytes().await.unwrap().is_empty(),
            "HEAD {path} has a body"
        );
    }
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/models"),
        ("DELETE", "/tasks/a/b/c"),
    ] {
        let r = app
            .client
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method} {path}");
        assert!(r.headers().get("allow").is_none());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], 1003, "{body}");
    }
}

/// Asserts a 400/1001 whose one error names `field` and the pixel limits.
fn assert_pixel_refusal(status: u16, body: &Value, field: &str, declared: &str) {
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    let errors = body["data"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["field"], field, "{body}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains(declared)
            && message.contains("8192 pixels a side")
            && message.contains("40000000 pixels in all"),
        "{message}"
    );
}

#[tokio::test]
async fn image_bombs_are_refused_as_user_image_and_as_outfit_images() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let declared = png_data_uri(&png_declaring(50_000, 50_000));
    let inflating = png_data_uri(png_inflating());
    let bare = |uri: &str| uri.split_once(',').unwrap().1.to_string();
    let bombs = [(&declared, "50000 × 50000"), (&inflating, "24000 × 24000")];

    for (bomb, size) in bombs {
        for field in ["user_image", "picture_url"] {
            let (status, body) = app
                .post(
                    "/models/default",
                    &json!({"user_id": "bomb", field: bomb, "body_profile": body_profile()}),
                )
                .await;
            assert_pixel_refusal(status, &body, field, size);
        }
        let (status, body) = app
            .post(
                "/models/default",
                &json!({"user_id": "bomb", "user_image_base64": bare(bomb), "body_profile": body_profile()}),
            )
            .await;
        assert_pixel_refusal(status, &body, "user_image_base64", size);
    }

    let base = app.create_default("bomb").await;
    assert_eq!(app.drive_until_terminal(&base).await["status"], "completed");
    let before = app.stored_inputs();
    for (bomb, size) in bombs {
        for field in ["outfit_images", "outfit_image_urls"] {
            let (status, body) = app
                .post(
                    "/models/outfit",
                    &json!({"user_id": "bomb", "base_model_task_id": base, "angle": "front",
                            field: [tiny_png(), bomb]}),
                )
                .await;
            assert_pixel_refusal(status, &body, &format!("{field}[1]"), size);
        }
        let (status, body) = app
            .post(
                "/models/outfit",
                &json!({"user_id": "bomb", "base_model_task_id": base, "angle": "front",
                        "outfit_image_base64": bare(bomb)}),
            )
            .await;
        assert_pixel_refusal(status, &body, "outfit_image_base64[0]", size);
    }
    assert_eq!(app.count_tasks("bomb").await, 1, "only the base model");
    assert_eq!(
        app.stored_inputs(),
        before,
        "nothing stored for refused requests"
    );
}

#[tokio::test]
async fn the_pixel_budget_is_configurable() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![
                ("image_max_side".into(), "64".into()),
                ("image_max_pixels".into(), "100000".into()),
            ],
        },
    )
    .await;
    let (status, body) = app
        .post(
            "/models/default",
            &json!({"user_id": "cfg", "user_image": person_jpeg(), "body_profile": body_profile()}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    let message = body["data"]["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("64 pixels a side") && message.contains("100000 pixels in all"),
        "{message}"
    );
    // The 1×1 PNG fits.
    app.create_default("cfg").await;
}

/// Serves `bytes` as every result image, counting downloads.
struct ResultServer {
    bytes: Vec<u8>,
    opened: AtomicUsize,
}

#[async_trait]
impl ImageFetcher for ResultServer {
    async fn open(&self, _url: &str, _max_bytes: usize) -> Result<ImageChunks, FetchError> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        // In two chunks, as a network would deliver it.
        let (a, b) = self.bytes.split_at(self.bytes.len() / 2);
        let chunks = vec![
            Ok(bytes::Bytes::copy_from_slice(a)),
            Ok(bytes::Bytes::copy_from_slice(b)),
        ];
        Ok(futures_util::stream::iter(chunks).boxed())
    }
}

#[tokio::test]
async fn a_result_bomb_fails_its_task_at_once_without_retry() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    for (bytes, size) in [
        (png_declaring(50_000, 50_000), "50000 × 50000"),
        (png_inflating().to_vec(), "24000 × 24000"),
    ] {
        let server = Arc::new(ResultServer {
            bytes,
            opened: AtomicUsize::new(0),
        });
        let engine = Arc::new(modelgen_api::engine::Engine {
            fetcher: server.clone(),
            ..(*app.engine).clone()
        });
        let id = app.create_default("result-bomb").await;
        let end = Instant::now() + Duration::from_secs(30);
        let view = loop {
            engine.run_once().await.unwrap();
            let (_, view) = app.get(&format!("/tasks/{id}")).await;
            if matches!(
                view["data"]["status"].as_str(),
                Some("completed" | "failed")
            ) {
                break view["data"].clone();
            }
            assert!(Instant::now() < end, "task did not finish: {view}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(view["status"], "failed", "{view}");
        assert_eq!(view["error_code"], 1002, "{view}");
        let message = view["error_message"].as_str().unwrap();
        assert!(
            message.contains(&format!("result image declares {size} pixels"))
                && message.contains("8192 pixels a side"),
            "{message}"
        );
        assert_eq!(
            server.opened.load(Ordering::SeqCst),
            1,
            "downloaded once, never retried"
        );
        assert!(view["images"].as_array().unwrap().is_empty(), "{view}");
        // Nothing of it was stored.
        let results = app.storage_dir().join("results").join(&id);
        assert!(!results.exists() || std::fs::read_dir(&results).unwrap().next().is_none());
    }
}

/// Found by `make api-check` (schemathesis): `?dry_run=` (empty) was read as
/// `false` and erased the user's data; a value that is neither `true` nor
/// `false` must change nothing.
#[tokio::test]
async fn an_erasure_with_an_empty_or_unreadable_dry_run_is_refused_and_erases_nothing() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let id = app.create_default("keep-me").await;
    for value in ["", "1", "0", "TRUE", "yes", "false%00"] {
        let (status, body) = app
            .delete(&format!("/admin/users/keep-me/data?dry_run={value}"))
            .await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(1001)),
            "dry_run={value:?}: {body}"
        );
        assert_eq!(body["data"]["errors"][0]["field"], "dry_run", "{body}");
    }
    let (_, view) = app.get(&format!("/tasks/{id}")).await;
    assert_eq!(view["data"]["status"], "submitted", "not cancelled: {view}");
    assert!(app.stored_inputs() > 0, "its photo is still there");
}

/// Found by `make api-check` (schemathesis): an empty `limit=` was taken as
/// "no limit given", though the document declares an integer (and the
/// earlier service's integer parameter refused it).
#[tokio::test]
async fn an_empty_limit_is_refused_on_both_list_routes() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    for path in [
        "/tasks?limit=",
        "/tasks?limit=&status=",
        "/admin/callbacks?limit=",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(1001)),
            "{path}: {body}"
        );
        assert_eq!(body["data"]["errors"][0]["field"], "limit", "{body}");
    }
    // Empty filters still mean "no filter".
    let (status, body) = app.get("/tasks?status=&type=&cursor=").await;
    assert_eq!(status, 200, "{body}");
}

/// Found by a black-box attack after issue 11's 415 landed: the POST routes
/// that take no body (cancel, redeliver) took a cross-site HTML form post, a
/// second `Content-Type` header slipped past the first, and a page on
/// another site could cancel with a body-less `fetch`. Each is refused before
/// any handler runs, and changes nothing.
#[tokio::test]
async fn cross_site_browser_requests_are_refused_on_every_state_changing_route() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let id = app.create_default("csrf").await;
    let cancel = format!("/tasks/{id}/cancel");
    for (path, content_type) in [
        (cancel.as_str(), "application/x-www-form-urlencoded"),
        (cancel.as_str(), "multipart/form-data; boundary=x"),
        (cancel.as_str(), "TEXT/PLAIN;charset=utf-8"),
        (
            "/admin/callbacks/redeliver-dead",
            "application/x-www-form-urlencoded",
        ),
    ] {
        let (status, body) = post_typed(&app, path, Some(content_type), b"a=b".to_vec()).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (415, Some(1008)),
            "{path} {content_type}: {body}"
        );
    }
    // Two Content-Type headers: ambiguous, whichever comes first.
    for (first, second) in [
        ("application/json", "text/plain"),
        ("text/plain", "application/json"),
    ] {
        let r = app
            .client
            .post(format!("{}/models/default", app.base))
            .header("content-type", first)
            .header("content-type", second)
            .body(default_body("csrf-two"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!((status, body["code"].as_i64()), (415, Some(1008)), "{body}");
        assert!(
            body["msg"]
                .as_str()
                .unwrap()
                .contains("more than one Content-Type"),
            "{body}"
        );
    }
    let (_, page) = app.get("/tasks?user_id=csrf-two").await;
    assert_eq!(page["data"]["items"], json!([]), "nothing stored: {page}");
    // A body-less fetch from another site.
    for site in ["cross-site", "same-site"] {
        let r = app
            .client
            .post(format!("{}{cancel}", app.base))
            .header("sec-fetch-site", site)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!((status, body["code"].as_i64()), (403, Some(1011)), "{body}");
    }
    let (_, view) = app.get(&format!("/tasks/{id}")).await;
    assert_eq!(view["data"]["status"], "submitted", "not cancelled: {view}");
    // Same-origin requests, and servers (no Sec-Fetch-Site), go through.
    let r = app
        .client
        .post(format!("{}{cancel}", app.base))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, view) = app.get(&format!("/tasks/{id}")).await;
    assert_eq!(view["data"]["status"], "cancelled", "{view}");
}

/// Found by a black-box attack: `?dryrun=true` (misspelled) was ignored and
/// the user's data erased for real.
#[tokio::test]
async fn an_erasure_with_an_unknown_query_parameter_is_refused_and_erases_nothing() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let id = app.create_default("keep-me-too").await;
    for query in ["dryrun=true", "dry-run=true", "dry_run=true&force=1"] {
        let (status, body) = app
            .delete(&format!("/admin/users/keep-me-too/data?{query}"))
            .await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(1001)),
            "{query}: {body}"
        );
    }
    let (_, view) = app.get(&format!("/tasks/{id}")).await;
    assert_eq!(view["data"]["status"], "submitted", "not cancelled: {view}");
    assert!(app.stored_inputs() > 0, "its photo is still there");
}
