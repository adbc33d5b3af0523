//! What Replicate-, fal.ai- and FASHN-style clients expect on the wire
//! (issue 13): waiting for a result without a loop (`?wait=N`,
//! `Prefer: wait=N`), a callback URL per task, rate-limit headers on the
//! creates, and `Retry-After` on every 429 and 503. Real HTTP on loopback,
//! real databases and the simulator.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::time::{Duration, Instant};

use modelgen_e2e::Backend;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{AppOptions, TestApp, body_profile, spawn_app, spawn_app_allowing, tiny_png};

/// A bound on how long a woken wait may take to answer: far below the
/// `wait` asked for (60 s), so only a wake-up can make it in time.
const WOKEN_WITHIN: Duration = Duration::from_secs(20);

fn opts(extra: &[(&str, &str)]) -> AppOptions {
    AppOptions {
        extra: extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// `GET {base}/tasks/{id}{query}` with `headers`, in the background →
/// (status, `Preference-Applied`, body).
fn get_held(
    base: &str,
    id: &str,
    query: &str,
    headers: &[(&'static str, &'static str)],
) -> JoinHandle<(u16, Option<String>, Value)> {
    let url = format!("{base}/tasks/{id}{query}");
    let headers: Vec<_> = headers.to_vec();
    tokio::spawn(async move {
        let mut request = reqwest::Client::new().get(url);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let applied = response
            .headers()
            .get("preference-applied")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, applied, response.json().await.unwrap())
    })
}

/// Waits until `engine` holds `n` waiters.
async fn until_held(engine: &modelgen_api::engine::Engine, n: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    while engine.waiters.held() != n {
        assert!(Instant::now() < end, "never {n} waiters held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Drives `app`'s engine (its task loop only) until `id` is terminal in the
/// database, without reading it through HTTP.
async fn drive(app: &TestApp, id: &str) {
    let id: modelgen_domain::TaskId = id.parse().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        app.engine.run_once().await.unwrap();
        let task = modelgen_persistence::TaskRepository::get_task(&app.db, &id)
            .await
            .unwrap();
        if task.status.is_terminal() {
            return;
        }
        assert!(Instant::now() < end, "task {id} did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_held_wait_answers_when_its_task_completes() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let id = app.create_default("w1").await;
    let held = get_held(&app.base, &id, "?wait=60", &[]);
    until_held(&app.engine, 1).await;
    assert!(!held.is_finished(), "answered before the task finished");
    drive(&app, &id).await;
    let (status, applied, body) = tokio::time::timeout(WOKEN_WITHIN, held)
        .await
        .expect("the completion woke the wait")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "completed", "{body}");
    assert_eq!(applied.as_deref(), Some("wait=60"));
    assert_eq!(app.engine.waiters.held(), 0);
}

#[tokio::test]
async fn another_tasks_change_does_not_end_a_wait() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let waited = app.create_default("w2").await;
    let other = app.create_default("w2").await;
    let mut held = get_held(
        &app.base,
        &waited,
        "",
        &[("Prefer", "respond-async, wait=60")],
    );
    until_held(&app.engine, 1).await;
    let (status, body) = app
        .post(&format!("/tasks/{other}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut held)
            .await
            .is_err(),
        "the other task's cancel ended the wait"
    );
    assert_eq!(app.engine.waiters.held(), 1);
    // Its own change ends it.
    let (status, body) = app
        .post(&format!("/tasks/{waited}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, applied, body) = tokio::time::timeout(WOKEN_WITHIN, held)
        .await
        .expect("the cancel woke the wait")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["data"]["status"], "cancelled", "{body}");
    assert_eq!(applied.as_deref(), Some("wait=60"));
}

#[tokio::test]
async fn a_wait_is_cut_to_max_wait_and_bad_waits_are_refused() {
    let app = spawn_app(Backend::Sqlite, opts(&[("max_wait", "1")])).await;
    let id = app.create_default("w3").await;
    // Nothing drives the task: the wait runs out and answers the current view.
    let (status, applied, body) = get_held(&app.base, &id, "?wait=999", &[]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "submitted");
    assert_eq!(applied.as_deref(), Some("wait=1"), "cut to MAX_WAIT");
    // wait=0 is no wait, and no preference is applied.
    let (_, applied, _) = get_held(&app.base, &id, "?wait=0", &[]).await.unwrap();
    assert_eq!(applied, None);
    for (query, header, field) in [
        ("?wait=abc", None, "wait"),
        ("?wait=-1", None, "wait"),
        ("?wait=1.5", None, "wait"),
        ("", Some("wait=soon"), "Prefer"),
    ] {
        let headers: Vec<(&'static str, &'static str)> =
            header.map(|h| vec![("Prefer", h)]).unwrap_or_default();
        let (status, applied, body) = get_held(&app.base, &id, query, &headers).await.unwrap();
        assert_eq!(status, 400, "{query} {header:?}: {body}");
        assert_eq!(body["code"], 1001);
        assert_eq!(body["data"]["errors"][0]["field"], field, "{body}");
        assert_eq!(applied, None);
    }
}

#[tokio::test]
async fn past_max_waiters_a_wait_answers_at_once() {
    let app = spawn_app(Backend::Sqlite, opts(&[("max_waiters", "1")])).await;
    let id = app.create_default("w4").await;
    let first = get_held(&app.base, &id, "?wait=60", &[]);
    until_held(&app.engine, 1).await;
    // The cap is reached: this one is answered without being held.
    let (status, applied, body) = get_held(&app.base, &id, "?wait=60", &[]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "submitted");
    assert_eq!(applied, None, "not held, so no preference applied");
    assert!(!first.is_finished());
    assert_eq!(app.engine.waiters.held(), 1);
    app.post(&format!("/tasks/{id}/cancel"), &json!({})).await;
    let (_, applied, body) = tokio::time::timeout(WOKEN_WITHIN, first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body["data"]["status"], "cancelled");
    assert_eq!(applied.as_deref(), Some("wait=60"));
}

#[tokio::test]
async fn on_postgresql_a_change_made_by_another_replica_wakes_the_wait() {
    if Backend::Postgres.skipped() {
        return;
    }
    let app = spawn_app(Backend::Postgres, AppOptions::default()).await;
    let replica = app.spawn_replica().await;
    let id = app.create_default("w5").await;
    // Held on the replica, whose engine never runs: only the other
    // replica's NOTIFY can wake it before the minute is out.
    let held = get_held(&replica.base, &id, "?wait=60", &[]);
    until_held(&replica.engine, 1).await;
    drive(&app, &id).await;
    let (status, applied, body) = tokio::time::timeout(WOKEN_WITHIN, held)
        .await
        .expect("the other replica's change woke the wait")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "completed", "{body}");
    assert_eq!(applied.as_deref(), Some("wait=60"));
}

async fn create_with_callback(app: &TestApp, user: &str, url: &str) -> (u16, Value) {
    app.post(
        "/models/default",
        &json!({"user_id": user, "request_id": "cb-1", "user_image": tiny_png(),
                "body_profile": body_profile(), "callback_url": url}),
    )
    .await
}

#[tokio::test]
async fn per_task_callback_urls_are_refused_without_an_allow_list() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let (status, body) = create_with_callback(&app, "cb0", "https://java.example.com/cb").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 1001);
    assert_eq!(body["data"]["errors"][0]["field"], "callback_url");
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .contains("CALLBACK_URL_ALLOWED_HOSTS is empty"),
        "{body}"
    );
    assert_eq!(app.count_tasks("cb0").await, 0, "nothing stored");
}

#[tokio::test]
async fn a_per_task_callback_url_goes_to_its_own_receiver_and_obeys_the_rules() {
    let default = MockServer::start().await;
    let own = MockServer::start().await;
    for server in [&default, &own] {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(server)
            .await;
    }
    let default_url = format!("{:?}", format!("{}/hook", default.uri()));
    let app = spawn_app_allowing(
        Backend::Sqlite,
        opts(&[
            ("callback_url", &default_url),
            ("callback_url_allowed_hosts", "\"127.0.0.1\""),
        ]),
        &[*own.address()],
    )
    .await;
    let own_url = format!("{}/own?k=1", own.uri());

    // Refused: a host not on the list; a listed host on an address the
    // outbound policy refuses (loopback, not in OUTBOUND_ALLOWLIST); not http(s).
    let refused = [
        (
            format!("http://localhost:{}/cb", own.address().port()),
            "not one of",
        ),
        ("http://127.0.0.1:9/cb".to_owned(), "OUTBOUND_ALLOWLIST"),
        ("ftp://127.0.0.1/cb".to_owned(), "http"),
    ];
    for (url, why) in refused {
        let (status, body) = create_with_callback(&app, "cb1", &url).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["data"]["errors"][0]["field"], "callback_url", "{body}");
        assert!(body["msg"].as_str().unwrap().contains(why), "{url}: {body}");
    }
    assert_eq!(app.count_tasks("cb1").await, 0, "nothing stored");

    let (status, body) = create_with_callback(&app, "cb1", &own_url).await;
    assert_eq!(status, 202, "{body}");
    let id = body["data"]["task_id"].as_str().unwrap().to_owned();
    // A replay compares the URL too.
    let (status, body) = create_with_callback(&app, "cb1", &own_url).await;
    assert_eq!(status, 200, "same payload: a replay: {body}");
    let other = format!("{}/elsewhere", own.uri());
    let (status, body) = create_with_callback(&app, "cb1", &other).await;
    assert_eq!(status, 409, "another URL under the same key: {body}");

    let view = app.drive_until_terminal(&id).await;
    assert_eq!(view["status"], "completed");
    assert_eq!(view["callback_url"], own_url.as_str());
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        app.engine.deliver_due_callbacks().await.unwrap();
        let got = own.received_requests().await.unwrap();
        if let Some(request) = got.first() {
            assert_eq!(request.url.path(), "/own");
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            assert_eq!(body["task_id"], id.as_str());
            break;
        }
        assert!(Instant::now() < end, "the task's own receiver got nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        default.received_requests().await.unwrap().is_empty(),
        "CALLBACK_URL must not get this task's callback"
    );
    // A task without its own URL still goes to CALLBACK_URL, and its view says null.
    let plain = app.create_default("cb2").await;
    let view = app.drive_until_terminal(&plain).await;
    assert_eq!(view["callback_url"], Value::Null);
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn creates_carry_rate_limit_headers_and_a_429_carries_retry_after() {
    let app = spawn_app(Backend::Sqlite, opts(&[("max_queued_tasks", "2")])).await;
    let create = || {
        app.client
            .post(format!("{}/models/default", app.base))
            .json(
                &json!({"user_id": "rl", "user_image": tiny_png(), "body_profile": body_profile()}),
            )
            .send()
    };
    for remaining in ["1", "0"] {
        let response = create().await.unwrap();
        assert_eq!(response.status(), 202);
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("2"));
        assert_eq!(
            header(&response, "ratelimit-remaining").as_deref(),
            Some(remaining)
        );
        let reset: u64 = header(&response, "ratelimit-reset")
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset >= 1, "a queued task takes time to drain");
    }
    let response = create().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after = header(&response, "retry-after").expect("Retry-After on the 429");
    assert!(retry_after.parse::<u64>().unwrap() >= 1);
    assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(
        header(&response, "ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(header(&response, "ratelimit-reset"), Some(retry_after));
    // Without a limit there is nothing to report.
    let unlimited = spawn_app(Backend::Sqlite, opts(&[("max_queued_tasks", "0")])).await;
    let response = unlimited
        .client
        .post(format!("{}/models/default", unlimited.base))
        .json(&json!({"user_id": "rl", "user_image": tiny_png(), "body_profile": body_profile()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(header(&response, "ratelimit-limit"), None);
}

#[tokio::test]
async fn readiness_503_carries_retry_after() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    // The blob store cannot take writes: a file where its directory was.
    let dir = app.storage_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::write(&dir, b"not a directory").unwrap();
    let response = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(header(&response, "retry-after").as_deref(), Some("5"));
}
