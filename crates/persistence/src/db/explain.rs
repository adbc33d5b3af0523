//! The query plans of the queue's queries, and a bulk fill, for tests and the
//! claim benchmark (feature `testing`): each query is built by the same macro
//! the repository runs (`db/mod.rs`), wrapped in the backend's `EXPLAIN`.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use diesel::backend::Backend as DieselBackend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel_async::RunQueryDsl;

use super::{ACTIVE_STATUSES, Database};
use crate::error::RepoError;
use crate::models::NewTask;
use crate::rows::{TaskRow, to_db};
use crate::schema::ai_generation_task as t;

/// `$prefix $query`, read back as rows of `ST`.
pub(crate) struct Explain<Q, ST> {
    prefix: &'static str,
    query: Q,
    row: PhantomData<ST>,
}

impl<Q, ST> Explain<Q, ST> {
    pub(crate) fn new(prefix: &'static str, query: Q) -> Self {
        Explain {
            prefix,
            query,
            row: PhantomData,
        }
    }
}

impl<Q, ST: 'static> QueryId for Explain<Q, ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, ST> Query for Explain<Q, ST>
where
    ST: diesel::sql_types::SqlType,
{
    type SqlType = ST;
}

impl<Q, ST, DB> QueryFragment<DB> for Explain<Q, ST>
where
    DB: DieselBackend,
    Q: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.unsafe_to_cache_prepared();
        out.push_sql(self.prefix);
        self.query.walk_ast(out.reborrow())
    }
}

/// The plan of one of the queue's queries, as the backend prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPlan {
    /// Which query: `claim: polls (submitted)`, `claim: polls (processing)`,
    /// `claim: submits`, `create: queue head`, `create: user's last rank`,
    /// `queue position`, `queue depth`.
    pub name: String,
    /// SQLite: the `detail` lines of `EXPLAIN QUERY PLAN`; PostgreSQL: the
    /// lines of `EXPLAIN`; MySQL/MariaDB: `EXPLAIN FORMAT=JSON`.
    pub plan: String,
}

/// The position query's sample task: rank, due time, id.
const SAMPLE_RANK: i64 = 1_000;

impl Database {
    /// The plans of the queue's queries at `now` (claims of `limit`), on
    /// PostgreSQL with `forced_index`: sequential scans, bitmap scans and
    /// sorts priced out (`SET LOCAL enable_* = off` in a read transaction), so
    /// that a plan still showing a Seq Scan or a Sort proves no index serves
    /// the query; without it, the planner's own choice (for a benchmark on a
    /// large, analysed table). `forced_index` is ignored elsewhere.
    ///
    /// # Errors
    /// Database errors.
    pub async fn explain_queue_queries(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        forced_index: bool,
    ) -> Result<Vec<QueryPlan>, RepoError> {
        let now = to_db(now);
        let due = now;
        let id = "task_sample".to_owned();
        write_tx!(self, |conn, dialect| {
            if forced_index && matches!(self.backend(), super::Backend::Postgres) {
                for setting in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
                    diesel::sql_query(format!("SET LOCAL {setting} = off"))
                        .execute(&mut *conn)
                        .await?;
                }
            }
            let mut plans = Vec::new();
            for status in ACTIVE_STATUSES {
                let plan = dialect::explain!(
                    conn,
                    dialect::claim_lock!(
                        crate::db::due_polls!(now, status, dialect::poll_order!())
                            .select((t::next_run_at, t::task_id))
                            .limit(limit)
                    )
                );
                plans.push(QueryPlan {
                    name: format!("claim: polls ({status})"),
                    plan,
                });
            }
            let plan = dialect::explain!(
                conn,
                dialect::claim_lock!(crate::db::due_submits!(now).select(t::task_id).limit(limit))
            );
            plans.push(QueryPlan {
                name: "claim: submits".into(),
                plan,
            });
            let plan = dialect::explain!(conn, crate::db::queue_head!());
            plans.push(QueryPlan {
                name: "create: queue head".into(),
                plan,
            });
            let plan = dialect::explain!(conn, crate::db::user_last_rank!("user-sample"));
            plans.push(QueryPlan {
                name: "create: user's last rank".into(),
                plan,
            });
            let plan = dialect::explain!(conn, crate::db::queue_ahead!(SAMPLE_RANK, due, &id));
            plans.push(QueryPlan {
                name: "queue position".into(),
                plan,
            });
            let plan = dialect::explain!(
                conn,
                t::table
                    .filter(t::status.eq(crate::db::QUEUED_STATUS))
                    .filter(t::queue_rank.is_not_null())
                    .count()
            );
            plans.push(QueryPlan {
                name: "queue depth".into(),
                plan,
            });
            Ok(plans)
        })
    }

    /// Inserts `tasks` as new queued tasks, in this order, each ranked by the
    /// same rule and lookups as [`crate::TaskRepository::insert_task`], but
    /// 100 to a transaction (well within the call timeout): for filling a benchmark database in seconds
    /// rather than minutes.
    ///
    /// # Errors
    /// Database errors; [`RepoError::Corrupt`] for a task that cannot be stored.
    pub async fn bulk_queue_tasks(&self, tasks: &[NewTask]) -> Result<(), RepoError> {
        let rows = tasks
            .iter()
            .map(|task| TaskRow::from_new(task, 0))
            .collect::<Result<Vec<_>, _>>()?;
        for chunk in rows.chunks(100) {
            write_tx!(self, |conn, dialect| {
                for row in chunk {
                    let mut row = row.clone();
                    row.queue_rank = Some(dialect::next_queue_rank(conn, &row.user_id).await?);
                    diesel::insert_into(t::table)
                        .values(&row)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Clears one task's `queue_rank`, as a replica older than the rank would
    /// have left a task it created during a rolling upgrade.
    ///
    /// # Errors
    /// Database errors.
    pub async fn clear_queue_rank(&self, id: &modelgen_domain::TaskId) -> Result<(), RepoError> {
        let id = id.to_string();
        write_conn!(self, |conn| {
            diesel::update(t::table.find(&id))
                .set(t::queue_rank.eq(None::<i64>))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Refreshes the planner's statistics of the task table (PostgreSQL
    /// `VACUUM ANALYZE`, MySQL `ANALYZE TABLE`, SQLite `ANALYZE`), as a
    /// server's background maintenance would after a large fill.
    ///
    /// # Errors
    /// Database errors.
    pub async fn analyze_tasks(&self) -> Result<(), RepoError> {
        let statement = match self.backend() {
            super::Backend::Mysql => "ANALYZE TABLE ai_generation_task",
            // What autovacuum does after a large fill: statistics, and the
            // visibility map that makes index-only scans cheap.
            super::Backend::Postgres => "VACUUM ANALYZE ai_generation_task",
            super::Backend::Sqlite => "ANALYZE ai_generation_task",
        };
        write_conn!(self, |conn| {
            diesel::sql_query(statement).execute(conn).await?;
            Ok(())
        })
    }
}
