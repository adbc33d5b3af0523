//! The `request_body` fuzz target (fuzz/README.md): what the service does
//! with a request body, from the `Content-Type` header and raw bytes to the
//! checked request, in two forms:
//! - pure: `check_json_content_type`, `decode_json_body` into each create
//!   DTO, then the DTO's rules and the domain parsers the service runs on it,
//!   and the error's rendering. Fast, over the committed corpus
//!   (`fuzz/corpus/request_body/`, each file a `Content-Type` line then the body),
//!   arbitrary bytes and structure-aware JSON;
//! - over real HTTP against one app: structure-aware bodies and content types
//!   must never get a 5xx, and every answer is the envelope.
//!
//! Cases: `MODELGEN_FUZZ_CASES` (default 256) for the pure properties,
//! `MODELGEN_FUZZ_HTTP_CASES` (default 48) for the HTTP one.

#![expect(
    clippy::unwrap_used,
    reason = "fuzz harness: a failed read or a broken promise must fail the test"
)]

use std::path::PathBuf;

use actix_web::ResponseError as _;
use actix_web::body::MessageBody as _;
use modelgen_api::dto::{CreateDefaultRequest, CreateEditRequest, CreateOutfitRequest};
use modelgen_api::error::ApiError;
use modelgen_api::http::{check_json_content_type, decode_json_body};
use modelgen_domain::{BodyProfile, ImageInput, PixelBudget};
use modelgen_e2e::Backend;
use proptest::prelude::*;
use serde_json::{Value, json};
use validator::Validate as _;

use crate::helpers::{AppOptions, runtime, spawn_app, tiny_png};

/// Decoded-image cap of the pure target, bytes (the default `MAX_IMAGE_BYTES`).
const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// Longest message an error about a request may carry, characters.
const MAX_MESSAGE_CHARS: usize = 600;

fn cases(var: &str, default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// An error as the client gets it: a 4xx envelope with a bounded message.
fn assert_client_error(error: &ApiError) {
    let response = error.error_response();
    let status = response.status().as_u16();
    assert!(matches!(status, 400 | 413 | 415), "{status} for {error:?}");
    let bytes = response.into_body().try_into_bytes().unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        body["code"]
            .as_i64()
            .is_some_and(|c| (1001..=1009).contains(&c)),
        "{body}"
    );
    let msg = body["msg"].as_str().unwrap();
    assert!(!msg.is_empty());
    assert!(msg.chars().count() <= MAX_MESSAGE_CHARS, "{msg:.200}");
    if let ApiError::Invalid(errors) = error {
        assert!(!errors.is_empty());
        for e in errors {
            assert!(!e.field.is_empty(), "{error:?}");
            assert!(
                e.message.chars().count() <= MAX_MESSAGE_CHARS,
                "{:.200}",
                e.message
            );
        }
    }
}

fn check_image(raw: &Option<String>) {
    if let Some(raw) = raw
        && let Err(e) = ImageInput::parse_within(raw, MAX_IMAGE_BYTES, PixelBudget::default())
    {
        assert!(e.to_string().chars().count() <= MAX_MESSAGE_CHARS);
    }
}

/// The target: never panics; every refusal is a 4xx envelope.
fn request_body_target(content_type: Option<&[u8]>, body: &[u8]) {
    if let Err(e) = check_json_content_type(content_type) {
        assert!(matches!(e, ApiError::UnsupportedMediaType(_)));
        assert_client_error(&e);
    }
    match decode_json_body::<CreateDefaultRequest>(body) {
        Ok(req) => {
            let _ = req.validate();
            if let Some(profile) = req.body_profile {
                let mut errors = Vec::new();
                let input = profile.into_input(&mut errors);
                if let Err(errs) = BodyProfile::parse(input) {
                    assert!(!errs.is_empty());
                }
            }
            for image in [&req.user_image, &req.picture_url, &req.user_image_base64] {
                check_image(image);
            }
        }
        Err(e) => assert_client_error(&e),
    }
    match decode_json_body::<CreateEditRequest>(body) {
        Ok(req) => {
            let _ = req.validate();
            if let Some(text) = &req.edit_instructions {
                let _ = modelgen_domain::EditInstructions::parse(text);
            }
        }
        Err(e) => assert_client_error(&e),
    }
    match decode_json_body::<CreateOutfitRequest>(body) {
        Ok(req) => {
            let _ = req.validate();
            for list in [
                req.outfit_images,
                req.outfit_image_urls,
                req.outfit_image_base64,
            ] {
                for image in list.map(|l| l.into_vec()).unwrap_or_default() {
                    check_image(&Some(image));
                }
            }
            if let Some(text) = &req.outfit_description {
                let _ = modelgen_domain::OutfitDescription::parse(text);
            }
        }
        Err(e) => assert_client_error(&e),
    }
}

/// `fuzz/corpus/request_body/*`: the first line is the `Content-Type` value
/// (`-` for none), the rest the body.
fn corpus() -> Vec<(String, Option<Vec<u8>>, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/request_body");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let (line, body) = match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => (bytes[..i].to_vec(), bytes[i + 1..].to_vec()),
                None => (bytes.clone(), Vec::new()),
            };
            let ct = (line != b"-").then_some(line);
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, ct, body)
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 10,
        "{}: only {} files",
        dir.display(),
        out.len()
    );
    out
}

/// Values of every JSON type, some of them hostile, for any field.
fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!(28.5)),
        Just(json!(28.0)),
        Just(json!(1e308)),
        Just(json!(-0.0)),
        ".{0,80}".prop_map(Value::from),
        Just(Value::from("\u{0000}\u{202e}\u{feff}")),
        Just(Value::from("x".repeat(5000))),
        Just(Value::from(tiny_png())),
        Just(Value::from("data:image/png;base64,iVBORw0KGgo=")),
        Just(Value::from("https://169.254.169.254/latest/meta-data/")),
        Just(Value::from(modelgen_e2e::bombs::png_data_uri(
            &modelgen_e2e::bombs::png_declaring(50_000, 50_000)
        ))),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A create body: the real field names (some misspelt) with values of any type.
fn request_json() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec![
        "user_id",
        "request_id",
        "user_image",
        "picture_url",
        "user_image_base64",
        "body_profile",
        "size",
        "base_model_task_id",
        "edit_instructions",
        "angle",
        "outfit_images",
        "outfit_image_urls",
        "outfit_image_base64",
        "outfit_description",
        "User_Id",
        "",
    ]);
    let profile_field = prop::sample::select(vec![
        "gender",
        "height_cm",
        "height",
        "weight_kg",
        "weight",
        "age",
        "skin_tone",
        "skin_color",
        "body_shape",
        "body_type",
        "extra",
    ]);
    let profile = proptest::collection::btree_map(profile_field, json_value(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    (
        proptest::collection::btree_map(field, json_value(), 0..10),
        proptest::option::of(profile),
    )
        .prop_map(|(fields, profile)| {
            let mut obj: serde_json::Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            if let Some(p) = profile {
                obj.insert("body_profile".into(), p);
            }
            Value::Object(obj)
        })
}

/// Content types a client may send, good and bad.
fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(Some("application/json".to_string())),
        1 => prop::sample::select(vec![
            "APPLICATION/JSON; charset=UTF-8",
            "application/json; charset=\"utf8\"",
            "application/json; charset=gbk",
            "application/x-www-form-urlencoded",
            "text/plain",
            "multipart/form-data; boundary=-",
            "application/vnd.api+json",
            "application/json;;;=",
            "",
        ])
        .prop_map(|s| Some(s.to_string())),
        1 => Just(None),
        1 => "[ -~]{0,40}".prop_map(Some),
    ]
}

/// A body as bytes: a request object, or it cut, padded or re-encoded.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => request_json().prop_map(|v| v.to_string().into_bytes()),
        1 => (request_json(), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let bytes = v.to_string().into_bytes();
            let cut = i.index(bytes.len() + 1);
            bytes[..cut].to_vec()
        }),
        1 => request_json().prop_map(|v| {
            // Latin-1 instead of UTF-8: every char above U+007F as one byte.
            v.to_string().chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')).collect()
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

#[test]
fn fuzz_request_body_corpus() {
    for (name, ct, body) in corpus() {
        let outcome = std::panic::catch_unwind(|| request_body_target(ct.as_deref(), &body));
        assert!(outcome.is_ok(), "corpus file {name} fails");
    }
}

proptest! {
    #![proptest_config(cases("MODELGEN_FUZZ_CASES", 256))]

    #[test]
    fn fuzz_request_body_arbitrary(
        ct in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        request_body_target(ct.as_deref(), &body);
    }

    #[test]
    fn fuzz_request_body_structured(ct in content_type(), body in body_bytes()) {
        request_body_target(ct.as_deref().map(str::as_bytes), &body);
    }
}

#[test]
fn fuzz_request_body_over_http_never_gets_a_5xx() {
    let rt = runtime();
    let app = rt.block_on(spawn_app(Backend::Sqlite, AppOptions::default()));
    let base = rt.block_on(app.create_default("fuzz"));
    rt.block_on(app.drive_until_terminal(&base));
    proptest!(cases("MODELGEN_FUZZ_HTTP_CASES", 48), |(
        path in prop::sample::select(vec!["/models/default", "/models/edit", "/models/outfit"]),
        ct in content_type(),
        body in body_bytes(),
        use_base in any::<bool>(),
    )| {
        // Half the edits and outfits name a real completed model, so that
        // they get past the base-model lookup into everything after it.
        let body = match (use_base, serde_json::from_slice::<Value>(&body)) {
            (true, Ok(Value::Object(mut obj))) => {
                obj.insert("user_id".into(), json!("fuzz"));
                obj.insert("base_model_task_id".into(), json!(base));
                Value::Object(obj).to_string().into_bytes()
            }
            _ => body,
        };
        let r = rt.block_on(async {
            let mut rb = app.client.post(format!("{}{path}", app.base)).body(body.clone());
            if let Some(ct) = &ct {
                rb = rb.header("content-type", ct.as_str());
            }
            rb.send().await
        });
        let r = r.unwrap();
        let status = r.status().as_u16();
        let answer: Value = rt.block_on(r.json()).unwrap();
        prop_assert!(
            matches!(status, 200 | 202 | 400 | 404 | 409 | 413 | 415),
            "{} {} -> {}: {}", path, String::from_utf8_lossy(&body).chars().take(300).collect::<String>(), status, answer
        );
        prop_assert_eq!(answer["code"].as_i64() == Some(0), status < 300, "{}", answer);
        prop_assert!(answer["msg"].as_str().is_some_and(|m| !m.is_empty()), "{}", answer);
    });
}
