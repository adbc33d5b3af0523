//! OpenAPI schema pieces of the callback (feature `openapi`): the
//! `event_type` enum, built from the terminal task statuses so it cannot
//! drift from what [`crate::CallbackPayload`] carries.

use std::borrow::Cow;

use modelgen_domain::TaskStatus;
use modelgen_domain::openapi::string_enum;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

/// Every `event_type` a callback can carry: `task.<status>` for a task's
/// first run and `task.retry_<status>` for a run an operator retried, for
/// each terminal status.
pub fn event_types() -> Vec<String> {
    let terminal = || TaskStatus::ALL.iter().filter(|s| s.is_terminal());
    terminal()
        .map(|s| format!("task.{}", s.as_str()))
        .chain(terminal().map(|s| format!("task.retry_{}", s.as_str())))
        .collect()
}

/// Schema-only type of the `CallbackEventType` component.
#[derive(Debug, Clone, Copy)]
pub struct CallbackEventTypeSchema;

impl utoipa::PartialSchema for CallbackEventTypeSchema {
    fn schema() -> RefOr<Schema> {
        let values = event_types();
        string_enum(
            values.iter().map(String::as_str),
            "What a callback reports: `task.<status>` for a task's first run, `task.retry_<status>` \
             for a run an operator retried (same task id, new `webhook-id`).",
        )
    }
}

impl utoipa::ToSchema for CallbackEventTypeSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CallbackEventType")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_cover_first_runs_and_retries() {
        assert_eq!(
            event_types(),
            [
                "task.completed",
                "task.failed",
                "task.cancelled",
                "task.retry_completed",
                "task.retry_failed",
                "task.retry_cancelled"
            ]
        );
    }
}
