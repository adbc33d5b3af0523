//! Shared helpers: the per-backend runner and task builders.

use std::future::Future;

use chrono::{DateTime, TimeDelta, Utc};
use modelgen_domain::{TaskId, TaskType};
use modelgen_persistence::testing::{fresh_database, skipped};
use modelgen_persistence::{Backend, Database, InsertOutcome, NewTask, TaskRecord, TaskRepository};

/// Runs `case` on a fresh database of `backend`; the database is deleted when
/// the case ends (also when it panics, through the guard's `Drop`).
pub async fn run<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Database) -> Fut,
    Fut: Future<Output = ()>,
{
    if skipped(backend) {
        eprintln!(
            "skipped: {backend} tests are turned off (MODELGEN_SKIP_PG / MODELGEN_SKIP_MYSQL)"
        );
        return;
    }
    let (db, _guard) = fresh_database(backend).await;
    assert_eq!(db.backend(), backend);
    case(db).await;
}

/// A fixed instant, whole seconds, so the tests never depend on the wall clock.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// `t0() + ms` milliseconds.
pub fn at(ms: i64) -> DateTime<Utc> {
    t0() + TimeDelta::milliseconds(ms)
}

/// A `default` task of `user`, created at `created_at`.
pub fn new_task(user: &str, request_id: Option<&str>, created_at: DateTime<Utc>) -> NewTask {
    NewTask {
        task_id: TaskId::generate(),
        request_id: request_id.map(str::to_owned),
        user_id: user.to_owned(),
        task_type: TaskType::Default,
        base_model_task_id: None,
        angle: None,
        size: "4:3".to_owned(),
        prompt: "a person, front view".to_owned(),
        model: "gemini-2.5-flash-image-preview".to_owned(),
        input_images: vec![
            "blob:inputs/x/0.jpg".to_owned(),
            "https://example.test/a.png".to_owned(),
        ],
        request_fingerprint: Some("fp".to_owned()),
        created_at,
        callback_url: None,
    }
}

/// Inserts `task` and returns the created row (panics on `Existing`).
pub async fn create(db: &Database, task: NewTask) -> TaskRecord {
    match db.insert_task(task).await.unwrap() {
        InsertOutcome::Created(record) => record,
        InsertOutcome::Existing(record) => {
            panic!("expected a new row, got existing {}", record.task_id)
        }
    }
}
