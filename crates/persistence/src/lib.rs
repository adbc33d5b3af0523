//! modelgen storage: the diesel schema and embedded migrations, the repository
//! traits the rest of the service talks to, their SQLite and PostgreSQL
//! implementation ([`Database`]), and the blob store for images
//! ([`ObjectBlobStore`]).
//!
//! The traits are the seam: the api crate holds `Arc<dyn TaskRepository>` etc.
//! and tests can use the mockall mocks behind the `mock` feature. Test binaries
//! of other crates get a fresh, migrated database per test from
//! `testing::fresh_database` (feature `testing`).

pub mod blob;
mod db;
pub mod error;
pub mod fair;
#[cfg(feature = "mysql")]
pub mod legacy;
pub mod models;
pub mod repo;
mod rows;
#[cfg(feature = "testing")]
pub mod s3_server;
mod schema;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "mock")]
pub use blob::MockBlobStore;
pub use blob::{
    Addressing, BlobError, BlobStore, BlobStream, ObjectBlobStore, S3Settings, UrlMode,
    is_public_key,
};
#[cfg(feature = "testing")]
pub use db::explain::QueryPlan;
pub use db::{
    Backend, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_STATEMENT_TIMEOUT, Database, PoolOptions, PoolStatus,
};
pub use error::RepoError;
pub use models::*;
pub use repo::{
    CallbackOutbox, DataRetention, EventLog, ImageRepository, TaskImport, TaskRepository,
};
#[cfg(feature = "mock")]
pub use repo::{
    MockCallbackOutbox, MockDataRetention, MockEventLog, MockImageRepository, MockTaskImport,
    MockTaskRepository,
};
