//! The client against a local wiremock server: request shape, every response shape, the
//! status-to-error mapping, `Retry-After`, retries (and their absence), idempotency headers,
//! URL building and key redaction. Only 127.0.0.1 is contacted.

#![expect(
    clippy::expect_used,
    reason = "test code: a failed expectation is a failed test"
)]

use std::time::{Duration, SystemTime};

use apimart_client::{
    ApiKey, ApimartClient, ApimartConfig, ApimartError, Balance, GenerationRequest, ResultImage,
    RetryPolicy, SubmitResponse, UpstreamStatus,
};
use serde_json::{Value, json};
use wiremock::matchers::{bearer_token, body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "sk-test-Zq8vT1mN4pL0";
const SUBMIT_PATH: &str = "/v1/images/generations";

/// Three attempts with millisecond delays, so retry tests stay fast.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_rate_limit_wait: Duration::from_secs(2),
    }
}

fn config(base: String) -> ApimartConfig {
    ApimartConfig::new(ApiKey::new(KEY))
        .with_base_url(base)
        .with_timeout(Duration::from_secs(5))
        .with_retry(fast_retry())
}

fn client_for(server: &MockServer) -> ApimartClient {
    ApimartClient::new(config(format!("{}/v1", server.uri()))).expect("valid config")
}

fn client_with(server: &MockServer, retry: RetryPolicy, timeout: Duration) -> ApimartClient {
    let cfg = config(format!("{}/v1", server.uri()))
        .with_retry(retry)
        .with_timeout(timeout);
    ApimartClient::new(cfg).expect("valid config")
}

fn request() -> GenerationRequest {
    GenerationRequest {
        model: "gemini-3-pro-image-preview".into(),
        prompt: "a model in a red dress".into(),
        size: "3:4".into(),
        n: 1,
        image_urls: vec!["data:image/png;base64,iVBORw0KGgo=".into()],
        resolution: Some("2K".into()),
    }
}

fn array_submit_body(id: &str) -> Value {
    json!({"code":200,"data":[{"status":"submitted","task_id":id}]})
}

fn status_body(id: &str) -> Value {
    json!({"code":200,"data":{"id":id,"status":"processing","progress":40}})
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server
        .received_requests()
        .await
        .expect("request recording is on")
}

fn header_value(req: &Request, name: &str) -> Option<String> {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

// ---------- submit ----------

#[tokio::test]
async fn submit_sends_documented_request_and_reads_array_shape() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .and(bearer_token(KEY))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "model":"gemini-3-pro-image-preview","prompt":"a model in a red dress","size":"3:4",
            "n":1,"image_urls":["data:image/png;base64,iVBORw0KGgo="],"resolution":"2K"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(array_submit_body("task_01K")))
        .expect(1)
        .mount(&server)
        .await;

    let got = client_for(&server)
        .submit_generation(&request(), None)
        .await
        .expect("submit succeeds");
    assert_eq!(
        got,
        SubmitResponse {
            task_id: "task_01K".into(),
            status: UpstreamStatus::Submitted,
            estimated_time: None,
            replayed: false,
        }
    );
    let seen = requests(&server).await;
    assert_eq!(header_value(&seen[0], "idempotency-key"), None);
}

#[tokio::test]
async fn submit_reads_object_shape() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"code":200,"data":{
            "id":"task_01J","object":"image.generation.task","status":"pending","progress":0,
            "created":1_700_000_000,"task_info":{"can_cancel":true,"estimated_time":100},
            "unknown_extra":{"ignored":true}}})),
        )
        .mount(&server)
        .await;

    let got = client_for(&server)
        .submit_generation(&request(), None)
        .await
        .expect("submit succeeds");
    assert_eq!(got.task_id, "task_01J");
    assert_eq!(got.status, UpstreamStatus::Pending);
    assert_eq!(got.estimated_time, Some(Duration::from_secs(100)));
}

#[tokio::test]
async fn submit_sends_idempotency_key_and_reports_replay() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .and(header("idempotency-key", "order-42"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Idempotency-Replayed", "true")
                .set_body_json(array_submit_body("task_old")),
        )
        .expect(1)
        .mount(&server)
        .await;

    let got = client_for(&server)
        .submit_generation(&request(), Some("order-42"))
        .await
        .expect("submit succeeds");
    assert!(got.replayed);
    assert_eq!(got.task_id, "task_old");
}

#[tokio::test]
async fn submit_without_key_is_not_retried_on_500() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(ResponseTemplate::new(500).set_body_string("internal"))
        .mount(&server)
        .await;

    let err = client_for(&server)
        .submit_generation(&request(), None)
        .await
        .expect_err("500 fails");
    assert!(
        matches!(err, ApimartError::Server { status: 500, ref message } if message == "internal"),
        "{err:?}"
    );
    assert!(err.outcome_unknown());
    assert_eq!(
        requests(&server).await.len(),
        1,
        "a keyless POST must not be repeated"
    );
}

#[tokio::test]
async fn submit_without_key_is_not_retried_on_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(array_submit_body("late"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;

    let client = client_with(&server, fast_retry(), Duration::from_millis(300));
    let err = client
        .submit_generation(&request(), None)
        .await
        .expect_err("times out");
    assert!(matches!(err, ApimartError::Timeout), "{err:?}");
    assert!(err.outcome_unknown() && err.is_retryable());
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn submit_with_key_is_retried_with_same_key_and_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(array_submit_body("task_ok")))
        .mount(&server)
        .await;

    let got = client_for(&server)
        .submit_generation(&request(), Some("idem-7"))
        .await
        .expect("third attempt succeeds");
    assert_eq!(got.task_id, "task_ok");
    let seen = requests(&server).await;
    assert_eq!(seen.len(), 3);
    for r in &seen {
        assert_eq!(
            header_value(r, "idempotency-key").as_deref(),
            Some("idem-7")
        );
        assert_eq!(r.body, seen[0].body, "every attempt sends the same body");
    }
}

#[tokio::test]
async fn submit_with_key_is_retried_after_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(array_submit_body("task_ok")))
        .mount(&server)
        .await;

    let client = client_with(&server, fast_retry(), Duration::from_millis(300));
    let got = client
        .submit_generation(&request(), Some("idem-8"))
        .await
        .expect("second attempt succeeds");
    assert_eq!(got.task_id, "task_ok");
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn submit_with_key_is_not_retried_on_400() {
    let server = MockServer::start().await;
    let body = json!({"error":{"message":"size not supported","type":"invalid_request_error",
        "code":"invalid_size","param":"size"}});
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(&body))
        .mount(&server)
        .await;

    let err = client_for(&server)
        .submit_generation(&request(), Some("idem-9"))
        .await
        .expect_err("400 fails");
    match &err {
        ApimartError::BadRequest {
            status,
            message,
            body: raw,
        } => {
            assert_eq!(*status, 400);
            assert_eq!(message, "size not supported (param: size)");
            assert!(raw.contains("invalid_size"), "raw body kept: {raw}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!err.is_retryable() && !err.outcome_unknown());
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn invalid_idempotency_key_sends_nothing() {
    let server = MockServer::start().await;
    let err = client_for(&server)
        .submit_generation(&request(), Some("has space"))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            ApimartError::InvalidInput {
                field: "idempotency_key",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(requests(&server).await.is_empty());
}

#[tokio::test]
async fn connect_error_is_connect_and_never_reached_server() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let client =
        ApimartClient::new(config(format!("http://127.0.0.1:{port}/v1"))).expect("valid config");
    let err = client
        .submit_generation(&request(), None)
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, ApimartError::Connect { .. }), "{err:?}");
    assert!(err.is_retryable() && !err.outcome_unknown());
    assert_eq!(err.http_status(), None);
}

// ---------- status ----------

#[tokio::test]
async fn status_with_url_array() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/task_01K"))
        .and(bearer_token(KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"code":200,"data":{
            "id":"task_01K","status":"completed","progress":100,
            "result":{"images":[{"url":["https://cdn.test/a.png","https://cdn.test/b.png"],
                                 "expires_at":1_700_086_400}]},
            "created":1_700_000_000,"completed":1_700_000_019,"estimated_time":60,"actual_time":19}})))
        .expect(1)
        .mount(&server)
        .await;

    let got = client_for(&server)
        .get_task_status("task_01K")
        .await
        .expect("status read");
    assert_eq!(got.status, UpstreamStatus::Completed);
    assert!(got.status.is_terminal());
    assert_eq!(got.progress, 100);
    assert_eq!(
        got.images,
        vec![ResultImage {
            urls: vec![
                "https://cdn.test/a.png".into(),
                "https://cdn.test/b.png".into()
            ],
            expires_at: Some(1_700_086_400),
        }]
    );
    assert_eq!(got.actual_time, Some(Duration::from_secs(19)));
    assert_eq!(got.estimated_time, Some(Duration::from_secs(60)));
    assert_eq!(got.created, Some(1_700_000_000));
    assert_eq!(got.completed, Some(1_700_000_019));
    assert_eq!((got.cost, got.credits_cost), (None, None), "not reported");
}

#[tokio::test]
async fn status_reads_cost_as_number_or_string() {
    let server = MockServer::start().await;
    for (id, cost, credits) in [
        ("t-num", json!(0.05), json!(5)),
        ("t-str", json!("0.05"), json!("5.0")),
        ("t-null", Value::Null, json!("n/a")),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/v1/tasks/{id}")))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"code":200,"data":{
                "id":id,"status":"completed","cost":cost,"credits_cost":credits}})),
            )
            .mount(&server)
            .await;
    }
    let client = client_for(&server);
    for (id, want) in [
        ("t-num", (Some(0.05), Some(5.0))),
        ("t-str", (Some(0.05), Some(5.0))),
        ("t-null", (None, None)),
    ] {
        let got = client.get_task_status(id).await.expect("status read");
        assert_eq!((got.cost, got.credits_cost), want, "{id}");
    }
}

#[tokio::test]
async fn balance_reads_the_documented_fields() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/balance"))
        .and(bearer_token(KEY))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"success":true,
            "remain_balance":9.15,"remain_credits":"91.5","used_balance":1.2,
            "used_credits":12,"unlimited_quota":false})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let got = client_for(&server).balance().await.expect("balance read");
    let mut want = Balance::new();
    want.remain_balance = Some(9.15);
    want.remain_credits = Some(91.5);
    want.used_balance = Some(1.2);
    want.used_credits = Some(12.0);
    assert_eq!(got, want);
    assert!(!got.is_exhausted());
}

#[tokio::test]
async fn balance_falls_back_to_the_user_path_on_404() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/balance"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error":{"message":"nope"}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/user/balance"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"success":true,
            "remain_balance":"0","unlimited_quota":false})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let got = client_for(&server).balance().await.expect("balance read");
    assert_eq!(got.remain_balance, Some(0.0));
    assert!(got.is_exhausted());
}

#[tokio::test]
async fn balance_errors_are_typed_and_retried_like_reads() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/balance"))
        .respond_with(ResponseTemplate::new(503).set_body_string("busy"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/balance"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"success":true,
            "remain_balance":-1,"unlimited_quota":true})),
        )
        .mount(&server)
        .await;
    let recorder = std::sync::Arc::new(Recorder::default());
    let client =
        ApimartClient::new(config(format!("{}/v1", server.uri())).with_observer(recorder.clone()))
            .expect("valid config");
    let got = client.balance().await.expect("balance after retries");
    assert!(got.unlimited_quota);
    assert!(!got.is_exhausted(), "unlimited");
    assert_eq!(
        recorder.0.lock().map(|r| r.clone()).unwrap_or_default(),
        vec![(apimart_client::Endpoint::Balance, 3, false)]
    );

    for (status, body, check) in [
        (
            401,
            json!({"error":{"message":"bad key"}}),
            (|e: &ApimartError| matches!(e, ApimartError::Unauthorized { .. }))
                as fn(&ApimartError) -> bool,
        ),
        (
            200,
            json!({"success":false,"message":"token disabled"}),
            |e| matches!(e, ApimartError::Upstream { code: 200, message } if message == "token disabled"),
        ),
        (200, json!({"hello":"world"}), |e| {
            matches!(e, ApimartError::Decode { status: 200, .. })
        }),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/balance"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body.clone()))
            .expect(1)
            .mount(&server)
            .await;
        let err = client_for(&server)
            .balance()
            .await
            .expect_err("an error answer");
        assert!(check(&err), "{status} {body}: {err:?}");
    }
}

#[tokio::test]
async fn status_with_url_string_and_failed_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/t1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"code":200,"data":{
            "id":"t1","status":"completed","progress":100,
            "result":{"images":[{"url":"https://cdn.test/one.png","expires_at":5}]}}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/t2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"code":200,"data":{
            "id":"t2","status":"failed","progress":250,
            "error":{"code":"moderation","message":"content blocked","type":"policy"}}})),
        )
        .mount(&server)
        .await;

    let client = client_for(&server);
    let one = client.get_task_status("t1").await.expect("t1 read");
    assert_eq!(
        one.images[0].urls,
        vec!["https://cdn.test/one.png".to_owned()]
    );
    assert_eq!(one.images[0].expires_at, Some(5));

    let two = client.get_task_status("t2").await.expect("t2 read");
    assert_eq!(two.status, UpstreamStatus::Failed);
    assert_eq!(two.progress, 100, "out-of-range progress is clamped");
    let error = two.error.expect("error present");
    assert_eq!(error.code.as_deref(), Some("moderation"));
    assert_eq!(error.message, "content blocked");
    assert_eq!(error.kind.as_deref(), Some("policy"));
}

#[tokio::test]
async fn status_is_retried_on_503_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/t1"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/t1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_body("t1")))
        .mount(&server)
        .await;

    let got = client_for(&server)
        .get_task_status("t1")
        .await
        .expect("third attempt succeeds");
    assert_eq!(got.progress, 40);
    assert_eq!(requests(&server).await.len(), 3);
}

#[tokio::test]
async fn status_gives_up_after_max_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(504))
        .mount(&server)
        .await;

    let err = client_for(&server)
        .get_task_status("t1")
        .await
        .expect_err("always 504");
    assert!(
        matches!(err, ApimartError::Server { status: 504, .. }),
        "{err:?}"
    );
    assert_eq!(requests(&server).await.len(), 3);
}

#[tokio::test]
async fn status_is_not_retried_on_404() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error":{"message":"task not found","type":"not_found"}})),
        )
        .mount(&server)
        .await;

    let err = client_for(&server)
        .get_task_status("task_gone")
        .await
        .expect_err("404");
    assert!(
        matches!(err, ApimartError::NotFound { ref message } if message == "task not found"),
        "{err:?}"
    );
    assert_eq!(requests(&server).await.len(), 1);
}

// ---------- error mapping ----------

#[tokio::test]
async fn every_error_status_maps_to_its_variant() {
    let server = MockServer::start().await;
    let client = client_with(&server, RetryPolicy::none(), Duration::from_secs(5));
    let cases: Vec<(u16, ResponseTemplate, &str)> = vec![
        (
            400,
            ResponseTemplate::new(400).set_body_json(json!({"error":{"message":"bad n"}})),
            "BadRequest",
        ),
        (
            401,
            ResponseTemplate::new(401).set_body_json(json!({"code":401,"msg":"invalid token"})),
            "Unauthorized",
        ),
        (
            402,
            ResponseTemplate::new(402)
                .set_body_json(json!({"success":false,"message":"insufficient balance"})),
            "InsufficientBalance",
        ),
        (
            403,
            ResponseTemplate::new(403).set_body_json(json!({"code":403,"message":"model denied"})),
            "Forbidden",
        ),
        (
            404,
            ResponseTemplate::new(404).set_body_string("not here"),
            "NotFound",
        ),
        (
            409,
            ResponseTemplate::new(409).set_body_string("conflict"),
            "BadRequest",
        ),
        (
            422,
            ResponseTemplate::new(422).set_body_string("unprocessable"),
            "BadRequest",
        ),
        (
            429,
            ResponseTemplate::new(429).set_body_string("slow down"),
            "RateLimited",
        ),
        (408, ResponseTemplate::new(408), "Server"),
        (500, ResponseTemplate::new(500), "Server"),
        (
            502,
            ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"),
            "Server",
        ),
        (503, ResponseTemplate::new(503), "Server"),
        (504, ResponseTemplate::new(504), "Server"),
    ];
    for (status, template, want) in cases {
        server.reset().await;
        Mock::given(method("GET"))
            .respond_with(template)
            .mount(&server)
            .await;
        let err = client.get_task_status("t").await.expect_err("error status");
        let variant = match &err {
            ApimartError::BadRequest { .. } => "BadRequest",
            ApimartError::Unauthorized { .. } => "Unauthorized",
            ApimartError::InsufficientBalance { .. } => "InsufficientBalance",
            ApimartError::Forbidden { .. } => "Forbidden",
            ApimartError::NotFound { .. } => "NotFound",
            ApimartError::RateLimited { .. } => "RateLimited",
            ApimartError::Server { .. } => "Server",
            _ => "other",
        };
        assert_eq!(variant, want, "HTTP {status}: {err:?}");
        assert_eq!(err.http_status(), Some(status), "{err:?}");
        assert_eq!(
            err.is_retryable(),
            matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            "HTTP {status}"
        );
    }
}

#[tokio::test]
async fn error_messages_come_from_the_body() {
    let server = MockServer::start().await;
    let client = client_with(&server, RetryPolicy::none(), Duration::from_secs(5));
    let cases = [
        (
            401,
            json!({"code":401,"msg":"invalid token"}),
            "invalid token",
        ),
        (
            402,
            json!({"success":false,"message":"insufficient balance"}),
            "insufficient balance",
        ),
        (
            403,
            json!({"error":{"message":"model not allowed","type":"permission"}}),
            "model not allowed",
        ),
    ];
    for (status, body, want) in cases {
        server.reset().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .mount(&server)
            .await;
        let err = client.get_task_status("t").await.expect_err("error status");
        assert!(err.to_string().contains(want), "{status}: {err}");
    }
}

/// The error page nginx serves when its upstream is down, byte for byte.
const NGINX_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

#[tokio::test]
async fn an_html_error_page_becomes_a_short_plain_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(502)
                .insert_header("content-type", "text/html")
                .set_body_string(NGINX_502),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).set_body_string(format!(
            "<html><body><p>{}</p></body></html>",
            "maintenance ".repeat(100)
        )))
        .mount(&server)
        .await;
    let client = client_with(&server, RetryPolicy::none(), Duration::from_secs(5));

    let err = client
        .submit_generation(&request(), Some("k1"))
        .await
        .expect_err("502");
    assert_eq!(
        err.to_string(),
        "upstream server error (HTTP 502 Bad Gateway): 502 Bad Gateway nginx"
    );
    assert!(matches!(err, ApimartError::Server { status: 502, .. }));

    let err = client.get_task_status("t").await.expect_err("503");
    let ApimartError::Server { message, .. } = &err else {
        panic!("unexpected {err:?}");
    };
    assert!(!message.contains('<'), "{message}");
    assert_eq!(
        message.chars().count(),
        apimart_client::MAX_PLAIN_MESSAGE_CHARS
    );
    assert!(
        message.starts_with("maintenance maintenance") && message.ends_with('…'),
        "{message}"
    );
}

#[tokio::test]
async fn retry_after_in_seconds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
        .mount(&server)
        .await;

    let client = client_with(&server, RetryPolicy::none(), Duration::from_secs(5));
    let err = client.get_task_status("t").await.expect_err("429");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(matches!(err, ApimartError::RateLimited { .. }));
}

#[tokio::test]
async fn retry_after_as_http_date() {
    let server = MockServer::start().await;
    let date = httpdate_in(Duration::from_secs(30));
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", date.as_str()))
        .mount(&server)
        .await;

    let client = client_with(&server, RetryPolicy::none(), Duration::from_secs(5));
    let err = client.get_task_status("t").await.expect_err("429");
    let wait = err.retry_after().expect("date parsed");
    // The date has whole seconds; allow for that and for the test's own run time.
    assert!(
        wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
}

fn httpdate_in(d: Duration) -> String {
    httpdate::fmt_http_date(SystemTime::now() + d)
}

#[tokio::test]
async fn rate_limit_is_retried_after_short_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_body("t")))
        .mount(&server)
        .await;

    let got = client_for(&server)
        .get_task_status("t")
        .await
        .expect("second attempt succeeds");
    assert_eq!(got.status, UpstreamStatus::Processing);
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn rate_limit_longer_than_allowed_wait_gives_up_at_once() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "120"))
        .mount(&server)
        .await;

    let err = client_for(&server)
        .get_task_status("t")
        .await
        .expect_err("429");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(
        requests(&server).await.len(),
        1,
        "no wait beyond max_rate_limit_wait"
    );
}

#[tokio::test]
async fn undecodable_2xx_keeps_the_body() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/html"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/big"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(10_000)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"code":200,"data":[]})))
        .mount(&server)
        .await;

    let client = client_for(&server);
    match client.get_task_status("html").await {
        Err(ApimartError::Decode { status, body, .. }) => {
            assert_eq!(status, 200);
            assert_eq!(body, "<html>maintenance</html>");
        }
        other => panic!("unexpected {other:?}"),
    }
    match client.get_task_status("big").await {
        Err(ApimartError::Decode { body, .. }) => {
            assert_eq!(body.len(), apimart_client::MAX_KEPT_BODY_BYTES)
        }
        other => panic!("unexpected {other:?}"),
    }
    let err = client
        .submit_generation(&request(), Some("k1"))
        .await
        .expect_err("no task id");
    assert!(
        matches!(err, ApimartError::Decode { ref body, .. } if body.contains("\"data\":[]")),
        "{err:?}"
    );
    assert!(
        err.outcome_unknown(),
        "a 2xx without id may hide a created task"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn body_code_other_than_200_is_upstream_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"code":402,"msg":"余额不足"})),
        )
        .mount(&server)
        .await;

    let err = client_for(&server)
        .submit_generation(&request(), None)
        .await
        .expect_err("code 402");
    assert!(
        matches!(err, ApimartError::Upstream { code: 402, ref message } if message == "余额不足"),
        "{err:?}"
    );
}

// ---------- secrets ----------

#[tokio::test]
async fn api_key_never_appears_in_debug_or_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/echo401"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error":{"message":format!("invalid key {KEY}")}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/echo200"))
        .respond_with(ResponseTemplate::new(200).set_body_string(format!("token={KEY}")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/echo400"))
        .respond_with(ResponseTemplate::new(400).set_body_string(format!("bad {KEY}")))
        .mount(&server)
        .await;

    let cfg = config(format!("{}/v1", server.uri()));
    let client = ApimartClient::new(cfg.clone()).expect("valid config");
    let mut texts = vec![
        format!("{cfg:?}"),
        format!("{client:?}"),
        format!("{:?}", ApiKey::new(KEY)),
        ApiKey::new(KEY).to_string(),
    ];
    for id in ["echo401", "echo200", "echo400"] {
        let err = client.get_task_status(id).await.expect_err("error");
        texts.push(format!("{err:?}"));
        texts.push(err.to_string());
    }
    let bad =
        ApimartClient::new(cfg.with_base_url(format!("ftp://{KEY}@h/v1"))).expect_err("bad scheme");
    texts.push(format!("{bad:?} {bad}"));
    for text in &texts {
        assert!(!text.contains(KEY), "key leaked in: {text}");
    }
    assert!(texts[1].contains("***"), "{}", texts[1]);
}

// ---------- URLs and config ----------

#[tokio::test]
async fn odd_task_ids_are_path_escaped() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/a%2Fb%3Fc%23d%20e%25f"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_body("a/b?c#d e%f")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/task-unified-1700000000-Ab3dE9xZ"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_body("legacy")))
        .expect(1)
        .mount(&server)
        .await;

    let client = client_for(&server);
    let got = client
        .get_task_status("a/b?c#d e%f")
        .await
        .expect("escaped id reaches its route");
    assert_eq!(got.id, "a/b?c#d e%f");
    client
        .get_task_status("task-unified-1700000000-Ab3dE9xZ")
        .await
        .expect("legacy id");

    for bad in ["", ".", ".."] {
        let err = client.get_task_status(bad).await.expect_err("refused");
        assert!(
            matches!(
                err,
                ApimartError::InvalidInput {
                    field: "task_id",
                    ..
                }
            ),
            "{bad:?}: {err:?}"
        );
    }
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn base_url_with_or_without_trailing_slash() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/t"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_body("t")))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/proxy/v1/images/generations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(array_submit_body("p")))
        .expect(1)
        .mount(&server)
        .await;

    for base in [
        format!("{}/v1", server.uri()),
        format!("{}/v1/", server.uri()),
    ] {
        let client = ApimartClient::new(config(base)).expect("valid config");
        client.get_task_status("t").await.expect("status read");
    }
    let client =
        ApimartClient::new(config(format!("{}/proxy/v1/", server.uri()))).expect("valid config");
    assert_eq!(client.base_url(), format!("{}/proxy/v1", server.uri()));
    client
        .submit_generation(&request(), None)
        .await
        .expect("submit via nested base");
}

#[test]
fn invalid_configs_are_rejected() {
    let base = || ApimartConfig::new(ApiKey::new(KEY)).with_base_url("http://127.0.0.1:9/v1");
    let cases = [
        (
            "empty key",
            ApimartConfig::new(ApiKey::new("  ")).with_base_url("http://127.0.0.1:9/v1"),
        ),
        (
            "key with newline",
            ApimartConfig::new(ApiKey::new("sk\nx")).with_base_url("http://127.0.0.1:9/v1"),
        ),
        ("bad scheme", base().with_base_url("ftp://127.0.0.1/v1")),
        ("not a url", base().with_base_url("api.apimart.ai/v1")),
        ("query", base().with_base_url("http://127.0.0.1:9/v1?x=1")),
        ("zero timeout", base().with_timeout(Duration::ZERO)),
        (
            "zero connect timeout",
            base().with_connect_timeout(Duration::ZERO),
        ),
        (
            "zero attempts",
            base().with_retry(RetryPolicy {
                max_attempts: 0,
                ..RetryPolicy::default()
            }),
        ),
        ("bad user agent", base().with_user_agent("x\ny")),
    ];
    for (name, cfg) in cases {
        assert!(
            matches!(ApimartClient::new(cfg), Err(ApimartError::InvalidConfig(_))),
            "{name}"
        );
    }
    let ok = ApimartClient::new(base().with_user_agent("modelgen/1.0")).expect("valid");
    assert_eq!(ok.base_url(), "http://127.0.0.1:9/v1");
    let default = ApimartConfig::new(ApiKey::new(KEY));
    assert_eq!(default.base_url(), ApimartConfig::DEFAULT_BASE_URL);
    assert_eq!(default.timeout(), Duration::from_secs(30));
    assert_eq!(default.connect_timeout(), Duration::from_secs(10));
}

#[tokio::test]
async fn user_agent_is_sent() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("user-agent", "modelgen/1.0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_body("t")))
        .expect(1)
        .mount(&server)
        .await;
    let client =
        ApimartClient::new(config(format!("{}/v1", server.uri())).with_user_agent("modelgen/1.0"))
            .expect("valid config");
    client.get_task_status("t").await.expect("status read");
}

/// Records what the client reports after each call, and after each attempt.
#[derive(Default)]
struct Recorder(
    std::sync::Mutex<Vec<(apimart_client::Endpoint, u32, bool)>>,
    std::sync::Mutex<Vec<(apimart_client::Endpoint, Option<u16>, bool)>>,
);

impl apimart_client::CallObserver for Recorder {
    #[expect(
        clippy::unwrap_used,
        reason = "test recorder; a poisoned lock should fail the test"
    )]
    fn call_finished(
        &self,
        endpoint: apimart_client::Endpoint,
        attempts: u32,
        error: Option<&ApimartError>,
    ) {
        self.0
            .lock()
            .unwrap()
            .push((endpoint, attempts, error.is_some()));
    }

    #[expect(
        clippy::unwrap_used,
        reason = "test recorder; a poisoned lock should fail the test"
    )]
    fn attempt_finished(
        &self,
        endpoint: apimart_client::Endpoint,
        status: Option<u16>,
        error: Option<&ApimartError>,
    ) {
        self.1
            .lock()
            .unwrap()
            .push((endpoint, status, error.is_some()));
    }
}

#[tokio::test]
async fn observer_hears_every_call_with_its_attempt_count() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/t1"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/t1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status_body("t1")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({"error": {"message": "bad"}})),
        )
        .mount(&server)
        .await;
    let recorder = std::sync::Arc::new(Recorder::default());
    let client =
        ApimartClient::new(config(format!("{}/v1", server.uri())).with_observer(recorder.clone()))
            .unwrap();
    client.get_task_status("t1").await.unwrap();
    assert!(
        client
            .submit_generation(&request(), Some("key-1"))
            .await
            .is_err()
    );
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (apimart_client::Endpoint::TaskStatus, 3, false),
            (apimart_client::Endpoint::Submit, 1, true)
        ]
    );
    // Every HTTP attempt is heard on its own: two 503s and a 200 make one
    // status call; the 400 is one attempt of one submit.
    let attempts = recorder.1.lock().unwrap().clone();
    assert_eq!(
        attempts,
        vec![
            (apimart_client::Endpoint::TaskStatus, Some(503), true),
            (apimart_client::Endpoint::TaskStatus, Some(503), true),
            (apimart_client::Endpoint::TaskStatus, Some(200), false),
            (apimart_client::Endpoint::Submit, Some(400), true),
        ]
    );
}

#[tokio::test]
async fn observer_hears_attempts_without_a_response_and_unusable_2xx_bodies() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/tasks/t2"))
        .respond_with(ResponseTemplate::new(200).set_body_string("not json"))
        .mount(&server)
        .await;
    let recorder = std::sync::Arc::new(Recorder::default());
    let client =
        ApimartClient::new(config(format!("{}/v1", server.uri())).with_observer(recorder.clone()))
            .unwrap();
    assert!(client.get_task_status("t2").await.is_err());
    // Nothing listens on port 1 of the loopback: the connection is refused.
    let refused = ApimartClient::new(
        config("http://127.0.0.1:1/v1".to_string()).with_observer(recorder.clone()),
    )
    .unwrap();
    assert!(refused.get_task_status("t3").await.is_err());
    let attempts = recorder.1.lock().unwrap().clone();
    assert_eq!(
        attempts.first(),
        Some(&(apimart_client::Endpoint::TaskStatus, Some(200), true)),
        "{attempts:?}"
    );
    let calls = recorder.0.lock().unwrap().clone();
    let refused_attempts = calls.last().map_or(0, |c| c.1) as usize;
    assert!(refused_attempts >= 1, "{calls:?}");
    assert_eq!(
        &attempts[attempts.len() - refused_attempts..],
        vec![(apimart_client::Endpoint::TaskStatus, None, true); refused_attempts].as_slice(),
        "{attempts:?}"
    );
}
