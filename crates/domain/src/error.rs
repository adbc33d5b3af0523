//! The per-field validation error shared by every input parser.
//!
//! The HTTP layer answers `400` / code `1001` with `data.errors` = a list of
//! these (README, "API"), so a client learns about every bad field
//! at once rather than one per round trip.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One rejected input field: which one, and why, in plain English.
///
/// Serialises as `{"field": "body_profile.height_cm", "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldError {
    /// The field's path as the client wrote it on the wire, dotted for nested
    /// objects and with `[i]` for array items, e.g. `body_profile.height_cm`,
    /// `outfit_images[2]`.
    pub field: String,
    /// Why the value was rejected, a sentence fragment a person can act on,
    /// e.g. `must be greater than 0 and at most 300`.
    pub message: String,
}

impl FieldError {
    /// A field error from anything string-like.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_field_and_message() {
        let e = FieldError::new("body_profile.age", "is required");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"field": "body_profile.age", "message": "is required"})
        );
        assert_eq!(e.to_string(), "body_profile.age: is required");
    }
}
