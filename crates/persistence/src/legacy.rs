//! Reading the earlier service's MySQL/MariaDB tables (`base_model_task`,
//! `edit_task`, `outfit_task`, `generation_image`) for `modelgen import
//! legacy`. Read only: nothing here writes to the source.
//!
//! The tables are those of the earlier service's SQLAlchemy models
//! (`app/models/__init__.py` of the repository named in `docs/legacy.md`);
//! the columns read, and how each is understood, are listed there. Rows are
//! returned raw (strings as stored, naive `DATETIME`s): the importer decides
//! what they mean.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl, SimpleAsyncConnection};

/// How long opening the source connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// One of the earlier service's three task tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LegacyTable {
    /// `base_model_task`: default (model) tasks.
    BaseModel,
    /// `edit_task`: edits of a base model.
    Edit,
    /// `outfit_task`: outfits on a base model.
    Outfit,
}

impl LegacyTable {
    /// The three, base models first (the others link to them).
    pub const ALL: [LegacyTable; 3] = [
        LegacyTable::BaseModel,
        LegacyTable::Edit,
        LegacyTable::Outfit,
    ];

    /// The table's name.
    pub fn table_name(self) -> &'static str {
        match self {
            LegacyTable::BaseModel => "base_model_task",
            LegacyTable::Edit => "edit_task",
            LegacyTable::Outfit => "outfit_task",
        }
    }

    /// The value `generation_image.task_type` holds for this table's tasks
    /// (SQLAlchemy stores the enum member's name, `MODEL`, by default; the
    /// value `model` is accepted too; compare without case).
    pub fn image_task_type(self) -> &'static str {
        match self {
            LegacyTable::BaseModel => "model",
            LegacyTable::Edit => "edit",
            LegacyTable::Outfit => "outfit",
        }
    }

    /// Columns the importer needs in this table.
    fn required_columns(self) -> &'static [&'static str] {
        match self {
            LegacyTable::BaseModel => &COMMON_COLUMNS,
            LegacyTable::Edit => &EDIT_COLUMNS,
            LegacyTable::Outfit => &OUTFIT_COLUMNS,
        }
    }
}

const COMMON_COLUMNS: [&str; 10] = [
    "id",
    "task_id",
    "request_id",
    "user_id",
    "status",
    "progress",
    "error_message",
    "created_at",
    "updated_at",
    "completed_at",
];
const EDIT_COLUMNS: [&str; 11] = [
    "id",
    "task_id",
    "request_id",
    "user_id",
    "status",
    "progress",
    "error_message",
    "created_at",
    "updated_at",
    "completed_at",
    "base_model_id",
];
const OUTFIT_COLUMNS: [&str; 12] = [
    "id",
    "task_id",
    "request_id",
    "user_id",
    "status",
    "progress",
    "error_message",
    "created_at",
    "updated_at",
    "completed_at",
    "base_model_id",
    "angle",
];
const IMAGE_TABLE: &str = "generation_image";
const IMAGE_COLUMNS: [&str; 7] = [
    "id",
    "task_type",
    "task_id",
    "angle",
    "image_base64",
    "image_url",
    "created_at",
];
/// Apimart's task id, kept by later versions of the earlier service (its
/// repositories bind it after a submit); optional.
const UPSTREAM_ID_COLUMN: &str = "apimart_task_id";

/// Why the source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LegacySourceError {
    /// The URL is not a MySQL URL modelgen can use.
    #[error("source URL: {0}")]
    Url(String),
    /// No connection (the message never holds the password).
    #[error("cannot connect to the source database: {0}")]
    Connect(String),
    /// The database does not hold the earlier service's tables.
    #[error("the source is not the earlier service's database: {0}")]
    NotLegacy(String),
    /// A query failed.
    #[error("reading the source failed: {0}")]
    Query(#[from] diesel::result::Error),
}

/// A row of one of the task tables, as stored.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct LegacyTaskRow {
    /// Internal key (`generation_image.task_id` and `base_model_id` point to it).
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// The public task id.
    #[diesel(sql_type = Text)]
    pub task_id: String,
    /// Request id (a UUID the earlier service made).
    #[diesel(sql_type = Nullable<Text>)]
    pub request_id: Option<String>,
    /// Owner.
    #[diesel(sql_type = Text)]
    pub user_id: String,
    /// `edit_task`/`outfit_task`: `base_model_task.id`.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub base_model_id: Option<i64>,
    /// `outfit_task`: `front`, `side` or `back`.
    #[diesel(sql_type = Nullable<Text>)]
    pub angle: Option<String>,
    /// Apimart's task id, when the table has that column and it is set.
    #[diesel(sql_type = Nullable<Text>)]
    pub apimart_task_id: Option<String>,
    /// Status as stored (`SUBMITTED`… or `submitted`…).
    #[diesel(sql_type = Text)]
    pub status: String,
    /// Percent as stored.
    #[diesel(sql_type = BigInt)]
    pub progress: i64,
    /// Failure text.
    #[diesel(sql_type = Nullable<Text>)]
    pub error_message: Option<String>,
    /// Naive, in the source's zone.
    #[diesel(sql_type = Timestamp)]
    pub created_at: NaiveDateTime,
    /// Naive, in the source's zone.
    #[diesel(sql_type = Timestamp)]
    pub updated_at: NaiveDateTime,
    /// Naive, in the source's zone.
    #[diesel(sql_type = Nullable<Timestamp>)]
    pub completed_at: Option<NaiveDateTime>,
}

/// A row of `generation_image`, without its inline base64 (read one at a
/// time by [`LegacySource::inline_image`]).
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct LegacyImageRow {
    /// Internal key.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// `MODEL`, `EDIT`, `OUTFIT` (or lower case).
    #[diesel(sql_type = Text)]
    pub task_type: String,
    /// The task's internal key in the table `task_type` names.
    #[diesel(sql_type = BigInt)]
    pub task_id: i64,
    /// Outfit angle.
    #[diesel(sql_type = Nullable<Text>)]
    pub angle: Option<String>,
    /// The image's URL (OSS), when set.
    #[diesel(sql_type = Nullable<Text>)]
    pub image_url: Option<String>,
    /// 1 when `image_base64` holds data.
    #[diesel(sql_type = BigInt)]
    pub has_inline: i64,
    /// Naive, in the source's zone.
    #[diesel(sql_type = Timestamp)]
    pub created_at: NaiveDateTime,
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct InlineRow {
    #[diesel(sql_type = Nullable<Text>)]
    image_base64: Option<String>,
}

/// Row counts of the four tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LegacyCounts {
    /// `base_model_task` rows.
    pub base_model_task: u64,
    /// `edit_task` rows.
    pub edit_task: u64,
    /// `outfit_task` rows.
    pub outfit_task: u64,
    /// `generation_image` rows.
    pub generation_image: u64,
}

impl LegacyCounts {
    /// Task rows of the three task tables.
    pub fn tasks(&self) -> u64 {
        self.base_model_task + self.edit_task + self.outfit_task
    }
}

/// An open connection to the earlier service's database.
pub struct LegacySource {
    conn: AsyncMysqlConnection,
    /// Task tables that have the optional `apimart_task_id` column.
    upstream_ids: BTreeSet<LegacyTable>,
}

impl std::fmt::Debug for LegacySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacySource")
            .field("upstream_ids", &self.upstream_ids)
            .finish_non_exhaustive()
    }
}

impl LegacySource {
    /// Connects to `url` (`mysql://…`, `mariadb://…` or the earlier
    /// service's `mysql+aiomysql://…?charset=utf8mb4`) and checks that the four
    /// tables are there with the columns the importer reads.
    ///
    /// # Errors
    /// [`LegacySourceError::Url`], [`LegacySourceError::Connect`],
    /// [`LegacySourceError::NotLegacy`] naming the missing tables or columns.
    pub async fn connect(url: &str) -> Result<LegacySource, LegacySourceError> {
        if !crate::db::is_mysql_url(url) {
            return Err(LegacySourceError::Url(
                "expected mysql://user:password@host:3306/database (or mariadb://, mysql+aiomysql://, mysql+pymysql://)"
                    .into(),
            ));
        }
        let normalized = crate::db::mysql::normalize_url(url)
            .map_err(|e| LegacySourceError::Url(e.to_string()))?;
        let mut conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            AsyncMysqlConnection::establish(&normalized),
        )
        .await
        .map_err(|_| {
            LegacySourceError::Connect(format!(
                "no connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| LegacySourceError::Connect(e.to_string()))?;
        // Text as utf8mb4 (CJK, emoji); DATETIME values are not converted by
        // the session zone, so it is left alone.
        conn.batch_execute("SET NAMES utf8mb4").await?;
        let columns: Vec<ColumnRow> = diesel::sql_query(
            "SELECT CAST(TABLE_NAME AS CHAR) AS table_name, CAST(COLUMN_NAME AS CHAR) AS column_name \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME IN ('base_model_task', 'edit_task', 'outfit_task', 'generation_image')",
        )
        .load(&mut conn)
        .await?;
        let mut by_table: HashMap<String, BTreeSet<String>> = HashMap::new();
        for c in columns {
            by_table
                .entry(c.table_name.to_ascii_lowercase())
                .or_default()
                .insert(c.column_name.to_ascii_lowercase());
        }
        let mut missing = Vec::new();
        let mut upstream_ids = BTreeSet::new();
        let wanted = LegacyTable::ALL
            .iter()
            .map(|t| (t.table_name(), t.required_columns(), Some(*t)))
            .chain(std::iter::once((IMAGE_TABLE, &IMAGE_COLUMNS[..], None)));
        for (table, required, task_table) in wanted {
            let Some(have) = by_table.get(table) else {
                missing.push(format!("table `{table}`"));
                continue;
            };
            for column in required {
                if !have.contains(*column) {
                    missing.push(format!("column `{table}.{column}`"));
                }
            }
            if let Some(t) = task_table
                && have.contains(UPSTREAM_ID_COLUMN)
            {
                upstream_ids.insert(t);
            }
        }
        if !missing.is_empty() {
            return Err(LegacySourceError::NotLegacy(format!(
                "missing {}",
                missing.join(", ")
            )));
        }
        Ok(LegacySource { conn, upstream_ids })
    }

    /// Whether `table` keeps Apimart's task ids (`apimart_task_id`).
    pub fn has_upstream_ids(&self, table: LegacyTable) -> bool {
        self.upstream_ids.contains(&table)
    }

    /// Row counts of the four tables.
    ///
    /// # Errors
    /// [`LegacySourceError::Query`].
    pub async fn counts(&mut self) -> Result<LegacyCounts, LegacySourceError> {
        let mut counts = LegacyCounts::default();
        for (table, slot) in [
            ("base_model_task", &mut counts.base_model_task),
            ("edit_task", &mut counts.edit_task),
            ("outfit_task", &mut counts.outfit_task),
            (IMAGE_TABLE, &mut counts.generation_image),
        ] {
            let row: CountRow = diesel::sql_query(format!(
                "SELECT CAST(COUNT(*) AS SIGNED) AS n FROM `{table}`"
            ))
            .get_result(&mut self.conn)
            .await?;
            *slot = u64::try_from(row.n).unwrap_or(0);
        }
        Ok(counts)
    }

    /// Up to `limit` rows of `table` with `id > after`, by `id`.
    ///
    /// # Errors
    /// [`LegacySourceError::Query`].
    pub async fn tasks_after(
        &mut self,
        table: LegacyTable,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LegacyTaskRow>, LegacySourceError> {
        let base = match table {
            LegacyTable::BaseModel => "CAST(NULL AS SIGNED)",
            LegacyTable::Edit | LegacyTable::Outfit => "CAST(base_model_id AS SIGNED)",
        };
        let angle = match table {
            LegacyTable::Outfit => "CAST(angle AS CHAR)",
            LegacyTable::BaseModel | LegacyTable::Edit => "CAST(NULL AS CHAR)",
        };
        let upstream = if self.has_upstream_ids(table) {
            "CAST(apimart_task_id AS CHAR)"
        } else {
            "CAST(NULL AS CHAR)"
        };
        let sql = format!(
            "SELECT CAST(id AS SIGNED) AS id, CAST(task_id AS CHAR) AS task_id, \
             CAST(request_id AS CHAR) AS request_id, CAST(user_id AS CHAR) AS user_id, \
             {base} AS base_model_id, {angle} AS angle, {upstream} AS apimart_task_id, \
             CAST(status AS CHAR) AS status, CAST(progress AS SIGNED) AS progress, \
             CAST(error_message AS CHAR) AS error_message, \
             created_at, updated_at, completed_at \
             FROM `{}` WHERE id > ? ORDER BY id LIMIT ?",
            table.table_name()
        );
        Ok(diesel::sql_query(sql)
            .bind::<BigInt, _>(after)
            .bind::<BigInt, _>(limit)
            .load(&mut self.conn)
            .await?)
    }

    /// `id → task_id` of every `base_model_task` row (what edit and outfit
    /// tasks link to).
    ///
    /// # Errors
    /// [`LegacySourceError::Query`].
    pub async fn base_model_ids(&mut self) -> Result<HashMap<i64, String>, LegacySourceError> {
        #[derive(QueryableByName)]
        struct IdRow {
            #[diesel(sql_type = BigInt)]
            id: i64,
            #[diesel(sql_type = Text)]
            task_id: String,
        }
        let rows: Vec<IdRow> = diesel::sql_query(
            "SELECT CAST(id AS SIGNED) AS id, CAST(task_id AS CHAR) AS task_id FROM base_model_task",
        )
        .load(&mut self.conn)
        .await?;
        Ok(rows.into_iter().map(|r| (r.id, r.task_id)).collect())
    }

    /// Images of the tasks of `table` whose internal keys are `ids`, by image id.
    ///
    /// # Errors
    /// [`LegacySourceError::Query`].
    pub async fn images_of(
        &mut self,
        table: LegacyTable,
        ids: &[i64],
    ) -> Result<Vec<LegacyImageRow>, LegacySourceError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let sql = format!(
            "SELECT CAST(id AS SIGNED) AS id, CAST(task_type AS CHAR) AS task_type, \
             CAST(task_id AS SIGNED) AS task_id, CAST(angle AS CHAR) AS angle, \
             CAST(image_url AS CHAR) AS image_url, \
             CAST(image_base64 IS NOT NULL AND image_base64 <> '' AS SIGNED) AS has_inline, \
             created_at FROM generation_image \
             WHERE LOWER(task_type) = ? AND task_id IN ({list}) ORDER BY id"
        );
        Ok(diesel::sql_query(sql)
            .bind::<Text, _>(table.image_task_type())
            .load(&mut self.conn)
            .await?)
    }

    /// The inline base64 of one image (`None` when empty).
    ///
    /// # Errors
    /// [`LegacySourceError::Query`].
    pub async fn inline_image(
        &mut self,
        image_id: i64,
    ) -> Result<Option<String>, LegacySourceError> {
        let rows: Vec<InlineRow> = diesel::sql_query(
            "SELECT CAST(image_base64 AS CHAR) AS image_base64 FROM generation_image WHERE id = ?",
        )
        .bind::<BigInt, _>(image_id)
        .load(&mut self.conn)
        .await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| r.image_base64)
            .filter(|s| !s.is_empty()))
    }
}
