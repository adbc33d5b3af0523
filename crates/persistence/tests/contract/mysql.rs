//! MySQL/MariaDB only: the session time zone, the schema's character set,
//! collation and timestamp types, the earlier service's URL spelling, and
//! migrations racing from several replicas. Each test fails when
//! MariaDB is unreachable unless `MODELGEN_SKIP_MYSQL=1`.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text, Unsigned};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection};
use modelgen_persistence::testing::{
    connect_mysql_with_session_prelude, fresh_database, mysql_session_value, skipped,
};
use modelgen_persistence::{Backend, Database, PoolOptions, TaskRepository};

use crate::support::{create, new_task};

/// A fresh migrated MariaDB database, or `None` when MySQL tests are skipped.
async fn fresh() -> Option<(Database, modelgen_persistence::testing::TestDbGuard)> {
    if skipped(Backend::Mysql) {
        eprintln!("skipped: MODELGEN_SKIP_MYSQL=1");
        return None;
    }
    Some(fresh_database(Backend::Mysql).await)
}

/// A plain driver connection to `url` (around the service), with `setup` run first.
async fn raw(url: &str, setup: &str) -> AsyncMysqlConnection {
    let mut conn = AsyncMysqlConnection::establish(url).await.unwrap();
    if !setup.is_empty() {
        conn.batch_execute(setup).await.unwrap();
    }
    conn
}

#[derive(QueryableByName, Debug)]
struct One {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

async fn text_rows(conn: &mut AsyncMysqlConnection, sql: &str) -> Vec<Option<String>> {
    diesel::sql_query(sql)
        .load::<One>(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.v)
        .collect()
}

/// An instant with microseconds and a wall-clock time that differs between
/// UTC and +08:00 by date (23:30 UTC is 07:30 the next day in +08:00).
fn instant() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_995_000, 0).unwrap() + TimeDelta::microseconds(654_321)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_store_and_read_utc_with_microseconds_whatever_the_session_time_zone() {
    let Some((db, guard)) = fresh().await else {
        return;
    };
    // Sessions that start in +08:00, as on a server whose default zone is
    // Asia/Shanghai: the service's own setup must bring them back to UTC.
    let eastern = connect_mysql_with_session_prelude(guard.url(), "SET time_zone = '+08:00'")
        .await
        .unwrap();
    assert_eq!(
        mysql_session_value(&eastern, "@@session.time_zone")
            .await
            .unwrap(),
        "+00:00"
    );
    let created = instant();
    assert_eq!(created.to_rfc3339(), "2026-11-29T23:30:00.654321+00:00");
    let task = create(&eastern, new_task("tz", None, created)).await;
    assert_eq!(task.created_at, created);
    // Both pools read the same instant back, to the microsecond.
    assert_eq!(eastern.get_task(&task.task_id).await.unwrap(), task);
    assert_eq!(db.get_task(&task.task_id).await.unwrap(), task);

    // The stored value is the UTC wall clock, whatever zone a reader's
    // session is in (a `TIMESTAMP` column would show 07:30 on the 30th here).
    let mut shanghai = raw(guard.url(), "SET time_zone = '+08:00'").await;
    assert_eq!(
        text_rows(&mut shanghai, "SELECT @@session.time_zone AS v").await,
        vec![Some("+08:00".to_owned())]
    );
    let stored = text_rows(
        &mut shanghai,
        &format!(
            "SELECT DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s.%f') AS v \
             FROM ai_generation_task WHERE task_id = '{}'",
            task.task_id
        ),
    )
    .await;
    assert_eq!(stored, vec![Some("2026-11-29 23:30:00.654321".to_owned())]);

    // Claims compare the stored UTC with the caller's UTC clock.
    let lease = std::time::Duration::from_secs(30);
    let early = eastern
        .claim_due_tasks("w", created - TimeDelta::microseconds(1), lease, 10)
        .await
        .unwrap();
    assert!(early.is_empty(), "claimed before it was due");
    let due = eastern
        .claim_due_tasks("w", created, lease, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        due[0].lease_expires_at,
        Some(created + TimeDelta::seconds(30))
    );
}

#[derive(QueryableByName, Debug)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    charset: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    collation: Option<String>,
    #[diesel(sql_type = Nullable<Unsigned<BigInt>>)]
    precision: Option<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_utf8mb4_binary_with_microsecond_datetimes() {
    let Some((_db, guard)) = fresh().await else {
        return;
    };
    let mut conn = raw(guard.url(), "").await;
    let columns: Vec<Column> = diesel::sql_query(
        "SELECT CAST(TABLE_NAME AS CHAR) AS table_name, CAST(COLUMN_NAME AS CHAR) AS column_name, \
         CAST(DATA_TYPE AS CHAR) AS data_type, CAST(CHARACTER_SET_NAME AS CHAR) AS charset, \
         CAST(COLLATION_NAME AS CHAR) AS collation, \
         CAST(DATETIME_PRECISION AS UNSIGNED) AS `precision` \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME NOT LIKE '\\_\\_%'",
    )
    .load(&mut conn)
    .await
    .unwrap();
    assert!(columns.len() >= 45, "{} columns", columns.len());
    let mut datetimes = 0;
    for c in &columns {
        let name = format!("{}.{}", c.table_name, c.column_name);
        if c.column_name.ends_with("_at") {
            datetimes += 1;
            assert_eq!(
                (c.data_type.as_str(), c.precision),
                ("datetime", Some(6)),
                "{name}"
            );
        }
        if let Some(charset) = &c.charset {
            assert_eq!(charset, "utf8mb4", "{name}");
            assert_eq!(c.collation.as_deref(), Some("utf8mb4_bin"), "{name}");
        }
    }
    assert_eq!(datetimes, 15, "every timestamp column checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_earlier_services_url_spelling_connects_to_the_same_database() {
    let Some((db, guard)) = fresh().await else {
        return;
    };
    let task = create(&db, new_task("legacy-url", None, instant())).await;
    let rest = guard.url().strip_prefix("mysql://").unwrap();
    for url in [
        format!("mysql+aiomysql://{rest}?charset=utf8mb4"),
        format!("mariadb://{rest}"),
    ] {
        let other = Database::connect(&url, PoolOptions::default())
            .await
            .unwrap();
        assert_eq!(other.backend(), Backend::Mysql);
        assert_eq!(other.get_task(&task.task_id).await.unwrap(), task, "{url}");
        assert!(other.pending_migrations().await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_at_once_apply_each_migration_once() {
    let Some((db, guard)) = fresh().await else {
        return;
    };
    let versions = db.pending_migrations().await.unwrap();
    assert!(versions.is_empty());
    // Back to an empty database, then four replicas start together.
    let mut conn = raw(guard.url(), "").await;
    conn.batch_execute(
        "DROP TABLE task_events; DROP TABLE callback_delivery; DROP TABLE ai_generation_image; \
         DROP TABLE ai_generation_task; DROP TABLE __diesel_schema_migrations;",
    )
    .await
    .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(
            Database::connect(guard.url(), PoolOptions::default())
                .await
                .unwrap(),
        );
    }
    let expected = replicas[0].pending_migrations().await.unwrap();
    assert!(expected.len() >= 2, "{expected:?}");
    let handles: Vec<_> = replicas
        .into_iter()
        .map(|r| tokio::spawn(async move { r.migrate().await }))
        .collect();
    let mut applied = Vec::new();
    for h in handles {
        applied.push(h.await.unwrap().unwrap());
    }
    applied.sort_by_key(Vec::len);
    assert_eq!(applied[3], expected, "one replica applies everything");
    assert!(
        applied[..3].iter().all(Vec::is_empty),
        "the others apply nothing: {applied:?}"
    );
    create(&db, new_task("after-race", None, instant())).await;
}

#[tokio::test]
async fn unreachable_mysql_is_unavailable_and_bad_urls_are_refused() {
    let options = PoolOptions {
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(2),
        connect_timeout: std::time::Duration::from_secs(2),
        ..PoolOptions::default()
    };
    // Port 1 on the loopback: nothing listens, the connection is refused.
    let result = Database::connect("mysql://root@127.0.0.1:1/test", options.clone()).await;
    assert!(
        matches!(result, Err(modelgen_persistence::RepoError::Unavailable(_))),
        "{result:?}"
    );
    for url in [
        "mysql://root:hunter2@127.0.0.1:3306",
        "mysql+aiomysql://root:hunter2@127.0.0.1:3306/db?charset=latin1",
        "mysql://root:hunter2@127.0.0.1:3306/db?unknown=1",
    ] {
        let result = Database::connect(url, options.clone()).await;
        match result {
            Err(modelgen_persistence::RepoError::UnsupportedUrl(message)) => {
                assert!(!message.contains("hunter2"), "{message}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}
