//! Request and response types of the Apimart calls (docs/apimart.md, "Submit", "Status" and
//! "Balance").

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Body of `POST {base}/images/generations` (docs/apimart.md, "Submit").
///
/// Its `Debug` shows the prompt's length and a summary of each image instead of the content:
/// `image_urls` can hold megabytes of base64 data URIs, which must not reach logs.
#[derive(Clone, Serialize, PartialEq)]
pub struct GenerationRequest {
    /// Model name, e.g. `gemini-3-pro-image-preview`.
    pub model: String,
    /// The prompt; several models accept at most 1000 characters.
    pub prompt: String,
    /// Aspect ratio such as `1:1`, `3:4`, `16:9` (some models also `auto` or pixel sizes).
    pub size: String,
    /// Number of images, sent as a JSON integer; 1–4 on most models.
    pub n: u32,
    /// Reference images: `https` URLs or base64 `data:` URIs (up to 14–16, model-dependent).
    pub image_urls: Vec<String>,
    /// `1K`/`2K`/`4K` (Gemini, Seedream) or `1k`/`2k`/`4k` (gpt-image-2); omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

/// Longest prefix of a non-`data:` image URL shown by `Debug`, in characters; signed URLs
/// carry long tokens that help nobody in a log.
const DEBUG_URL_CHARS: usize = 80;

/// How `Debug` shows one reference image without its payload.
struct ImageSummary<'a>(&'a str);

impl fmt::Debug for ImageSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.0;
        if let Some(rest) = url.strip_prefix("data:") {
            let media = rest.split([';', ',']).next().unwrap_or_default();
            write!(f, "data:{media} ({} bytes)", url.len())
        } else if url.chars().count() > DEBUG_URL_CHARS {
            let head: String = url.chars().take(DEBUG_URL_CHARS).collect();
            write!(f, "{head}… ({} bytes)", url.len())
        } else {
            f.write_str(url)
        }
    }
}

impl fmt::Debug for GenerationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let images: Vec<ImageSummary<'_>> =
            self.image_urls.iter().map(|u| ImageSummary(u)).collect();
        f.debug_struct("GenerationRequest")
            .field("model", &self.model)
            .field("prompt_chars", &self.prompt.chars().count())
            .field("size", &self.size)
            .field("n", &self.n)
            .field("image_urls", &images)
            .field("resolution", &self.resolution)
            .finish()
    }
}

/// What Apimart answered to a submit.
#[derive(Clone, Debug, PartialEq)]
pub struct SubmitResponse {
    /// Upstream task id (`task_…`, or the older `task-unified-…`); opaque.
    pub task_id: String,
    /// Usually [`UpstreamStatus::Submitted`] or [`UpstreamStatus::Pending`].
    pub status: UpstreamStatus,
    /// Upstream's estimate (`task_info.estimated_time`, seconds), when given.
    pub estimated_time: Option<Duration>,
    /// `true` when upstream answered `Idempotency-Replayed: true`: this is the task created
    /// by an earlier call with the same idempotency key.
    pub replayed: bool,
}

/// Upstream task status (docs/apimart.md: `pending`, `processing`, `completed`, `failed`,
/// `cancelled`; submit answers `submitted`). Parsing ignores case and surrounding space and
/// accepts a few common synonyms (`canceled`, `succeeded`, `queued`, …) defensively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamStatus {
    /// Accepted, not yet queued (submit answer).
    Submitted,
    /// Queued.
    Pending,
    /// Running.
    Processing,
    /// Finished with images.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled upstream.
    Cancelled,
    /// Anything else, lower-cased; treated as not terminal.
    Other(String),
}

impl UpstreamStatus {
    /// Parses an upstream status string; never fails (unknown values become `Other`).
    pub fn parse(raw: &str) -> Self {
        let s = raw.trim().to_ascii_lowercase();
        match s.as_str() {
            "submitted" | "created" => Self::Submitted,
            "pending" | "queued" | "waiting" => Self::Pending,
            "processing" | "running" | "in_progress" => Self::Processing,
            "completed" | "complete" | "succeeded" | "success" => Self::Completed,
            "failed" | "failure" | "error" => Self::Failed,
            "cancelled" | "canceled" => Self::Cancelled,
            _ => Self::Other(s),
        }
    }

    /// Whether the task will not change any more: `Completed`, `Failed` or `Cancelled`.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The canonical lower-case name (`Other` returns its own text).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Submitted => "submitted",
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for UpstreamStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Answer of `GET {base}/tasks/{id}` (docs/apimart.md, "Status").
///
/// `#[non_exhaustive]`: upstream adds fields over time and so will this type. Outside this
/// crate, build one with [`TaskStatusResponse::new`] and set the public fields.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TaskStatusResponse {
    /// Task id (`data.id`, else `data.task_id`, else the id asked for).
    pub id: String,
    /// Current status.
    pub status: UpstreamStatus,
    /// Percent done, clamped to 0..=100. When upstream omits it: 100 if completed, else 0.
    pub progress: u8,
    /// Result images (only when completed); images without any URL are dropped.
    pub images: Vec<ResultImage>,
    /// The failure (only when failed).
    pub error: Option<UpstreamTaskError>,
    /// Upstream's estimate of the total run time.
    pub estimated_time: Option<Duration>,
    /// How long the task actually ran.
    pub actual_time: Option<Duration>,
    /// Creation time, unix seconds.
    pub created: Option<i64>,
    /// Completion time, unix seconds.
    pub completed: Option<i64>,
    /// What the task cost, in the account's balance unit (`data.cost`; docs/apimart.md
    /// "Cost"). Reported on completed tasks; `None` when upstream omits it, sends `null` or
    /// something that is not a finite number. A number sent as a string is accepted.
    pub cost: Option<f64>,
    /// What the task cost in credits (`data.credits_cost`; docs/apimart.md "Cost"); parsed
    /// like [`Self::cost`].
    pub credits_cost: Option<f64>,
}

impl TaskStatusResponse {
    /// A response for task `id` in `status` with nothing else known: progress 100 when
    /// completed (0 otherwise), no images, no error, no times, no cost. Set the public
    /// fields for the rest, e.g. in tests:
    ///
    /// ```
    /// use apimart_client::{TaskStatusResponse, UpstreamStatus};
    /// let mut done = TaskStatusResponse::new("task_01", UpstreamStatus::Completed);
    /// done.cost = Some(0.05);
    /// assert_eq!(done.progress, 100);
    /// ```
    pub fn new(id: impl Into<String>, status: UpstreamStatus) -> Self {
        let progress = if status == UpstreamStatus::Completed {
            100
        } else {
            0
        };
        Self {
            id: id.into(),
            status,
            progress,
            images: Vec::new(),
            error: None,
            estimated_time: None,
            actual_time: None,
            created: None,
            completed: None,
            cost: None,
            credits_cost: None,
        }
    }
}

/// Answer of `GET {base}/balance` (docs/apimart.md, "Balance"): the account's remaining and
/// used money and credits. Every figure is optional because upstream's types are only known
/// from client code (numbers, sometimes numeric strings); one that is missing, `null` or not
/// a finite number is `None`.
///
/// `#[non_exhaustive]`; read it, or build one with [`Balance::new`].
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Balance {
    /// Money left, in the account's balance unit. Meaningless when
    /// [`Self::unlimited_quota`] (upstream may send a negative number then).
    pub remain_balance: Option<f64>,
    /// Credits left.
    pub remain_credits: Option<f64>,
    /// Money spent so far.
    pub used_balance: Option<f64>,
    /// Credits spent so far.
    pub used_credits: Option<f64>,
    /// The key has no spending limit; `false` when upstream omits it.
    pub unlimited_quota: bool,
}

impl Balance {
    /// A balance with nothing known (every figure `None`, limited quota).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the account can no longer pay: not unlimited, and the remaining balance (or,
    /// when upstream omits it, the remaining credits) is zero or less. `false` when neither
    /// figure is known: no evidence of an empty account.
    pub fn is_exhausted(&self) -> bool {
        !self.unlimited_quota
            && self
                .remain_balance
                .or(self.remain_credits)
                .is_some_and(|left| left <= 0.0)
    }
}

/// One result image. Download it at once: its URLs expire (24–72 h, docs/apimart.md).
#[derive(Clone, Debug, PartialEq)]
pub struct ResultImage {
    /// Download URLs; upstream sends `url` as a string or as an array of strings.
    pub urls: Vec<String>,
    /// When the URLs stop working, unix seconds.
    pub expires_at: Option<i64>,
}

/// Why an upstream task failed (`data.error`: `{code, message, type}`).
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamTaskError {
    /// Upstream's error code, as text (it may be a number or a string upstream).
    pub code: Option<String>,
    /// Human-readable message; `"unknown error"` when upstream gave none.
    pub message: String,
    /// Upstream's `type`.
    pub kind: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parsing_and_terminality() {
        assert_eq!(
            UpstreamStatus::parse(" Completed "),
            UpstreamStatus::Completed
        );
        assert_eq!(UpstreamStatus::parse("canceled"), UpstreamStatus::Cancelled);
        assert_eq!(
            UpstreamStatus::parse("Weird"),
            UpstreamStatus::Other("weird".into())
        );
        for s in ["completed", "failed", "cancelled"] {
            assert!(UpstreamStatus::parse(s).is_terminal(), "{s}");
        }
        for s in ["submitted", "pending", "processing", "weird"] {
            assert!(!UpstreamStatus::parse(s).is_terminal(), "{s}");
        }
        assert_eq!(UpstreamStatus::Processing.to_string(), "processing");
    }

    #[test]
    fn request_serializes_as_documented() -> Result<(), serde_json::Error> {
        let mut req = GenerationRequest {
            model: "m".into(),
            prompt: "p".into(),
            size: "3:4".into(),
            n: 2,
            image_urls: vec!["https://x/y.png".into()],
            resolution: None,
        };
        let v = serde_json::to_value(&req)?;
        assert_eq!(
            v,
            serde_json::json!({"model":"m","prompt":"p","size":"3:4","n":2,"image_urls":["https://x/y.png"]})
        );
        req.resolution = Some("2K".into());
        assert_eq!(serde_json::to_value(&req)?["resolution"], "2K");
        Ok(())
    }

    #[test]
    fn request_debug_hides_payloads() {
        let big = format!("data:image/png;base64,{}", "A".repeat(100_000));
        let long_url = format!("https://cdn.example/{}", "t".repeat(500));
        let req = GenerationRequest {
            model: "m".into(),
            prompt: "a secret prompt".into(),
            size: "1:1".into(),
            n: 1,
            image_urls: vec![big, long_url, "https://x/y.png".into()],
            resolution: None,
        };
        let debug = format!("{req:?}");
        assert!(debug.len() < 600, "{debug}");
        assert!(!debug.contains("a secret prompt"));
        assert!(debug.contains("data:image/png (100022 bytes)"), "{debug}");
        assert!(debug.contains("https://x/y.png"));
        assert!(debug.contains("prompt_chars: 15"));
    }

    #[test]
    fn new_status_response_defaults() {
        let done = TaskStatusResponse::new("t", UpstreamStatus::Completed);
        assert_eq!(
            (done.progress, done.cost, done.images.len()),
            (100, None, 0)
        );
        let running = TaskStatusResponse::new(String::from("t"), UpstreamStatus::Processing);
        assert_eq!(running.progress, 0);
    }

    #[test]
    fn exhausted_balance() {
        let mut b = Balance::new();
        assert!(!b.is_exhausted(), "nothing known");
        b.remain_balance = Some(0.0);
        assert!(b.is_exhausted());
        b.unlimited_quota = true;
        assert!(!b.is_exhausted());
        let credits_only = Balance {
            remain_credits: Some(-1.0),
            ..Balance::new()
        };
        assert!(credits_only.is_exhausted());
        let funded = Balance {
            remain_balance: Some(0.5),
            remain_credits: Some(0.0),
            ..Balance::new()
        };
        assert!(!funded.is_exhausted(), "the balance wins over credits");
    }
}
