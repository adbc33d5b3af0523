//! The callback crate's README shows a callback exactly as it goes on the
//! wire (crates/callback/README.md, between the `wire-example` markers).
//! This test makes a real delivery from the service to a raw TCP receiver on
//! loopback and compares it with that example: the request line, the header
//! names in order and case, the body's keys in order, and every value except
//! ids, times, URLs, numbers and signatures, which must only have the same
//! form.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modelgen_e2e::Backend;
use regex::Regex;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{AppOptions, spawn_app, tiny_png};

/// The token and secret the example was written with.
const TOKEN: &str = "cb-token-example";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A JSON value that keeps the order of object keys as written.
#[derive(Debug, Clone, PartialEq)]
enum Ordered {
    Null,
    Bool(bool),
    Int,
    Float,
    Str(String),
    Arr(Vec<Ordered>),
    Obj(Vec<(String, Ordered)>),
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered::Bool(b))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Ordered, E> {
                Ok(Ordered::Int)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Ordered, E> {
                Ok(Ordered::Int)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Ordered, E> {
                Ok(Ordered::Float)
            }
            fn visit_str<E>(self, s: &str) -> Result<Ordered, E> {
                Ok(Ordered::Str(shape_of_string(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Ordered::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry()? {
                    entries.push((k, v));
                }
                Ok(Ordered::Obj(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string value as compared: its form for ids, times and URLs (which
/// naturally differ between the example and a delivery), else itself.
fn shape_of_string(s: &str) -> String {
    let forms = [
        (r"^task_[0-9A-HJKMNP-TV-Z]{26}$", "<task id>"),
        (r"^evt_[0-9A-HJKMNP-TV-Z]{26}$", "<event id>"),
        (
            r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$",
            "<RFC 3339 UTC millis>",
        ),
        (r"^https?://\S+$", "<absolute http(s) URL>"),
    ];
    for (pattern, form) in forms {
        if Regex::new(pattern).unwrap().is_match(s) {
            return form.to_owned();
        }
    }
    s.to_owned()
}

/// A header value as compared: the form of those that differ per delivery.
fn shape_of_header(name: &str, value: &str) -> String {
    let form = match name.to_ascii_lowercase().as_str() {
        "webhook-id" => r"^evt_[0-9A-HJKMNP-TV-Z]{26}$",
        "webhook-timestamp" | "content-length" => r"^[0-9]+$",
        "webhook-signature" => r"^v1,[A-Za-z0-9+/]{43}=$",
        "host" => r"^[A-Za-z0-9.-]+(:[0-9]+)?$",
        _ => return value.to_owned(),
    };
    assert!(
        Regex::new(form).unwrap().is_match(value),
        "header {name}: {value:?} is not of the form {form}"
    );
    format!("<{form}>")
}

/// Request line, headers (name as written, value shape) and body of a raw
/// HTTP/1.1 request head and body.
fn parse_request(head: &str, body: &str) -> (String, Vec<(String, String)>, Ordered) {
    let mut lines = head.lines();
    let request_line = lines.next().expect("request line").trim().to_owned();
    let headers = lines
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').expect("header line");
            (name.to_owned(), shape_of_header(name, value.trim()))
        })
        .collect();
    let body: Ordered = serde_json::from_str(body).expect("JSON body");
    (request_line, headers, body)
}

/// The example between the README's `wire-example` markers: the ```http
/// block and the ```json block.
fn readme_example() -> (String, String) {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../callback/README.md"
    ))
    .expect("crates/callback/README.md");
    let start = readme
        .find("<!-- wire-example:start -->")
        .expect("start marker");
    let end = readme
        .find("<!-- wire-example:end -->")
        .expect("end marker");
    let block = &readme[start..end];
    let fenced = |lang: &str| {
        let open = format!("```{lang}\n");
        let from = block.find(&open).expect("fenced block") + open.len();
        let to = from + block[from..].find("```").expect("closing fence");
        block[from..to].to_owned()
    };
    (fenced("http"), fenced("json"))
}

/// Raw requests received: (head, body).
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A minimal HTTP/1.1 receiver on loopback that records each request's raw
/// head and body and answers 200 (keep-alive).
async fn raw_receiver() -> (std::net::SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    let total = head_end + 4 + length;
                    while buffer.len() < total {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buffer[head_end + 4..total]).into_owned();
                    store.lock().unwrap().push((head, body));
                    buffer.drain(..total);
                    if socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, received)
}

#[tokio::test]
async fn callback_readme_matches_the_wire() {
    let (addr, received) = raw_receiver().await;
    let app = spawn_app(
        Backend::Sqlite,
        AppOptions {
            extra: vec![
                (
                    "callback_url".into(),
                    format!("\"http://{addr}/modelgen/callback\""),
                ),
                ("callback_token".into(), format!("{TOKEN:?}")),
                ("callback_signing_secret".into(), format!("{SECRET:?}")),
            ],
        },
    )
    .await;
    // The example's task: an outfit of user u-42, request id req-7, side view.
    let base = app.create_default("u-42").await;
    assert_eq!(app.drive_until_terminal(&base).await["status"], "completed");
    let (status, body) = app
        .post(
            "/models/outfit",
            &json!({"user_id": "u-42", "request_id": "req-7", "base_model_task_id": base,
                    "angle": "side", "outfit_images": [tiny_png()]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let outfit = body["data"]["task_id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.drive_until_terminal(&outfit).await["status"],
        "completed"
    );

    let end = Instant::now() + Duration::from_secs(10);
    let (head, body) = loop {
        app.engine.deliver_due_callbacks().await.unwrap();
        let found = received
            .lock()
            .unwrap()
            .iter()
            .find(|(_, body)| body.contains(&outfit))
            .cloned();
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < end, "the outfit's callback never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let (readme_head, readme_body) = readme_example();
    let (want_line, want_headers, want_body) = parse_request(&readme_head, &readme_body);
    let (got_line, got_headers, got_body) = parse_request(&head, &body);
    assert_eq!(got_line, want_line, "request line");
    assert_eq!(
        got_headers, want_headers,
        "headers (name, value or its form), in order"
    );
    assert_eq!(
        got_body, want_body,
        "body keys in order, values or their form"
    );
    // Compact on the wire, as the README says.
    assert!(!body.contains('\n'), "{body}");
}
