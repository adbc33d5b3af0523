//! `TaskImport::upsert_imported_task`: the write path of `modelgen import legacy`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use modelgen_domain::{Angle, Progress, TaskId, TaskStatus, TaskType};
use modelgen_persistence::{
    DataRetention, Database, Fence, ImageLocation, ImageRepository, ImportOutcome, ImportSkip,
    ImportedImage, ImportedTask, TaskChange, TaskImport, TaskRepository, parked_until,
};

use crate::support::{at, create, new_task};

fn image(url: &str, created_at: DateTime<Utc>) -> ImportedImage {
    ImportedImage {
        angle: None,
        location: ImageLocation::Remote(url.to_owned()),
        mime: None,
        width: None,
        height: None,
        bytes: None,
        created_at,
    }
}

/// A completed default task as the earlier service would have it, with one
/// remote image and CJK text.
fn imported(id: &str, user: &str, request_id: &str) -> ImportedTask {
    ImportedTask {
        task_id: id.parse().unwrap(),
        request_id: Some(request_id.to_owned()),
        user_id: user.to_owned(),
        task_type: TaskType::Default,
        base_model_task_id: None,
        angle: None,
        external_task_id: Some("task_01UPSTREAM".to_owned()),
        status: TaskStatus::Completed,
        progress: Progress::clamped(100),
        error_code: None,
        error_message: None,
        created_at: at(0),
        updated_at: at(5_000),
        completed_at: Some(at(5_000)),
        resume_at: None,
        source: format!("legacy:base_model_task:{id}"),
        images: vec![image("https://oss.example.test/模特/1.png", at(5_000))],
    }
}

pub async fn import_upsert_creates_then_updates_only_what_changed(db: Database) {
    let task = imported("task_0123456789abcdef", "用户甲", "req-1");
    assert_eq!(
        db.upsert_imported_task(&task, at(10_000)).await.unwrap(),
        ImportOutcome::Created
    );
    let stored = db.get_task(&task.task_id).await.unwrap();
    assert_eq!(stored.user_id, "用户甲");
    assert_eq!(stored.request_id.as_deref(), Some("req-1"));
    assert_eq!(stored.status, TaskStatus::Completed);
    assert_eq!(stored.progress.get(), 100);
    assert_eq!(stored.created_at, at(0));
    assert_eq!(stored.updated_at, at(5_000));
    assert_eq!(stored.completed_at, Some(at(5_000)));
    assert_eq!(stored.external_task_id.as_deref(), Some("task_01UPSTREAM"));
    let images = db.images_for_task(&task.task_id).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(
        images[0].location,
        ImageLocation::Remote("https://oss.example.test/模特/1.png".into())
    );
    // A completed imported task queues no callback: the source reported it.
    use modelgen_persistence::CallbackOutbox;
    assert!(
        db.callbacks_for_task(&task.task_id)
            .await
            .unwrap()
            .is_empty()
    );

    // The same again: nothing written, nothing duplicated.
    assert_eq!(
        db.upsert_imported_task(&task, at(11_000)).await.unwrap(),
        ImportOutcome::Unchanged
    );
    assert_eq!(db.images_for_task(&task.task_id).await.unwrap().len(), 1);

    // Changed in the source (later updated_at): fields and images replaced.
    let mut changed = task.clone();
    changed.updated_at = at(8_000);
    changed.error_message = Some("备注".into());
    changed.images = vec![
        image("https://oss.example.test/a.png", at(8_000)),
        image("https://oss.example.test/b.png", at(8_000)),
    ];
    assert_eq!(
        db.upsert_imported_task(&changed, at(12_000)).await.unwrap(),
        ImportOutcome::Updated
    );
    let stored = db.get_task(&task.task_id).await.unwrap();
    assert_eq!(stored.updated_at, at(8_000));
    assert_eq!(stored.error_message.as_deref(), Some("备注"));
    let urls: Vec<_> = db
        .images_for_task(&task.task_id)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.location)
        .collect();
    assert_eq!(
        urls,
        vec![
            ImageLocation::Remote("https://oss.example.test/a.png".into()),
            ImageLocation::Remote("https://oss.example.test/b.png".into()),
        ]
    );

    // An older source state never overwrites a newer one.
    assert_eq!(
        db.upsert_imported_task(&task, at(13_000)).await.unwrap(),
        ImportOutcome::Skipped(ImportSkip::NewerInModelgen)
    );
    assert_eq!(
        db.get_task(&task.task_id)
            .await
            .unwrap()
            .error_message
            .as_deref(),
        Some("备注")
    );
}

pub async fn import_never_touches_tasks_modelgen_made_or_erased(db: Database) {
    // A task modelgen created, and an import that claims its id.
    let native = create(&db, new_task("u1", Some("r-native"), at(0))).await;
    let mut clash = imported(native.task_id.as_str(), "u1", "other");
    clash.updated_at = at(60_000);
    assert_eq!(
        db.upsert_imported_task(&clash, at(61_000)).await.unwrap(),
        ImportOutcome::Skipped(ImportSkip::NotImported)
    );
    assert_eq!(db.get_task(&native.task_id).await.unwrap(), native);

    // Another task of the user holds the request id: skipped, nothing written.
    let taken = imported("legacy-taken", "u1", "r-native");
    assert_eq!(
        db.upsert_imported_task(&taken, at(1_000)).await.unwrap(),
        ImportOutcome::Skipped(ImportSkip::RequestIdTaken)
    );
    assert!(matches!(
        db.get_task(&taken.task_id).await,
        Err(modelgen_persistence::RepoError::NotFound)
    ));

    // An imported failed task cannot be retried: the source kept no inputs.
    let mut failed = imported("legacy-failed", "u2", "r-failed");
    failed.status = TaskStatus::Failed;
    failed.progress = Progress::clamped(10);
    failed.error_code = Some(1002);
    failed.images.clear();
    db.upsert_imported_task(&failed, at(10_000)).await.unwrap();
    assert!(matches!(
        db.retry_task(&failed.task_id, at(11_000)).await,
        Err(modelgen_persistence::RepoError::Conflict(m)) if m.contains("imported")
    ));
    assert_eq!(
        db.get_task(&failed.task_id).await.unwrap().status,
        TaskStatus::Failed
    );

    // Erased in modelgen: not brought back by a later import.
    let task = imported("legacy-erased", "u2", "r-2");
    db.upsert_imported_task(&task, at(10_000)).await.unwrap();
    db.erase_task_data(&task.task_id, at(20_000)).await.unwrap();
    let mut newer = task.clone();
    newer.updated_at = at(30_000);
    assert_eq!(
        db.upsert_imported_task(&newer, at(31_000)).await.unwrap(),
        ImportOutcome::Skipped(ImportSkip::Erased)
    );
    assert!(db.images_for_task(&task.task_id).await.unwrap().is_empty());
}

pub async fn imported_unfinished_tasks_are_parked_or_resumed_by_polling(db: Database) {
    let mut task = imported("task_unfinished01", "u3", "r-3");
    task.status = TaskStatus::Processing;
    task.progress = Progress::clamped(40);
    task.completed_at = None;
    task.images.clear();
    let now = at(100_000);
    assert_eq!(
        db.upsert_imported_task(&task, now).await.unwrap(),
        ImportOutcome::Created
    );
    let stored = db.get_task(&task.task_id).await.unwrap();
    assert_eq!(stored.status, TaskStatus::Processing);
    assert_eq!(stored.next_run_at, parked_until());
    // Parked: no worker ever finds it due.
    let far = at(100_000_000_000);
    assert!(
        db.claim_due_tasks("w", far, Duration::from_secs(30), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Re-run asking to resume: due now, its run (and timeout) starting now.
    let mut resume = task.clone();
    resume.resume_at = Some(now);
    assert_eq!(
        db.upsert_imported_task(&resume, now).await.unwrap(),
        ImportOutcome::Updated
    );
    let claimed = db
        .claim_due_tasks("w", at(100_001), Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].task_id, task.task_id);
    assert_eq!(
        claimed[0].external_task_id.as_deref(),
        Some("task_01UPSTREAM")
    );
    assert_eq!(claimed[0].run_started_at(), now);

    // While a worker holds it, a changed source row waits.
    let mut changed = resume.clone();
    changed.progress = Progress::clamped(60);
    changed.updated_at = at(100_500);
    assert_eq!(
        db.upsert_imported_task(&changed, at(100_600))
            .await
            .unwrap(),
        ImportOutcome::Skipped(ImportSkip::Busy)
    );
    // A re-run without resumption does not park it again.
    db.release_task_lease(&task.task_id, "w").await.unwrap();
    assert_eq!(
        db.upsert_imported_task(&task, at(100_700)).await.unwrap(),
        ImportOutcome::Unchanged
    );
    assert_eq!(db.get_task(&task.task_id).await.unwrap().next_run_at, now);

    // Once the worker moved it on, modelgen's state is newer than the source's.
    db.update_task(
        &task.task_id,
        &Fence::Unfenced,
        at(200_000),
        TaskChange {
            event: Some(modelgen_domain::TaskEvent::Progressed(Progress::clamped(
                90,
            ))),
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        db.upsert_imported_task(&changed, at(200_100))
            .await
            .unwrap(),
        ImportOutcome::Skipped(ImportSkip::NewerInModelgen)
    );
}

pub async fn imported_edit_and_outfit_keep_links_angles_and_stored_images(db: Database) {
    let base = imported("task_base000000001", "u4", "r-base");
    db.upsert_imported_task(&base, at(1_000)).await.unwrap();
    let base_id: TaskId = base.task_id;
    let mut outfit = imported("task_outfit0000001", "u4", "r-outfit");
    outfit.task_type = TaskType::Outfit;
    outfit.base_model_task_id = Some(base_id);
    outfit.angle = Some(Angle::Back);
    outfit.source = "legacy:outfit_task:1".into();
    outfit.images = vec![ImportedImage {
        angle: Some(Angle::Back),
        location: ImageLocation::Stored("results/task_outfit0000001/legacy-9.png".into()),
        mime: Some("image/png".into()),
        width: Some(640),
        height: Some(480),
        bytes: Some(1234),
        created_at: at(5_000),
    }];
    assert_eq!(
        db.upsert_imported_task(&outfit, at(2_000)).await.unwrap(),
        ImportOutcome::Created
    );
    let stored = db.get_task(&outfit.task_id).await.unwrap();
    assert_eq!(stored.task_type, TaskType::Outfit);
    assert_eq!(stored.base_model_task_id, Some(base_id));
    assert_eq!(stored.angle, Some(Angle::Back));
    let images = db.images_for_task(&outfit.task_id).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].angle, Some(Angle::Back));
    assert_eq!(images[0].width, Some(640));
    assert_eq!(
        images[0].location.storage_key(),
        Some("results/task_outfit0000001/legacy-9.png")
    );
    assert_eq!(
        db.upsert_imported_task(&outfit, at(3_000)).await.unwrap(),
        ImportOutcome::Unchanged
    );
}
