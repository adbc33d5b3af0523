//! SQLite specifics: URL parsing, connection setup, migrations, and the row
//! locking used by claims and updates.
//!
//! SQLite has no row locks. Every read-check-write runs in a `BEGIN IMMEDIATE`
//! transaction (see `write_tx!`), which takes the database's single write lock
//! before its first read; the `lock_*` functions here are therefore plain reads.
//!
//! SQLite has one write lock per file, and a connection that finds it taken
//! sleeps and polls in its busy handler (unfair, and "database is locked" once
//! the busy timeout is spent). So the process writes through ONE connection
//! ([`Pools::write`]): its writes queue for it in order, in the pool's FIFO
//! semaphore, bounded by the call timeout; reads use the other connections
//! ([`Pools::read`]), which WAL lets run beside the writer and which refuse
//! writes (`PRAGMA query_only`), so a write sent to a reader by mistake fails
//! at once instead of contending for the lock. The busy timeout stays, against
//! other processes on the same file (the CLI, a second replica).
//!
//! Each statement on those connections is a round trip to one of tokio's
//! blocking threads (diesel-async's `SyncConnectionWrapper`): a thread
//! hand-off that costs more than a primary-key read itself. So short reads
//! (a task by id) use a third pool, [`Pools::point`], whose connections run
//! their statements on the caller's thread ([`Inline`]) and never wait for a
//! lock (`busy_timeout = 0`): when one would have to wait, the read is made
//! again on the ordinary readers (`point_read!`). And the create's insert
//! runs as one blocking closure ([`write_blocking`]), one hand-off for its
//! whole transaction instead of one per statement. docs/design.md, "SQLite
//! connections", has the measurements.

use std::path::PathBuf;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel::{ConnectionError, ConnectionResult, connection::SimpleConnection};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncConnectionWrapper};
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::future::BoxFuture;

use super::PoolOptions;
pub(crate) use super::native_update_returning_all as update_returning_all;
pub(crate) use super::native_update_returning_one as update_returning_one;
use crate::error::RepoError;
use crate::rows::{CallbackRow, TaskRow};
use crate::schema::{ai_generation_task as t, callback_delivery as c};

/// The pooled connection type: diesel's blocking SQLite connection, run on
/// tokio's blocking threads.
pub(crate) type Conn = SyncConnectionWrapper<SqliteConnection>;

/// A point-read connection: the same blocking connection, whose statements
/// run on the calling thread ([`Inline`]) instead of a blocking thread.
pub(crate) type PointConn = SyncConnectionWrapper<SqliteConnection, Inline>;

/// Runs a connection's work at once, on the thread that asks, and hands back
/// a finished future: for statements short enough that the hand-off to a
/// blocking thread would cost more than they do. The connection never waits
/// for a lock (see [`Role::Point`]), so the work is bounded by the read
/// itself.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Inline;

impl SpawnBlocking for Inline {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        Box::pin(std::future::ready(Ok(task())))
    }

    fn get_runtime() -> Self {
        Inline
    }
}

/// The SQLite migrations, embedded at build time from `migrations/sqlite/`.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// How long the migration connection waits for another process's lock, in
/// milliseconds: a replica starting next to one that is migrating waits for
/// it rather than failing.
const MIGRATION_BUSY_TIMEOUT_MS: u128 = 60_000;

/// The SQLite pools of one [`crate::Database`]: readers, and the one writer
/// every statement that writes goes through (see the module documentation).
#[derive(Clone)]
pub(crate) struct Pools {
    /// Up to [`PoolOptions::max_connections`] read-only connections
    /// (`PRAGMA query_only = ON`): `with_conn!`.
    pub(crate) read: Pool<Conn>,
    /// One connection: `write_conn!`, `write_tx!` and [`write_blocking`].
    pub(crate) write: Pool<Conn>,
    /// Up to [`PoolOptions::max_connections`] read-only connections that run
    /// on the caller's thread and never wait for a lock: `point_read!`.
    /// Never waited for either: when all are busy, the read goes to `read`.
    pub(crate) point: Pool<PointConn>,
    /// Until when point reads are paused (all reads go to `read`), in
    /// milliseconds since `origin`; see [`Pools::point_read_took`].
    point_paused_until_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The zero of `point_paused_until_ms`.
    origin: std::time::Instant,
}

/// A point read slower than this pauses point reads ([`POINT_READ_PAUSE`]).
/// A point read takes tens of microseconds; this is a read that waited.
pub(crate) const POINT_READ_SLOW: std::time::Duration = std::time::Duration::from_millis(100);

/// How long point reads stay paused after a slow one.
pub(crate) const POINT_READ_PAUSE: std::time::Duration = std::time::Duration::from_secs(30);

impl Pools {
    /// Whether point reads may run inline now.
    fn point_reads_on(&self) -> bool {
        let now = self.origin.elapsed().as_millis();
        // A function call: `.load` would be diesel's `RunQueryDsl::load`.
        let until = std::sync::atomic::AtomicU64::load(
            &self.point_paused_until_ms,
            std::sync::atomic::Ordering::Relaxed,
        );
        u128::from(until) <= now
    }

    /// Records how long an inline point read took. The zero busy timeout
    /// does not bound every wait: a WAL read whose read lock another process
    /// holds (its WAL recovery) retries for about 10 s inside SQLite, ignoring
    /// the busy handler, and inline that stalls the HTTP worker thread and
    /// every request on it. So one slow read (over [`POINT_READ_SLOW`]) sends
    /// all reads to the blocking pool for [`POINT_READ_PAUSE`], where such a
    /// wait costs one blocking thread, not a worker.
    pub(crate) fn point_read_took(&self, took: std::time::Duration) {
        if took < POINT_READ_SLOW {
            return;
        }
        let until = self.origin.elapsed() + POINT_READ_PAUSE;
        let until_ms = u64::try_from(until.as_millis()).unwrap_or(u64::MAX);
        self.point_paused_until_ms
            .fetch_max(until_ms, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            took_ms = took.as_millis(),
            pause_seconds = POINT_READ_PAUSE.as_secs(),
            "a SQLite read on the request's thread was slow (another process holds a lock?); \
             reads use the blocking pool for a while"
        );
    }
}

/// What a pooled connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Reads only; writes fail with "attempt to write a readonly database".
    Read,
    /// Every write of the process.
    Write,
    /// Reads only, on the caller's thread; a lock answers "database is
    /// locked" at once (`busy_timeout = 0`) instead of blocking the thread.
    Point,
}

/// Run on every new connection: wait up to `busy_timeout_ms` for another
/// writer's lock before failing with "database is locked" (the backstop
/// against other processes: this one writes through one connection),
/// write-ahead log (readers do not block the writer), enforce the
/// `REFERENCES` clauses (SQLite ignores them unless asked, per connection);
/// a reader then refuses writes. `busy_timeout` comes first so that switching
/// to WAL waits instead of failing when another connection holds the lock,
/// and `query_only` last, after the switch (which writes the file header).
///
/// A point connection sets no journal mode (the file's is persistent, and the
/// migration connection switched it to WAL): the switch could wait for a lock.
fn connection_pragmas(busy_timeout_ms: u128, role: Role) -> String {
    let query_only = match role {
        Role::Read => " PRAGMA query_only = ON;",
        Role::Write => "",
        Role::Point => {
            return "PRAGMA busy_timeout = 0; PRAGMA foreign_keys = ON; PRAGMA query_only = ON;"
                .to_owned();
        }
    };
    format!(
        "PRAGMA busy_timeout = {busy_timeout_ms}; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;{query_only}"
    )
}

/// The file path of a `sqlite:` URL (`rest` is what follows `sqlite:`):
/// `//data/x.db` → `data/x.db` (relative to the current directory),
/// `///abs/x.db` → `/abs/x.db`. Pure; see [`prepare_path`] for the directory.
pub(crate) fn parse_path(rest: &str) -> Result<PathBuf, RepoError> {
    let unsupported = |why: &str| {
        RepoError::UnsupportedUrl(format!(
            "{why}: expected sqlite://relative/path.db or sqlite:///absolute/path.db"
        ))
    };
    let Some(path) = rest.strip_prefix("//") else {
        return Err(unsupported("missing `//` after `sqlite:`"));
    };
    if path.is_empty() || path.ends_with('/') {
        return Err(unsupported("no file name"));
    }
    if path.contains('?') || path.contains('#') {
        return Err(unsupported("query parameters are not supported"));
    }
    if path.contains(":memory:") || path.starts_with("file:") {
        return Err(unsupported(
            "in-memory and `file:` URI databases are not supported",
        ));
    }
    Ok(PathBuf::from(path))
}

/// Creates the parent directory of the database file, so that a fresh
/// checkout runs with `sqlite://data/modelgen.db` and nothing else.
pub(crate) fn prepare_path(path: &std::path::Path) -> Result<(), RepoError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            RepoError::Unavailable(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    Ok(())
}

/// Opens one pooled connection and applies [`connection_pragmas`].
///
/// The connection runs its blocking work on the runtime it was opened on. A
/// pool is shared by every runtime of the process (actix runs one per HTTP
/// worker thread, and stops them first at shutdown), so connections are
/// opened on `home`, the runtime that built the pool and outlives the others:
/// a connection opened by an HTTP handler would otherwise fail every later
/// call ("task N was cancelled") once the HTTP server has stopped, while the
/// workers still finish their steps.
fn setup_connection<S: SpawnBlocking + Send + 'static>(
    path: &str,
    busy_timeout_ms: u128,
    role: Role,
    home: Option<tokio::runtime::Handle>,
) -> BoxFuture<'_, ConnectionResult<SyncConnectionWrapper<SqliteConnection, S>>> {
    let path = path.to_owned();
    Box::pin(async move {
        let open = async move {
            let mut conn =
                <SyncConnectionWrapper<SqliteConnection, S> as AsyncConnection>::establish(&path)
                    .await?;
            conn.batch_execute(&connection_pragmas(busy_timeout_ms, role))
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        };
        match home {
            Some(home) => home.spawn(open).await.map_err(|e| {
                ConnectionError::BadConnection(format!("cannot open the database: {e}"))
            })?,
            None => open.await,
        }
    })
}

/// The pools of the file at `path`: `options.max_connections` readers, waited
/// for up to `options.acquire_timeout`, and one writer, waited for in FIFO
/// order (deadpool's semaphore is tokio's, which is fair) until the call
/// deadline of `write_conn!`/`write_tx!` ([`PoolOptions::call_timeout`]):
/// waiting for it is the normal state of a write under load, not a shortage.
pub(crate) fn build_pools(path: &str, options: &PoolOptions) -> Result<Pools, RepoError> {
    Ok(Pools {
        read: build_pool(
            path,
            options,
            Role::Read,
            options.max_connections,
            Some(options.acquire_timeout),
        )?,
        write: build_pool(path, options, Role::Write, 1, None)?,
        // Nothing to wait for: a point read that finds no free connection
        // goes to `read`. Its connections open on the caller's thread.
        point: build_pool(
            path,
            options,
            Role::Point,
            options.max_connections,
            Some(std::time::Duration::ZERO),
        )?,
        point_paused_until_ms: std::sync::Arc::default(),
        origin: std::time::Instant::now(),
    })
}

/// A deadpool of up to `size` SQLite connections for `role` to the file at `path`.
fn build_pool<S: SpawnBlocking + Send + Sync + 'static>(
    path: &str,
    options: &PoolOptions,
    role: Role,
    size: usize,
    wait: Option<std::time::Duration>,
) -> Result<Pool<SyncConnectionWrapper<SqliteConnection, S>>, RepoError> {
    type C<S> = SyncConnectionWrapper<SqliteConnection, S>;
    let mut config = ManagerConfig::<C<S>>::default();
    let busy_timeout_ms = options.statement_timeout.as_millis().max(1);
    // Inline connections run where they are used: no home runtime to pin.
    let home = match role {
        Role::Point => None,
        Role::Read | Role::Write => tokio::runtime::Handle::try_current().ok(),
    };
    config.custom_setup =
        Box::new(move |path| setup_connection(path, busy_timeout_ms, role, home.clone()));
    // A file connection does not drop like a socket; the ping per checkout would
    // cost a blocking-thread round trip for nothing.
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<C<S>>::new_with_config(path, config);
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(wait)
        .create_timeout(Some(options.connect_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| RepoError::Unavailable(e.to_string()))
}

/// A free point connection, or `None` at once when there is none (all in
/// use, one cannot be opened, or point reads are paused after a slow one):
/// the caller then reads through the ordinary pool.
pub(crate) async fn point_checkout(
    pools: &Pools,
) -> Option<deadpool::managed::Object<AsyncDieselConnectionManager<PointConn>>> {
    if !pools.point_reads_on() {
        return None;
    }
    pools.point.get().await.ok()
}

/// Runs `work` in one immediate transaction on the writer connection, in one
/// blocking closure: one hand-off to a blocking thread for the whole
/// transaction, where `write_tx!` makes one per statement. The writer is
/// waited for (FIFO) until the call deadline `budget`, like `write_tx!`; the
/// work itself is bounded by the busy timeout (see `sqlite_outcome`). Any
/// `Err` rolls back.
///
/// # Errors
/// What `work` returns, classified (`db::classify`), or
/// [`RepoError::Unavailable`] when the writer is not free within `budget`.
pub(crate) async fn write_blocking<T: Send + 'static>(
    pools: &Pools,
    budget: std::time::Duration,
    work: impl FnOnce(&mut SqliteConnection) -> Result<T, RepoError> + Send + 'static,
) -> Result<T, RepoError> {
    let deadline = tokio::time::Instant::now() + budget;
    let mut guard = crate::db::checkout(&pools.write, deadline, budget).await?;
    let conn: &mut Conn = &mut guard;
    // Not cut off at the deadline (see `db::sqlite_outcome`): the guard goes
    // back to the pool when the transaction has ended either way.
    let result = match conn
        .spawn_blocking(move |c| Ok(c.immediate_transaction(work)))
        .await
    {
        Ok(result) => result,
        Err(e) => Err(RepoError::from(e)),
    };
    result.map_err(crate::db::classify)
}

/// Blocking statements for [`write_blocking`]'s closures (diesel's own
/// `RunQueryDsl`, on the bare connection).
pub(crate) mod blocking {
    use diesel::prelude::*;
    use diesel::sqlite::SqliteConnection;

    use crate::error::RepoError;
    use crate::models::{EventKind, NewTaskEvent};
    use crate::rows::{NewEventRow, TaskRow};
    use crate::schema::{ai_generation_task as t, task_events as ev};

    /// A create: the task's fair-queue rank (`fair::queue_rank` of the queue
    /// head and the user's last rank, `queue_ranks!`), its row and its `created` event,
    /// inside the caller's immediate transaction. Sets `row.queue_rank`.
    pub(crate) fn insert_task(
        conn: &mut SqliteConnection,
        row: &mut TaskRow,
    ) -> Result<(), RepoError> {
        let (head, last): (Option<i64>, Option<i64>) =
            crate::db::queue_ranks!(&row.user_id).get_result(conn)?;
        row.queue_rank = Some(crate::fair::queue_rank(head, last));
        diesel::insert_into(t::table).values(&*row).execute(conn)?;
        diesel::insert_into(ev::table)
            .values(NewEventRow::new(
                &row.task_id,
                row.created_at,
                &NewTaskEvent::new(EventKind::Created),
            ))
            .execute(conn)?;
        Ok(())
    }
}

/// Opens a dedicated blocking connection for the migration harness.
fn migration_connection(path: &str) -> Result<SqliteConnection, RepoError> {
    let mut conn = SqliteConnection::establish(path)
        .map_err(|e| RepoError::Unavailable(format!("cannot open {path}: {e}")))?;
    conn.batch_execute(&connection_pragmas(MIGRATION_BUSY_TIMEOUT_MS, Role::Write))?;
    Ok(conn)
}

/// Applies pending migrations in one immediate transaction (so two processes
/// migrating the same file serialise instead of both applying).
pub(crate) async fn migrate(path: String) -> Result<Vec<String>, RepoError> {
    tokio::task::spawn_blocking(move || {
        let mut conn = migration_connection(&path)?;
        conn.immediate_transaction(|conn| {
            conn.run_pending_migrations(MIGRATIONS)
                .map(|versions| versions.iter().map(ToString::to_string).collect())
                .map_err(|e| RepoError::Migration(e.to_string()))
        })
    })
    .await
    .map_err(|e| RepoError::Migration(format!("migration task failed: {e}")))?
}

/// Versions of embedded migrations not applied yet.
pub(crate) async fn pending(path: String) -> Result<Vec<String>, RepoError> {
    tokio::task::spawn_blocking(move || {
        let mut conn = migration_connection(&path)?;
        let pending = conn
            .pending_migrations(MIGRATIONS)
            .map_err(|e| RepoError::Migration(e.to_string()))?;
        Ok(pending
            .iter()
            .map(|m| m.name().version().to_string())
            .collect())
    })
    .await
    .map_err(|e| RepoError::Migration(format!("migration task failed: {e}")))?
}

/// Reads a task inside the caller's immediate transaction (already holding the
/// write lock).
pub(crate) async fn lock_task(conn: &mut Conn, id: &str) -> QueryResult<Option<TaskRow>> {
    t::table
        .find(id)
        .select(TaskRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Reads an outbox row inside the caller's immediate transaction.
pub(crate) async fn lock_callback(
    conn: &mut Conn,
    event_id: &str,
) -> QueryResult<Option<CallbackRow>> {
    c::table
        .find(event_id)
        .select(CallbackRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// A claim lane's query as it is run on SQLite: unchanged (the caller's
/// immediate transaction keeps other claimers out until it commits).
macro_rules! sqlite_claim_lock {
    ($query:expr) => {
        $query
    };
}
pub(crate) use sqlite_claim_lock as claim_lock;

/// The `detail` lines of `EXPLAIN QUERY PLAN $query` on `$conn`, joined
/// (tests and the claim benchmark).
#[cfg(feature = "testing")]
macro_rules! sqlite_explain {
    ($conn:expr, $query:expr) => {{
        use ::diesel::sql_types::{Integer, Text};
        let rows: Vec<(i32, i32, i32, String)> = $crate::db::explain::Explain::<
            _,
            (Integer, Integer, Integer, Text),
        >::new("EXPLAIN QUERY PLAN ", $query)
        .load(&mut *$conn)
        .await?;
        rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
    }};
}
#[cfg(feature = "testing")]
pub(crate) use sqlite_explain as explain;

/// The poll lane's order here ([`crate::db::due_polls!`]): SQLite reads `queue_rank IS NULL` as an equality: the index gives
/// `next_run_at` order.
pub(crate) use crate::db::due_order as poll_order;

/// The UTC day of `completed_at` as `YYYY-MM-DD` (usage by day).
pub(crate) const DAY_OF_COMPLETION: &str = "strftime('%Y-%m-%d', completed_at)";
/// The sum of `cost_micros` of a group as a `BIGINT` (SQLite's `SUM` of integers is an integer).
pub(crate) const COST_SUM: &str = "SUM(cost_micros)";

/// The rank a new (or retried) task of `user_id` joins the queue at
/// ([`crate::db::next_queue_rank!`]); call inside a write transaction.
pub(crate) async fn next_queue_rank(conn: &mut Conn, user_id: &str) -> QueryResult<i64> {
    crate::db::next_queue_rank!(conn, user_id)
}

/// SQLite has no notification channel (db/notify.rs): one process writes the
/// file, and its workers are woken in-process.
pub(crate) async fn announce_task_created(_conn: &mut Conn) -> QueryResult<()> {
    Ok(())
}

/// Ids of up to `limit` tasks due for input deletion, longest ended first; the caller's
/// immediate transaction keeps other claimers out until it commits.
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
        .load(conn)
        .await
}

/// Ids of up to `limit` claimable outbox rows, oldest due first.
pub(crate) async fn due_callback_ids(
    conn: &mut Conn,
    now: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<String>> {
    due_callbacks!(now)
        .select(c::event_id)
        .order((c::next_attempt_at.asc(), c::event_id.asc()))
        .limit(limit)
        .load(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Database;
    use crate::repo::TaskRepository;
    use diesel::sql_types::Integer;
    use std::time::Duration;

    /// A migrated database in a new file, with a short call timeout.
    async fn database(dir: &tempfile::TempDir) -> Database {
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let options = PoolOptions {
            call_timeout: Duration::from_millis(300),
            ..PoolOptions::default()
        };
        let db = Database::connect(&url, options).await.unwrap();
        db.migrate().await.unwrap();
        db
    }

    fn pools(db: &Database) -> &Pools {
        #[cfg_attr(
            not(any(feature = "postgres", feature = "mysql")),
            expect(irrefutable_let_patterns, reason = "SQLite is the only backend built")
        )]
        let crate::db::Pools::Sqlite(pools) = &db.pools else {
            panic!("not SQLite")
        };
        pools
    }

    #[derive(QueryableByName)]
    struct UserVersion {
        #[diesel(sql_type = Integer)]
        user_version: i32,
    }

    async fn user_version(db: &Database) -> Result<i32, RepoError> {
        with_conn!(db, |conn| {
            Ok(diesel::sql_query("PRAGMA user_version")
                .get_result::<UserVersion>(conn)
                .await?
                .user_version)
        })
    }

    /// A point read runs on the request's thread, and no busy timeout bounds
    /// every wait inside SQLite (a WAL read retries for a read lock for about
    /// 10 s, then answers "locking protocol"): one slow point read sends the
    /// reads to the blocking pool for a while, and that answer is a 503.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_point_read_pauses_point_reads_and_locking_protocol_is_a_503() {
        use diesel::result::{DatabaseErrorKind, Error};
        let dir = tempfile::tempdir().unwrap();
        let db = database(&dir).await;
        let id = modelgen_domain::TaskId::generate();
        let pools = pools(&db);
        assert!(pools.point_reads_on());
        assert!(point_checkout(pools).await.is_some());
        pools.point_read_took(POINT_READ_SLOW / 2);
        assert!(pools.point_reads_on(), "a fast read paused point reads");
        pools.point_read_took(POINT_READ_SLOW);
        assert!(!pools.point_reads_on(), "a slow read did not pause them");
        assert!(point_checkout(pools).await.is_none());
        // Reads go on, through the blocking pool.
        assert!(matches!(db.get_task(&id).await, Err(RepoError::NotFound)));

        let protocol = crate::db::classify(RepoError::Query(Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("locking protocol".to_owned()),
        )));
        assert!(
            matches!(&protocol, RepoError::Unavailable(_)) && crate::db::is_busy(&protocol),
            "{protocol:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_refuses_a_write_and_the_writer_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(&dir).await;
        let write = || diesel::sql_query("DELETE FROM callback_delivery");
        let refused: Result<usize, RepoError> =
            async { with_conn!(db, |conn| Ok(write().execute(conn).await?)) }.await;
        assert!(
            format!("{refused:?}").contains("readonly"),
            "a reader ran a write: {refused:?}"
        );
        let done: Result<usize, RepoError> =
            async { write_conn!(db, |conn| Ok(write().execute(conn).await?)) }.await;
        assert!(done.is_ok(), "{done:?}");
        assert_eq!(db.writer_pool_status().map(|s| s.max), Some(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_go_on_beside_a_busy_writer_and_writes_queue_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(&dir).await;
        let held = pools(&db).write.get().await.unwrap();
        // Reads use the readers; a write waits for the writer until its call
        // deadline, then is Unavailable (503), not "database is locked".
        assert_eq!(user_version(&db).await.unwrap(), 0);
        let waited = db.release_all_task_leases("nobody").await;
        assert!(
            matches!(&waited, Err(RepoError::Unavailable(m)) if m.contains("no database connection")),
            "{waited:?}"
        );

        // Writes queued behind the held writer run in the order they queued:
        // the last one queued is the last one applied.
        let mut queued = Vec::new();
        for version in 1..=5 {
            let db2 = db.clone();
            let slow = PoolOptions {
                call_timeout: Duration::from_secs(60),
                ..PoolOptions::default()
            };
            let db2 = Database {
                timeouts: crate::db::Timeouts {
                    call: slow.call_timeout,
                },
                ..db2
            };
            queued.push(tokio::spawn(async move {
                let written: Result<(), RepoError> = write_conn!(db2, |conn| {
                    diesel::sql_query(format!("PRAGMA user_version = {version}"))
                        .execute(conn)
                        .await?;
                    Ok(())
                });
                written
            }));
            while pools(&db).write.status().waiting < version {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(db.writer_pool_status().map(|s| s.waiting), Some(5));
        drop(held);
        for write in queued {
            write.await.unwrap().unwrap();
        }
        assert_eq!(user_version(&db).await.unwrap(), 5);
    }

    #[test]
    fn url_paths_are_relative_or_absolute() {
        assert_eq!(
            parse_path("//data/modelgen.db").unwrap(),
            PathBuf::from("data/modelgen.db")
        );
        assert_eq!(
            parse_path("///var/lib/m.db").unwrap(),
            PathBuf::from("/var/lib/m.db")
        );
        for bad in [
            ":memory:",
            "//:memory:",
            "//",
            "//dir/",
            "relative.db",
            "//x.db?mode=rwc",
            "//file:x.db",
        ] {
            assert!(
                matches!(parse_path(bad), Err(RepoError::UnsupportedUrl(_))),
                "{bad}"
            );
        }
    }
}
