//! Request and response bodies of the HTTP API, and their conversion into
//! domain values at the edge.
//!
//! The earlier Python service's field names are accepted as aliases
//! (`picture_url`, `user_image_base64`, `height`, `weight`, `skin_color`,
//! `body_type`, `outfit_image_base64`) so it can be replaced without touching
//! the Java side. `*_base64` fields may hold a bare base64 string (no `data:`
//! prefix); its type is then taken from its magic bytes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use modelgen_domain::FieldError;

/// Longest `user_id` and `request_id`, characters (DESIGN.md).
pub const MAX_ID_CHARS: u64 = 64;
/// Most garment images per outfit task (DESIGN.md).
pub const MAX_OUTFIT_IMAGES: u64 = 5;

/// `body_profile` as sent; checked by [`modelgen_domain::BodyProfile`].
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, ToSchema)]
#[schema(example = json!({"gender": "female", "height_cm": 168, "weight_kg": 55, "age": 30, "skin_tone": "light", "body_shape": "slim"}))]
pub struct BodyProfileDto {
    /// `male`/`female` (also `男`/`女`).
    pub gender: Option<String>,
    /// Centimetres, 0 < x ≤ 300.
    #[serde(alias = "height")]
    pub height_cm: Option<f64>,
    /// Kilograms, 0 < x ≤ 500.
    #[serde(alias = "weight")]
    pub weight_kg: Option<f64>,
    /// Years, 0 < x ≤ 150.
    pub age: Option<f64>,
    /// Free text ≤ 64 chars.
    #[serde(alias = "skin_color")]
    pub skin_tone: Option<String>,
    /// Free text ≤ 64 chars, optional.
    #[serde(alias = "body_type")]
    pub body_shape: Option<String>,
}

/// One image, or a list of them (the earlier service sent a single string).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single image.
    One(String),
    /// Several images.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The images as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `POST /models/default`.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[schema(example = json!({"user_id": "u1", "request_id": "r-1", "user_image": "data:image/jpeg;base64,/9j/4AAQSkZJRg...", "body_profile": {"gender": "female", "height_cm": 168, "weight_kg": 55, "age": 30, "skin_tone": "light"}, "size": "4:3"}))]
pub struct CreateDefaultRequest {
    /// Caller's user id, 1–64 characters (emptiness is reported as "is required").
    #[validate(length(max = 64, message = "must be 1 to 64 characters"))]
    pub user_id: Option<String>,
    /// Idempotency key, ≤ 64 characters.
    #[validate(length(max = 64, message = "must be 1 to 64 characters"))]
    pub request_id: Option<String>,
    /// Front photo: data URI or https URL.
    pub user_image: Option<String>,
    /// Alias of `user_image` (earlier service).
    pub picture_url: Option<String>,
    /// Alias of `user_image` (earlier service); bare base64 allowed.
    pub user_image_base64: Option<String>,
    /// Body measurements.
    pub body_profile: Option<BodyProfileDto>,
    /// Aspect ratio, default `4:3`.
    pub size: Option<String>,
}

/// `POST /models/edit`.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[schema(example = json!({"user_id": "u1", "base_model_task_id": "task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W", "edit_instructions": "shorter hair, smiling"}))]
pub struct CreateEditRequest {
    /// Caller's user id, 1–64 characters.
    #[validate(length(max = 64, message = "must be 1 to 64 characters"))]
    pub user_id: Option<String>,
    /// Idempotency key.
    #[validate(length(max = 64, message = "must be 1 to 64 characters"))]
    pub request_id: Option<String>,
    /// A completed `default` or `edit` task of the same user.
    pub base_model_task_id: Option<String>,
    /// What to change, 1–500 characters.
    pub edit_instructions: Option<String>,
    /// Aspect ratio, default `4:3`.
    pub size: Option<String>,
}

/// `POST /models/outfit`.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[schema(example = json!({"user_id": "u1", "base_model_task_id": "task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W", "angle": "side", "outfit_images": ["https://cdn.example.com/garment.jpg"]}))]
pub struct CreateOutfitRequest {
    /// Caller's user id, 1–64 characters.
    #[validate(length(max = 64, message = "must be 1 to 64 characters"))]
    pub user_id: Option<String>,
    /// Idempotency key.
    #[validate(length(max = 64, message = "must be 1 to 64 characters"))]
    pub request_id: Option<String>,
    /// A completed `default` or `edit` task of the same user.
    pub base_model_task_id: Option<String>,
    /// `front`, `side` or `back`.
    pub angle: Option<String>,
    /// 1–5 garment images (data URIs or https URLs).
    pub outfit_images: Option<OneOrMany>,
    /// Alias of `outfit_images` (earlier service); bare base64 allowed.
    pub outfit_image_base64: Option<OneOrMany>,
    /// Aspect ratio, default `4:3`.
    pub size: Option<String>,
}

/// Turns validator's errors into the envelope's field list.
pub fn validation_errors(result: Result<(), validator::ValidationErrors>) -> Vec<FieldError> {
    let Err(errors) = result else {
        return Vec::new();
    };
    let mut out: Vec<FieldError> = errors
        .field_errors()
        .into_iter()
        .flat_map(|(field, errs)| {
            errs.iter().map(move |e| FieldError {
                field: field.to_string(),
                message: e
                    .message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| e.code.to_string()),
            })
        })
        .collect();
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

/// The 202 body of a create: `{"task_id", "status", "angle"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CreatedTask {
    /// The new (or replayed) task's id.
    pub task_id: String,
    /// Its status (`submitted` when new).
    pub status: String,
    /// Outfit angle, else null.
    pub angle: Option<String>,
}

/// One image of a task view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ImageView {
    /// Public URL of the stored image.
    pub image_url: String,
    /// Pixels.
    pub width: i32,
    /// Pixels.
    pub height: i32,
    /// `image/png`, `image/jpeg` or `image/webp`.
    pub mime: String,
}

/// `GET /tasks/{task_id}` (DESIGN.md "Task view"); times are RFC 3339 UTC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TaskView {
    /// Task id.
    pub task_id: String,
    /// Idempotency key given at creation.
    pub request_id: Option<String>,
    /// Owner.
    pub user_id: String,
    /// `default`, `edit` or `outfit`.
    #[serde(rename = "type")]
    pub task_type: String,
    /// `submitted`, `processing`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// 0–100.
    pub progress: u8,
    /// Outfit angle.
    pub angle: Option<String>,
    /// Base model of an edit/outfit.
    pub base_model_task_id: Option<String>,
    /// First image when completed.
    pub image: Option<ImageView>,
    /// All images.
    pub images: Vec<ImageView>,
    /// Envelope-style code of a failure.
    pub error_code: Option<i32>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Terminal time.
    pub completed_at: Option<String>,
}

/// `GET /tasks` page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TaskPage {
    /// Newest first.
    pub items: Vec<TaskView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}
