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
use crate::models::{TaskEventRecord, UsageGroup, UsageQuery, UsageRow};
use crate::repo::EventLog;
use crate::rows::{EventRow, to_db};
use crate::schema::{ai_generation_task as t, task_events as ev};

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
}
