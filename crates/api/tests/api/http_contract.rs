//! The wire contract: envelope on every error, codes, aliases, idempotency,
//! cancel, listing, limits and auth.

use modelgen_e2e::Backend;
use serde_json::json;

use crate::helpers::{AppOptions, body_profile, spawn_app, tiny_png};

#[tokio::test]
async fn malformed_json_wrong_types_and_unknown_enums_get_the_envelope() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    for raw in [&b"{"[..], b"not json", b"", b"[1,2]", b"{\"user_id\": }"] {
        let (status, body) = app.post_raw("/models/default", raw.to_vec()).await;
        assert_eq!(status, 400, "{raw:?} -> {body}");
        assert_eq!(body["code"], 1001);
        assert!(body["msg"].is_string());
    }
    let (status, body) = app
        .post(
            "/models/default",
            &json!({"user_id": 42, "user_image": tiny_png(), "body_profile": body_profile()}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    assert_eq!(body["data"]["errors"][0]["field"], "user_id");
    let mut profile = body_profile();
    profile["height_cm"] = json!("tall");
    let (status, body) = app
        .post(
            "/models/default",
            &json!({"user_id": "u", "user_image": tiny_png(), "body_profile": profile}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["data"]["errors"][0]["field"], "body_profile.height_cm",
        "{body}"
    );
    let (status, body) = app
        .post("/models/default", &json!({"user_id": "u", "user_image": tiny_png(), "body_profile": body_profile(), "size": "7:3"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["data"]["errors"][0]["field"], "size", "{body}");
}

#[tokio::test]
async fn every_bad_field_is_listed_at_once() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let (status, body) = app
        .post("/models/default", &json!({"user_image": "data:image/png;base64,xx", "body_profile": {"gender": "x", "height_cm": 0}}))
        .await;
    assert_eq!(status, 400);
    let fields: Vec<&str> = body["data"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    for expected in [
        "user_id",
        "user_image",
        "body_profile.gender",
        "body_profile.height_cm",
    ] {
        assert!(
            fields.contains(&expected),
            "{expected} missing from {fields:?}"
        );
    }
    // Missing body-profile fields are not errors: all of them are optional.
    assert_eq!(fields.len(), 4, "{fields:?}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_the_envelope() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let (status, body) = app.get("/nope").await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(1003)));
    // A path that exists, with another method: 405 (hostile_input.rs covers every route).
    let (status, body) = app.get("/models/default").await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["code"], 1009);
}

#[tokio::test]
async fn oversized_body_is_413_1007_and_oversized_image_is_rejected() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![
                ("max_body_bytes".into(), "2000".into()),
                ("max_image_bytes".into(), "100".into()),
            ],
        },
    )
    .await;
    let big = "a".repeat(5000);
    let (status, body) = app.post("/models/default", &json!({"user_id": big})).await;
    assert_eq!((status, body["code"].as_i64()), (413, Some(1007)), "{body}");
    let image = crate::helpers::person_jpeg();
    let (status, _) = app
        .post(
            "/models/default",
            &json!({"user_id": "u", "user_image": &image[..1500], "body_profile": body_profile()}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn earlier_service_aliases_are_accepted() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let bare = tiny_png().split_once(',').unwrap().1.to_string();
    let (status, body) = app
        .post("/models/default", &json!({
            "user_id": "alias", "user_image_base64": bare,
            "body_profile": {"gender": "女", "height": 165, "weight": 50, "age": 28, "skin_color": "fair", "body_type": "pear"}
        }))
        .await;
    assert_eq!(status, 202, "{body}");
    let base = body["data"]["task_id"].as_str().unwrap().to_string();
    app.drive_until_terminal(&base).await;
    let (status, body) = app
        .post("/models/outfit", &json!({"user_id": "alias", "base_model_task_id": base, "angle": "back", "outfit_image_base64": bare}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["angle"], "back");
}

#[tokio::test]
async fn idempotency_key_replays_or_conflicts() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let req = json!({"user_id": "idem", "request_id": "k-1", "user_image": tiny_png(), "body_profile": body_profile()});
    let (s1, b1) = app.post("/models/default", &req).await;
    assert_eq!(s1, 202);
    let r = app
        .client
        .post(format!("{}/models/default", app.base))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("idempotency-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let b2: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b1["data"]["task_id"], b2["data"]["task_id"]);
    let mut other = req.clone();
    other["body_profile"]["age"] = json!(31);
    let (s3, b3) = app.post("/models/default", &other).await;
    assert_eq!((s3, b3["code"].as_i64()), (409, Some(1006)), "{b3}");
    assert_eq!(app.count_tasks("idem").await, 1);
    // Replays and conflicts leave no orphan input images behind.
    assert_eq!(app.stored_inputs(), 1);
    // The same key for another user is a different task.
    let mut second_user = req.clone();
    second_user["user_id"] = json!("idem-2");
    assert_eq!(app.post("/models/default", &second_user).await.0, 202);
}

#[tokio::test]
async fn concurrent_creates_with_one_key_make_one_task() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let req = json!({"user_id": "race", "request_id": "same", "user_image": tiny_png(), "body_profile": body_profile()});
    let mut handles = Vec::new();
    for _ in 0..8 {
        let client = app.client.clone();
        let url = format!("{}/models/default", app.base);
        let req = req.clone();
        handles.push(tokio::spawn(async move {
            let r = client.post(url).json(&req).send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (
                status,
                body["data"]["task_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        let (status, id) = h.await.unwrap();
        assert!(status == 202 || status == 200);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(app.count_tasks("race").await, 1);
}

#[tokio::test]
async fn base_model_must_be_completed_and_of_a_model_type() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let pending = app.create_default("bm").await;
    let (status, body) = app
        .post(
            "/models/edit",
            &json!({"user_id": "bm", "base_model_task_id": pending, "edit_instructions": "x"}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)));
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .contains("wait until it completes"),
        "{body}"
    );
    // A cancelled base will never complete: the hint says so.
    let cancelled = app.create_default("bm").await;
    let (status, body) = app
        .post(&format!("/tasks/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .post(
            "/models/edit",
            &json!({"user_id": "bm", "base_model_task_id": cancelled, "edit_instructions": "x"}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)));
    let msg = body["msg"].as_str().unwrap();
    assert!(
        msg.contains("will never complete") && !msg.contains("wait"),
        "{body}"
    );
    app.drive_until_terminal(&pending).await;
    let (status, body) = app
        .post("/models/outfit", &json!({"user_id": "bm", "base_model_task_id": pending, "angle": "front", "outfit_images": [tiny_png()]}))
        .await;
    assert_eq!(status, 202, "{body}");
    let outfit = body["data"]["task_id"].as_str().unwrap().to_string();
    app.drive_until_terminal(&outfit).await;
    let (status, body) = app
        .post(
            "/models/edit",
            &json!({"user_id": "bm", "base_model_task_id": outfit, "edit_instructions": "x"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (400, Some(1001)),
        "an outfit is not a base model: {body}"
    );
    let (status, body) = app
        .post("/models/outfit", &json!({"user_id": "bm", "base_model_task_id": pending, "angle": "front", "outfit_images": vec![tiny_png(); 6]}))
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
}

#[tokio::test]
async fn cancel_moves_a_running_task_and_refuses_a_terminal_one() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let id = app.create_default("c").await;
    let (status, body) = app.post(&format!("/tasks/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "cancelled");
    assert!(body["data"]["completed_at"].is_string());
    let (status, body) = app.post(&format!("/tasks/{id}/cancel"), &json!({})).await;
    assert_eq!((status, body["code"].as_i64()), (409, Some(1006)));
    assert_eq!(body["data"]["status"], "cancelled");
    // The engine leaves a cancelled task alone.
    app.engine.run_once().await.unwrap();
    let (_, body) = app.get(&format!("/tasks/{id}")).await;
    assert_eq!(body["data"]["status"], "cancelled");
    let (status, _) = app
        .post("/tasks/task_01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel", &json!({}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn list_is_newest_first_with_an_opaque_cursor_and_filters() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.create_default("lister").await);
    }
    app.create_default("someone-else").await;
    let (status, page1) = app.get("/tasks?user_id=lister&limit=2").await;
    assert_eq!(status, 200);
    let items: Vec<&str> = page1["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(items, vec![ids[4].as_str(), ids[3].as_str()]);
    let cursor = page1["data"]["next_cursor"].as_str().unwrap().to_string();
    let (_, page2) = app
        .get(&format!("/tasks?user_id=lister&limit=2&cursor={cursor}"))
        .await;
    let items2: Vec<&str> = page2["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(items2, vec![ids[2].as_str(), ids[1].as_str()]);
    let (_, filtered) = app.get("/tasks?user_id=lister&status=completed").await;
    assert_eq!(filtered["data"]["items"].as_array().unwrap().len(), 0);
    // A page shows each task with its own images.
    let done = app.drive_until_terminal(&ids[0]).await;
    let (_, page) = app.get("/tasks?user_id=lister&limit=100").await;
    let items = page["data"]["items"].as_array().unwrap();
    for item in items {
        // drive_until_terminal may finish other due tasks too: each completed
        // task shows exactly its own image, the others none.
        let images = item["images"].as_array().unwrap();
        let expected = usize::from(item["status"] == "completed");
        assert_eq!(images.len(), expected, "{item}");
        let id = item["task_id"].as_str().unwrap();
        assert!(
            images
                .iter()
                .all(|i| i["image_url"].as_str().unwrap().contains(id)),
            "{item}"
        );
    }
    let listed = items
        .iter()
        .find(|t| t["task_id"] == ids[0].as_str())
        .unwrap();
    assert_eq!(listed["image"], done["image"]);
    for bad in [
        "limit=0",
        "limit=",
        "limit=101",
        "limit=x",
        "status=nope",
        "type=nope",
        "cursor=!!",
    ] {
        let (status, body) = app.get(&format!("/tasks?{bad}")).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(1001)),
            "{bad}: {body}"
        );
    }
}

#[tokio::test]
async fn bearer_token_is_required_when_configured() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![("api_auth_token".into(), "\"s3cret\"".into())],
        },
    )
    .await;
    let (status, body) = app.get("/tasks/task_01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1005)));
    let r = app
        .client
        .get(format!(
            "{}/tasks/task_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            app.base
        ))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .get(format!(
            "{}/tasks/task_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            app.base
        ))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn upstream_errors_follow_the_policy() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let base = app.create_default("up").await;
    app.drive_until_terminal(&base).await;
    for (marker, expect_in_message) in [
        ("[[sim:submit=400]]", "apimart"),
        ("[[sim:submit=402]]", "insufficient_balance"),
        ("[[sim:submit=401]]", "unauthorized"),
    ] {
        let (status, body) = app
            .post("/models/edit", &json!({"user_id": "up", "base_model_task_id": base, "edit_instructions": format!("x {marker}")}))
            .await;
        assert_eq!(status, 202, "{body}");
        let id = body["data"]["task_id"].as_str().unwrap().to_string();
        let task = app.drive_until_terminal(&id).await;
        assert_eq!(task["status"], "failed", "{marker}: {task}");
        assert_eq!(task["error_code"], 1002);
        assert!(
            task["error_message"]
                .as_str()
                .unwrap()
                .contains(expect_in_message),
            "{marker}: {task}"
        );
    }
    // A 503 once on submit is retried (same idempotency key) and succeeds.
    let (_, body) = app
        .post("/models/edit", &json!({"user_id": "up", "base_model_task_id": base, "edit_instructions": "x [[sim:submit-once=503]]"}))
        .await;
    let id = body["data"]["task_id"].as_str().unwrap().to_string();
    assert_eq!(app.drive_until_terminal(&id).await["status"], "completed");
    assert_eq!(app.sim.stats().max_tasks_per_key, 1);
    // Status polls that fail for a while are retried, not fatal.
    let (_, body) = app
        .post("/models/edit", &json!({"user_id": "up", "base_model_task_id": base, "edit_instructions": "x [[sim:status-once=500]]"}))
        .await;
    let id = body["data"]["task_id"].as_str().unwrap().to_string();
    assert_eq!(app.drive_until_terminal(&id).await["status"], "completed");
}

#[tokio::test]
async fn task_timeout_fails_with_timeout_message() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![("task_timeout".into(), "0.5".into())],
        },
    )
    .await;
    let base = app.create_default("to").await;
    let task = app.drive_until_terminal(&base).await;
    // The simulator takes 300 ms, so it may complete; a never-ending task must time out.
    assert!(matches!(
        task["status"].as_str(),
        Some("completed" | "failed")
    ));
    if task["status"] == "completed" {
        let (_, body) = app
            .post("/models/edit", &json!({"user_id": "to", "base_model_task_id": base, "edit_instructions": "x [[sim:never]]"}))
            .await;
        let id = body["data"]["task_id"].as_str().unwrap().to_string();
        let task = app.drive_until_terminal(&id).await;
        assert_eq!(task["status"], "failed");
        assert_eq!(task["error_message"], "timeout");
    }
}

#[tokio::test]
async fn images_route_serves_stored_images_and_404s_others() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let id = app.create_default("img").await;
    let task = app.drive_until_terminal(&id).await;
    let url = task["image"]["image_url"].as_str().unwrap();
    let r = app.client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-type").unwrap(), "image/png");
    for bad in [
        "/images/nope.png",
        "/images/../../etc/passwd",
        "/images/%2e%2e/x",
    ] {
        let (status, body) = app.get(bad).await;
        assert_eq!(status, 404, "{bad}: {body}");
        assert_eq!(body["code"], 1003);
    }
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "req-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("x-request-id").unwrap(), "req-abc-123");
    let r = app
        .client
        .get(format!("{}/tasks/nope", app.base))
        .send()
        .await
        .unwrap();
    let generated = r
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(generated.len(), 26, "a ULID: {generated}");
    // A header that is not a safe token is replaced, not echoed.
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "a b")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers().get("x-request-id").unwrap(), "a b");
}

#[tokio::test]
async fn hostile_bodies_are_refused_and_create_nothing() {
    for backend in Backend::all_under_test() {
        let app = spawn_app(backend, AppOptions::default()).await;
        let good =
            json!({"user_id": "hostile", "user_image": tiny_png(), "body_profile": body_profile()});
        let mut trailing = serde_json::to_vec(&good).unwrap();
        trailing.extend_from_slice(b"garbage");
        let array = serde_json::to_vec(&json!([
            "hostile",
            null,
            tiny_png(),
            null,
            null,
            body_profile(),
            null
        ]))
        .unwrap();
        for (what, raw) in [("trailing data", trailing), ("array body", array)] {
            let (status, body) = app.post_raw("/models/default", raw).await;
            assert_eq!(
                (status, body["code"].as_i64()),
                (400, Some(1001)),
                "{what}: {body}"
            );
        }
        // NUL and invisible characters in ids (PostgreSQL rejects NUL outright).
        for (field, value) in [
            ("user_id", "a\u{0}b"),
            ("user_id", "a\u{200B}b"),
            ("request_id", "r\u{0}"),
            ("request_id", " "),
        ] {
            let mut req = good.clone();
            req[field] = json!(value);
            let (status, body) = app.post("/models/default", &req).await;
            assert_eq!(
                (status, body["code"].as_i64()),
                (400, Some(1001)),
                "{field}={value:?}: {body}"
            );
            assert_eq!(body["data"]["errors"][0]["field"], field, "{body}");
        }
        let (status, body) = app.get("/tasks?user_id=a%00b").await;
        assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
        assert_eq!(app.count_tasks("hostile").await, 0);
    }
}

#[tokio::test]
async fn content_type_echoes_aliases_and_auth_schemes() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![("api_auth_token".into(), "\"tok\"".into())],
        },
    )
    .await;
    let url = format!("{}/models/default", app.base);
    let good = json!({"user_id": "ct", "user_image": tiny_png(), "body_profile": body_profile()});
    // A browser form cannot create tasks: JSON must be declared.
    let r = app
        .client
        .post(&url)
        .bearer_auth("tok")
        .header("content-type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // The bearer scheme is case-insensitive; two Authorization headers are refused.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = app
            .client
            .post(&url)
            .header("authorization", format!("{scheme} tok"))
            .json(&good)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{scheme}");
    }
    let r = app
        .client
        .post(&url)
        .header("authorization", "Bearer tok")
        .header("authorization", "Bearer other")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A wrongly typed value is not echoed back whole (it may be an image).
    let mut profile = body_profile();
    profile["height_cm"] = json!(crate::helpers::person_jpeg());
    let r = app
        .client
        .post(&url)
        .bearer_auth("tok")
        .json(&json!({"user_id": "ct", "user_image": tiny_png(), "body_profile": profile}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    let text = body.to_string();
    assert!(text.len() < 600, "{} bytes: {text:.300}", text.len());
    assert!(
        !text.contains("BodyProfileDto") && !text.contains("f64"),
        "{text}"
    );
    // Two spellings of the same image are ambiguous.
    let r = app
        .client
        .post(&url)
        .bearer_auth("tok")
        .json(&json!({"user_id": "ct", "user_image": tiny_png(), "picture_url": tiny_png(), "body_profile": body_profile()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Long ids are not echoed whole.
    let long = "x".repeat(5000);
    let r = app
        .client
        .get(format!("{}/tasks/{long}", app.base))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().len() < 400);
}

#[tokio::test]
async fn bad_idempotency_headers_unknown_long_routes_and_odd_event_ids() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let url = format!("{}/models/default", app.base);
    let good = json!({"user_id": "idh", "user_image": tiny_png(), "body_profile": body_profile()});
    // A key that cannot be read is an error, not silently ignored.
    for key in [&b"cl\xc3\xa9-1"[..], b"   "] {
        let r = app
            .client
            .post(&url)
            .header(
                "idempotency-key",
                reqwest::header::HeaderValue::from_bytes(key).unwrap(),
            )
            .json(&good)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{key:?}");
    }
    assert_eq!(app.count_tasks("idh").await, 0);
    // An empty request_id is one error, not two.
    let mut empty = good.clone();
    empty["request_id"] = json!("");
    let (status, body) = app.post("/models/default", &empty).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["data"]["errors"].as_array().unwrap().len(),
        1,
        "{body}"
    );
    // Unknown routes do not echo a long path whole.
    let (status, body) = app.get(&format!("/nope/{}", "x".repeat(20_000))).await;
    assert_eq!(status, 404);
    assert!(body.to_string().len() < 400);
    // Event ids that cannot exist are 404 before touching the database.
    for bad in ["evt_%00", "x", "evt_..%2F"] {
        let (status, body) = app
            .post(&format!("/admin/callbacks/{bad}/redeliver"), &json!({}))
            .await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (404, Some(1003)),
            "{bad}: {body}"
        );
    }
}

#[tokio::test]
async fn metrics_auth_token_protects_metrics_only() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![("metrics_auth_token".into(), "\"scrape-secret\"".into())],
        },
    )
    .await;
    let url = format!("{}/metrics", app.base);
    let resp = app.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 1005);
    for wrong in ["Bearer nope", "Basic scrape-secret", "scrape-secret"] {
        let resp = app
            .client
            .get(&url)
            .header("authorization", wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{wrong}");
    }
    let resp = app
        .client
        .get(&url)
        .header("authorization", "Bearer scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().contains("tasks_created_total"));
    // Everything else is unaffected (no API_AUTH_TOKEN here).
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, _) = app.get("/tasks").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn include_names_only_image_base64() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let id = app.create_default("u-include").await;
    let (status, body) = app.get(&format!("/tasks/{id}?include=image_base64")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get(&format!("/tasks/{id}?include=prompt")).await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    assert_eq!(body["data"]["errors"][0]["field"], "include");
}

#[tokio::test]
async fn a_result_over_max_result_image_bytes_fails_the_task_and_stores_nothing() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![("max_result_image_bytes".into(), "1000".into())],
        },
    )
    .await;
    let id = app.create_default("u-cap").await;
    let done = app.drive_until_terminal(&id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error_message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeds 1000 bytes")),
        "{done}"
    );
    assert!(done["images"].as_array().unwrap().is_empty());
    let results = app.storage_dir().join("results").join(&id);
    assert!(
        !results.exists() || std::fs::read_dir(&results).unwrap().next().is_none(),
        "nothing of the oversized result was kept"
    );
}
