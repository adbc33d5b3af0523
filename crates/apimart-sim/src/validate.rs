//! Validation of `POST /v1/images/generations` bodies, as strict as upstream is documented
//! to be (docs/apimart.md "Submit"): a bad field is a 400 naming it in `param`.

use serde_json::{Map, Value};

use crate::wire::ApiError;

/// Longest accepted prompt, in characters (Unicode scalar values). docs/apimart.md gives 1000
/// on several models; the simulator accepts the widest model's limit so that it never
/// rejects what some upstream model accepts.
pub const MAX_PROMPT_CHARS: usize = 4000;
/// Largest `n` (images per task): "1–4 on most models" (docs/apimart.md).
pub const MAX_N: u64 = 4;
/// Most reference images per request: "up to 14–16 references depending on the model".
pub const MAX_IMAGE_URLS: usize = 16;
/// The documented aspect ratios accepted in `size` (docs/apimart.md), as (width, height).
pub const ASPECT_RATIOS: [(u32, u32); 10] = [
    (1, 1),
    (2, 3),
    (3, 2),
    (3, 4),
    (4, 3),
    (4, 5),
    (5, 4),
    (9, 16),
    (16, 9),
    (21, 9),
];
/// `size` when the body has none.
pub const DEFAULT_SIZE: (u32, u32) = (1, 1);
/// Accepted `resolution` values (Gemini/Seedream upper case, gpt-image-2 lower case).
pub const RESOLUTIONS: [&str; 6] = ["1K", "2K", "4K", "1k", "2k", "4k"];

/// A validated request, borrowing the large strings from the parsed body.
#[derive(Debug)]
pub(crate) struct GenerationRequest<'a> {
    pub(crate) prompt: &'a str,
    pub(crate) size: (u32, u32),
    pub(crate) n: u8,
    pub(crate) images: Vec<ImageRef<'a>>,
}

/// One entry of `image_urls`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ImageRef<'a> {
    /// `data:image/<subtype>;base64,<payload>`; payload not yet decoded.
    Data { payload: &'a str },
    /// `https://host/...`; only the host is kept (it labels the placeholder tile).
    Url { host: &'a str },
}

pub(crate) fn validate(body: &Value) -> Result<GenerationRequest<'_>, ApiError> {
    let Value::Object(obj) = body else {
        return Err(ApiError::invalid(
            "invalid_type",
            "Request body must be a JSON object",
            None,
        ));
    };
    let _model = required_string(obj, "model")?;
    let prompt = required_string(obj, "prompt")?;
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(ApiError::invalid(
            "string_above_max_length",
            format!("prompt must be at most {MAX_PROMPT_CHARS} characters"),
            Some("prompt".into()),
        ));
    }
    let size = match obj.get("size") {
        None | Some(Value::Null) => DEFAULT_SIZE,
        Some(Value::String(s)) => parse_ratio(s).ok_or_else(|| {
            ApiError::invalid(
                "invalid_value",
                format!("size must be one of {}", ratio_list()),
                Some("size".into()),
            )
        })?,
        Some(_) => return Err(wrong_type("size", "a string")),
    };
    let n = match obj.get("n") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(num)) => match num.as_u64() {
            Some(v) if (1..=MAX_N).contains(&v) => u8::try_from(v).unwrap_or(1),
            Some(_) => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    format!("n must be between 1 and {MAX_N}"),
                    Some("n".into()),
                ));
            }
            None => return Err(wrong_type("n", "an integer")),
        },
        Some(_) => return Err(wrong_type("n", "an integer")),
    };
    let images = match obj.get("image_urls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > MAX_IMAGE_URLS {
                return Err(ApiError::invalid(
                    "array_above_max_length",
                    format!("image_urls accepts at most {MAX_IMAGE_URLS} images"),
                    Some("image_urls".into()),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| image_ref(i, item))
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => return Err(wrong_type("image_urls", "an array of strings")),
    };
    match obj.get("resolution") {
        None | Some(Value::Null) => {}
        Some(Value::String(r)) if RESOLUTIONS.contains(&r.as_str()) => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_value",
                format!("resolution must be one of {}", RESOLUTIONS.join(", ")),
                Some("resolution".into()),
            ));
        }
    }
    Ok(GenerationRequest {
        prompt,
        size,
        n,
        images,
    })
}

fn required_string<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(ApiError::invalid(
            "missing_required_parameter",
            format!("Missing required parameter: {field}"),
            Some(field.into()),
        )),
        Some(Value::String(s)) if s.trim().is_empty() => Err(ApiError::invalid(
            "invalid_value",
            format!("{field} must not be empty"),
            Some(field.into()),
        )),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(wrong_type(field, "a string")),
    }
}

fn wrong_type(field: &str, expected: &str) -> ApiError {
    ApiError::invalid(
        "invalid_type",
        format!("{field} must be {expected}"),
        Some(field.into()),
    )
}

/// `"16:9"` → `(16, 9)` when it is one of [`ASPECT_RATIOS`].
pub(crate) fn parse_ratio(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once(':')?;
    let ratio = (w.parse().ok()?, h.parse().ok()?);
    ASPECT_RATIOS.contains(&ratio).then_some(ratio)
}

fn ratio_list() -> String {
    ASPECT_RATIOS
        .iter()
        .map(|(w, h)| format!("{w}:{h}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn image_ref(i: usize, item: &Value) -> Result<ImageRef<'_>, ApiError> {
    let param = || Some(format!("image_urls[{i}]"));
    let Value::String(s) = item else {
        return Err(ApiError::invalid(
            "invalid_type",
            format!("image_urls[{i}] must be a string"),
            param(),
        ));
    };
    parse_image_ref(s).ok_or_else(|| {
        ApiError::invalid(
            "invalid_image_url",
            format!("image_urls[{i}] must be an https:// URL or a data:image/...;base64, URI"),
            param(),
        )
    })
}

/// Recognises the two accepted forms; the base64 payload is checked later, when the image
/// is drawn (an undecodable one becomes a placeholder tile).
pub(crate) fn parse_image_ref(s: &str) -> Option<ImageRef<'_>> {
    if let Some(rest) = strip_prefix_ignore_case(s, "https://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let valid = !host.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        return valid.then_some(ImageRef::Url { host });
    }
    let rest = strip_prefix_ignore_case(s, "data:image/")?;
    let (params, payload) = rest.split_once(',')?;
    let mut parts = params.split(';');
    let subtype = parts.next().unwrap_or_default();
    let subtype_ok = !subtype.is_empty()
        && subtype
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let base64 = parts.any(|p| p.eq_ignore_ascii_case("base64"));
    (subtype_ok && base64 && !payload.is_empty()).then_some(ImageRef::Data { payload })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn param_of(body: Value) -> Option<String> {
        let err = validate(&body).unwrap_err();
        assert_eq!(err.status(), 400);
        err.param().map(str::to_owned)
    }

    #[test]
    fn accepts_a_full_request() {
        let body = json!({"model":"m","prompt":"p","size":"16:9","n":4,
            "image_urls":["https://x.example/a.png","data:image/png;base64,AAAA"],"resolution":"2K"});
        let r = validate(&body).unwrap();
        assert_eq!(r.size, (16, 9));
        assert_eq!(r.n, 4);
        assert_eq!(
            r.images,
            vec![
                ImageRef::Url { host: "x.example" },
                ImageRef::Data { payload: "AAAA" }
            ]
        );
    }

    #[test]
    fn defaults_size_and_n() {
        let body = json!({"model":"m","prompt":"p"});
        let r = validate(&body).unwrap();
        assert_eq!((r.size, r.n, r.images.len()), ((1, 1), 1, 0));
    }

    #[test]
    fn names_the_bad_field() {
        let ok = json!({"model":"m","prompt":"p"});
        let with = |k: &str, v: Value| {
            let mut b = ok.clone();
            b[k] = v;
            b
        };
        assert_eq!(param_of(with("n", json!("1"))).as_deref(), Some("n"));
        assert_eq!(param_of(with("n", json!(1.5))).as_deref(), Some("n"));
        assert_eq!(param_of(with("n", json!(5))).as_deref(), Some("n"));
        assert_eq!(param_of(with("n", json!(0))).as_deref(), Some("n"));
        assert_eq!(
            param_of(with("size", json!("1:2"))).as_deref(),
            Some("size")
        );
        assert_eq!(
            param_of(with("size", json!("auto"))).as_deref(),
            Some("size")
        );
        assert_eq!(
            param_of(with("prompt", json!(""))).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            param_of(with("prompt", json!("x".repeat(4001)))).as_deref(),
            Some("prompt")
        );
        assert_eq!(param_of(with("model", json!(3))).as_deref(), Some("model"));
        assert_eq!(param_of(json!({"prompt":"p"})).as_deref(), Some("model"));
        assert_eq!(
            param_of(with("resolution", json!("8K"))).as_deref(),
            Some("resolution")
        );
        assert_eq!(
            param_of(with("image_urls", json!(["https://a/x", "http://b/y"]))).as_deref(),
            Some("image_urls[1]")
        );
        assert_eq!(
            param_of(with("image_urls", json!(vec!["https://a/x"; 17]))).as_deref(),
            Some("image_urls")
        );
        assert!(validate(&with("prompt", json!("é".repeat(4000)))).is_ok());
    }

    #[test]
    fn image_ref_forms() {
        for bad in [
            "http://a/b",
            "https://",
            "https:// a/b",
            "data:image/png,AAAA",
            "data:image/;base64,AAAA",
            "data:image/png;base64,",
            "data:text/plain;base64,AAAA",
            "ftp://x",
            "",
        ] {
            assert_eq!(parse_image_ref(bad), None, "{bad}");
        }
        assert_eq!(
            parse_image_ref("HTTPS://Host:8443/p?q"),
            Some(ImageRef::Url { host: "Host:8443" })
        );
        assert_eq!(
            parse_image_ref("data:image/webp;base64,QUJD"),
            Some(ImageRef::Data { payload: "QUJD" })
        );
    }

    proptest! {
        #[test]
        fn validate_never_panics(s in "\\PC{0,64}", n in proptest::num::i64::ANY, size in "[0-9:a-z]{0,6}") {
            let body = json!({"model": s, "prompt": s, "n": n, "size": size, "image_urls": [s]});
            let _ = validate(&body);
            let _ = parse_image_ref(&s);
        }
    }
}
