//! Admission control over real HTTP (README, "Admission control"): at
//! `MAX_QUEUED_TASKS` queued tasks a create is refused with 429/1010 and a
//! `Retry-After`, stores nothing, and a replay of an existing idempotency key
//! is still answered; once the queue drains, creates are accepted again. The
//! engine is not running (the tests drive it), so tasks stay queued until a
//! test submits them.

use std::time::Duration;

use modelgen_e2e::Backend;
use serde_json::{Value, json};

use crate::helpers::{AppOptions, TestApp, body_profile, spawn_app, tiny_png};

fn create_body(user: &str, request_id: &str) -> Value {
    json!({"user_id": user, "request_id": request_id, "user_image": tiny_png(), "body_profile": body_profile()})
}

/// POST → (status, `Retry-After`, `Idempotency-Replayed`, body).
async fn post(app: &TestApp, body: &Value) -> (u16, Option<String>, Option<String>, Value) {
    let r = app
        .client
        .post(format!("{}/models/default", app.base))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST failed: {e}"));
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (retry_after, replayed) = (header("retry-after"), header("idempotency-replayed"));
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, retry_after, replayed, body)
}

#[tokio::test]
async fn a_full_queue_refuses_creates_with_429_until_it_drains() {
    for backend in Backend::all_under_test() {
        let app = spawn_app(
            backend,
            AppOptions {
                extra: vec![("max_queued_tasks".into(), "3".into())],
            },
        )
        .await;
        let mut ids = Vec::new();
        for n in 0..3 {
            let (status, _, _, body) = post(&app, &create_body("burst", &format!("r{n}"))).await;
            assert_eq!(status, 202, "{backend:?}: {body}");
            ids.push(
                body["data"]["task_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }

        // At the limit: refused, in the envelope, with Retry-After; nothing stored.
        let (status, retry_after, _, body) = post(&app, &create_body("burst", "r3")).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (429, Some(1010)),
            "{backend:?}: {body}"
        );
        let secs: u64 = retry_after
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{backend:?}: Retry-After missing: {body}"));
        assert!((1..=300).contains(&secs), "Retry-After {secs}");
        assert_eq!(body["data"]["retry_after"], secs, "{body}");
        assert_eq!(body["data"]["max_queued_tasks"], 3, "{body}");
        assert_eq!(
            app.count_tasks("burst").await,
            3,
            "{backend:?}: a refused create stored a task"
        );
        assert_eq!(
            app.stored_inputs(),
            3,
            "{backend:?}: a refused create stored its image"
        );
        // Without an idempotency key too.
        let (status, _, _, body) = post(
            &app,
            &json!({"user_id": "other", "user_image": tiny_png(), "body_profile": body_profile()}),
        )
        .await;
        assert_eq!((status, body["code"].as_i64()), (429, Some(1010)), "{body}");
        assert_eq!(app.count_tasks("other").await, 0);

        // A replay of an existing key is still answered; a reuse with
        // another payload is still a conflict.
        let (status, _, replayed, body) = post(&app, &create_body("burst", "r0")).await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        assert_eq!(replayed.as_deref(), Some("true"));
        assert_eq!(body["data"]["task_id"], ids[0].as_str());
        let mut other = create_body("burst", "r1");
        other["body_profile"]["age"] = json!(70);
        let (status, _, _, body) = post(&app, &other).await;
        assert_eq!((status, body["code"].as_i64()), (409, Some(1006)), "{body}");

        // The metrics recorder is shared by every app of this test process,
        // so only the names are checked here, not the values.
        let metrics = app
            .client
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
            .text()
            .await
            .unwrap_or_default();
        for name in [
            "queue_depth ",
            "queue_oldest_age_seconds ",
            "queue_drain_rate ",
            "tasks_refused_total{reason=\"queue_full\"} ",
        ] {
            assert!(metrics.contains(name), "{name} missing: {metrics}");
        }

        // Drained (submitted upstream, here run to completion): accepted again
        // once the replica reads the backlog anew.
        for id in &ids {
            assert_eq!(app.drive_until_terminal(id).await["status"], "completed");
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, _, _, body) = post(&app, &create_body("burst", "r3")).await;
        assert_eq!(status, 202, "{backend:?}: {body}");
        assert_eq!(app.count_tasks("burst").await, 4);
    }
}
