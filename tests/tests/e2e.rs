//! End to end: the real `modelgen` binary, the Apimart simulator and a
//! callback receiver on loopback, on SQLite, PostgreSQL and MariaDB.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use apimart_sim::{SimConfig, SimHandle, Simulator};
use modelgen_e2e::{
    Api, Backend, CallbackReceiver, DEADLINE, Service, TestDb, fixture_data_uri, skip_mysql,
    skip_pg, wait_for,
};
use serde_json::json;

const CALLBACK_TOKEN: &str = "cb-token-e2e";
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct World {
    _db: TestDb,
    dir: tempfile::TempDir,
    sim: SimHandle,
    receiver: CallbackReceiver,
    service: Service,
    api: Api,
}

async fn world(backend: Backend, sim_duration: Duration) -> World {
    let db = TestDb::fresh(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(
        SimConfig {
            task_duration: sim_duration,
            estimated_time: sim_duration,
            api_key: Some("e2e-key".into()),
            ..SimConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let receiver = CallbackReceiver::start().await;
    let env = modelgen_e2e::fast_env(
        &db,
        dir.path(),
        &sim.base_url(),
        "e2e-key",
        &[
            ("CALLBACK_URL", receiver.url()),
            ("CALLBACK_TOKEN", CALLBACK_TOKEN.into()),
            ("CALLBACK_SIGNING_SECRET", SIGNING_SECRET.into()),
            ("CALLBACK_BASE_DELAY", "0.2".into()),
            ("CALLBACK_MAX_DELAY", "1".into()),
        ],
    );
    let service = Service::start(dir.path(), env).await;
    let api = Api::new(service.base_url());
    World {
        _db: db,
        dir,
        sim,
        receiver,
        service,
        api,
    }
}

fn body_profile() -> serde_json::Value {
    json!({"gender": "female", "height_cm": 168, "weight_kg": 55, "age": 30, "skin_tone": "light", "body_shape": "slim"})
}

async fn assert_completed_with_png(api: &Api, task: &serde_json::Value) {
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["progress"], 100);
    assert!(task["completed_at"].is_string());
    let url = task["image"]["image_url"].as_str().expect("image_url");
    let (status, bytes, content_type) = api.get_bytes(url).await;
    assert_eq!(status, 200, "GET {url}");
    assert_eq!(content_type, "image/png");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(task["image"]["mime"], "image/png");
    assert!(task["image"]["width"].as_i64().unwrap() > 0);
}

/// The callback for `task_id` arrived with the token, a verifiable signature
/// and the documented payload (README, "Callbacks").
async fn assert_callback(world: &World, task_id: &str, status: &str) {
    let received = wait_for(&format!("callback for {task_id}"), DEADLINE, || async {
        let got = world.receiver.delivered_for(task_id);
        (!got.is_empty()).then_some(got)
    })
    .await;
    let cb = &received[0];
    assert_eq!(
        cb.headers.get("authorization").map(String::as_str),
        Some(&*format!("Bearer {CALLBACK_TOKEN}"))
    );
    let id = cb.headers.get("webhook-id").expect("webhook-id");
    let ts: i64 = cb
        .headers
        .get("webhook-timestamp")
        .expect("webhook-timestamp")
        .parse()
        .unwrap();
    let sig = cb
        .headers
        .get("webhook-signature")
        .expect("webhook-signature");
    let secret = modelgen_callback::SigningSecret::parse(SIGNING_SECRET).unwrap();
    modelgen_callback::verify(&secret, id, ts, &cb.raw, sig, ts, 300).expect("signature verifies");
    for field in [
        "task_id",
        "request_id",
        "user_id",
        "type",
        "status",
        "angle",
        "image",
        "image_url",
        "images",
        "error_code",
        "error_message",
        "completed_at",
    ] {
        assert!(
            cb.body.get(field).is_some(),
            "callback lacks {field}: {}",
            cb.body
        );
    }
    assert_eq!(cb.body["status"], status);
    // Every delivery of one event carries the same webhook-id.
    assert!(
        received
            .iter()
            .all(|r| r.headers.get("webhook-id") == Some(id))
    );
}

async fn full_flow(backend: Backend) {
    let world = world(backend, Duration::from_millis(1500)).await;
    let api = &world.api;

    // F1: default model.
    let (status, body) = api
        .post(
            "/models/default",
            &json!({
                "user_id": "u-e2e", "request_id": "r-1",
                "user_image": fixture_data_uri("person_front.jpg"),
                "body_profile": body_profile(),
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["code"], 0);
    assert_eq!(body["msg"], "accepted");
    assert_eq!(body["data"]["status"], "submitted");
    assert!(body["data"]["angle"].is_null());
    let base = body["data"]["task_id"].as_str().unwrap().to_string();
    assert!(base.starts_with("task_"));

    // It is seen processing with progress before it completes.
    wait_for("processing", DEADLINE, || async {
        let (_, b) = api.get(&format!("/tasks/{base}")).await;
        matches!(
            b["data"]["status"].as_str(),
            Some("processing" | "completed")
        )
        .then_some(())
    })
    .await;
    let task = api.wait_terminal(&base, DEADLINE).await;
    assert_completed_with_png(api, &task).await;
    assert_eq!(task["type"], "default");
    assert_eq!(task["request_id"], "r-1");
    assert_callback(&world, &base, "completed").await;

    // Idempotent replay: same request_id and payload → same task, 200.
    let (status, replay) = api
        .post(
            "/models/default",
            &json!({
                "user_id": "u-e2e", "request_id": "r-1",
                "user_image": fixture_data_uri("person_front.jpg"),
                "body_profile": body_profile(),
            }),
        )
        .await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["data"]["task_id"], base.as_str());

    // F2: edit.
    let (status, body) = api
        .post("/models/edit", &json!({"user_id": "u-e2e", "base_model_task_id": base, "edit_instructions": "make the hair shorter"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let edit = body["data"]["task_id"].as_str().unwrap().to_string();
    let task = api.wait_terminal(&edit, DEADLINE).await;
    assert_completed_with_png(api, &task).await;
    assert_eq!(task["base_model_task_id"], base.as_str());
    assert_callback(&world, &edit, "completed").await;

    // F3: outfit on the edited model, from the side.
    let (status, body) = api
        .post(
            "/models/outfit",
            &json!({
                "user_id": "u-e2e", "base_model_task_id": edit, "angle": "side",
                "outfit_images": [fixture_data_uri("object.jpg")],
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["angle"], "side");
    let outfit = body["data"]["task_id"].as_str().unwrap().to_string();
    let task = api.wait_terminal(&outfit, DEADLINE).await;
    assert_completed_with_png(api, &task).await;
    assert_eq!(task["angle"], "side");
    assert_callback(&world, &outfit, "completed").await;

    // Another user's base model is not found.
    let (status, body) = api
        .post("/models/edit", &json!({"user_id": "someone-else", "base_model_task_id": base, "edit_instructions": "x"}))
        .await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(1003)), "{body}");

    // An upstream-failed task fails with 1002 and a callback.
    let (status, body) = api
        .post("/models/edit", &json!({"user_id": "u-e2e", "base_model_task_id": base, "edit_instructions": "fail please [[sim:fail]]"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let failed = body["data"]["task_id"].as_str().unwrap().to_string();
    let task = api.wait_terminal(&failed, DEADLINE).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error_code"], 1002);
    assert_callback(&world, &failed, "failed").await;

    // Nothing was submitted upstream twice.
    assert_eq!(world.sim.stats().max_tasks_per_key, 1);
    let _ = &world.dir;
}

async fn kill9_mid_task(backend: Backend) {
    let mut world = world(backend, Duration::from_secs(4)).await;
    let (status, body) = world
        .api
        .post("/models/default", &json!({
            "user_id": "u-kill", "user_image": fixture_data_uri("person_front.jpg"), "body_profile": body_profile(),
        }))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["data"]["task_id"].as_str().unwrap().to_string();
    // Wait until it is upstream, then kill -9 the service mid-task.
    let api = world.api.clone();
    wait_for("task submitted upstream", DEADLINE, || async {
        let (_, b) = api.get(&format!("/tasks/{id}")).await;
        (b["data"]["status"] == "processing").then_some(())
    })
    .await;
    world.service.kill9();
    world.service.restart().await;
    let task = world.api.wait_terminal(&id, DEADLINE).await;
    assert_completed_with_png(&world.api, &task).await;
    assert_callback(&world, &id, "completed").await;
    assert_eq!(
        world.sim.stats().max_tasks_per_key,
        1,
        "task was submitted upstream twice"
    );
    // Graceful stop exits 0.
    assert_eq!(world.service.terminate(), Some(0));
}

#[actix_web::test]
async fn sqlite_default_edit_outfit_complete_with_callbacks() {
    full_flow(Backend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_default_edit_outfit_complete_with_callbacks() {
    if skip_pg() {
        return;
    }
    full_flow(Backend::Postgres).await;
}

#[actix_web::test]
async fn mariadb_default_edit_outfit_complete_with_callbacks() {
    if skip_mysql() {
        return;
    }
    full_flow(Backend::Mysql).await;
}

#[actix_web::test]
async fn sqlite_kill9_mid_task_then_restart_completes_and_calls_back() {
    kill9_mid_task(Backend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_kill9_mid_task_then_restart_completes_and_calls_back() {
    if skip_pg() {
        return;
    }
    kill9_mid_task(Backend::Postgres).await;
}

#[actix_web::test]
async fn mariadb_kill9_mid_task_then_restart_completes_and_calls_back() {
    if skip_mysql() {
        return;
    }
    kill9_mid_task(Backend::Mysql).await;
}

/// `serve --api-only` and `serve --workers-only` split the service: a task
/// created through the API-only process is run by the workers-only one.
#[actix_web::test]
async fn api_only_and_workers_only_processes_share_the_work() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(
        SimConfig {
            task_duration: Duration::from_millis(500),
            api_key: Some("split-key".into()),
            ..SimConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let env = modelgen_e2e::fast_env(&db, dir.path(), &sim.base_url(), "split-key", &[]);
    let api_service =
        Service::start_with_args(dir.path(), env.clone(), &["serve", "--api-only"]).await;
    let api = Api::new(api_service.base_url());
    let (status, body) = api
        .post("/models/default", &json!({"user_id": "split", "user_image": fixture_data_uri("person_front.jpg"), "body_profile": body_profile()}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["data"]["task_id"].as_str().unwrap().to_string();
    // Nobody runs it yet: the API-only process has no workers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, view) = api.get(&format!("/tasks/{id}")).await;
    assert_eq!(
        view["data"]["status"], "submitted",
        "an api-only process ran a task"
    );
    assert_eq!(sim.stats().submit_requests, 0);
    // A workers-only process (its port serves only the probes) picks it up.
    let mut workers = modelgen_e2e::spawn_workers_only(dir.path(), env);
    let task = api.wait_terminal(&id, DEADLINE).await;
    assert_eq!(task["status"], "completed", "{task}");
    let _ = workers.kill();
    let _ = workers.wait();
}

/// The built-in simulator (no `APIMART_API_KEY`) keeps its tasks beside the
/// data: a long task survives a graceful restart and a kill -9 of the
/// service that runs it, and completes, instead of failing with
/// "apimart task not found".
#[actix_web::test]
async fn builtin_simulator_keeps_long_tasks_across_restarts() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = modelgen_e2e::fast_env(
        &db,
        dir.path(),
        "http://127.0.0.1:9/v1",
        "unused",
        &[("SIM_TASK_DURATION", "6".into())],
    );
    env.retain(|(k, _)| k != "APIMART_API_KEY" && k != "APIMART_BASE_URL");
    let mut service = Service::start(dir.path(), env).await;
    let api = Api::new(service.base_url());
    let state = std::path::Path::new(db.url.trim_start_matches("sqlite://"))
        .parent()
        .unwrap()
        .join("apimart-sim")
        .join(apimart_sim::STATE_FILE);

    for (round, crash) in [("graceful", false), ("crash", true)] {
        let (status, body) = api
            .post(
                "/models/default",
                &json!({"user_id": format!("u-{round}"), "user_image": fixture_data_uri("person_front.jpg"),
                        "body_profile": body_profile()}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let id = body["data"]["task_id"].as_str().unwrap().to_string();
        // Running upstream (the built-in simulator), far from done: accepted
        // (`submitted_at` set); its first poll comes only at the upstream's
        // estimate, so it may still show `submitted`.
        wait_for(
            &format!("task {id} accepted upstream"),
            DEADLINE,
            || async {
                let (_, body) = api.get(&format!("/tasks/{id}")).await;
                body["data"]["submitted_at"].is_string().then_some(())
            },
        )
        .await;
        assert!(state.exists(), "no simulator state at {}", state.display());
        if crash {
            service.restart().await;
        } else {
            assert_eq!(service.terminate(), Some(0), "{}", service.log_tail(30));
            service.restart().await;
        }
        let task = api.wait_terminal(&id, DEADLINE).await;
        assert_eq!(
            task["status"],
            "completed",
            "{round}: {task}\n{}",
            service.log_tail(40)
        );
        assert_completed_with_png(&api, &task).await;
    }
    assert!(
        !service.log_text().contains("not found"),
        "{}",
        service.log_tail(40)
    );
    assert_eq!(service.terminate(), Some(0));
}

/// The built-in simulator's result URLs download (the service allows exactly its address),
/// and a completed task whose result URL points at another loopback address fails at once
/// without a connection there; an HTML 502 from upstream is stored as a short plain
/// message (docs/outbound.md).
#[actix_web::test]
async fn builtin_simulator_is_the_only_internal_address_downloads_reach() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let forbidden = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forbidden_addr = forbidden.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok(_conn) = forbidden.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });

    let db = TestDb::fresh(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = modelgen_e2e::fast_env(
        &db,
        dir.path(),
        "http://127.0.0.1:9/v1",
        "unused",
        &[("SIM_TASK_DURATION", "0.3".into())],
    );
    env.retain(|(k, _)| {
        k != "APIMART_API_KEY" && k != "APIMART_BASE_URL" && k != "OUTBOUND_ALLOWLIST"
    });
    let mut service = Service::start(dir.path(), env).await;
    let api = Api::new(service.base_url());

    let (status, body) = api
        .post(
            "/models/default",
            &json!({"user_id": "u-ssrf", "user_image": fixture_data_uri("person_front.jpg"),
                    "body_profile": body_profile()}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let base = body["data"]["task_id"].as_str().unwrap().to_string();
    let task = api.wait_terminal(&base, DEADLINE).await;
    assert_eq!(
        task["status"],
        "completed",
        "{task}\n{}",
        service.log_tail(30)
    );

    for (marker, want) in [
        (
            format!("[[sim:result-addr={forbidden_addr}]]"),
            format!("result image URL refused: host 127.0.0.1: {forbidden_addr} is a loopback address"),
        ),
        (
            "[[sim:submit=502,body=html]]".to_owned(),
            "apimart: upstream server error (HTTP 502 Bad Gateway): 502 Bad Gateway apimart-sim proxy"
                .to_owned(),
        ),
    ] {
        let (status, body) = api
            .post(
                "/models/edit",
                &json!({"user_id": "u-ssrf", "base_model_task_id": base,
                        "edit_instructions": format!("smile {marker}")}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let id = body["data"]["task_id"].as_str().unwrap().to_string();
        let task = api.wait_terminal(&id, DEADLINE).await;
        assert_eq!(task["status"], "failed", "{marker}: {task}");
        let message = task["error_message"].as_str().unwrap();
        assert!(message.starts_with(&want), "{marker}: {message}");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "the forbidden listener was reached"
    );
    assert_eq!(service.terminate(), Some(0));
}
