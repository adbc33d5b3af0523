//! The simulator's durable state: an embedded SQLite file, `apimart-sim.db`, in the state
//! directory.
//!
//! The in-memory [`crate::state`] stays the source of every answer; this store only mirrors
//! each change, in the same critical section, so that a restarted simulator reloads what it
//! had promised: tasks (with their wall-clock timings, outcomes, faults and costs),
//! idempotency keys, one-shot faults already fired, the input images of tasks whose results
//! are not drawn yet, and the drawn result PNGs until their URLs expire.
//!
//! Why SQLite (already in the workspace through diesel): every change is one transaction, so
//! a crash at any point leaves either the old or the new state, never a torn record. The
//! file runs in WAL mode with `synchronous = NORMAL`: a commit survives the process being
//! killed (the data is in the operating system's hands when the call returns), and a power
//! loss can lose only the last commits, never consistency. `synchronous = FULL` would add
//! an fsync per commit (about 5 ms on the development machine), which would cap submits at
//! a few hundred per second under the state lock.
//!
//! The file is opened with `locking_mode = EXCLUSIVE`, so a second simulator pointed at the
//! same directory fails to start ([`StoreError::Locked`]) instead of silently diverging.

use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary, Integer, Text};
use diesel::sqlite::SqliteConnection;
use serde::{Deserialize, Serialize};

use crate::lifecycle::Outcome;
use crate::render::InputImage;
use crate::wire::ErrorStyle;

/// File name of the state database inside the state directory.
pub const STATE_FILE: &str = "apimart-sim.db";
/// Schema version written into the `meta` table; a file with a newer version is refused
/// rather than misread.
const SCHEMA_VERSION: i64 = 1;

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be created.
    #[error("cannot create the simulator state directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The path is not valid UTF-8 (SQLite is opened through a string).
    #[error("the simulator state path {0} is not valid UTF-8")]
    NonUtf8Path(PathBuf),
    /// Another simulator process holds the state file.
    #[error("the simulator state {0} is in use by another simulator process")]
    Locked(PathBuf),
    /// The file was written by a newer simulator.
    #[error(
        "the simulator state {path} has schema version {found}; this build reads up to {SCHEMA_VERSION}"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
    /// Opening the file failed.
    #[error("cannot open the simulator state {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The connection error.
        source: diesel::ConnectionError,
    },
    /// A query failed (disk full, corrupt file, …).
    #[error("simulator state query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A stored record could not be decoded.
    #[error("simulator state record for task {id} is unreadable: {source}")]
    Record {
        /// The task id.
        id: String,
        /// The decoding error.
        source: serde_json::Error,
    },
}

/// The persisted part of a task: everything needed to answer about it again after a
/// restart. Times are wall-clock unix milliseconds, so a task keeps running while the
/// simulator is down.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct TaskRecord {
    pub(crate) seq: u64,
    pub(crate) created_unix_ms: u64,
    pub(crate) duration_ms: u64,
    /// `None` with the `no-estimate` fault.
    pub(crate) estimated_secs: Option<u64>,
    pub(crate) outcome: Outcome,
    pub(crate) object_shape: bool,
    pub(crate) url_array: bool,
    pub(crate) n: u8,
    pub(crate) ratio: (u32, u32),
    pub(crate) long_side: u32,
    pub(crate) prompt_label: String,
    pub(crate) image_ttl_ms: u64,
    pub(crate) faults: TaskFaults,
    /// Whether the task was polled at least once (feeds `status-once`).
    pub(crate) polled: bool,
    /// Canonical hash of the submit body (feeds `max_tasks_per_body`).
    pub(crate) body_hash: u64,
    /// What the task costs once completed, in millionths of the balance unit.
    pub(crate) cost_micros: u64,
    /// Its inputs or results were dropped to keep the state within its budget: its result
    /// URLs answer as expired from then on.
    #[serde(default)]
    pub(crate) blobs_dropped: bool,
}

/// Per-task faults that act after submit.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct TaskFaults {
    pub(crate) status: Option<u16>,
    pub(crate) status_once: Option<u16>,
    pub(crate) slow_ms: Option<u64>,
    pub(crate) body: Option<ErrorStyle>,
    /// `result-addr`: where the result URLs point instead of the simulator.
    #[serde(default)]
    pub(crate) result_addr: Option<std::net::SocketAddr>,
}

/// An idempotency key as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyRecord {
    pub(crate) key: String,
    pub(crate) body_hash: u64,
    pub(crate) task_id: String,
    pub(crate) tasks_created: u64,
}

/// Everything read back at start.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) tasks: Vec<(String, TaskRecord)>,
    pub(crate) keys: Vec<KeyRecord>,
    /// `(kind, scope)` of one-shot faults already fired.
    pub(crate) once_fired: Vec<(String, String)>,
    /// The port the simulator listened on last time, if any.
    pub(crate) port: Option<u16>,
    /// Bytes of blobs (inputs and results) each task holds in the store.
    pub(crate) stored_sizes: std::collections::HashMap<String, u64>,
}

/// One change of a submit, written as one transaction.
#[derive(Debug, Default)]
pub(crate) struct SubmitWrite<'a> {
    pub(crate) task: Option<(&'a str, &'a TaskRecord, &'a [InputImage])>,
    pub(crate) key: Option<KeyRecord>,
    pub(crate) once_fired: Vec<(&'static str, String)>,
}

/// The open state file.
pub(crate) struct Store {
    conn: SqliteConnection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

#[derive(QueryableByName)]
struct TaskRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    record: String,
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = BigInt)]
    body_hash: i64,
    #[diesel(sql_type = Text)]
    task_id: String,
    #[diesel(sql_type = BigInt)]
    tasks_created: i64,
}

#[derive(QueryableByName)]
struct OnceRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    scope: String,
}

#[derive(QueryableByName)]
struct MetaRow {
    #[diesel(sql_type = Text)]
    value: String,
}

#[derive(QueryableByName)]
struct InputRow {
    #[diesel(sql_type = Integer)]
    kind: i32,
    #[diesel(sql_type = Binary)]
    data: Vec<u8>,
}

#[derive(QueryableByName)]
struct SizeRow {
    #[diesel(sql_type = Text)]
    task_id: String,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

#[derive(QueryableByName)]
struct ImageRow {
    #[diesel(sql_type = Binary)]
    png: Vec<u8>,
}

/// `InputImage` kinds in the `inputs` table.
const INPUT_ENCODED: i32 = 0;
const INPUT_URL: i32 = 1;
const INPUT_UNDECODABLE: i32 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY NOT NULL, body_hash INTEGER NOT NULL,
    task_id TEXT NOT NULL, tasks_created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS once_fired (
    kind TEXT NOT NULL, scope TEXT NOT NULL, PRIMARY KEY (kind, scope));
CREATE TABLE IF NOT EXISTS inputs (
    task_id TEXT NOT NULL, idx INTEGER NOT NULL, kind INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (task_id, idx));
CREATE TABLE IF NOT EXISTS images (
    task_id TEXT NOT NULL, idx INTEGER NOT NULL, png BLOB NOT NULL,
    PRIMARY KEY (task_id, idx));
";

/// SQLite stores integers as i64; hashes and counters are u64 bit patterns.
fn to_i64(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn to_u64(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

impl Store {
    /// Opens (creating when needed) `dir/apimart-sim.db` and takes its exclusive lock.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(STATE_FILE);
        let url = path
            .to_str()
            .ok_or_else(|| StoreError::NonUtf8Path(path.clone()))?
            .to_owned();
        let mut conn = SqliteConnection::establish(&url).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let locked = |e: diesel::result::Error| {
            if e.to_string().contains("locked") {
                StoreError::Locked(path.clone())
            } else {
                StoreError::Query(e)
            }
        };
        // EXCLUSIVE before WAL: the lock is taken by the first write below and kept for
        // the life of the connection (no shared-memory index either).
        conn.batch_execute(
            "PRAGMA busy_timeout = 0; PRAGMA locking_mode = EXCLUSIVE; \
             PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
        )
        .map_err(locked)?;
        conn.immediate_transaction(|c| c.batch_execute(SCHEMA))
            .map_err(locked)?;
        let mut store = Store { conn, path };
        match store.meta("schema_version")? {
            None => store.set_meta("schema_version", &SCHEMA_VERSION.to_string())?,
            Some(v) => {
                let found = v.parse::<i64>().unwrap_or(i64::MAX);
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        path: store.path,
                        found,
                    });
                }
            }
        }
        Ok(store)
    }

    fn meta(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        let rows: Vec<MetaRow> = diesel::sql_query("SELECT value FROM meta WHERE name = ?")
            .bind::<Text, _>(name)
            .load(&mut self.conn)?;
        Ok(rows.into_iter().next().map(|r| r.value))
    }

    fn set_meta(&mut self, name: &str, value: &str) -> Result<(), StoreError> {
        diesel::sql_query(
            "INSERT INTO meta (name, value) VALUES (?, ?) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind::<Text, _>(name)
        .bind::<Text, _>(value)
        .execute(&mut self.conn)?;
        Ok(())
    }

    /// Remembers the port, so that a restart can listen where earlier result URLs point.
    pub(crate) fn set_port(&mut self, port: u16) -> Result<(), StoreError> {
        self.set_meta("port", &port.to_string())
    }

    /// Reads everything but the blobs.
    pub(crate) fn load(&mut self) -> Result<Loaded, StoreError> {
        let rows: Vec<TaskRow> =
            diesel::sql_query("SELECT id, record FROM tasks").load(&mut self.conn)?;
        let tasks = rows
            .into_iter()
            .map(|row| {
                serde_json::from_str::<TaskRecord>(&row.record)
                    .map(|rec| (row.id.clone(), rec))
                    .map_err(|source| StoreError::Record { id: row.id, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let keys: Vec<KeyRow> = diesel::sql_query(
            "SELECT key, body_hash, task_id, tasks_created FROM idempotency_keys",
        )
        .load(&mut self.conn)?;
        let once: Vec<OnceRow> =
            diesel::sql_query("SELECT kind, scope FROM once_fired").load(&mut self.conn)?;
        let port = self.meta("port")?.and_then(|p| p.parse::<u16>().ok());
        let sizes: Vec<SizeRow> = diesel::sql_query(
            "SELECT task_id, SUM(bytes) AS bytes FROM ( \
               SELECT task_id, LENGTH(data) AS bytes FROM inputs \
               UNION ALL SELECT task_id, LENGTH(png) AS bytes FROM images) \
             GROUP BY task_id",
        )
        .load(&mut self.conn)?;
        Ok(Loaded {
            stored_sizes: sizes
                .into_iter()
                .map(|r| (r.task_id, u64::try_from(r.bytes).unwrap_or(0)))
                .collect(),
            tasks,
            keys: keys
                .into_iter()
                .map(|k| KeyRecord {
                    key: k.key,
                    body_hash: to_u64(k.body_hash),
                    task_id: k.task_id,
                    tasks_created: to_u64(k.tasks_created),
                })
                .collect(),
            once_fired: once.into_iter().map(|o| (o.kind, o.scope)).collect(),
            port: port.filter(|p| *p != 0),
        })
    }

    /// Writes what one submit changed, atomically.
    pub(crate) fn write_submit(&mut self, w: &SubmitWrite<'_>) -> Result<(), StoreError> {
        self.conn.immediate_transaction(|c| {
            if let Some((id, rec, inputs)) = w.task {
                put_task(c, id, rec)?;
                for (idx, input) in inputs.iter().enumerate() {
                    let (kind, data): (i32, &[u8]) = match input {
                        InputImage::Encoded(bytes) => (INPUT_ENCODED, bytes),
                        InputImage::Url { host } => (INPUT_URL, host.as_bytes()),
                        InputImage::Undecodable => (INPUT_UNDECODABLE, &[]),
                    };
                    diesel::sql_query(
                        "INSERT OR REPLACE INTO inputs (task_id, idx, kind, data) VALUES (?, ?, ?, ?)",
                    )
                    .bind::<Text, _>(id)
                    .bind::<BigInt, _>(i64::try_from(idx).unwrap_or(i64::MAX))
                    .bind::<Integer, _>(kind)
                    .bind::<Binary, _>(data)
                    .execute(c)?;
                }
            }
            if let Some(k) = &w.key {
                diesel::sql_query(
                    "INSERT INTO idempotency_keys (key, body_hash, task_id, tasks_created) \
                     VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET \
                     body_hash = excluded.body_hash, task_id = excluded.task_id, \
                     tasks_created = excluded.tasks_created",
                )
                .bind::<Text, _>(&k.key)
                .bind::<BigInt, _>(to_i64(k.body_hash))
                .bind::<Text, _>(&k.task_id)
                .bind::<BigInt, _>(to_i64(k.tasks_created))
                .execute(c)?;
            }
            for (kind, scope) in &w.once_fired {
                diesel::sql_query("INSERT OR IGNORE INTO once_fired (kind, scope) VALUES (?, ?)")
                    .bind::<Text, _>(*kind)
                    .bind::<Text, _>(scope)
                    .execute(c)?;
            }
            Ok::<_, diesel::result::Error>(())
        })?;
        Ok(())
    }

    /// Rewrites one task record (e.g. after its first poll).
    pub(crate) fn update_task(&mut self, id: &str, rec: &TaskRecord) -> Result<(), StoreError> {
        put_task(&mut self.conn, id, rec)?;
        Ok(())
    }

    /// The stored inputs of a task whose results are not drawn yet (empty when none).
    pub(crate) fn inputs(&mut self, id: &str) -> Result<Vec<InputImage>, StoreError> {
        let rows: Vec<InputRow> =
            diesel::sql_query("SELECT kind, data FROM inputs WHERE task_id = ? ORDER BY idx")
                .bind::<Text, _>(id)
                .load(&mut self.conn)?;
        Ok(rows
            .into_iter()
            .map(|r| match r.kind {
                INPUT_ENCODED => InputImage::Encoded(r.data),
                INPUT_URL => InputImage::Url {
                    host: String::from_utf8_lossy(&r.data).into_owned(),
                },
                _ => InputImage::Undecodable,
            })
            .collect())
    }

    /// The drawn result PNGs of a task, in order (empty when not drawn yet).
    pub(crate) fn images(&mut self, id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows: Vec<ImageRow> =
            diesel::sql_query("SELECT png FROM images WHERE task_id = ? ORDER BY idx")
                .bind::<Text, _>(id)
                .load(&mut self.conn)?;
        Ok(rows.into_iter().map(|r| r.png).collect())
    }

    /// Stores the drawn results and forgets the inputs, atomically.
    pub(crate) fn put_images(&mut self, id: &str, pngs: &[&[u8]]) -> Result<(), StoreError> {
        self.conn.immediate_transaction(|c| {
            for (idx, png) in pngs.iter().enumerate() {
                diesel::sql_query(
                    "INSERT OR REPLACE INTO images (task_id, idx, png) VALUES (?, ?, ?)",
                )
                .bind::<Text, _>(id)
                .bind::<BigInt, _>(i64::try_from(idx).unwrap_or(i64::MAX))
                .bind::<Binary, _>(*png)
                .execute(c)?;
            }
            diesel::sql_query("DELETE FROM inputs WHERE task_id = ?")
                .bind::<Text, _>(id)
                .execute(c)?;
            Ok::<_, diesel::result::Error>(())
        })?;
        Ok(())
    }

    /// Forgets a task's blobs (its URLs expired, or it ended without images).
    pub(crate) fn drop_blobs(&mut self, id: &str) -> Result<(), StoreError> {
        self.conn.immediate_transaction(|c| delete_blobs(c, id))?;
        Ok(())
    }

    /// Forgets a task's blobs and rewrites its record (which says so), atomically.
    pub(crate) fn drop_blobs_of(&mut self, id: &str, rec: &TaskRecord) -> Result<(), StoreError> {
        self.conn.immediate_transaction(|c| {
            delete_blobs(c, id)?;
            put_task(c, id, rec)
        })?;
        Ok(())
    }
}

fn delete_blobs(c: &mut SqliteConnection, id: &str) -> QueryResult<()> {
    for table in ["inputs", "images"] {
        diesel::sql_query(format!("DELETE FROM {table} WHERE task_id = ?"))
            .bind::<Text, _>(id)
            .execute(c)?;
    }
    Ok(())
}

fn put_task(c: &mut SqliteConnection, id: &str, rec: &TaskRecord) -> QueryResult<()> {
    let json = serde_json::to_string(rec)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    diesel::sql_query(
        "INSERT INTO tasks (id, record) VALUES (?, ?) \
         ON CONFLICT (id) DO UPDATE SET record = excluded.record",
    )
    .bind::<Text, _>(id)
    .bind::<Text, _>(json)
    .execute(c)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> TaskRecord {
        TaskRecord {
            seq,
            created_unix_ms: 1_700_000_000_000,
            duration_ms: 3000,
            estimated_secs: Some(3),
            outcome: Outcome::Complete,
            object_shape: false,
            url_array: true,
            n: 2,
            ratio: (3, 4),
            long_side: 256,
            prompt_label: "a prompt".into(),
            image_ttl_ms: 86_400_000,
            faults: TaskFaults {
                status_once: Some(503),
                ..TaskFaults::default()
            },
            polled: false,
            body_hash: u64::MAX - 7,
            cost_micros: 100_000,
            blobs_dropped: false,
        }
    }

    #[test]
    fn round_trips_everything_and_refuses_a_second_opener() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path()).unwrap();
            let rec = record(4);
            let inputs = [
                InputImage::Encoded(vec![1, 2, 3]),
                InputImage::Url {
                    host: "cdn.example".into(),
                },
                InputImage::Undecodable,
            ];
            store
                .write_submit(&SubmitWrite {
                    task: Some(("task_1", &rec, &inputs)),
                    key: Some(KeyRecord {
                        key: "k1".into(),
                        body_hash: u64::MAX,
                        task_id: "task_1".into(),
                        tasks_created: 1,
                    }),
                    once_fired: vec![("lost", "key:k1".into())],
                })
                .unwrap();
            store.set_port(4321).unwrap();
            assert!(matches!(
                Store::open(dir.path()),
                Err(StoreError::Locked(_))
            ));
            assert_eq!(store.inputs("task_1").unwrap().len(), 3);
            store.put_images("task_1", &[b"png0", b"png1"]).unwrap();
            assert!(store.inputs("task_1").unwrap().is_empty());
        }
        let mut store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.tasks, vec![("task_1".to_owned(), record(4))]);
        assert_eq!(loaded.keys[0].body_hash, u64::MAX);
        assert_eq!(loaded.once_fired, vec![("lost".into(), "key:k1".into())]);
        assert_eq!(loaded.port, Some(4321));
        assert_eq!(loaded.stored_sizes.get("task_1"), Some(&8));
        assert_eq!(
            store.images("task_1").unwrap(),
            vec![b"png0".to_vec(), b"png1".to_vec()]
        );
        store.drop_blobs("task_1").unwrap();
        assert!(store.images("task_1").unwrap().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path()).unwrap();
            store.set_meta("schema_version", "99").unwrap();
        }
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::NewerSchema { found: 99, .. })
        ));
    }
}
