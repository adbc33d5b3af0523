//! [`TaskRepository`] and [`ImageRepository`] for [`Database`], written once
//! for every backend.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use modelgen_domain::next_update_stamp;
use modelgen_domain::{TaskEvent, TaskId, TaskState, TaskStatus, transition};

use super::Database;
use crate::error::RepoError;
use crate::fair;
use crate::models::{
    EventKind, Fence, IMPORT_FINGERPRINT_PREFIX, ImageRecord, InsertOutcome, NewTask, NewTaskEvent,
    QueueStats, TaskChange, TaskQuery, TaskRecord,
};
use crate::repo::{ImageRepository, TaskRepository};
use crate::rows::{
    self, CallbackRow, ImageRow, NewEventRow, NewImageRow, TaskRow, TaskUpdateRow, add, to_db,
    truncate,
};
use crate::schema::{
    ai_generation_image as img, ai_generation_task as t, callback_delivery as c, task_events as ev,
};

/// Whether `fence` still holds on `row` at `now` (stored precision).
fn fence_holds(
    fence: &Fence,
    lease_owner: Option<&str>,
    lease_expires_at: Option<chrono::NaiveDateTime>,
    now: chrono::NaiveDateTime,
) -> bool {
    match fence {
        Fence::Unfenced => true,
        Fence::Lease(owner) => {
            lease_owner == Some(owner.as_str()) && lease_expires_at.is_some_and(|exp| exp > now)
        }
    }
}

/// The order of a claimed batch: polls (no rank) by due time, then submits in
/// fair order.
fn claim_key(row: &TaskRow) -> (bool, Option<i64>, chrono::NaiveDateTime, &str) {
    (
        row.queue_rank.is_some(),
        row.queue_rank,
        row.next_run_at,
        &row.task_id,
    )
}

/// What `update_task` computed from the locked row and the change: the columns
/// to write, and whether anything is written at all.
struct Plan {
    update: TaskUpdateRow,
    write: bool,
    new_status: TaskStatus,
}

/// Applies `change` to the locked `row` at `now` (already truncated to stored
/// precision), or says why it may not be applied. Pure: no I/O.
fn plan_update(
    row: &TaskRow,
    fence: &Fence,
    now: DateTime<Utc>,
    change: &TaskChange,
) -> Result<Plan, RepoError> {
    let now_db = to_db(now);
    if !fence_holds(
        fence,
        row.lease_owner.as_deref(),
        row.lease_expires_at,
        now_db,
    ) {
        return Err(RepoError::LeaseLost);
    }
    let record = row.clone().into_record()?;
    let old = TaskState {
        status: record.status,
        progress: record.progress,
        updated_at: record.updated_at,
        completed_at: record.completed_at,
    };
    let new = match change.event {
        None => old,
        Some(event) => {
            if old.status.is_terminal()
                && *fence == Fence::Unfenced
                && event == TaskEvent::Cancelled
            {
                return Err(RepoError::AlreadyTerminal(old.status));
            }
            transition(&old, event, now)?
        }
    };
    let state_changed = new != old;
    let fields_changed = change.external_task_id.is_some()
        || change.error.is_some()
        || change.next_run_at.is_some()
        || change.count_submit_attempt
        || change.count_poll
        || change.cost_micros.is_some()
        || !change.images.is_empty();
    let lease_released = change.release_lease && row.lease_owner.is_some();
    // A change that moves nothing but the lease is bookkeeping, like a claim,
    // and leaves the business timestamp alone.
    let updated_at = if state_changed {
        new.updated_at
    } else if fields_changed {
        next_update_stamp(old.updated_at, now)
    } else {
        old.updated_at
    };
    let (error_code, error_message) = match &change.error {
        Some((code, message)) => (Some(*code), Some(message.clone())),
        None => (row.error_code, row.error_message.clone()),
    };
    let (lease_owner, lease_expires_at) = if change.release_lease {
        (None, None)
    } else {
        (row.lease_owner.clone(), row.lease_expires_at)
    };
    let mut update = TaskUpdateRow {
        external_task_id: change
            .external_task_id
            .clone()
            .or_else(|| row.external_task_id.clone()),
        status: new.status.as_str().to_owned(),
        progress: i32::from(new.progress.get()),
        error_code,
        error_message,
        submit_attempts: row
            .submit_attempts
            .saturating_add(i32::from(change.count_submit_attempt)),
        poll_count: row.poll_count.saturating_add(i32::from(change.count_poll)),
        next_run_at: change.next_run_at.map_or(row.next_run_at, to_db),
        lease_owner,
        lease_expires_at,
        updated_at: to_db(updated_at),
        completed_at: new.completed_at.map(to_db),
        // The upstream accepted the run when its id is first stored.
        submitted_at: match (&row.external_task_id, &change.external_task_id) {
            (None, Some(_)) => Some(now_db),
            _ => row.submitted_at,
        },
        queue_rank: None,
        cost_micros: change.cost_micros.or(row.cost_micros),
    };
    // The task keeps its place in the fair queue only while it still waits
    // to be submitted: an upstream id, or any other status, takes it out.
    if new.status == TaskStatus::Submitted
        && update.external_task_id.is_none()
        && update.submitted_at.is_none()
    {
        update.queue_rank = row.queue_rank;
    }
    Ok(Plan {
        update,
        write: state_changed || fields_changed || lease_released,
        new_status: new.status,
    })
}

#[async_trait]
impl TaskRepository for Database {
    async fn insert_task(&self, task: NewTask) -> Result<InsertOutcome, RepoError> {
        let row = TaskRow::from_new(&task, 0)?;
        // The rank is read and written in one write transaction (SQLite: the
        // write lock; elsewhere two concurrent creates of one user may get
        // the same rank, a tie broken by next_run_at and task_id).
        let inserted = match &self.pools {
            // One hand-off to the writer's blocking thread for the whole
            // transaction (db/sqlite.rs, `write_blocking`).
            #[cfg(feature = "sqlite")]
            super::Pools::Sqlite(pools) => {
                let mut row = row.clone();
                super::sqlite::write_blocking(pools, self.timeouts.call, move |conn| {
                    super::sqlite::blocking::insert_task(conn, &mut row)?;
                    Ok(row)
                })
                .await
            }
            #[cfg(any(feature = "postgres", feature = "mysql"))]
            _ => self.insert_task_row(&row).await,
        };
        match inserted {
            Ok(row) => Ok(InsertOutcome::Created(row.into_record()?)),
            // The unique (user_id, request_id) constraint is the arbiter between
            // concurrent replicas: the loser reads the winner's row.
            Err(RepoError::Conflict(message)) => {
                let Some(request_id) = task.request_id.as_deref() else {
                    return Err(RepoError::Conflict(message));
                };
                let existing = with_conn!(self, |conn| {
                    Ok(t::table
                        .filter(t::user_id.eq(&task.user_id))
                        .filter(t::request_id.eq(request_id))
                        .select(TaskRow::as_select())
                        .first(conn)
                        .await
                        .optional()?)
                })?;
                match existing {
                    Some(row) => Ok(InsertOutcome::Existing(row.into_record()?)),
                    // The conflict was on something else (the task id).
                    None => Err(RepoError::Conflict(message)),
                }
            }
            Err(other) => Err(other),
        }
    }

    async fn get_task(&self, id: &TaskId) -> Result<TaskRecord, RepoError> {
        let id = id.to_string();
        let row = point_read!(self, |conn| {
            Ok(t::table
                .find(&id)
                .select(TaskRow::as_select())
                .first(conn)
                .await
                .optional()?)
        })?;
        row.ok_or(RepoError::NotFound)?.into_record()
    }

    async fn get_task_with_images(
        &self,
        id: &TaskId,
    ) -> Result<(TaskRecord, Vec<ImageRecord>), RepoError> {
        let id = id.to_string();
        // One row per image (one row with no image when there is none); the
        // task's columns repeat on each, a few hundred bytes for the one to
        // four images a task has.
        let rows: Vec<(TaskRow, Option<ImageRow>)> = point_read!(self, |conn| {
            Ok(t::table
                .left_join(img::table)
                .filter(t::task_id.eq(&id))
                .select((TaskRow::as_select(), Option::<ImageRow>::as_select()))
                .order(img::id.asc())
                .load(conn)
                .await?)
        })?;
        let mut rows = rows.into_iter();
        let (task, first) = rows.next().ok_or(RepoError::NotFound)?;
        let images = first
            .into_iter()
            .chain(rows.filter_map(|(_, image)| image))
            .map(ImageRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((task.into_record()?, images))
    }

    async fn find_by_request_id(
        &self,
        user_id: &str,
        request_id: &str,
    ) -> Result<Option<TaskRecord>, RepoError> {
        let row = point_read!(self, |conn| {
            Ok(t::table
                .filter(t::user_id.eq(user_id))
                .filter(t::request_id.eq(request_id))
                .select(TaskRow::as_select())
                .first(conn)
                .await
                .optional()?)
        })?;
        row.map(TaskRow::into_record).transpose()
    }

    async fn queue_stats(
        &self,
        now: DateTime<Utc>,
        window: Duration,
    ) -> Result<QueueStats, RepoError> {
        let since = to_db(now) - chrono::TimeDelta::from_std(window).unwrap_or_default();
        let queued = TaskStatus::Submitted.as_str();
        let (depth, oldest, recent) = with_conn!(self, |conn| {
            let depth: i64 = t::table
                .filter(t::status.eq(queued))
                .filter(t::queue_rank.is_not_null())
                .count()
                .get_result(conn)
                .await?;
            let oldest: Option<chrono::NaiveDateTime> = t::table
                .filter(t::submitted_at.is_null())
                .filter(t::status.eq(queued))
                .filter(t::queue_rank.is_not_null())
                .select(diesel::dsl::min(t::next_run_at))
                .first(conn)
                .await?;
            let recent: i64 = t::table
                .filter(t::submitted_at.gt(since))
                .count()
                .get_result(conn)
                .await?;
            Ok((depth, oldest, recent))
        })?;
        Ok(QueueStats {
            depth: u64::try_from(depth).unwrap_or(0),
            oldest_queued_at: oldest.map(rows::from_db),
            submitted_in_window: u64::try_from(recent).unwrap_or(0),
        })
    }

    async fn queue_position(&self, task: &TaskRecord) -> Result<Option<u64>, RepoError> {
        let Some(rank) = task.queue_rank else {
            return Ok(None);
        };
        if task.status != TaskStatus::Submitted || task.submitted_at.is_some() {
            return Ok(None);
        }
        let due = to_db(task.next_run_at);
        let id = task.task_id.to_string();
        let ahead: i64 = with_conn!(self, |conn| {
            Ok(crate::db::queue_ahead!(rank, due, &id)
                .get_result(conn)
                .await?)
        })?;
        Ok(Some(u64::try_from(ahead).unwrap_or(0)))
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskRecord>, RepoError> {
        if query.limit <= 0 {
            return Ok(Vec::new());
        }
        let rows = with_conn!(self, |conn| {
            let mut q = t::table.select(TaskRow::as_select()).into_boxed();
            if let Some(user) = &query.user_id {
                q = q.filter(t::user_id.eq(user));
            }
            if let Some(status) = query.status {
                q = q.filter(t::status.eq(status.as_str()));
            }
            if let Some(task_type) = query.task_type {
                q = q.filter(t::task_type.eq(task_type.as_str()));
            }
            if let Some(before) = query.before {
                q = q.filter(t::task_id.lt(before.to_string()));
            }
            if let Some(code) = query.error_code {
                q = q.filter(t::error_code.eq(code));
            }
            if let Some(since) = query.created_since {
                q = q.filter(t::created_at.ge(to_db(since)));
            }
            if let Some(until) = query.created_until {
                q = q.filter(t::created_at.lt(to_db(until)));
            }
            if let Some(since) = query.ended_since {
                q = q.filter(t::completed_at.ge(to_db(since)));
            }
            if let Some(until) = query.ended_until {
                q = q.filter(t::completed_at.lt(to_db(until)));
            }
            Ok(q.order(t::task_id.desc())
                .limit(query.limit)
                .load(conn)
                .await?)
        })?;
        rows::task_records(rows)
    }

    async fn claim_due_tasks(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, RepoError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let now_db = to_db(now);
        let expires = to_db(add(now, lease));
        let slots = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut rows = write_tx!(self, |conn, dialect| {
            // Each lane reads at most `limit` entries of its index range, in
            // its order; `split_claim` then shares the batch between them.
            // The lanes' filters and orders are shared (`due_submits!`,
            // `due_polls!`); each backend brings its row locking
            // (`claim_lock!`) and its poll order (`poll_order!`).
            let submits: Vec<String> = dialect::claim_lock!(
                crate::db::due_submits!(now_db)
                    .select(t::task_id)
                    .limit(limit)
            )
            .load(conn)
            .await?;
            let mut polls: Vec<(chrono::NaiveDateTime, String)> = Vec::new();
            for status in crate::db::ACTIVE_STATUSES {
                polls.extend(
                    dialect::claim_lock!(
                        crate::db::due_polls!(now_db, status, dialect::poll_order!())
                            .select((t::next_run_at, t::task_id))
                            .limit(limit)
                    )
                    .load::<(chrono::NaiveDateTime, String)>(conn)
                    .await?,
                );
            }
            polls.sort_unstable();
            let (take_polls, take_submits) =
                fair::split_claim(slots, polls.len().min(slots), submits.len());
            let ids: Vec<String> = polls
                .into_iter()
                .take(take_polls)
                .map(|(_, id)| id)
                .chain(submits.into_iter().take(take_submits))
                .collect();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            // `updated_at` is left alone: a claim is not a business change.
            let rows = dialect::update_returning_all!(
                conn,
                t::table.filter(t::task_id.eq_any(&ids)),
                (t::lease_owner.eq(owner), t::lease_expires_at.eq(expires)),
                TaskRow
            )?;
            let claimed = NewTaskEvent::new(EventKind::Claimed).by(owner);
            let events: Vec<NewEventRow> = ids
                .iter()
                .map(|id| NewEventRow::new(id, now_db, &claimed))
                .collect();
            crate::db::insert_events!(conn, events)?;
            Ok(rows)
        })?;
        // Polls first (no rank), each lane in its own order.
        rows.sort_by(|a, b| claim_key(a).cmp(&claim_key(b)));
        rows::task_records(rows)
    }

    async fn renew_task_lease(
        &self,
        id: &TaskId,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<(), RepoError> {
        let id = id.to_string();
        let now_db = to_db(now);
        let expires = to_db(add(now, lease));
        let renewed = write_conn!(self, |conn| {
            Ok(diesel::update(
                t::table
                    .find(&id)
                    .filter(t::lease_owner.eq(owner))
                    .filter(t::lease_expires_at.gt(now_db)),
            )
            .set(t::lease_expires_at.eq(expires))
            .execute(conn)
            .await?)
        })?;
        if renewed == 1 {
            return Ok(());
        }
        let exists = with_conn!(self, |conn| {
            Ok(t::table
                .find(&id)
                .select(t::task_id)
                .first::<String>(conn)
                .await
                .optional()?)
        })?;
        Err(if exists.is_some() {
            RepoError::LeaseLost
        } else {
            RepoError::NotFound
        })
    }

    async fn release_task_lease(&self, id: &TaskId, owner: &str) -> Result<(), RepoError> {
        let id = id.to_string();
        write_conn!(self, |conn| {
            diesel::update(t::table.find(&id).filter(t::lease_owner.eq(owner)))
                .set((
                    t::lease_owner.eq(None::<String>),
                    t::lease_expires_at.eq(None::<chrono::NaiveDateTime>),
                ))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    async fn release_all_task_leases(&self, owner: &str) -> Result<u64, RepoError> {
        let released = write_conn!(self, |conn| {
            Ok(diesel::update(t::table.filter(t::lease_owner.eq(owner)))
                .set((
                    t::lease_owner.eq(None::<String>),
                    t::lease_expires_at.eq(None::<chrono::NaiveDateTime>),
                ))
                .execute(conn)
                .await?)
        })?;
        Ok(released as u64)
    }

    async fn update_task(
        &self,
        id: &TaskId,
        fence: &Fence,
        now: DateTime<Utc>,
        change: TaskChange,
    ) -> Result<TaskRecord, RepoError> {
        let id = id.to_string();
        let now = truncate(now);
        let row = write_tx!(self, |conn, dialect| {
            let row = dialect::lock_task(conn, &id)
                .await?
                .ok_or(RepoError::NotFound)?;
            let plan = plan_update(&row, fence, now, &change)?;
            let row = if plan.write {
                dialect::update_returning_one!(conn, t::table.find(&id), &plan.update, TaskRow)?
            } else {
                row
            };
            for image in &change.images {
                diesel::insert_into(img::table)
                    .values(NewImageRow::from(image))
                    .execute(conn)
                    .await?;
            }
            if change.enqueue_callback && plan.new_status.is_terminal() {
                // At most one outbox row per (task, event type, run): the
                // unique constraint makes a repeated enqueue a no-op.
                diesel::insert_into(c::table)
                    .values(CallbackRow::pending(
                        &id,
                        plan.new_status,
                        to_db(now),
                        row.retries,
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
            }
            if !change.events.is_empty() {
                let at = to_db(now);
                let events: Vec<NewEventRow> = change
                    .events
                    .iter()
                    .map(|e| NewEventRow::new(&id, at, e))
                    .collect();
                crate::db::insert_events!(conn, events)?;
            }
            Ok(row)
        })?;
        let record = row.into_record()?;
        if record.status.is_terminal() {
            // Wakes the requests waiting for it on other replicas (db/notify.rs).
            self.announce_task_changed(record.task_id.as_str()).await;
        }
        Ok(record)
    }

    async fn retry_task(&self, id: &TaskId, now: DateTime<Utc>) -> Result<TaskRecord, RepoError> {
        let id = id.to_string();
        let now = truncate(now);
        let row = write_tx!(self, |conn, dialect| {
            let row = dialect::lock_task(conn, &id)
                .await?
                .ok_or(RepoError::NotFound)?;
            if row.status != TaskStatus::Failed.as_str() {
                return Err(RepoError::Conflict(format!(
                    "task is {}; only failed tasks can be retried",
                    row.status
                )));
            }
            if row
                .request_fingerprint
                .as_deref()
                .is_some_and(|f| f.starts_with(IMPORT_FINGERPRINT_PREFIX))
            {
                return Err(RepoError::Conflict(
                    "the task was imported from the earlier service, which kept no inputs \
                     to run it again; create a new task instead"
                        .into(),
                ));
            }
            let now_db = to_db(now);
            if row.lease_owner.is_some() && row.lease_expires_at.is_some_and(|exp| exp > now_db) {
                // A failed task holds a lease only while the input retention
                // cleanup works on it.
                return Err(RepoError::Conflict(
                    "the task's input images are being deleted right now".into(),
                ));
            }
            if let Some(purged_at) = row.clone().into_record()?.inputs_gone_since() {
                return Err(RepoError::InputsPurged { purged_at });
            }
            // The earlier runs' callback rows are kept: the new run's
            // outcome gets a row of its own (`run` = the new `retries`).
            diesel::insert_into(ev::table)
                .values(NewEventRow::new(
                    &id,
                    now_db,
                    &NewTaskEvent::new(EventKind::Retried),
                ))
                .execute(conn)
                .await?;
            let stamp = to_db(next_update_stamp(rows::from_db(row.updated_at), now));
            // Back in the queue, fairly: as a new task of its user.
            let rank = dialect::next_queue_rank(conn, &row.user_id).await?;
            let row = dialect::update_returning_one!(
                conn,
                t::table.find(&id),
                (
                    t::status.eq(TaskStatus::Submitted.as_str()),
                    t::progress.eq(0),
                    t::error_code.eq(None::<i32>),
                    t::error_message.eq(None::<String>),
                    t::external_task_id.eq(None::<String>),
                    t::submit_attempts.eq(0),
                    t::poll_count.eq(0),
                    t::next_run_at.eq(now_db),
                    t::lease_owner.eq(None::<String>),
                    t::lease_expires_at.eq(None::<chrono::NaiveDateTime>),
                    t::updated_at.eq(stamp),
                    t::completed_at.eq(None::<chrono::NaiveDateTime>),
                    t::started_at.eq(Some(now_db)),
                    t::submitted_at.eq(None::<chrono::NaiveDateTime>),
                    t::queue_rank.eq(Some(rank)),
                    t::cost_micros.eq(None::<i64>),
                    t::retries.eq(row.retries.saturating_add(1)),
                ),
                TaskRow
            )?;
            Ok(row)
        })?;
        row.into_record()
    }

    async fn ping(&self) -> Result<(), RepoError> {
        self.ping_pool().await
    }
}

#[async_trait]
impl ImageRepository for Database {
    async fn images_for_task(&self, id: &TaskId) -> Result<Vec<ImageRecord>, RepoError> {
        // One key, not `IN (…)`: the statement is the same every time, so
        // every backend keeps it prepared.
        let id = id.to_string();
        let rows = point_read!(self, |conn| {
            Ok(img::table
                .filter(img::task_id.eq(&id))
                .select(ImageRow::as_select())
                .order(img::id.asc())
                .load(conn)
                .await?)
        })?;
        rows.into_iter().map(ImageRow::into_record).collect()
    }

    async fn images_for_tasks(&self, ids: &[TaskId]) -> Result<Vec<ImageRecord>, RepoError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(TaskId::to_string).collect();
        // A page's worth of keys at most (the list's limit), each an index
        // lookup: short enough for a point read.
        let rows = point_read!(self, |conn| {
            Ok(img::table
                .filter(img::task_id.eq_any(&ids))
                .select(ImageRow::as_select())
                .order(img::id.asc())
                .load(conn)
                .await?)
        })?;
        rows.into_iter().map(ImageRow::into_record).collect()
    }

    async fn inline_images_for_task(&self, id: &TaskId) -> Result<Vec<(i64, String)>, RepoError> {
        let id = id.to_string();
        let rows: Vec<(i64, Option<String>)> = with_conn!(self, |conn| {
            Ok(img::table
                .filter(img::task_id.eq(&id))
                .filter(img::image_base64.is_not_null())
                .select((img::id, img::image_base64))
                .order(img::id.asc())
                .load(conn)
                .await?)
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(image_id, b64)| b64.map(|b| (image_id, b)))
            .collect())
    }
}

impl Database {
    /// A create's transaction on PostgreSQL and MySQL: the fair-queue rank,
    /// the row, its `created` event and (PostgreSQL) the `NOTIFY` that wakes
    /// other processes' workers when it commits ([`TaskRepository::insert_task`]).
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    async fn insert_task_row(&self, row: &TaskRow) -> Result<TaskRow, RepoError> {
        write_tx!(self, |conn, dialect| {
            let mut row = row.clone();
            row.queue_rank = Some(dialect::next_queue_rank(conn, &row.user_id).await?);
            diesel::insert_into(t::table)
                .values(&row)
                .execute(conn)
                .await?;
            // The timeline starts in the same transaction.
            diesel::insert_into(ev::table)
                .values(NewEventRow::new(
                    &row.task_id,
                    row.created_at,
                    &NewTaskEvent::new(EventKind::Created),
                ))
                .execute(conn)
                .await?;
            // Wakes the workers of other processes at the commit, in the
            // same round trip as the rest (db/notify.rs).
            dialect::announce_task_created(conn).await?;
            // Every column was written from `row` as it is: it is the stored row.
            Ok(row)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::from_db;
    use chrono::TimeDelta;
    use modelgen_domain::Progress;

    fn row(now: DateTime<Utc>) -> TaskRow {
        let task = NewTask {
            task_id: TaskId::generate(),
            request_id: None,
            user_id: "u".into(),
            task_type: modelgen_domain::TaskType::Default,
            base_model_task_id: None,
            angle: None,
            size: "4:3".into(),
            prompt: "p".into(),
            model: "m".into(),
            input_images: vec![],
            request_fingerprint: None,
            created_at: now,
            callback_url: None,
        };
        TaskRow::from_new(&task, 0).unwrap()
    }

    #[test]
    fn plan_with_only_lease_release_keeps_updated_at() {
        let now = truncate(Utc::now());
        let mut r = row(now);
        r.lease_owner = Some("w".into());
        r.lease_expires_at = Some(to_db(now + TimeDelta::seconds(30)));
        let change = TaskChange {
            release_lease: true,
            ..TaskChange::default()
        };
        let plan = plan_update(&r, &Fence::Lease("w".into()), now, &change).unwrap();
        assert!(plan.write);
        assert_eq!(plan.update.updated_at, r.updated_at);
        assert_eq!(plan.update.lease_owner, None);
    }

    #[test]
    fn plan_with_a_field_change_moves_updated_at_even_when_the_clock_did_not() {
        let now = truncate(Utc::now());
        let mut r = row(now);
        r.status = "processing".into();
        r.progress = 10;
        let change = TaskChange {
            count_poll: true,
            // Not higher than the current progress: the state machine changes nothing.
            event: Some(TaskEvent::Progressed(Progress::clamped(5))),
            ..TaskChange::default()
        };
        let plan = plan_update(&r, &Fence::Unfenced, now, &change).unwrap();
        assert!(from_db(plan.update.updated_at) > from_db(r.updated_at));
        assert_eq!(plan.update.poll_count, 1);
    }
}
