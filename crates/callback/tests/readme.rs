//! The signature example in the top-level README is real: this test reads the
//! table between the `signature-example` markers and checks it.

#![expect(clippy::expect_used, reason = "test")]

use modelgen_callback::{SigningSecret, sign, verify};

fn cell(block: &str, key: &str) -> String {
    block
        .lines()
        .find(|l| l.starts_with(&format!("| {key}")))
        .and_then(|l| l.split(" | ").nth(1))
        .map(|v| {
            v.trim()
                .trim_end_matches('|')
                .trim()
                .trim_matches('`')
                .to_string()
        })
        .expect(key)
}

#[test]
fn readme_signature_example_verifies() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README");
    let start = readme
        .find("<!-- signature-example:start -->")
        .expect("start marker");
    let end = readme
        .find("<!-- signature-example:end -->")
        .expect("end marker");
    let block = &readme[start..end];
    let secret = SigningSecret::parse(&cell(block, "secret")).expect("secret");
    let id = cell(block, "`webhook-id`");
    let ts: i64 = cell(block, "`webhook-timestamp`")
        .parse()
        .expect("timestamp");
    let body = cell(block, "body (exact bytes)");
    let documented = cell(block, "`webhook-signature`");
    let computed = sign(&secret, &id, ts, body.as_bytes());
    assert_eq!(documented, computed, "README signature is stale");
    verify(&secret, &id, ts, body.as_bytes(), &documented, ts, 300).expect("verifies");
    // The example body is a real callback payload.
    let payload: modelgen_callback::CallbackPayload = serde_json::from_str(&body).expect("payload");
    assert_eq!(payload.status, "completed");
}
