//! `modelgen import legacy`: brings the earlier service's tasks and images
//! into modelgen's database (docs/legacy.md, "Importing the earlier
//! service's data").
//!
//! The source is read with [`LegacySource`]; each row becomes an
//! [`ImportedTask`] ([`convert_task`], pure) and is written through
//! [`TaskImport::upsert_imported_task`], which makes a re-run safe. A dry
//! run reads the same rows and asks [`plan_import`] what would happen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal as _, Write as _};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset as _, TimeZone, Utc};
use modelgen_domain::{Angle, ImageMime, Progress, TaskId, TaskStatus, TaskType};
use modelgen_persistence::legacy::{
    LegacyCounts, LegacyImageRow, LegacySource, LegacyTable, LegacyTaskRow,
};
use modelgen_persistence::{
    BlobStore, ImageLocation, ImageRecord, ImageRepository, ImportOutcome, ImportedImage,
    ImportedTask, RepoError, TaskImport, TaskRepository, parked_until, plan_import,
};
use serde::Serialize;

use crate::error::CODE_UPSTREAM;
use crate::ports::{ImageFetcher, read_all};

/// Rows read from the source per query.
const PAGE: i64 = 500;
/// At most this many skipped rows are listed one by one in the summary
/// (all are counted by reason).
const LISTED_SKIPS: usize = 200;
/// Largest image `--copy-images` downloads.
pub const MAX_IMAGE_BYTES: usize = 50 * 1024 * 1024;
/// Time limit of one image download (redirects and body included).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The zone naive source timestamps are read in: a fixed offset (`UTC`,
/// `Z`, `+08:00`, `-0530`, `+08`) or an IANA name (`Asia/Shanghai`), whose
/// offset may change with daylight saving time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceZone {
    /// A fixed offset from UTC.
    Fixed(FixedOffset),
    /// An IANA time zone (tz database, as shipped in `chrono-tz`).
    Named(chrono_tz::Tz),
}

impl FromStr for SourceZone {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("utc") || s == "Z" {
            return Ok(SourceZone::Fixed(Utc.fix()));
        }
        let signed = match s.as_bytes().first() {
            Some(b'+') => Some((1, &s[1..])),
            Some(b'-') => Some((-1, &s[1..])),
            _ => None,
        };
        if let Some((sign, digits)) = signed {
            let (h, m) = match digits.split_once(':') {
                Some((h, m)) => (h, m),
                None if digits.len() == 4 => digits.split_at(2),
                None => (digits, "0"),
            };
            let parsed = h
                .parse::<i32>()
                .ok()
                .zip(m.parse::<i32>().ok())
                .filter(|(h, m)| (0..=14).contains(h) && (0..60).contains(m))
                .and_then(|(h, m)| FixedOffset::east_opt(sign * (h * 3600 + m * 60)));
            return parsed.map(SourceZone::Fixed).ok_or_else(|| {
                format!("`{s}` is not an offset like +08:00 or -05:30 (at most ±14:00)")
            });
        }
        s.parse::<chrono_tz::Tz>().map(SourceZone::Named).map_err(|_| {
            format!(
                "`{}` is neither UTC, an offset like +08:00, nor an IANA zone name like Asia/Shanghai",
                s.chars().take(64).collect::<String>()
            )
        })
    }
}

impl std::fmt::Display for SourceZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceZone::Fixed(o) if o.local_minus_utc() == 0 => f.write_str("UTC"),
            SourceZone::Fixed(o) => write!(f, "{o}"),
            SourceZone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

impl SourceZone {
    /// The instant a naive wall-clock time of this zone names. In a
    /// daylight-saving fold the earlier instant is taken.
    ///
    /// # Errors
    /// A message when the time does not exist in the zone (a spring-forward gap).
    pub fn to_utc(&self, naive: NaiveDateTime) -> Result<DateTime<Utc>, String> {
        let mapped = match self {
            SourceZone::Fixed(o) => o.from_local_datetime(&naive).earliest().map(|t| t.to_utc()),
            SourceZone::Named(tz) => tz
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.to_utc()),
        };
        mapped.ok_or_else(|| format!("{naive} does not exist in {self} (a daylight-saving gap)"))
    }
}

/// Zones of the source's timestamps. The earlier service wrote `created_at`
/// (and image `created_at`) with the database's `NOW()`, in the MySQL
/// server's time zone, but `updated_at` and `completed_at` from Python's UTC
/// clock (docs/legacy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zones {
    /// `--source-timezone`: the database server's zone (`created_at`).
    pub server: SourceZone,
    /// `--app-timezone`: the zone of `updated_at` and `completed_at`.
    pub app: SourceZone,
}

/// What `modelgen import legacy` was asked to do.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Source database URL.
    pub from: String,
    /// Zones of the naive timestamps.
    pub zones: Zones,
    /// Copy images into modelgen's storage instead of keeping their URLs.
    pub copy_images: bool,
    /// Read and report; write nothing.
    pub dry_run: bool,
    /// Let the workers resume unfinished tasks that have an upstream id.
    pub resume_unfinished: bool,
    /// Show a progress bar (when stderr is a terminal).
    pub progress: bool,
}

/// Task counts of a run (docs/legacy.md defines each field). Every source
/// task row is counted once in `created`, `updated`, `unchanged` or
/// `skipped`; `resumed` and `parked` count among the created and updated ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TaskCounts {
    /// New tasks written (or that would be).
    pub created: u64,
    /// Earlier imports brought up to date (or that would be).
    pub updated: u64,
    /// Already imported as they are: nothing written.
    pub unchanged: u64,
    /// Not written; see `skipped_by_reason`.
    pub skipped: u64,
    /// Unfinished tasks this run made due, for the workers to resume
    /// (polling their upstream id).
    pub resumed: u64,
    /// Unfinished tasks this run created or updated that are left parked
    /// (not run). Tasks parked by an earlier run and unchanged now are not
    /// counted: this is not the number of parked tasks in the database.
    pub parked: u64,
}

/// Image counts of a run: only images of tasks counted as created, updated
/// or unchanged (images of skipped tasks are not counted anywhere).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImageCounts {
    /// Kept as their remote URL (without `--copy-images`).
    pub remote: u64,
    /// Downloaded into modelgen's storage (`--copy-images`, not in a dry run).
    pub copied: u64,
    /// `--copy-images --dry-run`: would be downloaded; nothing was fetched,
    /// so whether the download would succeed is not known.
    pub would_copy: u64,
    /// `--copy-images`: the download failed (see `copy_failures`); the
    /// image keeps its remote URL, and the command exits with status 3.
    pub copy_failed: u64,
    /// Already copied by an earlier run (not downloaded again).
    pub already_copied: u64,
    /// Held only inline (base64) in the source: decoded into modelgen's storage.
    pub stored_from_inline: u64,
    /// Not imported; see `skipped_by_reason`.
    pub skipped: u64,
}

/// One row that was not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedRow {
    /// Source table.
    pub table: &'static str,
    /// Source row id.
    pub id: i64,
    /// The row's task id (for an image, its task's).
    pub task_id: Option<String>,
    /// Why.
    pub reason: String,
}

/// What a run did (or, dry, would do); printed as JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    /// Nothing was written.
    pub dry_run: bool,
    /// Rows in the source.
    pub source: LegacyCounts,
    /// Tasks.
    pub tasks: TaskCounts,
    /// Images.
    pub images: ImageCounts,
    /// Skipped rows (tasks and images) by reason.
    pub skipped_by_reason: BTreeMap<String, u64>,
    /// The first skipped rows, one by one.
    pub skipped: Vec<SkippedRow>,
    /// The first images whose download failed (`--copy-images`), with why;
    /// they keep their remote URL.
    pub copy_failures: Vec<SkippedRow>,
    /// Warnings about the run as a whole (also printed on stderr).
    pub notes: Vec<String>,
}

/// How many tasks' timestamps look like a wrong `--source-timezone`, and the
/// largest gap.
#[derive(Debug, Default)]
struct ClockSkew {
    tasks: u64,
    worst: chrono::TimeDelta,
}

impl ClockSkew {
    fn note(&self, zones: &Zones) -> Option<String> {
        (self.tasks > 0).then(|| {
            format!(
                "{} imported task(s) have created_at later than their updated_at or \
                 completed_at (by up to {} min): --source-timezone ({}) is probably not \
                 the earlier database server's zone (run `SELECT @@global.time_zone, \
                 @@system_time_zone` on it), or --app-timezone ({}) is wrong; \
                 re-run the import with the right zone to correct them",
                self.tasks,
                self.worst.num_minutes(),
                zones.server,
                zones.app,
            )
        })
    }
}

/// How long `created_at` lies after the task's later timestamps (`None`
/// when it does not): the sign of a wrong `--source-timezone`.
pub fn created_after_end(task: &ImportedTask) -> Option<chrono::TimeDelta> {
    let end = task
        .completed_at
        .map_or(task.updated_at, |c| c.min(task.updated_at));
    (task.created_at > end).then(|| task.created_at - end)
}

impl ImportSummary {
    /// Some `--copy-images` download failed: the command exits with status 3.
    pub fn copy_failed(&self) -> bool {
        self.images.copy_failed > 0
    }

    fn copy_failure(&mut self, id: i64, task_id: &str, reason: String) {
        self.images.copy_failed += 1;
        if self.copy_failures.len() < LISTED_SKIPS {
            self.copy_failures.push(SkippedRow {
                table: "generation_image",
                id,
                task_id: Some(task_id.to_owned()),
                reason,
            });
        }
    }

    fn skip(&mut self, table: &'static str, id: i64, task_id: Option<&str>, reason: String) {
        *self.skipped_by_reason.entry(reason.clone()).or_default() += 1;
        if self.skipped.len() < LISTED_SKIPS {
            self.skipped.push(SkippedRow {
                table,
                id,
                task_id: task_id.map(str::to_owned),
                reason,
            });
        }
    }
}

/// Where the import writes.
pub struct Target {
    /// Tasks (reads, for dry runs).
    pub tasks: Arc<dyn TaskRepository>,
    /// Images (reads).
    pub images: Arc<dyn ImageRepository>,
    /// The write path.
    pub import: Arc<dyn TaskImport>,
    /// Image storage, for copied and inline images.
    pub blobs: Arc<dyn BlobStore>,
    /// Downloads for `--copy-images`: the service's own fetcher, under the
    /// outbound policy (docs/outbound.md: public addresses and
    /// `OUTBOUND_ALLOWLIST` only, every redirect checked).
    pub fetcher: Arc<dyn ImageFetcher>,
}

/// The earlier service's status, by SQLAlchemy member name or value, any case.
pub fn legacy_status(raw: &str) -> Option<TaskStatus> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "submitted" => Some(TaskStatus::Submitted),
        "processing" => Some(TaskStatus::Processing),
        "completed" => Some(TaskStatus::Completed),
        "failed" => Some(TaskStatus::Failed),
        _ => None,
    }
}

fn legacy_angle(raw: &str) -> Option<Angle> {
    raw.trim().to_ascii_lowercase().parse().ok()
}

/// The modelgen task a source row becomes (without images), or why it cannot
/// be imported. `base_task_id` is the `task_id` of the row's base model
/// (edit/outfit), `None` when `base_model_id` names no row. `resume_at` is
/// when an unfinished task with an upstream id becomes due (`None`: parked).
///
/// # Errors
/// The reason, for the summary.
pub fn convert_task(
    table: LegacyTable,
    row: &LegacyTaskRow,
    base_task_id: Option<&str>,
    zones: &Zones,
    resume_at: Option<DateTime<Utc>>,
) -> Result<ImportedTask, String> {
    let task_id: TaskId = row
        .task_id
        .parse()
        .map_err(|e| format!("task id not accepted by modelgen: {e}"))?;
    let user_len = row.user_id.chars().count();
    if user_len == 0 || user_len > 64 || row.user_id.chars().any(char::is_control) {
        return Err(
            "user_id not accepted by modelgen (1-64 characters, no control characters)".into(),
        );
    }
    let request_id = row
        .request_id
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    if request_id.as_ref().is_some_and(|r| r.chars().count() > 64) {
        return Err("request_id longer than 64 characters".into());
    }
    let status = legacy_status(&row.status).ok_or_else(|| {
        format!(
            "unknown status `{}`",
            row.status.chars().take(32).collect::<String>()
        )
    })?;
    let (task_type, base_model_task_id, angle) = match table {
        LegacyTable::BaseModel => (TaskType::Default, None, None),
        LegacyTable::Edit | LegacyTable::Outfit => {
            let base = base_task_id
                .ok_or_else(|| {
                    "missing base model (base_model_id names no base_model_task row)".to_owned()
                })?
                .parse::<TaskId>()
                .map_err(|e| format!("base model task id not accepted by modelgen: {e}"))?;
            if table == LegacyTable::Edit {
                (TaskType::Edit, Some(base), None)
            } else {
                let raw = row.angle.as_deref().unwrap_or("");
                let angle = legacy_angle(raw).ok_or_else(|| {
                    format!(
                        "unknown angle `{}`",
                        raw.chars().take(32).collect::<String>()
                    )
                })?;
                (TaskType::Outfit, Some(base), Some(angle))
            }
        }
    };
    let created_at = zones.server.to_utc(row.created_at)?;
    let updated_at = zones.app.to_utc(row.updated_at)?;
    let completed_at = match (status.is_terminal(), row.completed_at) {
        (true, Some(at)) => Some(zones.app.to_utc(at)?),
        (true, None) => Some(updated_at),
        (false, _) => None,
    };
    let progress = if status == TaskStatus::Completed {
        Progress::clamped(100)
    } else {
        Progress::clamped(row.progress)
    };
    let external_task_id = row
        .apimart_task_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let resume_at = if status.is_terminal() || external_task_id.is_none() {
        None
    } else {
        resume_at
    };
    Ok(ImportedTask {
        task_id,
        request_id,
        user_id: row.user_id.clone(),
        task_type,
        base_model_task_id,
        angle,
        external_task_id,
        status,
        progress,
        error_code: (status == TaskStatus::Failed).then_some(CODE_UPSTREAM),
        error_message: row.error_message.clone().filter(|m| !m.is_empty()),
        created_at,
        updated_at,
        completed_at,
        resume_at,
        source: format!("legacy:{}:{}", table.table_name(), row.id),
        images: Vec::new(),
    })
}

/// The blob-store key of a copied source image.
fn copied_key(task_id: &TaskId, image_id: i64, mime: ImageMime) -> String {
    format!("results/{task_id}/legacy-{image_id}.{}", mime.extension())
}

/// A stored image described from its bytes, or why they are not an image modelgen serves.
fn stored_image(
    task_id: &TaskId,
    row: &LegacyImageRow,
    bytes: &[u8],
    angle: Option<Angle>,
    created_at: DateTime<Utc>,
) -> Result<(String, ImportedImage), String> {
    let mime = ImageMime::sniff(bytes).ok_or("image is not PNG, JPEG or WebP")?;
    let size = imagesize::blob_size(bytes).map_err(|e| format!("image unreadable: {e}"))?;
    let key = copied_key(task_id, row.id, mime);
    Ok((
        key.clone(),
        ImportedImage {
            angle,
            location: ImageLocation::Stored(key),
            mime: Some(mime.as_str().to_owned()),
            width: i32::try_from(size.width).ok(),
            height: i32::try_from(size.height).ok(),
            bytes: i64::try_from(bytes.len()).ok(),
            created_at,
        },
    ))
}

/// What became of one source image.
enum ImageResult {
    Remote(ImportedImage),
    Copied(ImportedImage),
    /// Dry run: the download is not tried.
    WouldCopy(ImportedImage),
    /// The download failed (the reason): the image keeps its remote URL.
    CopyFailed(ImportedImage, String),
    AlreadyCopied(ImportedImage),
    FromInline(ImportedImage),
}

/// What is counted for one image once its task's outcome is known.
enum ImageTally {
    Remote,
    Copied,
    WouldCopy,
    CopyFailed(i64, String),
    AlreadyCopied,
    FromInline,
    Skipped(i64, String),
}

/// Runs an import. Progress goes to a bar on stderr when asked and stderr
/// is a terminal; the returned summary says what happened.
///
/// # Errors
/// The source cannot be read, or the target database fails (the rows
/// written until then stay: a re-run continues).
pub async fn run(options: &ImportOptions, target: &Target) -> anyhow::Result<ImportSummary> {
    let mut source = LegacySource::connect(&options.from).await?;
    let mut summary = ImportSummary {
        dry_run: options.dry_run,
        source: source.counts().await?,
        ..ImportSummary::default()
    };
    let bar = if options.progress && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(summary.source.tasks());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:>15} [{bar:40}] {pos}/{len} tasks ({eta} left)",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let bases = source.base_model_ids().await?;
    // Base models present in modelgen after this run (edit/outfit link to them).
    let mut present: HashSet<String> = HashSet::new();
    let now = Utc::now();
    let resume_at = options.resume_unfinished.then_some(now);
    let mut skew = ClockSkew::default();
    for table in LegacyTable::ALL {
        bar.set_message(table.table_name());
        let mut after = 0_i64;
        loop {
            let rows = source.tasks_after(table, after, PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = last.id;
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let mut images: HashMap<i64, Vec<LegacyImageRow>> = HashMap::new();
            for image in source.images_of(table, &ids).await? {
                images.entry(image.task_id).or_default().push(image);
            }
            for row in &rows {
                let base = match table {
                    LegacyTable::BaseModel => None,
                    _ => row
                        .base_model_id
                        .and_then(|id| bases.get(&id))
                        .map(String::as_str),
                };
                let mut task = match convert_task(table, row, base, &options.zones, resume_at) {
                    Ok(task) => task,
                    Err(reason) => {
                        summary.tasks.skipped += 1;
                        summary.skip(
                            table.table_name(),
                            row.id,
                            Some(row.task_id.as_str()),
                            reason,
                        );
                        bar.inc(1);
                        continue;
                    }
                };
                if let Some(base) = &task.base_model_task_id
                    && !present.contains(base.as_str())
                {
                    summary.tasks.skipped += 1;
                    summary.skip(
                        table.table_name(),
                        row.id,
                        Some(row.task_id.as_str()),
                        "its base model task was not imported".into(),
                    );
                    bar.inc(1);
                    continue;
                }
                let existing = existing_images(target, &task.task_id).await?;
                let mut pending_copies = Vec::new();
                let mut tally = Vec::new();
                for image in images.remove(&row.id).unwrap_or_default() {
                    let (counted, kept) = match import_image(
                        &mut source,
                        target,
                        options,
                        &task,
                        &image,
                        &existing,
                        &mut pending_copies,
                    )
                    .await
                    {
                        Ok(ImageResult::Remote(i)) => (ImageTally::Remote, Some(i)),
                        Ok(ImageResult::Copied(i)) => (ImageTally::Copied, Some(i)),
                        Ok(ImageResult::WouldCopy(i)) => (ImageTally::WouldCopy, Some(i)),
                        Ok(ImageResult::CopyFailed(i, reason)) => {
                            (ImageTally::CopyFailed(image.id, reason), Some(i))
                        }
                        Ok(ImageResult::AlreadyCopied(i)) => (ImageTally::AlreadyCopied, Some(i)),
                        Ok(ImageResult::FromInline(i)) => (ImageTally::FromInline, Some(i)),
                        Err(reason) => (ImageTally::Skipped(image.id, reason), None),
                    };
                    tally.push(counted);
                    task.images.extend(kept);
                }
                // Whether the task is due now (resumed by an earlier run),
                // to tell a task this run parks from one it leaves running.
                let was_due = if task.status.is_terminal() {
                    false
                } else {
                    match target.tasks.get_task(&task.task_id).await {
                        Ok(t) => !t.status.is_terminal() && t.next_run_at < parked_until(),
                        Err(RepoError::NotFound) => false,
                        Err(e) => return Err(e.into()),
                    }
                };
                let outcome = if options.dry_run {
                    dry_outcome(target, &task, now).await?
                } else {
                    // Bytes go to storage before the row that points at them.
                    for (key, bytes) in pending_copies {
                        target
                            .blobs
                            .put(&key, bytes)
                            .await
                            .map_err(|e| anyhow::anyhow!("storing image {key}: {e}"))?;
                    }
                    target.import.upsert_imported_task(&task, now).await?
                };
                let unfinished = !task.status.is_terminal();
                match &outcome {
                    ImportOutcome::Created => summary.tasks.created += 1,
                    ImportOutcome::Updated => summary.tasks.updated += 1,
                    ImportOutcome::Unchanged => summary.tasks.unchanged += 1,
                    ImportOutcome::Skipped(skip) => {
                        summary.tasks.skipped += 1;
                        summary.skip(
                            table.table_name(),
                            row.id,
                            Some(row.task_id.as_str()),
                            skip.reason().to_owned(),
                        );
                    }
                }
                if unfinished
                    && matches!(outcome, ImportOutcome::Created | ImportOutcome::Updated)
                    && !was_due
                {
                    if task.resume_at.is_some() {
                        summary.tasks.resumed += 1;
                    } else {
                        summary.tasks.parked += 1;
                    }
                }
                // Images count only for tasks that are (or would be) in modelgen.
                if !matches!(outcome, ImportOutcome::Skipped(_)) {
                    if let Some(gap) = created_after_end(&task) {
                        skew.tasks += 1;
                        skew.worst = skew.worst.max(gap);
                    }
                    for counted in tally {
                        match counted {
                            ImageTally::Remote => summary.images.remote += 1,
                            ImageTally::Copied => summary.images.copied += 1,
                            ImageTally::WouldCopy => summary.images.would_copy += 1,
                            ImageTally::CopyFailed(id, reason) => {
                                summary.copy_failure(id, &row.task_id, reason);
                            }
                            ImageTally::AlreadyCopied => summary.images.already_copied += 1,
                            ImageTally::FromInline => summary.images.stored_from_inline += 1,
                            ImageTally::Skipped(id, reason) => {
                                summary.images.skipped += 1;
                                summary.skip("generation_image", id, Some(&row.task_id), reason);
                            }
                        }
                    }
                }
                if table == LegacyTable::BaseModel && outcome.task_present() {
                    present.insert(task.task_id.to_string());
                }
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    if let Some(note) = skew.note(&options.zones) {
        summary.notes.push(note);
    }
    if summary.copy_failed() {
        summary.notes.push(format!(
            "{} image download(s) failed (see copy_failures); those images keep their \
             remote URL: fix the cause and run the import again to copy them",
            summary.images.copy_failed
        ));
    }
    for note in &summary.notes {
        // Not `eprintln!`: it panics when stderr is a closed pipe.
        let _ = writeln!(std::io::stderr(), "warning: {note}");
    }
    Ok(summary)
}

/// The images modelgen holds for `id` now (none when it has no such task).
async fn existing_images(target: &Target, id: &TaskId) -> anyhow::Result<Vec<ImageRecord>> {
    Ok(target.images.images_for_task(id).await?)
}

/// What a write would do, from what is stored now.
async fn dry_outcome(
    target: &Target,
    task: &ImportedTask,
    now: DateTime<Utc>,
) -> anyhow::Result<ImportOutcome> {
    let existing = match target.tasks.get_task(&task.task_id).await {
        Ok(t) => Some(t),
        Err(RepoError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let images = match &existing {
        Some(_) => target.images.images_for_task(&task.task_id).await?,
        None => Vec::new(),
    };
    Ok(plan_import(
        existing.as_ref().map(|t| (t, images.as_slice())),
        task,
        now,
    ))
}

/// One source image: its URL kept, or (`--copy-images`) its bytes copied,
/// or, held only inline in the source, its bytes decoded into storage.
/// Bytes to store are added to `pending` (stored by the caller, not in a dry run).
async fn import_image(
    source: &mut LegacySource,
    target: &Target,
    options: &ImportOptions,
    task: &ImportedTask,
    row: &LegacyImageRow,
    existing: &[ImageRecord],
    pending: &mut Vec<(String, Bytes)>,
) -> Result<ImageResult, String> {
    let angle = match row
        .angle
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        Some(raw) => Some(legacy_angle(raw).ok_or_else(|| {
            format!(
                "unknown angle `{}`",
                raw.chars().take(32).collect::<String>()
            )
        })?),
        None => task.angle,
    };
    let created_at = options.zones.server.to_utc(row.created_at)?;
    let url = row
        .image_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    // An image copied by an earlier run is not downloaded again.
    let prefix = format!("results/{}/legacy-{}.", task.task_id, row.id);
    let earlier = existing.iter().find(|i| {
        i.location
            .storage_key()
            .is_some_and(|k| k.starts_with(&prefix))
    });
    if let Some(url) = url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err("image URL is not http(s)".into());
        }
        let remote = ImportedImage {
            angle,
            location: ImageLocation::Remote(url.to_owned()),
            mime: None,
            width: None,
            height: None,
            bytes: None,
            created_at,
        };
        if !options.copy_images {
            return Ok(ImageResult::Remote(remote));
        }
        if let Some(done) = earlier {
            return Ok(ImageResult::AlreadyCopied(from_record(
                done, angle, created_at,
            )));
        }
        if options.dry_run {
            // Not downloaded: the key's extension is a guess until then.
            return Ok(ImageResult::WouldCopy(ImportedImage {
                angle,
                location: ImageLocation::Stored(format!("{prefix}img")),
                mime: None,
                width: None,
                height: None,
                bytes: None,
                created_at,
            }));
        }
        // A failed copy keeps the remote URL: the image stays usable.
        let bytes = match read_all(&*target.fetcher, url, MAX_IMAGE_BYTES).await {
            Ok(bytes) => bytes,
            Err(e) => return Ok(ImageResult::CopyFailed(remote, e.to_string())),
        };
        return Ok(
            match stored_image(&task.task_id, row, &bytes, angle, created_at) {
                Ok((key, image)) => {
                    pending.push((key, bytes));
                    ImageResult::Copied(image)
                }
                Err(reason) => ImageResult::CopyFailed(remote, reason),
            },
        );
    }
    if row.has_inline == 0 {
        return Err("no image URL and no inline image".into());
    }
    if let Some(done) = earlier {
        return Ok(ImageResult::AlreadyCopied(from_record(
            done, angle, created_at,
        )));
    }
    let inline = source
        .inline_image(row.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no image URL and no inline image")?;
    let payload = inline
        .split_once("base64,")
        .map_or(inline.as_str(), |(_, data)| data);
    let cleaned: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|_| "inline image is not valid base64".to_owned())?;
    let (key, image) = stored_image(&task.task_id, row, &bytes, angle, created_at)?;
    pending.push((key, Bytes::from(bytes)));
    Ok(ImageResult::FromInline(image))
}

fn from_record(
    record: &ImageRecord,
    angle: Option<Angle>,
    created_at: DateTime<Utc>,
) -> ImportedImage {
    ImportedImage {
        angle,
        location: record.location.clone(),
        mime: record.mime.clone(),
        width: record.width,
        height: record.height,
        bytes: record.bytes,
        created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones(server: &str, app: &str) -> Zones {
        Zones {
            server: server.parse().unwrap(),
            app: app.parse().unwrap(),
        }
    }

    fn naive(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn row(status: &str) -> LegacyTaskRow {
        LegacyTaskRow {
            id: 7,
            task_id: "task_0123456789abcdef".into(),
            request_id: Some("5b0c1c7e-0000-4000-8000-000000000000".into()),
            user_id: "用户-1".into(),
            base_model_id: Some(3),
            angle: Some("SIDE".into()),
            apimart_task_id: Some("task_01JABCDEF".into()),
            status: status.into(),
            progress: 40,
            error_message: Some("Apimart 调用失败: 超时".into()),
            created_at: naive("2025-12-01 08:00:00"),
            updated_at: naive("2025-12-01 00:05:00"),
            completed_at: Some(naive("2025-12-01 00:05:00")),
        }
    }

    #[test]
    fn zones_parse_offsets_names_and_refuse_the_rest() {
        assert_eq!("UTC".parse::<SourceZone>().unwrap().to_string(), "UTC");
        assert_eq!(
            "+08:00".parse::<SourceZone>().unwrap().to_string(),
            "+08:00"
        );
        assert_eq!("-0530".parse::<SourceZone>().unwrap().to_string(), "-05:30");
        assert_eq!("+08".parse::<SourceZone>().unwrap().to_string(), "+08:00");
        assert_eq!(
            "Asia/Shanghai".parse::<SourceZone>().unwrap().to_string(),
            "Asia/Shanghai"
        );
        for bad in ["+15:00", "+08:60", "Mars/Olympus", "", "+", "8"] {
            assert!(bad.parse::<SourceZone>().is_err(), "{bad}");
        }
    }

    #[test]
    fn named_zones_follow_daylight_saving_and_refuse_gaps() {
        let ny: SourceZone = "America/New_York".parse().unwrap();
        assert_eq!(
            ny.to_utc(naive("2025-07-01 12:00:00"))
                .unwrap()
                .to_rfc3339(),
            "2025-07-01T16:00:00+00:00"
        );
        assert_eq!(
            ny.to_utc(naive("2025-01-01 12:00:00"))
                .unwrap()
                .to_rfc3339(),
            "2025-01-01T17:00:00+00:00"
        );
        assert!(ny.to_utc(naive("2025-03-09 02:30:00")).is_err());
    }

    #[test]
    fn a_completed_outfit_row_converts_with_both_zones() {
        let task = convert_task(
            LegacyTable::Outfit,
            &row("COMPLETED"),
            Some("task_base"),
            &zones("+08:00", "UTC"),
            Some(Utc::now()),
        )
        .unwrap();
        assert_eq!(task.task_type, TaskType::Outfit);
        assert_eq!(task.angle, Some(Angle::Side));
        assert_eq!(task.status, TaskStatus::Completed);
        assert_eq!(task.progress.get(), 100);
        assert_eq!(task.created_at.to_rfc3339(), "2025-12-01T00:00:00+00:00");
        assert_eq!(
            task.completed_at.unwrap().to_rfc3339(),
            "2025-12-01T00:05:00+00:00"
        );
        assert_eq!(task.base_model_task_id.unwrap().as_str(), "task_base");
        assert_eq!(task.error_code, None);
        assert_eq!(task.resume_at, None, "terminal tasks are never resumed");
        assert_eq!(task.source, "legacy:outfit_task:7");
    }

    #[test]
    fn unfinished_rows_resume_only_with_an_upstream_id() {
        let z = zones("UTC", "UTC");
        let at = Utc::now();
        let mut r = row("processing");
        let t = convert_task(LegacyTable::BaseModel, &r, None, &z, Some(at)).unwrap();
        assert_eq!(
            (t.status, t.resume_at, t.completed_at),
            (TaskStatus::Processing, Some(at), None)
        );
        assert_eq!(t.progress.get(), 40);
        r.apimart_task_id = None;
        let t = convert_task(LegacyTable::BaseModel, &r, None, &z, Some(at)).unwrap();
        assert_eq!(t.resume_at, None);
    }

    #[test]
    fn created_after_end_flags_a_wrong_source_zone() {
        // The row: created 08:00 server time, completed 00:05 UTC.
        let right = convert_task(
            LegacyTable::BaseModel,
            &row("completed"),
            None,
            &zones("+08:00", "UTC"),
            None,
        )
        .unwrap();
        assert_eq!(created_after_end(&right), None);
        let wrong = convert_task(
            LegacyTable::BaseModel,
            &row("completed"),
            None,
            &zones("UTC", "UTC"),
            None,
        )
        .unwrap();
        assert_eq!(
            created_after_end(&wrong).map(|d| d.num_minutes()),
            Some(475)
        );
        let skew = ClockSkew {
            tasks: 1,
            worst: chrono::TimeDelta::minutes(475),
        };
        let note = skew.note(&zones("UTC", "UTC")).unwrap();
        assert!(note.contains("--source-timezone (UTC)"), "{note}");
        assert_eq!(ClockSkew::default().note(&zones("UTC", "UTC")), None);
    }

    #[test]
    fn bad_rows_say_why() {
        let z = zones("UTC", "UTC");
        let err =
            |r: &LegacyTaskRow, table, base| convert_task(table, r, base, &z, None).unwrap_err();
        assert!(
            err(&row("queued"), LegacyTable::BaseModel, None).contains("unknown status `queued`")
        );
        assert!(err(&row("failed"), LegacyTable::Edit, None).contains("missing base model"));
        let mut r = row("failed");
        r.angle = Some("top".into());
        assert!(err(&r, LegacyTable::Outfit, Some("task_b")).contains("unknown angle"));
        r.task_id = "has space".into();
        assert!(err(&r, LegacyTable::BaseModel, None).contains("task id"));
        let mut r = row("failed");
        r.user_id = String::new();
        assert!(err(&r, LegacyTable::BaseModel, None).contains("user_id"));
        let t = convert_task(LegacyTable::Edit, &row("FAILED"), Some("task_b"), &z, None).unwrap();
        assert_eq!(t.error_code, Some(CODE_UPSTREAM));
        assert_eq!(t.error_message.as_deref(), Some("Apimart 调用失败: 超时"));
    }
}
