//! Storage end to end: the real `modelgen` binary with `STORAGE_URL=s3://…`
//! against a real S3-compatible server (`s3s-fs` on loopback, SigV4 checked),
//! the Apimart simulator and a callback receiver.
//!
//! - presigned mode: default → edit → outfit, every image fetched from its
//!   presigned URL (task view, list, callback), inputs never reachable;
//! - URLs are rendered when read: changing `PUBLIC_BASE_URL` after tasks
//!   completed changes the URLs served and the URLs a redelivered callback carries;
//! - a `--workers-only` replica writes callback URLs from `PUBLIC_BASE_URL`,
//!   and `config check` warns when it has none.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use apimart_sim::{SimConfig, SimHandle, Simulator};
use base64::Engine as _;
use modelgen_e2e::{
    Api, Backend, CallbackReceiver, DEADLINE, Service, TestDb, fixture_data_uri, wait_for,
};
use modelgen_persistence::s3_server::{S3TestServer, s3_skipped};
use serde_json::json;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

fn body_profile() -> serde_json::Value {
    json!({"gender": "female", "height_cm": 168, "weight_kg": 55, "age": 30, "skin_tone": "light"})
}

async fn sim() -> SimHandle {
    Simulator::start(
        SimConfig {
            task_duration: Duration::from_millis(600),
            estimated_time: Duration::from_millis(600),
            api_key: Some("s3-key".into()),
            ..SimConfig::default()
        },
        0,
    )
    .await
    .unwrap()
}

/// The environment that points modelgen at `bucket/modelgen` on `server`.
fn s3_env(server: &S3TestServer, bucket: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STORAGE_URL", format!("s3://{bucket}/modelgen")),
        ("AWS_ENDPOINT_URL", server.endpoint()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", server.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY", server.secret_key.clone()),
    ]
}

async fn create(api: &Api, path: &str, body: serde_json::Value) -> String {
    let (status, resp) = api.post(path, &body).await;
    assert_eq!(status, 202, "{resp}");
    resp["data"]["task_id"].as_str().unwrap().to_string()
}

async fn callback_for(receiver: &CallbackReceiver, task_id: &str) -> modelgen_e2e::Received {
    wait_for(&format!("callback for {task_id}"), DEADLINE, || async {
        receiver.delivered_for(task_id).pop()
    })
    .await
}

/// GETs `url` and checks it serves a PNG; returns the bytes.
async fn fetch_png(api: &Api, url: &str) -> Vec<u8> {
    let (status, bytes, content_type) = api.get_bytes(url).await;
    assert_eq!(status, 200, "GET {url}");
    assert_eq!(content_type, "image/png", "GET {url}");
    assert!(bytes.starts_with(PNG_MAGIC), "GET {url}: not a PNG");
    bytes
}

#[actix_web::test]
async fn s3_presigned_default_edit_outfit_with_images_from_s3_and_callbacks() {
    if s3_skipped() {
        eprintln!("skipped: MODELGEN_SKIP_S3=1");
        return;
    }
    let server = S3TestServer::start();
    let bucket = server.create_bucket("e2e");
    let db = TestDb::fresh(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let receiver = CallbackReceiver::start().await;
    let mut overrides = s3_env(&server, &bucket);
    overrides.extend([
        ("IMAGE_URL_MODE", "presigned".to_string()),
        ("IMAGE_URL_EXPIRY", "600".into()),
        ("IMAGE_BASE64", "true".into()),
        ("CALLBACK_URL", receiver.url()),
        ("CALLBACK_BASE_DELAY", "0.2".into()),
    ]);
    let env = modelgen_e2e::fast_env(&db, dir.path(), &sim.base_url(), "s3-key", &overrides);
    let service = Service::start(dir.path(), env).await;
    let api = Api::new(service.base_url());
    let object_prefix = format!("{}/{bucket}/modelgen", server.endpoint());

    let base = create(
        &api,
        "/models/default",
        json!({"user_id": "u-s3", "user_image": fixture_data_uri("person_front.jpg"), "body_profile": body_profile()}),
    )
    .await;
    let edit_body = |base: &str| json!({"user_id": "u-s3", "base_model_task_id": base, "edit_instructions": "shorter hair"});
    let mut ids = vec![base.clone()];
    let task = api.wait_terminal(&base, DEADLINE).await;
    assert_eq!(task["status"], "completed", "{task}");
    let edit = create(&api, "/models/edit", edit_body(&base)).await;
    ids.push(edit.clone());
    assert_eq!(
        api.wait_terminal(&edit, DEADLINE).await["status"],
        "completed"
    );
    let outfit = create(
        &api,
        "/models/outfit",
        json!({"user_id": "u-s3", "base_model_task_id": edit, "angle": "back", "outfit_images": [fixture_data_uri("object.jpg")]}),
    )
    .await;
    ids.push(outfit.clone());

    for id in &ids {
        let task = api.wait_terminal(id, DEADLINE).await;
        assert_eq!(task["status"], "completed", "{task}");
        let url = task["image"]["image_url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("{object_prefix}/results/{id}/0-"))
                && url.contains(".png?")
                && url.contains("X-Amz-Signature="),
            "not a presigned S3 URL: {url}"
        );
        let bytes = fetch_png(&api, url).await;
        // The object's name: `<index>-<ulid>.png` (a key per download).
        let file = url_file_name(url);
        assert!(
            server
                .bucket_dir(&bucket)
                .join(format!("modelgen/results/{id}/{file}"))
                .is_file(),
            "the result is in the bucket"
        );
        // The inline copy: only on request, and the very bytes S3 serves.
        assert!(task["image"].get("image_base64").is_none(), "{task}");
        let (_, with) = api.get(&format!("/tasks/{id}?include=image_base64")).await;
        let inline = with["data"]["image"]["image_base64"]
            .as_str()
            .expect("inline copy");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(inline)
                .unwrap(),
            bytes
        );
        // The callback carries its own presigned URL, rendered when it was sent.
        let cb = callback_for(&receiver, id).await;
        let cb_url = cb.body["image_url"].as_str().unwrap();
        assert!(cb_url.contains("X-Amz-Signature="), "{cb_url}");
        assert_eq!(fetch_png(&api, cb_url).await, bytes);
        // modelgen does not serve results itself in presigned mode.
        let (status, _, _) = api
            .get_bytes(&format!(
                "{}/images/results/{id}/{file}",
                service.base_url()
            ))
            .await;
        assert_eq!(status, 404);
    }
    // The list renders URLs too.
    let (_, page) = api.get("/tasks?user_id=u-s3").await;
    for item in page["data"]["items"].as_array().unwrap() {
        let url = item["image"]["image_url"].as_str().unwrap();
        fetch_png(&api, url).await;
    }

    // Inputs are in the bucket, private, and never given a URL.
    let input = server
        .bucket_dir(&bucket)
        .join(format!("modelgen/inputs/{base}"));
    let files: Vec<_> = std::fs::read_dir(&input)
        .expect("inputs stored in S3")
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().to_string_lossy().into_owned();
    let (status, _, _) = api
        .get_bytes(&format!("{object_prefix}/inputs/{base}/{name}"))
        .await;
    assert_eq!(status, 403, "anonymous read of an input photo");
    let (status, _, _) = api
        .get_bytes(&format!(
            "{}/images/inputs/{base}/{name}",
            service.base_url()
        ))
        .await;
    assert_eq!(status, 404);
    // Nothing was written to the local image directory.
    assert!(!dir.path().join("images/results").exists());
}

#[actix_web::test]
async fn changing_public_base_url_changes_the_urls_of_completed_tasks() {
    if s3_skipped() {
        eprintln!("skipped: MODELGEN_SKIP_S3=1");
        return;
    }
    let server = S3TestServer::start();
    let bucket = server.create_bucket("rebase");
    let db = TestDb::fresh(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let receiver = CallbackReceiver::start().await;
    let mut overrides = s3_env(&server, &bucket);
    overrides.extend([
        (
            "PUBLIC_BASE_URL",
            "https://img-old.example.test/m".to_string(),
        ),
        ("CALLBACK_URL", receiver.url()),
    ]);
    let env = modelgen_e2e::fast_env(&db, dir.path(), &sim.base_url(), "s3-key", &overrides);
    let mut service = Service::start(dir.path(), env).await;
    let api = Api::new(service.base_url());
    let id = create(
        &api,
        "/models/default",
        json!({"user_id": "u-rebase", "user_image": fixture_data_uri("person_front.jpg"), "body_profile": body_profile()}),
    )
    .await;
    let task = api.wait_terminal(&id, DEADLINE).await;
    let old_url = task["image"]["image_url"].as_str().unwrap();
    let file = url_file_name(old_url);
    assert_eq!(
        old_url,
        format!("https://img-old.example.test/m/results/{id}/{file}")
    );
    assert!(file.starts_with("0-") && file.ends_with(".png"), "{file}");
    let first = callback_for(&receiver, &id).await;
    assert_eq!(first.body["image_url"], task["image"]["image_url"]);
    let event_id = first.headers["webhook-id"].clone();

    // The domain changes: modelgen itself now fronts the bucket at /images.
    let new_base = format!("{}/images", service.base_url());
    service.set_env("PUBLIC_BASE_URL", &new_base);
    service.restart().await;
    let (_, view) = api.get(&format!("/tasks/{id}")).await;
    let url = view["data"]["image"]["image_url"].as_str().unwrap();
    assert_eq!(url, format!("{new_base}/results/{id}/{file}"));
    fetch_png(&api, url).await;
    let (_, page) = api.get("/tasks?user_id=u-rebase").await;
    assert_eq!(page["data"]["items"][0]["image"]["image_url"], url);

    // A redelivered callback is rendered anew: same event, new URL.
    let (status, body) = api
        .post(
            &format!("/admin/callbacks/{event_id}/redeliver"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let again = wait_for("redelivered callback", DEADLINE, || async {
        let got = receiver.delivered_for(&id);
        (got.len() >= 2).then(|| got[got.len() - 1].clone())
    })
    .await;
    assert_eq!(again.headers["webhook-id"], event_id);
    assert_eq!(again.body["image_url"], url);
}

#[actix_web::test]
async fn a_workers_only_replica_writes_callback_urls_from_public_base_url() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = sim().await;
    let receiver = CallbackReceiver::start().await;
    let env = modelgen_e2e::fast_env(
        &db,
        dir.path(),
        &sim.base_url(),
        "s3-key",
        &[("CALLBACK_URL", receiver.url())],
    );

    // Without PUBLIC_BASE_URL, `config check` warns about the workers-only role.
    let out = std::process::Command::new(modelgen_e2e::modelgen_bin())
        .args(["config", "check"])
        .current_dir(dir.path())
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning (serve --workers-only)") && text.contains("PUBLIC_BASE_URL"),
        "{text}"
    );

    let api_service =
        Service::start_with_args(dir.path(), env.clone(), &["serve", "--api-only"]).await;
    let api = Api::new(api_service.base_url());
    let mut worker_env = env;
    worker_env.push(("PUBLIC_BASE_URL".into(), api_service.base_url()));
    let mut workers = modelgen_e2e::spawn_workers_only(dir.path(), worker_env);
    let id = create(
        &api,
        "/models/default",
        json!({"user_id": "u-split", "user_image": fixture_data_uri("person_front.jpg"), "body_profile": body_profile()}),
    )
    .await;
    let cb = callback_for(&receiver, &id).await;
    let url = cb.body["image_url"].as_str().unwrap();
    let file = url_file_name(url);
    assert_eq!(
        url,
        format!("{}/images/results/{id}/{file}", api_service.base_url())
    );
    assert!(file.starts_with("0-") && file.ends_with(".png"), "{file}");
    fetch_png(&api, url).await;
    let _ = workers.kill();
    let _ = workers.wait();
}

/// The last path segment of `url`, without its query: a result's object name,
/// `<index>-<ulid>.<ext>`.
fn url_file_name(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path).to_owned()
}
