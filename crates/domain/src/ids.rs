//! Task identifiers.
//!
//! modelgen names each new task `task_` + a ULID (26 Crockford base32
//! characters): ULIDs sort by creation time, carry 80 random bits (not
//! guessable) and need no coordination between replicas.
//!
//! A [`TaskId`] is nevertheless an *opaque* string, because tasks imported
//! from the earlier service keep the ids it gave them (docs/legacy.md, "Task
//! ids"): Apimart's ids (`task_01K…`, `task-unified-<unix>-<8 chars>`) and its
//! own `task_<16 hex digits>`, up to 128 characters. Every place that takes a
//! task id (the API paths, `base_model_task_id`, list cursors, the CLI, stored
//! rows) accepts any string of the id alphabet, [`TaskId::MAX_LEN`] long at most:
//!
//! - ASCII letters and digits, and `- . _ ~ ! $ & ' ( ) * + , ; = : @` — the
//!   characters RFC 3986 allows unescaped in a URL path segment, so an id
//!   always fits in `/tasks/{id}` as it is and never needs percent-encoding;
//! - not `.` or `..`, which would be path traversal inside storage keys.
//!
//! Whitespace, control characters, `/ ? # %`, quotes, brackets and anything
//! outside ASCII are refused. The id is kept inline (no allocation), so
//! `TaskId` stays `Copy`.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// Prefix of every id modelgen generates.
pub const TASK_ID_PREFIX: &str = "task_";

/// The punctuation allowed in a task id besides ASCII letters and digits: the
/// RFC 3986 "unreserved" and "sub-delims" characters plus `:` and `@`.
pub const TASK_ID_PUNCTUATION: &str = "-._~!$&'()*+,;=:@";

/// A task id: `task_` + ULID for new tasks (`task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W`),
/// or any opaque id of the alphabet described in the [module docs](self) for
/// imported ones (`task-unified-1757165031-uyujaw3d`).
///
/// Built only by [`TaskId::generate`] or by parsing. Equality, ordering and
/// hashing are those of the string.
#[derive(Clone, Copy)]
pub struct TaskId {
    /// Number of bytes used in `bytes`, 1 to [`TaskId::MAX_LEN`].
    len: u8,
    /// The id's ASCII bytes, zero after `len`.
    bytes: [u8; TaskId::MAX_LEN],
}

/// Why a string is not a task id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseTaskIdError {
    /// The string is empty.
    #[error("task id is empty")]
    Empty,
    /// Longer than [`TaskId::MAX_LEN`] characters.
    #[error("task id is {len} characters long; at most {max} are allowed", max = TaskId::MAX_LEN)]
    TooLong {
        /// The length in characters.
        len: usize,
    },
    /// A character outside the id alphabet.
    #[error(
        "task id contains {} at position {position}; ids use ASCII letters, digits and {TASK_ID_PUNCTUATION}",
        shown_char(*.character)
    )]
    InvalidCharacter {
        /// 0-based position in characters.
        position: usize,
        /// The offending character.
        character: char,
    },
    /// `.` or `..`.
    #[error("task id must not be `.` or `..`")]
    DotSegment,
}

fn shown_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("`{c}`")
    }
}

/// Whether `b` may appear in a task id.
pub fn is_task_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || TASK_ID_PUNCTUATION.as_bytes().contains(&b)
}

impl TaskId {
    /// Longest task id, in characters (= bytes: ids are ASCII). The earlier
    /// service stored ids in `String(128)` columns (docs/legacy.md).
    pub const MAX_LEN: usize = 128;

    /// A new `task_` + ULID id from the current time and fresh randomness.
    pub fn generate() -> Self {
        let text = format!("{TASK_ID_PREFIX}{}", Ulid::generate());
        let mut id = TaskId {
            len: 0,
            bytes: [0; TaskId::MAX_LEN],
        };
        // 31 ASCII bytes: always fits.
        id.bytes[..text.len()].copy_from_slice(text.as_bytes());
        id.len = text.len() as u8;
        id
    }

    /// Checks `s` against the rule of the [module docs](self).
    ///
    /// # Errors
    /// [`ParseTaskIdError`], checked in the order empty, too long, invalid
    /// character, dot segment.
    pub fn parse(s: &str) -> Result<TaskId, ParseTaskIdError> {
        if s.is_empty() {
            return Err(ParseTaskIdError::Empty);
        }
        if s.len() > TaskId::MAX_LEN {
            let len = s.chars().count();
            if len > TaskId::MAX_LEN {
                return Err(ParseTaskIdError::TooLong { len });
            }
        }
        if let Some((position, character)) = s
            .chars()
            .enumerate()
            .find(|(_, c)| !(c.is_ascii() && is_task_id_byte(*c as u8)))
        {
            return Err(ParseTaskIdError::InvalidCharacter {
                position,
                character,
            });
        }
        if s == "." || s == ".." {
            return Err(ParseTaskIdError::DotSegment);
        }
        // ASCII only from here: len() is the length in characters, at most MAX_LEN.
        let mut bytes = [0; TaskId::MAX_LEN];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(TaskId {
            len: s.len() as u8,
            bytes,
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored, so this never fails.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The id's bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The ULID of an id of modelgen's own form (`task_` + ULID), `None` for
    /// any other (imported) id.
    pub fn ulid(&self) -> Option<Ulid> {
        let rest = self.as_str().strip_prefix(TASK_ID_PREFIX)?;
        if rest.len() != 26 {
            return None;
        }
        Ulid::from_string(rest).ok()
    }

    /// Milliseconds since the Unix epoch at which a `task_` + ULID id was
    /// generated; `None` for other ids.
    pub fn timestamp_ms(&self) -> Option<u64> {
        self.ulid().map(|u| u.timestamp_ms())
    }
}

impl PartialEq for TaskId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for TaskId {}

impl Hash for TaskId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for TaskId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TaskId {
    /// Byte order of the text, as the databases sort the id column.
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TaskId").field(&self.as_str()).finish()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskId {
    type Err = ParseTaskIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskId::parse(s)
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::hash_map::DefaultHasher;

    /// The rule of the module docs, written independently of the parser.
    fn oracle(s: &str) -> bool {
        let n = s.chars().count();
        (1..=128).contains(&n)
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c))
    }

    fn hash(id: &TaskId) -> u64 {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        h.finish()
    }

    /// A strategy for strings of the id alphabet (some are `.`/`..`).
    fn alphabet(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                proptest::char::range('a', 'z'),
                proptest::char::range('A', 'Z'),
                proptest::char::range('0', '9'),
                proptest::sample::select("-._~!$&'()*+,;=:@".chars().collect::<Vec<_>>()),
            ],
            1..=max,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    #[test]
    fn generated_ids_round_trip_and_carry_their_time() {
        let a = TaskId::generate();
        let b: TaskId = a.to_string().parse().unwrap();
        assert_eq!(a, b);
        assert!(a.to_string().starts_with("task_"));
        assert_eq!(a.as_str().len(), 31);
        assert!(a.ulid().is_some());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(a.timestamp_ms().unwrap().abs_diff(now) < 60_000);
    }

    #[test]
    fn the_earlier_services_id_formats_are_accepted() {
        for s in [
            "task_01K4GQ3ZQ9X7H5W6V2M8N0P1RS",
            "task-unified-1757165031-uyujaw3d",
            "task_3f9a0c2e7b1d4a58",
            "01JQ8Z6X3M4N5P6Q7R8S9T0V1W",
            "42",
            "a",
            "..a",
            "task:1@x",
        ] {
            let id: TaskId = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(id.as_str(), s);
        }
        let legacy: TaskId = "task-unified-1757165031-uyujaw3d".parse().unwrap();
        assert_eq!(legacy.ulid(), None);
        assert_eq!(legacy.timestamp_ms(), None);
        let max = "x".repeat(128);
        assert_eq!(max.parse::<TaskId>().unwrap().as_str(), max);
    }

    #[test]
    fn foreign_strings_are_refused_with_a_reason() {
        assert_eq!("".parse::<TaskId>(), Err(ParseTaskIdError::Empty));
        assert_eq!(
            "x".repeat(129).parse::<TaskId>(),
            Err(ParseTaskIdError::TooLong { len: 129 })
        );
        assert_eq!(".".parse::<TaskId>(), Err(ParseTaskIdError::DotSegment));
        assert_eq!("..".parse::<TaskId>(), Err(ParseTaskIdError::DotSegment));
        for (s, position, character) in [
            ("task/1", 4, '/'),
            ("a?b", 1, '?'),
            ("a#b", 1, '#'),
            ("a%2Fb", 1, '%'),
            ("a b", 1, ' '),
            ("tab\t", 3, '\t'),
            ("ñ", 0, 'ñ'),
            ("a\"b", 1, '"'),
            ("a\\b", 1, '\\'),
        ] {
            assert_eq!(
                s.parse::<TaskId>(),
                Err(ParseTaskIdError::InvalidCharacter {
                    position,
                    character
                }),
                "{s:?}"
            );
        }
        let msg = "a b".parse::<TaskId>().unwrap_err().to_string();
        assert!(msg.contains("U+0020 at position 1"), "{msg}");
        let msg = "a/b".parse::<TaskId>().unwrap_err().to_string();
        assert!(msg.contains("`/` at position 1"), "{msg}");
    }

    #[test]
    fn serde_uses_the_string() {
        let id: TaskId = "task-unified-1757165031-uyujaw3d".parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"task-unified-1757165031-uyujaw3d\"");
        assert_eq!(serde_json::from_str::<TaskId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<TaskId>("\"a/b\"").is_err());
    }

    proptest! {
        #[test]
        fn parsing_any_string_never_panics_and_follows_the_rule(s in ".{0,140}") {
            let parsed = s.parse::<TaskId>();
            prop_assert_eq!(parsed.is_ok(), oracle(&s), "{:?} -> {:?}", s, parsed);
            if let Ok(id) = parsed {
                prop_assert_eq!(id.as_str(), s.as_str());
            }
        }

        #[test]
        fn strings_of_the_alphabet_round_trip(s in alphabet(128)) {
            prop_assume!(s != "." && s != "..");
            let id: TaskId = s.parse().map_err(|e| TestCaseError::fail(format!("{s:?}: {e}")))?;
            prop_assert_eq!(id.as_str(), s.as_str());
            prop_assert_eq!(id.to_string(), s.clone());
            prop_assert_eq!(id.as_bytes().len(), s.len());
            let copy = id;
            prop_assert_eq!(copy, id);
            prop_assert_eq!(serde_json::from_value::<TaskId>(serde_json::to_value(id).unwrap()).unwrap(), id);
        }

        #[test]
        fn too_long_strings_of_the_alphabet_are_refused(s in alphabet(200)) {
            prop_assume!(s.len() > 128);
            prop_assert_eq!(s.parse::<TaskId>(), Err(ParseTaskIdError::TooLong { len: s.len() }));
        }

        #[test]
        fn one_bad_character_anywhere_is_refused_at_its_position(
            s in alphabet(127),
            bad in prop_oneof![
                proptest::sample::select(vec!['/', '?', '#', '%', ' ', '\n', '\0', '"', '<', '>', '[', ']', '{', '}', '|', '\\', '^', '`']),
                any::<char>().prop_filter("not ASCII", |c| !c.is_ascii()),
            ],
            at in any::<prop::sample::Index>(),
        ) {
            let mut chars: Vec<char> = s.chars().collect();
            let position = at.index(chars.len() + 1);
            chars.insert(position, bad);
            let text: String = chars.into_iter().collect();
            prop_assert_eq!(
                text.parse::<TaskId>(),
                Err(ParseTaskIdError::InvalidCharacter { position, character: bad })
            );
        }

        #[test]
        fn equality_order_and_hash_are_those_of_the_string(a in alphabet(40), b in alphabet(40)) {
            prop_assume!(oracle(&a) && oracle(&b));
            let (x, y): (TaskId, TaskId) = (a.parse().unwrap(), b.parse().unwrap());
            prop_assert_eq!(x.cmp(&y), a.as_bytes().cmp(b.as_bytes()));
            prop_assert_eq!(x == y, a == b);
            if a == b {
                prop_assert_eq!(hash(&x), hash(&y));
            }
        }

        #[test]
        fn legacy_id_shapes_are_accepted(
            hex in "[0-9a-f]{16}",
            unix in 1_500_000_000u64..2_500_000_000,
            suffix in "[a-z0-9]{8}",
            hi in any::<u64>(), lo in any::<u64>(),
        ) {
            for s in [
                format!("task_{hex}"),
                format!("task-unified-{unix}-{suffix}"),
                format!("task_{}", Ulid::from((hi, lo))),
            ] {
                let id: TaskId = s.parse().map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
                prop_assert_eq!(id.as_str(), s.as_str());
            }
            let own: TaskId = format!("task_{}", Ulid::from((hi, lo))).parse().unwrap();
            prop_assert_eq!(own.ulid(), Some(Ulid::from((hi, lo))));
        }
    }
}
