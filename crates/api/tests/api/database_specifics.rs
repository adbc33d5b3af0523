//! What differs between databases, checked through HTTP on every backend
//! under test (SQLite, PostgreSQL, MariaDB): 4-byte UTF-8 text at the edit
//! limit, keyset pagination over ids minted in one millisecond, and
//! idempotency under concurrent creates. MariaDB is the reason they exist
//! (utf8mb4, binary collation, `DATETIME(6)`, no `RETURNING`).

use std::collections::HashSet;

use modelgen_domain::{TaskId, TaskType};
use modelgen_e2e::Backend;
use modelgen_persistence::{InsertOutcome, NewTask, TaskRepository as _};
use serde_json::json;

use crate::helpers::{AppOptions, body_profile, spawn_app, tiny_png};

/// Percent-encodes a query value.
fn q(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Exactly `n` characters cycling through CJK, emoji (4-byte, with a skin
/// tone modifier and a ZWJ sequence), Latin with a combining accent, and quotes.
fn mixed_text(n: usize) -> String {
    const PIECES: [&str; 6] = ["把头发剪短一点", "😀", "👩🏽‍🎤", "e\u{301}", "𠀋𩸽", " \"'\\% "];
    PIECES
        .iter()
        .flat_map(|p| p.chars())
        .cycle()
        .take(n)
        .collect()
}

/// `n` characters of [`mixed_text`] fit for an id: no spaces, and no
/// zero-width joiner (ids refuse invisible characters).
fn id_text(n: usize) -> String {
    mixed_text(4 * n)
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{200D}')
        .take(n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cjk_and_emoji_at_the_500_character_edit_limit_round_trip_byte_for_byte() {
    for backend in Backend::all_under_test() {
        let app = spawn_app(backend, AppOptions::default()).await;
        // 64 characters, the most a user id and a request id may have.
        let user = id_text(64);
        let request_id = format!("请求🎯{}", id_text(61));
        assert_eq!(request_id.chars().count(), 64);
        assert!(user.len() > 64 * 2, "{backend:?}: user id is multi-byte");
        let base = app.create_default(&user).await;
        let done = app.drive_until_terminal(&base).await;
        assert_eq!(done["status"], "completed", "{backend:?}: {done}");
        assert_eq!(done["user_id"].as_str(), Some(user.as_str()));

        let instructions = mixed_text(500);
        assert_eq!(
            instructions.trim(),
            instructions,
            "nothing for the service to trim"
        );
        assert!(instructions.len() > 1000, "mostly multi-byte");
        let body = json!({"user_id": user, "request_id": request_id, "base_model_task_id": base,
                          "edit_instructions": instructions});
        let (status, created) = app.post("/models/edit", &body).await;
        assert_eq!(status, 202, "{backend:?}: {created}");
        let id = created["data"]["task_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();

        // The view gives the ids back byte for byte.
        let (status, view) = app.get(&format!("/tasks/{id}")).await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["data"]["user_id"].as_str(), Some(user.as_str()));
        assert_eq!(
            view["data"]["request_id"].as_str(),
            Some(request_id.as_str())
        );
        // The stored prompt holds the instructions byte for byte.
        let task_id: TaskId = id.parse().unwrap_or_else(|_| panic!("id {id}"));
        let row = app
            .db
            .get_task(&task_id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            row.prompt.contains(instructions.as_str()),
            "{backend:?}: instructions changed on the way through the database"
        );
        assert_eq!(row.user_id.as_bytes(), user.as_bytes());

        // The same request again is a replay: the stored key and payload
        // compare equal to what is sent.
        let (status, again) = app.post("/models/edit", &body).await;
        assert_eq!(status, 200, "{backend:?}: {again}");
        assert_eq!(again["data"]["task_id"].as_str(), Some(id.as_str()));
        // Listing by the user id finds both tasks, and only them.
        let (status, page) = app.get(&format!("/tasks?user_id={}", q(&user))).await;
        assert_eq!(status, 200, "{page}");
        let listed: Vec<&str> = page["data"]["items"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["task_id"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(listed, vec![id.as_str(), base.as_str()], "{backend:?}");

        // One character more is refused and creates nothing.
        let mut over = body.clone();
        over["edit_instructions"] = json!(format!("{instructions}字"));
        over["request_id"] = json!("over");
        let (status, refused) = app.post("/models/edit", &over).await;
        assert_eq!(
            (status, refused["code"].as_i64()),
            (400, Some(1001)),
            "{refused}"
        );

        let done = app.drive_until_terminal(&id).await;
        assert_eq!(done["status"], "completed", "{backend:?}: {done}");
        assert_eq!(done["request_id"].as_str(), Some(request_id.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_pagination_over_60_tasks_of_one_millisecond_returns_each_exactly_once() {
    for backend in Backend::all_under_test() {
        let app = spawn_app(backend, AppOptions::default()).await;
        let ms = chrono::Utc::now().timestamp_millis() as u64;
        let created = chrono::DateTime::from_timestamp_millis(ms as i64).unwrap_or_default();
        let mut ids = Vec::new();
        for _ in 0..60 {
            let random = ulid::Ulid::generate().random();
            let id: TaskId = format!("task_{}", ulid::Ulid::from_parts(ms, random))
                .parse()
                .unwrap_or_else(|e| panic!("{e}"));
            let task = NewTask {
                task_id: id,
                request_id: None,
                user_id: "same-ms".into(),
                task_type: TaskType::Default,
                base_model_task_id: None,
                angle: None,
                size: "4:3".into(),
                prompt: "p".into(),
                model: "m".into(),
                input_images: vec![],
                request_fingerprint: None,
                created_at: created,
                callback_url: None,
            };
            let outcome = app.db.insert_task(task).await;
            assert!(
                matches!(outcome, Ok(InsertOutcome::Created(_))),
                "{outcome:?}"
            );
            ids.push(id.to_string());
        }
        ids.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));

        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let mut path = "/tasks?user_id=same-ms&limit=7".to_string();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", q(c)));
            }
            let (status, page) = app.get(&path).await;
            assert_eq!(status, 200, "{page}");
            let items = page["data"]["items"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(items.len() <= 7);
            seen.extend(
                items
                    .iter()
                    .filter_map(|t| t["task_id"].as_str().map(str::to_string)),
            );
            match page["data"]["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 60, "{backend:?}");
        assert_eq!(
            seen, ids,
            "{backend:?}: each task once, newest (highest id) first"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_creates_with_one_idempotency_key_make_one_task() {
    for backend in Backend::all_under_test() {
        let app = spawn_app(backend, AppOptions::default()).await;
        let body = json!({"user_id": "racer", "request_id": "same-key-🔑",
                          "user_image": tiny_png(), "body_profile": body_profile()});
        let mut handles = Vec::new();
        for _ in 0..8 {
            let client = app.client.clone();
            let url = format!("{}/models/default", app.base);
            let body = body.clone();
            handles.push(tokio::spawn(async move {
                let r = client.post(url).json(&body).send().await.ok()?;
                let status = r.status().as_u16();
                let replayed = r.headers().contains_key("idempotency-replayed");
                let body: serde_json::Value = r.json().await.ok()?;
                Some((
                    status,
                    replayed,
                    body["data"]["task_id"].as_str()?.to_string(),
                ))
            }));
        }
        let mut answers = Vec::new();
        for h in handles {
            answers.push(h.await.ok().flatten().expect("an answer with a task id"));
        }
        let created = answers.iter().filter(|(s, _, _)| *s == 202).count();
        let replays = answers.iter().filter(|(s, r, _)| *s == 200 && *r).count();
        assert_eq!((created, replays), (1, 7), "{backend:?}: {answers:?}");
        let ids: HashSet<&str> = answers.iter().map(|(_, _, id)| id.as_str()).collect();
        assert_eq!(ids.len(), 1, "{backend:?}: {answers:?}");
        let (_, page) = app.get("/tasks?user_id=racer").await;
        assert_eq!(
            page["data"]["items"].as_array().map(Vec::len),
            Some(1),
            "{backend:?}: {page}"
        );
    }
}
