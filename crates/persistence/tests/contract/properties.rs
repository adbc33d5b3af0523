//! Property: any sequence of events and bookkeeping applied through
//! `update_task` on a real database behaves exactly like the pure state machine
//! (`modelgen_domain::transition`), keeps `updated_at` moving on every write,
//! and leaves at most one outbox row, only for a terminal task.

use chrono::{DateTime, TimeDelta, Utc};
use modelgen_domain::task::MIN_UPDATE_STEP;
use modelgen_domain::{Progress, TaskEvent, TaskState, TaskStatus, transition};
use modelgen_persistence::testing::{fresh_database, skipped};
use modelgen_persistence::{
    Backend, CallbackOutbox, Database, Fence, RepoError, TaskChange, TaskRepository,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

use crate::support::{create, new_task, t0};

/// Each case hits the database a few dozen times: keep the count small.
const CASES: u32 = 16;

#[derive(Debug, Clone)]
struct Op {
    event: Option<TaskEvent>,
    count_poll: bool,
    enqueue: bool,
    /// Clock movement before the op, in ms; negative = the clock went back.
    dt_ms: i64,
}

fn event() -> impl Strategy<Value = TaskEvent> {
    prop_oneof![
        4 => (0i64..=120).prop_map(|p| TaskEvent::Progressed(Progress::clamped(p))),
        1 => Just(TaskEvent::Completed),
        1 => Just(TaskEvent::Failed),
        1 => Just(TaskEvent::Cancelled),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        (
            proptest::option::weighted(0.8, event()),
            any::<bool>(),
            any::<bool>(),
            -2_000i64..5_000,
        )
            .prop_map(|(event, count_poll, enqueue, dt_ms)| Op {
                event,
                count_poll,
                enqueue,
                dt_ms,
            }),
        1..12,
    )
}

async fn check_sequence(db: &Database, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let task = create(db, new_task("prop", None, t0())).await;
    let mut model = TaskState::new(t0());
    let mut polls = 0;
    let mut outbox_expected = false;
    let mut clock: DateTime<Utc> = t0();
    let mut last_stored = task;
    for op in ops {
        clock += TimeDelta::milliseconds(op.dt_ms);
        let change = TaskChange {
            event: op.event,
            count_poll: op.count_poll,
            enqueue_callback: op.enqueue,
            ..TaskChange::default()
        };
        let result = db
            .update_task(&last_stored.task_id, &Fence::Unfenced, clock, change)
            .await;

        // What the model says.
        let next = match op.event {
            Some(TaskEvent::Cancelled) if model.status.is_terminal() => {
                prop_assert!(
                    matches!(result, Err(RepoError::AlreadyTerminal(s)) if s == model.status),
                    "{:?}",
                    result
                );
                None
            }
            Some(ev) => match transition(&model, ev, clock) {
                Err(expected) => {
                    prop_assert!(
                        matches!(&result, Err(RepoError::InvalidTransition(e)) if *e == expected),
                        "{:?} vs {:?}",
                        result,
                        expected
                    );
                    None
                }
                Ok(state) => Some(state),
            },
            None => Some(model),
        };
        let stored = db
            .get_task(&last_stored.task_id)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Some(mut next) = next else {
            prop_assert_eq!(&stored, &last_stored, "a refused change wrote something");
            continue;
        };
        let record = result.map_err(|e| TestCaseError::fail(format!("unexpected error {e}")))?;
        prop_assert_eq!(&record, &stored, "returned row differs from stored row");
        if next == model && op.count_poll {
            next.updated_at = clock.max(model.updated_at + MIN_UPDATE_STEP);
        }
        if next != model {
            prop_assert!(
                record.updated_at > last_stored.updated_at,
                "updated_at did not move"
            );
        }
        polls += i32::from(op.count_poll);
        outbox_expected |= op.enqueue && next.status.is_terminal();
        prop_assert_eq!(record.status, next.status);
        prop_assert_eq!(record.progress, next.progress);
        prop_assert_eq!(record.updated_at, next.updated_at);
        prop_assert_eq!(record.completed_at, next.completed_at);
        prop_assert_eq!(record.poll_count, polls);
        prop_assert!(
            record.progress >= last_stored.progress,
            "progress went down"
        );
        if last_stored.status.is_terminal() {
            prop_assert_eq!(record.status, last_stored.status, "terminal status changed");
        }
        if record.status == TaskStatus::Completed {
            prop_assert_eq!(record.progress, Progress::DONE);
        }
        model = next;
        last_stored = record;
    }
    let outbox = db
        .callbacks_for_task(&last_stored.task_id)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(outbox.len(), usize::from(outbox_expected));
    if let Some(row) = outbox.first() {
        prop_assert_eq!(&row.event_type, &format!("task.{}", last_stored.status));
    }
    Ok(())
}

fn run_property(backend: Backend) {
    if skipped(backend) {
        eprintln!("skipped: {backend} tests are turned off");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // One fresh database for the property; every case works on its own new task.
    let (db, guard) = runtime.block_on(fresh_database(backend));
    let mut runner = TestRunner::new(ProptestConfig::with_cases(CASES));
    let outcome = runner.run(&ops(), |ops| runtime.block_on(check_sequence(&db, ops)));
    drop(guard);
    if let Err(e) = outcome {
        panic!("{backend}: {e}");
    }
}

#[test]
fn sqlite_update_task_follows_the_state_machine() {
    run_property(Backend::Sqlite);
}

#[test]
fn postgres_update_task_follows_the_state_machine() {
    run_property(Backend::Postgres);
}

#[test]
fn mariadb_update_task_follows_the_state_machine() {
    run_property(Backend::Mysql);
}
