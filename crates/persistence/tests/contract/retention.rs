//! `DataRetention`: the input retention claims and marks, and the erasure of
//! a task's personal data; plus `retry_task` refusing a task whose inputs
//! are gone.

use std::collections::HashSet;
use std::time::Duration;

use modelgen_domain::{Progress, TaskEvent, TaskId, TaskStatus};
use modelgen_persistence::{
    DataRetention, Database, Fence, ImageLocation, ImageRepository, NewImage, RepoError,
    TaskChange, TaskRecord, TaskRepository,
};

use crate::support::{at, create, new_task, t0};

const LEASE: Duration = Duration::from_secs(60);

/// Moves `task` to `status` at `at(ms)` (through `processing` for `completed`).
async fn end(db: &Database, task: &TaskRecord, status: TaskStatus, ms: i64) -> TaskRecord {
    let event = match status {
        TaskStatus::Completed => {
            db.update_task(
                &task.task_id,
                &Fence::Unfenced,
                at(ms - 1),
                TaskChange {
                    event: Some(TaskEvent::Progressed(Progress::clamped(50))),
                    ..TaskChange::default()
                },
            )
            .await
            .unwrap();
            TaskEvent::Completed
        }
        TaskStatus::Failed => TaskEvent::Failed,
        TaskStatus::Cancelled => TaskEvent::Cancelled,
        other => panic!("not terminal: {other}"),
    };
    db.update_task(
        &task.task_id,
        &Fence::Unfenced,
        at(ms),
        TaskChange {
            event: Some(event),
            error: (status == TaskStatus::Failed).then(|| (1002, "apimart: boom".to_owned())),
            ..TaskChange::default()
        },
    )
    .await
    .unwrap()
}

fn ids(tasks: &[TaskRecord]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.task_id).collect()
}

pub async fn input_purge_claims_take_ended_unprocessed_tasks_oldest_first(db: Database) {
    let a = create(&db, new_task("ret", None, t0())).await;
    let b = create(&db, new_task("ret", None, t0())).await;
    let c = create(&db, new_task("ret", None, t0())).await;
    let running = create(&db, new_task("ret", None, t0())).await;
    let recent = create(&db, new_task("ret", None, t0())).await;
    end(&db, &b, TaskStatus::Failed, 2_000).await;
    end(&db, &a, TaskStatus::Completed, 1_000).await;
    end(&db, &c, TaskStatus::Cancelled, 3_000).await;
    end(&db, &recent, TaskStatus::Completed, 50_000).await;
    db.update_task(
        &running.task_id,
        &Fence::Unfenced,
        at(4_000),
        TaskChange {
            event: Some(TaskEvent::Progressed(Progress::clamped(10))),
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();

    let now = at(60_000);
    assert!(
        db.claim_input_purges("p1", now, at(10_000), LEASE, 0)
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = db
        .claim_input_purges("p1", now, at(10_000), LEASE, 10)
        .await
        .unwrap();
    assert_eq!(ids(&claimed), vec![a.task_id, b.task_id, c.task_id]);
    for t in &claimed {
        assert_eq!(t.lease_owner.as_deref(), Some("p1"));
        assert_eq!(t.inputs_purged_at, None);
    }
    // Claimed: nobody else gets them while the claim runs.
    assert!(
        db.claim_input_purges("p2", now, at(10_000), LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A claim is not a business change.
    assert_eq!(
        db.get_task(&a.task_id).await.unwrap().updated_at,
        claimed[0].updated_at
    );
    // Left by a crashed cleanup, the claim expires and is taken over.
    let later = now + chrono::TimeDelta::seconds(61);
    let taken = db
        .claim_input_purges("p2", later, at(10_000), LEASE, 2)
        .await
        .unwrap();
    assert_eq!(ids(&taken), vec![a.task_id, b.task_id]);
    // The cutoff moves with time: `recent` becomes due, `running` never.
    let all = db
        .claim_input_purges("p3", later, at(100_000), LEASE, 10)
        .await
        .unwrap();
    assert_eq!(ids(&all), vec![c.task_id, recent.task_id]);
}

pub async fn concurrent_input_purge_claims_are_disjoint(db: Database) {
    let mut ended = Vec::new();
    for i in 0..24 {
        let t = create(&db, new_task("ret-many", None, t0())).await;
        ended.push(end(&db, &t, TaskStatus::Failed, 1_000 + i).await.task_id);
    }
    let mut claimers = Vec::new();
    for n in 0..4 {
        let db = db.clone();
        claimers.push(tokio::spawn(async move {
            db.claim_input_purges(&format!("p{n}"), at(60_000), at(10_000), LEASE, 8)
                .await
                .unwrap()
        }));
    }
    let mut seen = HashSet::new();
    for claimer in claimers {
        for task in claimer.await.unwrap() {
            assert!(seen.insert(task.task_id), "{} claimed twice", task.task_id);
        }
    }
    assert_eq!(seen.len(), ended.len(), "every ended task claimed once");
}

pub async fn marking_inputs_purged_is_fenced_by_the_claim(db: Database) {
    let t = create(&db, new_task("mark", None, t0())).await;
    end(&db, &t, TaskStatus::Completed, 1_000).await;
    let now = at(60_000);
    let claimed = db
        .claim_input_purges("p1", now, at(10_000), LEASE, 1)
        .await
        .unwrap();
    assert_eq!(ids(&claimed), vec![t.task_id]);
    assert!(matches!(
        db.mark_inputs_purged(&t.task_id, "p2", now).await,
        Err(RepoError::LeaseLost)
    ));
    assert!(matches!(
        db.mark_inputs_purged(&TaskId::generate(), "p1", now).await,
        Err(RepoError::NotFound)
    ));
    let marked = db
        .mark_inputs_purged(&t.task_id, "p1", at(61_000))
        .await
        .unwrap();
    assert_eq!(marked.inputs_purged_at, Some(at(61_000)));
    assert_eq!((marked.lease_owner, marked.lease_expires_at), (None, None));
    assert_eq!(marked.status, TaskStatus::Completed);
    assert_eq!(marked.input_images, t.input_images, "references are kept");
    // Processed: never claimed again.
    assert!(
        db.claim_input_purges("p1", at(200_000), at(150_000), LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The claim is gone: marking again is refused, nothing written.
    assert!(matches!(
        db.mark_inputs_purged(&t.task_id, "p1", at(62_000)).await,
        Err(RepoError::LeaseLost)
    ));
    assert_eq!(
        db.get_task(&t.task_id).await.unwrap().inputs_purged_at,
        Some(at(61_000))
    );
}

pub async fn retry_is_refused_once_uploaded_inputs_are_deleted(db: Database) {
    // Uploaded inputs (`blob:inputs/…`): deleted by the cleanup.
    let uploaded = create(&db, new_task("retry-purged", None, t0())).await;
    end(&db, &uploaded, TaskStatus::Failed, 1_000).await;
    // Only a base model's result and a URL: nothing of its own to delete.
    let mut edit = new_task("retry-purged", None, t0());
    edit.input_images = vec![
        "blob:results/task_base/0.png".to_owned(),
        "https://example.test/a.png".to_owned(),
    ];
    let edit = create(&db, edit).await;
    end(&db, &edit, TaskStatus::Failed, 1_500).await;

    let now = at(60_000);
    let claimed = db
        .claim_input_purges("p1", now, at(10_000), LEASE, 10)
        .await
        .unwrap();
    assert_eq!(ids(&claimed), vec![uploaded.task_id, edit.task_id]);
    // While the cleanup holds it, a retry waits its turn.
    assert!(matches!(
        db.retry_task(&uploaded.task_id, now).await,
        Err(RepoError::Conflict(_))
    ));
    for t in &claimed {
        db.mark_inputs_purged(&t.task_id, "p1", now).await.unwrap();
    }
    let before = db.get_task(&uploaded.task_id).await.unwrap();
    match db.retry_task(&uploaded.task_id, at(70_000)).await {
        Err(RepoError::InputsPurged { purged_at }) => assert_eq!(purged_at, now),
        other => panic!("expected InputsPurged, got {other:?}"),
    }
    assert_eq!(db.get_task(&uploaded.task_id).await.unwrap(), before);
    let retried = db.retry_task(&edit.task_id, at(70_000)).await.unwrap();
    assert_eq!(retried.status, TaskStatus::Submitted);
}

fn image(task_id: TaskId, n: usize) -> NewImage {
    NewImage {
        task_id,
        angle: None,
        location: ImageLocation::Stored(format!("results/{task_id}/{n}.png")),
        image_base64: Some("aGVsbG8=".to_owned()),
        mime: Some("image/png".to_owned()),
        width: Some(768),
        height: Some(1024),
        bytes: Some(5),
        created_at: at(5_000),
    }
}

pub async fn erasure_blanks_personal_data_keeps_accounting_and_is_idempotent(db: Database) {
    let t = create(&db, new_task("erase", Some("req-1"), t0())).await;
    let other = create(&db, new_task("erase-other", None, t0())).await;
    end(&db, &other, TaskStatus::Completed, 900).await;
    db.update_task(
        &t.task_id,
        &Fence::Unfenced,
        at(1_000),
        TaskChange {
            event: Some(TaskEvent::Progressed(Progress::clamped(50))),
            external_task_id: Some("up-9".to_owned()),
            count_submit_attempt: true,
            count_poll: true,
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    // Not terminal yet: refused, nothing written.
    assert!(matches!(
        db.erase_task_data(&t.task_id, at(1_500)).await,
        Err(RepoError::Conflict(_))
    ));
    let done = db
        .update_task(
            &t.task_id,
            &Fence::Unfenced,
            at(2_000),
            TaskChange {
                event: Some(TaskEvent::Completed),
                images: vec![image(t.task_id, 0), image(t.task_id, 1)],
                enqueue_callback: true,
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    db.update_task(
        &other.task_id,
        &Fence::Unfenced,
        at(2_100),
        TaskChange {
            images: vec![image(other.task_id, 0)],
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();

    let erased = db.erase_task_data(&t.task_id, at(9_000)).await.unwrap();
    assert_eq!(erased.image_rows, 2);
    let e = &erased.task;
    assert_eq!(e.prompt, "");
    assert!(e.input_images.is_empty());
    assert_eq!(e.request_fingerprint, None);
    assert_eq!(e.error_message, None);
    assert_eq!(e.purged_at, Some(at(9_000)));
    assert_eq!(e.inputs_purged_at, Some(at(9_000)));
    // What accounting needs stays.
    assert_eq!(
        (&e.task_id, &e.request_id, &e.user_id, e.task_type, e.status),
        (
            &done.task_id,
            &done.request_id,
            &done.user_id,
            done.task_type,
            done.status
        )
    );
    assert_eq!(
        (e.created_at, e.updated_at, e.completed_at),
        (done.created_at, done.updated_at, done.completed_at)
    );
    assert_eq!(
        (
            &e.external_task_id,
            e.submit_attempts,
            e.poll_count,
            &e.model,
            &e.size
        ),
        (
            &done.external_task_id,
            done.submit_attempts,
            done.poll_count,
            &done.model,
            &done.size
        )
    );
    assert_eq!(db.get_task(&t.task_id).await.unwrap(), erased.task);
    assert!(db.images_for_task(&t.task_id).await.unwrap().is_empty());
    assert_eq!(
        db.images_for_task(&other.task_id).await.unwrap().len(),
        1,
        "another task's images are untouched"
    );

    // Again: nothing more to delete, nothing changes.
    let again = db.erase_task_data(&t.task_id, at(20_000)).await.unwrap();
    assert_eq!(again.image_rows, 0);
    assert_eq!(again.task, erased.task);
    assert!(matches!(
        db.erase_task_data(&TaskId::generate(), at(20_000)).await,
        Err(RepoError::NotFound)
    ));

    // An erased failed task cannot be retried.
    let failed = create(&db, new_task("erase", None, t0())).await;
    end(&db, &failed, TaskStatus::Failed, 3_000).await;
    db.erase_task_data(&failed.task_id, at(9_500))
        .await
        .unwrap();
    assert!(matches!(
        db.retry_task(&failed.task_id, at(10_000)).await,
        Err(RepoError::InputsPurged { .. })
    ));
}
