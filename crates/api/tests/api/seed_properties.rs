//! The seed's twelve properties, each a proptest property named after it.
//! They run through real HTTP on loopback against the real application; the
//! ones about stored data (6, 8–12) run against a real database — SQLite,
//! PostgreSQL and MariaDB. Property 7 lives with the pure state machine
//! (`modelgen-domain`, `status_transitions_only_along_the_machine`) and is
//! checked here again through the database.

use modelgen_e2e::Backend;
use proptest::prelude::*;
use serde_json::json;

use crate::helpers::{
    AppOptions, TestApp, body_profile, person_jpeg, runtime, spawn_app, tiny_png,
};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn backends() -> Vec<Backend> {
    Backend::all_under_test()
}

const SIZES: &[&str] = &[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
];

/// A completed default task of `user`.
async fn completed_base(app: &TestApp, user: &str) -> String {
    let id = app.create_default(user).await;
    let task = app.drive_until_terminal(&id).await;
    assert_eq!(task["status"], "completed", "{task}");
    id
}

#[test]
fn property_01_valid_create_returns_202_with_task_id_and_submitted() {
    let rt = runtime();
    let app = rt.block_on(spawn_app(Backend::Sqlite, AppOptions::default()));
    proptest!(cases(24), |(
        gender in proptest::option::of(prop_oneof![Just("male"), Just("female"), Just("男"), Just("女"), Just("Female"), Just("女性")]),
        height in proptest::option::of(0.5f64..=300.0),
        weight in proptest::option::of(0.5f64..=500.0),
        age in proptest::option::of(1u8..=150),
        tone in proptest::option::of("[a-z]{1,20}"),
        size in proptest::option::of(proptest::sample::select(SIZES)),
        use_alias in any::<bool>(),
        as_strings in any::<bool>(),
        jpeg in any::<bool>(),
    )| {
        // Every body-profile field is optional, and numbers may be strings
        // (docs/legacy.md); a whole age may also be written `28.0`.
        let image = if jpeg { person_jpeg() } else { tiny_png() };
        let number = |v: f64| if as_strings { json!(v.to_string()) } else { json!(v) };
        let mut profile = json!({});
        if let Some(g) = gender { profile["gender"] = json!(g); }
        if let Some(a) = age {
            profile["age"] = if as_strings { json!(format!("{a}")) } else { json!(f64::from(a)) };
        }
        let (h, w, t) = if use_alias { ("height", "weight", "skin_color") } else { ("height_cm", "weight_kg", "skin_tone") };
        if let Some(v) = height { profile[h] = number(v); }
        if let Some(v) = weight { profile[w] = number(v); }
        if let Some(v) = &tone { profile[t] = json!(v); }
        let mut body = json!({"user_id": "p1-user", "body_profile": profile});
        body[if use_alias { "picture_url" } else { "user_image" }] = json!(image);
        if let Some(s) = size { body["size"] = json!(s); }
        let (status, resp) = rt.block_on(app.post("/models/default", &body));
        prop_assert_eq!(status, 202, "{}", resp);
        prop_assert_eq!(&resp["code"], 0);
        prop_assert_eq!(&resp["msg"], "accepted");
        prop_assert_eq!(&resp["data"]["status"], "submitted");
        prop_assert!(resp["data"]["angle"].is_null());
        let id = resp["data"]["task_id"].as_str().unwrap_or_default();
        prop_assert!(id.starts_with("task_") && id.len() == 31, "{}", id);
    });
}

fn bad_data_uri() -> impl Strategy<Value = String> {
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
    prop_oneof![
        Just(format!("data:image/gif;base64,{png}")),
        Just(format!("data:image/jpeg;base64,{png}")),
        Just(format!("data:image/png,{png}")),
        Just(format!("data:image/png;base64,{}", png.replace('+', "-"))),
        Just(format!(
            "data:image/png;base64,{}",
            png.trim_end_matches('=')
        )),
        Just("data:image/png;base64,".to_string()),
        Just("http://127.0.0.1/a.png".to_string()),
        Just(String::new()),
        "[a-zA-Z0-9 ]{1,40}".prop_map(|s| format!("data:image/png;base64,{s}!")),
        "[^d][ -~]{0,40}",
        (0usize..60).prop_map(move |cut| format!(
            "data:image/png;base64,{}",
            &png[..cut.min(png.len())]
        )
        .replace("==", "=")),
    ]
    .prop_filter("must differ from the valid URI", move |s| {
        s != &format!("data:image/png;base64,{png}")
    })
}

#[test]
fn property_02_invalid_data_uri_rejected_with_400_1001() {
    let rt = runtime();
    let app = rt.block_on(spawn_app(Backend::Sqlite, AppOptions::default()));
    proptest!(cases(48), |(uri in bad_data_uri())| {
        let (status, resp) = rt.block_on(app.post("/models/default", &json!({
            "user_id": "p2-user", "user_image": uri, "body_profile": body_profile()
        })));
        prop_assert_eq!(status, 400, "{}", resp);
        prop_assert_eq!(&resp["code"], 1001);
        let errors = resp["data"]["errors"].as_array().cloned().unwrap_or_default();
        prop_assert!(errors.iter().any(|e| e["field"] == "user_image"), "{}", resp);
        prop_assert_eq!(rt.block_on(app.count_tasks("p2-user")), 0, "a rejected request created a task");
    });
}

#[test]
fn property_03_out_of_range_body_profile_rejected() {
    let rt = runtime();
    let app = rt.block_on(spawn_app(Backend::Sqlite, AppOptions::default()));
    let bad_number = prop_oneof![(-1e6f64..=0.0), (500.0001f64..1e9)];
    proptest!(cases(32), |(
        field in proptest::sample::select(&["height_cm", "weight_kg", "age"][..]),
        value in bad_number,
        gender_bad in any::<bool>(),
    )| {
        // Values above the field's own cap: height > 300, weight > 500, age > 150.
        let value = if value > 0.0 { value.max(match field { "height_cm" => 300.5, "age" => 150.5, _ => 500.5 }) } else { value };
        let mut profile = body_profile();
        profile[field] = json!(value);
        if gender_bad { profile["gender"] = json!("robot"); }
        let (status, resp) = rt.block_on(app.post("/models/default", &json!({
            "user_id": "p3-user", "user_image": tiny_png(), "body_profile": profile
        })));
        prop_assert_eq!(status, 400, "{}", resp);
        prop_assert_eq!(&resp["code"], 1001);
        let fields: Vec<String> = resp["data"]["errors"].as_array().cloned().unwrap_or_default()
            .iter().filter_map(|e| e["field"].as_str().map(str::to_string)).collect();
        prop_assert!(fields.iter().any(|f| f.ends_with(field)), "{:?}", fields);
        if gender_bad {
            prop_assert!(fields.iter().any(|f| f.ends_with("gender")), "all errors listed: {:?}", fields);
        }
        prop_assert_eq!(rt.block_on(app.count_tasks("p3-user")), 0);
    });
}

#[test]
fn property_04_unknown_base_model_task_id_rejected_with_404_1003() {
    let rt = runtime();
    let app = rt.block_on(spawn_app(Backend::Sqlite, AppOptions::default()));
    proptest!(cases(32), |(
        raw in prop_oneof![
            any::<u128>().prop_map(|n| format!("task_{}", ulid::Ulid::from(n))),
            "[a-zA-Z0-9_]{1,40}",
        ],
        outfit in any::<bool>(),
    )| {
        let (path, body) = if outfit {
            ("/models/outfit", json!({"user_id": "p4", "base_model_task_id": raw, "angle": "front", "outfit_images": [tiny_png()]}))
        } else {
            ("/models/edit", json!({"user_id": "p4", "base_model_task_id": raw, "edit_instructions": "shorter hair"}))
        };
        let (status, resp) = rt.block_on(app.post(path, &body));
        prop_assert_eq!(status, 404, "{}", resp);
        prop_assert_eq!(&resp["code"], 1003);
    });
}

#[test]
fn property_05_invalid_angle_rejected() {
    let rt = runtime();
    let app = rt.block_on(spawn_app(Backend::Sqlite, AppOptions::default()));
    let base = rt.block_on(completed_base(&app, "p5"));
    proptest!(cases(32), |(angle in "\\PC{0,12}".prop_filter("not a valid angle", |a| !["front", "side", "back"].contains(&a.trim())))| {
        let (status, resp) = rt.block_on(app.post("/models/outfit", &json!({
            "user_id": "p5", "base_model_task_id": base, "angle": angle, "outfit_images": [tiny_png()]
        })));
        prop_assert_eq!(status, 400, "{}", resp);
        prop_assert_eq!(&resp["code"], 1001);
        let errors = resp["data"]["errors"].as_array().cloned().unwrap_or_default();
        prop_assert!(errors.iter().any(|e| e["field"] == "angle"), "{}", resp);
    });
    // A wrong JSON type for angle is the same error, not a framework error.
    let (status, resp) = rt.block_on(app.post(
        "/models/outfit",
        &json!({
            "user_id": "p5", "base_model_task_id": base, "angle": 3, "outfit_images": [tiny_png()]
        }),
    ));
    assert_eq!((status, resp["code"].as_i64()), (400, Some(1001)), "{resp}");
}

#[test]
fn property_06_created_task_persisted_with_right_fields_and_base_link() {
    for backend in backends() {
        let rt = runtime();
        let app = rt.block_on(spawn_app(backend, AppOptions::default()));
        let base = rt.block_on(completed_base(&app, "p6"));
        let base_id: modelgen_domain::TaskId = base.parse().unwrap_or_else(|_| panic!("id {base}"));
        let base_key = rt
            .block_on(async {
                use modelgen_persistence::ImageRepository as _;
                app.db.images_for_task(&base_id).await.map(|i| {
                    i[0].location
                        .storage_key()
                        .map(str::to_owned)
                        .unwrap_or_default()
                })
            })
            .unwrap_or_default();
        proptest!(cases(8), |(
            outfit in any::<bool>(),
            angle in proptest::sample::select(&["front", "side", "back"][..]),
            garments in 1usize..=5,
            instructions in "[a-zA-Z ]{1,60}",
            size in proptest::sample::select(SIZES),
            request_id in proptest::option::of("[a-z0-9]{8}"),
        )| {
            let body = if outfit {
                json!({"user_id": "p6", "base_model_task_id": base, "angle": angle, "size": size,
                       "request_id": request_id, "outfit_images": vec![tiny_png(); garments]})
            } else {
                json!({"user_id": "p6", "base_model_task_id": base, "size": size,
                       "request_id": request_id, "edit_instructions": format!("x{instructions}")})
            };
            let path = if outfit { "/models/outfit" } else { "/models/edit" };
            let (status, resp) = rt.block_on(app.post(path, &body));
            prop_assert!(status == 202 || status == 200, "{}", resp);
            let id: modelgen_domain::TaskId = resp["data"]["task_id"].as_str().unwrap_or_default().parse().map_err(|_| TestCaseError::fail("bad id"))?;
            let row = rt.block_on(async {
                use modelgen_persistence::TaskRepository as _;
                app.db.get_task(&id).await
            }).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if status == 200 { return Ok(()); } // replay of an earlier request_id
            prop_assert_eq!(row.user_id.as_str(), "p6");
            prop_assert_eq!(row.task_type.as_str(), if outfit { "outfit" } else { "edit" });
            prop_assert_eq!(row.base_model_task_id, Some(base_id));
            prop_assert_eq!(row.angle.map(|a| a.as_str()), if outfit { Some(angle) } else { None });
            prop_assert_eq!(row.size.as_str(), size);
            prop_assert_eq!(row.request_id.clone(), request_id.clone());
            prop_assert_eq!(row.status.as_str(), "submitted");
            prop_assert_eq!(row.progress.get(), 0);
            prop_assert_eq!(row.input_images.len(), if outfit { 1 + garments } else { 1 });
            prop_assert_eq!(row.input_images[0].clone(), format!("blob:{base_key}"));
            prop_assert!(row.completed_at.is_none() && row.external_task_id.is_none());
            prop_assert!(!row.prompt.is_empty());
        });
    }
}

#[test]
fn property_07_status_transitions_only_along_the_machine_in_the_database() {
    use modelgen_persistence::{Fence, RepoError, TaskChange, TaskRepository as _};
    for backend in backends() {
        let rt = runtime();
        let app = rt.block_on(spawn_app(backend, AppOptions::default()));
        proptest!(cases(8), |(events in proptest::collection::vec(0u8..4, 1..8), progress in proptest::collection::vec(0i64..=100, 8))| {
            let id: modelgen_domain::TaskId = rt.block_on(app.create_default("p7")).parse().map_err(|_| TestCaseError::fail("id"))?;
            let mut last = "submitted".to_string();
            for (i, e) in events.iter().enumerate() {
                let event = match e {
                    0 => modelgen_domain::TaskEvent::Progressed(modelgen_domain::Progress::clamped(progress[i])),
                    1 => modelgen_domain::TaskEvent::Completed,
                    2 => modelgen_domain::TaskEvent::Failed,
                    _ => modelgen_domain::TaskEvent::Cancelled,
                };
                let result = rt.block_on(app.db.update_task(&id, &Fence::Unfenced, chrono::Utc::now(),
                    TaskChange { event: Some(event), ..TaskChange::default() }));
                let now = match result {
                    Ok(row) => row.status.as_str().to_string(),
                    Err(RepoError::InvalidTransition(_)) | Err(RepoError::AlreadyTerminal(_)) => last.clone(),
                    Err(other) => return Err(TestCaseError::fail(other.to_string())),
                };
                let allowed = now == last || matches!((last.as_str(), now.as_str()),
                    ("submitted", "processing" | "failed" | "cancelled") | ("processing", "completed" | "failed" | "cancelled"));
                prop_assert!(allowed, "{} -> {}", last, now);
                last = now;
            }
        });
    }
}

#[test]
fn property_08_query_returns_status_progress_and_image_when_completed() {
    for backend in backends() {
        let rt = runtime();
        let app = rt.block_on(spawn_app(backend, AppOptions::default()));
        proptest!(cases(3), |(size in proptest::sample::select(SIZES))| {
            let (status, resp) = rt.block_on(app.post("/models/default", &json!({
                "user_id": "p8", "user_image": person_jpeg(), "body_profile": body_profile(), "size": size
            })));
            prop_assert_eq!(status, 202);
            let id = resp["data"]["task_id"].as_str().unwrap_or_default().to_string();
            let (status, before) = rt.block_on(app.get(&format!("/tasks/{id}")));
            prop_assert_eq!(status, 200);
            prop_assert_eq!(&before["code"], 0);
            prop_assert_eq!(&before["data"]["status"], "submitted");
            prop_assert_eq!(&before["data"]["progress"], 0);
            prop_assert!(before["data"]["image"].is_null());
            let done = rt.block_on(app.drive_until_terminal(&id));
            prop_assert_eq!(&done["status"], "completed");
            prop_assert_eq!(&done["progress"], 100);
            let url = done["image"]["image_url"].as_str().unwrap_or_default().to_string();
            let bytes = rt.block_on(async { app.client.get(&url).send().await.ok()?.bytes().await.ok() }).unwrap_or_default();
            prop_assert!(bytes.starts_with(b"\x89PNG"), "image at {} is not a PNG", url);
            let (w, h) = (done["image"]["width"].as_f64().unwrap_or(0.0), done["image"]["height"].as_f64().unwrap_or(1.0));
            let (rw, rh) = size.split_once(':').map(|(a, b)| (a.parse::<f64>().unwrap_or(0.0), b.parse::<f64>().unwrap_or(1.0))).unwrap_or((0.0, 1.0));
            prop_assert!((w / h - rw / rh).abs() < 0.05, "{}x{} is not {}", w, h, size);
        });
    }
}

#[test]
fn property_09_unknown_task_returns_404_1003() {
    let rt = runtime();
    let app = rt.block_on(spawn_app(Backend::Sqlite, AppOptions::default()));
    proptest!(cases(48), |(raw in prop_oneof![
        any::<u128>().prop_map(|n| format!("task_{}", ulid::Ulid::from(n))),
        "[a-zA-Z0-9_.~-]{1,60}",
    ])| {
        let (status, resp) = rt.block_on(app.get(&format!("/tasks/{raw}")));
        prop_assert_eq!(status, 404, "{}", resp);
        prop_assert_eq!(&resp["code"], 1003);
        prop_assert!(resp["data"].is_null());
    });
}

#[test]
fn property_10_completed_task_has_an_image_row_with_url_or_base64() {
    use modelgen_persistence::ImageRepository as _;
    for backend in backends() {
        for inline in [false, true] {
            let rt = runtime();
            let app = rt.block_on(spawn_app(
                backend,
                AppOptions {
                    // Both spellings: the older name and its alias.
                    extra: vec![(
                        if inline {
                            "image_base64"
                        } else {
                            "store_image_base64"
                        }
                        .into(),
                        inline.to_string(),
                    )],
                },
            ));
            proptest!(cases(2), |(user in "[a-z]{3,8}")| {
                let id = rt.block_on(app.create_default(&user));
                let done = rt.block_on(app.drive_until_terminal(&id));
                prop_assert_eq!(&done["status"], "completed");
                let task_id: modelgen_domain::TaskId = id.parse().map_err(|_| TestCaseError::fail("id"))?;
                let rows = rt.block_on(app.db.images_for_task(&task_id)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(!rows.is_empty(), "no image row");
                let copies = rt.block_on(app.db.inline_images_for_task(&task_id)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(copies.len(), if inline { rows.len() } else { 0 });
                for row in &rows {
                    prop_assert!(row.location.storage_key().is_some_and(|k| !k.is_empty()));
                    prop_assert!(row.bytes.unwrap_or(0) > 0 && row.width.unwrap_or(0) > 0 && row.height.unwrap_or(0) > 0);
                }
                // The view renders a URL for each row; the inline copy only on request,
                // and it is the very bytes the URL serves.
                let url = done["image"]["image_url"].as_str().unwrap_or_default().to_string();
                prop_assert!(url.starts_with(&app.base), "{url}");
                prop_assert!(done["image"].get("image_base64").is_none());
                let (_, with) = rt.block_on(app.get(&format!("/tasks/{id}?include=image_base64")));
                let served = rt.block_on(async { app.client.get(&url).send().await?.bytes().await })
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                match with["data"]["image"]["image_base64"].as_str() {
                    Some(b64) => {
                        use base64::Engine as _;
                        prop_assert!(inline);
                        let decoded = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(&decoded[..], &served[..]);
                    }
                    None => prop_assert!(!inline),
                }
            });
        }
    }
}

#[test]
fn property_11_callback_carries_task_id_status_type_and_token_header() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    for backend in backends() {
        let rt = runtime();
        let receiver = rt.block_on(async {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(200))
                .mount(&server)
                .await;
            server
        });
        let app = rt.block_on(spawn_app(
            backend,
            AppOptions {
                extra: vec![
                    (
                        "callback_url".into(),
                        format!("{:?}", format!("{}/hook", receiver.uri())),
                    ),
                    ("callback_token".into(), "\"cb-secret-token\"".into()),
                ],
            },
        ));
        let base = rt.block_on(completed_base(&app, "p11"));
        proptest!(cases(6), |(outcome in 0u8..3)| {
            let id = match outcome {
                0 => rt.block_on(app.create_default("p11")),
                _ => {
                    let extra = if outcome == 1 { " [[sim:fail]]" } else { "" };
                    let (status, resp) = rt.block_on(app.post("/models/edit", &json!({
                        "user_id": "p11", "base_model_task_id": base, "edit_instructions": format!("tweak{extra}")
                    })));
                    prop_assert_eq!(status, 202);
                    resp["data"]["task_id"].as_str().unwrap_or_default().to_string()
                }
            };
            let expected = match outcome {
                2 => {
                    let (status, resp) = rt.block_on(app.post(&format!("/tasks/{id}/cancel"), &json!({})));
                    prop_assert_eq!(status, 200, "{}", resp);
                    "cancelled"
                }
                1 => { rt.block_on(app.drive_until_terminal(&id)); "failed" }
                _ => { rt.block_on(app.drive_until_terminal(&id)); "completed" }
            };
            rt.block_on(async {
                app.engine.deliver_due_callbacks().await.map(|_| ())
            }).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let requests = rt.block_on(receiver.received_requests()).unwrap_or_default();
            let mine: Vec<_> = requests.iter().filter(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.body).is_ok_and(|b| b["task_id"] == id.as_str())
            }).collect();
            prop_assert_eq!(mine.len(), 1, "exactly one delivery for {}", id);
            let req = mine[0];
            prop_assert_eq!(req.headers.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer cb-secret-token"));
            prop_assert!(req.headers.get("webhook-id").is_some());
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            prop_assert_eq!(&body["task_id"], id.as_str());
            prop_assert_eq!(&body["status"], expected);
            prop_assert_eq!(&body["type"], if outcome == 0 { "default" } else { "edit" });
            prop_assert_eq!(&body["user_id"], "p11");
            prop_assert!(body["completed_at"].is_string());
            if expected == "completed" {
                prop_assert!(body["image_url"].is_string());
            }
            if expected == "failed" {
                prop_assert_eq!(&body["error_code"], 1002);
            }
        });
    }
}

#[test]
fn property_12_updated_at_moves_on_every_update_and_completed_at_set_on_completion() {
    for backend in backends() {
        let rt = runtime();
        let app = rt.block_on(spawn_app(backend, AppOptions::default()));
        proptest!(cases(3), |(user in "[a-z]{3,6}")| {
            let id = rt.block_on(app.create_default(&user));
            let (_, first) = rt.block_on(app.get(&format!("/tasks/{id}")));
            let mut last = first["data"].clone();
            prop_assert_eq!(&last["updated_at"], &last["created_at"]);
            prop_assert!(last["completed_at"].is_null());
            let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                rt.block_on(app.engine.run_once()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let (_, now) = rt.block_on(app.get(&format!("/tasks/{id}")));
                let now = now["data"].clone();
                let changed = now["status"] != last["status"] || now["progress"] != last["progress"];
                if changed {
                    prop_assert!(now["updated_at"].as_str() > last["updated_at"].as_str(),
                        "updated_at did not move: {} -> {}", last["updated_at"], now["updated_at"]);
                }
                if now["status"] == "completed" {
                    prop_assert!(now["completed_at"].is_string());
                    prop_assert_eq!(&now["completed_at"], &now["updated_at"]);
                    break;
                }
                prop_assert!(now["completed_at"].is_null());
                prop_assert!(std::time::Instant::now() < end, "never completed");
                last = now;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
    }
}
