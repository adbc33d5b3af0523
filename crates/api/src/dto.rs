//! Request and response bodies of the HTTP API, and their conversion into
//! domain values at the edge.
//!
//! Everything the earlier Python service accepted is accepted
//! (docs/legacy.md): its field names (`picture_url`, `user_image_base64`,
//! `height`, `weight`, `skin_color`, `body_type`, `outfit_image_base64`,
//! `outfit_image_urls`, `outfit_description`), numbers written as strings, and
//! a body profile with any of its fields left out. `*_base64` fields may hold a
//! bare base64 string (no `data:` prefix); its type is then taken from its
//! magic bytes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use validator::Validate;

use modelgen_domain::body::deserialize_measure;
use modelgen_domain::{
    FieldError, MAX_AGE_YEARS, MAX_BODY_TEXT_CHARS, MAX_HEIGHT_CM, MAX_OUTFIT_DESCRIPTION_CHARS,
    MAX_WEIGHT_KG,
};

/// Longest `user_id` and `request_id`, characters (README, "API").
pub const MAX_ID_CHARS: u64 = 64;
/// Most garment images per outfit task (README, "API").
pub const MAX_OUTFIT_IMAGES: u64 = 5;

/// Positive numbers as [`modelgen_domain::body::parse_decimal`] reads them
/// in a string, as an ECMA-262 regular expression for the OpenAPI document
/// (the parser also reads negative numbers, which the range check refuses).
const DECIMAL_PATTERN: &str =
    r"^[ \t\r\n]*\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t\r\n]*$";

/// As [`DECIMAL_PATTERN`], for whole numbers (`28`, `28.0`).
const WHOLE_PATTERN: &str = r"^[ \t\r\n]*\+?[0-9]+(\.0*)?[ \t\r\n]*$";

/// The schema of a measurement: a number in `(0, max]`, a string holding one,
/// or null.
fn measure_schema(max: f64, integer: bool, description: String) -> RefOr<Schema> {
    let number = ObjectBuilder::new()
        .schema_type(if integer { Type::Integer } else { Type::Number })
        .exclusive_minimum(Some(0))
        .maximum(Some(max));
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(if integer {
            WHOLE_PATTERN
        } else {
            DECIMAL_PATTERN
        }))
        .description(Some(if integer {
            "the same number written as a string, e.g. \"28\""
        } else {
            "the same number written as a string, e.g. \"165.5\""
        }));
    let one_of = OneOfBuilder::new()
        .item(number)
        .item(text)
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(description));
    Schema::OneOf(one_of.build()).into()
}

fn height_schema() -> RefOr<Schema> {
    measure_schema(
        MAX_HEIGHT_CM,
        false,
        format!("Height in centimetres, 0 < x ≤ {MAX_HEIGHT_CM}; optional. Alias: `height`."),
    )
}

fn height_alias_schema() -> RefOr<Schema> {
    measure_schema(
        MAX_HEIGHT_CM,
        false,
        "The earlier service's name for `height_cm`; give one of the two.".into(),
    )
}

fn weight_schema() -> RefOr<Schema> {
    measure_schema(
        MAX_WEIGHT_KG,
        false,
        format!("Weight in kilograms, 0 < x ≤ {MAX_WEIGHT_KG}; optional. Alias: `weight`."),
    )
}

fn weight_alias_schema() -> RefOr<Schema> {
    measure_schema(
        MAX_WEIGHT_KG,
        false,
        "The earlier service's name for `weight_kg`; give one of the two.".into(),
    )
}

fn age_schema() -> RefOr<Schema> {
    measure_schema(
        f64::from(MAX_AGE_YEARS),
        true,
        format!(
            "Age in whole years, 1 to {MAX_AGE_YEARS}; optional. A JSON number without a fractional part \
             (`28` or `28.0`; `28.5` is refused) or a string holding one (`\"28\"`)."
        ),
    )
}

/// `body_profile` as sent; checked by [`modelgen_domain::BodyProfile`]. Every
/// field is optional (`{}` is a valid profile): a missing field is left out of
/// the prompt; a field that is present is checked. `null` and, for the texts
/// and `gender`, a blank string mean "not given".
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, ToSchema)]
#[schema(example = json!({"gender": "female", "height_cm": 168, "weight_kg": 55, "age": 30, "skin_tone": "light", "body_shape": "slim"}))]
pub struct BodyProfileDto {
    /// `male` or `female` (ASCII, any case), or `男`, `女`, `男性`, `女性`; optional.
    #[schema(value_type = Option<modelgen_domain::openapi::GenderSchema>)]
    pub gender: Option<String>,
    /// Centimetres.
    #[serde(default, deserialize_with = "deserialize_measure")]
    #[schema(schema_with = height_schema)]
    pub height_cm: Option<f64>,
    /// Alias of `height_cm` (earlier service).
    #[serde(default, deserialize_with = "deserialize_measure")]
    #[schema(schema_with = height_alias_schema)]
    pub height: Option<f64>,
    /// Kilograms.
    #[serde(default, deserialize_with = "deserialize_measure")]
    #[schema(schema_with = weight_schema)]
    pub weight_kg: Option<f64>,
    /// Alias of `weight_kg` (earlier service).
    #[serde(default, deserialize_with = "deserialize_measure")]
    #[schema(schema_with = weight_alias_schema)]
    pub weight: Option<f64>,
    /// Whole years.
    #[serde(default, deserialize_with = "deserialize_measure")]
    #[schema(schema_with = age_schema)]
    pub age: Option<f64>,
    /// Free text (e.g. `fair`, `白皙`), at most 64 characters, one line; optional. Alias: `skin_color`.
    #[schema(max_length = 64)]
    pub skin_tone: Option<String>,
    /// The earlier service's name for `skin_tone`; give one of the two.
    #[schema(max_length = 64)]
    pub skin_color: Option<String>,
    /// Free text (e.g. `pear`, `标准`), at most 64 characters, one line; optional. Alias: `body_type`.
    #[schema(max_length = 64)]
    pub body_shape: Option<String>,
    /// The earlier service's name for `body_shape`; give one of the two.
    #[schema(max_length = 64)]
    pub body_type: Option<String>,
}

/// Checked at compile time: the schema's text limit is the domain's.
const _: () = assert!(MAX_BODY_TEXT_CHARS == 64);
/// Checked at compile time: the schema's description limit is the domain's.
const _: () = assert!(MAX_OUTFIT_DESCRIPTION_CHARS == 200);

impl BodyProfileDto {
    /// The profile with the earlier service's names folded into the current
    /// ones, as the domain parser takes it. Giving both names of one field is
    /// an error (`body_profile.<current name>`), added to `errors`.
    pub fn into_input(self, errors: &mut Vec<FieldError>) -> modelgen_domain::BodyProfileInput {
        fn one<T>(
            current: Option<T>,
            alias: Option<T>,
            names: (&str, &str),
            errors: &mut Vec<FieldError>,
        ) -> Option<T> {
            match (current, alias) {
                (Some(c), Some(_)) => {
                    errors.push(FieldError::new(
                        format!("body_profile.{}", names.0),
                        format!("give only one of {} and {}", names.0, names.1),
                    ));
                    Some(c)
                }
                (c, a) => c.or(a),
            }
        }
        modelgen_domain::BodyProfileInput {
            gender: self.gender,
            height_cm: one(self.height_cm, self.height, ("height_cm", "height"), errors),
            weight_kg: one(self.weight_kg, self.weight, ("weight_kg", "weight"), errors),
            age: self.age,
            skin_tone: one(
                self.skin_tone,
                self.skin_color,
                ("skin_tone", "skin_color"),
                errors,
            ),
            body_shape: one(
                self.body_shape,
                self.body_type,
                ("body_shape", "body_type"),
                errors,
            ),
        }
    }
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
#[schema(example = json!({"user_id": "u1", "user_image": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==", "body_profile": {"gender": "female", "height_cm": 168, "weight_kg": 55, "age": 30, "skin_tone": "light"}, "size": "4:3"}))]
pub struct CreateDefaultRequest {
    /// Caller's user id, 1–64 characters (emptiness is reported as "is required").
    #[validate(length(max = 64, message = "must be 1 to 64 characters"))]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64, pattern = r"\S")]
    pub user_id: Option<String>,
    /// Idempotency key, ≤ 64 characters: a create repeated with the same
    /// `user_id` and `request_id` answers 200 with the first task (header
    /// `Idempotency-Replayed: true`) instead of making another. Left out of
    /// the example so that each "Try it out" makes a new task.
    #[validate(length(max = 64, message = "must be 1 to 64 characters"))]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"\S",
        example = "order-4711-model"
    )]
    pub request_id: Option<String>,
    /// Front photo: a data URI `data:image/png;base64,…` (media types
    /// `image/png`, `image/jpeg`, `image/jpg`, `image/webp`, any case; MIME line
    /// breaks allowed) or an `https://` or `http://` URL of a public host.
    /// Required unless an alias is given: exactly one of `user_image`,
    /// `picture_url`, `user_image_base64` (a missing image is 400/1001 on
    /// `user_image`).
    pub user_image: Option<String>,
    /// Alias of `user_image` (earlier service); give only one of the three.
    pub picture_url: Option<String>,
    /// Alias of `user_image` (earlier service); a bare base64 string is also accepted.
    pub user_image_base64: Option<String>,
    /// Body measurements; required, but every field inside is optional (`{}` is valid).
    #[schema(value_type = BodyProfileDto, required = true)]
    pub body_profile: Option<BodyProfileDto>,
    /// Aspect ratio, default `4:3`.
    #[schema(value_type = Option<modelgen_domain::openapi::AspectRatioSchema>)]
    pub size: Option<String>,
    /// Where this task's callback goes instead of `CALLBACK_URL` (optional):
    /// an absolute `https://` or `http://` URL, at most 2048 characters,
    /// without user info, whose host is one of `CALLBACK_URL_ALLOWED_HOSTS`
    /// and whose addresses pass the same checks as every outbound fetch
    /// (docs/outbound.md). Refused (1001) when that list is empty. Compared
    /// on an idempotent replay like the rest of the payload.
    #[schema(max_length = 2048)]
    pub callback_url: Option<String>,
}

/// `POST /models/edit`.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[schema(example = json!({"user_id": "u1", "base_model_task_id": "task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W", "edit_instructions": "shorter hair, smiling"}))]
pub struct CreateEditRequest {
    /// Caller's user id, 1–64 characters.
    #[validate(length(max = 64, message = "must be 1 to 64 characters"))]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64, pattern = r"\S")]
    pub user_id: Option<String>,
    /// Idempotency key.
    #[validate(length(max = 64, message = "must be 1 to 64 characters"))]
    #[schema(min_length = 1, max_length = 64, pattern = r"\S")]
    pub request_id: Option<String>,
    /// A completed `default` or `edit` task of the same user: its id, `task_…`
    /// or an imported task's own id (1–128 URL-safe ASCII characters).
    #[schema(value_type = String, required = true, pattern = r"^[A-Za-z0-9._~!$&'()*+,;=:@-]{1,128}$")]
    pub base_model_task_id: Option<String>,
    /// What to change, 1–500 characters (after trimming; blank is refused).
    #[schema(value_type = String, required = true, min_length = 1, max_length = 500, pattern = r"\S")]
    pub edit_instructions: Option<String>,
    /// Aspect ratio, default `4:3`.
    #[schema(value_type = Option<modelgen_domain::openapi::AspectRatioSchema>)]
    pub size: Option<String>,
    /// Where this task's callback goes instead of `CALLBACK_URL` (optional):
    /// an absolute `https://` or `http://` URL, at most 2048 characters,
    /// without user info, whose host is one of `CALLBACK_URL_ALLOWED_HOSTS`
    /// and whose addresses pass the same checks as every outbound fetch
    /// (docs/outbound.md). Refused (1001) when that list is empty. Compared
    /// on an idempotent replay like the rest of the payload.
    #[schema(max_length = 2048)]
    pub callback_url: Option<String>,
}

/// `POST /models/outfit`.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[schema(example = json!({"user_id": "u1", "base_model_task_id": "task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W", "angle": "side", "outfit_images": ["https://cdn.example.com/garment.jpg"]}))]
pub struct CreateOutfitRequest {
    /// Caller's user id, 1–64 characters.
    #[validate(length(max = 64, message = "must be 1 to 64 characters"))]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64, pattern = r"\S")]
    pub user_id: Option<String>,
    /// Idempotency key.
    #[validate(length(max = 64, message = "must be 1 to 64 characters"))]
    #[schema(min_length = 1, max_length = 64, pattern = r"\S")]
    pub request_id: Option<String>,
    /// A completed `default` or `edit` task of the same user: its id, `task_…`
    /// or an imported task's own id (1–128 URL-safe ASCII characters).
    #[schema(value_type = String, required = true, pattern = r"^[A-Za-z0-9._~!$&'()*+,;=:@-]{1,128}$")]
    pub base_model_task_id: Option<String>,
    /// `front`, `side` or `back`.
    #[schema(value_type = modelgen_domain::openapi::AngleSchema, required = true)]
    pub angle: Option<String>,
    /// 1–5 garment images, each a data URI or an `https://`/`http://` URL
    /// (as for `user_image`); a single string counts as a list of one.
    /// Required unless an alias is given (exactly one of `outfit_images`,
    /// `outfit_image_urls`, `outfit_image_base64`).
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 5)]
    pub outfit_images: Option<OneOrMany>,
    /// Alias of `outfit_images` (the earlier service's documentation); give only one of the three.
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 5)]
    pub outfit_image_urls: Option<OneOrMany>,
    /// Alias of `outfit_images` (earlier service); bare base64 strings are also accepted.
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 5)]
    pub outfit_image_base64: Option<OneOrMany>,
    /// Optional words about the outfit (e.g. `白色T恤搭配牛仔裤`), at most 200
    /// characters; passed to the model in the prompt. Blank means not given.
    #[schema(max_length = 200)]
    pub outfit_description: Option<String>,
    /// Aspect ratio, default `4:3`.
    #[schema(value_type = Option<modelgen_domain::openapi::AspectRatioSchema>)]
    pub size: Option<String>,
    /// Where this task's callback goes instead of `CALLBACK_URL` (optional):
    /// an absolute `https://` or `http://` URL, at most 2048 characters,
    /// without user info, whose host is one of `CALLBACK_URL_ALLOWED_HOSTS`
    /// and whose addresses pass the same checks as every outbound fetch
    /// (docs/outbound.md). Refused (1001) when that list is empty. Compared
    /// on an idempotent replay like the rest of the payload.
    #[schema(max_length = 2048)]
    pub callback_url: Option<String>,
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
    #[schema(value_type = modelgen_domain::openapi::TaskStatusSchema)]
    pub status: String,
    /// Outfit angle, else null.
    #[schema(value_type = Option<modelgen_domain::openapi::AngleSchema>)]
    pub angle: Option<String>,
}

/// One image of a task view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ImageView {
    /// Where to GET the image, rendered when the view is read: `{PUBLIC_BASE_URL}/…`
    /// (local storage: `…/images/{key}`), a presigned URL valid for
    /// `IMAGE_URL_EXPIRY` seconds (`IMAGE_URL_MODE=presigned`), or an imported
    /// image's own URL.
    #[schema(format = "uri")]
    pub image_url: String,
    /// Pixels; null when unknown (an imported image).
    #[schema(minimum = 1)]
    pub width: Option<i32>,
    /// Pixels; null when unknown.
    #[schema(minimum = 1)]
    pub height: Option<i32>,
    /// `image/png`, `image/jpeg` or `image/webp`; null when unknown.
    #[schema(value_type = Option<modelgen_domain::openapi::ImageMimeSchema>)]
    pub mime: Option<String>,
    /// The image inline (standard base64, no `data:` prefix), only with
    /// `GET /tasks/{task_id}?include=image_base64` and only when it was stored
    /// (`IMAGE_BASE64=true` at completion); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_base64: Option<String>,
}

/// `GET /tasks/{task_id}` (README, "API"); times are RFC 3339 UTC.
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
    #[schema(value_type = modelgen_domain::openapi::TaskTypeSchema)]
    pub task_type: String,
    /// `submitted`, `processing`, `completed`, `failed` or `cancelled`.
    #[schema(value_type = modelgen_domain::openapi::TaskStatusSchema)]
    pub status: String,
    /// 0–100.
    #[schema(maximum = 100)]
    pub progress: u8,
    /// Outfit angle.
    #[schema(value_type = Option<modelgen_domain::openapi::AngleSchema>)]
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
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last change.
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Terminal time.
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    /// When the task's current run joined the submit queue: its creation, or
    /// an operator's retry (`modelgen tasks retry`). `QUEUE_TIMEOUT` counts
    /// from here until `submitted_at`.
    #[schema(format = DateTime)]
    pub queued_at: String,
    /// When the upstream accepted the task; null while it waits in the queue
    /// (and for a task that ended before it was submitted). `TASK_TIMEOUT`
    /// counts from here.
    #[schema(format = DateTime)]
    pub submitted_at: Option<String>,
    /// While the task waits to be submitted: how many tasks are ahead of it in
    /// the submit order (0: it is next). Null once submitted or ended, and in
    /// `GET /tasks` lists (only `GET /tasks/{task_id}` computes it).
    pub queue_position: Option<u64>,
    /// While the task waits to be submitted: when it should be, from its
    /// position and the drain rate measured over the last minute (or the
    /// nominal rate, the pacer's start rate / 4 tasks/s, before any is measured).
    /// An estimate; null like `queue_position`.
    #[schema(format = DateTime)]
    pub estimated_start_at: Option<String>,
    /// What the upstream charged for the task, in the Apimart account's
    /// balance unit (docs/apimart.md, "Cost"), as it reported on completion;
    /// null when it reported none, and for failed or cancelled tasks.
    pub cost: Option<f64>,
    /// How many times an operator retried the task (0 for its first run).
    /// A retried run's callback has event type `task.retry_<status>`.
    pub retries: i32,
    /// The task's own callback receiver, as given at creation; null when its
    /// callback goes to `CALLBACK_URL`.
    pub callback_url: Option<String>,
}

/// `GET /tasks` page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TaskPage {
    /// Newest first.
    pub items: Vec<TaskView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgen_domain::body::parse_decimal;
    use proptest::prelude::*;

    #[test]
    fn earlier_names_fold_into_the_current_ones() {
        let mut errors = Vec::new();
        let dto: BodyProfileDto = serde_json::from_value(serde_json::json!({
            "height": "165", "weight": 50, "skin_color": "fair", "body_type": "pear", "age": 28.0
        }))
        .unwrap();
        let input = dto.into_input(&mut errors);
        assert!(errors.is_empty());
        assert_eq!(input.height_cm, Some(165.0));
        assert_eq!(input.weight_kg, Some(50.0));
        assert_eq!(input.skin_tone.as_deref(), Some("fair"));
        assert_eq!(input.body_shape.as_deref(), Some("pear"));
        assert_eq!(input.age, Some(28.0));

        let dto: BodyProfileDto = serde_json::from_value(serde_json::json!({
            "weight": 50, "weight_kg": 51, "body_type": "a", "body_shape": "b"
        }))
        .unwrap();
        let input = dto.into_input(&mut errors);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["body_profile.weight_kg", "body_profile.body_shape"]
        );
        assert_eq!(input.weight_kg, Some(51.0), "the current name wins");
    }

    proptest! {
        /// What the OpenAPI document promises for numbers written as strings
        /// is accepted by the parser (the range is checked separately).
        #[test]
        fn the_documented_string_patterns_are_accepted_by_the_parser(
            s in prop_oneof![
                "[ \t]{0,2}[+-]?[0-9]{0,4}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,2})?[ \t\n]{0,2}",
                ".{0,12}",
            ],
        ) {
            let decimal = regex::Regex::new(DECIMAL_PATTERN).unwrap();
            let whole = regex::Regex::new(WHOLE_PATTERN).unwrap();
            if decimal.is_match(&s) {
                let v = parse_decimal(&s);
                prop_assert!(v.is_some_and(|v| v >= 0.0), "{:?} -> {:?}", s, v);
            }
            if whole.is_match(&s) {
                let v = parse_decimal(&s);
                prop_assert!(v.is_some_and(|v| v >= 0.0 && v.fract() == 0.0), "{:?} -> {:?}", s, v);
                prop_assert!(decimal.is_match(&s));
            }
        }
    }
}
