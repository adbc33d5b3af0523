//! The operator console's server side through real HTTP: its static files
//! (open, with a strict Content-Security-Policy) and the admin endpoints it
//! calls (`GET /admin/stats`, a task's inputs, the retry of one task, the
//! test callback). The pages themselves are tested in a real browser
//! (tests/tests/console.rs).

#![expect(clippy::unwrap_used, reason = "tests")]

use modelgen_e2e::Backend;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header_exists, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{AppOptions, TestApp, spawn_app};

const TOKEN: &str = "console-s3cret";

async fn app_with(extra: Vec<(String, String)>) -> TestApp {
    spawn_app(Backend::Sqlite, AppOptions { extra }).await
}

async fn authed(app: &TestApp, method: reqwest::Method, path: &str) -> (u16, Value) {
    let res = app
        .client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_console_is_served_without_a_token_under_a_strict_policy() {
    let app = app_with(vec![("api_auth_token".into(), format!("{TOKEN:?}"))]).await;
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/style.css", "text/css"),
    ] {
        let res = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        assert!(
            h("content-type").starts_with(kind),
            "{path}: {}",
            h("content-type")
        );
        let csp = h("content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(csp.contains("img-src 'self' blob: data:"), "{csp}");
        assert_eq!(h("x-content-type-options"), "nosniff");
        assert_eq!(h("cache-control"), "no-cache");
    }
    let page = app
        .client
        .get(format!("{}/console", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/console/app.js"));
    assert!(
        !page.contains("<script>") && !page.contains("http"),
        "no inline script, nothing from elsewhere"
    );
    // An unknown file is a 404 in the envelope; the data is not open.
    let (status, body) = app.get("/console/secrets.txt").await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(1003)), "{body}");
    for path in [
        "/admin/stats",
        "/admin/tasks/task_01ARZ3NDEKTSV4RRFFQ69G5FAV/inputs/0",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!((status, body["code"].as_i64()), (401, Some(1005)), "{path}");
    }
    let (status, body) = authed(&app, reqwest::Method::GET, "/admin/stats").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn stats_count_outcomes_latency_and_upstream_errors_by_status() {
    let app = app_with(Vec::new()).await;
    let empty = app.get("/admin/stats").await;
    assert_eq!(empty.0, 200, "{}", empty.1);
    assert_eq!(empty.1["data"]["success_rate"], Value::Null);
    assert_eq!(empty.1["data"]["buckets"].as_array().unwrap().len(), 60);

    let done = app.create_default("st").await;
    assert_eq!(app.drive_until_terminal(&done).await["status"], "completed");
    let (status, body) = app
        .post(
            "/models/edit",
            &json!({"user_id": "st", "base_model_task_id": done, "edit_instructions": "x [[sim:submit=402]]"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let failed = body["data"]["task_id"].as_str().unwrap().to_owned();
    assert_eq!(app.drive_until_terminal(&failed).await["status"], "failed");

    for window in ["1h", "24h"] {
        let (status, body) = app.get(&format!("/admin/stats?window={window}")).await;
        assert_eq!(status, 200, "{body}");
        let s = &body["data"];
        assert_eq!(s["window"], window);
        assert_eq!(
            (s["completed"].as_u64(), s["failed"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(s["success_rate"].as_f64(), Some(0.5));
        assert_eq!(s["latency"]["count"], 1);
        assert!(s["latency"]["p50_ms"].as_i64().is_some());
        let buckets = s["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), if window == "1h" { 60 } else { 96 });
        let sum = |k: &str| buckets.iter().filter_map(|b| b[k].as_u64()).sum::<u64>();
        assert_eq!(
            (sum("completed"), sum("failed")),
            (1, 1),
            "every ended task in a bucket"
        );
        // The 402 the simulator answered the submit with, from the timeline.
        let errors = s["upstream_errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["status"] == "402" && e["submits"].as_u64() >= Some(1)),
            "{errors:?}"
        );
        assert_eq!(
            sum("upstream_errors"),
            errors
                .iter()
                .map(|e| e["submits"].as_u64().unwrap() + e["polls"].as_u64().unwrap())
                .sum::<u64>()
        );
        assert_eq!(s["queue"]["depth"], 0);
        assert_eq!(s["spend_today"]["completed"], 1);
    }
    let (status, body) = app.get("/admin/stats?window=7d").await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    assert_eq!(body["data"]["errors"][0]["field"], "window");
}

#[tokio::test]
async fn input_photos_are_served_privately_and_one_failed_task_is_retried() {
    let app = app_with(Vec::new()).await;
    let base = app.create_default("in").await;
    app.drive_until_terminal(&base).await;
    let (status, body) = app.get(&format!("/admin/tasks/{base}/inputs")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["items"],
        json!([{"n": 0, "source": "upload", "available": true}])
    );
    let res = app
        .client
        .get(format!("{}/admin/tasks/{base}/inputs/0", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["content-type"], "image/png");
    assert!(res.bytes().await.unwrap().starts_with(b"\x89PNG"));
    for path in [
        format!("/admin/tasks/{base}/inputs/1"),
        format!("/admin/tasks/{base}/inputs/x"),
        "/admin/tasks/task_01ARZ3NDEKTSV4RRFFQ69G5FAV/inputs/0".to_owned(),
        "/admin/tasks/nope/inputs".to_owned(),
    ] {
        let (status, body) = app.get(&path).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (404, Some(1003)),
            "{path}: {body}"
        );
    }

    // An edit's input is the base model's result.
    let (status, body) = app
        .post(
            "/models/edit",
            &json!({"user_id": "in", "base_model_task_id": base, "edit_instructions": "x [[sim:submit=402]]"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let edit = body["data"]["task_id"].as_str().unwrap().to_owned();
    let (_, body) = app.get(&format!("/admin/tasks/{edit}/inputs")).await;
    assert_eq!(body["data"]["items"][0]["source"], "result");
    assert_eq!(app.drive_until_terminal(&edit).await["status"], "failed");

    // Retry it: queued again under its id; a second retry is refused.
    let (status, body) = app
        .post(&format!("/admin/tasks/{edit}/retry"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["task_id"], edit.as_str());
    assert_eq!(body["data"]["status"], "submitted");
    assert_eq!(body["data"]["retries"], 1);
    let (status, body) = app
        .post(&format!("/admin/tasks/{edit}/retry"), &json!({}))
        .await;
    assert_eq!((status, body["code"].as_i64()), (409, Some(1006)), "{body}");
    assert_eq!(body["data"]["status"], "submitted");
    let (status, _) = app
        .post(&format!("/admin/tasks/{base}/retry"), &json!({}))
        .await;
    assert_eq!(status, 409, "a completed task is not retried");
    let (status, _) = app
        .post(
            "/admin/tasks/task_01ARZ3NDEKTSV4RRFFQ69G5FAV/retry",
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_test_event_reports_how_the_receiver_answered() {
    let app = app_with(Vec::new()).await;
    let (status, body) = app.post("/admin/callbacks/test", &json!({})).await;
    assert_eq!((status, body["code"].as_i64()), (409, Some(1006)), "{body}");
    assert!(body["msg"].as_str().unwrap().contains("CALLBACK_URL"));

    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header_exists("webhook-signature"))
        .and(body_partial_json(json!({"event_type": "test"})))
        .respond_with(ResponseTemplate::new(204))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("receiver broke"))
        .mount(&receiver)
        .await;
    let app = app_with(vec![
        (
            "callback_url".into(),
            format!("{:?}", format!("{}/hook", receiver.uri())),
        ),
        (
            "callback_signing_secret".into(),
            "\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"".into(),
        ),
    ])
    .await;
    let (status, body) = app.post("/admin/callbacks/test", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let r = &body["data"];
    assert_eq!(
        (r["delivered"].as_bool(), r["http_status"].as_u64()),
        (Some(true), Some(204)),
        "{r}"
    );
    assert_eq!(r["signed"], true);
    assert_eq!(r["error"], Value::Null);
    let sent = receiver.received_requests().await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].headers["webhook-id"].to_str().unwrap(),
        r["event_id"].as_str().unwrap()
    );
    // A refusal is an answer too: status and the start of the body.
    let (status, body) = app.post("/admin/callbacks/test", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let r = &body["data"];
    assert_eq!(
        (r["delivered"].as_bool(), r["http_status"].as_u64()),
        (Some(false), Some(500)),
        "{r}"
    );
    assert!(
        r["error"].as_str().unwrap().contains("receiver broke"),
        "{r}"
    );
    // No outbox row was made for either.
    let (_, list) = app.get("/admin/callbacks").await;
    assert_eq!(list["data"]["items"], json!([]));
}

#[tokio::test]
async fn callbacks_are_listed_for_one_task() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let app = app_with(vec![(
        "callback_url".into(),
        format!("{:?}", format!("{}/hook", receiver.uri())),
    )])
    .await;
    let a = app.create_default("cb").await;
    let b = app.create_default("cb").await;
    app.drive_until_terminal(&a).await;
    app.drive_until_terminal(&b).await;
    let (status, body) = app.get(&format!("/admin/callbacks?task_id={a}")).await;
    assert_eq!(status, 200, "{body}");
    let items = body["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["task_id"], a.as_str());
    let (_, body) = app.get("/admin/callbacks?task_id=nope").await;
    assert_eq!(body["data"]["items"], json!([]));
    let (_, body) = app
        .get(&format!("/admin/callbacks?task_id={a}&status=dead"))
        .await;
    assert_eq!(body["data"]["items"], json!([]));
}
