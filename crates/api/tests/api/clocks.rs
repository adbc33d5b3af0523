//! A task's two clocks (README, "How a task moves"): `QUEUE_TIMEOUT` bounds
//! the wait before the upstream accepts a task, `TASK_TIMEOUT` the upstream run
//! from its submission on. The engine is not running in these apps (the tests
//! drive it), so a task waits in the queue for exactly as long as a test
//! leaves it there.

use std::time::Duration;

use chrono::{DateTime, Utc};
use modelgen_e2e::Backend;
use serde_json::{Value, json};

use crate::helpers::{AppOptions, TestApp, spawn_app};

fn at(view: &Value, field: &str) -> DateTime<Utc> {
    view[field]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("{field} is not a timestamp: {view}"))
}

async fn view(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get(&format!("/tasks/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

async fn create_edit(app: &TestApp, user: &str, base: &str, instructions: &str) -> String {
    let (status, body) = app
        .post(
            "/models/edit",
            &json!({"user_id": user, "base_model_task_id": base, "edit_instructions": instructions}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body["data"]["task_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_task_queued_longer_than_task_timeout_is_still_submitted_and_completes() {
    for backend in Backend::all_under_test() {
        let app = spawn_app(
            backend,
            AppOptions {
                extra: vec![
                    ("task_timeout".into(), "3".into()),
                    ("queue_timeout".into(), "600".into()),
                ],
            },
        )
        .await;
        let id = app.create_default("waits").await;
        let queued = view(&app, &id).await;
        assert_eq!(queued["status"], "submitted", "{queued}");
        assert_eq!(queued["submitted_at"], Value::Null, "{queued}");
        assert_eq!(
            at(&queued, "queued_at"),
            at(&queued, "created_at"),
            "{queued}"
        );
        // Longer than TASK_TIMEOUT in the queue (no worker runs).
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let done = app.drive_until_terminal(&id).await;
        assert_eq!(done["status"], "completed", "{backend:?}: {done}");
        let waited = at(&done, "submitted_at") - at(&done, "queued_at");
        assert!(
            waited >= chrono::TimeDelta::milliseconds(3500),
            "{backend:?}: submitted after {waited}: {done}"
        );
        assert!(at(&done, "completed_at") >= at(&done, "submitted_at"));
    }
}

#[tokio::test]
async fn each_clock_fails_a_task_with_its_own_kind_and_says_so_in_the_callback() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    for backend in Backend::all_under_test() {
        let receiver = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&receiver)
            .await;
        let app = spawn_app(
            backend,
            AppOptions {
                extra: vec![
                    ("task_timeout".into(), "1.5".into()),
                    ("queue_timeout".into(), "1".into()),
                    (
                        "callback_url".into(),
                        format!("{:?}", format!("{}/hook", receiver.uri())),
                    ),
                ],
            },
        )
        .await;
        let base = app.create_default("clocks").await;
        assert_eq!(app.drive_until_terminal(&base).await["status"], "completed");

        // Submitted at once, then never finishes upstream: TASK_TIMEOUT.
        let running = create_edit(&app, "clocks", &base, "x [[sim:never]]").await;
        let failed = app.drive_until_terminal(&running).await;
        assert_eq!(failed["status"], "failed", "{backend:?}: {failed}");
        assert_eq!(failed["error_message"], "timeout", "{failed}");
        assert_eq!(failed["error_code"], 1002, "{failed}");
        let ran = at(&failed, "completed_at") - at(&failed, "submitted_at");
        assert!(ran >= chrono::TimeDelta::milliseconds(1500), "{failed}");

        // Left in the queue past QUEUE_TIMEOUT: never sent upstream.
        let submits_before = app.sim.stats().submit_requests;
        let waiting = create_edit(&app, "clocks", &base, "y").await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let expired = app.drive_until_terminal(&waiting).await;
        assert_eq!(expired["status"], "failed", "{backend:?}: {expired}");
        assert_eq!(expired["error_message"], "queue_timeout", "{expired}");
        assert_eq!(expired["error_code"], 1002, "{expired}");
        assert_eq!(expired["submitted_at"], Value::Null, "{expired}");
        assert_eq!(app.sim.stats().submit_requests, submits_before);

        while app.engine.deliver_due_callbacks().await.unwrap_or(0) > 0 {}
        let requests = receiver.received_requests().await.unwrap_or_default();
        let body_for = |id: &str| -> Value {
            requests
                .iter()
                .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
                .find(|b| b["task_id"] == id)
                .unwrap_or_else(|| panic!("{backend:?}: no callback for {id}"))
        };
        let cb = body_for(&running);
        assert_eq!(
            (&cb["status"], &cb["error_message"], &cb["error_code"]),
            (&json!("failed"), &json!("timeout"), &json!(1002)),
            "{cb}"
        );
        let cb = body_for(&waiting);
        assert_eq!(
            (&cb["status"], &cb["error_message"], &cb["error_code"]),
            (&json!("failed"), &json!("queue_timeout"), &json!(1002)),
            "{cb}"
        );
    }
}
