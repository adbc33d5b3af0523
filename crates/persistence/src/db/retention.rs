//! [`DataRetention`] for [`Database`], written once for every backend. The
//! statements avoid `RETURNING` (an update is followed by a read in the same
//! transaction), which every backend supports.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use modelgen_domain::{TaskId, TaskStatus};

use super::Database;
use crate::error::RepoError;
use crate::models::{ErasedTask, TaskRecord};
use crate::repo::DataRetention;
use crate::rows::{self, TaskRow, add, to_db, truncate};
use crate::schema::{ai_generation_image as img, ai_generation_task as t};

/// What an erased task's `input_images` becomes: no references.
const NO_INPUTS: &str = "[]";

#[async_trait]
impl DataRetention for Database {
    async fn claim_input_purges(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        ended_before: DateTime<Utc>,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, RepoError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let now_db = to_db(now);
        let cutoff = to_db(ended_before);
        let expires = to_db(add(now, lease));
        let mut rows = write_tx!(self, |conn, dialect| {
            let ids = dialect::due_purge_ids(conn, now_db, cutoff, limit).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            diesel::update(t::table.filter(t::task_id.eq_any(&ids)))
                .set((t::lease_owner.eq(owner), t::lease_expires_at.eq(expires)))
                .execute(conn)
                .await?;
            Ok(t::table
                .filter(t::task_id.eq_any(&ids))
                .select(TaskRow::as_select())
                .load(conn)
                .await?)
        })?;
        rows.sort_by(|a, b| (a.completed_at, &a.task_id).cmp(&(b.completed_at, &b.task_id)));
        rows::task_records(rows)
    }

    async fn mark_inputs_purged(
        &self,
        id: &TaskId,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<TaskRecord, RepoError> {
        let id = id.to_string();
        let now_db = to_db(now);
        let row = write_tx!(self, |conn, dialect| {
            let row = dialect::lock_task(conn, &id)
                .await?
                .ok_or(RepoError::NotFound)?;
            let holds = row.lease_owner.as_deref() == Some(owner)
                && row.lease_expires_at.is_some_and(|exp| exp > now_db);
            if !holds {
                return Err(RepoError::LeaseLost);
            }
            diesel::update(t::table.find(&id))
                .set((
                    t::inputs_purged_at.eq(row.inputs_purged_at.or(Some(now_db))),
                    t::lease_owner.eq(None::<String>),
                    t::lease_expires_at.eq(None::<chrono::NaiveDateTime>),
                ))
                .execute(conn)
                .await?;
            Ok(t::table
                .find(&id)
                .select(TaskRow::as_select())
                .first(conn)
                .await?)
        })?;
        row.into_record()
    }

    async fn erase_task_data(
        &self,
        id: &TaskId,
        now: DateTime<Utc>,
    ) -> Result<ErasedTask, RepoError> {
        let id = id.to_string();
        let now_db = to_db(truncate(now));
        let (row, image_rows) = write_tx!(self, |conn, dialect| {
            let row = dialect::lock_task(conn, &id)
                .await?
                .ok_or(RepoError::NotFound)?;
            let status: TaskStatus = row.status.parse().map_err(|e| RepoError::Corrupt {
                id: id.clone(),
                reason: format!("status: {e}"),
            })?;
            if !status.is_terminal() {
                return Err(RepoError::Conflict(format!(
                    "task is {status}; cancel it before erasing its data"
                )));
            }
            let image_rows = diesel::delete(img::table.filter(img::task_id.eq(&id)))
                .execute(conn)
                .await?;
            diesel::update(t::table.find(&id))
                .set((
                    t::prompt.eq(""),
                    t::input_images.eq(NO_INPUTS),
                    t::request_fingerprint.eq(None::<String>),
                    t::error_message.eq(None::<String>),
                    t::inputs_purged_at.eq(row.inputs_purged_at.or(Some(now_db))),
                    t::purged_at.eq(row.purged_at.or(Some(now_db))),
                ))
                .execute(conn)
                .await?;
            let row: TaskRow = t::table
                .find(&id)
                .select(TaskRow::as_select())
                .first(conn)
                .await?;
            Ok((row, image_rows as u64))
        })?;
        Ok(ErasedTask {
            task: row.into_record()?,
            image_rows,
        })
    }
}
