//! [`CallbackOutbox`] for [`Database`], written once for every backend.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use modelgen_domain::TaskId;
use modelgen_domain::next_update_stamp;

use super::Database;
use crate::error::RepoError;
use crate::models::{
    AttemptNote, AttemptOutcome, CallbackRecord, CallbackStatus, EventKind, NewTaskEvent,
};
use crate::repo::CallbackOutbox;
use crate::rows::{self, CallbackRow, NewEventRow, add, from_db, to_db};
use crate::schema::{callback_delivery as c, task_events as ev};

#[async_trait]
impl CallbackOutbox for Database {
    async fn claim_due_callbacks(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<CallbackRecord>, RepoError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let now_db = to_db(now);
        let expires = to_db(add(now, lease));
        let mut rows = write_tx!(self, |conn, dialect| {
            let ids = dialect::due_callback_ids(conn, now_db, limit).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            Ok(dialect::update_returning_all!(
                conn,
                c::table.filter(c::event_id.eq_any(&ids)),
                (c::lease_owner.eq(owner), c::lease_expires_at.eq(expires)),
                CallbackRow
            )?)
        })?;
        rows.sort_by(|a, b| {
            (a.next_attempt_at, &a.event_id).cmp(&(b.next_attempt_at, &b.event_id))
        });
        rows::callback_records(rows)
    }

    async fn record_callback_attempt(
        &self,
        event_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        outcome: AttemptOutcome,
    ) -> Result<CallbackRecord, RepoError> {
        let note = AttemptNote {
            replica: Some(owner.to_owned()),
            ..AttemptNote::default()
        };
        self.record_callback_attempt_noted(event_id, owner, now, outcome, note)
            .await
    }

    async fn record_callback_attempt_noted(
        &self,
        event_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        outcome: AttemptOutcome,
        note: AttemptNote,
    ) -> Result<CallbackRecord, RepoError> {
        let now_db = to_db(now);
        let row = write_tx!(self, |conn, dialect| {
            let row = dialect::lock_callback(conn, event_id)
                .await?
                .ok_or(RepoError::NotFound)?;
            let holds = row.lease_owner.as_deref() == Some(owner)
                && row.lease_expires_at.is_some_and(|exp| exp > now_db);
            if !holds {
                return Err(RepoError::LeaseLost);
            }
            let updated_at = to_db(next_update_stamp(from_db(row.updated_at), from_db(now_db)));
            let (status, next_attempt_at, last_error, delivered_at) = match &outcome {
                AttemptOutcome::Delivered => (
                    CallbackStatus::Delivered,
                    row.next_attempt_at,
                    row.last_error.clone(),
                    Some(now_db),
                ),
                AttemptOutcome::Retry {
                    next_attempt_at,
                    error,
                } => (
                    CallbackStatus::Pending,
                    to_db(*next_attempt_at),
                    Some(error.clone()),
                    None,
                ),
                AttemptOutcome::Dead { error } => (
                    CallbackStatus::Dead,
                    row.next_attempt_at,
                    Some(error.clone()),
                    None,
                ),
            };
            let attempt = row.attempts.saturating_add(1);
            let mut tried = NewTaskEvent::new(EventKind::CallbackAttempt);
            tried.replica = note.replica.clone();
            tried.attempt = Some(attempt);
            tried.http_status = note.http_status;
            tried.latency_ms = note.latency_ms;
            let mut events = Vec::with_capacity(2);
            match &outcome {
                AttemptOutcome::Delivered => {
                    events.push(tried);
                    events.push(NewTaskEvent::new(EventKind::CallbackDelivered));
                }
                AttemptOutcome::Retry { error, .. } => events.push(tried.message(error.clone())),
                AttemptOutcome::Dead { error } => {
                    events.push(tried.message(error.clone()));
                    events.push(NewTaskEvent::new(EventKind::CallbackDead));
                }
            }
            let events: Vec<NewEventRow> = events
                .iter()
                .map(|e| NewEventRow::new(&row.task_id, now_db, e))
                .collect();
            crate::db::insert_events!(conn, events)?;
            Ok(dialect::update_returning_one!(
                conn,
                c::table.find(event_id),
                (
                    c::status.eq(status.as_str()),
                    c::attempts.eq(attempt),
                    c::next_attempt_at.eq(next_attempt_at),
                    c::last_error.eq(last_error),
                    c::lease_owner.eq(None::<String>),
                    c::lease_expires_at.eq(None::<NaiveDateTime>),
                    c::updated_at.eq(updated_at),
                    c::delivered_at.eq(delivered_at),
                ),
                CallbackRow
            )?)
        })?;
        row.into_record()
    }

    async fn list_callbacks(
        &self,
        status: Option<CallbackStatus>,
        limit: i64,
    ) -> Result<Vec<CallbackRecord>, RepoError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let rows = with_conn!(self, |conn| {
            let mut q = c::table.select(CallbackRow::as_select()).into_boxed();
            if let Some(status) = status {
                q = q.filter(c::status.eq(status.as_str()));
            }
            Ok(q.order((c::created_at.desc(), c::event_id.desc()))
                .limit(limit)
                .load(conn)
                .await?)
        })?;
        rows::callback_records(rows)
    }

    async fn get_callback(&self, event_id: &str) -> Result<CallbackRecord, RepoError> {
        let row = with_conn!(self, |conn| {
            Ok(c::table
                .find(event_id)
                .select(CallbackRow::as_select())
                .first(conn)
                .await
                .optional()?)
        })?;
        row.ok_or(RepoError::NotFound)?.into_record()
    }

    async fn callbacks_for_task(&self, id: &TaskId) -> Result<Vec<CallbackRecord>, RepoError> {
        let id = id.to_string();
        let rows = with_conn!(self, |conn| {
            Ok(c::table
                .filter(c::task_id.eq(&id))
                .select(CallbackRow::as_select())
                .order((c::created_at.asc(), c::event_id.asc()))
                .load(conn)
                .await?)
        })?;
        rows::callback_records(rows)
    }

    async fn redeliver(
        &self,
        event_id: &str,
        now: DateTime<Utc>,
    ) -> Result<CallbackRecord, RepoError> {
        let now_db = to_db(now);
        // The lease is left as it is: a `pending` row may have an attempt in
        // flight, whose outcome is still recorded (and counted) normally.
        let row = write_tx!(self, |conn, dialect| {
            let row = dialect::update_returning_one!(
                conn,
                c::table.find(event_id),
                (
                    c::status.eq(CallbackStatus::Pending.as_str()),
                    c::attempts.eq(0),
                    c::next_attempt_at.eq(now_db),
                    c::updated_at.eq(now_db),
                    c::delivered_at.eq(None::<NaiveDateTime>),
                ),
                CallbackRow
            )
            .optional()?;
            if let Some(row) = &row {
                diesel::insert_into(ev::table)
                    .values(NewEventRow::new(
                        &row.task_id,
                        now_db,
                        &NewTaskEvent::new(EventKind::CallbackRedelivered),
                    ))
                    .execute(conn)
                    .await?;
            }
            Ok(row)
        })?;
        row.ok_or(RepoError::NotFound)?.into_record()
    }

    async fn redeliver_all_dead(&self, now: DateTime<Utc>) -> Result<u64, RepoError> {
        let now_db = to_db(now);
        let count = write_tx!(self, |conn| {
            // The dead rows' tasks, read in the transaction that revives
            // them: each gets its `callback_redelivered` entry.
            let tasks: Vec<String> = c::table
                .filter(c::status.eq(CallbackStatus::Dead.as_str()))
                .select(c::task_id)
                .load(conn)
                .await?;
            let count =
                diesel::update(c::table.filter(c::status.eq(CallbackStatus::Dead.as_str())))
                    .set((
                        c::status.eq(CallbackStatus::Pending.as_str()),
                        c::attempts.eq(0),
                        c::next_attempt_at.eq(now_db),
                        c::updated_at.eq(now_db),
                    ))
                    .execute(conn)
                    .await?;
            let redelivered = NewTaskEvent::new(EventKind::CallbackRedelivered);
            crate::db::insert_events!(
                conn,
                tasks
                    .iter()
                    .map(|task| NewEventRow::new(task, now_db, &redelivered))
            )?;
            Ok(count)
        })?;
        Ok(count as u64)
    }
}
