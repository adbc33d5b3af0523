//! `HttpCallbackSender` against a local wiremock receiver (127.0.0.1 only), plus the
//! `MockCallbackSender` seam the engine's tests use.

#![expect(
    clippy::expect_used,
    reason = "a broken fixture should fail the test loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use modelgen_callback::{
    CallbackImage, CallbackPayload, CallbackRequest, CallbackSender, DEFAULT_TOLERANCE_S,
    DeliveryResult, HttpCallbackSender, MAX_BODY_EXCERPT_CHARS, MockCallbackSender, SenderConfig,
    SenderError, SigningSecret, verify,
};
use modelgen_domain::{Angle, TaskId, TaskStatus, TaskType};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const TOKEN: &str = "cb-token-7f3a9e2b";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn secret() -> SigningSecret {
    SigningSecret::parse(SECRET).expect("valid secret")
}

fn body() -> Vec<u8> {
    let payload = CallbackPayload::new(
        &TaskId::generate(),
        "user-1",
        TaskType::Outfit,
        TaskStatus::Completed,
    )
    .with_angle(Some(Angle::Front))
    .with_images(vec![CallbackImage {
        image_url: "http://127.0.0.1/images/a.png".into(),
        width: Some(768),
        height: Some(1024),
        mime: Some("image/png".into()),
    }]);
    serde_json::to_vec(&payload).expect("serialises")
}

async fn receiver(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/callback"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

fn config(server: &MockServer) -> SenderConfig {
    SenderConfig::new(format!("{}/callback", server.uri()))
}

fn sender(config: SenderConfig) -> HttpCallbackSender {
    HttpCallbackSender::new(config).expect("valid config")
}

async fn received(server: &MockServer) -> Vec<Request> {
    server
        .received_requests()
        .await
        .expect("request recording is on")
}

fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request
        .headers
        .get(name)
        .map(|value| value.to_str().expect("ASCII header"))
}

#[tokio::test]
async fn send_to_goes_to_the_given_url_signed_and_the_token_only_to_the_configured_origin() {
    let configured = receiver(200).await;
    let own = receiver(200).await;
    let sender = sender(
        config(&configured)
            .with_token(TOKEN)
            .with_signing_secret(secret()),
    );
    let body = body();
    let request = CallbackRequest {
        event_id: "evt_7",
        body: &body,
    };
    let url = format!("{}/callback", own.uri());
    assert_eq!(
        sender.send_to(&url, request).await,
        DeliveryResult::Delivered { status: 200 }
    );
    assert!(received(&configured).await.is_empty());
    let requests = received(&own).await;
    assert_eq!(requests.len(), 1);
    let got = &requests[0];
    // Another origin (here another port) never sees CALLBACK_TOKEN.
    assert_eq!(header(got, "authorization"), None);
    let timestamp: i64 = header(got, "webhook-timestamp")
        .expect("timestamp")
        .parse()
        .expect("seconds");
    let signature = header(got, "webhook-signature").expect("signature");
    assert_eq!(
        verify(
            &secret(),
            "evt_7",
            timestamp,
            &got.body,
            signature,
            chrono::Utc::now().timestamp(),
            DEFAULT_TOLERANCE_S
        ),
        Ok(())
    );
    // The configured receiver's origin on another path: the token goes with it.
    let same_origin = format!("{}/callback?tenant=7", configured.uri());
    assert_eq!(
        sender.send_to(&same_origin, request).await,
        DeliveryResult::Delivered { status: 200 }
    );
    let requests = received(&configured).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        header(&requests[0], "authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    // Not an http(s) URL: a failed attempt naming no URL.
    for bad in ["ftp://127.0.0.1/cb", "not a url"] {
        let result = sender.send_to(bad, request).await;
        match result {
            DeliveryResult::Failed { reason } => {
                assert!(reason.starts_with("request:"), "{reason}");
                assert!(!reason.contains(bad), "{reason}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn signed_request_carries_every_header_and_verifies() {
    let server = receiver(200).await;
    let sender = sender(
        config(&server)
            .with_token(TOKEN)
            .with_signing_secret(secret()),
    );
    let body = body();

    let result = sender
        .send(CallbackRequest {
            event_id: "evt_42",
            body: &body,
        })
        .await;

    assert_eq!(result, DeliveryResult::Delivered { status: 200 });
    let requests = received(&server).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.body, body);
    assert_eq!(header(request, "content-type"), Some("application/json"));
    assert_eq!(
        header(request, "authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(header(request, "webhook-id"), Some("evt_42"));
    let user_agent = header(request, "user-agent").expect("user agent sent");
    assert!(user_agent.starts_with("modelgen-callback/"), "{user_agent}");
    let timestamp: i64 = header(request, "webhook-timestamp")
        .expect("timestamp sent")
        .parse()
        .expect("integer seconds");
    let signature = header(request, "webhook-signature").expect("signature sent");
    assert!(signature.starts_with("v1,"), "{signature}");
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        verify(
            &secret(),
            "evt_42",
            timestamp,
            &request.body,
            signature,
            now,
            DEFAULT_TOLERANCE_S
        ),
        Ok(())
    );
    // The signature is bound to the id: a receiver deduplicating on another id rejects it.
    assert!(
        verify(
            &secret(),
            "evt_43",
            timestamp,
            &request.body,
            signature,
            now,
            DEFAULT_TOLERANCE_S
        )
        .is_err()
    );
}

#[tokio::test]
async fn unsigned_request_still_sends_webhook_id_and_nothing_else() {
    let server = receiver(204).await;
    let sender = sender(config(&server));
    let body = body();

    let result = sender
        .send(CallbackRequest {
            event_id: "evt_plain",
            body: &body,
        })
        .await;

    assert_eq!(result, DeliveryResult::Delivered { status: 204 });
    let requests = received(&server).await;
    let request = &requests[0];
    assert_eq!(header(request, "webhook-id"), Some("evt_plain"));
    assert_eq!(header(request, "content-type"), Some("application/json"));
    assert_eq!(header(request, "authorization"), None);
    assert_eq!(header(request, "webhook-timestamp"), None);
    assert_eq!(header(request, "webhook-signature"), None);
}

#[tokio::test]
async fn retries_resend_the_same_id_and_bytes() {
    let server = receiver(503).await;
    let sender = sender(config(&server).with_signing_secret(secret()));
    let body = body();
    let request = CallbackRequest {
        event_id: "evt_retry",
        body: &body,
    };

    for _ in 0..2 {
        assert!(matches!(
            sender.send(request).await,
            DeliveryResult::Rejected { status: 503, .. }
        ));
    }

    let requests = received(&server).await;
    assert_eq!(requests.len(), 2);
    for sent in &requests {
        assert_eq!(header(sent, "webhook-id"), Some("evt_retry"));
        assert_eq!(sent.body, body);
        let timestamp: i64 = header(sent, "webhook-timestamp")
            .expect("timestamp")
            .parse()
            .expect("integer");
        let signature = header(sent, "webhook-signature").expect("signature");
        assert_eq!(
            verify(
                &secret(),
                "evt_retry",
                timestamp,
                &sent.body,
                signature,
                timestamp,
                0
            ),
            Ok(())
        );
    }
}

#[tokio::test]
async fn every_2xx_is_delivered() {
    for status in [200, 201, 202, 204, 299] {
        let server = receiver(status).await;
        let result = sender(config(&server))
            .send(CallbackRequest {
                event_id: "evt_ok",
                body: b"{}",
            })
            .await;
        assert_eq!(result, DeliveryResult::Delivered { status }, "{status}");
        assert!(result.is_delivered());
    }
}

#[tokio::test]
async fn non_2xx_is_rejected_with_status_and_body_excerpt() {
    for (status, text) in [(500, "internal boom"), (404, "no such route"), (400, "")] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_string(text))
            .mount(&server)
            .await;
        let result = sender(config(&server))
            .send(CallbackRequest {
                event_id: "evt_no",
                body: b"{}",
            })
            .await;
        assert_eq!(
            result,
            DeliveryResult::Rejected {
                status,
                retry_after: None,
                body_excerpt: text.to_owned(),
            }
        );
    }
}

#[tokio::test]
async fn retry_after_seconds_are_parsed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
        .mount(&server)
        .await;
    let result = sender(config(&server))
        .send(CallbackRequest {
            event_id: "evt_busy",
            body: b"{}",
        })
        .await;
    assert!(matches!(
        result,
        DeliveryResult::Rejected { status: 429, retry_after: Some(delay), .. }
            if delay == Duration::from_secs(7)
    ));
}

#[tokio::test]
async fn long_error_bodies_are_cut_to_the_excerpt_limit() {
    let long: String = "é".repeat(10_000);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502).set_body_string(long.clone()))
        .mount(&server)
        .await;
    let result = sender(config(&server))
        .send(CallbackRequest {
            event_id: "evt_long",
            body: b"{}",
        })
        .await;
    let DeliveryResult::Rejected { body_excerpt, .. } = result else {
        panic!("expected Rejected, got {result:?}");
    };
    assert_eq!(body_excerpt.chars().count(), MAX_BODY_EXCERPT_CHARS);
    assert!(long.starts_with(&body_excerpt));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/callback"))
        .respond_with(ResponseTemplate::new(307).insert_header("Location", "/elsewhere"))
        .mount(&server)
        .await;
    Mock::given(path("/elsewhere"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let result = sender(config(&server).with_token(TOKEN))
        .send(CallbackRequest {
            event_id: "evt_redirect",
            body: b"{}",
        })
        .await;
    assert!(matches!(
        result,
        DeliveryResult::Rejected { status: 307, .. }
    ));
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn slow_receiver_is_a_timeout_failure() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let result = sender(
        config(&server)
            .with_token(TOKEN)
            .with_timeout(Duration::from_millis(200)),
    )
    .send(CallbackRequest {
        event_id: "evt_slow",
        body: b"{}",
    })
    .await;
    let DeliveryResult::Failed { reason } = result else {
        panic!("expected Failed, got {result:?}");
    };
    assert!(reason.starts_with("timeout"), "{reason}");
    assert!(!reason.contains(TOKEN), "{reason}");
}

#[tokio::test]
async fn closed_port_is_a_connect_failure() {
    // Bind then release a port so nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let result = sender(
        SenderConfig::new(format!("http://127.0.0.1:{port}/callback?key=query-secret"))
            .with_token(TOKEN)
            .with_signing_secret(secret()),
    )
    .send(CallbackRequest {
        event_id: "evt_down",
        body: b"{}",
    })
    .await;
    let DeliveryResult::Failed { reason } = result else {
        panic!("expected Failed, got {result:?}");
    };
    assert!(reason.starts_with("connect"), "{reason}");
    for hidden in [TOKEN, "query-secret", "MfKQ9r8"] {
        assert!(!reason.contains(hidden), "{hidden} in {reason}");
    }
}

#[tokio::test]
async fn invalid_event_id_fails_without_a_request() {
    let server = receiver(200).await;
    let result = sender(config(&server))
        .send(CallbackRequest {
            event_id: "evt\nsplit",
            body: b"{}",
        })
        .await;
    assert!(
        matches!(result, DeliveryResult::Failed { .. }),
        "{result:?}"
    );
    assert!(received(&server).await.is_empty());
}

/// Answers 401 with the request's Authorization header in the body, as a careless
/// receiver might.
struct EchoAuthorization;

impl Respond for EchoAuthorization {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let auth = header(request, "authorization")
            .unwrap_or("none")
            .to_owned();
        ResponseTemplate::new(401).set_body_string(format!("bad credentials: {auth}"))
    }
}

#[tokio::test]
async fn token_never_appears_in_debug_or_results() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(EchoAuthorization)
        .mount(&server)
        .await;
    let config = config(&server)
        .with_token(TOKEN)
        .with_signing_secret(secret());
    let sender = sender(config.clone());

    let result = sender
        .send(CallbackRequest {
            event_id: "evt_echo",
            body: b"{}",
        })
        .await;

    let DeliveryResult::Rejected {
        status,
        ref body_excerpt,
        ..
    } = result
    else {
        panic!("expected Rejected, got {result:?}");
    };
    assert_eq!(status, 401);
    assert_eq!(body_excerpt, "bad credentials: Bearer ***");
    let bad_token = HttpCallbackSender::new(config.clone().with_token(format!("{TOKEN}\n")))
        .expect_err("newline in token");
    assert!(matches!(bad_token, SenderError::InvalidToken));
    let texts = [
        format!("{config:?}"),
        format!("{sender:?}"),
        format!("{result:?}"),
        format!("{bad_token} {bad_token:?}"),
    ];
    for text in &texts {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
        assert!(!text.contains("MfKQ9r8"), "secret leaked: {text}");
    }
}

#[tokio::test]
async fn mock_sender_accepts_borrowed_requests() {
    let mut mock = MockCallbackSender::new();
    mock.expect_send()
        .withf(|request| request.event_id == "evt_mock" && request.body == b"{\"a\":1}")
        .times(1)
        .returning(|_| DeliveryResult::Rejected {
            status: 503,
            retry_after: Some(Duration::from_secs(3)),
            body_excerpt: String::new(),
        });
    let sender: Arc<dyn CallbackSender> = Arc::new(mock);
    // Non-'static borrows, as the outbox worker passes them from its row.
    let event_id = String::from("evt_mock");
    let body = br#"{"a":1}"#.to_vec();

    let result = sender
        .send(CallbackRequest {
            event_id: &event_id,
            body: &body,
        })
        .await;

    assert_eq!(
        result,
        DeliveryResult::Rejected {
            status: 503,
            retry_after: Some(Duration::from_secs(3)),
            body_excerpt: String::new(),
        }
    );
}
