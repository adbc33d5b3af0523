//! Another process holding the SQLite write lock longer than
//! `DATABASE_CALL_TIMEOUT` (a backup, an `sqlite3` shell, a stalled disk)
//! makes the engine's database calls fail while it lasts, and nothing more:
//! once the lock is released both engine loops go round again, tasks are
//! submitted and completed, and callbacks are delivered. A SQLite call cut
//! off at its deadline used to panic inside diesel-async (its blocking-call
//! wrapper waits with `block_in_place`, which panics on actix's
//! current-thread runtime) and killed both loops for good
//! (docs/design.md, "Database timeouts").

use std::time::Duration;

use apimart_sim::{SimConfig, Simulator};
use diesel::Connection as _;
use diesel::connection::SimpleConnection as _;
use modelgen_e2e::{
    Api, Backend, CallbackReceiver, DEADLINE, Service, TestDb, fixture_data_uri, wait_for,
};
use serde_json::json;

const SIM_KEY: &str = "lock-key";
/// Longer than the call timeout (1 s) and than one busy wait (2 s).
const LOCK_HELD: Duration = Duration::from_secs(5);

#[actix_web::test]
async fn the_engine_goes_on_after_a_sqlite_lock_held_past_the_call_timeout() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(
        SimConfig {
            task_duration: Duration::from_millis(300),
            estimated_time: Duration::from_millis(300),
            api_key: Some(SIM_KEY.into()),
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
        SIM_KEY,
        &[
            ("CALLBACK_URL", receiver.url()),
            // Each statement waits for the lock up to 2 s, past the 1 s call
            // deadline: the calls run into their deadline while it is held.
            ("DATABASE_CALL_TIMEOUT", "1".into()),
            ("DATABASE_STATEMENT_TIMEOUT", "2".into()),
        ],
    );
    let mut service = Service::start(dir.path(), env).await;
    let api = Api::new(service.base_url());

    // The lock, from outside the service, on a thread of its own.
    let path = db.url.strip_prefix("sqlite://").unwrap().to_owned();
    let holder = std::thread::spawn(move || {
        let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
        conn.batch_execute("BEGIN EXCLUSIVE").unwrap();
        std::thread::sleep(LOCK_HELD);
        conn.batch_execute("COMMIT").unwrap();
    });
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    let log = service.log_text();
    assert!(
        log.contains("claiming tasks failed"),
        "the engine's claims never met the lock:\n{log}"
    );

    // Released: a new task goes all the way, callback included.
    let (status, body) = api
        .post(
            "/models/default",
            &json!({"user_id": "lock", "user_image": fixture_data_uri("person_front.jpg"), "body_profile": {}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let task_id = body["data"]["task_id"].as_str().unwrap().to_owned();
    let done = wait_for("the task to complete after the lock", DEADLINE, || {
        let api = &api;
        let task_id = &task_id;
        async move {
            let (_, view) = api.get(&format!("/tasks/{task_id}")).await;
            (view["data"]["status"] == "completed").then_some(view)
        }
    })
    .await;
    assert_eq!(done["data"]["progress"], 100);
    wait_for("its callback", DEADLINE, || {
        let delivered = receiver.delivered_for(&task_id);
        async move { (!delivered.is_empty()).then_some(()) }
    })
    .await;
    let log = service.log_text();
    assert!(!log.contains("panicked"), "a panic in the service:\n{log}");
    service.terminate();
}
