//! SQLite under concurrent writers: every write of the process goes through
//! one writer connection (crates/persistence/src/db/sqlite.rs), so many tasks
//! writing at once queue in the process instead of meeting SQLite's busy
//! handler, and none fails with "database is locked".

use std::collections::HashSet;
use std::time::Duration;

use modelgen_domain::{Progress, TaskEvent, TaskId, TaskStatus};
use modelgen_persistence::testing::fresh_database;
use modelgen_persistence::{
    AttemptOutcome, Backend, CallbackOutbox, CallbackStatus, Database, Fence, PoolOptions,
    TaskChange, TaskQuery, TaskRepository,
};

use crate::support::{at, new_task};

const LEASE: Duration = Duration::from_secs(600);
/// Concurrent workers, each its own tokio task.
const WORKERS: usize = 64;
/// Rounds per worker; each is about ten repository calls (seven or more of
/// them writes), so several hundred operations per worker.
const ROUNDS: usize = 40;

/// Every failure of one worker, as text (the assertion prints them all).
type Failures = Vec<String>;

/// One round of a worker: insert a task, read it, claim due tasks, renew the
/// leases, move each claimed task to processing, complete it (enqueuing its
/// callback), claim due callbacks and record their delivery, list tasks.
/// Returns the failures; stops the round at the first one.
async fn round(db: &Database, worker: usize, round: usize, failures: &mut Failures) {
    let owner = format!("w{worker}");
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{owner} round {round} {what}: {e}");
    let task = new_task(&owner, Some(&format!("r{round}")), at(0));
    let id = task.task_id;
    if let Err(e) = db.insert_task(task).await {
        return failures.push(fail("insert", &e));
    }
    if let Err(e) = db.get_task(&id).await {
        return failures.push(fail("get", &e));
    }
    let claimed = match db.claim_due_tasks(&owner, at(1_000), LEASE, 2).await {
        Ok(claimed) => claimed,
        Err(e) => return failures.push(fail("claim", &e)),
    };
    for task in &claimed {
        if let Err(e) = complete(db, &owner, task.task_id).await {
            return failures.push(fail("task step", &e));
        }
    }
    let callbacks = match db.claim_due_callbacks(&owner, at(4_000), LEASE, 2).await {
        Ok(callbacks) => callbacks,
        Err(e) => return failures.push(fail("claim callbacks", &e)),
    };
    for callback in &callbacks {
        let recorded = db
            .record_callback_attempt(
                &callback.event_id,
                &owner,
                at(4_100),
                AttemptOutcome::Delivered,
            )
            .await;
        if let Err(e) = recorded {
            return failures.push(fail("record callback attempt", &e));
        }
    }
    let listed = db
        .list_tasks(&TaskQuery {
            user_id: Some(owner.clone()),
            limit: 5,
            ..TaskQuery::default()
        })
        .await;
    if let Err(e) = listed {
        failures.push(fail("list", &e));
    }
}

/// The engine's writes for one claimed task: renew the lease, report
/// progress, complete with the callback enqueued and the lease released.
async fn complete(
    db: &Database,
    owner: &str,
    id: TaskId,
) -> Result<(), modelgen_persistence::RepoError> {
    let fence = Fence::Lease(owner.to_owned());
    db.renew_task_lease(&id, owner, at(2_000), LEASE).await?;
    db.update_task(
        &id,
        &fence,
        at(2_500),
        TaskChange {
            event: Some(TaskEvent::Progressed(Progress::clamped(40))),
            external_task_id: Some(format!("up-{id}")),
            count_poll: true,
            ..TaskChange::default()
        },
    )
    .await?;
    db.renew_task_lease(&id, owner, at(2_800), LEASE).await?;
    db.update_task(
        &id,
        &fence,
        at(3_000),
        TaskChange {
            event: Some(TaskEvent::Completed),
            enqueue_callback: true,
            release_lease: true,
            ..TaskChange::default()
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_writers_never_meet_a_locked_database() {
    let (_migrated, guard) = fresh_database(Backend::Sqlite).await;
    // As the measured burst: 16 pooled connections (now readers). SQLite's
    // busy timeout (the statement timeout) cut to 50 ms: writers of this
    // process wait for each other in its own queue (bounded by the 5 s call
    // timeout), never in SQLite's busy handler, so no write may come near
    // it. With 16 connections writing, many would wait longer and fail
    // "database is locked".
    let db = Database::connect(
        guard.url(),
        PoolOptions {
            max_connections: 16,
            statement_timeout: Duration::from_millis(50),
            ..PoolOptions::default()
        },
    )
    .await
    .unwrap();

    let handles: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut failures = Failures::new();
                for r in 0..ROUNDS {
                    round(&db, worker, r, &mut failures).await;
                }
                failures
            })
        })
        .collect();
    let mut failures = Failures::new();
    for handle in handles {
        failures.extend(handle.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failures ({} mention locked/busy), first ones: {:#?}",
        failures.len(),
        failures
            .iter()
            .filter(|f| f.contains("locked") || f.contains("busy"))
            .count(),
        &failures[..failures.len().min(10)]
    );

    // What the workers left (tasks inserted after the last claims): drained
    // by one more worker, then every task is completed with its callback
    // delivered, each once.
    loop {
        let claimed = db
            .claim_due_tasks("drain", at(1_000), LEASE, 50)
            .await
            .unwrap();
        if claimed.is_empty() {
            break;
        }
        for task in claimed {
            complete(&db, "drain", task.task_id).await.unwrap();
        }
    }
    loop {
        let callbacks = db
            .claim_due_callbacks("drain", at(4_000), LEASE, 50)
            .await
            .unwrap();
        if callbacks.is_empty() {
            break;
        }
        for callback in callbacks {
            db.record_callback_attempt(
                &callback.event_id,
                "drain",
                at(4_100),
                AttemptOutcome::Delivered,
            )
            .await
            .unwrap();
        }
    }
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let mine = db
            .list_tasks(&TaskQuery {
                user_id: Some(format!("w{worker}")),
                limit: 1_000,
                ..TaskQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(mine.len(), ROUNDS, "w{worker}");
        tasks.extend(mine);
    }
    assert!(
        tasks.iter().all(|t| t.status == TaskStatus::Completed),
        "every task completed"
    );
    let delivered = db
        .list_callbacks(Some(CallbackStatus::Delivered), 100_000)
        .await
        .unwrap();
    let events: HashSet<_> = delivered.iter().map(|c| c.task_id).collect();
    assert_eq!(delivered.len(), WORKERS * ROUNDS, "one callback per task");
    assert_eq!(events.len(), WORKERS * ROUNDS);
    assert!(
        delivered.iter().all(|c| c.attempts == 1),
        "each delivered once"
    );
    // One writer, the readers as configured.
    assert_eq!(db.writer_pool_status().map(|s| s.max), Some(1));
    assert_eq!(db.pool_status().max, 16);
}
