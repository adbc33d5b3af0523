//! People's photos are personal data: the input retention cleanup, the
//! erasure of a user's data through the admin endpoint, and `retry` of a task
//! whose inputs are gone — on every database backend under test, with the
//! blob store checked through its own interface (`BlobStore`), so another
//! store is covered by adding it to `stores_under_test`.
//!
//! Also here: a task whose upstream run completed shows it while its result
//! download is retried.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use modelgen_api::ports::{FetchError, ImageChunks, ImageFetcher};
use modelgen_e2e::Backend;
use modelgen_persistence::{
    BlobError, BlobStore, ImageRepository, ObjectBlobStore, RepoError, TaskRepository,
};
use serde_json::{Value, json};

use crate::helpers::{AppOptions, TestApp, body_profile, person_jpeg, spawn_app, tiny_png};

fn backends() -> Vec<Backend> {
    Backend::all_under_test()
}

/// The stores the erasure is checked against. Each entry opens the app's
/// store through `BlobStore`; today the local directory.
fn stores_under_test(app: &TestApp) -> Vec<(&'static str, Arc<dyn BlobStore>)> {
    let url = format!("file://{}", app.storage_dir().display());
    vec![(
        "local",
        Arc::new(ObjectBlobStore::from_url(&url).unwrap()) as Arc<dyn BlobStore>,
    )]
}

async fn exists(store: &dyn BlobStore, key: &str) -> bool {
    match store.get(key).await {
        Ok(_) => true,
        Err(BlobError::NotFound) => false,
        Err(e) => panic!("blob store failed on {key}: {e}"),
    }
}

async fn task(app: &TestApp, id: &str) -> modelgen_persistence::TaskRecord {
    app.db.get_task(&id.parse().unwrap()).await.unwrap()
}

/// Blob keys of a task's uploaded inputs and of its results.
async fn keys(app: &TestApp, id: &str) -> (Vec<String>, Vec<String>) {
    let t = task(app, id).await;
    let inputs = t
        .uploaded_input_keys()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let results = app
        .db
        .images_for_task(&t.task_id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|i| i.location.storage_key().map(str::to_owned))
        .collect();
    (inputs, results)
}

async fn create(app: &TestApp, path: &str, body: Value) -> String {
    let (status, body) = app.post(path, &body).await;
    assert_eq!(status, 202, "{body}");
    body["data"]["task_id"].as_str().unwrap().to_owned()
}

/// A completed default task of `user` (with an uploaded photo), a completed
/// outfit on it (uploaded garments), and a running edit.
async fn a_users_tasks(app: &TestApp, user: &str) -> (String, String, String) {
    let base = create(
        app,
        "/models/default",
        json!({"user_id": user, "user_image": person_jpeg(), "body_profile": body_profile()}),
    )
    .await;
    assert_eq!(app.drive_until_terminal(&base).await["status"], "completed");
    let outfit = create(
        app,
        "/models/outfit",
        json!({"user_id": user, "base_model_task_id": base, "angle": "side",
               "outfit_images": [tiny_png(), tiny_png()]}),
    )
    .await;
    assert_eq!(
        app.drive_until_terminal(&outfit).await["status"],
        "completed"
    );
    let running = create(
        app,
        "/models/edit",
        json!({"user_id": user, "base_model_task_id": base,
               "edit_instructions": "smile [[sim:never]]"}),
    )
    .await;
    app.engine.run_once().await.unwrap();
    (base, outfit, running)
}

#[tokio::test]
async fn erasing_a_users_data_deletes_images_blanks_profiles_and_keeps_accounting() {
    for backend in backends() {
        let app = spawn_app(backend, AppOptions::default()).await;
        let (base, outfit, running) = a_users_tasks(&app, "u-erase").await;
        let (other, _, _) = a_users_tasks(&app, "u-keep").await;
        let stores = stores_under_test(&app);

        let mut inputs = Vec::new();
        let mut results = Vec::new();
        for id in [&base, &outfit] {
            let (i, r) = keys(&app, id).await;
            inputs.extend(i);
            results.extend(r);
        }
        assert_eq!(inputs.len(), 3, "{backend:?}: a photo and two garments");
        assert_eq!(results.len(), 2, "{backend:?}");
        let (other_inputs, other_results) = keys(&app, &other).await;

        // A dry run says what would go and changes nothing.
        let (status, body) = app.delete("/admin/users/u-erase/data?dry_run=true").await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        let report = &body["data"];
        assert_eq!(report["dry_run"], true);
        assert_eq!(
            (report["tasks"].as_u64(), report["cancelled"].as_u64()),
            (Some(3), Some(1)),
            "{backend:?}: {body}"
        );
        assert_eq!(report["input_images"].as_u64(), Some(3), "{body}");
        assert_eq!(report["result_images"].as_u64(), Some(2), "{body}");
        assert_eq!(report["items"].as_array().map(Vec::len), Some(3), "{body}");
        assert_eq!(task(&app, &running).await.status.as_str(), "processing");
        for (name, store) in &stores {
            for key in inputs.iter().chain(&results) {
                assert!(
                    exists(&**store, key).await,
                    "{backend:?}/{name}: dry run deleted {key}"
                );
            }
        }

        let (status, body) = app.delete("/admin/users/u-erase/data").await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        let report = &body["data"];
        assert_eq!(report["dry_run"], false);
        assert_eq!(
            (
                report["tasks"].as_u64(),
                report["cancelled"].as_u64(),
                report["input_images"].as_u64(),
                report["result_images"].as_u64(),
                report["image_rows"].as_u64(),
            ),
            (Some(3), Some(1), Some(3), Some(2), Some(2)),
            "{backend:?}: {body}"
        );
        assert!(report.get("items").is_none(), "{body}");

        for (name, store) in &stores {
            for key in inputs.iter().chain(&results) {
                assert!(
                    !exists(&**store, key).await,
                    "{backend:?}/{name}: {key} kept"
                );
            }
            for key in other_inputs.iter().chain(&other_results) {
                assert!(
                    exists(&**store, key).await,
                    "{backend:?}/{name}: another user's {key} deleted"
                );
            }
        }
        for id in [&base, &outfit, &running] {
            let t = task(&app, id).await;
            assert_eq!(t.prompt, "", "{backend:?}: prompt kept");
            assert!(t.input_images.is_empty());
            assert_eq!(t.request_fingerprint, None);
            assert!(t.purged_at.is_some());
            assert!(t.status.is_terminal());
            let (status, view) = app.get(&format!("/tasks/{id}")).await;
            assert_eq!(status, 200, "{view}");
            assert_eq!(view["data"]["images"], json!([]), "{view}");
            assert_eq!(view["data"]["user_id"], "u-erase");
        }
        assert_eq!(task(&app, &running).await.status.as_str(), "cancelled");
        assert_eq!(task(&app, &base).await.status.as_str(), "completed");
        assert!(!task(&app, &other).await.prompt.is_empty());
        // The running edit was cancelled with its callback, like a client cancel.
        // Nothing can be built on an erased base model.
        let (status, body) = app
            .post(
                "/models/edit",
                &json!({"user_id": "u-erase", "base_model_task_id": base, "edit_instructions": "x"}),
            )
            .await;
        assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");

        // Idempotent: nothing more to delete.
        let (status, body) = app.delete("/admin/users/u-erase/data").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["image_rows"].as_u64(), Some(0), "{body}");
        assert_eq!(body["data"]["cancelled"].as_u64(), Some(0), "{body}");
        assert_eq!(body["data"]["already_erased"].as_u64(), Some(3), "{body}");

        // Bad ids are refused in the envelope; an unknown user is nothing to do.
        let long = "x".repeat(65);
        let (status, body) = app.delete(&format!("/admin/users/{long}/data")).await;
        assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
        let (status, body) = app.delete("/admin/users/u-erase/data?dry_run=maybe").await;
        assert_eq!((status, body["code"].as_i64()), (400, Some(1001)), "{body}");
        let (status, body) = app.delete("/admin/users/nobody/data").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["tasks"].as_u64(), Some(0), "{body}");
    }
}

#[tokio::test]
async fn the_erasure_endpoint_is_protected_like_other_admin_routes() {
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![("api_auth_token".into(), "\"admin-secret\"".into())],
        },
    )
    .await;
    let (status, body) = app.delete("/admin/users/u1/data").await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1005)), "{body}");
}

#[tokio::test]
async fn input_retention_deletes_uploads_of_ended_tasks_only_and_retry_then_refuses() {
    for backend in backends() {
        let app = spawn_app(backend, AppOptions::default()).await;
        let (base, outfit, running) = a_users_tasks(&app, "u-ret").await;
        let failed = create(
            &app,
            "/models/default",
            json!({"user_id": "u-ret", "user_image": person_jpeg(), "body_profile": body_profile()}),
        )
        .await;
        let failed_edit = create(
            &app,
            "/models/edit",
            json!({"user_id": "u-ret", "base_model_task_id": base, "edit_instructions": "x [[sim:fail]]"}),
        )
        .await;
        // The default fails upstream too: its photo is uploaded.
        app.db
            .update_task(
                &failed.parse().unwrap(),
                &modelgen_persistence::Fence::Unfenced,
                chrono::Utc::now(),
                modelgen_persistence::TaskChange {
                    event: Some(modelgen_domain::TaskEvent::Failed),
                    error: Some((1002, "apimart: boom".into())),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            app.drive_until_terminal(&failed_edit).await["status"],
            "failed"
        );
        let store = &stores_under_test(&app)[0].1;
        let (base_inputs, base_results) = keys(&app, &base).await;
        let (outfit_inputs, _) = keys(&app, &outfit).await;
        let (running_inputs, _) = keys(&app, &running).await;
        assert!(running_inputs.is_empty(), "an edit uploads nothing");

        // Within the retention nothing is due.
        let report = app
            .privacy
            .sweep_inputs(Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(report.tasks, 0, "{backend:?}");
        for key in base_inputs.iter().chain(&outfit_inputs) {
            assert!(exists(&**store, key).await, "{backend:?}: {key}");
        }

        // Past it: every ended task is processed once, uploads deleted.
        let report = app.privacy.sweep_inputs(Duration::ZERO).await.unwrap();
        assert_eq!(report.tasks, 4, "{backend:?}: {report:?}");
        assert_eq!(
            report.input_images, 4,
            "{backend:?}: photo, 2 garments, failed photo"
        );
        assert_eq!(report.failed, 0);
        for key in base_inputs.iter().chain(&outfit_inputs) {
            assert!(!exists(&**store, key).await, "{backend:?}: {key} kept");
        }
        // Results stay: the base model is still an input of new tasks.
        for key in &base_results {
            assert!(
                exists(&**store, key).await,
                "{backend:?}: result {key} deleted"
            );
        }
        assert!(
            task(&app, &running).await.inputs_purged_at.is_none(),
            "running task touched"
        );
        let again = app.privacy.sweep_inputs(Duration::ZERO).await.unwrap();
        assert_eq!(again.tasks, 0, "{backend:?}: processed twice");
        let outfit2 = create(
            &app,
            "/models/outfit",
            json!({"user_id": "u-ret", "base_model_task_id": base, "angle": "back",
                   "outfit_images": [tiny_png()]}),
        )
        .await;
        assert_eq!(
            app.drive_until_terminal(&outfit2).await["status"],
            "completed"
        );

        // Retry: refused when its uploads are gone, allowed when it had none.
        let before = task(&app, &failed).await;
        match app.db.retry_task(&before.task_id, chrono::Utc::now()).await {
            Err(RepoError::InputsPurged { .. }) => {}
            other => panic!("{backend:?}: expected InputsPurged, got {other:?}"),
        }
        assert_eq!(task(&app, &failed).await, before, "nothing written");
        let retried = app
            .db
            .retry_task(&failed_edit.parse().unwrap(), chrono::Utc::now())
            .await
            .unwrap();
        assert_eq!(retried.status.as_str(), "submitted");
    }
}

/// Fails every download as a transient error, counting them.
struct FailingFetcher(AtomicUsize);

#[async_trait]
impl ImageFetcher for FailingFetcher {
    async fn open(&self, _url: &str, _max_bytes: usize) -> Result<ImageChunks, FetchError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(FetchError::Transient("HTTP 503".into()))
    }
}

#[tokio::test]
async fn a_task_done_upstream_shows_it_while_its_download_is_retried() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let fetcher = Arc::new(FailingFetcher(AtomicUsize::new(0)));
    let failing = Arc::new(modelgen_api::engine::Engine {
        fetcher: fetcher.clone(),
        ..(*app.engine).clone()
    });
    let id = app.create_default("u-download").await;
    let end = Instant::now() + Duration::from_secs(30);
    while fetcher.0.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < end, "no download was attempted");
        failing.run_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, view) = app.get(&format!("/tasks/{id}")).await;
    assert_eq!(view["data"]["status"], "processing", "{view}");
    assert_eq!(view["data"]["progress"], 100, "{view}");
    // With downloads working again, the task completes.
    assert_eq!(app.drive_until_terminal(&id).await["status"], "completed");
}
