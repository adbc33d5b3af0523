//! Task identifiers: `task_` followed by a ULID (26 Crockford base32 characters).
//!
//! ULIDs sort by creation time, carry 80 random bits (not guessable) and need no
//! coordination between replicas.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// Prefix of every task id.
pub const TASK_ID_PREFIX: &str = "task_";

/// A modelgen task id, `task_` + ULID, e.g. `task_01JQ8Z6X3M4N5P6Q7R8S9T0V1W`.
///
/// Built only by [`TaskId::generate`] or by parsing; the inner ULID is private.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(Ulid);

/// Why a string is not a task id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseTaskIdError {
    /// The string does not start with `task_`.
    #[error("task id must start with `task_`")]
    MissingPrefix,
    /// The part after the prefix is not a 26-character ULID.
    #[error("task id must be `task_` followed by a 26-character ULID")]
    InvalidUlid,
}

impl TaskId {
    /// A new id from the current time and fresh randomness.
    pub fn generate() -> Self {
        TaskId(Ulid::generate())
    }

    /// Milliseconds since the Unix epoch at which the id was generated.
    pub fn timestamp_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TASK_ID_PREFIX}{}", self.0)
    }
}

impl FromStr for TaskId {
    type Err = ParseTaskIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(TASK_ID_PREFIX)
            .ok_or(ParseTaskIdError::MissingPrefix)?;
        if rest.len() != 26 {
            return Err(ParseTaskIdError::InvalidUlid);
        }
        Ulid::from_string(rest)
            .map(TaskId)
            .map_err(|_| ParseTaskIdError::InvalidUlid)
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_round_trip_and_sort_by_time() {
        let a = TaskId::generate();
        let b: TaskId = a.to_string().parse().unwrap();
        assert_eq!(a, b);
        assert!(a.to_string().starts_with("task_"));
        assert_eq!(a.to_string().len(), 31);
    }

    #[test]
    fn rejects_foreign_strings() {
        assert_eq!(
            "01JQ8Z6X3M4N5P6Q7R8S9T0V1W".parse::<TaskId>(),
            Err(ParseTaskIdError::MissingPrefix)
        );
        assert_eq!(
            "task_123".parse::<TaskId>(),
            Err(ParseTaskIdError::InvalidUlid)
        );
        assert_eq!(
            "task_UUUUUUUUUUUUUUUUUUUUUUUUUU".parse::<TaskId>(),
            Err(ParseTaskIdError::InvalidUlid)
        );
    }

    proptest! {
        #[test]
        fn parsing_any_string_never_panics(s in ".*") {
            let _ = s.parse::<TaskId>();
        }

        #[test]
        fn display_parse_round_trip(hi in any::<u64>(), lo in any::<u64>()) {
            let id = TaskId(Ulid::from((hi, lo)));
            prop_assert_eq!(id.to_string().parse::<TaskId>(), Ok(id));
        }
    }
}
