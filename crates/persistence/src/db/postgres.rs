//! PostgreSQL specifics: connection pool, migrations, and the row locking used
//! by claims (`FOR UPDATE SKIP LOCKED`) and updates (`FOR UPDATE`).

use chrono::NaiveDateTime;
use deadpool::managed::{Metrics, Object, RecycleError, RecycleResult};
use diesel::prelude::*;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError, PoolableConnection, RecyclingMethod,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::PoolOptions;
pub(crate) use super::native_update_returning_all as update_returning_all;
pub(crate) use super::native_update_returning_one as update_returning_one;
use crate::error::RepoError;
use crate::rows::{CallbackRow, TaskRow};
use crate::schema::{ai_generation_task as t, callback_delivery as c};

/// The pooled connection type (tokio-postgres underneath, no libpq).
pub(crate) type Conn = AsyncPgConnection;

/// The PostgreSQL migrations, embedded at build time from `migrations/postgres/`.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Key of the session advisory lock held while migrating, so that replicas
/// starting together apply each migration once (ASCII "modelgen").
const MIGRATION_LOCK_KEY: i64 = 0x6d6f_6465_6c67_656e;

/// Session settings of every pooled connection: `statement_timeout` and
/// `lock_timeout` in milliseconds (0 would mean "no limit", so at least 1).
fn session_settings(statement_timeout: std::time::Duration) -> String {
    let ms = statement_timeout.as_millis().max(1);
    format!("SET statement_timeout = {ms}; SET lock_timeout = {ms};")
}

/// Opens one pooled connection and applies [`session_settings`].
fn setup_connection(
    url: &str,
    settings: String,
) -> futures_util::future::BoxFuture<'_, diesel::ConnectionResult<Conn>> {
    Box::pin(async move {
        use diesel_async::{AsyncConnection, SimpleAsyncConnection};
        let mut conn = Conn::establish(url).await?;
        conn.batch_execute(&settings)
            .await
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    })
}

/// A pooled connection last checked out longer ago than this is verified with
/// a round trip (`SELECT 1`) when it is checked out again; one checked out
/// more recently is only checked locally ([`Manager`]). Below the idle
/// timeouts of connection reapers and NAT tables, far above the gap between
/// two checkouts of a busy pool. deadpool counts from the last checkout, not
/// the last return, so a connection held for a long call is verified after
/// it: one round trip more, harmless.
pub(crate) const VERIFY_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// The pool's connection manager: diesel-async's, with a checkout that costs
/// a round trip only for a connection idle for [`VERIFY_AFTER_IDLE`] or more.
///
/// A connection the server closed (a restart, `pg_terminate_backend`, an idle
/// reaper) is seen without a round trip: tokio-postgres' connection task reads
/// the end of the socket, and diesel-async's `is_broken` then reports it
/// (as it does for a connection left inside a broken transaction), so the
/// pool replaces it. What only a round trip can find is a socket that went
/// silent without closing (a dropped network path, a NAT entry that expired),
/// which is what idle connections meet. Verifying every checkout
/// (`RecyclingMethod::Verified`) made each `GET /tasks/{id}` two round trips
/// instead of one (docs/design.md, "PostgreSQL connections").
pub(crate) struct Manager {
    /// Creates connections (with [`session_settings`]) and verifies idle ones.
    inner: AsyncDieselConnectionManager<Conn>,
}

impl deadpool::managed::Manager for Manager {
    type Type = Conn;
    type Error = PoolError;

    async fn create(&self) -> Result<Conn, PoolError> {
        self.inner.create().await
    }

    async fn recycle(&self, conn: &mut Conn, metrics: &Metrics) -> RecycleResult<PoolError> {
        if metrics.last_used() >= VERIFY_AFTER_IDLE {
            return self.inner.recycle(conn, metrics).await;
        }
        if conn.is_broken() {
            return Err(RecycleError::message(
                "connection closed or in a broken transaction",
            ));
        }
        Ok(())
    }
}

/// The PostgreSQL connection pool.
pub(crate) type Pool = deadpool::managed::Pool<Manager>;

/// A deadpool of PostgreSQL connections to `url`.
pub(crate) fn build_pool(url: &str, options: &PoolOptions) -> Result<Pool, RepoError> {
    let mut config = ManagerConfig::<Conn>::default();
    let settings = session_settings(options.statement_timeout);
    config.custom_setup = Box::new(move |url| setup_connection(url, settings.clone()));
    // How [`Manager`] verifies a connection that has been idle.
    config.recycling_method = RecyclingMethod::Verified;
    let manager = Manager {
        inner: AsyncDieselConnectionManager::<Conn>::new_with_config(url, config),
    };
    Pool::builder(manager)
        .max_size(options.max_connections)
        .wait_timeout(Some(options.acquire_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| RepoError::Unavailable(e.to_string()))
}

/// Takes a connection out of the pool (the harness needs it by value; the pool
/// opens a new one later) and runs `work` on it through diesel's blocking
/// migration API on a blocking thread.
async fn with_harness<R: Send + 'static>(
    pool: &Pool,
    work: impl FnOnce(&mut AsyncConnectionWrapper<Conn>) -> Result<R, RepoError> + Send + 'static,
) -> Result<R, RepoError> {
    let conn = Object::take(pool.get().await.map_err(super::pool_error)?);
    tokio::task::spawn_blocking(move || {
        let mut wrapper = AsyncConnectionWrapper::<Conn>::from(conn);
        work(&mut wrapper)
    })
    .await
    .map_err(|e| RepoError::Migration(format!("migration task failed: {e}")))?
}

/// Applies pending migrations under a session advisory lock.
pub(crate) async fn migrate(pool: &Pool) -> Result<Vec<String>, RepoError> {
    with_harness(pool, |conn| {
        use diesel::connection::SimpleConnection;
        // A migration may rewrite a large table, and waits for a replica that
        // is migrating: the request-path statement limits do not apply.
        conn.batch_execute("SET statement_timeout = 0; SET lock_timeout = 0;")?;
        conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))?;
        let result = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| RepoError::Migration(e.to_string()));
        // The lock also ends with the session (the connection is dropped next);
        // unlocking explicitly just releases it sooner.
        let _unlocked =
            conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"));
        result
    })
    .await
}

/// Versions of embedded migrations not applied yet.
pub(crate) async fn pending(pool: &Pool) -> Result<Vec<String>, RepoError> {
    with_harness(pool, |conn| {
        let pending = conn
            .pending_migrations(MIGRATIONS)
            .map_err(|e| RepoError::Migration(e.to_string()))?;
        Ok(pending
            .iter()
            .map(|m| m.name().version().to_string())
            .collect())
    })
    .await
}

/// `SELECT … FOR UPDATE`: locks the task row until the caller's transaction ends.
pub(crate) async fn lock_task(conn: &mut Conn, id: &str) -> QueryResult<Option<TaskRow>> {
    t::table
        .find(id)
        .select(TaskRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// `SELECT … FOR UPDATE` on an outbox row.
pub(crate) async fn lock_callback(
    conn: &mut Conn,
    event_id: &str,
) -> QueryResult<Option<CallbackRow>> {
    c::table
        .find(event_id)
        .select(CallbackRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// A claim lane's query with `FOR UPDATE SKIP LOCKED`: concurrent claimers
/// take disjoint rows.
macro_rules! pg_claim_lock {
    ($query:expr) => {
        $query.for_update().skip_locked()
    };
}
pub(crate) use pg_claim_lock as claim_lock;

/// The lines of `EXPLAIN $query` on `$conn`, joined (tests and the claim
/// benchmark).
#[cfg(feature = "testing")]
macro_rules! pg_explain {
    ($conn:expr, $query:expr) => {{
        let rows: Vec<String> =
            $crate::db::explain::Explain::<_, ::diesel::sql_types::Text>::new("EXPLAIN ", $query)
                .load(&mut *$conn)
                .await?;
        rows.join("\n")
    }};
}
#[cfg(feature = "testing")]
pub(crate) use pg_explain as explain;

/// The poll lane's order here ([`crate::db::due_polls!`]): PostgreSQL does not take `queue_rank IS NULL` as fixing the rank: the
/// order names it, or the planner sorts.
pub(crate) use crate::db::queue_order as poll_order;

/// The UTC day of `completed_at` as `YYYY-MM-DD` (usage by day).
pub(crate) const DAY_OF_COMPLETION: &str = "to_char(completed_at, 'YYYY-MM-DD')";
/// The sum of `cost_micros` of a group as a `BIGINT` (PostgreSQL's `SUM(bigint)` is `numeric`: cast back).
pub(crate) const COST_SUM: &str = "CAST(SUM(cost_micros) AS BIGINT)";

/// The rank a new (or retried) task of `user_id` joins the queue at
/// ([`crate::db::next_queue_rank!`]); call inside a write transaction.
pub(crate) async fn next_queue_rank(conn: &mut Conn, user_id: &str) -> QueryResult<i64> {
    crate::db::next_queue_rank!(conn, user_id)
}

/// Announces a created task to the workers of every process sharing the
/// database (`NOTIFY modelgen_tasks`, db/notify.rs), inside the caller's
/// transaction: PostgreSQL delivers it when that commits, never for a create
/// that rolls back, and it costs no second connection.
pub(crate) async fn announce_task_created(conn: &mut Conn) -> QueryResult<()> {
    diesel::sql_query(format!("NOTIFY {}", crate::db::notify::TASKS_CHANNEL))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Ids of up to `limit` tasks due for input deletion, longest ended first; locked with
/// `FOR UPDATE SKIP LOCKED` so that concurrent cleanups take disjoint rows.
pub(crate) async fn due_purge_ids(
    conn: &mut Conn,
    now: NaiveDateTime,
    ended_before: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<String>> {
    due_purges!(now, ended_before)
        .select(t::task_id)
        .order((t::completed_at.asc(), t::task_id.asc()))
        .limit(limit)
        .for_update()
        .skip_locked()
        .load(conn)
        .await
}

/// Ids of up to `limit` claimable outbox rows, locked like the task claim (`claim_lock!`).
pub(crate) async fn due_callback_ids(
    conn: &mut Conn,
    now: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<String>> {
    due_callbacks!(now)
        .select(c::event_id)
        .order((c::next_attempt_at.asc(), c::event_id.asc()))
        .limit(limit)
        .for_update()
        .skip_locked()
        .load(conn)
        .await
}
