//! [`TaskImport`] for [`Database`], written once for every backend.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use modelgen_domain::TaskStatus;

use super::Database;
use crate::error::RepoError;
use crate::models::{
    ImportOutcome, ImportSkip, ImportedTask, TaskRecord, parked_until, plan_import,
};
use crate::repo::TaskImport;
use crate::rows::{ImageRow, ImportUpdateRow, NewImageRow, TaskRow, to_db};
use crate::schema::{ai_generation_image as img, ai_generation_task as t};

/// `(next_run_at, started_at)` of an imported task. A terminal task is never
/// due (its `next_run_at` is its end, as for tasks that ran here); an
/// unfinished one already resumed here (`existing` is due, not parked) keeps
/// its schedule; otherwise it is due at `resume_at` with its run starting
/// then, or parked.
fn schedule(
    task: &ImportedTask,
    existing: Option<&TaskRecord>,
) -> (NaiveDateTime, Option<NaiveDateTime>) {
    let parked = to_db(parked_until());
    if task.status.is_terminal() {
        let end = to_db(task.completed_at.unwrap_or(task.updated_at));
        return (end, existing.and_then(|e| e.started_at).map(to_db));
    }
    if let Some(e) = existing
        && !e.status.is_terminal()
        && to_db(e.next_run_at) < parked
    {
        return (to_db(e.next_run_at), e.started_at.map(to_db));
    }
    match task.resume_at {
        Some(at) => (to_db(at), Some(to_db(at))),
        None => (parked, None),
    }
}

#[async_trait]
impl TaskImport for Database {
    async fn upsert_imported_task(
        &self,
        task: &ImportedTask,
        now: DateTime<Utc>,
    ) -> Result<ImportOutcome, RepoError> {
        let id = task.task_id.to_string();
        let written = write_tx!(self, |conn, dialect| {
            let existing = match dialect::lock_task(conn, &id).await? {
                Some(row) => {
                    let images: Vec<ImageRow> = img::table
                        .filter(img::task_id.eq(&id))
                        .select(ImageRow::as_select())
                        .order(img::id.asc())
                        .load(conn)
                        .await?;
                    let images = images
                        .into_iter()
                        .map(ImageRow::into_record)
                        .collect::<Result<Vec<_>, _>>()?;
                    Some((row.into_record()?, images))
                }
                None => None,
            };
            let outcome = plan_import(existing.as_ref().map(|(t, i)| (t, i.as_slice())), task, now);
            let plan = schedule(task, existing.as_ref().map(|(t, _)| t));
            // A task that waits here to be submitted (resumed, `submitted`,
            // no upstream id) joins the fair queue, or keeps its place in it.
            let queued = task.status == TaskStatus::Submitted
                && task.external_task_id.is_none()
                && plan.0 < to_db(parked_until());
            let rank = match (&outcome, queued) {
                (ImportOutcome::Created | ImportOutcome::Updated, true) => {
                    match existing.as_ref().and_then(|(stored, _)| stored.queue_rank) {
                        Some(rank) => Some(rank),
                        None => Some(dialect::next_queue_rank(conn, &task.user_id).await?),
                    }
                }
                _ => None,
            };
            match outcome {
                ImportOutcome::Created => {
                    diesel::insert_into(t::table)
                        .values(TaskRow::from_imported(task, plan, rank))
                        .execute(conn)
                        .await?;
                }
                ImportOutcome::Updated => {
                    diesel::update(t::table.find(&id))
                        .set(ImportUpdateRow::from_imported(task, plan, rank))
                        .execute(conn)
                        .await?;
                    diesel::delete(img::table.filter(img::task_id.eq(&id)))
                        .execute(conn)
                        .await?;
                }
                ImportOutcome::Unchanged | ImportOutcome::Skipped(_) => return Ok(outcome),
            }
            for image in &task.images {
                diesel::insert_into(img::table)
                    .values(NewImageRow::from_imported(&task.task_id, image))
                    .execute(conn)
                    .await?;
            }
            Ok(outcome)
        });
        match written {
            // The unique (user_id, request_id) constraint: the task id was
            // checked under the lock, so the conflict is on the request id.
            Err(RepoError::Conflict(_)) => Ok(ImportOutcome::Skipped(ImportSkip::RequestIdTaken)),
            other => other,
        }
    }
}
