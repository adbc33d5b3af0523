//! Claims and leases: disjoint concurrent claims, due time and limit, expiry,
//! fencing of a stale owner, renew and release.

use std::collections::HashSet;
use std::time::Duration;

use modelgen_domain::{Progress, TaskEvent, TaskId};
use modelgen_persistence::{Database, Fence, RepoError, TaskChange, TaskRepository};

use crate::support::{at, create, new_task, t0};

const LEASE: Duration = Duration::from_secs(30);

pub async fn concurrent_claimers_get_disjoint_tasks(db: Database) {
    // Several rounds with different shapes: tasks, claimers, batch size.
    for (round, (tasks, claimers, batch)) in [(40usize, 4usize, 3i64), (25, 6, 1), (30, 3, 7)]
        .into_iter()
        .enumerate()
    {
        let mut ids = HashSet::new();
        for i in 0..tasks {
            let task = create(&db, new_task(&format!("user-{round}"), None, at(i as i64))).await;
            ids.insert(task.task_id);
        }
        let now = at(100_000 * (round as i64 + 1));
        let handles: Vec<_> = (0..claimers)
            .map(|w| {
                let db = db.clone();
                tokio::spawn(async move {
                    let owner = format!("worker-{round}-{w}");
                    let mut mine = Vec::new();
                    loop {
                        let batch = db.claim_due_tasks(&owner, now, LEASE, batch).await.unwrap();
                        if batch.is_empty() {
                            return mine;
                        }
                        for task in batch {
                            assert_eq!(task.lease_owner.as_deref(), Some(owner.as_str()));
                            mine.push(task.task_id);
                        }
                    }
                })
            })
            .collect();
        let mut seen: Vec<TaskId> = Vec::new();
        for handle in handles {
            seen.extend(handle.await.unwrap());
        }
        let unique: HashSet<TaskId> = seen.iter().copied().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "round {round}: a task was claimed twice"
        );
        // Earlier rounds' tasks are leased until their lease ends, which is
        // before this round's `now`: they may be claimed again here; this
        // round's own tasks must all be claimed exactly once.
        assert!(
            ids.is_subset(&unique),
            "round {round}: some tasks were never claimed"
        );
    }
}

pub async fn claims_respect_due_time_limit_order_and_leave_updated_at(db: Database) {
    let mut due = Vec::new();
    for i in 0..3 {
        due.push(create(&db, new_task("u", None, at(i * 10))).await);
    }
    let later = create(&db, new_task("u", None, at(50))).await;
    db.update_task(
        &later.task_id,
        &Fence::Unfenced,
        at(51),
        TaskChange {
            next_run_at: Some(at(10_000)),
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    let terminal = create(&db, new_task("u", None, t0())).await;
    db.update_task(
        &terminal.task_id,
        &Fence::Unfenced,
        at(1),
        TaskChange {
            event: Some(TaskEvent::Cancelled),
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();

    let first = db.claim_due_tasks("w1", at(1_000), LEASE, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![due[0].task_id, due[1].task_id],
        "oldest due first, at most `limit`"
    );
    for (claimed, original) in first.iter().zip(&due) {
        assert_eq!(claimed.lease_expires_at, Some(at(1_000) + LEASE));
        assert_eq!(
            claimed.updated_at, original.updated_at,
            "a claim is not a business update"
        );
    }
    let rest = db
        .claim_due_tasks("w2", at(1_000), LEASE, 10)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![due[2].task_id]
    );
    assert!(
        db.claim_due_tasks("w3", at(1_000), LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        db.claim_due_tasks("w3", at(1_000), LEASE, 0)
            .await
            .unwrap()
            .is_empty()
    );
    // Once due, the postponed task is claimable; the terminal one never is.
    let postponed = db
        .claim_due_tasks("w3", at(10_000), LEASE, 10)
        .await
        .unwrap();
    assert_eq!(
        postponed.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![later.task_id]
    );
    assert!(!postponed.iter().any(|t| t.task_id == terminal.task_id));
}

pub async fn expired_lease_is_reclaimed_and_the_stale_owner_is_fenced_out(db: Database) {
    let task = create(&db, new_task("u", None, t0())).await;
    let claimed = db.claim_due_tasks("a", at(0), LEASE, 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // Held: nobody else gets it, and the owner can write.
    assert!(
        db.claim_due_tasks("b", at(10_000), LEASE, 1)
            .await
            .unwrap()
            .is_empty()
    );
    let progressed = db
        .update_task(
            &task.task_id,
            &Fence::Lease("a".into()),
            at(10_000),
            TaskChange {
                event: Some(TaskEvent::Progressed(Progress::clamped(20))),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    // Expired: another owner takes it over.
    let reclaimed = db.claim_due_tasks("b", at(30_000), LEASE, 1).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].lease_owner.as_deref(), Some("b"));
    let before = db.get_task(&task.task_id).await.unwrap();
    assert_eq!(before.progress, progressed.progress);

    let stale = db
        .update_task(
            &task.task_id,
            &Fence::Lease("a".into()),
            at(31_000),
            TaskChange {
                event: Some(TaskEvent::Failed),
                error: Some((1500, "stale".into())),
                enqueue_callback: true,
                release_lease: true,
                ..TaskChange::default()
            },
        )
        .await;
    assert!(matches!(stale, Err(RepoError::LeaseLost)));
    assert_eq!(
        db.get_task(&task.task_id).await.unwrap(),
        before,
        "nothing written"
    );

    // The new owner's lease also fences it once expired.
    let expired = db
        .update_task(
            &task.task_id,
            &Fence::Lease("b".into()),
            at(60_000),
            TaskChange {
                count_poll: true,
                ..TaskChange::default()
            },
        )
        .await;
    assert!(matches!(expired, Err(RepoError::LeaseLost)));
    let ok = db
        .update_task(
            &task.task_id,
            &Fence::Lease("b".into()),
            at(59_999),
            TaskChange {
                count_poll: true,
                release_lease: true,
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ok.poll_count, 1);
    assert_eq!((ok.lease_owner, ok.lease_expires_at), (None, None));
}

pub async fn leases_renew_and_release(db: Database) {
    let task = create(&db, new_task("u", None, t0())).await;
    let other = create(&db, new_task("u", None, t0())).await;
    assert_eq!(
        db.claim_due_tasks("a", at(0), LEASE, 10)
            .await
            .unwrap()
            .len(),
        2
    );

    db.renew_task_lease(&task.task_id, "a", at(20_000), LEASE)
        .await
        .unwrap();
    assert_eq!(
        db.get_task(&task.task_id).await.unwrap().lease_expires_at,
        Some(at(50_000))
    );
    assert!(matches!(
        db.renew_task_lease(&task.task_id, "b", at(20_000), LEASE)
            .await,
        Err(RepoError::LeaseLost)
    ));
    assert!(
        matches!(
            db.renew_task_lease(&other.task_id, "a", at(30_000), LEASE)
                .await,
            Err(RepoError::LeaseLost)
        ),
        "expired"
    );
    assert!(matches!(
        db.renew_task_lease(&TaskId::generate(), "a", at(0), LEASE)
            .await,
        Err(RepoError::NotFound)
    ));

    // Releasing by a non-owner is a no-op; by the owner it frees the task at once.
    db.release_task_lease(&task.task_id, "b").await.unwrap();
    assert_eq!(
        db.get_task(&task.task_id)
            .await
            .unwrap()
            .lease_owner
            .as_deref(),
        Some("a")
    );
    db.release_task_lease(&task.task_id, "a").await.unwrap();
    let freed = db.get_task(&task.task_id).await.unwrap();
    assert_eq!((freed.lease_owner, freed.lease_expires_at), (None, None));
    assert_eq!(
        db.claim_due_tasks("b", at(21_000), LEASE, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    assert_eq!(
        db.release_all_task_leases("a").await.unwrap(),
        1,
        "only `other` is still a's"
    );
    assert_eq!(db.release_all_task_leases("b").await.unwrap(), 1);
    assert_eq!(db.release_all_task_leases("b").await.unwrap(), 0);
}

pub async fn tasks_running_upstream_are_claimed_before_new_submits(db: Database) {
    let new = create(&db, new_task("prio", None, t0())).await;
    let started = create(&db, new_task("prio", None, at(100))).await;
    db.update_task(
        &started.task_id,
        &Fence::Unfenced,
        at(200),
        TaskChange {
            external_task_id: Some("up-1".to_owned()),
            next_run_at: Some(at(300)),
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    // Both are due; the new one has waited longer, the started one goes first.
    let first = db
        .claim_due_tasks("w", at(1_000), Duration::from_secs(30), 1)
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![started.task_id]
    );
    let second = db
        .claim_due_tasks("w", at(1_000), Duration::from_secs(30), 1)
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![new.task_id]
    );
}
