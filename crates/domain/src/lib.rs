//! Pure types and rules of modelgen: task ids, task types and states with the
//! transition function, validated inputs (body profile, angle, aspect ratio,
//! images, edit instructions, outfit description), prompt templates and
//! backoff delays. No I/O (except reading prompt template overrides from a directory the caller
//! names), no async: everything here is property-tested on its own.

pub mod aspect;
pub mod backoff;
pub mod body;
pub mod edit;
pub mod error;
pub mod ids;
pub mod image;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod outfit;
pub mod prompt;
pub mod task;

pub use aspect::AspectRatio;
pub use backoff::{backoff_delay, backoff_delay_with_jitter, with_jitter};
pub use body::{
    BodyProfile, BodyProfileInput, GENDER_SPELLINGS, Gender, MAX_AGE_YEARS, MAX_BODY_TEXT_CHARS,
    MAX_HEIGHT_CM, MAX_WEIGHT_KG,
};
pub use edit::{EditInstructions, EditInstructionsError, MAX_EDIT_INSTRUCTIONS_CHARS};
pub use error::FieldError;
pub use ids::{ParseTaskIdError, TASK_ID_PUNCTUATION, TaskId};
pub use image::{
    DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, DecodedImage, HttpsUrl, ImageInput, ImageInputError,
    ImageMime, ImageUrl, InvalidUrlReason, MAX_IMAGE_URL_CHARS, PixelBudget, PixelBudgetExceeded,
    declared_dimensions,
};
pub use outfit::{MAX_OUTFIT_DESCRIPTION_CHARS, OutfitDescription, OutfitDescriptionError};
pub use prompt::{MAX_OUTFIT_GARMENTS, MAX_PROMPT_CHARS, PromptError, PromptTemplates};
pub use task::{
    Angle, ParseEnumError, Progress, TaskEvent, TaskState, TaskStatus, TaskType, TransitionError,
    format_timestamp, next_update_stamp, transition,
};
