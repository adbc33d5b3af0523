//! The visible queue (README, "Admission control"): a queued task's view
//! carries its place in the submit order and an estimated start; the metrics
//! carry the queue's depth, oldest age and drain rate. The engine is not
//! running (the tests drive it), so tasks stay queued until a test submits
//! them.

use chrono::{DateTime, Utc};
use modelgen_e2e::Backend;
use serde_json::Value;

use crate::helpers::{AppOptions, TestApp, spawn_app};

async fn view(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get(&format!("/tasks/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

fn at(view: &Value, field: &str) -> DateTime<Utc> {
    view[field]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("{field} is not a timestamp: {view}"))
}

#[tokio::test]
async fn a_queued_task_shows_its_place_and_estimated_start_until_it_is_submitted() {
    for backend in Backend::all_under_test() {
        let app = spawn_app(backend, AppOptions::default()).await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(app.create_default("queue").await);
        }
        for (place, id) in ids.iter().enumerate() {
            let v = view(&app, id).await;
            assert_eq!(v["queue_position"], place, "{backend:?}: {v}");
            assert!(
                at(&v, "estimated_start_at") >= at(&v, "queued_at"),
                "{backend:?}: {v}"
            );
        }
        let first = at(&view(&app, &ids[0]).await, "estimated_start_at");
        let last = at(&view(&app, &ids[2]).await, "estimated_start_at");
        assert!(
            last >= first,
            "{backend:?}: later in the queue, later start"
        );

        // Submitted (here run to the end): out of the queue.
        let done = app.drive_until_terminal(&ids[0]).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["queue_position"], Value::Null, "{done}");
        assert_eq!(done["estimated_start_at"], Value::Null, "{done}");
        for id in &ids[1..] {
            let v = app.drive_until_terminal(id).await;
            assert_eq!(v["queue_position"], Value::Null, "{v}");
        }

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
        ] {
            assert!(metrics.contains(name), "{name} missing: {metrics}");
        }
    }
}
