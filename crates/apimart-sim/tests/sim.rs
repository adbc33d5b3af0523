//! End-to-end tests of the simulator over real HTTP on 127.0.0.1 (port 0 per test).
#![expect(clippy::unwrap_used, reason = "a panic is how a test fails")]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::Path;

use apimart_sim::{ShapeMode, SimConfig, SimError, SimHandle, SimStats, Simulator, StoreError};
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PERSON: &[u8] = include_bytes!("fixtures/person_front.jpg");
const GARMENT: &[u8] = include_bytes!("fixtures/object.jpg");
const KEY: &str = "test-key";
/// Upper bound for any wait on the simulator; generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(20);

struct TestSim {
    handle: SimHandle,
    http: reqwest::Client,
    base: String,
}

fn config(duration_ms: u64) -> SimConfig {
    SimConfig {
        task_duration: Duration::from_millis(duration_ms),
        estimated_time: Duration::from_millis(duration_ms),
        image_long_side: 256,
        ..SimConfig::default()
    }
}

async fn spawn(config: SimConfig) -> TestSim {
    wrap(Simulator::start(config, 0).await.unwrap())
}

/// A simulator keeping its state in `dir` (on its remembered port when free).
async fn spawn_in(config: SimConfig, dir: &Path) -> TestSim {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    wrap(Simulator::start_persistent(config, any, dir).await.unwrap())
}

fn wrap(handle: SimHandle) -> TestSim {
    let base = handle.base_url();
    assert_eq!(base, format!("http://127.0.0.1:{}/v1", handle.port()));
    TestSim {
        handle,
        http: reqwest::Client::new(),
        base,
    }
}

fn body(prompt: &str) -> Value {
    json!({"model": "gemini-2.5-flash-image-preview", "prompt": prompt, "size": "1:1", "n": 1})
}

fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The task id from either documented submit shape.
fn task_id(v: &Value) -> String {
    assert_eq!(v["code"], 200, "{v}");
    match &v["data"] {
        Value::Array(items) => {
            assert_eq!(items[0]["status"], "submitted");
            items[0]["task_id"].as_str().unwrap().to_owned()
        }
        Value::Object(o) => {
            assert_eq!(o["object"], "image.generation.task");
            assert_eq!(o["status"], "pending");
            o["id"].as_str().unwrap().to_owned()
        }
        other => panic!("unexpected data {other}"),
    }
}

/// Result URLs from either documented `url` form.
fn urls(data: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for img in data["result"]["images"].as_array().unwrap() {
        assert!(img["expires_at"].as_u64().is_some(), "{img}");
        match &img["url"] {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => out.extend(a.iter().map(|u| u.as_str().unwrap().to_owned())),
            other => panic!("unexpected url {other}"),
        }
    }
    out
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl TestSim {
    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/images/generations", self.base))
            .bearer_auth(KEY)
            .json(body)
    }

    async fn submit(&self, body: &Value) -> String {
        let resp = self.post(body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        task_id(&resp.json().await.unwrap())
    }

    fn get_task(&self, id: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}/tasks/{id}", self.base))
            .bearer_auth(KEY)
    }

    async fn poll(&self, id: &str) -> Value {
        let resp = self.get_task(id).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], 200);
        v["data"].clone()
    }

    /// Polls until `done(data)` holds; returns every observed `data` in order.
    async fn poll_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let data = self.poll(id).await;
            let finished = done(&data);
            seen.push(data);
            if finished {
                return seen;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "condition not reached: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    async fn wait_terminal(&self, id: &str) -> Value {
        let seen = self
            .poll_until(id, |d| {
                matches!(
                    d["status"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                )
            })
            .await;
        seen.last().unwrap().clone()
    }

    async fn png(&self, url: &str) -> Vec<u8> {
        let resp = self.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
        let bytes = resp.bytes().await.unwrap().to_vec();
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        bytes
    }

    async fn balance(&self, path: &str, key: &str, fault: Option<&str>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .get(self.base.replace("/v1", path))
            .bearer_auth(key);
        if let Some(f) = fault {
            req = req.header("X-Sim-Fault", f);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    async fn stats_json(&self) -> SimStats {
        let url = self.base.replace("/v1", "/_sim/stats");
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    (status, v["error"].clone())
}

#[tokio::test]
async fn walks_pending_processing_completed_with_monotonic_progress() {
    let sim = spawn(config(1500)).await;
    let id = sim.submit(&body("a person")).await;
    let seen = sim.poll_until(&id, |d| d["status"] == "completed").await;
    let rank = |s: &str| match s {
        "pending" => 0,
        "processing" => 1,
        "completed" => 2,
        other => panic!("unexpected status {other}"),
    };
    let mut last = (0, 0);
    for d in &seen {
        let now = (
            rank(d["status"].as_str().unwrap()),
            d["progress"].as_u64().unwrap(),
        );
        assert!(now >= last, "went backwards: {seen:?}");
        assert_eq!(d["id"], id.as_str());
        assert_eq!(d["estimated_time"], 2, "1.5 s rounds up to 2 s");
        last = now;
    }
    assert!(seen.iter().any(|d| d["status"] == "processing"), "{seen:?}");
    let done = seen.last().unwrap();
    assert_eq!(done["progress"], 100);
    assert_eq!(done["actual_time"], 2);
    assert!(done["completed"].as_u64().unwrap() >= done["created"].as_u64().unwrap());
    let expires = done["result"]["images"][0]["expires_at"].as_u64().unwrap();
    assert!(expires >= now_unix() + 23 * 3600, "24 h ttl by default");
    let urls = urls(done);
    assert_eq!(urls.len(), 1);
    let prefix = format!("http://127.0.0.1:{}/files/{id}/", sim.handle.port());
    assert!(urls[0].starts_with(&prefix), "{urls:?}");
    sim.handle.stop().await;
}

#[tokio::test]
async fn first_poll_of_a_long_task_is_pending() {
    let sim = spawn(config(100)).await;
    let id = sim.submit(&body("x [[sim:duration=20000]]")).await;
    let d = sim.poll(&id).await;
    assert_eq!(
        (d["status"].as_str(), d["progress"].as_u64()),
        (Some("pending"), Some(0))
    );
    assert_eq!(d["estimated_time"], 20, "duration= also sets the estimate");
}

#[tokio::test]
async fn result_png_composes_the_inputs_at_the_requested_ratio() {
    let sim = spawn(config(0)).await;
    let req = json!({
        "model": "m", "prompt": "A model wearing the garment, 全身照", "size": "9:16", "n": 2,
        "image_urls": [
            data_uri("image/jpeg", PERSON),
            data_uri("image/jpeg", GARMENT),
            "https://cdn.example.com/shirt.png",
            "data:image/png;base64,bm90IGEgcG5n",
        ]
    });
    let id = sim.submit(&req).await;
    let done = sim.wait_terminal(&id).await;
    assert_eq!(done["status"], "completed");
    let urls = urls(&done);
    assert_eq!(urls.len(), 2);
    let mut files = Vec::new();
    for url in &urls {
        let resp = sim.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "image/png");
        let bytes = resp.bytes().await.unwrap();
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), (144, 256), "9:16 with long side 256");
        // The photo of the person is mostly mid-tones; a blank canvas would not have many
        // distinct colours.
        let distinct: std::collections::HashSet<_> = img.pixels().map(|p| p.0).collect();
        assert!(distinct.len() > 500, "only {} colours", distinct.len());
        files.push(bytes);
    }
    assert_ne!(files[0], files[1], "each of the n images is its own file");
    // A second download is served from the cache and identical.
    let again = sim
        .http
        .get(&urls[0])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(again, files[0]);
    assert_eq!(sim.handle.stats().image_downloads, 3);
}

#[tokio::test]
async fn alternate_mode_exercises_both_submit_and_url_shapes_and_id_forms() {
    let sim = spawn(config(0)).await;
    let (mut array, mut object, mut url_str, mut url_arr, mut legacy, mut ulid) =
        (0, 0, 0, 0, 0, 0);
    for i in 0..4 {
        let resp = sim.post(&body(&format!("task {i}"))).send().await.unwrap();
        let v: Value = resp.json().await.unwrap();
        if v["data"].is_array() {
            array += 1
        } else {
            object += 1
        }
        let id = task_id(&v);
        if id.starts_with("task-unified-") {
            legacy += 1;
        } else {
            assert_eq!(id.len(), 5 + 26, "task_ + ULID: {id}");
            ulid += 1;
        }
        let done = sim.wait_terminal(&id).await;
        match &done["result"]["images"][0]["url"] {
            Value::String(_) => url_str += 1,
            Value::Array(_) => url_arr += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!((array, object, url_str, url_arr), (2, 2, 2, 2));
    assert!(legacy >= 1 && ulid >= 1);

    for (mode, is_array) in [(ShapeMode::Array, true), (ShapeMode::Object, false)] {
        sim.handle.set_config(SimConfig {
            response_shape: mode,
            ..config(0)
        });
        for _ in 0..2 {
            let v: Value = sim
                .post(&body("fixed"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["data"].is_array(), is_array, "{mode:?}: {v}");
            let done = sim.wait_terminal(&task_id(&v)).await;
            assert_eq!(done["result"]["images"][0]["url"].is_array(), is_array);
        }
    }
}

#[tokio::test]
async fn idempotency_key_replays_and_conflicts() {
    let sim = spawn(config(0)).await;
    let b = body("same");
    let first = sim
        .post(&b)
        .header("Idempotency-Key", "req-1")
        .send()
        .await
        .unwrap();
    assert!(first.headers().get("idempotency-replayed").is_none());
    let first = task_id(&first.json().await.unwrap());

    // Same logical body, keys in another order.
    let reordered: Value = serde_json::from_str(
        r#"{"n":1,"size":"1:1","prompt":"same","model":"gemini-2.5-flash-image-preview"}"#,
    )
    .unwrap();
    let replay = sim
        .post(&reordered)
        .header("Idempotency-Key", "req-1")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    assert_eq!(task_id(&replay.json().await.unwrap()), first);

    let conflict = sim
        .post(&body("different"))
        .header("Idempotency-Key", "req-1")
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(conflict).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "idempotency_key_reused");

    let bad = sim
        .post(&b)
        .header("Idempotency-Key", "has space")
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["param"], "Idempotency-Key");

    let other = sim.submit(&b).await;
    assert_ne!(other, first, "without a key every submit is a new task");

    let stats = sim.handle.stats();
    assert_eq!(
        stats,
        SimStats {
            submit_requests: 5,
            tasks_created: 2,
            idempotent_replays: 1,
            idempotency_conflicts: 1,
            submits_without_key: 1,
            max_tasks_per_key: 1,
            max_tasks_per_body: 2,
            status_requests: 0,
            image_downloads: 0,
            faults_injected: 0,
            rate_limited: 0,
            balance_requests: 0,
        }
    );
    assert_eq!(sim.stats_json().await, stats);
}

#[tokio::test]
async fn invalid_requests_are_400_naming_the_field() {
    let sim = spawn(config(0)).await;
    let ok = body("p");
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("n", json!("1")), "n"),
        (with("n", json!(5)), "n"),
        (with("size", json!("1:3")), "size"),
        (with("prompt", json!("")), "prompt"),
        (with("prompt", json!("x".repeat(4001))), "prompt"),
        (
            with("image_urls", json!(["http://insecure.example/a.png"])),
            "image_urls[0]",
        ),
        (
            with(
                "image_urls",
                json!(["https://ok.example/a.png", "not a url"]),
            ),
            "image_urls[1]",
        ),
        (with("model", json!("")), "model"),
    ];
    for (b, param) in cases {
        let (status, err) = error_of(sim.post(&b).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{param}");
        assert_eq!(err["type"], "invalid_request_error");
        assert_eq!(err["param"], param);
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(err["code"].as_str().is_some());
    }
    let not_json = sim
        .http
        .post(format!("{}/images/generations", sim.base))
        .bearer_auth(KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(not_json).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let stats = sim.handle.stats();
    assert_eq!((stats.submit_requests, stats.tasks_created), (9, 0));
}

#[tokio::test]
async fn bearer_token_is_required_and_checked() {
    let sim = spawn(SimConfig {
        api_key: Some("right".into()),
        ..config(0)
    })
    .await;
    let url = format!("{}/images/generations", sim.base);
    let b = body("p");
    let none = sim.http.post(&url).json(&b).send().await.unwrap();
    let (status, err) = error_of(none).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["type"], "authentication_error");
    let wrong = sim
        .http
        .post(&url)
        .bearer_auth("wrong")
        .json(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = sim
        .http
        .post(&url)
        .bearer_auth("right")
        .json(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    let id = task_id(&right.json().await.unwrap());
    let poll = sim
        .http
        .get(format!("{}/tasks/{id}", sim.base))
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), StatusCode::UNAUTHORIZED);

    // Without a configured key any non-empty bearer works, except the alert keys.
    sim.handle.set_config(config(0));
    let any = sim
        .http
        .post(&url)
        .bearer_auth("whatever")
        .json(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(any.status(), StatusCode::OK);
    for (key, expected, kind) in [
        ("sim-401", StatusCode::UNAUTHORIZED, "authentication_error"),
        (
            "sim-402",
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
        ),
    ] {
        let r = sim
            .http
            .post(&url)
            .bearer_auth(key)
            .json(&b)
            .send()
            .await
            .unwrap();
        let (status, err) = error_of(r).await;
        assert_eq!((status, err["type"].as_str()), (expected, Some(kind)));
        let r = sim
            .http
            .get(format!("{}/tasks/{id}", sim.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected);
    }
}

#[tokio::test]
async fn result_url_expires_after_the_ttl() {
    let sim = spawn(SimConfig {
        image_ttl: Duration::from_millis(2500),
        ..config(0)
    })
    .await;
    let id = sim.submit(&body("p")).await;
    let done = sim.wait_terminal(&id).await;
    assert!(done["result"]["images"][0]["expires_at"].as_u64().unwrap() <= now_unix() + 3);
    let url = urls(&done).remove(0);
    assert_eq!(
        sim.http.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    let start = Instant::now();
    loop {
        let status = sim.http.get(&url).send().await.unwrap().status();
        if status == StatusCode::GONE {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(start.elapsed() < DEADLINE, "URL never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The task itself is still readable after its images expired.
    assert_eq!(sim.poll(&id).await["status"], "completed");
    let missing = format!("{}/files/{id}/7.png", sim.base.trim_end_matches("/v1"));
    assert_eq!(
        sim.http.get(missing).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn unknown_task_and_route_are_404_with_error_body() {
    let sim = spawn(config(0)).await;
    let (status, err) = error_of(
        sim.get_task("task_01J00000000000000000000000")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["message"].as_str().unwrap().contains("not found"));
    let r = sim
        .http
        .get(format!("{}/nope", sim.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A file of a task that is not finished yet does not exist either.
    let id = sim.submit(&body("p [[sim:never]]")).await;
    let file = format!("{}/files/{id}/0.png", sim.base.trim_end_matches("/v1"));
    assert_eq!(
        sim.http.get(file).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn submit_faults_from_prompt_and_header() {
    let sim = spawn(config(0)).await;
    for _ in 0..2 {
        let (status, err) = error_of(
            sim.post(&body("x [[sim:submit=503]]"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err["code"], "service_unavailable");
    }
    let r = sim
        .post(&body("x"))
        .header("X-Sim-Fault", "submit=429")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    let r = sim
        .post(&body("x"))
        .header("X-Sim-Fault", "submit=502,body=text")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(r.text().await.unwrap(), "502 Bad Gateway");
    let r = sim
        .post(&body("x [[sim:submit=500,body=codemsg]]"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], 500);
    assert!(v["msg"].is_string());
    // Unknown specs are ignored.
    sim.submit(&body("x [[sim:explode,submit=200]]")).await;
    let stats = sim.handle.stats();
    assert_eq!((stats.tasks_created, stats.faults_injected), (1, 5));
}

#[tokio::test]
async fn submit_once_fails_only_the_first_attempt() {
    let sim = spawn(config(0)).await;
    let b = body("x [[sim:submit-once=500]]");
    let keyed = || sim.post(&b).header("Idempotency-Key", "once-1");
    assert_eq!(
        keyed().send().await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let ok = keyed().send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(
        ok.headers().get("idempotency-replayed").is_none(),
        "no task existed yet"
    );
    // Without a key the body identifies the attempt.
    let b2 = body("y [[sim:submit-once=503]]");
    assert_eq!(
        sim.post(&b2).send().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(sim.post(&b2).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(sim.handle.stats().tasks_created, 2);
}

#[tokio::test]
async fn lost_reply_is_recovered_by_the_idempotency_key() {
    let sim = spawn(config(0)).await;
    let b = body("x [[sim:lost=504]]");
    let keyed = || sim.post(&b).header("Idempotency-Key", "lost-1");
    assert_eq!(
        keyed().send().await.unwrap().status(),
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(
        sim.handle.stats().tasks_created,
        1,
        "accepted despite the error"
    );
    let replay = keyed().send().await.unwrap();
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    let id = task_id(&replay.json().await.unwrap());
    assert_eq!(sim.wait_terminal(&id).await["status"], "completed");
    let stats = sim.handle.stats();
    assert_eq!(
        (
            stats.tasks_created,
            stats.max_tasks_per_key,
            stats.idempotent_replays
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn fail_and_cancel_end_the_task_accordingly() {
    let sim = spawn(config(50)).await;
    let id = sim.submit(&body("x [[sim:fail]]")).await;
    let done = sim.wait_terminal(&id).await;
    assert_eq!(done["status"], "failed");
    assert!(done.get("result").is_none());
    let err = &done["error"];
    assert!(err["code"].is_string() && err["type"].is_string());
    assert!(err["message"].as_str().unwrap().is_ascii());
    let zh: Value = sim
        .http
        .get(format!("{}/tasks/{id}?language=zh", sim.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!zh["data"]["error"]["message"].as_str().unwrap().is_ascii());

    let id = sim.submit(&body("x [[sim:cancel]]")).await;
    assert_eq!(sim.wait_terminal(&id).await["status"], "cancelled");

    sim.handle.set_config(SimConfig {
        fail_rate: 1.0,
        ..config(0)
    });
    let id = sim.submit(&body("y")).await;
    assert_eq!(sim.wait_terminal(&id).await["status"], "failed");
}

#[tokio::test]
async fn status_faults_every_poll_or_first_poll() {
    let sim = spawn(config(0)).await;
    let id = sim.submit(&body("x [[sim:status=500]]")).await;
    for _ in 0..3 {
        let (status, err) = error_of(sim.get_task(&id).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err["type"], "server_error");
    }
    let id = sim.submit(&body("x [[sim:status-once=429]]")).await;
    let first = sim.get_task(&id).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(first.headers()["retry-after"], "1");
    assert_eq!(sim.poll(&id).await["status"], "completed");
    // The poll's own header can inject a fault too.
    let r = sim
        .get_task(&id)
        .header("X-Sim-Fault", "status=503")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sim.handle.stats().faults_injected, 5);
}

#[tokio::test]
async fn slow_delays_answers_past_a_client_timeout() {
    let sim = spawn(config(0)).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let id = sim.submit(&body("fast")).await;
    let ok = impatient
        .get(format!("{}/tasks/{id}", sim.base))
        .bearer_auth(KEY);
    // Control: without the fault an impatient client gets its answer (in well under 150 ms
    // on any machine able to run these tests; retried to be robust against a stall).
    let mut answered = false;
    for _ in 0..5 {
        if ok.try_clone().unwrap().send().await.is_ok() {
            answered = true;
            break;
        }
    }
    assert!(answered);
    let slow = impatient
        .get(format!("{}/tasks/{id}", sim.base))
        .bearer_auth(KEY)
        .header("X-Sim-Fault", "slow=2000")
        .send()
        .await;
    assert!(slow.unwrap_err().is_timeout());
    // slow= in the prompt delays the submit itself, after the task was created.
    let r = impatient
        .post(format!("{}/images/generations", sim.base))
        .bearer_auth(KEY)
        .header("Idempotency-Key", "slow-1")
        .json(&body("x [[sim:slow=2000]]"))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    let start = Instant::now();
    while sim.handle.stats().tasks_created < 2 {
        assert!(start.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn never_stays_processing_and_no_estimate_omits_the_estimate() {
    let sim = spawn(SimConfig {
        response_shape: ShapeMode::Object,
        ..config(60_000)
    })
    .await;
    let id = sim.submit(&body("x [[sim:never,duration=100]]")).await;
    let seen = sim.poll_until(&id, |d| d["progress"] == 99).await;
    assert!(seen.iter().all(|d| d["status"] != "completed"));
    for _ in 0..3 {
        assert_eq!(sim.poll(&id).await["status"], "processing");
    }

    let v: Value = sim
        .post(&body("x [[sim:no-estimate]]"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["data"]["task_info"].get("estimated_time").is_none(),
        "{v}"
    );
    assert_eq!(v["data"]["task_info"]["can_cancel"], true);
    let d = sim.poll(&task_id(&v)).await;
    assert!(d.get("estimated_time").is_none());

    // duration= overrides the configured 60 s.
    let id = sim.submit(&body("x [[sim:duration=0]]")).await;
    assert_eq!(sim.poll(&id).await["status"], "completed");
}

#[tokio::test]
async fn random_faults_follow_error_rate_and_config_route() {
    let sim = spawn(SimConfig {
        error_rate: 1.0,
        ..config(0)
    })
    .await;
    for _ in 0..8 {
        let r = sim.post(&body("x")).send().await.unwrap();
        assert!(
            [500, 502, 503, 429].contains(&r.status().as_u16()),
            "{}",
            r.status()
        );
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.headers()["retry-after"], "1");
        }
    }
    let s = sim.handle.stats();
    assert_eq!(
        (s.faults_injected, s.tasks_created, s.submit_requests),
        (8, 0, 8)
    );

    let cfg_url = sim.base.replace("/v1", "/_sim/config");
    let r = sim
        .http
        .post(&cfg_url)
        .json(&json!({"error_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = sim
        .http
        .post(&cfg_url)
        .json(&json!({"bogus": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let view: Value = sim
        .http
        .post(&cfg_url)
        .json(&json!({"error_rate": 0.0, "task_duration_ms": 250}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["error_rate"], 0.0);
    assert_eq!(view["task_duration_ms"], 250);
    assert_eq!(view["estimated_time_ms"], 250);
    assert_eq!(
        sim.handle.config().task_duration,
        Duration::from_millis(250)
    );
    let id = sim.submit(&body("x")).await;
    assert_eq!(sim.wait_terminal(&id).await["status"], "completed");
}

#[tokio::test]
async fn stop_closes_the_port() {
    let sim = spawn(config(0)).await;
    let url = format!("{}/tasks/x", sim.base);
    assert_eq!(
        sim.http
            .get(&url)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    sim.handle.stop().await;
    let fresh = reqwest::Client::new();
    assert!(fresh.get(&url).send().await.unwrap_err().is_connect());
}

mod robustness {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            Just(Value::from("data:image/png;base64,iVBORw0KGgo=")),
            Just(Value::from("https://x.example/a.jpg")),
            Just(Value::from("16:9")),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("model".to_owned()),
                        Just("prompt".to_owned()),
                        Just("size".to_owned()),
                        Just("n".to_owned()),
                        Just("image_urls".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn spec() -> impl Strategy<Value = String> {
        let item = prop_oneof![
            "(submit|submit-once|lost|status|status-once)=[0-9]{1,4}",
            "(slow|duration)=[0-9]{1,2}",
            "(fail|cancel|never|no-estimate|body=text|body=success)",
            "[ -~]{0,8}",
        ];
        proptest::collection::vec(item, 0..4).prop_map(|v| v.join(","))
    }

    /// Random bodies, prompts with markers and fault headers never break the server:
    /// every request gets an HTTP answer and a clean request still works afterwards.
    #[test]
    fn random_requests_never_crash_the_handlers() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sim = rt.block_on(spawn(config(0)));
        let cases = ProptestConfig::with_cases(96);
        proptest!(cases, |(raw in json_value(), prompt in "\\PC{0,30}", marker in spec(),
                         header in spec(), n in 0i64..6)| {
            rt.block_on(async {
                let mut b = body(&format!("{prompt}[[sim:{marker}]]"));
                b["n"] = json!(n);
                b["extra"] = raw.clone();
                for candidate in [raw.clone(), b] {
                    let r = sim.post(&candidate).header("X-Sim-Fault", header.as_str()).send().await;
                    let r = r.unwrap();
                    let status = r.status().as_u16();
                    prop_assert!((200..600).contains(&status));
                    if status == 200 {
                        let v: Value = r.json().await.unwrap();
                        let id = task_id(&v);
                        let poll = sim.get_task(&id).header("X-Sim-Fault", header.as_str()).send().await;
                        prop_assert!(poll.is_ok());
                    }
                }
                Ok::<(), TestCaseError>(())
            })?;
        });
        rt.block_on(async {
            let id = sim.submit(&body("still alive")).await;
            assert_eq!(sim.wait_terminal(&id).await["status"], "completed");
        });
    }
}

/// The simulator also runs inside an actix system (as in `#[actix_web::test]` suites).
#[actix_web::test]
async fn runs_under_the_actix_runtime_too() {
    let sim = spawn(config(0)).await;
    let id = sim.submit(&body("actix")).await;
    assert_eq!(sim.wait_terminal(&id).await["status"], "completed");
    sim.handle.stop().await;
}

// ---------------------------------------------------------------- durable state

/// The PNG's distinct colours: a drawn photo has hundreds, a placeholder a handful.
fn colours(png: &[u8]) -> usize {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    img.pixels()
        .map(|p| p.0)
        .collect::<std::collections::HashSet<_>>()
        .len()
}

#[tokio::test]
async fn a_restarted_simulator_keeps_its_tasks_keys_faults_and_results() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn_in(config(0), dir.path()).await;
    assert_eq!(sim.handle.state_dir(), Some(dir.path()));
    let port = sim.handle.port();

    // A long task with a photo, under an idempotency key.
    let long = json!({"model": "m", "prompt": "long one [[sim:duration=1500]]", "size": "3:4",
                      "n": 1, "image_urls": [data_uri("image/jpeg", PERSON)]});
    let resp = sim
        .post(&long)
        .header("Idempotency-Key", "keep-1")
        .send()
        .await
        .unwrap();
    let long_id = task_id(&resp.json().await.unwrap());
    assert_ne!(sim.poll(&long_id).await["status"], "completed");
    // A finished task whose result was downloaded before the restart.
    let done_req = json!({"model": "m", "prompt": "done", "size": "1:1", "n": 1,
                          "image_urls": [data_uri("image/jpeg", GARMENT)]});
    let done_id = sim.submit(&done_req).await;
    let done_urls = urls(&sim.wait_terminal(&done_id).await);
    let before = sim.png(&done_urls[0]).await;
    // One-shot faults that already fired.
    let once_id = sim.submit(&body("x [[sim:status-once=503]]")).await;
    assert_eq!(sim.get_task(&once_id).send().await.unwrap().status(), 503);
    let lost = body("y [[sim:lost=502]]");
    let r = sim
        .post(&lost)
        .header("Idempotency-Key", "lost-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    sim.handle.stop().await;
    assert!(dir.path().join(apimart_sim::STATE_FILE).exists());

    let sim = spawn_in(config(0), dir.path()).await;
    assert_eq!(sim.handle.port(), port, "the remembered port was free");
    // The long task is still there and completes, its result drawn from the stored photo.
    let finished = sim.wait_terminal(&long_id).await;
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(finished["cost"], 0.05);
    let png = sim.png(&urls(&finished)[0]).await;
    assert!(colours(&png) > 500, "the stored photo was lost");
    // The downloaded result is served again, byte for byte.
    assert_eq!(sim.png(&done_urls[0]).await, before);
    // `status-once` does not fire again; `lost` does not either, and the key replays.
    assert_eq!(sim.poll(&once_id).await["status"], "completed");
    let replay = sim
        .post(&lost)
        .header("Idempotency-Key", "lost-1")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    let again = sim
        .post(&long)
        .header("Idempotency-Key", "keep-1")
        .send()
        .await
        .unwrap();
    assert_eq!(task_id(&again.json().await.unwrap()), long_id);
    let conflict = sim
        .post(&body("other"))
        .header("Idempotency-Key", "keep-1")
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    let stats = sim.handle.stats();
    assert_eq!(
        (
            stats.tasks_created,
            stats.idempotent_replays,
            stats.max_tasks_per_key
        ),
        (0, 2, 1),
        "counters are per process, max_tasks_per_key spans the restart"
    );
    // New tasks keep the alternating shapes going where they stopped (4 tasks so far).
    let fifth = sim.post(&body("fifth")).send().await.unwrap();
    assert!(fifth.json::<Value>().await.unwrap()["data"].is_array());
    sim.handle.stop().await;
}

#[tokio::test]
async fn a_task_due_while_the_simulator_was_down_is_completed_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn_in(config(700), dir.path()).await;
    let id = sim.submit(&body("runs while down")).await;
    let first = sim.poll(&id).await;
    assert!(
        matches!(first["status"].as_str(), Some("pending" | "processing")),
        "{first}"
    );
    sim.handle.stop().await;
    // The behaviour under test is wall-clock time passing while nothing runs.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let sim = spawn_in(config(700), dir.path()).await;
    let data = sim.poll(&id).await;
    assert_eq!(data["status"], "completed", "{data}");
    assert_eq!(data["progress"], 100);
    assert!(data["completed"].as_u64().unwrap() >= data["created"].as_u64().unwrap());
    sim.handle.stop().await;
}

#[tokio::test]
async fn one_state_dir_serves_one_simulator_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = spawn_in(config(0), dir.path()).await;
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let second = Simulator::start_persistent(config(0), any, dir.path()).await;
    assert!(
        matches!(second, Err(SimError::State(StoreError::Locked(_)))),
        "{second:?}"
    );
    first.handle.stop().await;
    let third = spawn_in(config(0), dir.path()).await;
    third.handle.stop().await;
    // A path that cannot be a directory is a clear error, not a panic.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let bad = Simulator::start_persistent(config(0), any, &file).await;
    assert!(matches!(bad, Err(SimError::State(_))), "{bad:?}");
}

// ---------------------------------------------------------------- rate limit

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_and_counts_them() {
    let sim = spawn(SimConfig {
        rate_limit: NonZeroU32::new(5),
        ..config(0)
    })
    .await;
    let id = sim.submit(&body("x")).await;
    // Sent together, so that even a slow machine delivers them within a second or two.
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let req = sim.get_task(&id);
        requests.spawn(async move { req.send().await.unwrap() });
    }
    let mut limited = 0;
    let mut retry_after = 0;
    while let Some(r) = requests.join_next().await {
        let r = r.unwrap();
        match r.status() {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                retry_after = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
                let (_, err) = error_of(r).await;
                assert_eq!(err["type"], "rate_limit_error");
            }
            other => panic!("unexpected {other}"),
        }
    }
    // 31 requests (with the submit) against a bucket of 5 per second: most are refused
    // even on a slow machine, and each refusal says when to come back.
    assert!(limited >= 10, "only {limited} of 30 limited");
    assert_eq!(retry_after, 1);
    let stats = sim.handle.stats();
    assert_eq!(stats.rate_limited, limited);
    assert_eq!(stats.faults_injected, 0, "the limit is not a fault");
    // Downloads (a CDN) are never limited.
    let done = loop {
        let r = sim.get_task(&id).send().await.unwrap();
        if r.status() == StatusCode::OK {
            break r.json::<Value>().await.unwrap()["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for url in urls(&done).iter().cycle().take(10) {
        sim.png(url).await;
    }
    // Lifted at runtime through the control route.
    let patched = sim
        .http
        .post(sim.base.replace("/v1", "/_sim/config"))
        .json(&json!({"rate_limit_rps": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        patched.json::<Value>().await.unwrap()["rate_limit_rps"],
        Value::Null
    );
    for _ in 0..20 {
        assert_eq!(sim.get_task(&id).send().await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn a_client_pacing_below_the_limit_is_never_refused() {
    let sim = spawn(SimConfig {
        rate_limit: NonZeroU32::new(10),
        ..config(0)
    })
    .await;
    let id = sim.submit(&body("x")).await;
    // 4 requests per second against 10: far enough below that scheduling jitter on a busy
    // machine cannot push a request over.
    for _ in 0..8 {
        assert_eq!(sim.get_task(&id).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(sim.handle.stats().rate_limited, 0);
}

// ---------------------------------------------------------------- cost and balance

#[tokio::test]
async fn completed_tasks_report_their_cost_and_pay_from_the_balance() {
    let sim = spawn(SimConfig {
        cost_per_image: 0.25,
        balance: Some(1.0),
        ..config(0)
    })
    .await;
    let (status, fresh) = sim.balance("/v1/balance", KEY, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        fresh,
        json!({"success": true, "remain_balance": 1.0, "remain_credits": 10.0,
               "used_balance": 0.0, "used_credits": 0.0, "unlimited_quota": false})
    );
    let mut two = body("two images");
    two["n"] = json!(2);
    let id = sim.submit(&two).await;
    let done = sim.wait_terminal(&id).await;
    assert_eq!(
        (done["cost"].as_f64(), done["credits_cost"].as_f64()),
        (Some(0.5), Some(5.0))
    );
    // Failed and cancelled tasks cost nothing and report no cost.
    let failed = sim
        .wait_terminal(&sim.submit(&body("x [[sim:fail]]")).await)
        .await;
    assert!(failed.get("cost").is_none(), "{failed}");
    // Pending tasks report no cost yet.
    let pending = sim.submit(&body("x [[sim:duration=60000]]")).await;
    assert!(sim.poll(&pending).await.get("cost").is_none());
    for path in ["/v1/balance", "/v1/user/balance"] {
        let (status, b) = sim.balance(path, KEY, None).await;
        assert_eq!(status, 200);
        assert_eq!(b["remain_balance"], 0.5, "{path}: {b}");
        assert_eq!(b["used_balance"], 0.5);
        assert_eq!(b["remain_credits"], 5.0);
        assert_eq!(b["used_credits"], 5.0);
    }
    // The pending task (0.25) fits; three more images (0.75) do not: 402.
    let mut three = body("three");
    three["n"] = json!(3);
    let (status, err) = error_of(sim.post(&three).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(err["code"], "insufficient_balance");
    assert_eq!(sim.handle.stats().balance_requests, 3);
}

#[tokio::test]
async fn balance_faults_auth_and_unlimited_quota() {
    let sim = spawn(config(0)).await;
    let (status, _) = sim.balance("/v1/balance", KEY, Some("balance=503")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, b) = sim.balance("/v1/balance", KEY, Some("balance=zero")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (b["remain_balance"].as_f64(), b["success"].as_bool()),
        (Some(0.0), Some(true))
    );
    // The empty account reads a zero balance; a bad key is 401; no key is 401.
    let (status, b) = sim.balance("/v1/user/balance", "sim-402", None).await;
    assert_eq!(
        (status.as_u16(), b["remain_balance"].as_f64()),
        (200, Some(0.0))
    );
    let (status, _) = sim.balance("/v1/balance", "sim-401", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let anonymous = sim
        .http
        .get(sim.base.replace("/v1", "/v1/balance"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Configured to fail for every caller (a readiness check cannot send headers).
    sim.handle.set_config(SimConfig {
        balance_status: Some(502),
        ..config(0)
    });
    let (status, _) = sim.balance("/v1/balance", KEY, None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    sim.handle.set_config(SimConfig {
        balance: None,
        ..config(0)
    });
    let (_, b) = sim.balance("/v1/balance", KEY, None).await;
    assert_eq!(b["unlimited_quota"], true);
    assert_eq!(b["remain_balance"], -1.0);
}

// ---------------------------------------------------------------- undecodable answers

#[tokio::test]
async fn garbled_submit_creates_the_task_and_a_keyed_retry_recovers_it() {
    let sim = spawn(config(0)).await;
    let b = body("x [[sim:garbled]]");
    let first = sim
        .post(&b)
        .header("Idempotency-Key", "garbled-1")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["content-type"], "application/json");
    let text = first.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert!(text.starts_with("{\"code\":200"), "{text}");
    assert_eq!(
        sim.handle.stats().tasks_created,
        1,
        "created despite the answer"
    );
    let replay = sim
        .post(&b)
        .header("Idempotency-Key", "garbled-1")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    let id = task_id(&replay.json().await.unwrap());
    assert_eq!(sim.wait_terminal(&id).await["status"], "completed");
    let stats = sim.handle.stats();
    assert_eq!(
        (
            stats.tasks_created,
            stats.max_tasks_per_key,
            stats.faults_injected
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn status_can_answer_a_proxy_html_502_page() {
    let sim = spawn(config(0)).await;
    let id = sim
        .submit(&body("x [[sim:status-once=502,body=html]]"))
        .await;
    let r = sim.get_task(&id).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("<h1>502 Bad Gateway</h1>"), "{page}");
    assert_eq!(sim.poll(&id).await["status"], "completed");
    // Also from the poll's own header.
    let r = sim
        .get_task(&id)
        .header("X-Sim-Fault", "status=502,body=html")
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().starts_with("<html>"));
}

// ---------------------------------------------------------------- the binary

/// The `apimart-sim` binary with `--state-dir`: a task created before a SIGTERM, and one
/// created before a kill -9, are both answered (and complete) by the next process.
#[tokio::test]
async fn the_binary_keeps_its_tasks_in_its_state_dir() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut child = Reaped(
            Command::new(env!("CARGO_BIN_EXE_apimart-sim"))
                .args([
                    "--port",
                    "0",
                    "--duration-ms",
                    "1500",
                    "--image-long-side",
                    "64",
                ])
                .arg("--state-dir")
                .arg(dir.path())
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        BufReader::new(child.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("apimart-sim listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        (child, base)
    };
    // No pooled connections: each process listens on the same port in turn.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let submit = |base: String, prompt: &str| {
        let req = http
            .post(format!("{base}/images/generations"))
            .bearer_auth(KEY)
            .json(&body(prompt));
        async move { task_id(&req.send().await.unwrap().json().await.unwrap()) }
    };

    let (mut first, base) = start();
    let graceful = submit(base.clone(), "before sigterm").await;
    let term = Command::new("kill")
        .args(["-TERM", &first.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(first.0.wait().unwrap().success(), "SIGTERM is a clean stop");

    let (second, again) = start();
    assert_eq!(again, base, "the remembered port was free");
    let crashed = submit(again.clone(), "before kill -9").await;
    drop(second);

    let (_third, base) = start();
    let sim = wrap_url(base);
    for id in [&graceful, &crashed] {
        let done = sim.wait_terminal(id).await;
        assert_eq!(done["status"], "completed", "{done}");
        sim.png(&urls(&done)[0]).await;
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, also when a test
/// fails half-way.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A [`TestSim`]-like client for a simulator in another process.
fn wrap_url(base: String) -> RemoteSim {
    RemoteSim {
        http: reqwest::Client::new(),
        base,
    }
}

struct RemoteSim {
    http: reqwest::Client,
    base: String,
}

impl RemoteSim {
    async fn wait_terminal(&self, id: &str) -> Value {
        let start = Instant::now();
        loop {
            let v: Value = self
                .http
                .get(format!("{}/tasks/{id}", self.base))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let data = v["data"].clone();
            if matches!(
                data["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return data;
            }
            assert!(start.elapsed() < DEADLINE, "not terminal: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn png(&self, url: &str) {
        let resp = self.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
        assert!(resp.bytes().await.unwrap().starts_with(b"\x89PNG"));
    }
}
