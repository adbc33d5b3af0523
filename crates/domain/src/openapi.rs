//! OpenAPI schemas of the domain's wire enums (feature `openapi`), built from
//! the enums' own `ALL` lists so the document can never list a value the
//! parser refuses or miss one it accepts.
//!
//! Each type here is a schema only (no values): a field of the HTTP or
//! callback bodies that carries the enum as a string names it with
//! `#[schema(value_type = …)]`, and the document gets one named component per
//! enum (`TaskStatus`, `TaskType`, …), which code generators turn into one
//! enum type each.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, schema::SchemaType};

use crate::{Angle, AspectRatio, Gender, ImageMime, TaskStatus, TaskType};

/// A string schema whose value is one of `values`.
pub fn string_enum<'a>(
    values: impl IntoIterator<Item = &'a str>,
    description: &str,
) -> RefOr<Schema> {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .enum_values(Some(values.into_iter().map(str::to_owned)))
            .description(Some(description))
            .build(),
    )
    .into()
}

/// Declares a schema-only type named `$component` in the document.
macro_rules! enum_schema {
    ($(#[$meta:meta])* $name:ident as $component:literal = $values:expr, $description:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                string_enum($values, $description)
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($component)
            }
        }
    };
}

enum_schema!(
    /// `TaskStatus`: `submitted`, `processing`, `completed`, `failed`, `cancelled`.
    TaskStatusSchema as "TaskStatus" = TaskStatus::ALL.iter().map(TaskStatus::as_str),
    "Where a task is: `submitted` (stored, waiting for or being sent upstream), `processing` (running upstream), \
     then one of the terminal states `completed`, `failed`, `cancelled`."
);

enum_schema!(
    /// `TerminalStatus`: the statuses a task ends in.
    TerminalStatusSchema as "TerminalStatus" = TaskStatus::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(TaskStatus::as_str),
    "A terminal task status (the only ones a callback reports)."
);

enum_schema!(
    /// `TaskType`: `default`, `edit`, `outfit`.
    TaskTypeSchema as "TaskType" = TaskType::ALL.iter().map(TaskType::as_str),
    "The job: `default` (F1, a model from a photo), `edit` (F2), `outfit` (F3)."
);

enum_schema!(
    /// `Angle`: `front`, `side`, `back`.
    AngleSchema as "Angle" = Angle::ALL.iter().map(Angle::as_str),
    "The camera angle of an outfit picture."
);

enum_schema!(
    /// `AspectRatio`: the ratios [`AspectRatio::ALL`] accepts.
    AspectRatioSchema as "AspectRatio" = AspectRatio::ALL.iter().map(AspectRatio::as_str),
    "Aspect ratio of the result, width:height."
);

enum_schema!(
    /// `Gender`: the canonical spellings (`male`, `female`).
    GenderSchema as "Gender" = Gender::ALL.iter().map(Gender::as_str),
    "The model's gender. The service also accepts any ASCII case of these and 男, 女, 男性, 女性; \
     the document lists the canonical spellings only."
);

enum_schema!(
    /// `ImageMime`: the media types of stored images.
    ImageMimeSchema as "ImageMime" = ImageMime::ALL.iter().map(ImageMime::as_str),
    "Media type of an image."
);

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    fn values<T: PartialSchema>() -> Vec<String> {
        let json = serde_json::to_value(T::schema()).unwrap_or_default();
        json["enum"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn schemas_list_exactly_the_values_the_parsers_take() {
        assert_eq!(
            values::<TaskStatusSchema>(),
            [
                "submitted",
                "processing",
                "completed",
                "failed",
                "cancelled"
            ]
        );
        assert_eq!(
            values::<TerminalStatusSchema>(),
            ["completed", "failed", "cancelled"]
        );
        assert_eq!(values::<TaskTypeSchema>(), ["default", "edit", "outfit"]);
        assert_eq!(values::<AngleSchema>(), ["front", "side", "back"]);
        for ratio in values::<AspectRatioSchema>() {
            assert!(ratio.parse::<AspectRatio>().is_ok(), "{ratio}");
        }
        assert_eq!(values::<AspectRatioSchema>().len(), AspectRatio::ALL.len());
        assert_eq!(values::<GenderSchema>(), ["male", "female"]);
        assert_eq!(values::<ImageMimeSchema>().len(), 3);
    }
}
