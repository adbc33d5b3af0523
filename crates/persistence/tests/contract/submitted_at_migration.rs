//! The `submitted_at` migration on rows written before it: a task already
//! sent upstream (it has an `external_task_id`) gets the start of its run as
//! its submission time, so its `TASK_TIMEOUT` is what it was before the
//! upgrade; a task still queued keeps NULL. Run on each backend by applying
//! the migration's own SQL files to a database put back in the old shape.

use modelgen_persistence::testing::{fresh_database, skipped};
use modelgen_persistence::{Backend, TaskRepository};

use crate::image_migration::exec;
use crate::support::{at, create, new_task, t0};

const SQLITE_UP: &str =
    include_str!("../../../../migrations/sqlite/2026-12-02-100000_submitted_at/up.sql");
const SQLITE_DOWN: &str =
    include_str!("../../../../migrations/sqlite/2026-12-02-100000_submitted_at/down.sql");
const PG_UP: &str =
    include_str!("../../../../migrations/postgres/2026-12-02-100000_submitted_at/up.sql");
const PG_DOWN: &str =
    include_str!("../../../../migrations/postgres/2026-12-02-100000_submitted_at/down.sql");
const MYSQL_UP: &str =
    include_str!("../../../../migrations/mysql/2026-12-02-100000_submitted_at/up.sql");
const MYSQL_DOWN: &str =
    include_str!("../../../../migrations/mysql/2026-12-02-100000_submitted_at/down.sql");

async fn case(backend: Backend) {
    if skipped(backend) {
        return;
    }
    let (db, guard) = fresh_database(backend).await;
    let (up, down) = match backend {
        Backend::Sqlite => (SQLITE_UP, SQLITE_DOWN),
        Backend::Postgres => (PG_UP, PG_DOWN),
        Backend::Mysql => (MYSQL_UP, MYSQL_DOWN),
    };
    let queued = create(&db, new_task("q", None, t0())).await.task_id;
    let running = create(&db, new_task("r", None, at(1_000))).await.task_id;
    let retried = create(&db, new_task("s", None, at(2_000))).await.task_id;
    exec(backend, guard.url(), down).await.unwrap();
    let old_rows = format!(
        "UPDATE ai_generation_task SET external_task_id = 'up-r', status = 'processing' WHERE task_id = '{running}'; \
         UPDATE ai_generation_task SET external_task_id = 'up-s', started_at = '2027-01-15 08:00:05' WHERE task_id = '{retried}';"
    );
    exec(backend, guard.url(), &old_rows).await.unwrap();
    exec(backend, guard.url(), up).await.unwrap();

    let get = |id| {
        let db = db.clone();
        async move { db.get_task(&id).await.unwrap() }
    };
    let q = get(queued).await;
    assert_eq!(q.submitted_at, None, "{backend}: still queued");
    assert_eq!(q.upstream_started_at(), None);
    let r = get(running).await;
    assert_eq!(
        r.submitted_at,
        Some(at(1_000)),
        "{backend}: from created_at"
    );
    let s = get(retried).await;
    assert_eq!(
        s.submitted_at,
        Some(at(5_000)),
        "{backend}: from the retry (started_at)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_submitted_at_is_backfilled() {
    case(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_submitted_at_is_backfilled() {
    case(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_submitted_at_is_backfilled() {
    case(Backend::Mysql).await;
}
