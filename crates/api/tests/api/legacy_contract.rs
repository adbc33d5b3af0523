//! What the earlier Python service accepted is accepted (docs/legacy.md):
//! partial and empty body profiles, whole-number ages, numbers as strings,
//! `data:image/jpg`, `http://` image URLs of public hosts (never fetched by
//! modelgen: these tests only check the decision), `outfit_image_urls` with
//! `outfit_description`, and tasks whose ids are in the earlier service's
//! formats (GET, cancel, list cursors, and as base models of edits and outfits).

#![expect(
    clippy::unwrap_used,
    reason = "test helpers and per-backend bodies: a panic fails the calling test"
)]

use base64::Engine as _;
use chrono::Utc;
use modelgen_domain::{Progress, TaskEvent, TaskId, TaskType};
use modelgen_e2e::Backend;
use modelgen_persistence::{Fence, NewImage, NewTask, TaskChange, TaskRepository};
use serde_json::{Value, json};

use crate::helpers::{AppOptions, TestApp, body_profile, person_jpeg, spawn_app, tiny_png};

fn backends() -> Vec<Backend> {
    Backend::all_under_test()
}

/// The stored prompt of a task.
async fn prompt_of(app: &TestApp, id: &str) -> String {
    let id: TaskId = id.parse().unwrap();
    app.db.get_task(&id).await.unwrap().prompt
}

/// The stored input image references of a task.
async fn inputs_of(app: &TestApp, id: &str) -> Vec<String> {
    let id: TaskId = id.parse().unwrap();
    app.db.get_task(&id).await.unwrap().input_images
}

fn fields(body: &Value) -> Vec<String> {
    body["data"]["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn create(app: &TestApp, user: &str, profile: Value) -> (u16, Value) {
    app.post(
        "/models/default",
        &json!({"user_id": user, "user_image": tiny_png(), "body_profile": profile}),
    )
    .await
}

#[tokio::test]
async fn partial_and_empty_body_profiles_are_accepted_and_rendered_without_the_missing_fields() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;

    let (status, body) = create(&app, "partial", json!({"gender": "女", "height": 165})).await;
    assert_eq!(status, 202, "{body}");
    let prompt = prompt_of(&app, body["data"]["task_id"].as_str().unwrap()).await;
    assert!(
        prompt.contains("based on the person in image 1: a woman, 165 cm tall.\n"),
        "{prompt}"
    );
    for absent in ["year-old", " kg", "skin tone", "body shape"] {
        assert!(!prompt.contains(absent), "`{absent}` in {prompt}");
    }

    let (status, body) = create(&app, "empty", json!({})).await;
    assert_eq!(status, 202, "{body}");
    let prompt = prompt_of(&app, body["data"]["task_id"].as_str().unwrap()).await;
    assert!(
        prompt.contains("based on the person in image 1: a person.\n"),
        "{prompt}"
    );
    assert!(
        prompt.contains("Keep the body proportions of the person in image 1."),
        "{prompt}"
    );

    // Nulls and blank texts are "not given"; numbers may be strings.
    let (status, body) = create(
        &app,
        "strings",
        json!({"gender": "", "height_cm": null, "weight": "52.5", "age": "28", "skin_color": " ", "body_type": "标准"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let prompt = prompt_of(&app, body["data"]["task_id"].as_str().unwrap()).await;
    assert!(
        prompt.contains(": a 28-year-old person, 52.5 kg, body shape: 标准.\n"),
        "{prompt}"
    );

    // A present value is still checked.
    let (status, body) = create(&app, "bad", json!({"gender": "x", "weight_kg": 0})).await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    assert_eq!(
        fields(&body),
        ["body_profile.gender", "body_profile.weight_kg"]
    );
    // The object itself is still required, as it was.
    let (status, body) = app
        .post(
            "/models/default",
            &json!({"user_id": "none", "user_image": tiny_png()}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    assert_eq!(fields(&body), ["body_profile"]);
    assert_eq!(
        app.count_tasks("bad").await + app.count_tasks("none").await,
        0
    );
}

#[tokio::test]
async fn age_is_a_whole_number_and_each_field_has_one_name() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let mut profile = body_profile();

    profile["age"] = json!(28.5);
    let (status, body) = create(&app, "age", profile.clone()).await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    assert_eq!(fields(&body), ["body_profile.age"]);
    assert!(
        body["data"]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("whole number"),
        "{body}"
    );

    for (age, spelled) in [(json!(true), "boolean"), (json!("28.5"), "28.5")] {
        profile["age"] = age;
        let (status, body) = create(&app, "age", profile.clone()).await;
        assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
        assert_eq!(fields(&body), ["body_profile.age"], "{body}");
        assert!(body.to_string().contains(spelled), "{body}");
    }
    assert_eq!(app.count_tasks("age").await, 0, "nothing was created");

    // 28.0 is 28: accepted and said as a whole number.
    profile["age"] = json!(28.0);
    let (status, body) = create(&app, "age", profile.clone()).await;
    assert_eq!(status, 202, "{body}");
    let prompt = prompt_of(&app, body["data"]["task_id"].as_str().unwrap()).await;
    assert!(prompt.contains("a 28-year-old man"), "{prompt}");

    let (status, body) = create(
        &app,
        "twice",
        json!({"height": 170, "height_cm": 171, "skin_tone": "fair", "skin_color": "fair"}),
    )
    .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    assert_eq!(
        fields(&body),
        ["body_profile.height_cm", "body_profile.skin_tone"]
    );
}

#[tokio::test]
async fn data_uris_spelled_image_jpg_are_accepted_in_every_image_field() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let jpeg = person_jpeg();
    let b64 = jpeg.split_once(',').unwrap().1;
    for (field, value) in [
        ("user_image", format!("data:image/jpg;base64,{b64}")),
        ("picture_url", format!("DATA:IMAGE/JPG;BASE64,{b64}")),
        ("user_image_base64", format!("data:image/jpg;base64,{b64}")),
    ] {
        let (status, body) = app
            .post(
                "/models/default",
                &json!({"user_id": "jpg", field: value, "body_profile": {}}),
            )
            .await;
        assert_eq!(status, 202, "{field}: {body}");
        let inputs = inputs_of(&app, body["data"]["task_id"].as_str().unwrap()).await;
        assert!(inputs[0].ends_with(".jpg"), "stored as a JPEG: {inputs:?}");
    }
    // GIF and BMP, which the earlier service also let through, are refused
    // with a message that names the supported types (docs/legacy.md).
    let gif = "data:image/gif;base64,R0lGODlhAQABAAAAACw=";
    let (status, body) = app
        .post(
            "/models/default",
            &json!({"user_id": "jpg", "user_image": gif, "body_profile": {}}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    assert!(body.to_string().contains("image/gif"), "{body}");
}

#[tokio::test]
async fn http_image_urls_of_public_hosts_are_accepted_and_internal_ones_refused() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    // Only the decision is tested: no worker runs, and the request path never
    // fetches an input URL (Apimart does).
    let public = "http://suitme.oss-cn-shenzhen.aliyuncs.com/users/1/front.jpg";
    for field in ["user_image", "picture_url"] {
        let (status, body) = app
            .post(
                "/models/default",
                &json!({"user_id": "http", field: public, "body_profile": {"gender": "male"}}),
            )
            .await;
        assert_eq!(status, 202, "{field}: {body}");
        let id = body["data"]["task_id"].as_str().unwrap();
        let inputs = inputs_of(&app, id).await;
        assert_eq!(inputs, [public], "passed on as a URL");
        // No engine step may ever hand this URL to anything: end the task now.
        let (status, _) = app.post(&format!("/tasks/{id}/cancel"), &json!({})).await;
        assert_eq!(status, 200);
    }
    assert_eq!(app.stored_inputs(), 0, "nothing was downloaded or stored");

    for internal in [
        "http://127.0.0.1/a.png",
        "http://localhost:8080/a.png",
        "http://10.1.2.3/a.png",
        "http://192.168.0.10/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[::1]/a.png",
        "http://[::ffff:169.254.169.254]/a.png",
        "http://metadata.google.internal/computeMetadata/v1/",
    ] {
        let (status, body) = app
            .post(
                "/models/default",
                &json!({"user_id": "internal", "user_image": internal, "body_profile": {}}),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(1001)),
            "{internal}: {body}"
        );
        assert_eq!(fields(&body), ["user_image"], "{internal}");
        assert!(body.to_string().contains("public host"), "{body}");
    }
    assert_eq!(app.count_tasks("internal").await, 0);

    // The same rule for garments.
    let base = app.create_default("http").await;
    app.drive_until_terminal(&base).await;
    let (status, body) = app
        .post(
            "/models/outfit",
            &json!({"user_id": "http", "base_model_task_id": base, "angle": "front",
            "outfit_images": ["http://cdn.example.com/top.jpg", "http://10.0.0.1/pants.jpg"]}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    assert_eq!(fields(&body), ["outfit_images[1]"]);
}

#[tokio::test]
async fn outfit_image_urls_and_outfit_description_are_accepted_and_used_in_the_prompt() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let base = app.create_default("outfit").await;
    app.drive_until_terminal(&base).await;

    let (status, body) = app
        .post(
            "/models/outfit",
            &json!({
                "user_id": "outfit", "base_model_task_id": base, "angle": "side",
                "outfit_image_urls": [tiny_png(), "https://cdn.example.com/pants.jpg"],
                "outfit_description": " 白色T恤搭配牛仔裤和运动鞋 ",
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["angle"], "side");
    let id = body["data"]["task_id"].as_str().unwrap().to_string();
    let prompt = prompt_of(&app, &id).await;
    assert!(
        prompt.contains("\nThe outfit as the client describes it: 白色T恤搭配牛仔裤和运动鞋\n"),
        "{prompt}"
    );
    assert!(
        prompt.contains("2 garments shown in images 2 to 3"),
        "{prompt}"
    );
    let inputs = inputs_of(&app, &id).await;
    assert_eq!(inputs.len(), 3, "base model and two garments: {inputs:?}");
    assert_eq!(inputs[2], "https://cdn.example.com/pants.jpg");
    // The URL must never travel anywhere from a test: end the task unrun.
    let (status, _) = app.post(&format!("/tasks/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200);

    // With data URIs only, the same request runs to completion.
    let (status, body) = app
        .post(
            "/models/outfit",
            &json!({
                "user_id": "outfit", "base_model_task_id": base, "angle": "side",
                "outfit_image_urls": [tiny_png(), tiny_png()],
                "outfit_description": "白色T恤搭配牛仔裤和运动鞋",
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let done = app
        .drive_until_terminal(body["data"]["task_id"].as_str().unwrap())
        .await;
    assert_eq!(done["status"], "completed", "{done}");

    // A single string is a list of one; without a description the prompt has none.
    let (status, body) = app
        .post(
            "/models/outfit",
            &json!({"user_id": "outfit", "base_model_task_id": base, "angle": "back",
            "outfit_image_urls": tiny_png(), "outfit_description": ""}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let prompt = prompt_of(&app, body["data"]["task_id"].as_str().unwrap()).await;
    assert!(!prompt.contains("describes"), "{prompt}");

    // Two names for the garments, a too-long description: every problem at once.
    let (status, body) = app
        .post(
            "/models/outfit",
            &json!({"user_id": "outfit", "base_model_task_id": base, "angle": "front",
            "outfit_images": [tiny_png()], "outfit_image_urls": [tiny_png()],
            "outfit_description": "长".repeat(201)}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    assert_eq!(fields(&body), ["outfit_images", "outfit_description"]);
    let (status, body) = app
        .post(
            "/models/outfit",
            &json!({"user_id": "outfit", "base_model_task_id": base, "angle": "front",
            "outfit_image_urls": vec![tiny_png(); 6]}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
    assert_eq!(fields(&body), ["outfit_image_urls"]);
}

/// Ids as the earlier service stored them (Apimart's, and its own `task_<hex>`).
const LEGACY_IDS: [&str; 3] = [
    "task-unified-1757165031-uyujaw3d",
    "task_3f9a0c2e7b1d4a58",
    "task_01K4GQ3ZQ9X7H5W6V2M8N0P1RS",
];

/// Inserts a task with a foreign id, as an importer would, optionally
/// completed with a stored result image.
async fn seed(app: &TestApp, id: &str, user: &str, completed: bool) {
    let task_id: TaskId = id.parse().unwrap();
    let now = Utc::now();
    app.db
        .insert_task(NewTask {
            task_id,
            request_id: None,
            user_id: user.into(),
            task_type: TaskType::Default,
            base_model_task_id: None,
            angle: None,
            size: "4:3".into(),
            prompt: "imported".into(),
            model: "gemini-3-pro-image-preview".into(),
            input_images: vec![],
            request_fingerprint: None,
            created_at: now,
            callback_url: None,
        })
        .await
        .unwrap();
    if !completed {
        return;
    }
    let png = base64::engine::general_purpose::STANDARD
        .decode(tiny_png().split_once(',').unwrap().1)
        .unwrap();
    let key = format!("results/{id}/0.png");
    let path = app.images_dir().join(&key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();
    for event in [
        TaskEvent::Progressed(Progress::clamped(50)),
        TaskEvent::Completed,
    ] {
        let images = if event == TaskEvent::Completed {
            vec![NewImage {
                task_id,
                angle: None,
                location: modelgen_persistence::ImageLocation::Stored(key.clone()),
                image_base64: None,
                mime: Some("image/png".into()),
                width: Some(1),
                height: Some(1),
                bytes: Some(png.len() as i64),
                created_at: now,
            }]
        } else {
            vec![]
        };
        app.db
            .update_task(
                &task_id,
                &Fence::Unfenced,
                Utc::now(),
                TaskChange {
                    event: Some(event),
                    images,
                    ..TaskChange::default()
                },
            )
            .await
            .unwrap();
    }
}

#[test]
fn tasks_with_legacy_ids_answer_get_cancel_list_and_serve_as_base_models() {
    let rt = crate::helpers::runtime();
    for backend in backends() {
        rt.block_on(legacy_ids_on(backend));
    }
}

async fn legacy_ids_on(backend: Backend) {
    let app = spawn_app(backend, AppOptions::default()).await;
    for id in LEGACY_IDS {
        seed(&app, id, "old", true).await;
    }
    let longest = format!("task-{}", "x".repeat(TaskId::MAX_LEN - 5));
    seed(&app, &longest, "old", false).await;

    for id in LEGACY_IDS {
        let (status, body) = app.get(&format!("/tasks/{id}")).await;
        assert_eq!(status, 200, "{backend:?} {id}: {body}");
        assert_eq!(body["data"]["task_id"], id);
        assert_eq!(body["data"]["status"], "completed");
        let url = body["data"]["image"]["image_url"].as_str().unwrap();
        assert!(url.contains(&format!("results/{id}/0.png")), "{url}");
    }
    let (status, body) = app.get(&format!("/tasks/{longest}")).await;
    assert_eq!(
        status, 200,
        "{backend:?}: a 128-character id round-trips: {body}"
    );
    assert_eq!(body["data"]["task_id"], longest.as_str());

    // Cancel takes a legacy id (before any engine step could run the task).
    let (status, body) = app
        .post(&format!("/tasks/{longest}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "cancelled");

    // An id of the right shape that does not exist is 404, not 400.
    let (status, body) = app.get("/tasks/task-unified-1-nothere0").await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(1003)), "{body}");

    // Edit and outfit on imported models, end to end through the simulator.
    let (status, body) = app
        .post("/models/edit", &json!({"user_id": "old", "base_model_task_id": LEGACY_IDS[0], "edit_instructions": "short hair"}))
        .await;
    assert_eq!(status, 202, "{backend:?}: {body}");
    let edit = body["data"]["task_id"].as_str().unwrap().to_string();
    let done = app.drive_until_terminal(&edit).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["base_model_task_id"], LEGACY_IDS[0]);
    let (status, body) = app
        .post("/models/outfit", &json!({"user_id": "old", "base_model_task_id": LEGACY_IDS[1], "angle": "front", "outfit_images": [tiny_png()]}))
        .await;
    assert_eq!(status, 202, "{backend:?}: {body}");
    let outfit = body["data"]["task_id"].as_str().unwrap().to_string();
    let done = app.drive_until_terminal(&outfit).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["base_model_task_id"], LEGACY_IDS[1]);
    // Another user's imported model is not found, as for new ids.
    let (status, _) = app
        .post("/models/edit", &json!({"user_id": "other", "base_model_task_id": LEGACY_IDS[2], "edit_instructions": "x"}))
        .await;
    assert_eq!(status, 404);

    // Paging through a user's tasks with the cursor returns each exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/tasks?user_id=old&limit=2&cursor={c}"),
            None => "/tasks?user_id=old&limit=2".to_string(),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        for item in page["data"]["items"].as_array().unwrap() {
            seen.push(item["task_id"].as_str().unwrap().to_string());
        }
        match page["data"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(seen.len() < 20, "paging does not end: {seen:?}");
    }
    let mut expected: Vec<String> = LEGACY_IDS.iter().map(|s| s.to_string()).collect();
    expected.extend([longest.clone(), edit, outfit]);
    expected.sort();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "{backend:?}: each task once: {seen:?}");

    // Ids outside the rule are refused as unknown, never a 500.
    for bad in ["a%20b", "a'%22b", &"x".repeat(129)] {
        let (status, body) = app.get(&format!("/tasks/{bad}")).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (404, Some(1003)),
            "{bad}: {body}"
        );
    }
}
