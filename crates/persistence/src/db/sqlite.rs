//! SQLite specifics: URL parsing, connection setup, migrations, and the row
//! locking used by claims and updates.
//!
//! SQLite has no row locks. Every read-check-write runs in a `BEGIN IMMEDIATE`
//! transaction (see `write_tx!`), which takes the database's single write lock
//! before its first read; the `lock_*` functions here are therefore plain reads.

use std::path::PathBuf;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel::{ConnectionError, ConnectionResult, connection::SimpleConnection};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
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

/// The SQLite migrations, embedded at build time from `migrations/sqlite/`.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// How long the migration connection waits for another process's lock, in
/// milliseconds: a replica starting next to one that is migrating waits for
/// it rather than failing.
const MIGRATION_BUSY_TIMEOUT_MS: u128 = 60_000;

/// Run on every new connection: wait up to `busy_timeout_ms` for another
/// writer's lock before failing with "database is locked" (without it
/// concurrent writers fail at once; STACK.md: 27 of 32 concurrent inserts
/// failed), write-ahead log (readers do not block the writer), enforce the
/// `REFERENCES` clauses (SQLite ignores them unless asked, per connection).
/// `busy_timeout` comes first so that switching to WAL waits instead of
/// failing when another connection holds the lock.
fn connection_pragmas(busy_timeout_ms: u128) -> String {
    format!(
        "PRAGMA busy_timeout = {busy_timeout_ms}; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
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
fn setup_connection(
    path: &str,
    busy_timeout_ms: u128,
    home: Option<tokio::runtime::Handle>,
) -> BoxFuture<'_, ConnectionResult<Conn>> {
    let path = path.to_owned();
    Box::pin(async move {
        let open = async move {
            let mut conn = <Conn as AsyncConnection>::establish(&path).await?;
            conn.batch_execute(&connection_pragmas(busy_timeout_ms))
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

/// A deadpool of SQLite connections to the file at `path`.
pub(crate) fn build_pool(path: &str, options: &PoolOptions) -> Result<Pool<Conn>, RepoError> {
    let mut config = ManagerConfig::<Conn>::default();
    let busy_timeout_ms = options.statement_timeout.as_millis().max(1);
    let home = tokio::runtime::Handle::try_current().ok();
    config.custom_setup =
        Box::new(move |path| setup_connection(path, busy_timeout_ms, home.clone()));
    // A file connection does not drop like a socket; the ping per checkout would
    // cost a blocking-thread round trip for nothing.
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<Conn>::new_with_config(path, config);
    Pool::builder(manager)
        .max_size(options.max_connections)
        .wait_timeout(Some(options.acquire_timeout))
        .create_timeout(Some(options.connect_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| RepoError::Unavailable(e.to_string()))
}

/// Opens a dedicated blocking connection for the migration harness.
fn migration_connection(path: &str) -> Result<SqliteConnection, RepoError> {
    let mut conn = SqliteConnection::establish(path)
        .map_err(|e| RepoError::Unavailable(format!("cannot open {path}: {e}")))?;
    conn.batch_execute(&connection_pragmas(MIGRATION_BUSY_TIMEOUT_MS))?;
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

/// `(next_run_at, task_id)` of up to `limit` claimable tasks of the poll lane
/// of `status` ([`crate::db::due_polls!`]), in `next_run_at` order; the caller's immediate
/// transaction keeps other claimers out until it commits.
pub(crate) async fn due_poll_keys(
    conn: &mut Conn,
    status: &str,
    now: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<(NaiveDateTime, String)>> {
    claim_lock!(
        crate::db::due_polls!(now, status, poll_order!())
            .select((t::next_run_at, t::task_id))
            .limit(limit)
    )
    .load(conn)
    .await
}

/// Ids of up to `limit` claimable tasks of the submit lane
/// ([`crate::db::due_submits!`]), in fair order; the caller's immediate
/// transaction keeps other claimers out until it commits.
pub(crate) async fn due_submit_ids(
    conn: &mut Conn,
    now: NaiveDateTime,
    limit: i64,
) -> QueryResult<Vec<String>> {
    claim_lock!(crate::db::due_submits!(now).select(t::task_id).limit(limit))
        .load(conn)
        .await
}

/// The rank a new (or retried) task of `user_id` joins the queue at
/// ([`crate::db::next_queue_rank!`]); call inside a write transaction.
pub(crate) async fn next_queue_rank(conn: &mut Conn, user_id: &str) -> QueryResult<i64> {
    crate::db::next_queue_rank!(conn, user_id)
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
