//! The `fair_queue` migration on rows written before it: each user's queued
//! tasks get ranks 0, 1, 2, … in due order, so the users take turns from the
//! first claim on; tasks running upstream, ended or parked get none. Run on
//! each backend by applying the migration's own SQL files to a database put
//! back in the old shape.

use std::time::Duration;

use modelgen_persistence::testing::{fresh_database, skipped};
use modelgen_persistence::{Backend, TaskRepository};

use crate::image_migration::exec;
use crate::support::{at, create, new_task};

const SQLITE_UP: &str =
    include_str!("../../../../migrations/sqlite/2026-12-02-200000_fair_queue/up.sql");
const SQLITE_DOWN: &str =
    include_str!("../../../../migrations/sqlite/2026-12-02-200000_fair_queue/down.sql");
const PG_UP: &str =
    include_str!("../../../../migrations/postgres/2026-12-02-200000_fair_queue/up.sql");
const PG_DOWN: &str =
    include_str!("../../../../migrations/postgres/2026-12-02-200000_fair_queue/down.sql");
const MYSQL_UP: &str =
    include_str!("../../../../migrations/mysql/2026-12-02-200000_fair_queue/up.sql");
const MYSQL_DOWN: &str =
    include_str!("../../../../migrations/mysql/2026-12-02-200000_fair_queue/down.sql");

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
    let mut a = Vec::new();
    for i in 0..3 {
        a.push(create(&db, new_task("a", None, at(i))).await.task_id);
    }
    let b = create(&db, new_task("b", None, at(10))).await.task_id;
    let running = create(&db, new_task("a", None, at(20))).await.task_id;
    let parked = create(&db, new_task("b", None, at(30))).await.task_id;
    let ended = create(&db, new_task("b", None, at(40))).await.task_id;
    exec(backend, guard.url(), down).await.unwrap();
    let old_rows = format!(
        "UPDATE ai_generation_task SET external_task_id = 'up-r', submitted_at = next_run_at, \
         next_run_at = '2100-01-01 00:00:00' \
         WHERE task_id = '{running}'; \
         UPDATE ai_generation_task SET next_run_at = '9999-12-31 23:59:59.999999' \
         WHERE task_id = '{parked}'; \
         UPDATE ai_generation_task SET status = 'cancelled' WHERE task_id = '{ended}';"
    );
    exec(backend, guard.url(), &old_rows).await.unwrap();
    exec(backend, guard.url(), up).await.unwrap();

    let rank = |id| {
        let db = db.clone();
        async move { db.get_task(&id).await.unwrap().queue_rank }
    };
    for (i, id) in a.iter().enumerate() {
        assert_eq!(rank(*id).await, Some(i as i64), "{backend}: a's task {i}");
    }
    assert_eq!(rank(b).await, Some(0), "{backend}: b takes turns with a");
    for (name, id) in [("running", running), ("parked", parked), ("ended", ended)] {
        assert_eq!(rank(id).await, None, "{backend}: {name}");
    }
    let batch = db
        .claim_due_tasks("w", at(1_000), Duration::from_secs(30), 2)
        .await
        .unwrap();
    assert_eq!(
        batch.iter().map(|t| t.task_id).collect::<Vec<_>>(),
        vec![a[0], b],
        "{backend}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queued_tasks_are_ranked() {
    case(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_queued_tasks_are_ranked() {
    case(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_queued_tasks_are_ranked() {
    case(Backend::Mysql).await;
}
