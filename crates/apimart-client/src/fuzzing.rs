//! Entry point of the fuzz target `apimart_response` (fuzz/README.md): the
//! parsers of `parse.rs` are private, so the coverage-guided target
//! (`fuzz/fuzz_targets/apimart_response.rs`, feature `fuzzing`) and the
//! `fuzz_apimart_response_*` tests call them through here.

use serde_json::Value;

use crate::parse::{BodyProblem, parse_balance, parse_status, parse_submit};

fn problem_is_bounded(problem: &BodyProblem) {
    let text = match problem {
        BodyProblem::Upstream { message, .. } => message,
        BodyProblem::Invalid(reason) => reason,
    };
    assert!(!text.is_empty());
}

/// Runs every parser of 2xx bodies on `body` and checks what they promise:
/// progress within 0–100, a non-blank task id, finite money, result URLs
/// without blanks, a non-empty reason for every refusal.
///
/// # Panics
/// When a parser panics or breaks a promise: that is the finding.
pub fn parse_all(body: &[u8]) {
    match parse_submit(body) {
        Ok(submitted) => {
            assert!(!submitted.task_id.trim().is_empty());
            assert_eq!(submitted.task_id, submitted.task_id.trim());
        }
        Err(p) => problem_is_bounded(&p),
    }
    match parse_status(body, "task_asked") {
        Ok(status) => {
            assert!(status.progress <= 100);
            assert!(!status.id.is_empty());
            for image in &status.images {
                assert!(!image.urls.is_empty());
                assert!(image.urls.iter().all(|u| !u.is_empty() && u.trim() == u));
            }
            assert!(status.cost.is_none_or(f64::is_finite));
            assert!(status.credits_cost.is_none_or(f64::is_finite));
        }
        Err(p) => problem_is_bounded(&p),
    }
    for http_status in [200, 402] {
        match parse_balance(body, http_status) {
            Ok(balance) => {
                for v in [
                    balance.remain_balance,
                    balance.remain_credits,
                    balance.used_balance,
                    balance.used_credits,
                ]
                .into_iter()
                .flatten()
                {
                    assert!(v.is_finite());
                }
            }
            Err(p) => problem_is_bounded(&p),
        }
    }
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let _ = crate::error::json_message(&value);
    }
}
