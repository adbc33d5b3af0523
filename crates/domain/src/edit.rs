//! The `edit_instructions` of an edit request (README, "API").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted edit instructions, in characters (Unicode scalar values,
/// not bytes) after trimming (README, "API": 1–500). The edit prompt wraps them in
/// about 450 characters of fixed text and must stay under Apimart's
/// 1000-character prompt limit (docs/apimart.md, "Submit").
pub const MAX_EDIT_INSTRUCTIONS_CHARS: usize = 500;

/// What the client wants changed on a base model, e.g. "make the hair short
/// and blond". Trimmed, 1–500 characters, line breaks normalised to `\n`, no
/// control characters other than `\n` and tab.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EditInstructions(String);

/// Why a string is not acceptable as edit instructions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditInstructionsError {
    /// Nothing but whitespace.
    #[error("must not be empty")]
    Empty,
    /// More than [`MAX_EDIT_INSTRUCTIONS_CHARS`] characters after trimming.
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

impl EditInstructions {
    /// Checks and normalises `s`: trims surrounding whitespace, turns `\r\n`
    /// and lone `\r` into `\n` (Windows and old Mac line breaks from text
    /// areas), then requires 1–500 characters and no other control characters.
    ///
    /// # Errors
    /// [`EditInstructionsError::Empty`], [`EditInstructionsError::TooLong`] or
    /// [`EditInstructionsError::ControlCharacter`].
    pub fn parse(s: &str) -> Result<EditInstructions, EditInstructionsError> {
        let text = s.trim().replace("\r\n", "\n").replace('\r', "\n");
        if text.is_empty() {
            return Err(EditInstructionsError::Empty);
        }
        let chars = text.chars().count();
        if chars > MAX_EDIT_INSTRUCTIONS_CHARS {
            return Err(EditInstructionsError::TooLong {
                chars,
                max: MAX_EDIT_INSTRUCTIONS_CHARS,
            });
        }
        if let Some((position, c)) = text
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_control() && !matches!(c, '\n' | '\t'))
        {
            return Err(EditInstructionsError::ControlCharacter {
                position,
                code_point: u32::from(c),
            });
        }
        Ok(EditInstructions(text))
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalised text, taken out.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for EditInstructions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EditInstructions {
    type Err = EditInstructionsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EditInstructions::parse(s)
    }
}

impl AsRef<str> for EditInstructions {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for EditInstructions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EditInstructions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        EditInstructions::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn trims_and_normalises_line_breaks() {
        let e = EditInstructions::parse("  short hair\r\nblond\rsmiling\t\n").unwrap();
        assert_eq!(e.as_str(), "short hair\nblond\nsmiling");
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert!(EditInstructions::parse(&"长".repeat(500)).is_ok());
        assert_eq!(
            EditInstructions::parse(&"长".repeat(501)),
            Err(EditInstructionsError::TooLong {
                chars: 501,
                max: 500
            })
        );
    }

    #[test]
    fn rejects_blank_and_control_characters() {
        assert_eq!(
            EditInstructions::parse(" \n\t "),
            Err(EditInstructionsError::Empty)
        );
        let err = EditInstructions::parse("ab\u{7}c").unwrap_err();
        assert_eq!(
            err,
            EditInstructionsError::ControlCharacter {
                position: 2,
                code_point: 7
            }
        );
        assert_eq!(
            err.to_string(),
            "must not contain control characters other than line breaks and tabs; found U+0007 at character 2"
        );
    }

    fn printable() -> impl Strategy<Value = char> {
        any::<char>().prop_filter("not a control character", |c| !c.is_control())
    }

    proptest! {
        #[test]
        fn non_blank_text_of_1_to_500_chars_is_accepted_trimmed(
            body in proptest::collection::vec(prop_oneof![8 => printable(), 1 => Just('\n'), 1 => Just('\t')], 1..=500),
        ) {
            let s: String = body.into_iter().collect();
            let trimmed = s.trim();
            prop_assume!(!trimmed.is_empty());
            let e = EditInstructions::parse(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(e.as_str(), trimmed);
            prop_assert!(e.as_str().chars().count() <= MAX_EDIT_INSTRUCTIONS_CHARS);
        }

        #[test]
        fn more_than_500_chars_is_too_long(extra in 1usize..300, c in printable()) {
            prop_assume!(!c.is_whitespace());
            let s = c.to_string().repeat(MAX_EDIT_INSTRUCTIONS_CHARS + extra);
            prop_assert_eq!(
                EditInstructions::parse(&s),
                Err(EditInstructionsError::TooLong { chars: MAX_EDIT_INSTRUCTIONS_CHARS + extra, max: MAX_EDIT_INSTRUCTIONS_CHARS })
            );
        }

        #[test]
        fn whitespace_only_is_empty(s in "[ \t\r\n\u{3000}\u{a0}]{0,50}") {
            prop_assert_eq!(EditInstructions::parse(&s), Err(EditInstructionsError::Empty));
        }

        #[test]
        fn embedded_control_characters_are_rejected(
            before in "[a-z ]{0,20}", after in "[a-z ]{0,20}",
            c in any::<char>().prop_filter("control other than line break or tab", |c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')),
        ) {
            let s = format!("x{before}{c}{after}x");
            let is_control_error = matches!(EditInstructions::parse(&s), Err(EditInstructionsError::ControlCharacter { code_point, .. }) if code_point == u32::from(c));
            prop_assert!(is_control_error);
        }

        #[test]
        fn parsing_any_string_never_panics_and_output_obeys_the_rules(s in ".*") {
            if let Ok(e) = EditInstructions::parse(&s) {
                let n = e.as_str().chars().count();
                prop_assert!((1..=MAX_EDIT_INSTRUCTIONS_CHARS).contains(&n));
                prop_assert!(!e.as_str().chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t')));
                prop_assert_eq!(e.as_str(), e.as_str().trim());
            }
        }
    }
}
