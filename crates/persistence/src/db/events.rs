//! [`EventLog`] for [`Database`], written once for every backend (each
//! dialect brings its day expression and its cost sum).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::dsl::{count, count_star, sql};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::RunQueryDsl;
use modelgen_domain::{TaskId, TaskStatus};

use super::Database;
use crate::error::RepoError;
use crate::models::{
    CallbackStatus, EndedTask, EventKind, TaskEventRecord, UpstreamFailure, UsageGroup, UsageQuery,
    UsageRow,
};
use crate::repo::EventLog;
use crate::rows::{EventRow, from_db, to_db};
use crate::schema::{ai_generation_task as t, callback_delivery as c, task_events as ev};

/// Statuses a task ends in.
const TERMINAL_STATUSES: [&str; 3] = ["completed", "failed", "cancelled"];

/// One group as the usage query returns it: key, tasks, cost sum, tasks with a cost.
type UsageTuple = (String, i64, Option<i64>, i64);

/// Runs the usage query on `$query` (filtered, not yet grouped) with the
/// grouping expression `$key` and the dialect's `$sum`.
macro_rules! grouped_usage {
    ($query:expr, $key:expr, $sum:expr, $conn:expr) => {
        $query
            .group_by(sql::<Text>($key))
            .select((
                sql::<Text>($key),
                count_star(),
                sql::<Nullable<BigInt>>($sum),
                count(t::cost_micros),
            ))
            .order(sql::<Text>($key))
            .load::<UsageTuple>($conn)
            .await
    };
}

#[async_trait]
impl EventLog for Database {
    async fn events_for_task(
        &self,
        id: &TaskId,
        limit: i64,
    ) -> Result<Vec<TaskEventRecord>, RepoError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let id = id.to_string();
        let rows = with_conn!(self, |conn| {
            Ok(ev::table
                .filter(ev::task_id.eq(&id))
                .order(ev::seq.asc())
                .limit(limit)
                .select(EventRow::as_select())
                .load(conn)
                .await?)
        })?;
        rows.into_iter().map(EventRow::into_record).collect()
    }

    async fn purge_events(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, RepoError> {
        if limit <= 0 {
            return Ok(0);
        }
        let cutoff = to_db(before);
        let deleted = write_tx!(self, |conn| {
            let seqs: Vec<i64> = ev::table
                .filter(ev::at.lt(cutoff))
                .order(ev::at.asc())
                .select(ev::seq)
                .limit(limit)
                .load(conn)
                .await?;
            if seqs.is_empty() {
                return Ok(0);
            }
            Ok(diesel::delete(ev::table.filter(ev::seq.eq_any(&seqs)))
                .execute(conn)
                .await?)
        })?;
        Ok(deleted as u64)
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, RepoError> {
        let from = to_db(query.from);
        let to = to_db(query.to);
        let completed = TaskStatus::Completed.as_str();
        let group_by = query.group_by;
        let user = query.user_id.clone();
        let rows: Vec<UsageTuple> = with_conn!(self, |conn, dialect| {
            let key = match group_by {
                UsageGroup::Day => dialect::DAY_OF_COMPLETION,
                UsageGroup::Type => "task_type",
            };
            let range = t::table
                .filter(t::completed_at.ge(from))
                .filter(t::completed_at.lt(to))
                .filter(t::status.eq(completed));
            Ok(match &user {
                Some(user) => grouped_usage!(
                    range.filter(t::user_id.eq(user)),
                    key,
                    dialect::COST_SUM,
                    conn
                )?,
                None => grouped_usage!(range, key, dialect::COST_SUM, conn)?,
            })
        })?;
        Ok(rows
            .into_iter()
            .map(|(key, n, sum, costed)| UsageRow {
                key,
                count: u64::try_from(n).unwrap_or(0),
                cost_micros: sum.unwrap_or(0),
                costed: u64::try_from(costed).unwrap_or(0),
            })
            .collect())
    }

    async fn ended_tasks(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<EndedTask>, RepoError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let (from, to) = (to_db(from), to_db(to));
        let rows: Vec<(String, chrono::NaiveDateTime, Option<chrono::NaiveDateTime>)> =
            with_conn!(self, |conn| {
                Ok(t::table
                    .filter(t::completed_at.ge(from))
                    .filter(t::completed_at.lt(to))
                    .filter(t::status.eq_any(TERMINAL_STATUSES))
                    .order(t::completed_at.asc())
                    .limit(limit)
                    .select((t::status, t::created_at, t::completed_at))
                    .load(conn)
                    .await?)
            })?;
        rows.into_iter()
            .filter_map(|(status, created, completed)| {
                completed.map(|completed| (status, created, completed))
            })
            .map(|(status, created, completed)| {
                let status: TaskStatus =
                    status
                        .parse()
                        .map_err(|e: modelgen_domain::ParseEnumError| RepoError::Corrupt {
                            id: "status".into(),
                            reason: e.to_string(),
                        })?;
                Ok(EndedTask {
                    status,
                    created_at: from_db(created),
                    completed_at: from_db(completed),
                })
            })
            .collect()
    }

    async fn upstream_failures(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<UpstreamFailure>, RepoError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let (from, to) = (to_db(from), to_db(to));
        let kinds = [
            EventKind::SubmitFailed.as_str(),
            EventKind::PollFailed.as_str(),
        ];
        let rows: Vec<(chrono::NaiveDateTime, String, Option<i32>)> = with_conn!(self, |conn| {
            Ok(ev::table
                .filter(ev::at.ge(from))
                .filter(ev::at.lt(to))
                .filter(ev::kind.eq_any(kinds))
                .order(ev::at.asc())
                .limit(limit)
                .select((ev::at, ev::kind, ev::http_status))
                .load(conn)
                .await?)
        })?;
        rows.into_iter()
            .map(|(at, kind, http_status)| {
                let kind = EventKind::parse(&kind).ok_or_else(|| RepoError::Corrupt {
                    id: "task_events.kind".into(),
                    reason: format!("event kind `{kind}`"),
                })?;
                Ok(UpstreamFailure {
                    at: from_db(at),
                    kind,
                    http_status,
                })
            })
            .collect()
    }

    async fn count_callbacks(&self) -> Result<Vec<(CallbackStatus, u64)>, RepoError> {
        let rows: Vec<(String, i64)> = with_conn!(self, |conn| {
            Ok(c::table
                .group_by(c::status)
                .select((c::status, count_star()))
                .order(c::status.asc())
                .load::<(String, i64)>(conn)
                .await?)
        })?;
        rows.into_iter()
            .map(|(status, n)| {
                let status = match status.as_str() {
                    "pending" => CallbackStatus::Pending,
                    "delivered" => CallbackStatus::Delivered,
                    "dead" => CallbackStatus::Dead,
                    other => {
                        return Err(RepoError::Corrupt {
                            id: "callback_delivery.status".into(),
                            reason: format!("status `{other}`"),
                        });
                    }
                };
                Ok((status, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}
