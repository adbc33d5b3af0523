//! Lenient parsing of Apimart's 2xx bodies into typed responses.
//!
//! Works on `serde_json::Value` rather than derived structs because upstream varies
//! (docs/apimart.md): `data` as an array or an object, ids under `task_id` or `id`, `url` as a
//! string or an array, numbers sometimes sent as strings, fields missing. Nothing here panics,
//! whatever the body.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::json_message;
use crate::model::{Balance, ResultImage, TaskStatusResponse, UpstreamStatus, UpstreamTaskError};

/// The success value of the body's `code` (docs/apimart.md: "`code: 200` in the body").
const SUCCESS_CODE: i64 = 200;

/// Why a 2xx body is not a usable answer.
#[derive(Debug, PartialEq)]
pub(crate) enum BodyProblem {
    /// The body carries an error `code` other than 200.
    Upstream { code: i64, message: String },
    /// The body is not in any shape we know; the text says what is missing.
    Invalid(String),
}

/// The fields of a submit answer.
#[derive(Debug, PartialEq)]
pub(crate) struct Submitted {
    pub(crate) task_id: String,
    pub(crate) status: UpstreamStatus,
    pub(crate) estimated_time: Option<Duration>,
}

/// Parses the answer to `POST /images/generations`: `data` as `[{"status","task_id"}]` or as
/// `{"id","status","progress","created","task_info":{"estimated_time"}}`.
pub(crate) fn parse_submit(body: &[u8]) -> Result<Submitted, BodyProblem> {
    let task = match envelope(body)? {
        Value::Array(items) => items
            .into_iter()
            .find(|item| task_id_of(item).is_some())
            .ok_or_else(|| invalid("`data` array holds no task id"))?,
        obj @ Value::Object(_) => obj,
        _ => return Err(invalid("`data` is neither an object nor an array")),
    };
    let task_id = task_id_of(&task).ok_or_else(|| invalid("no `task_id` or `id` in `data`"))?;
    let status = task
        .get("status")
        .and_then(text)
        .map_or(UpstreamStatus::Submitted, |s| UpstreamStatus::parse(&s));
    let estimated_time = task
        .get("task_info")
        .and_then(|info| info.get("estimated_time"))
        .or_else(|| task.get("estimated_time"))
        .and_then(seconds);
    Ok(Submitted {
        task_id,
        status,
        estimated_time,
    })
}

/// Parses the answer to `GET /tasks/{id}`; `asked_id` fills `id` when upstream omits it.
pub(crate) fn parse_status(body: &[u8], asked_id: &str) -> Result<TaskStatusResponse, BodyProblem> {
    let data = envelope(body)?;
    let Value::Object(task) = data else {
        return Err(invalid("`data` is not an object"));
    };
    let status = task
        .get("status")
        .and_then(text)
        .map(|s| UpstreamStatus::parse(&s))
        .ok_or_else(|| invalid("no `status` in `data`"))?;
    let id = ["id", "task_id"]
        .iter()
        .find_map(|k| task.get(*k).and_then(text))
        .unwrap_or_else(|| asked_id.to_owned());
    let progress =
        task.get("progress")
            .and_then(progress)
            .unwrap_or(if status == UpstreamStatus::Completed {
                100
            } else {
                0
            });
    let images = task
        .get("result")
        .and_then(|r| r.get("images"))
        .and_then(Value::as_array)
        .map(|images| images.iter().filter_map(result_image).collect())
        .unwrap_or_default();
    Ok(TaskStatusResponse {
        id,
        status,
        progress,
        images,
        error: task.get("error").and_then(task_error),
        estimated_time: task.get("estimated_time").and_then(seconds),
        actual_time: task.get("actual_time").and_then(seconds),
        created: task.get("created").and_then(integer),
        completed: task.get("completed").and_then(integer),
        cost: task.get("cost").and_then(finite),
        credits_cost: task.get("credits_cost").and_then(finite),
    })
}

/// The balance fields (docs/apimart.md "Balance").
const BALANCE_FIELDS: [&str; 5] = [
    "remain_balance",
    "remain_credits",
    "used_balance",
    "used_credits",
    "unlimited_quota",
];

/// Parses the answer to `GET /balance`: `{"success":true,"remain_balance",…}` at the top
/// level, or the same fields under `data` (an envelope some gateways add). `success: false`
/// or a `code` other than 200 is an upstream error; a body without any balance field is
/// invalid.
pub(crate) fn parse_balance(body: &[u8], http_status: u16) -> Result<Balance, BodyProblem> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| BodyProblem::Invalid(format!("body is not JSON: {e}")))?;
    let Value::Object(obj) = &json else {
        return Err(invalid("body is not a JSON object"));
    };
    let refused = |code: i64| BodyProblem::Upstream {
        code,
        message: json_message(&json).unwrap_or_else(|| "no message in body".to_owned()),
    };
    if let Some(code) = obj.get("code").and_then(integer)
        && code != SUCCESS_CODE
    {
        return Err(refused(code));
    }
    if obj.get("success").and_then(flag) == Some(false) {
        return Err(refused(i64::from(http_status)));
    }
    let has_fields = |m: &Map<String, Value>| BALANCE_FIELDS.iter().any(|k| m.contains_key(*k));
    let fields = match obj.get("data") {
        Some(Value::Object(data)) if !has_fields(obj) && has_fields(data) => data,
        _ if has_fields(obj) => obj,
        _ => return Err(invalid("no balance field in body")),
    };
    Ok(Balance {
        remain_balance: fields.get("remain_balance").and_then(finite),
        remain_credits: fields.get("remain_credits").and_then(finite),
        used_balance: fields.get("used_balance").and_then(finite),
        used_credits: fields.get("used_credits").and_then(finite),
        unlimited_quota: fields
            .get("unlimited_quota")
            .and_then(flag)
            .unwrap_or(false),
    })
}

fn invalid(reason: &str) -> BodyProblem {
    BodyProblem::Invalid(reason.to_owned())
}

/// Checks `code` and returns `data`. A body without `data` that itself looks like a task
/// (has an id) is accepted as unwrapped.
fn envelope(body: &[u8]) -> Result<Value, BodyProblem> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| BodyProblem::Invalid(format!("body is not JSON: {e}")))?;
    let Value::Object(mut obj) = json else {
        return Err(invalid("body is not a JSON object"));
    };
    // A `code` that is not a number says nothing about success; judge by `data` then.
    match obj.get("code").and_then(integer) {
        Some(code) if code != SUCCESS_CODE => {
            let message = json_message(&Value::Object(obj))
                .unwrap_or_else(|| "no message in body".to_owned());
            return Err(BodyProblem::Upstream { code, message });
        }
        _ => {}
    }
    match obj.remove("data") {
        Some(Value::Null) | None if has_task_id(&obj) => Ok(Value::Object(obj)),
        Some(Value::Null) | None => {
            let hint = json_message(&Value::Object(obj))
                .map(|m| format!(" (message: {m})"))
                .unwrap_or_default();
            Err(BodyProblem::Invalid(format!("body has no `data`{hint}")))
        }
        Some(data) => Ok(data),
    }
}

fn has_task_id(obj: &Map<String, Value>) -> bool {
    ["task_id", "id"]
        .iter()
        .any(|k| obj.get(*k).and_then(text).is_some())
}

/// `task_id`, else `id`, as a non-empty string.
fn task_id_of(v: &Value) -> Option<String> {
    ["task_id", "id"]
        .iter()
        .find_map(|k| v.get(*k).and_then(text))
}

/// A non-blank string, or a number written out (ids are opaque).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A number, or a string holding one.
fn number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    (!n.is_nan()).then_some(n)
}

/// A finite number, or a string holding one (money); infinities and NaN are dropped.
fn finite(v: &Value) -> Option<f64> {
    number(v).filter(|n| n.is_finite())
}

/// A boolean, or `"true"`/`"false"`/`1`/`0` as some gateways send them.
fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().and_then(|i| match i {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// An integer (unix seconds, codes). Exact for JSON integers; fractions are dropped, values
/// beyond `i64` saturate.
fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            // Saturating float-to-int cast: huge values become i64::MAX/MIN.
            n.as_f64().map(|f| f as i64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| !f.is_nan())
                    .map(|f| f as i64)
            })
        }
        _ => None,
    }
}

/// Seconds as a duration; negative values are dropped.
fn seconds(v: &Value) -> Option<Duration> {
    number(v)
        .filter(|s| *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// Percent clamped to 0..=100.
fn progress(v: &Value) -> Option<u8> {
    // After the clamp the value fits u8 exactly.
    number(v).map(|p| p.clamp(0.0, 100.0).round() as u8)
}

/// One entry of `result.images`: `{"url": "…" | ["…"], "expires_at": <unix s>}`, or a bare
/// URL string. `None` when it holds no URL.
fn result_image(v: &Value) -> Option<ResultImage> {
    let (urls, expires_at) = match v {
        Value::String(s) => (vec![s.trim().to_owned()], None),
        Value::Object(img) => {
            let urls = match img.get("url") {
                Some(Value::String(s)) => vec![s.trim().to_owned()],
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.trim().to_owned())
                    .collect(),
                _ => Vec::new(),
            };
            (urls, img.get("expires_at").and_then(integer))
        }
        _ => return None,
    };
    let urls: Vec<String> = urls.into_iter().filter(|u| !u.is_empty()).collect();
    (!urls.is_empty()).then_some(ResultImage { urls, expires_at })
}

/// `data.error`: `{code, message, type}`, or a bare message string. `None` when null, empty
/// or not an error at all.
fn task_error(v: &Value) -> Option<UpstreamTaskError> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(UpstreamTaskError {
            code: None,
            message: s.trim().to_owned(),
            kind: None,
        }),
        Value::Object(err) => {
            let code = err.get("code").and_then(text);
            let kind = err.get("type").and_then(text);
            let message = ["message", "msg"]
                .iter()
                .find_map(|k| err.get(*k).and_then(text));
            if code.is_none() && kind.is_none() && message.is_none() {
                return None;
            }
            Some(UpstreamTaskError {
                code,
                message: message.unwrap_or_else(|| "unknown error".to_owned()),
                kind,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn bytes(v: &Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn submit_array_shape() {
        let body = json!({"code":200,"data":[{"status":"submitted","task_id":"task_01K"}]});
        assert_eq!(
            parse_submit(&bytes(&body)),
            Ok(Submitted {
                task_id: "task_01K".into(),
                status: UpstreamStatus::Submitted,
                estimated_time: None
            })
        );
    }

    #[test]
    fn submit_object_shape() {
        let body = json!({"code":200,"data":{"id":"task_01J","object":"image.generation.task",
            "status":"pending","progress":0,"created":1_700_000_000,
            "task_info":{"can_cancel":true,"estimated_time":100}}});
        assert_eq!(
            parse_submit(&bytes(&body)),
            Ok(Submitted {
                task_id: "task_01J".into(),
                status: UpstreamStatus::Pending,
                estimated_time: Some(Duration::from_secs(100))
            })
        );
    }

    #[test]
    fn submit_problems() {
        let upstream = parse_submit(&bytes(&json!({"code":402,"msg":"no money"})));
        assert_eq!(
            upstream,
            Err(BodyProblem::Upstream {
                code: 402,
                message: "no money".into()
            })
        );
        for body in [
            json!({"code":200,"data":[]}),
            json!({"code":200,"data":{"status":"pending"}}),
            json!({"code":200}),
            json!({"code":200,"data":"task_1"}),
            json!([1, 2]),
        ] {
            assert!(
                matches!(parse_submit(&bytes(&body)), Err(BodyProblem::Invalid(_))),
                "{body}"
            );
        }
        assert!(matches!(
            parse_submit(b"<html>"),
            Err(BodyProblem::Invalid(_))
        ));
        // Unwrapped task and string codes are accepted.
        assert!(parse_submit(&bytes(&json!({"task_id":"t1","status":"submitted"}))).is_ok());
        assert!(parse_submit(&bytes(&json!({"code":"200","data":{"id":"t1"}}))).is_ok());
    }

    #[test]
    fn status_completed_with_both_url_shapes() -> Result<(), String> {
        let body = json!({"code":200,"data":{"id":"task_1","status":"completed","progress":100,
            "result":{"images":[{"url":["https://a/1.png","https://a/2.png"],"expires_at":1_700_086_400},
                                {"url":"https://a/3.png"},{"url":[]}]},
            "created":1_700_000_000,"completed":1_700_000_019,"estimated_time":60,"actual_time":19}});
        let s = parse_status(&bytes(&body), "asked").map_err(|e| format!("{e:?}"))?;
        assert_eq!(s.id, "task_1");
        assert_eq!(s.status, UpstreamStatus::Completed);
        assert_eq!(
            s.images,
            vec![
                ResultImage {
                    urls: vec!["https://a/1.png".into(), "https://a/2.png".into()],
                    expires_at: Some(1_700_086_400)
                },
                ResultImage {
                    urls: vec!["https://a/3.png".into()],
                    expires_at: None
                },
            ]
        );
        assert_eq!(s.actual_time, Some(Duration::from_secs(19)));
        assert_eq!(s.estimated_time, Some(Duration::from_secs(60)));
        assert_eq!(
            (s.created, s.completed),
            (Some(1_700_000_000), Some(1_700_000_019))
        );
        assert_eq!(s.error, None);
        Ok(())
    }

    #[test]
    fn status_failed_and_sparse() -> Result<(), String> {
        let body = json!({"code":200,"data":{"status":"failed",
            "error":{"code":"content_policy","message":"blocked","type":"moderation"}}});
        let s = parse_status(&bytes(&body), "asked").map_err(|e| format!("{e:?}"))?;
        assert_eq!(s.id, "asked");
        assert_eq!(s.progress, 0);
        assert_eq!(
            s.error,
            Some(UpstreamTaskError {
                code: Some("content_policy".into()),
                message: "blocked".into(),
                kind: Some("moderation".into())
            })
        );
        let body =
            json!({"code":200,"data":{"id":"t","status":"completed","error":null,"result":null}});
        let s = parse_status(&bytes(&body), "asked").map_err(|e| format!("{e:?}"))?;
        assert_eq!((s.progress, s.images.len(), s.error), (100, 0, None));
        assert!(matches!(
            parse_status(&bytes(&json!({"code":200,"data":{"id":"t"}})), "t"),
            Err(BodyProblem::Invalid(_))
        ));
        Ok(())
    }

    #[test]
    fn status_cost_is_tolerant() -> Result<(), String> {
        let with = |extra: Value| -> Result<(Option<f64>, Option<f64>), String> {
            let mut data = json!({"id":"t","status":"completed"});
            if let (Value::Object(d), Value::Object(e)) = (&mut data, extra) {
                d.extend(e);
            }
            let s = parse_status(&bytes(&json!({"code":200,"data":data})), "t")
                .map_err(|e| format!("{e:?}"))?;
            Ok((s.cost, s.credits_cost))
        };
        assert_eq!(with(json!({}))?, (None, None), "missing");
        assert_eq!(
            with(json!({"cost":null,"credits_cost":null}))?,
            (None, None),
            "null"
        );
        assert_eq!(
            with(json!({"cost":0.05,"credits_cost":5}))?,
            (Some(0.05), Some(5.0)),
            "numbers"
        );
        assert_eq!(
            with(json!({"cost":" 0.12 ","credits_cost":"12"}))?,
            (Some(0.12), Some(12.0)),
            "numeric strings"
        );
        assert_eq!(
            with(json!({"cost":"free","credits_cost":"inf"}))?,
            (None, None),
            "not a finite number"
        );
        assert_eq!(
            with(json!({"cost":[1],"credits_cost":{"a":1}}))?,
            (None, None),
            "wrong types"
        );
        Ok(())
    }

    #[test]
    fn balance_shapes() -> Result<(), String> {
        let parse = |v: Value| parse_balance(&bytes(&v), 200).map_err(|e| format!("{e:?}"));
        let b = parse(
            json!({"success":true,"remain_balance":9.15,"remain_credits":"91.5",
            "used_balance":"1.2","used_credits":12,"unlimited_quota":false}),
        )?;
        assert_eq!(
            b,
            Balance {
                remain_balance: Some(9.15),
                remain_credits: Some(91.5),
                used_balance: Some(1.2),
                used_credits: Some(12.0),
                unlimited_quota: false,
            }
        );
        let wrapped =
            parse(json!({"code":200,"data":{"remain_balance":"3","unlimited_quota":"true"}}))?;
        assert_eq!(wrapped.remain_balance, Some(3.0));
        assert!(wrapped.unlimited_quota);
        let sparse = parse(json!({"remain_credits":null,"used_balance":"n/a"}))?;
        assert_eq!(sparse, Balance::new());
        assert_eq!(
            parse_balance(
                &bytes(&json!({"success":false,"message":"invalid token"})),
                200
            ),
            Err(BodyProblem::Upstream {
                code: 200,
                message: "invalid token".into()
            })
        );
        assert!(matches!(
            parse_balance(&bytes(&json!({"code":401,"msg":"no"})), 200),
            Err(BodyProblem::Upstream { code: 401, .. })
        ));
        for body in [
            json!({}),
            json!({"success":true}),
            json!([1]),
            json!({"data":{}}),
        ] {
            assert!(
                matches!(
                    parse_balance(&bytes(&body), 200),
                    Err(BodyProblem::Invalid(_))
                ),
                "{body}"
            );
        }
        assert!(matches!(
            parse_balance(b"<html>502</html>", 200),
            Err(BodyProblem::Invalid(_))
        ));
        Ok(())
    }

    fn status_with_progress(progress: Value) -> Result<u8, String> {
        let body = json!({"code":200,"data":{"id":"t","status":"processing","progress":progress}});
        parse_status(&bytes(&body), "t")
            .map(|s| s.progress)
            .map_err(|e| format!("{e:?}"))
    }

    proptest! {
        #[test]
        fn any_integer_progress_clamps(p in any::<i64>()) {
            prop_assert_eq!(status_with_progress(json!(p)), Ok(p.clamp(0, 100) as u8));
        }

        #[test]
        fn any_unsigned_progress_clamps(p in any::<u64>()) {
            prop_assert_eq!(status_with_progress(json!(p)), Ok(p.min(100) as u8));
        }

        #[test]
        fn any_float_progress_stays_in_range(p in any::<f64>()) {
            let got = status_with_progress(json!(p));
            prop_assert!(matches!(got, Ok(0..=100)), "{:?}", got);
        }

        #[test]
        fn arbitrary_json_never_panics(v in crate::parse_fuzz::value()) {
            let raw = bytes(&v);
            let _ = parse_submit(&raw);
            let _ = parse_status(&raw, "asked");
            let _ = parse_balance(&raw, 200);
            let wrapped = bytes(&json!({"code":200,"data":v}));
            if let Ok(s) = parse_status(&wrapped, "asked") {
                prop_assert!(s.progress <= 100);
                prop_assert!(s.images.iter().all(|i| !i.urls.is_empty()));
                prop_assert!(s.cost.is_none_or(f64::is_finite));
                prop_assert!(s.credits_cost.is_none_or(f64::is_finite));
            }
            let _ = parse_submit(&wrapped);
            if let Ok(b) = parse_balance(&wrapped, 200) {
                prop_assert!(b.remain_balance.is_none_or(f64::is_finite));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_submit(&raw);
            let _ = parse_status(&raw, "asked");
            let _ = parse_balance(&raw, 200);
            let _ = crate::error::error_message(&String::from_utf8_lossy(&raw));
        }
    }
}
