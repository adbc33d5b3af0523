//! The `image_location` migration on rows written before it: a stored image
//! keeps its key and loses its frozen URL (URLs are rendered on read now), a
//! row without a key keeps its URL as a remote image; and its down migration
//! restores the old shape. Run on each backend by applying the migration's own
//! SQL files to a database put back in the old shape.

use diesel::connection::SimpleConnection as _;
use diesel_async::{
    AsyncConnection as _, AsyncMysqlConnection, AsyncPgConnection, SimpleAsyncConnection as _,
};
use modelgen_persistence::testing::{fresh_database, skipped};
use modelgen_persistence::{Backend, ImageLocation, ImageRepository};

use crate::support::{create, new_task, t0};

const SQLITE_UP: &str =
    include_str!("../../../../migrations/sqlite/2026-12-02-000000_image_location/up.sql");
const SQLITE_DOWN: &str =
    include_str!("../../../../migrations/sqlite/2026-12-02-000000_image_location/down.sql");
const PG_UP: &str =
    include_str!("../../../../migrations/postgres/2026-12-02-000000_image_location/up.sql");
const PG_DOWN: &str =
    include_str!("../../../../migrations/postgres/2026-12-02-000000_image_location/down.sql");
const MYSQL_UP: &str =
    include_str!("../../../../migrations/mysql/2026-12-02-000000_image_location/up.sql");
const MYSQL_DOWN: &str =
    include_str!("../../../../migrations/mysql/2026-12-02-000000_image_location/down.sql");

pub(crate) async fn exec(backend: Backend, url: &str, sql: &str) -> Result<(), String> {
    match backend {
        Backend::Sqlite => {
            use diesel::Connection as _;
            let path = url.trim_start_matches("sqlite://");
            let mut conn = diesel::SqliteConnection::establish(path).map_err(|e| e.to_string())?;
            conn.batch_execute(sql).map_err(|e| e.to_string())
        }
        Backend::Postgres => {
            let mut conn = AsyncPgConnection::establish(url)
                .await
                .map_err(|e| e.to_string())?;
            conn.batch_execute(sql).await.map_err(|e| e.to_string())
        }
        Backend::Mysql => {
            let mut conn = AsyncMysqlConnection::establish(url)
                .await
                .map_err(|e| e.to_string())?;
            conn.batch_execute(sql).await.map_err(|e| e.to_string())
        }
    }
}

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
    let task = create(&db, new_task("alice", None, t0())).await;
    let id = task.task_id;
    // Back to the old shape, with rows as modelgen wrote them then.
    exec(backend, guard.url(), down).await.unwrap();
    let old_rows = format!(
        "INSERT INTO ai_generation_image (task_id, angle, image_url, storage_key, image_base64, mime, width, height, bytes, created_at) VALUES \
         ('{id}', NULL, 'http://127.0.0.1:0/images/results/{id}/0.png', 'results/{id}/0.png', NULL, 'image/png', 768, 1024, 2048, '2026-11-30 10:00:00'), \
         ('{id}', NULL, 'https://legacy.example.com/a.png', '', NULL, 'image/png', 10, 20, 30, '2026-11-30 10:00:01');"
    );
    exec(backend, guard.url(), &old_rows).await.unwrap();
    exec(backend, guard.url(), up).await.unwrap();

    let images = db.images_for_task(&id).await.unwrap();
    assert_eq!(images.len(), 2, "{backend}");
    assert_eq!(
        images[0].location,
        ImageLocation::Stored(format!("results/{id}/0.png")),
        "{backend}: the key is kept, the frozen URL dropped"
    );
    assert_eq!(
        (
            images[0].mime.as_deref(),
            images[0].width,
            images[0].height,
            images[0].bytes
        ),
        (Some("image/png"), Some(768), Some(1024), Some(2048))
    );
    assert_eq!(
        images[1].location,
        ImageLocation::Remote("https://legacy.example.com/a.png".into()),
        "{backend}: a row without a key keeps its URL"
    );
    // Exactly one of key and URL: both NULL is refused.
    let neither = format!(
        "INSERT INTO ai_generation_image (task_id, created_at) VALUES ('{id}', '2026-11-30 10:00:02');"
    );
    assert!(
        exec(backend, guard.url(), &neither).await.is_err(),
        "{backend}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_existing_rows_are_migrated() {
    case(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_existing_rows_are_migrated() {
    case(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_existing_rows_are_migrated() {
    case(Backend::Mysql).await;
}
