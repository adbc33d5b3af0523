//! `Database::connect`: URL schemes and failure modes.

use std::time::Duration;

use modelgen_persistence::{Backend, Database, PoolOptions, RepoError, TaskRepository};

#[tokio::test]
async fn unknown_schemes_are_refused_not_defaulted() {
    for url in [
        "mysqlx://root@127.0.0.1/modelgen",
        "mysql+://root@127.0.0.1/modelgen",
        "sqlite::memory:",
        "sqlite:relative.db",
        "sqlite://",
        "sqlite://data/x.db?mode=rwc",
        "data/modelgen.db",
        "",
    ] {
        let result = Database::connect(url, PoolOptions::default()).await;
        assert!(
            matches!(result, Err(RepoError::UnsupportedUrl(_))),
            "{url}: {result:?}"
        );
    }
}

#[tokio::test]
async fn sqlite_url_creates_parent_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/modelgen.db");
    let db = Database::connect(
        &format!("sqlite://{}", path.display()),
        PoolOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(db.backend(), Backend::Sqlite);
    let embedded = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/sqlite"
    ))
    .unwrap()
    .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
    .count();
    assert!(embedded >= 1);
    assert_eq!(db.pending_migrations().await.unwrap().len(), embedded);
    assert_eq!(db.migrate().await.unwrap().len(), embedded);
    assert!(path.is_file());
    db.ping().await.unwrap();
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable() {
    let options = PoolOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ..PoolOptions::default()
    };
    // Port 1 on the loopback: nothing listens, the connection is refused.
    let result = Database::connect("postgresql://postgres@127.0.0.1:1/postgres", options).await;
    assert!(
        matches!(result, Err(RepoError::Unavailable(_))),
        "{result:?}"
    );
}

#[test]
fn pool_options_defaults_are_documented_values() {
    let options = PoolOptions::default();
    assert_eq!(options.max_connections, 10);
    assert_eq!(options.acquire_timeout, Duration::from_secs(5));
    assert_eq!(options.connect_timeout, Duration::from_secs(2));
    assert_eq!(options.statement_timeout, Duration::from_secs(3));
    assert_eq!(options.call_timeout, Duration::from_secs(5));
}
