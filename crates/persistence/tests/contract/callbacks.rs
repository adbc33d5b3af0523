//! The callback outbox: claim, attempts fenced by the lease, retry, dead,
//! redelivery.

use std::collections::HashSet;
use std::time::Duration;

use modelgen_domain::TaskEvent;
use modelgen_persistence::{
    AttemptOutcome, CallbackOutbox, CallbackRecord, CallbackStatus, Database, Fence, RepoError,
    TaskChange, TaskRepository,
};

use crate::support::{at, create, new_task, t0};

const LEASE: Duration = Duration::from_secs(30);

/// A cancelled task with its pending outbox row, due at `at(1)`.
async fn pending_callback(db: &Database) -> CallbackRecord {
    let task = create(db, new_task("u", None, t0())).await;
    db.update_task(
        &task.task_id,
        &Fence::Unfenced,
        at(1),
        TaskChange {
            event: Some(TaskEvent::Cancelled),
            enqueue_callback: true,
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    let rows = db.callbacks_for_task(&task.task_id).await.unwrap();
    assert_eq!(rows.len(), 1);
    rows.into_iter().next().unwrap()
}

pub async fn callback_lifecycle_claim_retry_dead_redeliver_deliver(db: Database) {
    let row = pending_callback(&db).await;
    assert!(
        db.claim_due_callbacks("w1", at(0), LEASE, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let claimed = db
        .claim_due_callbacks("w1", at(1_000), LEASE, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease_owner.as_deref(), Some("w1"));
    assert_eq!(claimed[0].lease_expires_at, Some(at(1_000) + LEASE));
    assert!(
        db.claim_due_callbacks("w2", at(2_000), LEASE, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );

    // Only the lease holder records an attempt.
    let wrong = db
        .record_callback_attempt(&row.event_id, "w2", at(2_000), AttemptOutcome::Delivered)
        .await;
    assert!(matches!(wrong, Err(RepoError::LeaseLost)));
    let retry = db
        .record_callback_attempt(
            &row.event_id,
            "w1",
            at(2_000),
            AttemptOutcome::Retry {
                next_attempt_at: at(10_000),
                error: "HTTP 503".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(retry.status, CallbackStatus::Pending);
    assert_eq!(retry.attempts, 1);
    assert_eq!(retry.next_attempt_at, at(10_000));
    assert_eq!(retry.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(
        (retry.lease_owner.as_deref(), retry.lease_expires_at),
        (None, None)
    );
    assert_eq!(retry.event_id, row.event_id, "stable event id");
    // The released lease cannot record twice.
    assert!(matches!(
        db.record_callback_attempt(&row.event_id, "w1", at(2_001), AttemptOutcome::Delivered)
            .await,
        Err(RepoError::LeaseLost)
    ));

    assert!(
        db.claim_due_callbacks("w2", at(9_999), LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        db.claim_due_callbacks("w2", at(10_000), LEASE, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // An expired lease fences its holder out too.
    assert!(matches!(
        db.record_callback_attempt(&row.event_id, "w2", at(40_000), AttemptOutcome::Delivered)
            .await,
        Err(RepoError::LeaseLost)
    ));
    assert_eq!(
        db.claim_due_callbacks("w3", at(40_000), LEASE, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let dead = db
        .record_callback_attempt(
            &row.event_id,
            "w3",
            at(41_000),
            AttemptOutcome::Dead {
                error: "HTTP 500".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!((dead.status, dead.attempts), (CallbackStatus::Dead, 2));
    assert!(
        db.claim_due_callbacks("w3", at(99_000), LEASE, 10)
            .await
            .unwrap()
            .is_empty(),
        "dead rows are not claimed"
    );
    let dead_list = db
        .list_callbacks(Some(CallbackStatus::Dead), 10)
        .await
        .unwrap();
    assert_eq!(dead_list, vec![dead.clone()]);
    assert!(
        db.list_callbacks(Some(CallbackStatus::Pending), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let again = db.redeliver(&row.event_id, at(50_000)).await.unwrap();
    assert_eq!(
        (again.status, again.attempts, again.next_attempt_at),
        (CallbackStatus::Pending, 0, at(50_000))
    );
    assert_eq!(again.event_id, row.event_id);
    assert_eq!(
        db.claim_due_callbacks("w4", at(50_000), LEASE, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let delivered = db
        .record_callback_attempt(&row.event_id, "w4", at(51_000), AttemptOutcome::Delivered)
        .await
        .unwrap();
    assert_eq!(delivered.status, CallbackStatus::Delivered);
    assert_eq!(delivered.delivered_at, Some(at(51_000)));
    assert_eq!(delivered.attempts, 1);
    assert_eq!(db.get_callback(&row.event_id).await.unwrap(), delivered);
    assert_eq!(db.list_callbacks(None, 10).await.unwrap(), vec![delivered]);
}

pub async fn concurrent_callback_claimers_get_disjoint_rows(db: Database) {
    let mut ids = HashSet::new();
    for _ in 0..20 {
        ids.insert(pending_callback(&db).await.event_id);
    }
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                let owner = format!("w{w}");
                let mut mine = Vec::new();
                loop {
                    let batch = db
                        .claim_due_callbacks(&owner, at(5_000), LEASE, 3)
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|r| r.event_id));
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    for handle in handles {
        seen.extend(handle.await.unwrap());
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a row was claimed twice");
    assert_eq!(unique, ids);
}

pub async fn redeliver_all_dead_and_not_found(db: Database) {
    for i in 0..3 {
        let row = pending_callback(&db).await;
        db.claim_due_callbacks("w", at(1_000), LEASE, 1)
            .await
            .unwrap();
        let outcome = if i < 2 {
            AttemptOutcome::Dead {
                error: "gone".into(),
            }
        } else {
            AttemptOutcome::Delivered
        };
        db.record_callback_attempt(&row.event_id, "w", at(2_000), outcome)
            .await
            .unwrap();
    }
    assert_eq!(db.redeliver_all_dead(at(3_000)).await.unwrap(), 2);
    assert_eq!(db.redeliver_all_dead(at(3_000)).await.unwrap(), 0);
    let pending = db
        .list_callbacks(Some(CallbackStatus::Pending), 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
    assert!(
        pending
            .iter()
            .all(|r| r.attempts == 0 && r.next_attempt_at == at(3_000))
    );
    assert_eq!(
        db.list_callbacks(None, 2).await.unwrap().len(),
        2,
        "limit applies"
    );
    assert!(matches!(
        db.get_callback("evt_missing").await,
        Err(RepoError::NotFound)
    ));
    assert!(matches!(
        db.redeliver("evt_missing", at(0)).await,
        Err(RepoError::NotFound)
    ));
    assert!(matches!(
        db.record_callback_attempt("evt_missing", "w", at(0), AttemptOutcome::Delivered)
            .await,
        Err(RepoError::NotFound)
    ));
}
