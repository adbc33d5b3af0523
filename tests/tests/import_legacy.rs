//! `modelgen import legacy` end to end: the earlier service's four tables on
//! MariaDB (DDL from their public column list, docs/legacy.md), filled with a
//! few hundred rows of every type and status, imported by the real binary
//! into SQLite, PostgreSQL and MariaDB targets; then re-imported, changed,
//! dry-run, and edit/outfit run on an imported base model through the
//! service and the simulator. `--copy-images` fetches from a loopback server
//! and `--resume-unfinished` resumes a task by polling its upstream id.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use apimart_sim::{SimConfig, SimHandle, Simulator};
use chrono::{DateTime, TimeDelta, Utc};
use modelgen_e2e::{
    Api, Backend, DEADLINE, Service, TestDb, fixture_data_uri, modelgen_bin, skip_mysql, tiny_png,
};
use modelgen_persistence::{
    Database, ImageLocation, ImageRepository, PoolOptions, TaskQuery, TaskRepository, parked_until,
};
use mysql_async::prelude::Queryable as _;
use serde_json::{Value, json};

/// The four tables as the earlier service's SQLAlchemy models declare them
/// (`app/models/__init__.py`; docs/legacy.md lists the columns and shows
/// this DDL for users to copy: keep both the same), plus
/// `apimart_task_id`, which its later repositories read and write.
const LEGACY_DDL: &str = "
CREATE TABLE base_model_task (
    id INTEGER NOT NULL AUTO_INCREMENT,
    task_id VARCHAR(128) NOT NULL,
    request_id VARCHAR(64) NOT NULL,
    user_id VARCHAR(64) NOT NULL,
    gender VARCHAR(20) NULL,
    height_cm FLOAT NULL,
    weight_kg FLOAT NULL,
    age INTEGER NULL,
    skin_tone VARCHAR(50) NULL,
    body_shape VARCHAR(50) NULL,
    status VARCHAR(20) NOT NULL,
    progress INTEGER NOT NULL,
    error_message TEXT NULL,
    created_at DATETIME NOT NULL DEFAULT now(),
    updated_at DATETIME NOT NULL DEFAULT now(),
    completed_at DATETIME NULL,
    apimart_task_id VARCHAR(128) NULL,
    PRIMARY KEY (id),
    UNIQUE (task_id),
    INDEX (request_id),
    INDEX (user_id)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE edit_task (
    id INTEGER NOT NULL AUTO_INCREMENT,
    task_id VARCHAR(128) NOT NULL,
    request_id VARCHAR(64) NOT NULL,
    user_id VARCHAR(64) NOT NULL,
    base_model_id INTEGER NOT NULL,
    edit_instructions TEXT NOT NULL,
    status VARCHAR(20) NOT NULL,
    progress INTEGER NOT NULL,
    error_message TEXT NULL,
    created_at DATETIME NOT NULL DEFAULT now(),
    updated_at DATETIME NOT NULL DEFAULT now(),
    completed_at DATETIME NULL,
    apimart_task_id VARCHAR(128) NULL,
    PRIMARY KEY (id),
    UNIQUE (task_id),
    INDEX (request_id),
    INDEX (user_id),
    INDEX (base_model_id)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE outfit_task (
    id INTEGER NOT NULL AUTO_INCREMENT,
    task_id VARCHAR(128) NOT NULL,
    request_id VARCHAR(64) NOT NULL,
    user_id VARCHAR(64) NOT NULL,
    base_model_id INTEGER NOT NULL,
    angle VARCHAR(20) NOT NULL,
    outfit_description TEXT NULL,
    status VARCHAR(20) NOT NULL,
    progress INTEGER NOT NULL,
    error_message TEXT NULL,
    created_at DATETIME NOT NULL DEFAULT now(),
    updated_at DATETIME NOT NULL DEFAULT now(),
    completed_at DATETIME NULL,
    apimart_task_id VARCHAR(128) NULL,
    PRIMARY KEY (id),
    UNIQUE (task_id),
    INDEX (request_id),
    INDEX (user_id),
    INDEX (base_model_id)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE generation_image (
    id INTEGER NOT NULL AUTO_INCREMENT,
    task_type VARCHAR(20) NOT NULL,
    task_id INTEGER NOT NULL,
    angle VARCHAR(20) NULL,
    image_base64 LONGTEXT NULL,
    image_url VARCHAR(512) NULL,
    created_at DATETIME NOT NULL DEFAULT now(),
    PRIMARY KEY (id),
    INDEX (task_type),
    INDEX (task_id)
) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
";

/// The earlier database server's zone in these tests (`created_at`); its
/// code wrote `updated_at`/`completed_at` in UTC.
const SERVER_ZONE: &str = "Asia/Shanghai";
const SERVER_OFFSET_HOURS: i64 = 8;

/// One legacy task row, with the instant it stands for.
#[derive(Debug, Clone)]
struct Row {
    table: &'static str,
    id: i64,
    task_id: String,
    user_id: String,
    base_model_id: Option<i64>,
    angle: Option<String>,
    apimart: Option<String>,
    status: String,
    progress: i64,
    error: Option<String>,
    /// Creation instant (UTC).
    created: DateTime<Utc>,
}

impl Row {
    fn terminal(&self) -> bool {
        matches!(
            self.status.to_ascii_lowercase().as_str(),
            "completed" | "failed"
        )
    }
    fn completed(&self) -> bool {
        self.status.eq_ignore_ascii_case("completed")
    }
    /// `updated_at`/`completed_at` instant: 5 min after creation when
    /// terminal, 1 min when not.
    fn updated(&self) -> DateTime<Utc> {
        self.created + TimeDelta::minutes(if self.terminal() { 5 } else { 1 })
    }
}

#[derive(Debug, Clone)]
struct Image {
    id: i64,
    task_type: &'static str,
    task_id: i64,
    angle: Option<String>,
    url: Option<String>,
    inline: Option<String>,
    created: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Legacy {
    rows: Vec<Row>,
    images: Vec<Image>,
}

fn server_naive(t: DateTime<Utc>) -> String {
    (t + TimeDelta::hours(SERVER_OFFSET_HOURS))
        .naive_utc()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn utc_naive(t: DateTime<Utc>) -> String {
    t.naive_utc().format("%Y-%m-%d %H:%M:%S").to_string()
}

fn sql_text(v: Option<&str>) -> String {
    v.map_or("NULL".into(), |s| format!("'{}'", s.replace('\'', "''")))
}

const BASES: i64 = 120;
const EDITS: i64 = 90;
const OUTFITS: i64 = 90;
/// A base model with a status the earlier code never wrote: skipped, and the
/// edit and outfit built on it too.
const UNKNOWN_STATUS_BASE: i64 = 5;

/// A few hundred rows: every type and status (names and values, as
/// SQLAlchemy may have stored them), CJK users and messages, unfinished
/// tasks with and without an upstream id, images with URLs, without any, and
/// held only inline; plus rows that cannot be imported.
fn legacy_data(image_url: &dyn Fn(&str) -> String) -> Legacy {
    let statuses = [
        "COMPLETED",
        "COMPLETED",
        "FAILED",
        "PROCESSING",
        "SUBMITTED",
        "completed",
    ];
    let start = DateTime::parse_from_rfc3339("2025-11-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let mut data = Legacy::default();
    let mut image_id = 0;
    let mut n = 0_i64;
    for (table, count) in [
        ("base_model_task", BASES),
        ("edit_task", EDITS),
        ("outfit_task", OUTFITS),
    ] {
        for id in 1..=count {
            n += 1;
            let mut status = statuses[(n % 6) as usize].to_string();
            if table == "base_model_task" && id == UNKNOWN_STATUS_BASE {
                status = "CANCELLED".into();
            }
            let base_model_id = match (table, id) {
                ("base_model_task", _) => None,
                ("edit_task", 1) => Some(99_999),
                ("edit_task", 2) | ("outfit_task", 4) => Some(UNKNOWN_STATUS_BASE),
                _ => {
                    let b = (id * 7) % BASES + 1;
                    Some(if b == UNKNOWN_STATUS_BASE { b + 1 } else { b })
                }
            };
            let angle = (table == "outfit_task").then(|| {
                if id == 3 {
                    "top".to_string()
                } else {
                    ["front", "side", "BACK"][(id % 3) as usize].to_string()
                }
            });
            let unfinished = matches!(status.as_str(), "PROCESSING" | "SUBMITTED");
            let row = Row {
                table,
                id,
                task_id: format!("task_{:016x}", 0xa000_0000_u64 + n as u64),
                user_id: format!("用户-{}", n % 7),
                base_model_id,
                angle,
                apimart: (unfinished && n % 2 == 0).then(|| format!("task_01LEGACYUPSTREAM{n:08}")),
                progress: if unfinished {
                    30
                } else if status == "FAILED" {
                    10
                } else {
                    100
                },
                error: (status == "FAILED").then(|| format!("Apimart 调用失败: 上游超时 #{n}")),
                status,
                created: start + TimeDelta::minutes(7 * n),
            };
            if row.completed() {
                image_id += 1;
                let (url, inline) = if n % 10 == 0 {
                    (None, None)
                } else if table == "base_model_task" && id == 12 {
                    (
                        None,
                        Some(base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            tiny_png(12, 8),
                        )),
                    )
                } else {
                    (Some(image_url(&row.task_id)), None)
                };
                data.images.push(Image {
                    id: image_id,
                    task_type: match table {
                        "base_model_task" if id == 13 => "model",
                        "base_model_task" => "MODEL",
                        "edit_task" => "EDIT",
                        _ => "OUTFIT",
                    },
                    task_id: id,
                    angle: row.angle.clone(),
                    url,
                    inline,
                    created: row.updated(),
                });
            }
            data.rows.push(row);
        }
    }
    data
}

async fn fill(url: &str, data: &Legacy) {
    let mut conn = modelgen_e2e::mysql_connect(url).await.unwrap();
    conn.query_drop(LEGACY_DDL).await.unwrap();
    for row in &data.rows {
        let completed = row.terminal().then(|| utc_naive(row.updated()));
        let extra_cols = match row.table {
            "base_model_task" => "gender, height_cm, age",
            "edit_task" => "base_model_id, edit_instructions",
            _ => "base_model_id, angle, outfit_description",
        };
        let extra_vals = match row.table {
            "base_model_task" => "'女', 165.5, 28".to_string(),
            "edit_task" => format!("{}, '把头发改短一点'", row.base_model_id.unwrap()),
            _ => format!(
                "{}, {}, '白色连衣裙'",
                row.base_model_id.unwrap(),
                sql_text(row.angle.as_deref())
            ),
        };
        let request_id = format!(
            "5b0c1c7e-0000-4000-8000-{:012}",
            row.id + 1_000 * row.table.len() as i64
        );
        let sql = format!(
            "INSERT INTO {} (id, task_id, request_id, user_id, {extra_cols}, status, progress, \
             error_message, created_at, updated_at, completed_at, apimart_task_id) VALUES \
             ({}, '{}', '{}', '{}', {extra_vals}, '{}', {}, {}, '{}', '{}', {}, {})",
            row.table,
            row.id,
            row.task_id,
            request_id,
            row.user_id,
            row.status,
            row.progress,
            sql_text(row.error.as_deref()),
            server_naive(row.created),
            utc_naive(row.updated()),
            sql_text(completed.as_deref()),
            sql_text(row.apimart.as_deref()),
        );
        conn.query_drop(sql).await.unwrap();
    }
    for image in &data.images {
        conn.query_drop(format!(
            "INSERT INTO generation_image (id, task_type, task_id, angle, image_base64, image_url, created_at) \
             VALUES ({}, '{}', {}, {}, {}, {}, '{}')",
            image.id,
            image.task_type,
            image.task_id,
            sql_text(image.angle.as_deref()),
            sql_text(image.inline.as_deref()),
            sql_text(image.url.as_deref()),
            server_naive(image.created),
        ))
        .await
        .unwrap();
    }
    conn.disconnect().await.unwrap();
}

async fn exec(url: &str, sql: &str) {
    let mut conn = modelgen_e2e::mysql_connect(url).await.unwrap();
    conn.query_drop(sql).await.unwrap();
    conn.disconnect().await.unwrap();
}

/// Runs `modelgen import legacy <extra>` with `env` from `source`; returns its summary.
async fn import(dir: &Path, env: &[(String, String)], source: &str, extra: &[&str]) -> Value {
    let (status, summary) = import_status(dir, env, source, extra).await;
    assert_eq!(status, 0, "import failed: {summary}");
    summary
}

/// Runs `modelgen import legacy <extra>`, which must print its summary;
/// returns its exit status and the summary.
async fn import_status(
    dir: &Path,
    env: &[(String, String)],
    source: &str,
    extra: &[&str],
) -> (i32, Value) {
    let out = tokio::process::Command::new(modelgen_bin())
        .args(["import", "legacy", "--source-timezone", SERVER_ZONE])
        .args(extra)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "off")
        .envs(env.iter().cloned())
        .env("LEGACY_DATABASE_URL", source)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run modelgen import legacy");
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON summary ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), summary)
}

/// The stored location of each image of `task_id`.
async fn locations(db: &Database, task_id: &str) -> Vec<ImageLocation> {
    db.images_for_task(&task_id.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.location)
        .collect()
}

async fn target_db(db: &TestDb) -> Database {
    Database::connect(&db.url, PoolOptions::default())
        .await
        .unwrap()
}

async fn all_tasks(db: &Database) -> Vec<modelgen_persistence::TaskRecord> {
    db.list_tasks(&TaskQuery {
        limit: 10_000,
        ..TaskQuery::default()
    })
    .await
    .unwrap()
}

async fn image_rows(db: &Database) -> usize {
    let ids: Vec<_> = all_tasks(db).await.into_iter().map(|t| t.task_id).collect();
    db.images_for_tasks(&ids).await.unwrap().len()
}

/// What the generated data should import as.
struct Expected {
    imported: Vec<Row>,
    skipped: HashMap<&'static str, u64>,
}

fn expected(data: &Legacy) -> Expected {
    let mut skipped = HashMap::new();
    let mut imported = Vec::new();
    for row in &data.rows {
        let reason = match (row.table, row.id) {
            ("base_model_task", UNKNOWN_STATUS_BASE) => Some("unknown status `CANCELLED`"),
            ("edit_task", 1) => {
                Some("missing base model (base_model_id names no base_model_task row)")
            }
            ("edit_task", 2) | ("outfit_task", 4) => Some("its base model task was not imported"),
            ("outfit_task", 3) => Some("unknown angle `top`"),
            _ => None,
        };
        match reason {
            Some(r) => *skipped.entry(r).or_default() += 1,
            None => imported.push(row.clone()),
        }
    }
    Expected { imported, skipped }
}

fn world_sim() -> SimConfig {
    SimConfig {
        task_duration: Duration::from_millis(800),
        estimated_time: Duration::from_millis(800),
        api_key: Some("e2e-key".into()),
        ..SimConfig::default()
    }
}

async fn legacy_import_then_edit_and_outfit(backend: Backend) {
    if skip_mysql() || backend.skipped() {
        eprintln!("skipped: MariaDB (the source) or {backend:?} is turned off");
        return;
    }
    let source = TestDb::fresh(Backend::Mysql).await;
    let data =
        legacy_data(&|task_id| format!("https://legacy-oss.example.test/suitme/{task_id}.png"));
    fill(&source.url, &data).await;
    let want = expected(&data);

    let target = TestDb::fresh(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(world_sim(), 0).await.unwrap();
    let env = modelgen_e2e::fast_env(&target, dir.path(), &sim.base_url(), "e2e-key", &[]);

    // 1. Import.
    let summary = import(dir.path(), &env, &source.url, &[]).await;
    eprintln!("first import into {backend:?}: {summary:#}");
    let n_imported = want.imported.len() as u64;
    assert_eq!(summary["source"]["base_model_task"], BASES, "{summary}");
    assert_eq!(summary["tasks"]["created"], n_imported, "{summary}");
    assert_eq!(summary["tasks"]["skipped"], 5, "{summary}");
    for (reason, count) in &want.skipped {
        assert_eq!(
            summary["skipped_by_reason"][reason], *count,
            "{reason}: {summary}"
        );
    }
    let unfinished = want.imported.iter().filter(|r| !r.terminal()).count() as u64;
    assert_eq!(summary["tasks"]["parked"], unfinished, "{summary}");
    assert_eq!(summary["tasks"]["resumed"], 0);
    let images_of_imported: Vec<&Image> = data
        .images
        .iter()
        .filter(|i| {
            let table = match i.task_type.to_ascii_lowercase().as_str() {
                "model" => "base_model_task",
                "edit" => "edit_task",
                _ => "outfit_task",
            };
            want.imported
                .iter()
                .any(|r| r.table == table && r.id == i.task_id)
        })
        .collect();
    let remote = images_of_imported
        .iter()
        .filter(|i| i.url.is_some())
        .count() as u64;
    let inline = images_of_imported
        .iter()
        .filter(|i| i.inline.is_some())
        .count() as u64;
    assert_eq!(summary["images"]["remote"], remote, "{summary}");
    assert_eq!(summary["images"]["stored_from_inline"], inline, "{summary}");
    assert_eq!(
        summary["images"]["skipped"],
        images_of_imported.len() as u64 - remote - inline,
        "{summary}"
    );
    assert_eq!(
        summary["skipped_by_reason"]["no image URL and no inline image"],
        summary["images"]["skipped"]
    );

    // Every imported row, field by field.
    let db = target_db(&target).await;
    assert_eq!(all_tasks(&db).await.len() as u64, n_imported);
    let by_key: HashMap<(&str, i64), &Row> =
        data.rows.iter().map(|r| ((r.table, r.id), r)).collect();
    for row in &want.imported {
        let task = db.get_task(&row.task_id.parse().unwrap()).await.unwrap();
        let kind = match row.table {
            "base_model_task" => "default",
            "edit_task" => "edit",
            _ => "outfit",
        };
        assert_eq!(task.task_type.as_str(), kind);
        assert_eq!(task.user_id, row.user_id);
        assert_eq!(task.status.as_str(), row.status.to_ascii_lowercase());
        assert_eq!(i64::from(task.progress.get()), row.progress);
        assert_eq!(task.error_message, row.error);
        assert_eq!(task.error_code, row.error.as_ref().map(|_| 1002));
        assert_eq!(task.created_at, row.created, "{}", row.task_id);
        assert_eq!(task.updated_at, row.updated());
        assert_eq!(task.completed_at, row.terminal().then(|| row.updated()));
        assert_eq!(task.external_task_id, row.apimart);
        assert_eq!(
            task.angle.map(|a| a.as_str().to_string()),
            row.angle.as_ref().map(|a| a.to_lowercase())
        );
        let base = row
            .base_model_id
            .map(|b| by_key[&("base_model_task", b)].task_id.clone());
        assert_eq!(task.base_model_task_id.map(|b| b.to_string()), base);
        if !row.terminal() {
            assert_eq!(
                task.next_run_at,
                parked_until(),
                "unfinished tasks are parked"
            );
        }
    }
    // Images: URLs kept; the inline one stored in modelgen's storage.
    for image in &images_of_imported {
        let table = match image.task_type.to_ascii_lowercase().as_str() {
            "model" => "base_model_task",
            "edit" => "edit_task",
            _ => "outfit_task",
        };
        let row = by_key[&(table, image.task_id)];
        let stored = db
            .images_for_task(&row.task_id.parse().unwrap())
            .await
            .unwrap();
        match (&image.url, &image.inline) {
            (Some(url), _) => {
                assert_eq!(stored.len(), 1);
                assert_eq!(stored[0].location, ImageLocation::Remote(url.clone()));
                assert_eq!(stored[0].created_at, image.created);
            }
            (None, Some(_)) => {
                let key = stored[0]
                    .location
                    .storage_key()
                    .expect("stored")
                    .to_string();
                assert_eq!(
                    key,
                    format!("results/{}/legacy-{}.png", row.task_id, image.id)
                );
                assert_eq!(
                    std::fs::read(dir.path().join("images").join(&key)).unwrap(),
                    tiny_png(12, 8)
                );
                assert_eq!(stored[0].width, Some(8));
            }
            (None, None) => assert!(stored.is_empty()),
        }
    }
    let images_after_first = image_rows(&db).await;

    // 2. Again: nothing duplicated, nothing written.
    let again = import(dir.path(), &env, &source.url, &[]).await;
    assert_eq!(again["tasks"]["created"], 0, "{again}");
    assert_eq!(again["tasks"]["updated"], 0, "{again}");
    assert_eq!(again["tasks"]["unchanged"], n_imported, "{again}");
    assert_eq!(again["tasks"]["skipped"], 5);
    assert_eq!(all_tasks(&db).await.len() as u64, n_imported);
    assert_eq!(image_rows(&db).await, images_after_first);

    // 3. The source changes: a failed base gets a new message, a completed
    //    edit a new image URL.
    let failed = want
        .imported
        .iter()
        .find(|r| r.table == "base_model_task" && r.status == "FAILED")
        .unwrap();
    exec(
        &source.url,
        &format!(
            "UPDATE base_model_task SET error_message = '新的失败原因 ✂', \
             updated_at = updated_at + INTERVAL 1 HOUR WHERE id = {}",
            failed.id
        ),
    )
    .await;
    let edit_image = images_of_imported
        .iter()
        .find(|i| i.task_type == "EDIT" && i.url.is_some())
        .unwrap();
    let edit_row = by_key[&("edit_task", edit_image.task_id)];
    exec(
        &source.url,
        &format!(
            "UPDATE generation_image SET image_url = 'https://legacy-oss.example.test/v2.png' WHERE id = {}",
            edit_image.id
        ),
    )
    .await;

    // 3a. A dry run reports both updates and writes nothing.
    let dry = import(dir.path(), &env, &source.url, &["--dry-run"]).await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["tasks"]["updated"], 2, "{dry}");
    assert_eq!(dry["tasks"]["unchanged"], n_imported - 2, "{dry}");
    let failed_id = failed.task_id.parse().unwrap();
    assert_eq!(
        db.get_task(&failed_id).await.unwrap().error_message,
        failed.error
    );

    // 3b. The real run applies them, in place.
    let changed = import(dir.path(), &env, &source.url, &[]).await;
    assert_eq!(changed["tasks"]["updated"], 2, "{changed}");
    assert_eq!(changed["tasks"]["created"], 0, "{changed}");
    let task = db.get_task(&failed_id).await.unwrap();
    assert_eq!(task.error_message.as_deref(), Some("新的失败原因 ✂"));
    assert_eq!(task.updated_at, failed.updated() + TimeDelta::hours(1));
    let edit_images = db
        .images_for_task(&edit_row.task_id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        edit_images
            .iter()
            .map(|i| i.location.clone())
            .collect::<Vec<_>>(),
        vec![ImageLocation::Remote(
            "https://legacy-oss.example.test/v2.png".into()
        )]
    );
    assert_eq!(all_tasks(&db).await.len() as u64, n_imported);
    assert_eq!(image_rows(&db).await, images_after_first);

    // 4. The service answers for old ids; edit and outfit on an old
    //    completed default model work end to end.
    let service = Service::start(dir.path(), env.clone()).await;
    let api = Api::new(service.base_url());
    let base = want
        .imported
        .iter()
        .find(|r| {
            r.table == "base_model_task"
                && r.completed()
                && data.images.iter().any(|i| {
                    i.task_type.eq_ignore_ascii_case("model")
                        && i.task_id == r.id
                        && i.url.is_some()
                })
        })
        .unwrap();
    let (status, body) = api.get(&format!("/tasks/{}", base.task_id)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "completed");
    assert_eq!(body["data"]["type"], "default");
    assert_eq!(
        body["data"]["image"]["image_url"],
        format!(
            "https://legacy-oss.example.test/suitme/{}.png",
            base.task_id
        )
    );
    let (status, body) = api
        .post(
            "/models/edit",
            &json!({"user_id": base.user_id, "base_model_task_id": base.task_id,
                    "edit_instructions": "把头发改成短发"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let edit = body["data"]["task_id"].as_str().unwrap().to_string();
    let done = api.wait_terminal(&edit, DEADLINE).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["base_model_task_id"], base.task_id.as_str());
    let (status, body) = api
        .post(
            "/models/outfit",
            &json!({"user_id": base.user_id, "base_model_task_id": base.task_id, "angle": "side",
                    "outfit_images": [fixture_data_uri("object.jpg")]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let outfit = body["data"]["task_id"].as_str().unwrap().to_string();
    let done = api.wait_terminal(&outfit, DEADLINE).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["angle"], "side");
    let (status, png, _) = api
        .get_bytes(done["image"]["image_url"].as_str().unwrap())
        .await;
    assert_eq!(status, 200);
    assert!(png.starts_with(b"\x89PNG"));

    // Parked tasks stayed as they were imported while the workers ran.
    let parked = want.imported.iter().find(|r| !r.terminal()).unwrap();
    let (_, body) = api.get(&format!("/tasks/{}", parked.task_id)).await;
    assert_eq!(
        body["data"]["status"],
        parked.status.to_ascii_lowercase(),
        "{body}"
    );
    assert_eq!(body["data"]["progress"], parked.progress);
    // A parked base model never completes by itself: the hint says so.
    let parked_base = want
        .imported
        .iter()
        .find(|r| !r.terminal() && r.table == "base_model_task")
        .unwrap();
    let (status, body) = api
        .post(
            "/models/edit",
            &json!({"user_id": parked_base.user_id, "base_model_task_id": parked_base.task_id,
                    "edit_instructions": "换成微笑的表情"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let msg = body["msg"].as_str().unwrap();
    assert!(
        msg.contains("not running") && msg.contains("--resume-unfinished"),
        "{body}"
    );
    // Nothing imported was submitted upstream: only the edit and the outfit.
    assert_eq!(sim.stats().tasks_created, 2);
    drop(service);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_legacy_import_reimport_dry_run_then_edit_and_outfit() {
    legacy_import_then_edit_and_outfit(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_legacy_import_reimport_dry_run_then_edit_and_outfit() {
    legacy_import_then_edit_and_outfit(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_legacy_import_reimport_dry_run_then_edit_and_outfit() {
    legacy_import_then_edit_and_outfit(Backend::Mysql).await;
}

/// A loopback image server: `GET /img/<n>.png` is `tiny_png(n, 16)`, other
/// paths 404; counts requests.
struct ImageServer {
    port: u16,
    hits: Arc<AtomicU64>,
    handle: actix_web::dev::ServerHandle,
}

async fn image_server() -> ImageServer {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let server = HttpServer::new(move || {
        let counter = counter.clone();
        App::new().route(
            "/img/{name}",
            web::get().to(move |name: web::Path<String>| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    match name
                        .strip_suffix(".png")
                        .and_then(|n| n.parse::<u32>().ok())
                    {
                        Some(n) => HttpResponse::Ok()
                            .content_type("image/png")
                            .body(tiny_png(n, 16)),
                        None => HttpResponse::NotFound().finish(),
                    }
                }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    let running = server.run();
    let handle = running.handle();
    tokio::spawn(running);
    ImageServer { port, hits, handle }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_import_copies_images_into_storage_once() {
    if skip_mysql() {
        eprintln!("skipped: MariaDB (the source) is turned off");
        return;
    }
    let images = image_server().await;
    let port = images.port;
    let source = TestDb::fresh(Backend::Mysql).await;
    let mut data = legacy_data(&|task_id| {
        let n = u32::from_str_radix(&task_id[task_id.len() - 4..], 16).unwrap();
        format!("http://127.0.0.1:{port}/img/{n}.png")
    });
    // A small source: 20 base models, one image URL that answers 404.
    data.rows
        .retain(|r| r.table == "base_model_task" && r.id <= 20);
    data.images
        .retain(|i| i.task_type.eq_ignore_ascii_case("model") && i.task_id <= 20);
    let broken = data.images.iter_mut().find(|i| i.url.is_some()).unwrap();
    broken.url = Some(format!("http://127.0.0.1:{port}/img/missing"));
    let broken_id = broken.id;
    let broken_url = broken.url.clone().unwrap();
    let broken_task = data
        .rows
        .iter()
        .find(|r| r.id == broken.task_id)
        .unwrap()
        .task_id
        .clone();
    fill(&source.url, &data).await;
    // (edit_task and outfit_task are empty here.)
    let with_url: Vec<&Image> = data.images.iter().filter(|i| i.url.is_some()).collect();
    // The task of the last image with a URL takes the (user_id, request_id)
    // of base model 1: it is skipped, and its image is counted nowhere.
    let dup_image = *with_url.last().unwrap();
    assert_ne!(dup_image.id, broken_id);
    assert!(dup_image.task_id > 1);
    exec(
        &source.url,
        &format!(
            "UPDATE base_model_task AS d JOIN base_model_task AS o ON o.id = 1 \
             SET d.user_id = o.user_id, d.request_id = o.request_id WHERE d.id = {}",
            dup_image.task_id
        ),
    )
    .await;
    let dup_reason = "another task of this user already has this request_id";
    let with_url: Vec<&Image> = with_url
        .into_iter()
        .filter(|i| i.id != dup_image.id)
        .collect();
    let inline = data.images.iter().filter(|i| i.inline.is_some()).count() as u64;
    assert_eq!(inline, 1);

    let target = TestDb::fresh(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(world_sim(), 0).await.unwrap();
    // Downloads reach only public addresses and OUTBOUND_ALLOWLIST: without
    // it the loopback image server is refused, and nothing is fetched.
    let env = modelgen_e2e::fast_env(&target, dir.path(), &sim.base_url(), "e2e-key", &[]);
    let out = tokio::process::Command::new(modelgen_bin())
        .args(["import", "legacy", "--dry-run"])
        .current_dir(dir.path())
        .env_clear()
        .env("RUST_LOG", "off")
        .envs(env.iter().cloned())
        .env("LEGACY_DATABASE_URL", &source.url)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "a dry run does not migrate");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("run `modelgen migrate` first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::process::Command::new(modelgen_bin())
        .arg("migrate")
        .current_dir(dir.path())
        .env_clear()
        .env("RUST_LOG", "off")
        .envs(env.iter().cloned())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dry = import(
        dir.path(),
        &env,
        &source.url,
        &["--copy-images", "--dry-run"],
    )
    .await;
    assert_eq!(
        dry["images"]["copied"], 0,
        "a dry run claims no copy: {dry}"
    );
    // (A dry run does not foresee the request_id clash between two rows
    // it would create: the duplicate counts as created there.)
    assert_eq!(dry["tasks"]["skipped"], 1, "only the unknown status: {dry}");
    assert_eq!(
        dry["images"]["would_copy"],
        with_url.len() as u64 + 1,
        "{dry}"
    );
    assert_eq!(
        images.hits.load(Ordering::SeqCst),
        0,
        "a dry run downloads nothing"
    );
    // Imported with remote URLs first; then a copy whose downloads are
    // refused (loopback is not allowed) keeps every remote URL, changes
    // nothing, and exits with status 3.
    let plain = import(dir.path(), &env, &source.url, &[]).await;
    assert_eq!(plain["images"]["remote"], with_url.len() as u64, "{plain}");
    assert_eq!(plain["tasks"]["skipped"], 2, "{plain}");
    assert_eq!(plain["skipped_by_reason"][dup_reason], 1, "{plain}");
    let db = target_db(&target).await;
    assert_eq!(
        locations(&db, &broken_task).await,
        vec![ImageLocation::Remote(broken_url.clone())]
    );
    let (status, refused) = import_status(dir.path(), &env, &source.url, &["--copy-images"]).await;
    assert_eq!(status, 3, "a failed copy exits with status 3: {refused}");
    assert_eq!(refused["images"]["copied"], 0, "{refused}");
    assert_eq!(refused["images"]["skipped"], 0, "{refused}");
    assert_eq!(
        refused["images"]["copy_failed"],
        with_url.len() as u64,
        "{refused}"
    );
    assert_eq!(refused["tasks"]["updated"], 0, "{refused}");
    assert!(
        refused["copy_failures"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("result image URL refused"),
        "{refused}"
    );
    assert_eq!(
        locations(&db, &broken_task).await,
        vec![ImageLocation::Remote(broken_url.clone())],
        "a refused copy keeps the remote URL"
    );
    assert_eq!(images.hits.load(Ordering::SeqCst), 0);
    drop(db);
    drop(target);
    let target = TestDb::fresh(Backend::Sqlite).await;
    let env = modelgen_e2e::fast_env(
        &target,
        dir.path(),
        &sim.base_url(),
        "e2e-key",
        &[(
            "OUTBOUND_ALLOWLIST",
            format!(
                "{},127.0.0.1:{port}",
                modelgen_e2e::allowlist_for(&sim.base_url())
            ),
        )],
    );
    let (status, summary) = import_status(dir.path(), &env, &source.url, &["--copy-images"]).await;
    assert_eq!(status, 3, "{summary}");
    assert_eq!(
        summary["images"]["copied"],
        with_url.len() as u64 - 1,
        "{summary}"
    );
    assert_eq!(summary["images"]["remote"], 0);
    assert_eq!(summary["images"]["skipped"], 0, "{summary}");
    assert_eq!(summary["images"]["copy_failed"], 1, "{summary}");
    assert_eq!(summary["copy_failures"][0]["id"], broken_id, "{summary}");
    assert_eq!(
        summary["copy_failures"][0]["reason"], "result image is gone (HTTP 404)",
        "{summary}"
    );
    let db = target_db(&target).await;
    assert_eq!(
        locations(&db, &broken_task).await,
        vec![ImageLocation::Remote(broken_url.clone())],
        "a 404 keeps the remote URL"
    );
    // The skipped duplicate's image was fetched but is not counted.
    let fetched = images.hits.load(Ordering::SeqCst);
    assert_eq!(fetched, with_url.len() as u64 + 1);

    // Again: nothing downloaded twice, nothing changed (the 404 is tried again).
    let (status, again) = import_status(dir.path(), &env, &source.url, &["--copy-images"]).await;
    assert_eq!(status, 3, "{again}");
    assert_eq!(
        again["images"]["already_copied"],
        with_url.len() as u64 - 1 + inline,
        "{again}"
    );
    assert_eq!(again["images"]["copied"], 0);
    assert_eq!(again["images"]["copy_failed"], 1);
    assert_eq!(again["tasks"]["created"], 0);
    assert_eq!(again["tasks"]["updated"], 0, "{again}");
    assert_eq!(images.hits.load(Ordering::SeqCst), fetched + 2);

    // The copies are served by modelgen, and an edit on a copied base works.
    let service = Service::start(dir.path(), env.clone()).await;
    let api = Api::new(service.base_url());
    let image = with_url.iter().find(|i| i.id != broken_id).unwrap();
    let row = data.rows.iter().find(|r| r.id == image.task_id).unwrap();
    let (status, body) = api.get(&format!("/tasks/{}", row.task_id)).await;
    assert_eq!(status, 200, "{body}");
    let url = body["data"]["image"]["image_url"].as_str().unwrap();
    assert!(url.starts_with(&service.base_url()), "{url}");
    let n = u32::from_str_radix(&row.task_id[row.task_id.len() - 4..], 16).unwrap();
    let (status, bytes, content_type) = api.get_bytes(url).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert_eq!(bytes, tiny_png(n, 16));
    let (status, body) = api
        .post(
            "/models/edit",
            &json!({"user_id": row.user_id, "base_model_task_id": row.task_id,
                    "edit_instructions": "换成微笑的表情"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let edit = body["data"]["task_id"].as_str().unwrap().to_string();
    assert_eq!(
        api.wait_terminal(&edit, DEADLINE).await["status"],
        "completed"
    );
    drop(service);
    sim.stop().await;
    images.handle.stop(true).await;
}

/// Submits one task to the simulator directly (as the earlier service did)
/// and returns its upstream id.
async fn upstream_task(sim: &SimHandle) -> String {
    let body: Value = reqwest::Client::new()
        .post(format!("{}/images/generations", sim.base_url()))
        .bearer_auth("e2e-key")
        .json(
            &json!({"model": "gemini-2.5-flash-image-preview", "prompt": "a model, front view",
                      "size": "3:4", "n": 1}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    fn find(v: &Value) -> Option<String> {
        match v {
            Value::Object(map) => map
                .get("task_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| map.values().find_map(find)),
            Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    find(&body).unwrap_or_else(|| panic!("no task_id in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_unfinished_polls_the_kept_upstream_id_without_resubmitting() {
    if skip_mysql() {
        eprintln!("skipped: MariaDB (the source) is turned off");
        return;
    }
    let sim = Simulator::start(world_sim(), 0).await.unwrap();
    let upstream = upstream_task(&sim).await;
    let source = TestDb::fresh(Backend::Mysql).await;
    let mut data = legacy_data(&|t| format!("https://legacy-oss.example.test/{t}.png"));
    data.rows
        .retain(|r| r.table == "base_model_task" && r.id <= 12);
    data.images
        .retain(|i| i.task_type.eq_ignore_ascii_case("model") && i.task_id <= 12);
    // Every unfinished task but one lost its upstream id.
    let mut first = true;
    for row in data.rows.iter_mut().filter(|r| !r.terminal()) {
        row.apimart = first.then(|| upstream.clone());
        first = false;
    }
    let resumed = data
        .rows
        .iter()
        .find(|r| r.apimart.is_some())
        .unwrap()
        .clone();
    let stuck = data
        .rows
        .iter()
        .find(|r| !r.terminal() && r.apimart.is_none())
        .unwrap()
        .clone();
    fill(&source.url, &data).await;

    let target = TestDb::fresh(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let env = modelgen_e2e::fast_env(&target, dir.path(), &sim.base_url(), "e2e-key", &[]);
    let summary = import(dir.path(), &env, &source.url, &["--resume-unfinished"]).await;
    assert_eq!(summary["tasks"]["resumed"], 1, "{summary}");
    let service = Service::start(dir.path(), env.clone()).await;
    let api = Api::new(service.base_url());
    let done = api.wait_terminal(&resumed.task_id, DEADLINE).await;
    assert_eq!(done["status"], "completed", "{done}");
    let url = done["image"]["image_url"].as_str().unwrap();
    let (status, bytes, _) = api.get_bytes(url).await;
    assert_eq!(status, 200);
    assert!(bytes.starts_with(b"\x89PNG"));
    // Polled, never submitted again: the simulator saw only the first submit.
    let stats = sim.stats();
    assert_eq!((stats.submit_requests, stats.tasks_created), (1, 1));
    // A task without an upstream id cannot be resumed (the earlier tables
    // keep no inputs): it stays as imported.
    let (_, body) = api.get(&format!("/tasks/{}", stuck.task_id)).await;
    assert_eq!(
        body["data"]["status"],
        stuck.status.to_ascii_lowercase(),
        "{body}"
    );
    drop(service);
    sim.stop().await;
}
