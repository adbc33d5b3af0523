//! [`Database`]: the SQLite/PostgreSQL/MySQL implementation of the repository traits.
//!
//! The repository bodies are written once (`tasks.rs`, `callbacks.rs`) and
//! expanded for each backend's concrete connection type by the [`with_conn!`] and
//! [`write_tx!`] macros. What differs between backends — connection setup,
//! migrations, row locking for claims and updates, writes that return rows —
//! lives in `sqlite.rs`, `postgres.rs` and `mysql.rs`, which the macros bring
//! into scope under a name the body chooses (the body calls
//! `dialect::lock_task(conn, id)` and gets the backend's version).

use std::fmt;
use std::time::Duration;

use crate::error::RepoError;

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!(
    "modelgen-persistence needs at least one of the features `sqlite`, `postgres`, `mysql`"
);

/// Statuses a worker may still act on (claimable when due).
pub(crate) const ACTIVE_STATUSES: [&str; 2] = ["submitted", "processing"];

/// The order of both claim lanes, which `idx_task_queue (status, queue_rank,
/// next_run_at, task_id)` holds: fair rank (all NULL in the poll lane), then
/// due time, then id. Every lane query filters on one `status` and on
/// `queue_rank` being NULL or not, so the index range is read in this order:
/// no sort of the backlog.
macro_rules! queue_order {
    () => {{
        use $crate::schema::ai_generation_task as t;
        (t::queue_rank.asc(), t::next_run_at.asc(), t::task_id.asc())
    }};
}
pub(crate) use queue_order;

/// The order of the poll lane on backends whose planner sees that
/// `queue_rank IS NULL` fixes the rank (SQLite, MySQL/MariaDB): due time, then
/// id. MariaDB sorts (filesort) when the order names the rank too; PostgreSQL
/// sorts unless it does, so its poll lane uses [`queue_order!`].
macro_rules! due_order {
    () => {{
        use $crate::schema::ai_generation_task as t;
        (t::next_run_at.asc(), t::task_id.asc())
    }};
}
pub(crate) use due_order;

/// The poll lane of a claim, for one `$status` (`submitted` or
/// `processing`): tasks without a fair rank (running upstream, or queued
/// without a rank, e.g. by a replica older than the rank), due at `$now`,
/// lease free or expired, in `next_run_at` order (`$order`: the dialect's
/// `poll_order!`, [`due_order!`] or [`queue_order!`], whichever its planner
/// reads from the index without a sort). One index range of `idx_task_queue`
/// per status; the claim merges the two.
macro_rules! due_polls {
    ($now:expr, $status:expr, $order:expr) => {{
        use $crate::schema::ai_generation_task as t;
        let now: ::chrono::NaiveDateTime = $now;
        t::table
            .filter(t::status.eq($status))
            .filter(t::queue_rank.is_null())
            .filter(t::next_run_at.le(now))
            .filter(t::lease_owner.is_null().or(t::lease_expires_at.le(now)))
            .order($order)
    }};
}
pub(crate) use due_polls;

/// The submit lane of a claim: ranked tasks (waiting to be submitted
/// upstream), due at `$now`, lease free or expired, in fair order
/// ([`queue_order!`]). One index range of `idx_task_queue`; rows skipped on the
/// way are only the queue's in-flight (leased) and snoozed (not yet due) ones.
macro_rules! due_submits {
    ($now:expr) => {{
        use $crate::schema::ai_generation_task as t;
        let now: ::chrono::NaiveDateTime = $now;
        t::table
            .filter(t::status.eq($crate::db::QUEUED_STATUS))
            .filter(t::queue_rank.is_not_null())
            .filter(t::next_run_at.le(now))
            .filter(t::lease_owner.is_null().or(t::lease_expires_at.le(now)))
            .order($crate::db::queue_order!())
    }};
}
pub(crate) use due_submits;

/// The only status a ranked (queued) task has.
pub(crate) const QUEUED_STATUS: &str = "submitted";

/// The head of the fair queue: the smallest `queue_rank` (the first ranked
/// entry of `idx_task_queue`), as a query of one `Nullable<BigInt>` row.
macro_rules! queue_head {
    () => {{
        use $crate::schema::ai_generation_task as t;
        t::table
            .filter(t::status.eq($crate::db::QUEUED_STATUS))
            .filter(t::queue_rank.is_not_null())
            .select(t::queue_rank)
            .order(t::queue_rank.asc())
            .limit(1)
    }};
}
pub(crate) use queue_head;

/// The queue head's rank ([`queue_head!`]) and `$user`'s last rank
/// ([`user_last_rank!`]) in one statement of two scalar subqueries, as one
/// `(Nullable<BigInt>, Nullable<BigInt>)` row: one round trip for a create's
/// fair-queue rank instead of two.
macro_rules! queue_ranks {
    ($user:expr) => {
        ::diesel::select((
            $crate::db::queue_head!().single_value(),
            $crate::db::user_last_rank!($user).single_value(),
        ))
    };
}
pub(crate) use queue_ranks;

/// `$user`'s last queued rank (the last ranked entry of its range of
/// `idx_task_user_rank`), as a query of one `Nullable<BigInt>` row.
macro_rules! user_last_rank {
    ($user:expr) => {{
        use $crate::schema::ai_generation_task as t;
        t::table
            .filter(t::user_id.eq($user))
            .filter(t::queue_rank.is_not_null())
            .select(t::queue_rank)
            .order(t::queue_rank.desc())
            .limit(1)
    }};
}
pub(crate) use user_last_rank;

/// How many queued tasks are ahead of a task at `($rank, $due, $id)` in fair
/// order: a count over the range of `idx_task_queue` up to `$rank` (covering),
/// O(position) entries.
macro_rules! queue_ahead {
    ($rank:expr, $due:expr, $id:expr) => {{
        use $crate::schema::ai_generation_task as t;
        let rank: i64 = $rank;
        let due: ::chrono::NaiveDateTime = $due;
        t::table
            .filter(t::status.eq($crate::db::QUEUED_STATUS))
            .filter(t::queue_rank.le(rank))
            .filter(
                t::queue_rank
                    .lt(rank)
                    .or(t::next_run_at.lt(due))
                    .or(t::next_run_at.eq(due).and(t::task_id.lt($id))),
            )
            .count()
    }};
}
pub(crate) use queue_ahead;

/// The rank a task of `$user` gets when it joins the queue
/// ([`crate::fair::queue_rank`] of the head and the user's last rank): two
/// index lookups in one statement ([`queue_ranks!`]) on `$conn` (a `&mut`
/// connection), inside the caller's write
/// transaction. The body of each dialect's `next_queue_rank`, in a function
/// returning `QueryResult<i64>`.
macro_rules! next_queue_rank {
    ($conn:expr, $user:expr) => {{
        let (head, last): (Option<i64>, Option<i64>) = $crate::db::queue_ranks!($user)
            .get_result(&mut *$conn)
            .await?;
        Ok($crate::fair::queue_rank(head, last))
    }};
}
pub(crate) use next_queue_rank;

/// Terminal statuses: a task in one of them never runs again (except through
/// an operator's retry of a `failed` one).
pub(crate) const TERMINAL_STATUSES: [&str; 3] = ["completed", "failed", "cancelled"];

/// The filter of an input-retention claim: ended at or before `$ended_before`,
/// not processed yet, claim (lease) free or expired at `$now`. One definition
/// for every backend; only the locking around it differs.
macro_rules! due_purges {
    ($now:expr, $ended_before:expr) => {{
        use $crate::schema::ai_generation_task as t;
        let now: ::chrono::NaiveDateTime = $now;
        let ended_before: ::chrono::NaiveDateTime = $ended_before;
        t::table
            .filter(t::inputs_purged_at.is_null())
            .filter(t::completed_at.le(ended_before))
            .filter(t::status.eq_any($crate::db::TERMINAL_STATUSES))
            .filter(t::lease_owner.is_null().or(t::lease_expires_at.le(now)))
    }};
}

/// Appends timeline rows (`$rows`: an iterator of `NewEventRow`) on `$conn`,
/// inside the caller's transaction, one statement each (SQLite takes no
/// multi-row insert through the async wrapper; a change writes a handful).
/// Evaluates to `QueryResult<()>`; use inside a body returning `RepoError`.
macro_rules! insert_events {
    ($conn:expr, $rows:expr) => {{
        let mut result: ::diesel::QueryResult<()> = Ok(());
        for row in $rows {
            if let Err(e) = ::diesel::insert_into($crate::schema::task_events::table)
                .values(row)
                .execute(&mut *$conn)
                .await
            {
                result = Err(e);
                break;
            }
        }
        result
    }};
}
pub(crate) use insert_events;

/// `UPDATE … RETURNING`, for backends that have it (SQLite, PostgreSQL);
/// MySQL's versions read the rows back instead. Each dialect module exports
/// its own `update_returning_all!` and `update_returning_one!`.
///
/// This one: every updated row: `QueryResult<Vec<$row>>`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! native_update_returning_all {
    ($conn:expr, $target:expr, $changes:expr, $row:ty) => {{
        ::diesel::update($target)
            .set($changes)
            .returning(<$row>::as_returning())
            .get_results::<$row>($conn)
            .await
    }};
}
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use native_update_returning_all;

/// `UPDATE … RETURNING` one row: `QueryResult<$row>`, `NotFound` when nothing matched.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! native_update_returning_one {
    ($conn:expr, $target:expr, $changes:expr, $row:ty) => {{
        ::diesel::update($target)
            .set($changes)
            .returning(<$row>::as_returning())
            .get_result::<$row>($conn)
            .await
    }};
}
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use native_update_returning_one;

/// The due-callback filter of a claim: `pending`, due at `$now`, lease free or expired.
macro_rules! due_callbacks {
    ($now:expr) => {{
        use $crate::schema::callback_delivery as c;
        let now: ::chrono::NaiveDateTime = $now;
        c::table
            .filter(c::status.eq("pending"))
            .filter(c::next_attempt_at.le(now))
            .filter(c::lease_owner.is_null().or(c::lease_expires_at.le(now)))
    }};
}

/// Runs `$body` (an expression of type `Result<T, RepoError>` that may `.await`
/// and use `?`) with `$conn` bound to a pooled connection of the database's
/// backend, and `$dialect` naming that backend's module (`sqlite`, `postgres`
/// or `mysql`). For reads only: on SQLite the connection is one of the
/// readers, which refuse writes (`PRAGMA query_only`); a statement that writes
/// goes through [`write_conn!`] or [`write_tx!`].
/// Errors are passed through [`classify`]; a pool failure is
/// [`RepoError::Unavailable`].
///
/// The whole call — getting a connection and running `$body` — is bounded by
/// [`PoolOptions::call_timeout`], the client-side backstop behind the
/// server-side statement timeout: past it the call fails with
/// [`RepoError::Unavailable`] and the connection is closed rather than put
/// back (it may still be waiting for an answer).
macro_rules! with_conn {
    ($db:expr, |$conn:ident $(, $dialect:ident)?| $body:expr) => {
        $crate::db::on_conn!(read, $db, |$conn $(, $dialect)?| $body)
    };
}

/// Like [`with_conn!`], for a short read (a row by its key, a task's images):
/// on SQLite it runs on a point connection, on the caller's thread, without a
/// hand-off to a blocking thread (`sqlite::Inline`); when no point connection
/// is free, or the read would have to wait for a lock ("database is locked"
/// at once: their busy timeout is zero), it runs again through [`with_conn!`].
/// A point read that still took long (a wait no busy timeout bounds) pauses
/// point reads for a while (`sqlite::Pools::point_read_took`).
/// On PostgreSQL and MySQL it is [`with_conn!`]. The body is expanded once
/// per connection type, so it must not name the connection's type.
macro_rules! point_read {
    ($db:expr, |$conn:ident $(, $dialect:ident)?| $body:expr) => {{
        match &$db.pools {
            #[cfg(feature = "sqlite")]
            $crate::db::Pools::Sqlite(pools) => {
                let first: Option<Result<_, $crate::error::RepoError>> =
                    match $crate::db::sqlite::point_checkout(pools).await {
                        Some(mut guard) => {
                            $(use $crate::db::sqlite as $dialect;)?
                            let started = ::std::time::Instant::now();
                            let $conn: &mut $crate::db::sqlite::PointConn = &mut guard;
                            let result: Result<_, $crate::error::RepoError> = async { $body }.await;
                            pools.point_read_took(started.elapsed());
                            match result.map_err($crate::db::classify) {
                                Err(e) if $crate::db::is_busy(&e) => None,
                                other => Some(other),
                            }
                        }
                        None => None,
                    };
                match first {
                    Some(result) => result,
                    None => with_conn!($db, |$conn $(, $dialect)?| $body),
                }
            }
            // A session the server ended a moment ago can pass the checkout
            // (its driver has not read the close yet, and only idle
            // connections are verified): the read is made once more, on
            // another connection.
            #[cfg(feature = "postgres")]
            $crate::db::Pools::Postgres(_) => {
                match with_conn!($db, |$conn $(, $dialect)?| $body) {
                    Err(e) if $crate::db::is_session_ended(&e) => {
                        with_conn!($db, |$conn $(, $dialect)?| $body)
                    }
                    other => other,
                }
            }
            #[cfg(feature = "mysql")]
            $crate::db::Pools::Mysql(_) => with_conn!($db, |$conn $(, $dialect)?| $body),
        }
    }};
}

/// Like [`with_conn!`], for a body that writes (one autocommitted statement,
/// or several that need no transaction): on SQLite it runs on the one writer
/// connection of the process, waiting its turn (FIFO) behind the other writes,
/// within the same call deadline. On PostgreSQL and MySQL it is [`with_conn!`].
macro_rules! write_conn {
    ($db:expr, |$conn:ident $(, $dialect:ident)?| $body:expr) => {
        $crate::db::on_conn!(write, $db, |$conn $(, $dialect)?| $body)
    };
}

/// The body of [`with_conn!`] and [`write_conn!`]: `$role` (`read` or
/// `write`) picks the SQLite pool; the other backends have one pool.
macro_rules! on_conn {
    ($role:ident, $db:expr, |$conn:ident $(, $dialect:ident)?| $body:expr) => {{
        let budget = $db.timeouts.call;
        let deadline = ::tokio::time::Instant::now() + budget;
        let result: Result<_, $crate::error::RepoError> = match &$db.pools {
            #[cfg(feature = "sqlite")]
            $crate::db::Pools::Sqlite(pools) => {
                $(use $crate::db::sqlite as $dialect;)?
                let mut guard = $crate::db::checkout(&pools.$role, deadline, budget).await?;
                // Not cut off at the deadline: see `sqlite_outcome`.
                let outcome = {
                    let $conn: &mut $crate::db::sqlite::Conn = &mut guard;
                    $crate::db::sqlite_outcome(async { $body }.await)
                };
                $crate::db::finish(guard, outcome, budget)
            }
            #[cfg(feature = "postgres")]
            $crate::db::Pools::Postgres(pool) => {
                $(use $crate::db::postgres as $dialect;)?
                let mut guard = $crate::db::checkout(pool, deadline, budget).await?;
                let outcome = {
                    let $conn: &mut $crate::db::postgres::Conn = &mut guard;
                    ::tokio::time::timeout_at(deadline, async { $body }).await
                };
                $crate::db::finish(guard, outcome, budget)
            }
            #[cfg(feature = "mysql")]
            $crate::db::Pools::Mysql(pool) => {
                $(use $crate::db::mysql as $dialect;)?
                let mut guard = $crate::db::checkout(pool, deadline, budget).await?;
                let outcome = {
                    let $conn: &mut $crate::db::mysql::Conn = &mut guard;
                    ::tokio::time::timeout_at(deadline, async { $body }).await
                };
                $crate::db::finish(guard, outcome, budget)
            }
        };
        result.map_err($crate::db::classify)
    }};
}
pub(crate) use on_conn;

/// Like [`write_conn!`], but runs `$body` in a write transaction: `BEGIN
/// IMMEDIATE` on SQLite, on the one writer connection (it takes the database
/// write lock before the first read, so read-check-write cannot interleave
/// with another writer — another process's; this process's writes already
/// queue for the writer connection), a plain transaction on PostgreSQL and
/// MySQL (the body locks what it reads with `dialect::lock_*`, i.e. `SELECT …
/// FOR UPDATE`). Any `Err` rolls the transaction back; so does the call
/// timeout (the connection is closed, which ends the transaction).
macro_rules! write_tx {
    ($db:expr, |$conn:ident $(, $dialect:ident)?| $body:expr) => {{
        let budget = $db.timeouts.call;
        let deadline = ::tokio::time::Instant::now() + budget;
        let result: Result<_, $crate::error::RepoError> = match &$db.pools {
            #[cfg(feature = "sqlite")]
            $crate::db::Pools::Sqlite(pools) => {
                $(use $crate::db::sqlite as $dialect;)?
                let mut guard = $crate::db::checkout(&pools.write, deadline, budget).await?;
                // Not cut off at the deadline: see `sqlite_outcome`.
                let outcome = {
                    let c: &mut $crate::db::sqlite::Conn = &mut guard;
                    $crate::db::sqlite_outcome(
                        c.immediate_transaction(
                            async move |$conn| -> Result<_, $crate::error::RepoError> { $body },
                        )
                        .await,
                    )
                };
                $crate::db::finish(guard, outcome, budget)
            }
            #[cfg(feature = "postgres")]
            $crate::db::Pools::Postgres(pool) => {
                $(use $crate::db::postgres as $dialect;)?
                let mut guard = $crate::db::checkout(pool, deadline, budget).await?;
                let outcome = {
                    let c: &mut $crate::db::postgres::Conn = &mut guard;
                    ::tokio::time::timeout_at(
                        deadline,
                        ::diesel_async::AsyncConnection::transaction(
                            c,
                            async move |$conn| -> Result<_, $crate::error::RepoError> { $body },
                        ),
                    )
                    .await
                };
                $crate::db::finish(guard, outcome, budget)
            }
            #[cfg(feature = "mysql")]
            $crate::db::Pools::Mysql(pool) => {
                $(use $crate::db::mysql as $dialect;)?
                let mut guard = $crate::db::checkout(pool, deadline, budget).await?;
                let outcome = {
                    let c: &mut $crate::db::mysql::Conn = &mut guard;
                    ::tokio::time::timeout_at(
                        deadline,
                        ::diesel_async::AsyncConnection::transaction(
                            c,
                            async move |$conn| -> Result<_, $crate::error::RepoError> { $body },
                        ),
                    )
                    .await
                };
                $crate::db::finish(guard, outcome, budget)
            }
        };
        result.map_err($crate::db::classify)
    }};
}

/// A pooled connection, waited for until `deadline` at most (the pool's own
/// acquire, connect and check timeouts apply inside it).
pub(crate) async fn checkout<M: deadpool::managed::Manager>(
    pool: &deadpool::managed::Pool<M>,
    deadline: tokio::time::Instant,
    budget: Duration,
) -> Result<deadpool::managed::Object<M>, RepoError>
where
    M::Error: fmt::Display,
{
    match tokio::time::timeout_at(deadline, pool.get()).await {
        Ok(Ok(object)) => Ok(object),
        Ok(Err(e)) => Err(pool_error(e)),
        Err(_) => Err(RepoError::Unavailable(format!(
            "no database connection within {} ms",
            budget.as_millis()
        ))),
    }
}

/// The outcome of a SQLite call body, which is never cancelled at the call
/// deadline: its statements run on a blocking thread that cancelling cannot
/// stop, and diesel-async's wrapper waits for that thread when its future is
/// dropped early (`tokio::task::block_in_place`), which panics on the
/// current-thread runtimes actix runs on (the engine's loops died of it when
/// another process held the write lock past `DATABASE_CALL_TIMEOUT`). Each
/// SQLite statement is bounded instead by the busy timeout
/// (`DATABASE_STATEMENT_TIMEOUT`), and getting the connection by the deadline.
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite_outcome<T>(
    result: Result<T, RepoError>,
) -> Result<Result<T, RepoError>, tokio::time::error::Elapsed> {
    Ok(result)
}

/// The end of a bounded call: its result, or — when the deadline passed —
/// [`RepoError::Unavailable`], with the connection closed instead of returned
/// to the pool (it may hold an open transaction or an unanswered query).
pub(crate) fn finish<M: deadpool::managed::Manager, T>(
    guard: deadpool::managed::Object<M>,
    outcome: Result<Result<T, RepoError>, tokio::time::error::Elapsed>,
    budget: Duration,
) -> Result<T, RepoError> {
    match outcome {
        Ok(Err(e)) if is_session_ended(&e) => {
            // Its session is gone: open another rather than lend this one again.
            drop(deadpool::managed::Object::take(guard));
            Err(e)
        }
        Ok(result) => result,
        Err(_) => {
            drop(deadpool::managed::Object::take(guard));
            Err(RepoError::Unavailable(format!(
                "no answer from the database within {} ms",
                budget.as_millis()
            )))
        }
    }
}

mod callbacks;
mod events;
#[cfg(feature = "testing")]
pub(crate) mod explain;
mod import;
#[cfg(feature = "mysql")]
pub(crate) mod mysql;
mod notify;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
mod retention;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
mod tasks;

/// A snapshot of a connection pool ([`Database::pool_status`],
/// [`Database::writer_pool_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Configured maximum.
    pub max: usize,
    /// Connections open (idle or in use).
    pub open: usize,
    /// Open connections waiting to be used.
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

impl PoolStatus {
    fn of(status: deadpool::Status) -> PoolStatus {
        PoolStatus {
            max: status.max_size,
            open: status.size,
            idle: status.available,
            waiting: status.waiting,
        }
    }
}

/// Which database a [`Database`] talks to, chosen from the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `sqlite://relative/path.db` or `sqlite:///absolute/path.db`.
    Sqlite,
    /// `postgres://…` or `postgresql://…`.
    Postgres,
    /// `mysql://…` (MySQL 8.0.1+ or MariaDB 10.6+), also spelled `mariadb://`
    /// or SQLAlchemy's `mysql+aiomysql://…?charset=utf8mb4`.
    Mysql,
}

impl Backend {
    /// Checks a database URL without connecting: the backend it names, or why
    /// [`Database::connect`] would refuse it ([`RepoError::UnsupportedUrl`]:
    /// an unknown scheme, a SQLite path it cannot take, a MySQL URL without a
    /// database or with an unknown parameter, a backend compiled out). Pure;
    /// for `config check` and startup validation.
    ///
    /// # Errors
    /// [`RepoError::UnsupportedUrl`], naming the problem (never the password).
    pub fn parse_url(url: &str) -> Result<Backend, RepoError> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            #[cfg(feature = "sqlite")]
            {
                sqlite::parse_path(rest)?;
                return Ok(Backend::Sqlite);
            }
            #[cfg(not(feature = "sqlite"))]
            {
                let _ = rest;
                return Err(RepoError::UnsupportedUrl(
                    "this build has no SQLite support (feature `sqlite`)".into(),
                ));
            }
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backend::Postgres);
        }
        if is_mysql_url(url) {
            #[cfg(feature = "mysql")]
            {
                mysql::normalize_url(url)?;
                return Ok(Backend::Mysql);
            }
            #[cfg(not(feature = "mysql"))]
            {
                return Err(RepoError::UnsupportedUrl(
                    "this build has no MySQL support (feature `mysql`)".into(),
                ));
            }
        }
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        Err(RepoError::UnsupportedUrl(format!(
            "scheme `{}` is not one of sqlite://, postgres://, postgresql://, mysql:// \
             (also mysql+aiomysql://, mysql+pymysql://, mariadb://)",
            scheme.chars().take(32).collect::<String>()
        )))
    }

    /// Lowercase name for logs and metrics: `sqlite`, `postgres`, `mysql`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Default [`PoolOptions::max_connections`]: 10 connections, enough for the HTTP
/// handlers plus the task and callback workers of one replica.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10;
/// Default [`PoolOptions::acquire_timeout`]: 5 s waiting for a free pooled
/// connection before a call fails with [`RepoError::Unavailable`].
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`PoolOptions::connect_timeout`]: 2 s to open one new connection
/// (TCP + authentication on PostgreSQL and MySQL, opening the file on SQLite)
/// or to check a pooled one before use. A healthy database on a LAN answers in
/// milliseconds; a hung one should cost a request little.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`PoolOptions::statement_timeout`]: 3 s. Every statement of this
/// service is a keyed read or write of a few rows (claims and purges work in
/// bounded batches), normally done in milliseconds.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default [`PoolOptions::call_timeout`]: 5 s, above the statement timeout so
/// that the server's own, clearer error usually arrives first.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection pool settings. `Default` gives the documented defaults
/// ([`DEFAULT_MAX_CONNECTIONS`], [`DEFAULT_ACQUIRE_TIMEOUT`],
/// [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_STATEMENT_TIMEOUT`],
/// [`DEFAULT_CALL_TIMEOUT`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most connections open at once (default 10; 0 is treated as 1). On
    /// SQLite these are the readers; the one writer connection comes on top.
    pub max_connections: usize,
    /// Longest wait for a free connection (default 5 s); then
    /// [`RepoError::Unavailable`]. On SQLite, a write waits for the writer
    /// connection in turn (FIFO) until `call_timeout` instead: waiting is how
    /// writes take turns there.
    pub acquire_timeout: Duration,
    /// Longest time to open a new connection, or to check a pooled one
    /// (default 2 s); then [`RepoError::Unavailable`].
    pub connect_timeout: Duration,
    /// Server-side limit of one statement and of one lock wait (default 3 s):
    /// PostgreSQL `statement_timeout` and `lock_timeout` on every pooled
    /// connection, SQLite's busy timeout. A statement cut off by it fails with
    /// [`RepoError::Unavailable`]. Migrations run without it.
    pub statement_timeout: Duration,
    /// Client-side backstop (default 5 s): one repository call, getting its
    /// connection included, ends after this at the latest, with
    /// [`RepoError::Unavailable`]. It covers what the server cannot: a
    /// database that accepted the connection and then stopped answering.
    pub call_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// The per-call bounds a [`Database`] applies (from [`PoolOptions`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// [`PoolOptions::call_timeout`].
    pub(crate) call: Duration,
}

/// The pool of one backend (on SQLite, its readers and its one writer).
#[derive(Clone)]
pub(crate) enum Pools {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::Pools),
    #[cfg(feature = "postgres")]
    Postgres(postgres::Pool),
    #[cfg(feature = "mysql")]
    Mysql(diesel_async::pooled_connection::deadpool::Pool<mysql::Conn>),
}

/// The database: a connection pool to SQLite, PostgreSQL or MySQL implementing
/// [`crate::TaskRepository`], [`crate::ImageRepository`] and
/// [`crate::CallbackOutbox`]. Cloning is cheap (the pool is shared).
#[derive(Clone)]
pub struct Database {
    pub(crate) pools: Pools,
    /// Where the migrations connect: the SQLite file path, or the PostgreSQL URL
    /// (empty for MySQL, whose migrations take a pooled connection).
    target: String,
    pub(crate) timeouts: Timeouts,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A server URL may carry a password: only the backend is printed.
        f.debug_struct("Database")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connects to the database named by `url` and checks that one connection
    /// can be opened (and, on MySQL, that the server is recent enough).
    ///
    /// Accepted URLs:
    /// - `sqlite://data/modelgen.db` (relative to the current directory),
    ///   `sqlite:///abs/path.db` (parent directories are created; every SQLite
    ///   connection runs with WAL, the statement timeout as busy timeout and
    ///   foreign keys on; `max_connections` read-only connections serve the
    ///   reads, and one more, the writer, every write of the process);
    /// - `postgres://user:pass@host:port/db` and `postgresql://…` (no TLS);
    /// - `mysql://user:pass@host:port/db` (no TLS), also `mariadb://…` and
    ///   SQLAlchemy's `mysql+aiomysql://…` as the earlier service wrote it; a
    ///   `charset=utf8mb4` parameter is accepted and dropped (the connection is
    ///   always utf8mb4), other parameters are the driver's (mysql_async). The
    ///   server must be MySQL 8.0.1+ or MariaDB 10.6+ (`SKIP LOCKED`).
    ///
    /// # Errors
    /// [`RepoError::UnsupportedUrl`] for any other scheme, an in-memory SQLite
    /// URL, query parameters on a SQLite URL, a MySQL URL without a database
    /// or with an unknown parameter, or a backend compiled out;
    /// [`RepoError::UnsupportedServer`] for a MySQL/MariaDB server without
    /// `SKIP LOCKED`, naming the version found;
    /// [`RepoError::Unavailable`] when no connection can be opened within
    /// `options.connect_timeout`.
    pub async fn connect(url: &str, options: PoolOptions) -> Result<Database, RepoError> {
        let db = Self::connect_lazy(url, options)?;
        db.ping_pool().await?;
        #[cfg(feature = "mysql")]
        if let Pools::Mysql(pool) = &db.pools {
            let version = mysql::check_server(pool).await?;
            tracing::debug!(db.server = %version, "database server version accepted");
        }
        Ok(db)
    }

    /// Builds the pool without opening a connection yet (the first call opens
    /// one). Same URL rules and errors as [`Database::connect`], minus the
    /// connection and server version checks; SQLite parent directories are
    /// still created.
    pub fn connect_lazy(url: &str, options: PoolOptions) -> Result<Database, RepoError> {
        Self::connect_lazy_with(url, options, String::new())
    }

    /// [`Database::connect_lazy`], with `mysql_prelude` run on every new MySQL
    /// connection before the session setup (tests use it to start sessions in
    /// a foreign time zone, as a server configured so would).
    pub(crate) fn connect_lazy_with(
        url: &str,
        options: PoolOptions,
        mysql_prelude: String,
    ) -> Result<Database, RepoError> {
        let options = PoolOptions {
            max_connections: options.max_connections.max(1),
            ..options
        };
        let timeouts = Timeouts {
            call: options.call_timeout,
        };
        if let Some(rest) = url.strip_prefix("sqlite:") {
            #[cfg(feature = "sqlite")]
            {
                let path = sqlite::parse_path(rest)?;
                sqlite::prepare_path(&path)?;
                let target = path.to_string_lossy().into_owned();
                let pools = sqlite::build_pools(&target, &options)?;
                return Ok(Database {
                    pools: Pools::Sqlite(pools),
                    target,
                    timeouts,
                });
            }
            #[cfg(not(feature = "sqlite"))]
            {
                let _ = rest;
                return Err(RepoError::UnsupportedUrl(
                    "this build has no SQLite support (feature `sqlite`)".into(),
                ));
            }
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            {
                let pool = postgres::build_pool(url, &options)?;
                return Ok(Database {
                    pools: Pools::Postgres(pool),
                    target: url.to_owned(),
                    timeouts,
                });
            }
            #[cfg(not(feature = "postgres"))]
            {
                return Err(RepoError::UnsupportedUrl(
                    "this build has no PostgreSQL support (feature `postgres`)".into(),
                ));
            }
        }
        if is_mysql_url(url) {
            #[cfg(feature = "mysql")]
            {
                let normalized = mysql::normalize_url(url)?;
                let pool = mysql::build_pool(&normalized, &options, mysql_prelude)?;
                return Ok(Database {
                    pools: Pools::Mysql(pool),
                    target: String::new(),
                    timeouts,
                });
            }
            #[cfg(not(feature = "mysql"))]
            {
                let _ = mysql_prelude;
                return Err(RepoError::UnsupportedUrl(
                    "this build has no MySQL support (feature `mysql`)".into(),
                ));
            }
        }
        let _ = mysql_prelude;
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        Err(RepoError::UnsupportedUrl(format!(
            "scheme `{}` is not one of sqlite://, postgres://, postgresql://, mysql:// \
             (also mysql+aiomysql://, mysql+pymysql://, mariadb://)",
            scheme.chars().take(32).collect::<String>()
        )))
    }

    /// Which backend this database is.
    pub fn backend(&self) -> Backend {
        match &self.pools {
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Pools::Postgres(_) => Backend::Postgres,
            #[cfg(feature = "mysql")]
            Pools::Mysql(_) => Backend::Mysql,
        }
    }

    /// Applies every pending embedded migration of this backend
    /// (`migrations/<backend>/`) and returns the versions applied, oldest first
    /// (empty when the schema is current). Safe to run concurrently from several
    /// replicas (PostgreSQL: an advisory lock; MySQL: a `GET_LOCK` named lock;
    /// SQLite: an immediate transaction).
    ///
    /// # Errors
    /// [`RepoError::Unavailable`] when no connection can be opened,
    /// [`RepoError::Migration`] when a migration fails (rolled back on SQLite
    /// and PostgreSQL; MySQL cannot roll back DDL, so the statements of the
    /// failed migration before the failing one stay applied).
    pub async fn migrate(&self) -> Result<Vec<String>, RepoError> {
        match &self.pools {
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(_) => sqlite::migrate(self.target.clone()).await,
            #[cfg(feature = "postgres")]
            Pools::Postgres(pool) => postgres::migrate(pool).await,
            #[cfg(feature = "mysql")]
            Pools::Mysql(pool) => mysql::migrate(pool).await,
        }
    }

    /// Versions of the embedded migrations not yet applied (empty when the
    /// schema is current), for readiness checks.
    ///
    /// # Errors
    /// As [`Database::migrate`].
    pub async fn pending_migrations(&self) -> Result<Vec<String>, RepoError> {
        // A readiness probe: bounded like any other call (the blocking work
        // may go on in the background; its connection is dropped after).
        let budget = self.timeouts.call;
        let pending = async {
            match &self.pools {
                #[cfg(feature = "sqlite")]
                Pools::Sqlite(_) => sqlite::pending(self.target.clone()).await,
                #[cfg(feature = "postgres")]
                Pools::Postgres(pool) => postgres::pending(pool).await,
                #[cfg(feature = "mysql")]
                Pools::Mysql(pool) => mysql::pending(pool).await,
            }
        };
        tokio::time::timeout(budget, pending).await.map_err(|_| {
            RepoError::Unavailable(format!(
                "no answer from the database within {} ms",
                budget.as_millis()
            ))
        })?
    }

    /// Connections of the pool right now, for metrics: on SQLite the readers
    /// ([`PoolOptions::max_connections`] of them at most), see
    /// [`Database::writer_pool_status`] for the writer.
    pub fn pool_status(&self) -> PoolStatus {
        match &self.pools {
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(pools) => PoolStatus::of(pools.read.status()),
            #[cfg(feature = "postgres")]
            Pools::Postgres(pool) => PoolStatus::of(pool.status()),
            #[cfg(feature = "mysql")]
            Pools::Mysql(pool) => PoolStatus::of(pool.status()),
        }
    }

    /// The SQLite writer right now (`max` 1; `waiting`: writes queued for
    /// it), for metrics. `None` on PostgreSQL and MySQL, whose writes share
    /// the one pool of [`Database::pool_status`].
    pub fn writer_pool_status(&self) -> Option<PoolStatus> {
        match &self.pools {
            #[cfg(feature = "sqlite")]
            Pools::Sqlite(pools) => Some(PoolStatus::of(pools.write.status())),
            #[cfg(feature = "postgres")]
            Pools::Postgres(_) => None,
            #[cfg(feature = "mysql")]
            Pools::Mysql(_) => None,
        }
    }

    /// Non-terminal tasks per status (`submitted`, `processing`), for the
    /// in-flight gauge.
    ///
    /// # Errors
    /// Database errors.
    pub async fn count_active_tasks(
        &self,
    ) -> Result<Vec<(modelgen_domain::TaskStatus, i64)>, RepoError> {
        use crate::schema::ai_generation_task as t;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let rows: Vec<(String, i64)> = with_conn!(self, |conn| {
            Ok(t::table
                .filter(t::status.eq_any(["submitted", "processing"]))
                .group_by(t::status)
                .select((t::status, diesel::dsl::count_star()))
                .load::<(String, i64)>(conn)
                .await?)
        })?;
        rows.into_iter()
            .map(|(status, n)| {
                status
                    .parse()
                    .map(|s| (s, n))
                    .map_err(|e: modelgen_domain::ParseEnumError| RepoError::Corrupt {
                        id: "status".into(),
                        reason: e.to_string(),
                    })
            })
            .collect()
    }

    /// The value of `expression` on one pooled MySQL connection, as text (for
    /// `testing::mysql_session_value`).
    #[cfg(feature = "testing")]
    pub(crate) async fn mysql_session_value(&self, expression: &str) -> Result<String, RepoError> {
        #[cfg(feature = "mysql")]
        if let Pools::Mysql(pool) = &self.pools {
            use diesel::sql_types::Text;
            use diesel_async::RunQueryDsl;
            let mut conn = pool.get().await.map_err(pool_error)?;
            return diesel::select(diesel::dsl::sql::<Text>(&format!(
                "CAST({expression} AS CHAR)"
            )))
            .get_result::<String>(&mut *conn)
            .await
            .map_err(|e| classify(e.into()));
        }
        let _ = expression;
        Err(RepoError::UnsupportedUrl(
            "mysql_session_value needs a MySQL database".into(),
        ))
    }

    /// Runs `SELECT 1` on a pooled connection.
    async fn ping_pool(&self) -> Result<(), RepoError> {
        use diesel::IntoSql;
        use diesel::sql_types::Integer;
        use diesel_async::RunQueryDsl;
        with_conn!(self, |conn| {
            diesel::select(1_i32.into_sql::<Integer>())
                .get_result::<i32>(conn)
                .await?;
            Ok(())
        })
    }
}

/// Whether `url` is a MySQL URL in one of the accepted spellings (decided
/// even when the `mysql` feature is off, to name the missing feature).
pub(crate) fn is_mysql_url(url: &str) -> bool {
    let Some((scheme, _)) = url.split_once("://") else {
        return false;
    };
    let scheme = scheme.to_ascii_lowercase();
    let (dialect, driver) = scheme.split_once('+').unwrap_or((scheme.as_str(), "_"));
    (dialect == "mysql" || dialect == "mariadb")
        && !driver.is_empty()
        && driver
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Maps a pool failure (timeout waiting, connection refused, setup failed) to
/// [`RepoError::Unavailable`].
pub(crate) fn pool_error(e: impl fmt::Display) -> RepoError {
    RepoError::Unavailable(e.to_string())
}

/// Gives database errors the variant a caller can act on: unique violations
/// become [`RepoError::Conflict`], lost connections and SQLite lock timeouts
/// [`RepoError::Unavailable`]. Never produces [`RepoError::NotFound`].
pub(crate) fn classify(e: RepoError) -> RepoError {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        RepoError::Query(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info)) => {
            RepoError::Conflict(info.message().to_owned())
        }
        // `UnableToSendCommand`: the socket is gone (PostgreSQL), or the
        // blocking thread of a SQLite call could not run.
        RepoError::Query(Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            info,
        )) => RepoError::Unavailable(info.message().to_owned()),
        RepoError::Query(Error::DatabaseError(kind, info))
            if matches!(kind, DatabaseErrorKind::Unknown)
                && (is_sqlite_busy(info.message())
                    || is_server_timeout(info.message())
                    || is_pg_session_ended(info.message())
                    || is_mysql_transient(info.message())) =>
        {
            RepoError::Unavailable(info.message().to_owned())
        }
        RepoError::Query(Error::BrokenTransactionManager) => {
            RepoError::Unavailable("connection left in a broken transaction state".into())
        }
        other => other,
    }
}

/// Whether `e` (after [`classify`]) is SQLite's "database is locked" (or
/// "locking protocol"): a point read that met a lock and is made again where
/// waiting is allowed.
#[cfg(feature = "sqlite")]
pub(crate) fn is_busy(e: &RepoError) -> bool {
    matches!(e, RepoError::Unavailable(message) if is_sqlite_busy(message))
}

/// SQLite's messages for `SQLITE_BUSY`/`SQLITE_LOCKED` after the busy
/// timeout, and for `SQLITE_PROTOCOL` ("locking protocol"): what a WAL read
/// answers after about 10 s of retrying for a read lock that another process
/// holds (its WAL recovery), whatever the busy timeout. All three are a
/// database that is there but busy: 503, retried.
fn is_sqlite_busy(message: &str) -> bool {
    message.contains("database is locked")
        || message.contains("database table is locked")
        || message.contains("locking protocol")
}

/// PostgreSQL's messages for a statement cut off by `statement_timeout`
/// (SQLSTATE 57014) or `lock_timeout` (55P03). diesel does not expose the
/// SQLSTATE, so the (English, the server default) message is matched; a
/// server with translated messages still gets its 503 from the call timeout.
fn is_server_timeout(message: &str) -> bool {
    message.starts_with("canceling statement due to statement timeout")
        || message.starts_with("canceling statement due to lock timeout")
}

/// PostgreSQL ended the session (SQLSTATE class 57, operator intervention):
/// `pg_terminate_backend`, a shutdown or restart ("terminating connection due
/// to administrator command"), a crash of another server process, an idle
/// timeout, or a server not accepting sessions ("the database system is
/// shutting down" / "starting up"). By the server's (English) message, as for
/// the timeouts: the connection is gone and the statement did not run, so the
/// call is [`RepoError::Unavailable`] (503), and a point read is made once more
/// on another connection ([`point_read!`]).
fn is_pg_session_ended(message: &str) -> bool {
    message.starts_with("terminating connection") || message.starts_with("the database system is")
}

/// Whether `e` (before or after [`classify`]) says the connection's session is
/// gone: closed, or ended by a PostgreSQL server ([`is_pg_session_ended`]).
/// Such a connection is not put back into the pool ([`finish`]).
pub(crate) fn is_session_ended(e: &RepoError) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        RepoError::Query(Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )) => true,
        RepoError::Query(Error::DatabaseError(_, info)) => is_pg_session_ended(info.message()),
        RepoError::Unavailable(message) => is_pg_session_ended(message),
        _ => false,
    }
}

/// MySQL/MariaDB failures worth retrying, by message: diesel-async keeps the
/// server's message but not its error number. Deadlock (1213) and lock wait
/// timeout (1205) roll back (part of) the transaction and say "try restarting
/// transaction"; a statement cut off by MariaDB's `max_statement_time` (1969)
/// or MySQL's `max_execution_time` (3024) says "Query execution was
/// interrupted"; a lost connection shows as the driver's I/O or "connection
/// closed" error, or as server errors 2006/2013 ("server has gone away", "Lost
/// connection").
fn is_mysql_transient(message: &str) -> bool {
    [
        "try restarting transaction",
        "Query execution was interrupted",
        "Input/output error",
        "Connection to the server is closed",
        "server has gone away",
        "Lost connection to",
    ]
    .iter()
    .any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_postgres_ended_is_unavailable_and_not_lent_again() {
        struct Info(&'static str);
        impl diesel::result::DatabaseErrorInformation for Info {
            fn message(&self) -> &str {
                self.0
            }
            fn details(&self) -> Option<&str> {
                None
            }
            fn hint(&self) -> Option<&str> {
                None
            }
            fn table_name(&self) -> Option<&str> {
                None
            }
            fn column_name(&self) -> Option<&str> {
                None
            }
            fn constraint_name(&self) -> Option<&str> {
                None
            }
            fn statement_position(&self) -> Option<i32> {
                None
            }
        }
        let server = |message: &'static str| {
            RepoError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::Unknown,
                Box::new(Info(message)),
            ))
        };
        for message in [
            "terminating connection due to administrator command",
            "terminating connection due to idle-session timeout",
            "terminating connection because of crash of another server process",
            "the database system is shutting down",
        ] {
            assert!(is_session_ended(&server(message)), "{message}");
            let classified = classify(server(message));
            assert!(
                matches!(&classified, RepoError::Unavailable(m) if m == message),
                "{classified:?}"
            );
            assert!(is_session_ended(&classified), "{message}");
        }
        // Other failures keep their connection and their kind.
        for message in [
            "syntax error at or near \"x\"",
            "relation \"t\" does not exist",
        ] {
            assert!(!is_session_ended(&server(message)), "{message}");
            assert!(matches!(classify(server(message)), RepoError::Query(_)));
        }
        let timeout = classify(server("canceling statement due to statement timeout"));
        assert!(matches!(timeout, RepoError::Unavailable(_)));
        assert!(!is_session_ended(&timeout));
    }

    #[test]
    fn an_unknown_scheme_lists_every_accepted_mysql_spelling() {
        let parsed = Backend::parse_url("redis://h/0").unwrap_err().to_string();
        let lazy = Database::connect_lazy("redis://h/0", PoolOptions::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        for message in [parsed, lazy] {
            assert!(
                message.contains("mysql+aiomysql://") && message.contains("mysql+pymysql://"),
                "{message}"
            );
        }
    }
}
