//! The `apimart_response` fuzz target (fuzz/README.md): the lenient parsers
//! of Apimart's 2xx bodies (`parse.rs`) on any bytes. They must never panic,
//! and what they accept must hold their promises (progress within 0–100, a
//! non-blank task id, finite money, URLs without blanks).
//!
//! Runs over every file of `fuzz/corpus/apimart_response/`, over arbitrary
//! bytes, and over structure-aware bodies (the documented shapes with fields
//! of every JSON type). Cases: `MODELGEN_FUZZ_CASES` (default 256).

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("MODELGEN_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The target (shared with the coverage-guided one, `crate::fuzzing`).
fn apimart_response_target(body: &[u8]) {
    crate::fuzzing::parse_all(body);
}

#[test]
fn fuzz_apimart_response_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/apimart_response");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{}: only {} files",
        dir.display(),
        files.len()
    );
    for path in files {
        let body = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| apimart_response_target(&body));
        assert!(outcome.is_ok(), "corpus file {} fails", path.display());
    }
}

/// Any JSON value, leaves biased to what the parsers read, keys to the ones
/// they look at (also `parse.rs`'s `arbitrary_json_never_panics`).
pub(crate) fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "",
            " ",
            "200",
            "1e400",
            "-1e400",
            "NaN",
            "inf",
            "-5",
            "101",
            "50.5",
            "true",
            "0",
            "completed",
            "COMPLETED",
            "failed",
            "processing",
            "submitted",
            "pending",
            "task_01",
            "https://cdn.example.com/a.png",
            " https://x/y.png ",
        ])
        .prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "code",
                        "data",
                        "id",
                        "task_id",
                        "status",
                        "progress",
                        "result",
                        "images",
                        "url",
                        "expires_at",
                        "error",
                        "message",
                        "msg",
                        "type",
                        "estimated_time",
                        "task_info",
                        "actual_time",
                        "created",
                        "completed",
                        "cost",
                        "credits_cost",
                        "success",
                        "remain_balance",
                        "used_balance",
                        "unlimited_quota",
                    ])
                    .prop_map(str::to_string),
                    ".{0,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The documented shapes with any values in their fields.
fn shaped() -> impl Strategy<Value = Value> {
    (value(), value(), value(), value(), value(), value(), any::<u8>()).prop_map(
        |(code, id, status, progress, url, extra, shape)| match shape % 4 {
            0 => json!({"code": code, "data": [{"status": status, "task_id": id}]}),
            1 => json!({"code": code, "data": {"id": id, "status": status, "progress": progress,
                "result": {"images": [{"url": url, "expires_at": extra}]}, "error": extra}}),
            2 => json!({"success": code, "remain_balance": progress, "data": extra}),
            _ => json!({"code": code, "id": id, "status": status, "data": null, "message": extra}),
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_apimart_response_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        apimart_response_target(&body);
    }

    #[test]
    fn fuzz_apimart_response_any_json(v in value()) {
        apimart_response_target(v.to_string().as_bytes());
    }

    #[test]
    fn fuzz_apimart_response_shaped(v in shaped(), cut in any::<prop::sample::Index>()) {
        let bytes = v.to_string().into_bytes();
        apimart_response_target(&bytes);
        // The same body cut off anywhere, as a dropped connection leaves it.
        apimart_response_target(&bytes[..cut.index(bytes.len() + 1)]);
    }
}
