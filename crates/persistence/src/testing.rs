//! Fresh, migrated databases for tests (feature `testing`; turn it on in
//! `[dev-dependencies]` only).
//!
//! Every call of [`fresh_database`] gives a database no other test sees:
//! - SQLite: a new file in a new temporary directory, removed with the guard;
//! - PostgreSQL: `CREATE DATABASE mg_test_<ulid>` on the server named by
//!   `MODELGEN_TEST_PG_URL` (default [`DEFAULT_PG_ADMIN_URL`]), migrated, and
//!   dropped (`WITH (FORCE)`) when the guard is dropped;
//! - MySQL/MariaDB: the same on the server named by `MODELGEN_TEST_MYSQL_URL`
//!   (default [`DEFAULT_MYSQL_ADMIN_URL`]), dropped when the guard is dropped.
//!
//! A server being unreachable is a test failure, not a skip, unless
//! `MODELGEN_SKIP_PG=1` ([`postgres_skipped`]) or `MODELGEN_SKIP_MYSQL=1`
//! ([`mysql_skipped`]); tests check that first ([`skipped`]).
//!
//! ```no_run
//! # async fn demo() {
//! use modelgen_persistence::{Backend, TaskRepository, testing};
//! for backend in testing::backends_under_test() {
//!     let (db, _guard) = testing::fresh_database(backend).await;
//!     db.ping().await.unwrap();
//! }
//! # }
//! ```

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncMysqlConnection, AsyncPgConnection, RunQueryDsl};

use crate::db::{Backend, Database, PoolOptions};
use crate::error::RepoError;

/// Environment variable naming the PostgreSQL server (any database on it that
/// the user can connect to; new databases are created next to it).
pub const PG_URL_ENV: &str = "MODELGEN_TEST_PG_URL";
/// Environment variable that, set to `1`, skips PostgreSQL tests.
pub const SKIP_PG_ENV: &str = "MODELGEN_SKIP_PG";
/// The local test server: trust auth, user `postgres` (DEVELOPERS.md).
pub const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Environment variable naming the MySQL/MariaDB server (any database on it the
/// user can connect to; new databases are created next to it).
pub const MYSQL_URL_ENV: &str = "MODELGEN_TEST_MYSQL_URL";
/// Environment variable that, set to `1`, skips MySQL/MariaDB tests.
pub const SKIP_MYSQL_ENV: &str = "MODELGEN_SKIP_MYSQL";
/// The local test server: MariaDB, user `root` without a password, database `test`.
pub const DEFAULT_MYSQL_ADMIN_URL: &str = "mysql://root@127.0.0.1:3306/test";
/// Prefix of the databases this module creates, so strays are easy to find.
pub const TEST_DB_PREFIX: &str = "mg_test_";
/// Longest wait for the admin connection to the server.
const ADMIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `MODELGEN_SKIP_PG=1` asks to skip PostgreSQL tests.
pub fn postgres_skipped() -> bool {
    std::env::var(SKIP_PG_ENV).is_ok_and(|v| v == "1")
}

/// Whether `MODELGEN_SKIP_MYSQL=1` asks to skip MySQL/MariaDB tests.
pub fn mysql_skipped() -> bool {
    std::env::var(SKIP_MYSQL_ENV).is_ok_and(|v| v == "1")
}

/// Whether tests of `backend` are skipped by the environment (SQLite never is).
pub fn skipped(backend: Backend) -> bool {
    match backend {
        Backend::Sqlite => false,
        Backend::Postgres => postgres_skipped(),
        Backend::Mysql => mysql_skipped(),
    }
}

/// The backends a test should run against: SQLite, and PostgreSQL and MySQL
/// unless skipped.
pub fn backends_under_test() -> Vec<Backend> {
    [Backend::Sqlite, Backend::Postgres, Backend::Mysql]
        .into_iter()
        .filter(|b| !skipped(*b))
        .collect()
}

/// The PostgreSQL admin URL: `MODELGEN_TEST_PG_URL` or [`DEFAULT_PG_ADMIN_URL`].
pub fn pg_admin_url() -> String {
    std::env::var(PG_URL_ENV).unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_owned())
}

/// The MySQL admin URL: `MODELGEN_TEST_MYSQL_URL` or [`DEFAULT_MYSQL_ADMIN_URL`].
pub fn mysql_admin_url() -> String {
    std::env::var(MYSQL_URL_ENV).unwrap_or_else(|_| DEFAULT_MYSQL_ADMIN_URL.to_owned())
}

/// Keeps a test database alive; dropping it deletes the database (best effort:
/// failures are printed, never panicked on).
#[derive(Debug)]
pub struct TestDbGuard {
    url: String,
    kind: GuardKind,
}

#[derive(Debug)]
enum GuardKind {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { admin_url: String, name: String },
    Mysql { admin_url: String, name: String },
}

impl TestDbGuard {
    /// The fresh database's URL (e.g. to hand to a spawned binary as `DATABASE_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Ends every session connected to this database from the server's side,
    /// as a server restart or an idle-connection reaper would (PostgreSQL's
    /// `pg_terminate_backend`, MySQL's `KILL`); nothing for SQLite. Returns
    /// how many sessions were ended.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn end_sessions(&self) -> Result<usize, RepoError> {
        match &self.kind {
            GuardKind::Sqlite { .. } => Ok(0),
            GuardKind::Postgres { admin_url, name } => {
                #[derive(diesel::QueryableByName)]
                struct Ended {
                    #[diesel(sql_type = diesel::sql_types::Bool)]
                    ended: bool,
                }
                let mut admin = pg_admin(admin_url).await?;
                let ended: Vec<Ended> = diesel::sql_query(
                    "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind::<diesel::sql_types::Text, _>(name)
                .load(&mut admin)
                .await?;
                Ok(ended.iter().filter(|e| e.ended).count())
            }
            GuardKind::Mysql { admin_url, name } => {
                let mut admin = mysql_admin(admin_url).await?;
                mysql_kill_sessions(&mut admin, name).await
            }
        }
    }
}

impl Drop for TestDbGuard {
    fn drop(&mut self) {
        let (backend, admin_url, name) = match &self.kind {
            GuardKind::Sqlite { .. } => return,
            GuardKind::Postgres { admin_url, name } => (Backend::Postgres, admin_url, name),
            GuardKind::Mysql { admin_url, name } => (Backend::Mysql, admin_url, name),
        };
        let (admin_url, db_name) = (admin_url.clone(), name.clone());
        // Drop cannot await, and may run inside a runtime: do the work on a
        // thread with its own small runtime and wait for it.
        let dropper = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return Err(e.to_string()),
            };
            runtime.block_on(async {
                drop_database(backend, &admin_url, &db_name)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        match dropper.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {name}: {e}"),
            Err(_) => eprintln!("warning: dropping test database {name} panicked"),
        }
    }
}

/// Runs one statement on a fresh admin connection to the server of `backend`.
async fn admin_execute(backend: Backend, admin_url: &str, sql: &str) -> Result<(), RepoError> {
    match backend {
        Backend::Mysql => {
            let mut admin = mysql_admin(admin_url).await?;
            diesel::sql_query(sql).execute(&mut admin).await?;
        }
        _ => {
            let mut admin = pg_admin(admin_url).await?;
            diesel::sql_query(sql).execute(&mut admin).await?;
        }
    }
    Ok(())
}

/// An admin connection to the PostgreSQL server of `admin_url`.
async fn pg_admin(admin_url: &str) -> Result<AsyncPgConnection, RepoError> {
    admin_connect(admin_url).await
}

/// An admin connection to the MySQL server of `admin_url`.
async fn mysql_admin(admin_url: &str) -> Result<AsyncMysqlConnection, RepoError> {
    admin_connect(admin_url).await
}

/// A connection to `admin_url`, within [`ADMIN_CONNECT_TIMEOUT`].
async fn admin_connect<C: AsyncConnection>(admin_url: &str) -> Result<C, RepoError> {
    tokio::time::timeout(ADMIN_CONNECT_TIMEOUT, C::establish(admin_url))
        .await
        .map_err(|_| {
            RepoError::Unavailable(format!(
                "no answer from {admin_url} within {ADMIN_CONNECT_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| RepoError::Unavailable(format!("cannot connect to {admin_url}: {e}")))
}

/// Drops the database `name` on the server of `admin_url`, ending the
/// sessions still connected to it first (PostgreSQL's `WITH (FORCE)`; on
/// MySQL, see [`mysql_force_drop`]). Does nothing for SQLite.
///
/// # Errors
/// When the server cannot be reached or refuses the drop.
pub async fn drop_database(backend: Backend, admin_url: &str, name: &str) -> Result<(), RepoError> {
    match backend {
        Backend::Sqlite => Ok(()),
        Backend::Mysql => mysql_force_drop(admin_url, name).await,
        Backend::Postgres => {
            admin_execute(
                backend,
                admin_url,
                &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            )
            .await
        }
    }
}

/// MySQL's `DROP DATABASE` waits for the metadata locks of every session that
/// still has a transaction open on it (for `lock_wait_timeout`, a year by
/// default), and it has no `WITH (FORCE)`: end those sessions first, and bound
/// the wait, so a test that leaves a session behind (a frozen proxy, a killed
/// service) warns instead of hanging the suite.
async fn mysql_force_drop(admin_url: &str, db_name: &str) -> Result<(), RepoError> {
    let mut admin = mysql_admin(admin_url).await?;
    mysql_kill_sessions(&mut admin, db_name).await?;
    diesel::sql_query("SET SESSION lock_wait_timeout = 30")
        .execute(&mut admin)
        .await?;
    diesel::sql_query(format!("DROP DATABASE IF EXISTS `{db_name}`"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// Ends (`KILL`) every session of the MySQL server that uses the database
/// `db_name`, other than `admin`'s own. Returns how many it ended.
async fn mysql_kill_sessions(
    admin: &mut AsyncMysqlConnection,
    db_name: &str,
) -> Result<usize, RepoError> {
    #[derive(diesel::QueryableByName)]
    struct Session {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let sessions: Vec<Session> = diesel::sql_query(
        "SELECT CAST(ID AS SIGNED) AS id FROM information_schema.PROCESSLIST \
         WHERE DB = ? AND ID <> CONNECTION_ID()",
    )
    .bind::<diesel::sql_types::Text, _>(db_name)
    .load(admin)
    .await?;
    let mut ended = 0;
    for session in sessions {
        // It may have ended by itself meanwhile: that is what we want anyway.
        if diesel::sql_query(format!("KILL {}", session.id))
            .execute(admin)
            .await
            .is_ok()
        {
            ended += 1;
        }
    }
    Ok(ended)
}

/// A new database name: [`TEST_DB_PREFIX`] and a lowercase ULID.
fn new_db_name() -> String {
    format!(
        "{TEST_DB_PREFIX}{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    )
}

/// `admin_url` with its database replaced by `name`.
fn url_with_database(admin_url: &str, env: &str, name: &str) -> Result<String, RepoError> {
    let mut url =
        url::Url::parse(admin_url).map_err(|e| RepoError::UnsupportedUrl(format!("{env}: {e}")))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// Creates and migrates a database no other test uses.
///
/// # Errors
/// [`RepoError::Unavailable`] when the server cannot be reached or the temp
/// directory cannot be made, [`RepoError::Migration`] when migrating fails.
pub async fn try_fresh_database(backend: Backend) -> Result<(Database, TestDbGuard), RepoError> {
    let guard = match backend {
        Backend::Sqlite => {
            let dir = tempfile::Builder::new()
                .prefix("modelgen-test-")
                .tempdir()
                .map_err(|e| RepoError::Unavailable(format!("tempdir: {e}")))?;
            let path = dir.path().join("modelgen.db");
            TestDbGuard {
                url: format!("sqlite://{}", path.display()),
                kind: GuardKind::Sqlite { _dir: dir },
            }
        }
        Backend::Postgres => {
            let admin_url = pg_admin_url();
            let name = new_db_name();
            let url = url_with_database(&admin_url, PG_URL_ENV, &name)?;
            admin_execute(backend, &admin_url, &format!("CREATE DATABASE \"{name}\"")).await?;
            TestDbGuard {
                url,
                kind: GuardKind::Postgres { admin_url, name },
            }
        }
        Backend::Mysql => {
            let admin_url = mysql_admin_url();
            let name = new_db_name();
            let url = url_with_database(&admin_url, MYSQL_URL_ENV, &name)?;
            admin_execute(backend, &admin_url, &format!("CREATE DATABASE `{name}`")).await?;
            TestDbGuard {
                url,
                kind: GuardKind::Mysql { admin_url, name },
            }
        }
    };
    let db = Database::connect(guard.url(), PoolOptions::default()).await?;
    db.migrate().await?;
    Ok((db, guard))
}

/// [`try_fresh_database`] for tests: panics with the reason (and the
/// `MODELGEN_SKIP_PG=1` / `MODELGEN_SKIP_MYSQL=1` hint) when the database
/// cannot be made.
pub async fn fresh_database(backend: Backend) -> (Database, TestDbGuard) {
    match try_fresh_database(backend).await {
        Ok(pair) => pair,
        Err(e) => panic!(
            "cannot create a fresh {backend} test database: {e}{}",
            match backend {
                Backend::Sqlite => String::new(),
                Backend::Postgres => format!(
                    " (server: {}; set {SKIP_PG_ENV}=1 to skip PostgreSQL tests)",
                    pg_admin_url()
                ),
                Backend::Mysql => format!(
                    " (server: {}; set {SKIP_MYSQL_ENV}=1 to skip MySQL tests)",
                    mysql_admin_url()
                ),
            }
        ),
    }
}

/// A TCP proxy on the loopback that forwards to a database server until it is
/// frozen, then stops answering while keeping every connection open: what a
/// hung database (a stopped process, a partition, a full disk) looks like to
/// a client. Connections accepted while frozen are held and never forwarded.
/// The proxy stops when dropped, and closes every connection it holds then, so
/// the server ends their sessions (and rolls back what they left open).
#[derive(Debug)]
pub struct FreezableProxy {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    /// Starts forwarding `127.0.0.1:<port>` to `target` (`host:port`).
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(target: String) -> std::io::Result<FreezableProxy> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = frozen.clone();
        let accept = tokio::spawn(async move {
            // Owned by this task: aborting it drops the set, which aborts
            // every connection's task.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let flag = flag.clone();
                let target = target.clone();
                connections.spawn(async move {
                    if std::sync::atomic::AtomicBool::load(&flag, Ordering::SeqCst) {
                        let _held = inbound;
                        return std::future::pending::<()>().await;
                    }
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_server, to_server) = outbound.into_split();
                    tokio::join!(
                        pump(from_client, to_server, flag.clone()),
                        pump(from_server, to_client, flag)
                    );
                });
            }
        });
        Ok(FreezableProxy {
            port,
            frozen,
            accept,
        })
    }

    /// The loopback port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` with its host and port replaced by this proxy's.
    ///
    /// # Errors
    /// When `url` does not parse or cannot take a host.
    pub fn url_through(&self, url: &str) -> Result<String, RepoError> {
        let mut parsed =
            url::Url::parse(url).map_err(|e| RepoError::UnsupportedUrl(e.to_string()))?;
        parsed
            .set_host(Some("127.0.0.1"))
            .and_then(|()| {
                parsed
                    .set_port(Some(self.port))
                    .map_err(|()| url::ParseError::InvalidPort)
            })
            .map_err(|e| RepoError::UnsupportedUrl(e.to_string()))?;
        Ok(parsed.to_string())
    }

    /// From now on nothing more is forwarded in either direction, and new
    /// connections are accepted and held without an answer.
    pub fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// New connections are forwarded again (those frozen stay silent).
    pub fn thaw(&self) {
        self.frozen
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to` until either side closes; once `frozen`, keeps
/// whatever it reads and never delivers it.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if std::sync::atomic::AtomicBool::load(&frozen, std::sync::atomic::Ordering::SeqCst) {
            let _held = (from, to);
            return std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Opens another [`Database`] on an existing MySQL database `url` whose
/// connections first run `prelude` (for example `SET time_zone = '+08:00'`,
/// as a server configured for another zone would start them), then the
/// service's own session setup. For tests that the setup wins.
///
/// # Errors
/// As [`Database::connect`].
pub async fn connect_mysql_with_session_prelude(
    url: &str,
    prelude: &str,
) -> Result<Database, RepoError> {
    let db = Database::connect_lazy_with(url, PoolOptions::default(), prelude.to_owned())?;
    crate::TaskRepository::ping(&db).await?;
    Ok(db)
}

/// The value of `expression` (SQL evaluating to text, e.g. `@@session.time_zone`)
/// on one of `db`'s pooled MySQL connections: what the service's own sessions see.
///
/// # Errors
/// [`RepoError::UnsupportedUrl`] for a database that is not MySQL, or a query error.
pub async fn mysql_session_value(db: &Database, expression: &str) -> Result<String, RepoError> {
    db.mysql_session_value(expression).await
}
