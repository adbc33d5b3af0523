//! A task's timeline (`GET /tasks/{task_id}/events`), what tasks cost
//! (`cost` in the task view and the callback, `GET /usage`), the retry of
//! failed tasks by filter (`POST /admin/tasks/retry`), and the docs page
//! behind a token: through real HTTP, SQLite and the simulator's faults.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::time::{Duration, Instant};

use modelgen_e2e::Backend;
use modelgen_persistence::CallbackOutbox as _;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{AppOptions, TestApp, spawn_app};

async fn app_calling_back(receiver: &MockServer, extra: Vec<(String, String)>) -> TestApp {
    let mut extra = extra;
    extra.push((
        "callback_url".into(),
        format!("{:?}", format!("{}/hook", receiver.uri())),
    ));
    spawn_app(Backend::Sqlite, AppOptions { extra }).await
}

async fn edit(app: &TestApp, user: &str, base: &str, instructions: &str) -> String {
    let (status, body) = app
        .post(
            "/models/edit",
            &json!({"user_id": user, "base_model_task_id": base, "edit_instructions": instructions}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body["data"]["task_id"].as_str().unwrap().to_owned()
}

/// Delivers callbacks until `done` says so (10 s at most).
async fn deliver_until(app: &TestApp, mut done: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        app.engine.deliver_due_callbacks().await.unwrap();
        if done().await {
            return;
        }
        assert!(Instant::now() < end, "callbacks were not delivered in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn events(app: &TestApp, task: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/tasks/{task}/events")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["task_id"], task);
    body["data"]["items"].as_array().unwrap().clone()
}

/// Index of the first entry at or after `from` that `pred` accepts.
fn find(items: &[Value], from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> usize {
    items
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, e)| pred(e))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no {what} after entry {from} in {items:#?}"))
}

#[tokio::test]
async fn the_timeline_lists_a_429_on_submit_a_failed_poll_and_a_callback_retry_in_order() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let app = app_calling_back(&receiver, Vec::new()).await;
    let base = app.create_default("tl").await;
    assert_eq!(app.drive_until_terminal(&base).await["status"], "completed");

    let id = edit(
        &app,
        "tl",
        &base,
        "x [[sim:submit-once=429,status-once=503]]",
    )
    .await;
    // The receiver refuses this task's first callback.
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"task_id": id})))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&receiver)
        .await;
    let done = app.drive_until_terminal(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    deliver_until(&app, async || {
        app.db
            .callbacks_for_task(&id.parse().unwrap())
            .await
            .unwrap()
            .iter()
            .all(|c| c.delivered_at.is_some())
    })
    .await;

    let items = events(&app, &id).await;
    assert_eq!(items[0]["kind"], "created", "{items:#?}");
    let claimed = find(&items, 0, "claim", |e| e["kind"] == "claimed");
    assert!(items[claimed]["replica"].is_string());
    let throttled = find(&items, claimed, "429 on submit", |e| {
        e["kind"] == "submit_failed" && e["http_status"] == 429
    });
    let submitted = find(&items, throttled, "submit", |e| e["kind"] == "submitted");
    assert_eq!(
        items[submitted]["attempt"], 1,
        "the client's retry is the same attempt"
    );
    let upstream = items[submitted]["upstream_task_id"].as_str().unwrap();
    assert!(!upstream.is_empty());
    assert!(items[submitted]["latency_ms"].is_i64());
    let poll_failed = find(&items, submitted, "failed poll", |e| {
        e["kind"] == "poll_failed" && e["http_status"] == 503
    });
    assert_eq!(items[poll_failed]["upstream_task_id"], upstream);
    let polled = find(&items, poll_failed, "last poll", |e| {
        e["kind"] == "polled" && e["upstream_status"] == "completed"
    });
    let downloaded = find(&items, polled, "download", |e| e["kind"] == "downloaded");
    let completed = find(&items, downloaded, "completion", |e| {
        e["kind"] == "completed"
    });
    let refused = find(&items, completed, "refused callback", |e| {
        e["kind"] == "callback_attempt" && e["http_status"] == 503
    });
    assert_eq!(items[refused]["attempt"], 1);
    assert!(
        items[refused]["message"].is_string(),
        "{:#?}",
        items[refused]
    );
    let accepted = find(&items, refused, "delivered callback", |e| {
        e["kind"] == "callback_attempt" && e["http_status"] == 200
    });
    assert_eq!(items[accepted]["attempt"], 2);
    find(&items, accepted, "delivery", |e| {
        e["kind"] == "callback_delivered"
    });
    // Oldest first, every field of the contract present.
    let seqs: Vec<i64> = items.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for e in &items {
        for field in [
            "seq",
            "at",
            "kind",
            "replica",
            "attempt",
            "upstream_task_id",
            "upstream_status",
            "progress",
            "http_status",
            "latency_ms",
            "error_code",
            "message",
        ] {
            assert!(e.get(field).is_some(), "{field} missing in {e}");
        }
        assert!(e["at"].as_str().unwrap().ends_with('Z'));
    }

    // What it cost: in the view and in the callback (the simulator's 0.05 a image).
    assert_eq!(done["cost"], 0.05, "{done}");
    let bodies: Vec<Value> = receiver
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|b| b["task_id"] == id.as_str())
        .collect();
    assert_eq!(bodies.len(), 2, "one refused, one accepted");
    assert!(
        bodies
            .iter()
            .all(|b| b["cost"] == 0.05 && b["event_type"] == "task.completed"),
        "{bodies:?}"
    );

    // Unknown and malformed tasks are 404/1003 in the envelope.
    let (status, body) = app
        .get("/tasks/task_01ARZ3NDEKTSV4RRFFQ69G5FAV/events")
        .await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(1003)), "{body}");
    let (status, body) = app.get("/tasks/%00/events").await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(1003)), "{body}");
}

#[tokio::test]
async fn usage_sums_completed_tasks_and_refuses_bad_queries_in_the_envelope() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let base = app.create_default("spender").await;
    assert_eq!(app.drive_until_terminal(&base).await["status"], "completed");
    let other = app.create_default("saver").await;
    app.drive_until_terminal(&other).await;

    let (status, body) = app.get("/usage?group_by=type&user_id=spender").await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["group_by"], "type");
    assert_eq!(data["user_id"], "spender");
    assert_eq!(
        data["items"],
        json!([{"key": "default", "count": 1, "cost": 0.05, "costed": 1}])
    );
    assert_eq!(
        (data["total_count"].as_u64(), data["total_cost"].as_f64()),
        (Some(1), Some(0.05))
    );

    let (status, body) = app.get("/usage").await;
    assert_eq!(status, 200, "{body}");
    let items = body["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one day: {body}");
    assert_eq!(items[0]["count"], 2);
    assert_eq!(
        items[0]["key"],
        chrono::Utc::now().format("%Y-%m-%d").to_string()
    );

    for (query, field) in [
        ("group_by=week", "group_by"),
        ("from=yesterday", "from"),
        ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from"),
        ("from=2024-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
    ] {
        let (status, body) = app.get(&format!("/usage?{query}")).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(1001)),
            "{query}: {body}"
        );
        assert!(body.to_string().contains(field), "{query}: {body}");
    }
    let (status, _) = app.get("/usage?from=2026-12-01T00:00:00Z").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn failed_tasks_are_retried_by_filter_keeping_the_first_callback() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let app = app_calling_back(&receiver, Vec::new()).await;
    let base = app.create_default("outage").await;
    app.drive_until_terminal(&base).await;
    let since = chrono::Utc::now().to_rfc3339();
    // An empty balance fails the task (1002).
    let id = edit(&app, "outage", &base, "x [[sim:submit=402]]").await;
    let failed = app.drive_until_terminal(&id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let task_id = id.parse().unwrap();
    deliver_until(&app, async || {
        app.db
            .callbacks_for_task(&task_id)
            .await
            .unwrap()
            .iter()
            .all(|c| c.delivered_at.is_some())
    })
    .await;
    let timeline_before = events(&app, &id).await;

    let filter = json!({"error_code": 1002, "since": since, "user_id": "outage", "dry_run": true});
    let (status, body) = app.post("/admin/tasks/retry", &filter).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["dry_run"], true);
    assert_eq!(body["data"]["matched"], 1);
    assert_eq!(body["data"]["task_ids"], json!([id]));
    // A dry run changes nothing.
    let (_, view) = app.get(&format!("/tasks/{id}")).await;
    assert_eq!(view["data"]["status"], "failed");
    assert_eq!(view["data"]["retries"], 0);
    assert_eq!(events(&app, &id).await, timeline_before);

    // Filters that match nothing, and bad filters in the envelope.
    let (_, none) = app
        .post(
            "/admin/tasks/retry",
            &json!({"error_code": 1004, "dry_run": true}),
        )
        .await;
    assert_eq!(none["data"]["matched"], 0, "{none}");
    for bad in [
        json!({"since": "last tuesday"}),
        json!({"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}),
        json!({"error_kode": 1002}),
        json!({"user_id": ""}),
    ] {
        let (status, body) = app.post("/admin/tasks/retry", &bad).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(1001)),
            "{bad}: {body}"
        );
    }

    let mut real = filter.clone();
    real["dry_run"] = json!(false);
    let (status, body) = app.post("/admin/tasks/retry", &real).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["retried"], 1, "{body}");
    let (_, view) = app.get(&format!("/tasks/{id}")).await;
    assert_eq!(
        view["data"]["task_id"],
        id.as_str(),
        "the task keeps its id"
    );
    assert_eq!(view["data"]["retries"], 1);
    assert!(
        events(&app, &id)
            .await
            .iter()
            .any(|e| e["kind"] == "retried")
    );
    // The retried run fails again (the marker is still there): a callback
    // of its own, marked as a retry; the first run's record is kept.
    app.drive_until_terminal(&id).await;
    deliver_until(&app, async || {
        let rows = app.db.callbacks_for_task(&task_id).await.unwrap();
        rows.len() == 2 && rows.iter().all(|c| c.delivered_at.is_some())
    })
    .await;
    let rows = app.db.callbacks_for_task(&task_id).await.unwrap();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(types, ["task.failed", "task.retry_failed"]);
    let sent: Vec<String> = receiver
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|b| b["task_id"] == id.as_str())
        .map(|b| b["event_type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(sent, ["task.failed", "task.retry_failed"]);
}

#[tokio::test]
async fn the_docs_page_opens_without_the_token_and_offers_bearer_auth() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![("api_auth_token".into(), "\"s3cret-token\"".into())],
        },
    )
    .await;
    for path in ["/docs/", "/docs/index.html"] {
        let resp = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.text().await.unwrap().contains("swagger"), "{path}");
    }
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["paths"]["/tasks/{task_id}/events"]["get"]["security"].is_array());
    // The API itself still wants the token; with it, calls go through.
    let (status, _) = app
        .get("/tasks/task_01ARZ3NDEKTSV4RRFFQ69G5FAV/events")
        .await;
    assert_eq!(status, 401);
    let resp = app
        .client
        .get(format!("{}/usage", app.base))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
