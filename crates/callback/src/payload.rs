//! The JSON body POSTed to `CALLBACK_URL` when a task reaches a terminal state
//! (the modelgen README, "Callbacks"). Field names are the wire contract
//! the Java backend parses; `null` fields are always present, never omitted.

use chrono::{DateTime, Utc};
use modelgen_domain::{Angle, TaskId, TaskStatus, TaskType};
use serde::{Deserialize, Serialize};

/// The callback body for one terminal task, e.g.
/// `{"task_id":"task_01…","request_id":null,"user_id":"u1","type":"outfit","status":"completed",
/// "angle":"front","image":{…},"image_url":"https://…","images":[{…}],"error_code":null,
/// "error_message":null,"completed_at":"2026-11-29T11:35:33.123Z","event_type":"task.completed",
/// "cost":null}`.
///
/// The task shape is the task view's (`GET /tasks/{task_id}`): `image` is the
/// first image as the same object, `images` every image; the flat `image_url`
/// is kept for the earlier service's receivers, which read only that.
///
/// Built afresh for each delivery attempt: image URLs are rendered from the
/// current settings at that moment (a presigned URL is valid from the attempt
/// on), so two attempts may carry different URLs for the same images.
/// Deduplicate on the `webhook-id` header, not on the body. The signature covers
/// the exact bytes of each attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackPayload {
    /// The task id, `task_` + ULID.
    pub task_id: String,
    /// The client's idempotency key, if it sent one (≤ 64 chars).
    pub request_id: Option<String>,
    /// The user the task belongs to (1–64 chars).
    pub user_id: String,
    /// `default`, `edit` or `outfit` ([`TaskType`] wire form).
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(value_type = modelgen_domain::openapi::TaskTypeSchema))]
    pub task_type: String,
    /// `completed`, `failed` or `cancelled` (terminal [`TaskStatus`] wire form).
    #[cfg_attr(feature = "openapi", schema(value_type = modelgen_domain::openapi::TerminalStatusSchema))]
    pub status: String,
    /// `front`, `side` or `back` for outfit tasks, else `null`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<modelgen_domain::openapi::AngleSchema>))]
    pub angle: Option<String>,
    /// The first image (`images[0]`) as an object, the same as the task
    /// view's `image`; `null` when there is none. Added field: a body
    /// without it reads as `null`.
    #[serde(default)]
    pub image: Option<CallbackImage>,
    /// URL of the first image (`images[0].image_url`), `null` when there is
    /// none. Kept for the earlier service's receivers, which read this flat
    /// field; new receivers read `image`.
    #[cfg_attr(feature = "openapi", schema(format = "uri"))]
    pub image_url: Option<String>,
    /// Every result image, in upstream order; empty unless `completed`.
    pub images: Vec<CallbackImage>,
    /// Wire error code (the modelgen README, "API") for `failed`, else `null`.
    pub error_code: Option<i32>,
    /// Human-readable failure reason for `failed`, else `null`.
    pub error_message: Option<String>,
    /// When the task reached its terminal state, RFC 3339 UTC with milliseconds
    /// (`2026-11-29T11:35:33.123Z`, see [`format_timestamp`]).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub completed_at: Option<String>,
    /// What this callback reports: `task.completed`, `task.failed` or
    /// `task.cancelled` for a task's first run; `task.retry_completed`,
    /// `task.retry_failed` or `task.retry_cancelled` for a run an operator
    /// retried (the task id is the same; the earlier run's callback was sent
    /// with its own `webhook-id`). Added field: a body without it reads as
    /// `task.<status>`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::CallbackEventTypeSchema))]
    pub event_type: String,
    /// What the upstream charged for the task, in the Apimart account's
    /// balance unit (the modelgen docs/apimart.md, "Cost"); `null` when it
    /// reported none (failed and cancelled tasks are not charged). Added field.
    #[serde(default)]
    pub cost: Option<f64>,
}

/// One result image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackImage {
    /// Where the Java backend downloads it, rendered when the attempt is made:
    /// `{PUBLIC_BASE_URL}/…` (or `…/images/{key}` for local storage), a
    /// presigned URL valid for `IMAGE_URL_EXPIRY`, or an imported image's own URL.
    #[cfg_attr(feature = "openapi", schema(format = "uri"))]
    pub image_url: String,
    /// Width in pixels; `null` when unknown (an imported image).
    pub width: Option<i32>,
    /// Height in pixels; `null` when unknown.
    pub height: Option<i32>,
    /// MIME type, e.g. `image/png`; `null` when unknown.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<modelgen_domain::openapi::ImageMimeSchema>))]
    pub mime: Option<String>,
}

/// Formats a timestamp the way every modelgen timestamp is written on the wire:
/// RFC 3339, UTC, `Z` suffix, exactly three fractional digits (`2026-11-29T11:35:33.123Z`).
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    modelgen_domain::format_timestamp(at)
}

impl CallbackPayload {
    /// A payload with the required fields set from domain types and every optional field
    /// empty; fill the rest with the `with_*` methods.
    pub fn new(task_id: &TaskId, user_id: &str, task_type: TaskType, status: TaskStatus) -> Self {
        CallbackPayload {
            task_id: task_id.to_string(),
            request_id: None,
            user_id: user_id.to_owned(),
            task_type: task_type.as_str().to_owned(),
            status: status.as_str().to_owned(),
            angle: None,
            image: None,
            image_url: None,
            images: Vec::new(),
            error_code: None,
            error_message: None,
            completed_at: None,
            event_type: format!("task.{}", status.as_str()),
            cost: None,
        }
    }

    /// Sets `event_type` (e.g. `task.retry_completed`).
    #[must_use]
    pub fn with_event_type(mut self, event_type: &str) -> Self {
        self.event_type = event_type.to_owned();
        self
    }

    /// Sets `cost` (balance units).
    #[must_use]
    pub fn with_cost(mut self, cost: Option<f64>) -> Self {
        self.cost = cost;
        self
    }

    /// Sets `request_id`.
    #[must_use]
    pub fn with_request_id(mut self, request_id: Option<&str>) -> Self {
        self.request_id = request_id.map(str::to_owned);
        self
    }

    /// Sets `angle` (outfit tasks).
    #[must_use]
    pub fn with_angle(mut self, angle: Option<Angle>) -> Self {
        self.angle = angle.map(|a| a.as_str().to_owned());
        self
    }

    /// Sets `images`, `image` (the first image, or `null` when empty) and `image_url`
    /// (the first image's URL, or `null`), so the three never disagree.
    #[must_use]
    pub fn with_images(mut self, images: Vec<CallbackImage>) -> Self {
        self.image = images.first().cloned();
        self.image_url = images.first().map(|image| image.image_url.clone());
        self.images = images;
        self
    }

    /// Sets `error_code` and `error_message` (failed tasks).
    #[must_use]
    pub fn with_error(mut self, code: i32, message: &str) -> Self {
        self.error_code = Some(code);
        self.error_message = Some(message.to_owned());
        self
    }

    /// Sets `completed_at`, formatted by [`format_timestamp`].
    #[must_use]
    pub fn with_completed_at(mut self, at: DateTime<Utc>) -> Self {
        self.completed_at = Some(format_timestamp(at));
        self
    }

    /// A deterministic `webhook-id` for this event, `evt_{task_id}_{status}`: a task has
    /// exactly one terminal event, so the id is the same on every retry and on a manual
    /// re-delivery, and the receiver can deduplicate on it. Callers may use their own
    /// outbox row id instead; it only has to be stable and header-safe (visible ASCII).
    pub fn event_id(&self) -> String {
        format!("evt_{}_{}", self.task_id, self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 11, 35, 33)
            .single()
            .expect("valid date")
            + chrono::TimeDelta::milliseconds(123)
    }

    #[test]
    fn timestamps_have_millis_and_z() {
        assert_eq!(format_timestamp(at()), "2026-11-29T11:35:33.123Z");
        let whole = Utc
            .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
            .single()
            .expect("valid");
        assert_eq!(format_timestamp(whole), "2026-01-02T03:04:05.000Z");
    }

    #[test]
    fn completed_outfit_serialises_to_the_wire_contract() {
        let id: TaskId = "task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W".parse().expect("valid id");
        let payload = CallbackPayload::new(&id, "u-42", TaskType::Outfit, TaskStatus::Completed)
            .with_request_id(Some("req-7"))
            .with_angle(Some(Angle::Side))
            .with_images(vec![
                CallbackImage {
                    image_url: "https://img.example/a.png".into(),
                    width: Some(1024),
                    height: Some(768),
                    mime: Some("image/png".into()),
                },
                CallbackImage {
                    image_url: "https://img.example/b.png".into(),
                    width: Some(1024),
                    height: Some(768),
                    mime: Some("image/png".into()),
                },
            ])
            .with_completed_at(at());
        let json = serde_json::to_value(&payload).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "task_id": "task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W",
                "request_id": "req-7",
                "user_id": "u-42",
                "type": "outfit",
                "status": "completed",
                "angle": "side",
                "image": {"image_url": "https://img.example/a.png", "width": 1024, "height": 768, "mime": "image/png"},
                "image_url": "https://img.example/a.png",
                "images": [
                    {"image_url": "https://img.example/a.png", "width": 1024, "height": 768, "mime": "image/png"},
                    {"image_url": "https://img.example/b.png", "width": 1024, "height": 768, "mime": "image/png"}
                ],
                "error_code": null,
                "error_message": null,
                "completed_at": "2026-11-29T11:35:33.123Z",
                "event_type": "task.completed",
                "cost": null
            })
        );
        let back: CallbackPayload = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, payload);
        assert_eq!(
            payload.event_id(),
            "evt_task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W_completed"
        );
    }

    #[test]
    fn failed_task_keeps_nulls_explicit() {
        let id = TaskId::generate();
        let payload = CallbackPayload::new(&id, "u", TaskType::Default, TaskStatus::Failed)
            .with_error(1002, "upstream rejected the image")
            .with_images(Vec::new());
        let json = serde_json::to_value(&payload).expect("serialises");
        assert_eq!(json["image_url"], serde_json::Value::Null);
        assert_eq!(json["image"], serde_json::Value::Null);
        assert_eq!(json["angle"], serde_json::Value::Null);
        assert_eq!(json["request_id"], serde_json::Value::Null);
        assert_eq!(json["completed_at"], serde_json::Value::Null);
        assert_eq!(json["images"], serde_json::json!([]));
        assert_eq!(json["error_code"], 1002);
        assert_eq!(json["type"], "default");
        assert_eq!(json["status"], "failed");
    }
}
