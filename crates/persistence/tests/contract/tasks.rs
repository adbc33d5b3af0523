//! Task rows: insert, idempotency, listing, the state machine through
//! `update_task`, images and the outbox row, timestamps, migrations.

use modelgen_domain::{Angle, Progress, TaskEvent, TaskId, TaskStatus, TaskType, TransitionError};
use modelgen_persistence::{
    CallbackOutbox, CallbackStatus, Database, Fence, ImageLocation, ImageRepository, InsertOutcome,
    NewImage, RepoError, TaskChange, TaskQuery, TaskRepository,
};

use crate::support::{at, create, new_task, t0};

fn progressed(p: i64) -> TaskChange {
    TaskChange {
        event: Some(TaskEvent::Progressed(Progress::clamped(p))),
        ..TaskChange::default()
    }
}

/// Image `n` of a task: even ones stored in our blob store (the first with an
/// inline copy), odd ones remote (as imported images are), with unknown facts.
fn image(task_id: TaskId, n: usize) -> NewImage {
    if n % 2 == 0 {
        NewImage {
            task_id,
            angle: Some(Angle::Front),
            location: ImageLocation::Stored(format!("results/{task_id}/{n}.png")),
            image_base64: (n == 0).then(|| "aGVsbG8=".to_owned()),
            mime: Some("image/png".to_owned()),
            width: Some(768),
            height: Some(1024),
            bytes: Some(123_456),
            created_at: at(5_000),
        }
    } else {
        NewImage {
            task_id,
            angle: None,
            location: ImageLocation::Remote(format!(
                "https://suitme.oss-cn-shenzhen.aliyuncs.com/images/2025/01/02/{task_id}_{n}.png"
            )),
            image_base64: None,
            mime: None,
            width: None,
            height: None,
            bytes: None,
            created_at: at(5_000),
        }
    }
}

/// The facts an image row reads back with: location, angle, mime, width,
/// height, bytes (no inline copy).
type ImageFacts = (
    ImageLocation,
    Option<Angle>,
    Option<String>,
    Option<i32>,
    Option<i32>,
    Option<i64>,
);

/// What reading `image(task_id, n)` back must give.
fn record_fields(image: &NewImage) -> ImageFacts {
    (
        image.location.clone(),
        image.angle,
        image.mime.clone(),
        image.width,
        image.height,
        image.bytes,
    )
}

pub async fn insert_get_and_list_with_filters_and_cursor(db: Database) {
    let mut a = new_task("alice", Some("r1"), t0());
    a.task_type = TaskType::Outfit;
    a.angle = Some(Angle::Side);
    let base = create(&db, new_task("alice", None, t0())).await;
    a.base_model_task_id = Some(base.task_id);
    let outfit = create(&db, a.clone()).await;

    // Every field round-trips; a new task is submitted, 0 %, due at creation.
    assert_eq!(outfit.task_id, a.task_id);
    assert_eq!(outfit.request_id.as_deref(), Some("r1"));
    assert_eq!(outfit.task_type, TaskType::Outfit);
    assert_eq!(outfit.angle, Some(Angle::Side));
    assert_eq!(outfit.base_model_task_id, Some(base.task_id));
    assert_eq!(outfit.input_images, a.input_images);
    assert_eq!(outfit.request_fingerprint.as_deref(), Some("fp"));
    assert_eq!(outfit.status, TaskStatus::Submitted);
    assert_eq!(outfit.progress, Progress::ZERO);
    assert_eq!(
        (outfit.next_run_at, outfit.created_at, outfit.updated_at),
        (t0(), t0(), t0())
    );
    assert_eq!((outfit.submit_attempts, outfit.poll_count), (0, 0));
    assert!(outfit.completed_at.is_none() && outfit.lease_owner.is_none());
    assert_eq!(db.get_task(&outfit.task_id).await.unwrap(), outfit);
    assert!(matches!(
        db.get_task(&TaskId::generate()).await,
        Err(RepoError::NotFound)
    ));

    for i in 0..5 {
        create(&db, new_task("bob", Some(&format!("b{i}")), at(i))).await;
    }
    let cancelled = create(&db, new_task("bob", None, t0())).await;
    db.update_task(
        &cancelled.task_id,
        &Fence::Unfenced,
        at(1),
        TaskChange {
            event: Some(TaskEvent::Cancelled),
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();

    let all_bob = db
        .list_tasks(&TaskQuery {
            user_id: Some("bob".into()),
            limit: 100,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all_bob.len(), 6);
    assert!(all_bob.iter().all(|t| t.user_id == "bob"));
    let ids: Vec<TaskId> = all_bob.iter().map(|t| t.task_id).collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(ids, sorted, "newest (highest id) first");

    let only_cancelled = db
        .list_tasks(&TaskQuery {
            user_id: Some("bob".into()),
            status: Some(TaskStatus::Cancelled),
            limit: 100,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        only_cancelled.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![cancelled.task_id]
    );

    let outfits = db
        .list_tasks(&TaskQuery {
            task_type: Some(TaskType::Outfit),
            limit: 100,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        outfits.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![outfit.task_id]
    );

    // Keyset pages of 4 walk every row once, in order.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = db
            .list_tasks(&TaskQuery {
                user_id: Some("bob".into()),
                before,
                limit: 4,
                ..TaskQuery::default()
            })
            .await
            .unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        before = Some(last.task_id);
        paged.extend(page.iter().map(|t| t.task_id));
    }
    assert_eq!(paged, ids);
    assert!(
        db.list_tasks(&TaskQuery {
            limit: 0,
            ..TaskQuery::default()
        })
        .await
        .unwrap()
        .is_empty()
    );
}

pub async fn insert_is_idempotent_per_user_and_request_id(db: Database) {
    let first = create(&db, new_task("alice", Some("req-1"), t0())).await;
    let again = db
        .insert_task(new_task("alice", Some("req-1"), at(10)))
        .await
        .unwrap();
    assert_eq!(again, InsertOutcome::Existing(first.clone()));
    // The key is per user, and tasks without a key never collide.
    create(&db, new_task("bob", Some("req-1"), t0())).await;
    create(&db, new_task("alice", None, t0())).await;
    create(&db, new_task("alice", None, t0())).await;
    let alice = db
        .list_tasks(&TaskQuery {
            user_id: Some("alice".into()),
            limit: 10,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(alice.len(), 3);
}

pub async fn concurrent_inserts_of_one_request_id_make_one_row(db: Database) {
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(
                async move { db.insert_task(new_task("carol", Some("same"), at(i))).await },
            )
        })
        .collect();
    let mut created = Vec::new();
    let mut existing = Vec::new();
    for handle in handles {
        match handle.await.unwrap().unwrap() {
            InsertOutcome::Created(r) => created.push(r),
            InsertOutcome::Existing(r) => existing.push(r),
        }
    }
    assert_eq!(created.len(), 1, "exactly one insert wins");
    assert_eq!(existing.len(), 7);
    assert!(existing.iter().all(|r| r.task_id == created[0].task_id));
    let rows = db
        .list_tasks(&TaskQuery {
            user_id: Some("carol".into()),
            limit: 100,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

pub async fn reused_task_id_is_a_conflict(db: Database) {
    let task = new_task("alice", None, t0());
    create(&db, task.clone()).await;
    assert!(matches!(
        db.insert_task(task).await,
        Err(RepoError::Conflict(_))
    ));
}

pub async fn state_machine_is_enforced_and_nothing_is_written_on_refusal(db: Database) {
    let task = create(&db, new_task("alice", None, t0())).await;
    let refused = db
        .update_task(
            &task.task_id,
            &Fence::Unfenced,
            at(1),
            TaskChange {
                event: Some(TaskEvent::Completed),
                external_task_id: Some("ext".into()),
                count_poll: true,
                images: vec![image(task.task_id, 0)],
                enqueue_callback: true,
                ..TaskChange::default()
            },
        )
        .await;
    assert!(matches!(
        refused,
        Err(RepoError::InvalidTransition(
            TransitionError::NotProcessing {
                from: TaskStatus::Submitted
            }
        ))
    ));
    assert_eq!(db.get_task(&task.task_id).await.unwrap(), task);
    assert!(db.images_for_task(&task.task_id).await.unwrap().is_empty());
    assert!(
        db.callbacks_for_task(&task.task_id)
            .await
            .unwrap()
            .is_empty()
    );

    let failed = db
        .update_task(
            &task.task_id,
            &Fence::Unfenced,
            at(2),
            TaskChange {
                event: Some(TaskEvent::Failed),
                error: Some((1002, "bad request".into())),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(
        (failed.error_code, failed.error_message.as_deref()),
        (Some(1002), Some("bad request"))
    );
    let again = db
        .update_task(&task.task_id, &Fence::Unfenced, at(3), progressed(50))
        .await;
    assert!(matches!(
        again,
        Err(RepoError::InvalidTransition(TransitionError::Terminal(
            TaskStatus::Failed
        )))
    ));
    assert_eq!(db.get_task(&task.task_id).await.unwrap(), failed);
    assert!(matches!(
        db.update_task(&TaskId::generate(), &Fence::Unfenced, at(3), progressed(1))
            .await,
        Err(RepoError::NotFound)
    ));
}

pub async fn completion_writes_images_and_one_outbox_row(db: Database) {
    let task = create(&db, new_task("alice", None, t0())).await;
    db.update_task(&task.task_id, &Fence::Unfenced, at(1), progressed(30))
        .await
        .unwrap();
    let done = db
        .update_task(
            &task.task_id,
            &Fence::Unfenced,
            at(2),
            TaskChange {
                event: Some(TaskEvent::Completed),
                images: vec![image(task.task_id, 0), image(task.task_id, 1)],
                enqueue_callback: true,
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.progress, Progress::DONE);
    assert_eq!(done.completed_at, Some(at(2)));

    let images = db.images_for_task(&task.task_id).await.unwrap();
    assert_eq!(images.len(), 2);
    // The batch form returns the same rows, and nothing for tasks without images.
    let other = create(&db, new_task("bob", None, t0())).await;
    assert_eq!(
        db.images_for_tasks(&[other.task_id, task.task_id])
            .await
            .unwrap(),
        images
    );
    assert!(
        db.images_for_tasks(&[other.task_id])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(db.images_for_tasks(&[]).await.unwrap().is_empty());
    assert!(images[0].id < images[1].id, "insert order");
    // The one-statement read gives the same task and the same images, a task
    // without images once with none, and an unknown id as not found.
    assert_eq!(
        db.get_task_with_images(&task.task_id).await.unwrap(),
        (done.clone(), images.clone())
    );
    assert_eq!(
        db.get_task_with_images(&other.task_id).await.unwrap(),
        (other.clone(), Vec::new())
    );
    assert!(matches!(
        db.get_task_with_images(&TaskId::generate()).await,
        Err(RepoError::NotFound)
    ));
    for (n, read) in images.iter().enumerate() {
        let written = image(task.task_id, n);
        assert_eq!(read.task_id, task.task_id);
        assert_eq!(read.created_at, written.created_at);
        assert_eq!(
            (
                read.location.clone(),
                read.angle,
                read.mime.clone(),
                read.width,
                read.height,
                read.bytes
            ),
            record_fields(&written)
        );
    }
    // Inline copies are read only on request, and only where one was stored.
    assert_eq!(
        db.inline_images_for_task(&task.task_id).await.unwrap(),
        vec![(images[0].id, "aGVsbG8=".to_owned())]
    );
    assert!(
        db.inline_images_for_task(&other.task_id)
            .await
            .unwrap()
            .is_empty()
    );

    let outbox = db.callbacks_for_task(&task.task_id).await.unwrap();
    assert_eq!(outbox.len(), 1);
    let row = &outbox[0];
    assert!(
        row.event_id.starts_with("evt_") && row.event_id.len() == 30,
        "{}",
        row.event_id
    );
    assert_eq!(row.event_type, "task.completed");
    assert_eq!(row.status, CallbackStatus::Pending);
    assert_eq!((row.attempts, row.next_attempt_at), (0, at(2)));
    assert_eq!(db.get_callback(&row.event_id).await.unwrap(), *row);

    // A second terminal event is refused and adds nothing; enqueueing again is a no-op.
    let second = db
        .update_task(
            &task.task_id,
            &Fence::Unfenced,
            at(3),
            TaskChange {
                event: Some(TaskEvent::Failed),
                enqueue_callback: true,
                ..TaskChange::default()
            },
        )
        .await;
    assert!(matches!(
        second,
        Err(RepoError::InvalidTransition(TransitionError::Terminal(
            TaskStatus::Completed
        )))
    ));
    let repeat = db
        .update_task(
            &task.task_id,
            &Fence::Unfenced,
            at(4),
            TaskChange {
                enqueue_callback: true,
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(repeat, done, "an empty change writes nothing");
    assert_eq!(db.callbacks_for_task(&task.task_id).await.unwrap(), outbox);
    assert_eq!(db.images_for_task(&task.task_id).await.unwrap().len(), 2);
    assert!(
        db.images_for_task(&TaskId::generate())
            .await
            .unwrap()
            .is_empty()
    );

    // Without enqueue_callback a terminal change writes no outbox row.
    let quiet = create(&db, new_task("alice", None, t0())).await;
    db.update_task(
        &quiet.task_id,
        &Fence::Unfenced,
        at(1),
        TaskChange {
            event: Some(TaskEvent::Failed),
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    assert!(
        db.callbacks_for_task(&quiet.task_id)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn unfenced_cancel_of_a_terminal_task_is_already_terminal(db: Database) {
    let task = create(&db, new_task("alice", None, t0())).await;
    db.update_task(&task.task_id, &Fence::Unfenced, at(1), progressed(10))
        .await
        .unwrap();
    let done = db
        .update_task(
            &task.task_id,
            &Fence::Unfenced,
            at(2),
            TaskChange {
                event: Some(TaskEvent::Completed),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    let cancel = TaskChange {
        event: Some(TaskEvent::Cancelled),
        enqueue_callback: true,
        ..TaskChange::default()
    };
    let refused = db
        .update_task(&task.task_id, &Fence::Unfenced, at(3), cancel.clone())
        .await;
    assert!(matches!(
        refused,
        Err(RepoError::AlreadyTerminal(TaskStatus::Completed))
    ));
    assert_eq!(db.get_task(&task.task_id).await.unwrap(), done);
    assert!(
        db.callbacks_for_task(&task.task_id)
            .await
            .unwrap()
            .is_empty()
    );

    // A running task cancels, with its callback.
    let running = create(&db, new_task("alice", None, t0())).await;
    let cancelled = db
        .update_task(&running.task_id, &Fence::Unfenced, at(3), cancel)
        .await
        .unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(cancelled.completed_at, Some(at(3)));
    let outbox = db.callbacks_for_task(&running.task_id).await.unwrap();
    assert_eq!(
        outbox
            .iter()
            .map(|r| r.event_type.as_str())
            .collect::<Vec<_>>(),
        ["task.cancelled"]
    );
}

pub async fn updated_at_strictly_increases_and_completed_at_is_set(db: Database) {
    let task = create(&db, new_task("alice", None, t0())).await;
    // The clock stands still (and even goes back): every update still moves updated_at.
    let changes = [
        progressed(10),
        TaskChange {
            count_submit_attempt: true,
            ..TaskChange::default()
        },
        TaskChange {
            external_task_id: Some("ext-1".into()),
            ..TaskChange::default()
        },
        progressed(20),
        TaskChange {
            count_poll: true,
            next_run_at: Some(at(9_000)),
            ..TaskChange::default()
        },
        progressed(90),
        TaskChange {
            event: Some(TaskEvent::Completed),
            ..TaskChange::default()
        },
    ];
    let mut last = task.updated_at;
    let mut latest = task;
    for (i, change) in changes.into_iter().enumerate() {
        let now = if i % 2 == 0 { t0() } else { at(-1_000) };
        latest = db
            .update_task(&latest.task_id, &Fence::Unfenced, now, change)
            .await
            .unwrap();
        assert!(
            latest.updated_at > last,
            "step {i}: {} !> {last}",
            latest.updated_at
        );
        assert_eq!(
            db.get_task(&latest.task_id).await.unwrap(),
            latest,
            "returned row is the stored row"
        );
        last = latest.updated_at;
    }
    assert_eq!(latest.status, TaskStatus::Completed);
    assert_eq!(latest.completed_at, Some(latest.updated_at));
    // A later real clock is used as is.
    let other = create(&db, new_task("alice", None, t0())).await;
    let moved = db
        .update_task(&other.task_id, &Fence::Unfenced, at(60_000), progressed(5))
        .await
        .unwrap();
    assert_eq!(moved.updated_at, at(60_000));
}

pub async fn bookkeeping_fields_are_applied(db: Database) {
    let task = create(&db, new_task("alice", None, t0())).await;
    let updated = db
        .update_task(
            &task.task_id,
            &Fence::Unfenced,
            at(1),
            TaskChange {
                external_task_id: Some("ext-42".into()),
                error: Some((1500, "upstream 503".into())),
                next_run_at: Some(at(30_000)),
                count_submit_attempt: true,
                count_poll: true,
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.external_task_id.as_deref(), Some("ext-42"));
    assert_eq!(
        updated.submitted_at,
        Some(at(1)),
        "storing the upstream id stamps the submission"
    );
    assert_eq!(
        (updated.error_code, updated.error_message.as_deref()),
        (Some(1500), Some("upstream 503"))
    );
    assert_eq!(updated.next_run_at, at(30_000));
    assert_eq!((updated.submit_attempts, updated.poll_count), (1, 1));
    assert_eq!(updated.status, TaskStatus::Submitted);
    // Fields not named in a change keep their values.
    let later = db
        .update_task(
            &task.task_id,
            &Fence::Unfenced,
            at(2),
            TaskChange {
                count_poll: true,
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(later.external_task_id.as_deref(), Some("ext-42"));
    assert_eq!(later.submitted_at, Some(at(1)));
    assert_eq!(later.error_code, Some(1500));
    assert_eq!((later.submit_attempts, later.poll_count), (1, 2));
    assert_eq!(later.next_run_at, at(30_000));
}

pub async fn migrations_are_idempotent(db: Database) {
    assert!(db.pending_migrations().await.unwrap().is_empty());
    assert!(
        db.migrate().await.unwrap().is_empty(),
        "second run applies nothing"
    );
    assert!(db.pending_migrations().await.unwrap().is_empty());
    db.ping().await.unwrap();
    // The schema is usable after the repeated run.
    let task = create(&db, new_task("a", None, t0())).await;
    assert_eq!(db.get_task(&task.task_id).await.unwrap(), task);
}

pub async fn concurrent_updates_do_not_lose_writes(db: Database) {
    let task = create(&db, new_task("alice", None, t0())).await;
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.update_task(
                    &task.task_id,
                    &Fence::Unfenced,
                    at(i),
                    TaskChange {
                        count_poll: true,
                        event: Some(TaskEvent::Progressed(Progress::clamped(i * 10))),
                        ..TaskChange::default()
                    },
                )
                .await
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    let stored = db.get_task(&task.task_id).await.unwrap();
    assert_eq!(
        stored.poll_count, 10,
        "each locked read-modify-write saw the previous one"
    );
    assert_eq!(
        stored.progress,
        Progress::clamped(90),
        "progress is the highest reported"
    );
}

pub async fn retry_puts_only_failed_tasks_back_to_submitted(db: Database) {
    let task = create(&db, new_task("retry", None, t0())).await;
    // Not failed yet: refused, nothing written.
    assert!(matches!(
        db.retry_task(&task.task_id, at(1)).await,
        Err(RepoError::Conflict(_))
    ));
    db.update_task(
        &task.task_id,
        &Fence::Unfenced,
        at(2),
        TaskChange {
            event: Some(TaskEvent::Failed),
            error: Some((1002, "apimart: boom".to_owned())),
            external_task_id: Some("up-1".to_owned()),
            count_submit_attempt: true,
            enqueue_callback: true,
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(db.callbacks_for_task(&task.task_id).await.unwrap().len(), 1);

    let retried = db.retry_task(&task.task_id, at(10)).await.unwrap();
    assert_eq!(retried.status, TaskStatus::Submitted);
    assert_eq!(retried.progress, Progress::ZERO);
    assert_eq!(
        (retried.error_code, retried.error_message.clone()),
        (None, None)
    );
    assert_eq!(retried.external_task_id, None);
    assert_eq!(
        retried.submitted_at, None,
        "the retried run is queued again"
    );
    assert_eq!((retried.submit_attempts, retried.poll_count), (0, 0));
    assert_eq!(retried.completed_at, None);
    assert_eq!(retried.started_at, Some(at(10)));
    assert_eq!(retried.run_started_at(), at(10));
    assert_eq!(retried.next_run_at, at(10));
    assert!(retried.updated_at > task.updated_at);
    assert_eq!(retried.created_at, task.created_at);
    assert_eq!(retried.retries, 1);
    // The first run's callback record is kept as it was.
    let kept = db.callbacks_for_task(&task.task_id).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].event_type.as_str(), kept[0].run),
        ("task.failed", 0)
    );
    assert_eq!(db.get_task(&task.task_id).await.unwrap(), retried);

    db.update_task(
        &task.task_id,
        &Fence::Unfenced,
        at(20),
        TaskChange {
            event: Some(TaskEvent::Failed),
            error: Some((1002, "again".to_owned())),
            enqueue_callback: true,
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    // The retried run fails again: a row of its own, with the retry type.
    let rows = db.callbacks_for_task(&task.task_id).await.unwrap();
    let types: Vec<(&str, i32)> = rows
        .iter()
        .map(|r| (r.event_type.as_str(), r.run))
        .collect();
    assert_eq!(types, [("task.failed", 0), ("task.retry_failed", 1)]);
    // A second retry's outcome gets a third row (the unique key holds the run).
    db.retry_task(&task.task_id, at(21)).await.unwrap();
    db.update_task(
        &task.task_id,
        &Fence::Unfenced,
        at(22),
        TaskChange {
            event: Some(TaskEvent::Failed),
            error: Some((1002, "third".to_owned())),
            enqueue_callback: true,
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    let rows = db.callbacks_for_task(&task.task_id).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        (rows[2].event_type.as_str(), rows[2].run),
        ("task.retry_failed", 2)
    );
    let unknown = TaskId::generate();
    assert!(matches!(
        db.retry_task(&unknown, at(30)).await,
        Err(RepoError::NotFound)
    ));
}

/// 60 task ids minted in one millisecond: only their random parts differ, so
/// the order (and the keyset cursor) rests on the ids' bytewise order alone.
pub async fn keyset_pages_over_60_tasks_of_one_millisecond_return_each_once(db: Database) {
    let ms = 1_800_000_000_123_u64;
    let mut ids = Vec::new();
    for i in 0..60_u128 {
        // Random parts close together and far apart, so that neighbours share
        // long prefixes (a cursor compared on a prefix would repeat or skip).
        let random = if i % 2 == 0 {
            i
        } else {
            (1 << 79) | (i << 40) | u128::from(ulid::Ulid::generate().random() as u64)
        };
        let id: TaskId = format!("task_{}", ulid::Ulid::from_parts(ms, random))
            .parse()
            .unwrap();
        assert_eq!(id.timestamp_ms(), Some(ms));
        let mut task = new_task("same-ms", None, t0());
        task.task_id = id;
        create(&db, task).await;
        ids.push(id.to_string());
    }
    // Newest first means the highest id first, compared byte by byte.
    ids.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    for user in [Some("same-ms".to_owned()), None] {
        let mut seen = Vec::new();
        let mut before = None;
        let mut pages = 0;
        loop {
            let page = db
                .list_tasks(&TaskQuery {
                    user_id: user.clone(),
                    before,
                    limit: 7,
                    ..TaskQuery::default()
                })
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            pages += 1;
            assert!(page.len() <= 7);
            before = Some(last.task_id);
            seen.extend(page.iter().map(|t| t.task_id.to_string()));
            assert!(pages <= 9, "more pages than 60 rows need");
        }
        assert_eq!(pages, 9, "{user:?}");
        assert_eq!(
            seen, ids,
            "each id exactly once, in bytewise order ({user:?})"
        );
    }
}

/// Text with CJK, 4-byte emoji, combining marks and quotes, and timestamps with
/// microseconds, come back exactly as written (a 3-byte `utf8` column or a
/// seconds-only `DATETIME` would change them).
pub async fn text_and_timestamps_round_trip_exactly(db: Database) {
    let text = "模特儿：把头发剪短一点，微笑😀🧥👗🏽 e\u{301}'\"\\%_ 𠀋𩸽 ｅｎｄ";
    let created = t0() + chrono::TimeDelta::microseconds(123_456);
    let mut task = new_task("用户😀é", Some("请求-🎯-1"), created);
    task.prompt = text.repeat(8);
    task.input_images = vec![format!("https://example.test/图片/{text}.png")];
    let stored = create(&db, task.clone()).await;
    assert_eq!(stored.user_id, "用户😀é");
    assert_eq!(stored.request_id.as_deref(), Some("请求-🎯-1"));
    assert_eq!(stored.prompt.as_bytes(), task.prompt.as_bytes());
    assert_eq!(stored.input_images, task.input_images);
    assert_eq!(stored.created_at, created, "microseconds kept");
    let read = db.get_task(&stored.task_id).await.unwrap();
    assert_eq!(read, stored);

    // Idempotency and listing find the row by its non-ASCII keys.
    let mut again = task.clone();
    again.task_id = TaskId::generate();
    match db.insert_task(again).await.unwrap() {
        InsertOutcome::Existing(r) => assert_eq!(r.task_id, stored.task_id),
        InsertOutcome::Created(r) => panic!("duplicate row {}", r.task_id),
    }
    let listed = db
        .list_tasks(&TaskQuery {
            user_id: Some("用户😀é".into()),
            limit: 10,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(listed, vec![read.clone()]);
    // A different user that only differs in case or accents sees nothing.
    for other in ["用户😀e\u{301}", "用户😀É", "用户😀"] {
        let none = db
            .list_tasks(&TaskQuery {
                user_id: Some(other.into()),
                limit: 10,
                ..TaskQuery::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty(), "{other} saw another user's task");
    }

    let when = created + chrono::TimeDelta::microseconds(2_000_007);
    let failed = db
        .update_task(
            &stored.task_id,
            &Fence::Unfenced,
            when,
            TaskChange {
                event: Some(TaskEvent::Failed),
                error: Some((1002, format!("上游错误 🚫 {text}"))),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        failed.error_message.as_deref(),
        Some(format!("上游错误 🚫 {text}").as_str())
    );
    assert_eq!(failed.updated_at, when);
    assert_eq!(failed.completed_at, Some(when));
    assert_eq!(db.get_task(&stored.task_id).await.unwrap(), failed);
}

/// The submit queue read by admission control and the task view: its depth,
/// oldest entry, the drain over a window, and a task's place in submit order.
pub async fn queue_stats_and_positions_follow_submissions(db: Database) {
    use std::time::Duration;
    let empty = db
        .queue_stats(at(0), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(empty, modelgen_persistence::QueueStats::default());
    let a = create(&db, new_task("qa", None, at(1_000))).await;
    let b = create(&db, new_task("qb", None, at(2_000))).await;
    let c = create(&db, new_task("qc", None, at(3_000))).await;
    let stats = db
        .queue_stats(at(4_000), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        (
            stats.depth,
            stats.oldest_queued_at,
            stats.submitted_in_window
        ),
        (3, Some(at(1_000)), 0)
    );
    for (task, ahead) in [(&a, 0), (&b, 1), (&c, 2)] {
        assert_eq!(db.queue_position(task).await.unwrap(), Some(ahead));
    }
    // `a` is accepted upstream: out of the queue, counted in the drain.
    let a = db
        .update_task(
            &a.task_id,
            &Fence::Unfenced,
            at(5_000),
            TaskChange {
                external_task_id: Some("up-a".into()),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    let stats = db
        .queue_stats(at(6_000), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        (
            stats.depth,
            stats.oldest_queued_at,
            stats.submitted_in_window
        ),
        (2, Some(at(2_000)), 1)
    );
    assert_eq!(db.queue_position(&a).await.unwrap(), None);
    assert_eq!(db.queue_position(&b).await.unwrap(), Some(0));
    assert_eq!(db.queue_position(&c).await.unwrap(), Some(1));
    // The window slides past the submission.
    let later = db
        .queue_stats(at(70_000), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(later.submitted_in_window, 0);
    // A task cancelled in the queue leaves it.
    db.update_task(
        &b.task_id,
        &Fence::Unfenced,
        at(7_000),
        TaskChange {
            event: Some(TaskEvent::Cancelled),
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    let stats = db
        .queue_stats(at(8_000), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((stats.depth, stats.oldest_queued_at), (1, Some(at(3_000))));
    assert_eq!(db.queue_position(&c).await.unwrap(), Some(0));
}

/// A task's own callback URL (migration `…_task_callback_url`) is stored
/// exactly, read back by every query, kept by updates; a task without one
/// reads `None`. On PostgreSQL a change that leaves a task terminal is
/// announced with its id on `modelgen_task_changes`; the other backends
/// have no such channel.
pub async fn callback_url_round_trips_and_terminal_changes_are_announced(db: Database) {
    use futures_util::StreamExt as _;

    let url = format!(
        "https://java.example.com/modelgen/callback?tenant=7&long={}",
        "x".repeat(1900)
    );
    let mut with = new_task("cbu", Some("r1"), t0());
    with.callback_url = Some(url.clone());
    let with = create(&db, with).await;
    assert_eq!(with.callback_url.as_deref(), Some(url.as_str()));
    let without = create(&db, new_task("cbu", None, t0())).await;
    assert_eq!(without.callback_url, None);
    assert_eq!(
        db.get_task(&with.task_id)
            .await
            .unwrap()
            .callback_url
            .as_deref(),
        Some(url.as_str())
    );
    let listed = db
        .list_tasks(&TaskQuery {
            user_id: Some("cbu".into()),
            limit: 10,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    let urls: Vec<_> = listed.iter().map(|t| t.callback_url.clone()).collect();
    assert!(
        urls.contains(&Some(url.clone())) && urls.contains(&None),
        "{urls:?}"
    );

    let mut changes = db.task_change_notifications();
    assert_eq!(
        changes.is_some(),
        db.backend() == modelgen_persistence::Backend::Postgres
    );
    if let Some(stream) = changes.as_mut() {
        // The listener is open once it says so (its first item).
        assert_eq!(stream.next().await, Some(None));
    }

    // Updates keep the URL.
    db.update_task(&with.task_id, &Fence::Unfenced, at(1_000), progressed(40))
        .await
        .unwrap();
    let cancelled = db
        .update_task(
            &with.task_id,
            &Fence::Unfenced,
            at(2_000),
            TaskChange {
                event: Some(TaskEvent::Cancelled),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(cancelled.callback_url.as_deref(), Some(url.as_str()));
    if let Some(stream) = changes.as_mut() {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .unwrap();
        assert_eq!(next, Some(Some(with.task_id.to_string())));
    }
}
