//! Fair per-user queueing and the two claim lanes (crates/persistence/src/fair.rs):
//! a late user's task goes out in the next batch, backlogs interleave, polls
//! come first but submits keep their share, the rank follows the task's life,
//! nothing queued is ever lost, and the queries are served by the new indexes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use modelgen_domain::{Progress, TaskEvent, TaskId, TaskStatus, TaskType};
use modelgen_persistence::{
    Backend, Database, Fence, ImportedTask, TaskChange, TaskImport, TaskRecord, TaskRepository,
    parked_until,
};

use crate::support::{at, create, new_task, t0};

const LEASE: Duration = Duration::from_secs(30);

/// Marks `task` accepted upstream and due for its first poll at `poll_at`.
async fn start_upstream(db: &Database, task: &TaskRecord, poll_at_ms: i64) -> TaskRecord {
    db.update_task(
        &task.task_id,
        &Fence::Unfenced,
        at(poll_at_ms - 1),
        TaskChange {
            external_task_id: Some(format!("up-{}", task.task_id)),
            next_run_at: Some(at(poll_at_ms)),
            ..TaskChange::default()
        },
    )
    .await
    .unwrap()
}

pub async fn a_late_user_is_served_in_the_next_batch(db: Database) {
    for i in 0..500 {
        create(&db, new_task("catalogue", None, at(i))).await;
    }
    let single = create(&db, new_task("shopper", None, at(1_000))).await;
    assert_eq!(single.queue_rank, Some(0), "joins at the head");
    let position = db.queue_position(&single).await.unwrap().unwrap();
    assert!(position < 32, "position {position} behind a backlog of 500");
    assert_eq!(position, 1, "only the catalogue's first task is ahead");
    let batch = db.claim_due_tasks("w", at(2_000), LEASE, 32).await.unwrap();
    assert_eq!(batch.len(), 32);
    assert!(
        batch.iter().any(|t| t.task_id == single.task_id),
        "the shopper's task is in the first batch"
    );
    // The catalogue's tasks still go out in creation order.
    let catalogue: Vec<_> = batch.iter().filter(|t| t.user_id == "catalogue").collect();
    assert!(
        catalogue
            .windows(2)
            .all(|w| w[0].created_at < w[1].created_at)
    );
    let stats = db.queue_stats(at(2_000), LEASE).await.unwrap();
    assert_eq!(
        stats.depth, 501,
        "claimed tasks wait until accepted upstream"
    );
}

pub async fn backlogs_of_several_users_interleave(db: Database) {
    let mut ms = 0;
    for user in ["a", "b", "c"] {
        for _ in 0..10 {
            create(&db, new_task(user, None, at(ms))).await;
            ms += 1;
        }
    }
    let mut seen: HashMap<String, Vec<TaskRecord>> = HashMap::new();
    for round in 0..10 {
        let batch = db
            .claim_due_tasks(&format!("w{round}"), at(1_000), LEASE, 3)
            .await
            .unwrap();
        let users: HashSet<&str> = batch.iter().map(|t| t.user_id.as_str()).collect();
        assert_eq!(
            users,
            HashSet::from(["a", "b", "c"]),
            "round {round}: one task of each user"
        );
        for task in batch {
            seen.entry(task.user_id.clone()).or_default().push(task);
        }
    }
    for (user, tasks) in seen {
        assert_eq!(tasks.len(), 10);
        assert!(
            tasks.windows(2).all(|w| w[0].created_at < w[1].created_at),
            "{user}: first in, first out"
        );
    }
}

pub async fn polls_come_first_and_submits_keep_their_share(db: Database) {
    let mut running = Vec::new();
    for i in 0..12 {
        let task = create(&db, new_task("r", None, at(i))).await;
        running.push(start_upstream(&db, &task, 100 + i).await);
    }
    let mut queued = Vec::new();
    for i in 0..6 {
        queued.push(create(&db, new_task("q", None, at(50 + i))).await);
    }
    // 12 due polls, 6 queued, a batch of 8: 6 polls, 2 submits (a quarter).
    let batch = db.claim_due_tasks("w1", at(1_000), LEASE, 8).await.unwrap();
    let ids: Vec<TaskId> = batch.iter().map(|t| t.task_id).collect();
    let expected: Vec<TaskId> = running[..6]
        .iter()
        .chain(&queued[..2])
        .map(|t| t.task_id)
        .collect();
    assert_eq!(ids, expected, "polls first (oldest due), then submits");
    // 6 polls left, 4 queued, a batch of 8: the polls, then 2 submits.
    let batch = db.claim_due_tasks("w2", at(1_000), LEASE, 8).await.unwrap();
    assert_eq!(
        batch
            .iter()
            .filter(|t| t.external_task_id.is_some())
            .count(),
        6
    );
    assert_eq!(
        batch.iter().filter(|t| t.queue_rank.is_some()).count(),
        2,
        "slots the polls leave go to submits"
    );
    // Only queued tasks left: the whole batch is submits.
    let batch = db.claim_due_tasks("w3", at(1_000), LEASE, 8).await.unwrap();
    assert_eq!(
        batch.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        queued[4..].iter().map(|t| t.task_id).collect::<Vec<_>>()
    );
    // Polls not due yet are not claimed, and never ahead of due submits.
    let later = create(&db, new_task("r", None, at(2_000))).await;
    start_upstream(&db, &later, 50_000).await;
    let fresh = create(&db, new_task("q2", None, at(2_001))).await;
    let batch = db
        .claim_due_tasks("w4", at(10_000), LEASE, 8)
        .await
        .unwrap();
    assert_eq!(
        batch.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![fresh.task_id]
    );
}

pub async fn the_rank_follows_the_tasks_life(db: Database) {
    let first = create(&db, new_task("u", None, at(0))).await;
    let second = create(&db, new_task("u", None, at(1))).await;
    let other = create(&db, new_task("v", None, at(2))).await;
    assert_eq!(
        (first.queue_rank, second.queue_rank, other.queue_rank),
        (Some(0), Some(1), Some(0))
    );
    // A submit whose answer was lost (attempt counted, snoozed): still queued,
    // in its place.
    let unknown = db
        .update_task(
            &first.task_id,
            &Fence::Unfenced,
            at(10),
            TaskChange {
                count_submit_attempt: true,
                next_run_at: Some(at(5_000)),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(unknown.queue_rank, Some(0));
    assert_eq!(db.queue_position(&unknown).await.unwrap(), Some(1));
    // Accepted upstream: out of the queue.
    let started = start_upstream(&db, &unknown, 6_000).await;
    assert_eq!(started.queue_rank, None);
    assert_eq!(db.queue_position(&started).await.unwrap(), None);
    // Ended in the queue (cancel, failure): out of it.
    let cancelled = db
        .update_task(
            &other.task_id,
            &Fence::Unfenced,
            at(20),
            TaskChange {
                event: Some(TaskEvent::Cancelled),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cancelled.queue_rank, None);
    let failed = db
        .update_task(
            &second.task_id,
            &Fence::Unfenced,
            at(30),
            TaskChange {
                event: Some(TaskEvent::Failed),
                error: Some((1500, "refused upstream".into())),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.queue_rank, None);
    assert_eq!(db.queue_stats(at(40), LEASE).await.unwrap().depth, 0);
    // A task polled to completion never had one again.
    let progressed = db
        .update_task(
            &started.task_id,
            &Fence::Unfenced,
            at(7_000),
            TaskChange {
                event: Some(TaskEvent::Progressed(Progress::clamped(50))),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(progressed.queue_rank, None);
    // Another user's backlog: a retry rejoins the queue as a new task of its
    // user, at the head.
    for i in 0..3 {
        create(&db, new_task("w", None, at(100 + i))).await;
    }
    let retried = db.retry_task(&second.task_id, at(200)).await.unwrap();
    assert_eq!(retried.status, TaskStatus::Submitted);
    assert_eq!(retried.queue_rank, Some(0));
    assert_eq!(db.queue_position(&retried).await.unwrap(), Some(1));
    assert_eq!(db.queue_stats(at(300), LEASE).await.unwrap().depth, 4);
}

pub async fn positions_follow_the_fair_order(db: Database) {
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(create(&db, new_task("big", None, at(i))).await);
    }
    all.push(create(&db, new_task("small", None, at(10))).await);
    all.push(create(&db, new_task("small", None, at(11))).await);
    // Fair order: big0, small0, big1, small1, big2, big3, big4.
    let order = [0, 5, 1, 6, 2, 3, 4];
    for (position, index) in order.into_iter().enumerate() {
        assert_eq!(
            db.queue_position(&all[index]).await.unwrap(),
            Some(position as u64),
            "task {index}"
        );
    }
    let batch = db.claim_due_tasks("w", at(100), LEASE, 7).await.unwrap();
    assert_eq!(
        batch.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        order.iter().map(|&i| all[i].task_id).collect::<Vec<_>>(),
        "the claim takes them in the order the positions promise"
    );
}

pub async fn imported_tasks_join_the_queue_only_when_resumed(db: Database) {
    let waiting = create(&db, new_task("legacy-user", None, at(0))).await;
    let imported = |id: &str, resume: bool| ImportedTask {
        task_id: id.parse().unwrap(),
        request_id: None,
        user_id: "legacy-user".to_owned(),
        task_type: TaskType::Default,
        base_model_task_id: None,
        angle: None,
        external_task_id: None,
        status: TaskStatus::Submitted,
        progress: Progress::clamped(0),
        error_code: None,
        error_message: None,
        created_at: t0(),
        updated_at: t0(),
        completed_at: None,
        resume_at: resume.then(|| at(1_000)),
        source: format!("legacy:base_model_task:{id}"),
        images: vec![],
    };
    let parked = imported("task_parked01", false);
    db.upsert_imported_task(&parked, at(1_000)).await.unwrap();
    let stored = db.get_task(&parked.task_id).await.unwrap();
    assert_eq!(stored.next_run_at, parked_until());
    assert_eq!(stored.queue_rank, None, "parked: not waiting");
    assert_eq!(db.queue_position(&stored).await.unwrap(), None);
    // Resumed: queued after the user's own waiting task.
    let resumed = imported("task_parked01", true);
    db.upsert_imported_task(&resumed, at(1_000)).await.unwrap();
    let stored = db.get_task(&parked.task_id).await.unwrap();
    assert_eq!(stored.queue_rank, Some(waiting.queue_rank.unwrap() + 1));
    assert_eq!(db.queue_position(&stored).await.unwrap(), Some(1));
    let batch = db.claim_due_tasks("w", at(2_000), LEASE, 10).await.unwrap();
    assert_eq!(
        batch.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![waiting.task_id, parked.task_id]
    );
}

pub async fn a_queued_task_without_a_rank_is_still_claimed(db: Database) {
    // A row written by a replica older than the rank (during a rolling
    // upgrade) has none: it falls in the poll lane and is claimed, without an
    // upstream id, so the engine submits it.
    let ranked = create(&db, new_task("u", None, at(0))).await;
    let unranked = create(&db, new_task("u", None, at(1))).await;
    db.clear_queue_rank(&unranked.task_id).await.unwrap();
    let unranked = db.get_task(&unranked.task_id).await.unwrap();
    assert_eq!(unranked.queue_rank, None);
    let batch = db.claim_due_tasks("w", at(10), LEASE, 10).await.unwrap();
    assert_eq!(
        batch.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![unranked.task_id, ranked.task_id]
    );
    assert_eq!(batch[0].external_task_id, None);
}

pub async fn concurrent_claimers_drain_both_lanes_without_loss(db: Database) {
    let mut ids = HashSet::new();
    for i in 0..60 {
        let user = format!("user-{}", i % 4);
        let task = create(&db, new_task(&user, None, at(i))).await;
        let task = if i % 3 == 0 {
            start_upstream(&db, &task, 100 + i).await
        } else {
            task
        };
        ids.insert(task.task_id);
    }
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                let owner = format!("worker-{w}");
                let mut mine = Vec::new();
                loop {
                    let batch = db
                        .claim_due_tasks(&owner, at(10_000), LEASE, 5)
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|t| t.task_id));
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    for handle in handles {
        seen.extend(handle.await.unwrap());
    }
    let unique: HashSet<TaskId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a task was claimed twice");
    assert_eq!(unique, ids, "every task claimed");
}

/// Which index each query must use.
fn expected_index(query: &str) -> &'static str {
    if query.contains("user's last rank") {
        "idx_task_user_rank"
    } else {
        "idx_task_queue"
    }
}

pub async fn queue_queries_are_served_by_the_new_indexes(db: Database) {
    // A queue large enough for the planners to prefer an index anyway: one
    // big user, a few small ones, and some tasks running upstream.
    let mut tasks = Vec::new();
    for i in 0..2_000 {
        let user = if i % 10 == 0 {
            format!("small-{}", i % 7)
        } else {
            "big".to_owned()
        };
        tasks.push(new_task(&user, None, at(i)));
    }
    db.bulk_queue_tasks(&tasks).await.unwrap();
    for i in 0..20 {
        let task = create(&db, new_task("r", None, at(5_000 + i))).await;
        start_upstream(&db, &task, 6_000 + i).await;
    }
    db.analyze_tasks().await.unwrap();
    let plans = db
        .explain_queue_queries(at(10_000), 32, true)
        .await
        .unwrap();
    assert_eq!(plans.len(), 7);
    let backend = db.backend();
    for plan in plans {
        let (name, text) = (plan.name.as_str(), plan.plan.as_str());
        let index = expected_index(name);
        assert!(
            text.contains(index),
            "{backend} {name}: not {index}:\n{text}"
        );
        match backend {
            Backend::Sqlite => {
                assert!(
                    !text.contains("SCAN ai_generation_task"),
                    "{name}: a scan:\n{text}"
                );
                assert!(!text.contains("TEMP B-TREE"), "{name}: a sort:\n{text}");
            }
            Backend::Postgres => {
                assert!(!text.contains("Seq Scan"), "{name}: a scan:\n{text}");
                assert!(!text.contains("Sort"), "{name}: a sort:\n{text}");
            }
            Backend::Mysql => {
                assert!(
                    text.contains(&format!("\"key\": \"{index}\"")),
                    "{name}: key is not {index}:\n{text}"
                );
                assert!(
                    !text.contains("\"access_type\": \"ALL\""),
                    "{name}: a scan:\n{text}"
                );
                let without_negative = text.replace("\"using_filesort\": false", "");
                assert!(
                    !without_negative.contains("filesort"),
                    "{name}: a filesort:\n{text}"
                );
            }
        }
    }
}
