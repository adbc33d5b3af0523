//! The optional `outfit_description` of an outfit request: the client's own
//! words about the outfit ("white T-shirt with jeans and sneakers"), which the
//! outfit prompt passes on to the model. The earlier service documented the
//! field (docs/legacy.md, "Outfit requests").

use std::fmt;

use serde::{Serialize, Serializer};

/// Longest accepted outfit description, in characters (Unicode scalar values)
/// after trimming. The outfit prompt is about 770 characters of fixed text with
/// five garments; 200 more keep it under [`crate::MAX_PROMPT_CHARS`] (Apimart's
/// limit, docs/legacy.md) without cutting anything.
pub const MAX_OUTFIT_DESCRIPTION_CHARS: usize = 200;

/// A checked outfit description: trimmed, 1–200 characters, line breaks
/// normalised to `\n`, no other control characters but tab.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutfitDescription(String);

/// Why a string is not acceptable as an outfit description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutfitDescriptionError {
    /// More than [`MAX_OUTFIT_DESCRIPTION_CHARS`] characters after trimming.
    #[error("must be at most {max} characters; got {chars}")]
    TooLong {
        /// Characters after trimming.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// A control character other than a line break or tab.
    #[error(
        "must not contain control characters other than line breaks and tabs; found U+{code_point:04X} at character {position}"
    )]
    ControlCharacter {
        /// 0-based character index in the trimmed text.
        position: usize,
        /// The offending code point.
        code_point: u32,
    },
}

impl OutfitDescription {
    /// Checks and normalises `s`: trims it and turns `\r\n` and lone `\r` into
    /// `\n`. Blank text means no description: `Ok(None)`.
    ///
    /// # Errors
    /// [`OutfitDescriptionError::TooLong`] or
    /// [`OutfitDescriptionError::ControlCharacter`].
    pub fn parse(s: &str) -> Result<Option<OutfitDescription>, OutfitDescriptionError> {
        let text = s.trim().replace("\r\n", "\n").replace('\r', "\n");
        if text.is_empty() {
            return Ok(None);
        }
        let chars = text.chars().count();
        if chars > MAX_OUTFIT_DESCRIPTION_CHARS {
            return Err(OutfitDescriptionError::TooLong {
                chars,
                max: MAX_OUTFIT_DESCRIPTION_CHARS,
            });
        }
        if let Some((position, c)) = text
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_control() && !matches!(c, '\n' | '\t'))
        {
            return Err(OutfitDescriptionError::ControlCharacter {
                position,
                code_point: u32::from(c),
            });
        }
        Ok(Some(OutfitDescription(text)))
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OutfitDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for OutfitDescription {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blank_means_none_and_text_is_trimmed() {
        assert_eq!(OutfitDescription::parse(" \n\t "), Ok(None));
        let d = OutfitDescription::parse("  白色T恤搭配牛仔裤\r\n和运动鞋 ")
            .unwrap()
            .unwrap();
        assert_eq!(d.as_str(), "白色T恤搭配牛仔裤\n和运动鞋");
    }

    #[test]
    fn limits_characters_and_control_characters() {
        assert!(OutfitDescription::parse(&"裤".repeat(200)).is_ok());
        assert_eq!(
            OutfitDescription::parse(&"裤".repeat(201)),
            Err(OutfitDescriptionError::TooLong {
                chars: 201,
                max: 200
            })
        );
        assert_eq!(
            OutfitDescription::parse("a\u{1b}b"),
            Err(OutfitDescriptionError::ControlCharacter {
                position: 1,
                code_point: 0x1b
            })
        );
    }

    proptest! {
        #[test]
        fn parsing_any_string_never_panics_and_output_obeys_the_rules(s in "(.|\n|\r){0,300}") {
            if let Ok(Some(d)) = OutfitDescription::parse(&s) {
                let n = d.as_str().chars().count();
                prop_assert!((1..=MAX_OUTFIT_DESCRIPTION_CHARS).contains(&n));
                prop_assert!(!d.as_str().chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t')));
                prop_assert_eq!(d.as_str(), d.as_str().trim());
            }
        }
    }
}
