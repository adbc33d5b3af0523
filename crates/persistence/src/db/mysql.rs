//! MySQL/MariaDB specifics: URL normalisation, the server version rule,
//! connection setup, migrations under a named lock, the row locking used by
//! claims (`FOR UPDATE SKIP LOCKED`) and updates (`FOR UPDATE`), and the
//! write-then-read-back that stands in for `RETURNING`.
//!
//! MySQL has no `RETURNING` (MariaDB has it for `INSERT`/`DELETE` only, and
//! diesel supports neither), so the `*_returning!` macros here write, then
//! read the rows back with the same filter inside the caller's transaction:
//! the rows are locked by the write, so what is read is what was written.

use std::fmt;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::{ConnectionError, ConnectionResult};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::future::BoxFuture;

use super::PoolOptions;
use crate::error::RepoError;
use crate::rows::{CallbackRow, TaskRow};
use crate::schema::{ai_generation_task as t, callback_delivery as c};

/// The pooled connection type (mysql_async underneath, pure Rust, no libmysqlclient).
pub(crate) type Conn = AsyncMysqlConnection;

/// The MySQL migrations, embedded at build time from `migrations/mysql/`.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/mysql");

/// Name of the `GET_LOCK` lock held while migrating, so that replicas starting
/// together apply each migration once. Named locks are server-wide, so the
/// database name is appended (two modelgen databases on one server do not
/// wait for each other).
const MIGRATION_LOCK_PREFIX: &str = "modelgen.migrate.";

/// Longest wait for the migration lock, seconds: another replica applying the
/// migrations holds it for the time they take, which is seconds.
const MIGRATION_LOCK_TIMEOUT_SECS: u32 = 300;

/// Run on every new connection, after the driver's own setup:
/// - `time_zone '+00:00'`: the service writes naive UTC into `DATETIME(6)`
///   columns and never calls `NOW()`, so nothing depends on the session zone
///   today; pinning it keeps any future use of `NOW()`, `TIMESTAMP` or
///   `UNIX_TIMESTAMP` in UTC too, whatever the server's default;
/// - `NAMES utf8mb4`: 4-byte characters (emoji, rare CJK) travel intact;
/// - `sql_mode` strict: an over-long or invalid value is an error, as on
///   PostgreSQL, never a silent truncation; no other mode (for example
///   `ANSI_QUOTES`, `PIPES_AS_CONCAT`) from the server's default applies;
/// - `READ COMMITTED`, PostgreSQL's default: locking reads take no gap locks,
///   so a claim does not block inserts of new tasks (needs `binlog_format`
///   `ROW` or `MIXED`, the servers' defaults).
pub(crate) const SESSION_SETUP: &str = "SET time_zone = '+00:00'; \
     SET NAMES utf8mb4; \
     SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'; \
     SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED;";

/// The driver's `prefer_socket` parameter. mysql_async turns it on by default
/// and then, after connecting over TCP, reconnects through the Unix socket
/// path the server reports (`@@socket`) when that path exists on the client.
/// modelgen turns it off unless the URL says otherwise: a client host that
/// runs a database of its own at that path would otherwise be talking to the
/// wrong server, and the host and port in the URL are what an operator means.
const PREFER_SOCKET_PARAM: &str = "prefer_socket";

/// URL query parameters of the earlier (Python, SQLAlchemy + aiomysql) service
/// that are accepted and dropped: the connection always uses utf8mb4.
const CHARSET_PARAM: &str = "charset";
/// `charset` values accepted: utf8mb4, and the 3-byte `utf8`/`utf8mb3`, of which
/// utf8mb4 is a superset.
const ACCEPTED_CHARSETS: [&str; 3] = ["utf8mb4", "utf8", "utf8mb3"];

/// Rewrites a MySQL URL accepted by `is_mysql_url` into the driver's form:
/// scheme `mysql://`, `charset=utf8mb4` (or `utf8`) dropped,
/// `prefer_socket=false` added unless given, and a database name required. Pure.
///
/// # Errors
/// [`RepoError::UnsupportedUrl`] for a malformed URL, no database name, a
/// `charset` other than utf8mb4/utf8/utf8mb3, or a query parameter the driver
/// does not know. Messages never contain the password.
pub(crate) fn normalize_url(raw: &str) -> Result<String, RepoError> {
    let unsupported = |why: String| RepoError::UnsupportedUrl(format!("MySQL URL: {why}"));
    let rest = raw
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| unsupported("expected mysql://user:password@host:port/database".into()))?;
    let mut url = url::Url::parse(&format!("mysql://{rest}"))
        .map_err(|e| unsupported(format!("cannot parse it: {e}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(unsupported("no host".into()));
    }
    let database = url.path().trim_start_matches('/');
    if database.is_empty() || database.contains('/') {
        return Err(unsupported(
            "expected exactly one database name after the host (mysql://user@host:3306/db)".into(),
        ));
    }
    let mut kept: Vec<(String, String)> = Vec::new();
    for (key, value) in url.query_pairs() {
        if key == CHARSET_PARAM {
            if !ACCEPTED_CHARSETS.contains(&value.to_ascii_lowercase().as_str()) {
                return Err(unsupported(format!(
                    "charset `{}` is not supported: modelgen always talks utf8mb4 \
                     (charset=utf8mb4 may be given, or left out)",
                    value.chars().take(32).collect::<String>()
                )));
            }
        } else {
            kept.push((key.into_owned(), value.into_owned()));
        }
    }
    if !kept.iter().any(|(key, _)| key == PREFER_SOCKET_PARAM) {
        kept.push((PREFER_SOCKET_PARAM.to_owned(), "false".to_owned()));
    }
    url.query_pairs_mut().clear().extend_pairs(kept);
    let normalized = url.to_string();
    // The driver's own parser: unknown parameters and bad values are refused
    // here, at startup, rather than on the first connection.
    mysql_async::Opts::from_url(&normalized).map_err(|e| unsupported(e.to_string()))?;
    Ok(normalized)
}

/// Which server a version string comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFlavor {
    /// Oracle MySQL (and compatible builds such as Percona Server).
    Mysql,
    /// MariaDB.
    Mariadb,
}

impl fmt::Display for ServerFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerFlavor::Mysql => "MySQL",
            ServerFlavor::Mariadb => "MariaDB",
        })
    }
}

/// A server version as `SELECT VERSION()` reports it, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerVersion {
    /// MySQL or MariaDB.
    pub flavor: ServerFlavor,
    /// `(major, minor, patch)`.
    pub number: (u32, u32, u32),
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor, patch) = self.number;
        write!(f, "{} {major}.{minor}.{patch}", self.flavor)
    }
}

/// First MySQL release with `SELECT … FOR UPDATE SKIP LOCKED` (8.0.1).
pub const MIN_MYSQL: (u32, u32, u32) = (8, 0, 1);
/// First MariaDB release with `SELECT … FOR UPDATE SKIP LOCKED` (10.6.0).
pub const MIN_MARIADB: (u32, u32, u32) = (10, 6, 0);

/// Decides whether the server whose `VERSION()` is `reported` can run
/// modelgen: claims need `FOR UPDATE SKIP LOCKED`, which MySQL has from
/// [`MIN_MYSQL`] and MariaDB from [`MIN_MARIADB`]. Pure.
///
/// Accepts the forms servers print: `8.0.36`, `8.0.36-0ubuntu0.22.04.1`,
/// `5.7.44-log`, `10.11.6-MariaDB-0+deb12u1`, and MariaDB's replication
/// prefix `5.5.5-10.11.6-MariaDB`.
///
/// # Errors
/// A message naming the version found and the versions needed, when the
/// server is older or its version cannot be read.
pub fn check_server_version(reported: &str) -> Result<ServerVersion, String> {
    let shown: String = reported.trim().chars().take(80).collect();
    let flavor = if shown.to_ascii_lowercase().contains("mariadb") {
        ServerFlavor::Mariadb
    } else {
        ServerFlavor::Mysql
    };
    let digits = match flavor {
        ServerFlavor::Mariadb => shown.strip_prefix("5.5.5-").unwrap_or(&shown),
        ServerFlavor::Mysql => shown.as_str(),
    };
    let needed = format!(
        "modelgen needs MySQL {}.{}.{} or newer, or MariaDB {}.{}.{} or newer \
         (for SELECT … FOR UPDATE SKIP LOCKED)",
        MIN_MYSQL.0, MIN_MYSQL.1, MIN_MYSQL.2, MIN_MARIADB.0, MIN_MARIADB.1, MIN_MARIADB.2
    );
    let number = parse_version_number(digits)
        .ok_or_else(|| format!("cannot read the server version `{shown}`: {needed}"))?;
    let version = ServerVersion { flavor, number };
    let minimum = match flavor {
        ServerFlavor::Mysql => MIN_MYSQL,
        ServerFlavor::Mariadb => MIN_MARIADB,
    };
    if number < minimum {
        return Err(format!(
            "the database server is {version} (`{shown}`), which lacks SKIP LOCKED: {needed}"
        ));
    }
    Ok(version)
}

/// `major.minor.patch` at the start of `s` (the patch may be missing: `8.0`).
fn parse_version_number(s: &str) -> Option<(u32, u32, u32)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let mut parts = s[..end].split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some("") | None => 0,
        Some(p) => p.parse().ok()?,
    };
    Some((major, minor, patch))
}

/// Asks the server for its version and applies [`check_server_version`].
///
/// # Errors
/// [`RepoError::UnsupportedServer`] for a server that is too old,
/// [`RepoError::Unavailable`] when no connection can be had.
pub(crate) async fn check_server(pool: &Pool<Conn>) -> Result<ServerVersion, RepoError> {
    let mut conn = pool.get().await.map_err(super::pool_error)?;
    let reported: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>("VERSION()"))
        .get_result(&mut *conn)
        .await
        .map_err(|e| super::classify(e.into()))?;
    check_server_version(&reported).map_err(RepoError::UnsupportedServer)
}

/// The server version of an open connection, as `VERSION()` reports it.
async fn version_of(conn: &mut Conn) -> QueryResult<String> {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>("VERSION()"))
        .get_result(conn)
        .await
}

/// Session limits for statements and lock waits: `statement_timeout` for one
/// statement (MariaDB `max_statement_time`, any statement; MySQL
/// `max_execution_time`, reads only), and for waiting on a row lock
/// (`innodb_lock_wait_timeout`) or a table's metadata lock
/// (`lock_wait_timeout`), both whole seconds, at least 1. `None` lifts the
/// statement limit and gives lock waits a day (migrations).
fn timeout_settings(
    flavor: ServerFlavor,
    statement_timeout: Option<std::time::Duration>,
) -> String {
    const A_DAY_SECS: u128 = 86_400;
    let (ms, lock_secs) = match statement_timeout {
        Some(t) => {
            let ms = t.as_millis().max(1);
            (ms, ms.div_ceil(1_000))
        }
        None => (0, A_DAY_SECS),
    };
    let statement = match flavor {
        ServerFlavor::Mariadb => {
            format!(
                "SET SESSION max_statement_time = {}.{:03};",
                ms / 1_000,
                ms % 1_000
            )
        }
        ServerFlavor::Mysql => format!("SET SESSION max_execution_time = {ms};"),
    };
    format!(
        "{statement} SET SESSION innodb_lock_wait_timeout = {lock_secs}; \
         SET SESSION lock_wait_timeout = {lock_secs};"
    )
}

/// Opens one connection and applies [`SESSION_SETUP`] and the statement and
/// lock limits of [`timeout_settings`], after `prelude` (SQL run first; empty
/// in production, a foreign session time zone in tests).
fn setup_connection<'a>(
    url: &'a str,
    prelude: &'a str,
    statement_timeout: std::time::Duration,
) -> BoxFuture<'a, ConnectionResult<Conn>> {
    Box::pin(async move {
        let mut conn = <Conn as AsyncConnection>::establish(url).await?;
        if !prelude.is_empty() {
            conn.batch_execute(prelude)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
        }
        let reported = version_of(&mut conn)
            .await
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        // A server too old for modelgen may lack the limits' variables: its
        // connection opens without them, so that `Database::connect` can
        // refuse it with the version rule's message rather than a SET error.
        let settings = match check_server_version(&reported) {
            Ok(version) => format!(
                "{SESSION_SETUP} {}",
                timeout_settings(version.flavor, Some(statement_timeout))
            ),
            Err(_) => SESSION_SETUP.to_owned(),
        };
        conn.batch_execute(&settings)
            .await
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    })
}

/// A deadpool of MySQL connections to `url` (already [`normalize_url`]d).
/// `prelude` is SQL run on each new connection before [`SESSION_SETUP`]
/// (empty outside tests).
pub(crate) fn build_pool(
    url: &str,
    options: &PoolOptions,
    prelude: String,
) -> Result<Pool<Conn>, RepoError> {
    let mut config = ManagerConfig::<Conn>::default();
    let statement_timeout = options.statement_timeout;
    config.custom_setup = Box::new(move |url| {
        let prelude = prelude.clone();
        let url = url.to_owned();
        Box::pin(async move { setup_connection(&url, &prelude, statement_timeout).await })
    });
    // The server closes idle connections after `wait_timeout` (8 h by
    // default) and on restart; checking on checkout turns that into a fresh
    // connection instead of a failed query.
    config.recycling_method = RecyclingMethod::Verified;
    let manager = AsyncDieselConnectionManager::<Conn>::new_with_config(url, config);
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
    pool: &Pool<Conn>,
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

/// One integer column, for `GET_LOCK` and friends.
#[derive(QueryableByName)]
struct LockResult {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    got: Option<i32>,
}

/// Applies pending migrations while holding the named lock
/// [`MIGRATION_LOCK_PREFIX`]`<database>`. MySQL runs DDL outside
/// transactions: a migration that fails half-way leaves its earlier
/// statements applied (the error says which migration failed).
pub(crate) async fn migrate(pool: &Pool<Conn>) -> Result<Vec<String>, RepoError> {
    with_harness(pool, |conn| {
        use diesel::connection::SimpleConnection;
        // A migration may rewrite a large table, and waits for a replica that
        // is migrating: the request-path statement limits do not apply.
        let version: String = diesel::RunQueryDsl::get_result(
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>("VERSION()")),
            conn,
        )?;
        let flavor = check_server_version(&version)
            .map_err(RepoError::UnsupportedServer)?
            .flavor;
        SimpleConnection::batch_execute(conn, &timeout_settings(flavor, None))?;
        let lock: LockResult = diesel::RunQueryDsl::get_result(
            diesel::sql_query(format!(
                "SELECT GET_LOCK(CONCAT('{MIGRATION_LOCK_PREFIX}', DATABASE()), \
                 {MIGRATION_LOCK_TIMEOUT_SECS}) AS got"
            )),
            conn,
        )?;
        if lock.got != Some(1) {
            return Err(RepoError::Migration(format!(
                "another process held the migration lock for more than \
                 {MIGRATION_LOCK_TIMEOUT_SECS} s"
            )));
        }
        let result = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| RepoError::Migration(e.to_string()));
        // The lock also ends with the session (the connection is dropped next);
        // releasing it explicitly just lets the next replica go sooner.
        let _released: QueryResult<LockResult> = diesel::RunQueryDsl::get_result(
            diesel::sql_query(format!(
                "SELECT RELEASE_LOCK(CONCAT('{MIGRATION_LOCK_PREFIX}', DATABASE())) AS got"
            )),
            conn,
        );
        result
    })
    .await
}

/// Versions of embedded migrations not applied yet.
pub(crate) async fn pending(pool: &Pool<Conn>) -> Result<Vec<String>, RepoError> {
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
macro_rules! mysql_claim_lock {
    ($query:expr) => {
        $query.for_update().skip_locked()
    };
}
pub(crate) use mysql_claim_lock as claim_lock;

/// `EXPLAIN FORMAT=JSON $query` on `$conn` (tests and the claim benchmark).
#[cfg(feature = "testing")]
macro_rules! mysql_explain {
    ($conn:expr, $query:expr) => {{
        let rows: Vec<String> = $crate::db::explain::Explain::<_, ::diesel::sql_types::Text>::new(
            "EXPLAIN FORMAT=JSON ",
            $query,
        )
        .load(&mut *$conn)
        .await?;
        rows.join("\n")
    }};
}
#[cfg(feature = "testing")]
pub(crate) use mysql_explain as explain;

/// The poll lane's order here ([`crate::db::due_polls!`]): MariaDB/MySQL sort (filesort) when the order names the rank, fixed by
/// `queue_rank IS NULL`: due time and id only.
pub(crate) use crate::db::due_order as poll_order;

/// The UTC day of `completed_at` as `YYYY-MM-DD` (usage by day).
pub(crate) const DAY_OF_COMPLETION: &str = "DATE_FORMAT(completed_at, '%Y-%m-%d')";
/// The sum of `cost_micros` of a group as a `BIGINT` (MySQL's `SUM(BIGINT)` is `DECIMAL`: cast back).
pub(crate) const COST_SUM: &str = "CAST(SUM(cost_micros) AS SIGNED)";

/// The rank a new (or retried) task of `user_id` joins the queue at
/// ([`crate::db::next_queue_rank!`]); call inside a write transaction.
pub(crate) async fn next_queue_rank(conn: &mut Conn, user_id: &str) -> QueryResult<i64> {
    crate::db::next_queue_rank!(conn, user_id)
}

/// MySQL has no notification channel (db/notify.rs): its workers find a
/// new task through the in-process wake-up and their idle interval.
pub(crate) async fn announce_task_created(_conn: &mut Conn) -> QueryResult<()> {
    Ok(())
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

/// `UPDATE $target SET $changes`, then the updated rows read back through
/// `$target` again. Evaluates to `QueryResult<Vec<$row>>`. Inside `write_tx!`
/// only: the transaction keeps the rows as written until they are read.
macro_rules! mysql_update_returning_all {
    ($conn:expr, $target:expr, $changes:expr, $row:ty) => {{
        let conn: &mut $crate::db::mysql::Conn = $conn;
        match ::diesel::update($target)
            .set($changes)
            .execute(&mut *conn)
            .await
        {
            Ok(_) => $target.select(<$row>::as_select()).load::<$row>(conn).await,
            Err(e) => Err(e),
        }
    }};
}
pub(crate) use mysql_update_returning_all as update_returning_all;

/// As [`update_returning_all!`] for one row: `QueryResult<$row>`, `NotFound`
/// when `$target` matches nothing.
macro_rules! mysql_update_returning_one {
    ($conn:expr, $target:expr, $changes:expr, $row:ty) => {{
        let conn: &mut $crate::db::mysql::Conn = $conn;
        match ::diesel::update($target)
            .set($changes)
            .execute(&mut *conn)
            .await
        {
            Ok(_) => {
                $target
                    .select(<$row>::as_select())
                    .first::<$row>(conn)
                    .await
            }
            Err(e) => Err(e),
        }
    }};
}
pub(crate) use mysql_update_returning_one as update_returning_one;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_settings_per_flavor() {
        let three = Some(std::time::Duration::from_millis(2_500));
        assert_eq!(
            timeout_settings(ServerFlavor::Mariadb, three),
            "SET SESSION max_statement_time = 2.500; SET SESSION innodb_lock_wait_timeout = 3; \
             SET SESSION lock_wait_timeout = 3;"
        );
        assert_eq!(
            timeout_settings(ServerFlavor::Mysql, three),
            "SET SESSION max_execution_time = 2500; SET SESSION innodb_lock_wait_timeout = 3; \
             SET SESSION lock_wait_timeout = 3;"
        );
        assert!(
            timeout_settings(ServerFlavor::Mariadb, Some(std::time::Duration::ZERO))
                .starts_with("SET SESSION max_statement_time = 0.001;")
        );
        let unlimited = timeout_settings(ServerFlavor::Mariadb, None);
        assert!(
            unlimited.contains("max_statement_time = 0.000;")
                && unlimited.contains("innodb_lock_wait_timeout = 86400;"),
            "{unlimited}"
        );
    }

    #[test]
    fn versions_with_skip_locked_are_accepted() {
        for (reported, flavor, number) in [
            ("8.0.1", ServerFlavor::Mysql, (8, 0, 1)),
            ("8.0.36-0ubuntu0.22.04.1", ServerFlavor::Mysql, (8, 0, 36)),
            ("8.4.0", ServerFlavor::Mysql, (8, 4, 0)),
            ("9.1.0-commercial", ServerFlavor::Mysql, (9, 1, 0)),
            ("10.6.0-MariaDB", ServerFlavor::Mariadb, (10, 6, 0)),
            (
                "10.11.19-MariaDB-0+deb12u1",
                ServerFlavor::Mariadb,
                (10, 11, 19),
            ),
            (
                "5.5.5-10.11.6-MariaDB-log",
                ServerFlavor::Mariadb,
                (10, 11, 6),
            ),
            ("11.4.2-MariaDB-ubu2404", ServerFlavor::Mariadb, (11, 4, 2)),
        ] {
            assert_eq!(
                check_server_version(reported),
                Ok(ServerVersion { flavor, number }),
                "{reported}"
            );
        }
    }

    #[test]
    fn versions_without_skip_locked_are_refused_naming_the_version() {
        for (reported, shown) in [
            ("8.0.0-dmr", "MySQL 8.0.0"),
            ("5.7.44-log", "MySQL 5.7.44"),
            ("5.6.51", "MySQL 5.6.51"),
            ("10.5.22-MariaDB", "MariaDB 10.5.22"),
            ("5.5.5-10.4.32-MariaDB", "MariaDB 10.4.32"),
            ("10.3.39-MariaDB-0+deb10u1", "MariaDB 10.3.39"),
        ] {
            let err = check_server_version(reported).unwrap_err();
            assert!(err.contains(shown), "{reported}: {err}");
            assert!(err.contains(reported), "{reported}: {err}");
            assert!(err.contains("SKIP LOCKED"), "{err}");
            assert!(err.contains("8.0.1") && err.contains("10.6.0"), "{err}");
        }
    }

    #[test]
    fn unreadable_versions_are_refused() {
        for reported in ["", "MariaDB", "v8", "8", "x.y.z", "8.x"] {
            let err = check_server_version(reported).unwrap_err();
            assert!(err.contains("cannot read the server version"), "{err}");
        }
    }

    #[test]
    fn mysql_urls_are_recognised_in_every_accepted_spelling() {
        for url in [
            "mysql://u:p@h:3306/db",
            "MySQL://u@h/db",
            "mysql+aiomysql://u:p@h:3306/db?charset=utf8mb4",
            "mysql+pymysql://u@h/db",
            "mariadb://u@h/db",
            "mariadb+mariadbconnector://u@h/db",
        ] {
            assert!(crate::db::is_mysql_url(url), "{url}");
        }
        for url in [
            "mysqlx://u@h/db",
            "mysql+://u@h/db",
            "mysql+a-b://u@h/db",
            "postgres://u@h/db",
            "mysql:/u@h/db",
            "sqlite://x.db",
        ] {
            assert!(!crate::db::is_mysql_url(url), "{url}");
        }
    }

    #[test]
    fn urls_are_normalised_to_the_driver_form() {
        assert_eq!(
            normalize_url(
                "mysql+aiomysql://app:s%40cret@db.internal:3306/modelgen?charset=utf8mb4"
            )
            .unwrap(),
            "mysql://app:s%40cret@db.internal:3306/modelgen?prefer_socket=false"
        );
        assert_eq!(
            normalize_url("mariadb://root@127.0.0.1/test").unwrap(),
            "mysql://root@127.0.0.1/test?prefer_socket=false"
        );
        assert_eq!(
            normalize_url("mysql://root@127.0.0.1:3306/test?charset=UTF8&tcp_nodelay=true")
                .unwrap(),
            "mysql://root@127.0.0.1:3306/test?tcp_nodelay=true&prefer_socket=false"
        );
        assert_eq!(
            normalize_url("mysql://root@localhost/test?prefer_socket=true").unwrap(),
            "mysql://root@localhost/test?prefer_socket=true"
        );
    }

    #[test]
    fn bad_urls_are_refused_without_the_password() {
        for url in [
            "mysql://app:hunter2@db.internal:3306",
            "mysql://app:hunter2@db.internal:3306/",
            "mysql://app:hunter2@db.internal/a/b",
            "mysql://app:hunter2@db.internal/db?charset=latin1",
            "mysql://app:hunter2@db.internal/db?no_such_param=1",
            "mysql://app:hunter2@db.internal/db?tcp_nodelay=maybe",
            "mysql:///db",
        ] {
            let err = normalize_url(url).unwrap_err();
            assert!(matches!(err, RepoError::UnsupportedUrl(_)), "{url}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{url}: {err}");
        }
    }
}
