//! A hostile upstream: result image URLs (and redirects) that point at addresses downloads
//! may not reach, and an HTML error page instead of an API answer. The "forbidden" hosts
//! are loopback listeners that configuration does not allow (only the simulator's exact
//! address is): they count the connections they get, which must stay 0. No traffic leaves
//! 127.0.0.0/8.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a broken setup should stop the test loudly"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use modelgen_e2e::Backend;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::helpers::{AppOptions, TestApp, spawn_app, spawn_app_allowing};

/// A loopback listener that counts connections and answers each with `reply`.
async fn listener(reply: String) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    (addr, seen)
}

/// A listener that would serve a valid PNG: reaching it at all is the failure.
async fn forbidden_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    listener(
        "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            .into(),
    )
    .await
}

/// Creates an edit of a fresh completed model whose instructions carry `marker`, drives it
/// to its end and returns the task view.
async fn edit_with(app: &TestApp, user: &str, marker: &str) -> serde_json::Value {
    let base = app.create_default(user).await;
    assert_eq!(app.drive_until_terminal(&base).await["status"], "completed");
    let (status, body) = app
        .post(
            "/models/edit",
            &json!({"user_id": user, "base_model_task_id": base, "edit_instructions": format!("smile {marker}")}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["data"]["task_id"].as_str().unwrap().to_string();
    // drive_until_terminal gives up after 30 s: a download retried until TASK_TIMEOUT
    // (600 s here) would fail this test.
    app.drive_until_terminal(&id).await
}

#[tokio::test]
async fn a_result_url_at_a_forbidden_address_fails_the_task_at_once_without_connecting() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let (forbidden, seen) = forbidden_listener().await;
    let task = edit_with(&app, "ssrf", &format!("[[sim:result-addr={forbidden}]]")).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error_code"], 1002);
    let message = task["error_message"].as_str().unwrap();
    assert!(
        message.starts_with("result image URL refused:")
            && message.contains(&forbidden.to_string())
            && message.contains("loopback")
            && message.contains("OUTBOUND_ALLOWLIST"),
        "{message}"
    );
    assert!(
        task["images"].as_array().is_none_or(Vec::is_empty),
        "{task}"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "the forbidden listener was reached"
    );
    // The callback carries the same message.
    let id = task["task_id"].as_str().unwrap().parse().unwrap();
    let payload = app.engine.callback_payload(&id).await.unwrap();
    assert_eq!(payload.error_message.as_deref(), Some(message));
}

#[tokio::test]
async fn a_redirect_to_a_forbidden_address_fails_the_task_without_connecting_there() {
    let (forbidden, forbidden_seen) = forbidden_listener().await;
    let (redirector, redirector_seen) = listener(format!(
        "HTTP/1.1 302 Found\r\nlocation: http://{forbidden}/latest/meta-data/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ))
    .await;
    // The redirector is allowed (an operator's internal CDN, say); its target is not.
    let app = spawn_app_allowing(Backend::Sqlite, AppOptions::default(), &[redirector]).await;
    let task = edit_with(
        &app,
        "ssrf302",
        &format!("[[sim:result-addr={redirector}]]"),
    )
    .await;
    assert_eq!(task["status"], "failed", "{task}");
    let message = task["error_message"].as_str().unwrap();
    assert!(
        message.starts_with("result image URL refused: redirect 1 refused:")
            && message.contains(&forbidden.to_string()),
        "{message}"
    );
    assert_eq!(
        redirector_seen.load(Ordering::SeqCst),
        1,
        "asked once, never retried"
    );
    assert_eq!(
        forbidden_seen.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

#[tokio::test]
async fn an_html_error_page_from_upstream_is_stored_as_a_short_plain_message() {
    let app = spawn_app(Backend::Sqlite, AppOptions::default()).await;
    let task = edit_with(&app, "html502", "[[sim:submit=502,body=html]]").await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(
        task["error_message"],
        "apimart: upstream server error (HTTP 502 Bad Gateway): 502 Bad Gateway apimart-sim proxy"
    );
    let id = task["task_id"].as_str().unwrap().parse().unwrap();
    let payload = app.engine.callback_payload(&id).await.unwrap();
    assert_eq!(
        payload.error_message,
        task["error_message"].as_str().map(str::to_owned)
    );
}
