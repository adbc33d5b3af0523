//! A database that stops answering costs a caller a bounded, configured time
//! and ends in `RepoError::Unavailable` (the API's 503): a lock held by
//! another session (PostgreSQL `lock_timeout`, MySQL `innodb_lock_wait_timeout`,
//! SQLite's busy timeout), and a
//! server that accepted the connection and went silent (the client-side call
//! timeout). Each runs on every backend under test.

use std::time::{Duration, Instant};

use modelgen_domain::TaskEvent;
use modelgen_persistence::testing::{FreezableProxy, backends_under_test, fresh_database};
use modelgen_persistence::{
    Backend, Database, Fence, PoolOptions, RepoError, TaskChange, TaskRepository,
};

use crate::support::{create, new_task, t0};

/// Budgets far below the defaults, so the tests are quick.
fn tight() -> PoolOptions {
    PoolOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(1_000),
        connect_timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_millis(500),
        call_timeout: Duration::from_millis(1_500),
    }
}

/// What the assertions allow: the budgets above are at most 1.5 s, so a call
/// that takes this long did not honour them (the earlier fixed budgets took
/// 5 to 10 s, and a hung read had no bound at all). The margin absorbs a
/// loaded test machine.
const BOUND: Duration = Duration::from_secs(4);

/// Holds a write lock on the task table from another session until dropped.
#[expect(dead_code, reason = "the connection is only held, to keep its lock")]
enum TableLock {
    Sqlite(diesel::SqliteConnection),
    Postgres(Box<diesel_async::AsyncPgConnection>),
    Mysql(Box<diesel_async::AsyncMysqlConnection>),
}

async fn lock_task_table(backend: Backend, url: &str) -> TableLock {
    match backend {
        Backend::Sqlite => {
            use diesel::Connection as _;
            use diesel::connection::SimpleConnection as _;
            let path = url.strip_prefix("sqlite://").unwrap();
            let mut conn = diesel::SqliteConnection::establish(path).unwrap();
            // In WAL mode readers go on; every writer waits for this one.
            conn.batch_execute("BEGIN EXCLUSIVE").unwrap();
            TableLock::Sqlite(conn)
        }
        Backend::Postgres => {
            use diesel_async::{AsyncConnection as _, SimpleAsyncConnection as _};
            let mut conn = diesel_async::AsyncPgConnection::establish(url)
                .await
                .unwrap();
            conn.batch_execute("BEGIN; LOCK TABLE ai_generation_task IN ACCESS EXCLUSIVE MODE;")
                .await
                .unwrap();
            TableLock::Postgres(Box::new(conn))
        }
        Backend::Mysql => {
            use diesel_async::{AsyncConnection as _, SimpleAsyncConnection as _};
            let mut conn = diesel_async::AsyncMysqlConnection::establish(url)
                .await
                .unwrap();
            // Every row locked for update: writers wait on the row locks.
            conn.batch_execute("BEGIN; SELECT count(*) FROM ai_generation_task FOR UPDATE;")
                .await
                .unwrap();
            TableLock::Mysql(Box::new(conn))
        }
    }
}

fn cancel() -> TaskChange {
    TaskChange {
        event: Some(TaskEvent::Cancelled),
        ..TaskChange::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_another_session_gives_unavailable_within_the_statement_timeout() {
    for backend in backends_under_test() {
        let (_migrated, guard) = fresh_database(backend).await;
        let db = Database::connect(guard.url(), tight()).await.unwrap();
        let task = create(&db, new_task("u-lock", None, t0())).await;

        let lock = lock_task_table(backend, guard.url()).await;
        let started = Instant::now();
        let result = db
            .update_task(&task.task_id, &Fence::Unfenced, t0(), cancel())
            .await;
        let waited = started.elapsed();
        assert!(
            matches!(result, Err(RepoError::Unavailable(_))),
            "{backend}: {result:?}"
        );
        assert!(waited < BOUND, "{backend}: waited {waited:?}");
        drop(lock);

        // Nothing was written, and the database serves again.
        let after = db.get_task(&task.task_id).await.unwrap();
        assert_eq!(after.status, task.status, "{backend}");
        db.update_task(&task.task_id, &Fence::Unfenced, t0(), cancel())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_gives_unavailable_within_the_call_timeout() {
    // Only network databases can hang this way; SQLite is a local file.
    for backend in backends_under_test()
        .into_iter()
        .filter(|b| *b != Backend::Sqlite)
    {
        let (_migrated, guard) = fresh_database(backend).await;
        let server = url::Url::parse(guard.url()).unwrap();
        let target = format!(
            "{}:{}",
            server.host_str().unwrap(),
            server.port_or_known_default().unwrap()
        );
        let proxy = FreezableProxy::start(target).await.unwrap();
        let db = Database::connect(&proxy.url_through(guard.url()).unwrap(), tight())
            .await
            .unwrap();
        let task = create(&db, new_task("u-hung", None, t0())).await;

        proxy.freeze();
        // Pooled connections now hang mid-query; new ones hang in the handshake.
        for call in 0..3 {
            let started = Instant::now();
            let result = db.get_task(&task.task_id).await;
            let waited = started.elapsed();
            assert!(
                matches!(result, Err(RepoError::Unavailable(_))),
                "{backend} call {call}: {result:?}"
            );
            assert!(waited < BOUND, "{backend} call {call}: waited {waited:?}");
        }
        let started = Instant::now();
        let pending = db.pending_migrations().await;
        assert!(pending.is_err(), "{backend}: {pending:?}");
        assert!(started.elapsed() < BOUND, "{backend}: readiness hung");

        proxy.thaw();
        let mut recovered = None;
        for _ in 0..20 {
            if let Ok(t) = db.get_task(&task.task_id).await {
                recovered = Some(t);
                break;
            }
        }
        assert_eq!(
            recovered.map(|t| t.task_id),
            Some(task.task_id),
            "{backend}: no recovery after the server answered again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_ended_are_replaced_without_a_failed_call() {
    // A server restart or an idle reaper ends pooled sessions from the
    // server's side. The pool must see that at checkout (PostgreSQL verifies
    // only idle connections with a round trip: crates/persistence/src/db/postgres.rs)
    // and open new ones, so no caller gets an error for it.
    for backend in backends_under_test()
        .into_iter()
        .filter(|b| *b != Backend::Sqlite)
    {
        let (_migrated, guard) = fresh_database(backend).await;
        let options = PoolOptions {
            max_connections: 4,
            ..tight()
        };
        let db = Database::connect(guard.url(), options).await.unwrap();
        let task = create(&db, new_task("u-ended", None, t0())).await;
        // Four reads at once: four pooled connections, just used (so not
        // verified again at their next checkout).
        let reads =
            futures_util::future::join_all((0..4).map(|_| db.get_task_with_images(&task.task_id)))
                .await;
        assert!(reads.iter().all(Result::is_ok), "{backend}: {reads:?}");
        let open = db.pool_status().open;
        assert!(open >= 2, "{backend}: {open} pooled connections");

        let ended = guard.end_sessions().await.unwrap();
        assert!(ended >= open, "{backend}: ended {ended} of {open} sessions");
        // The client learns of the close when its connection reads the
        // socket's end, a moment after the server ends the session.
        tokio::time::sleep(Duration::from_millis(300)).await;

        for call in 0..8 {
            let result = db.get_task_with_images(&task.task_id).await;
            assert!(
                matches!(&result, Ok((t, images)) if t.task_id == task.task_id && images.is_empty()),
                "{backend} call {call} after the server ended the sessions: {result:?}"
            );
        }
        let reads =
            futures_util::future::join_all((0..4).map(|_| db.get_task(&task.task_id))).await;
        assert!(reads.iter().all(Result::is_ok), "{backend}: {reads:?}");
    }
}
