//! Callbacks survive a receiver outage that lasts several retry intervals,
//! and a `kill -9` of the service in the middle of it: the outbox keeps
//! retrying with backoff, and once the receiver is back every callback
//! arrives, under one `webhook-id` per task across all attempts.
//!
//! Spacing: the retry delays use full jitter (a delay is uniform in
//! `[0, min(cap, base·2^(n-1))]`), so one gap being shorter than an earlier
//! one is normal and a timing comparison between single gaps would be flaky.
//! The test asserts instead on what the outbox records (`modelgen callbacks
//! list`: attempts, status, last error), and prints the observed gaps.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::HashMap;
use std::time::Duration;

use apimart_sim::{SimConfig, Simulator};
use modelgen_e2e::{
    Api, Backend, CallbackReceiver, DEADLINE, Received, Service, TestDb, png_data_uri, skip_mysql,
    skip_pg, wait_for,
};
use serde_json::{Value, json};

const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SIM_KEY: &str = "outage-key";
const TASKS: usize = 3;
/// Failed deliveries per task the receiver must see before it comes back: with
/// `CALLBACK_BASE_DELAY` 0.2 s that spans the 0.2, 0.4 and 0.8 s retry ceilings.
const FAILED_BEFORE_RESTART: usize = 4;

fn webhook_id(r: &Received) -> &str {
    r.headers
        .get("webhook-id")
        .map(String::as_str)
        .unwrap_or("")
}

/// Every request the receiver got for `task_id`, in arrival order.
fn attempts_for<'a>(received: &'a [Received], task_id: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|r| r.body["task_id"] == task_id)
        .collect()
}

fn outbox_row<'a>(rows: &'a [Value], task_id: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["task_id"] == task_id)
}

async fn outage(backend: Backend) {
    let db = TestDb::fresh(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(
        SimConfig {
            task_duration: Duration::from_millis(800),
            estimated_time: Duration::from_millis(800),
            api_key: Some(SIM_KEY.into()),
            ..SimConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let receiver = CallbackReceiver::start().await;
    receiver.set_down(true);
    let env = modelgen_e2e::fast_env(
        &db,
        dir.path(),
        &sim.base_url(),
        SIM_KEY,
        &[
            ("CALLBACK_URL", receiver.url()),
            ("CALLBACK_SIGNING_SECRET", SIGNING_SECRET.into()),
            ("CALLBACK_BASE_DELAY", "0.2".into()),
            ("CALLBACK_MAX_DELAY", "1".into()),
        ],
    );
    let mut service = Service::start(dir.path(), env).await;
    let api = Api::new(service.base_url());

    // Three tasks complete while the receiver answers 503 to everything.
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let (status, body) = api
            .post(
                "/models/default",
                &json!({
                    "user_id": "u-outage", "request_id": format!("outage-{i}"),
                    "user_image": png_data_uri(i as u32),
                    "body_profile": {"gender": "female", "height_cm": 160 + i, "weight_kg": 50, "age": 30, "skin_tone": "light"},
                }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["data"]["task_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let task = api.wait_terminal(id, DEADLINE).await;
        assert_eq!(task["status"], "completed", "{task}");
    }

    // Several retry intervals pass: at least 4 refused attempts per task, and
    // the outbox has recorded them.
    wait_for("4 refused deliveries per task", DEADLINE, || async {
        let got = receiver.received();
        ids.iter()
            .all(|id| {
                attempts_for(&got, id)
                    .iter()
                    .filter(|r| r.status == 503)
                    .count()
                    >= FAILED_BEFORE_RESTART
            })
            .then_some(())
    })
    .await;
    assert!(
        receiver.received().iter().all(|r| r.status == 503),
        "nothing may be delivered while the receiver is down"
    );
    let before_kill = wait_for("the outbox records the attempts", DEADLINE, || async {
        let rows = service.callbacks_list().await;
        ids.iter()
            .all(|id| {
                outbox_row(&rows, id).is_some_and(|r| {
                    r["status"] == "pending"
                        && r["attempts"].as_i64().unwrap_or(0) >= FAILED_BEFORE_RESTART as i64
                })
            })
            .then_some(rows)
    })
    .await;
    for id in &ids {
        let row = outbox_row(&before_kill, id).unwrap();
        assert_eq!(row["last_error"], "HTTP 503", "{row}");
        assert!(row["delivered_at"].is_null(), "{row}");
    }

    // Durability: kill -9 during the outage. The restarted process resumes
    // the pending rows and keeps retrying while the receiver is still down.
    service.kill9();
    let refused_at_kill: HashMap<&str, usize> = {
        let got = receiver.received();
        ids.iter()
            .map(|id| (id.as_str(), attempts_for(&got, id).len()))
            .collect()
    };
    service.restart().await;
    wait_for("refused deliveries after the restart", DEADLINE, || async {
        let got = receiver.received();
        ids.iter()
            .all(|id| attempts_for(&got, id).len() > refused_at_kill[id.as_str()])
            .then_some(())
    })
    .await;

    // The receiver comes back: every callback arrives.
    receiver.set_down(false);
    for id in &ids {
        wait_for(&format!("2xx callback for {id}"), DEADLINE, || async {
            (!receiver.delivered_for(id).is_empty()).then_some(())
        })
        .await;
    }
    let after = wait_for("the outbox marks every row delivered", DEADLINE, || async {
        let rows = service.callbacks_list().await;
        ids.iter()
            .all(|id| outbox_row(&rows, id).is_some_and(|r| r["status"] == "delivered"))
            .then_some(rows)
    })
    .await;

    let received = receiver.received();
    let secret = modelgen_callback::SigningSecret::parse(SIGNING_SECRET).unwrap();
    for id in &ids {
        let attempts = attempts_for(&received, id);
        let event = webhook_id(attempts[0]).to_string();
        assert!(event.starts_with("evt_"), "webhook-id {event:?}");
        // One event, one id, across every attempt, before and after the kill.
        assert!(
            attempts.iter().all(|r| webhook_id(r) == event),
            "task {id}: webhook-ids {:?}",
            attempts.iter().map(|r| webhook_id(r)).collect::<Vec<_>>()
        );
        for r in &attempts {
            let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
            let now =
                r.at.duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
            modelgen_callback::verify(
                &secret,
                &event,
                ts,
                &r.raw,
                &r.headers["webhook-signature"],
                now,
                300,
            )
            .expect("signature verifies");
        }
        let refused = attempts.iter().filter(|r| r.status == 503).count();
        let delivered = attempts.iter().filter(|r| r.status == 200).count();
        assert!(
            refused > FAILED_BEFORE_RESTART,
            "task {id}: {refused} refused"
        );
        assert!(delivered >= 1, "task {id}: not delivered");
        let delivered_body = &attempts.iter().find(|r| r.status == 200).unwrap().body;
        assert_eq!(delivered_body["status"], "completed");
        assert_eq!(delivered_body["task_id"], id.as_str());

        // The outbox agrees: one row per task, the same event id, delivered,
        // after more attempts than before the kill. A kill can cut at most one
        // in-flight attempt per row before it was recorded, so the receiver may
        // have seen one request more than the row counts.
        let row = outbox_row(&after, id).unwrap();
        assert_eq!(row["event_id"], event.as_str(), "{row}");
        assert!(row["delivered_at"].is_string(), "{row}");
        let recorded = row["attempts"].as_i64().unwrap();
        let before = outbox_row(&before_kill, id).unwrap()["attempts"]
            .as_i64()
            .unwrap();
        assert!(
            recorded > before,
            "task {id}: {recorded} attempts recorded, {before} before the kill"
        );
        let seen = attempts.len() as i64;
        assert!(
            seen == recorded || seen == recorded + 1,
            "task {id}: receiver saw {seen} requests, the outbox recorded {recorded} attempts"
        );
        assert_eq!(
            after.iter().filter(|r| r["task_id"] == id.as_str()).count(),
            1,
            "one outbox row per terminal event"
        );

        let gaps: Vec<String> = attempts
            .windows(2)
            .map(|w| {
                let gap = w[1].at.duration_since(w[0].at).unwrap_or_default();
                format!("{:.2}", gap.as_secs_f64())
            })
            .collect();
        println!(
            "{backend:?} {id}: {} attempts ({refused} refused, {delivered} delivered), outbox attempts {recorded}, gaps (s) {gaps:?}",
            attempts.len()
        );
    }
    assert_eq!(service.terminate(), Some(0));
    sim.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn callbacks_arrive_after_a_receiver_outage_longer_than_several_retry_intervals() {
    outage(Backend::Sqlite).await;
}

#[actix_web::test]
async fn callbacks_arrive_after_a_receiver_outage_longer_than_several_retry_intervals_on_postgres()
{
    if skip_pg() {
        println!("MODELGEN_SKIP_PG=1: PostgreSQL variant skipped");
        return;
    }
    outage(Backend::Postgres).await;
}

#[actix_web::test]
async fn callbacks_arrive_after_a_receiver_outage_longer_than_several_retry_intervals_on_mariadb() {
    if skip_mysql() {
        println!("MODELGEN_SKIP_MYSQL=1: MariaDB variant skipped");
        return;
    }
    outage(Backend::Mysql).await;
}
