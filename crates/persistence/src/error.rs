//! Errors of the repositories.

use modelgen_domain::{TaskStatus, TransitionError};

/// What went wrong in a repository call; each variant is something a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// No row with that id (or not visible to that user).
    #[error("not found")]
    NotFound,
    /// A unique constraint was violated in a way the method could not resolve.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller no longer holds the lease on the row (it expired, or another
    /// worker took it): the write was not applied.
    #[error("lease lost")]
    LeaseLost,
    /// The state machine refused the event; nothing was written.
    #[error("invalid transition: {0}")]
    InvalidTransition(#[from] TransitionError),
    /// The task is terminal (e.g. cancel of a completed task); nothing was written.
    #[error("task is already {0}")]
    AlreadyTerminal(TaskStatus),
    /// The images the task needs to run again were deleted (input retention,
    /// or an erasure of its owner's data); nothing was written.
    #[error(
        "the task's input images were deleted on {} (input retention or a data erasure); create a new task instead",
        modelgen_domain::format_timestamp(*.purged_at)
    )]
    InputsPurged {
        /// When they were deleted.
        purged_at: chrono::DateTime<chrono::Utc>,
    },
    /// The database could not be reached or the pool timed out; retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read back into its domain type.
    #[error("corrupt row {id}: {reason}")]
    Corrupt {
        /// The row's id.
        id: String,
        /// What was wrong.
        reason: String,
    },
    /// The URL names a backend this build does not support, or is malformed.
    #[error("unsupported database url: {0}")]
    UnsupportedUrl(String),
    /// The database server is a version this build cannot run on (a MySQL or
    /// MariaDB without `SKIP LOCKED`); the message names the version found.
    #[error("unsupported database server: {0}")]
    UnsupportedServer(String),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Any other database error.
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
}
