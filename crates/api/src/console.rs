//! The operator console (`/console`, README "Console"): static files built
//! into the binary and served with a strict Content-Security-Policy, and the
//! admin endpoints only it needs — `GET /admin/stats`, a task's private
//! input photos, the retry of one task and a test callback. The page itself
//! holds no data: every call it makes is an authenticated JSON API call
//! (docs/design.md, "Operator console").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, TimeDelta, Timelike as _, Utc};
use serde::{Deserialize, Serialize};

use modelgen_callback::{CallbackRequest, CallbackSender, DeliveryResult};
use modelgen_domain::{ImageMime, TaskStatus, format_timestamp};
use modelgen_persistence::{
    BLOB_REF_PREFIX, CallbackStatus, EventLog, INPUTS_PREFIX, RESULTS_PREFIX, RepoError,
    UsageGroup, UsageQuery,
};

use crate::error::{ApiError, Envelope};
use crate::http::HttpState;
use crate::service::micros_to_units;

/// One file of the console: its path under `/console/`, content type, bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file of the console, built into the binary (no CDN: it works
/// offline). `index.html` is also served at `/console` and `/console/`.
const ASSETS: [Asset; 6] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../console/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../console/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../console/api.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../console/charts.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../console/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../console/favicon.svg"),
    },
];

/// Whether `path` is one of the console's static files (open without a
/// token: a browser cannot send one for a page load).
pub fn is_console_path(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// The console's Content-Security-Policy: only its own scripts and styles
/// (no inline script, no `eval`), calls to its own origin, images from its
/// origin, `blob:` (the input thumbnails it fetches with the token) and
/// `data:`, plus `image_origin`, where result image URLs point when that is
/// another origin (`PUBLIC_BASE_URL`, an S3 endpoint). No frames, no plugins.
pub fn content_security_policy(image_origin: Option<&str>) -> String {
    let extra = image_origin
        .filter(|o| {
            !o.is_empty()
                && o.chars()
                    .all(|c| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '\'' | '"'))
        })
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:{extra}; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The origin (`scheme://host[:port]`) of an image URL, when it has one.
pub fn url_origin(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let origin = parsed.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// `GET /console/{file}` (and `/console`, `/console/`): a console file.
pub async fn console_file(
    req: actix_web::HttpRequest,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let name = req
        .path()
        .strip_prefix("/console")
        .unwrap_or("")
        .trim_start_matches('/');
    let name = if name.is_empty() { "index.html" } else { name };
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::NotFound("no such console file".into()))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            content_security_policy(state.console_image_origin.as_deref()),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // Revalidated on each load: a new binary's console replaces the old at once.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(asset.body))
}

/// Most ended tasks and upstream failures one stats window reads; past it
/// the answer says `truncated` (a day of a very busy service).
pub const MAX_STATS_ROWS: i64 = 100_000;

/// A window `GET /admin/stats` can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsWindow {
    /// The last hour, in 1-minute buckets.
    Hour,
    /// The last 24 hours, in 15-minute buckets.
    Day,
}

impl StatsWindow {
    fn parse(s: Option<&str>) -> Result<StatsWindow, ApiError> {
        match s {
            None | Some("") | Some("1h") => Ok(StatsWindow::Hour),
            Some("24h") => Ok(StatsWindow::Day),
            Some(_) => Err(ApiError::field("window", "must be 1h or 24h")),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            StatsWindow::Hour => "1h",
            StatsWindow::Day => "24h",
        }
    }

    /// Bucket width, seconds.
    fn bucket_seconds(self) -> i64 {
        match self {
            StatsWindow::Hour => 60,
            StatsWindow::Day => 15 * 60,
        }
    }

    fn buckets(self) -> i64 {
        match self {
            StatsWindow::Hour => 60,
            StatsWindow::Day => 96,
        }
    }
}

/// One bucket of the stats series.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StatsBucket {
    /// Start of the bucket, RFC 3339 UTC.
    pub start: String,
    /// Tasks that completed in it.
    pub completed: u64,
    /// Tasks that failed in it.
    pub failed: u64,
    /// Tasks cancelled in it.
    pub cancelled: u64,
    /// Median created→completed time of the tasks that completed in it, ms.
    pub p50_ms: Option<i64>,
    /// 95th percentile of the same, ms.
    pub p95_ms: Option<i64>,
    /// Failed upstream calls (submits and polls) in it.
    pub upstream_errors: u64,
}

/// Created→completed time of the tasks completed in the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LatencyStats {
    /// How many completed tasks it is computed over.
    pub count: u64,
    /// Median, ms (nearest rank); null without completed tasks.
    pub p50_ms: Option<i64>,
    /// 95th percentile, ms (nearest rank).
    pub p95_ms: Option<i64>,
}

/// Failed upstream calls with one HTTP status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct UpstreamErrorCount {
    /// The upstream's HTTP status, e.g. `429`; `none` when there was no
    /// answer (timeout, connection error).
    pub status: String,
    /// Failed submits with it.
    pub submits: u64,
    /// Failed polls with it.
    pub polls: u64,
}

/// The submit queue now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueueView {
    /// Tasks waiting to be submitted upstream.
    pub depth: u64,
    /// When the oldest of them joined the queue.
    pub oldest_queued_at: Option<String>,
    /// Tasks the upstream accepted per second over the last minute.
    pub drain_per_second: f64,
    /// Tasks running upstream (`processing`).
    pub processing: u64,
}

/// Callback deliveries now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CallbackCounts {
    /// Waiting for an attempt (also retries).
    pub pending: u64,
    /// Gave up; an operator can redeliver them.
    pub dead: u64,
    /// Delivered (still in the outbox).
    pub delivered: u64,
}

/// What the upstream charged today.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SpendToday {
    /// Start of today (UTC midnight), RFC 3339.
    pub since: String,
    /// Tasks completed since.
    pub completed: u64,
    /// Their summed cost, in the Apimart account's balance unit (docs/apimart.md, "Cost").
    pub cost: f64,
}

/// `GET /admin/stats` answer: what the console's Overview draws.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Stats {
    /// `1h` or `24h`.
    pub window: String,
    /// Start of the window (the first bucket's start), RFC 3339 UTC.
    pub from: String,
    /// When the stats were read (the window's end).
    pub to: String,
    /// Width of each bucket, seconds (60 for `1h`, 900 for `24h`).
    pub bucket_seconds: i64,
    /// The series, oldest first (60 or 96 buckets).
    pub buckets: Vec<StatsBucket>,
    /// Tasks completed in the window.
    pub completed: u64,
    /// Tasks failed in the window.
    pub failed: u64,
    /// Tasks cancelled in the window.
    pub cancelled: u64,
    /// `completed / (completed + failed)` in the window, 0–1; null when none ended.
    pub success_rate: Option<f64>,
    /// Created→completed time of the tasks completed in the window.
    pub latency: LatencyStats,
    /// Failed upstream calls in the window by HTTP status, most first.
    pub upstream_errors: Vec<UpstreamErrorCount>,
    /// The submit queue now.
    pub queue: QueueView,
    /// Callback deliveries now.
    pub callbacks: CallbackCounts,
    /// Spend since UTC midnight.
    pub spend_today: SpendToday,
    /// More than 100 000 ended tasks or upstream failures fell in the window:
    /// the series count the oldest 100 000 of each only.
    pub truncated: bool,
}

/// Query of `GET /admin/stats`.
#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    window: Option<String>,
}

/// The `q`-quantile (0–1) of sorted `values`, nearest rank.
fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Reads and computes the stats of `window` ending at `now`.
///
/// # Errors
/// Database errors.
pub async fn compute_stats(
    state: &HttpState,
    window: StatsWindow,
    now: DateTime<Utc>,
) -> Result<Stats, ApiError> {
    let width = window.bucket_seconds();
    // Buckets end on a whole bucket boundary after now; the last one is partial.
    let now_s = now.timestamp();
    let end_s = (now_s.div_euclid(width) + 1) * width;
    let start_s = end_s - width * window.buckets();
    let from = DateTime::from_timestamp(start_s, 0).unwrap_or(now);
    let events: &dyn EventLog = &*state.events;
    let ended = events.ended_tasks(from, now, MAX_STATS_ROWS).await?;
    let failures = events.upstream_failures(from, now, MAX_STATS_ROWS).await?;
    let truncated = ended.len() as i64 >= MAX_STATS_ROWS || failures.len() as i64 >= MAX_STATS_ROWS;

    let n = usize::try_from(window.buckets()).unwrap_or(0);
    let mut buckets: Vec<StatsBucket> = (0..n)
        .map(|i| StatsBucket {
            start: DateTime::from_timestamp(start_s + width * i as i64, 0)
                .map(format_timestamp)
                .unwrap_or_default(),
            ..StatsBucket::default()
        })
        .collect();
    let slot = |at: DateTime<Utc>| -> Option<usize> {
        usize::try_from((at.timestamp() - start_s).div_euclid(width)).ok()
    };
    let mut per_bucket_ms: Vec<Vec<i64>> = vec![Vec::new(); n];
    let mut all_ms = Vec::new();
    let (mut completed, mut failed, mut cancelled) = (0, 0, 0);
    for task in &ended {
        let Some(b) = slot(task.completed_at).and_then(|i| buckets.get_mut(i).map(|b| (i, b)))
        else {
            continue;
        };
        let (i, bucket) = b;
        match task.status {
            TaskStatus::Completed => {
                bucket.completed += 1;
                completed += 1;
                let ms = (task.completed_at - task.created_at)
                    .num_milliseconds()
                    .max(0);
                all_ms.push(ms);
                if let Some(v) = per_bucket_ms.get_mut(i) {
                    v.push(ms);
                }
            }
            TaskStatus::Failed => {
                bucket.failed += 1;
                failed += 1;
            }
            TaskStatus::Cancelled => {
                bucket.cancelled += 1;
                cancelled += 1;
            }
            TaskStatus::Submitted | TaskStatus::Processing => {}
        }
    }
    for (bucket, ms) in buckets.iter_mut().zip(per_bucket_ms.iter_mut()) {
        ms.sort_unstable();
        bucket.p50_ms = percentile(ms, 0.5);
        bucket.p95_ms = percentile(ms, 0.95);
    }
    all_ms.sort_unstable();

    let mut by_status: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for f in &failures {
        if let Some(bucket) = slot(f.at).and_then(|i| buckets.get_mut(i)) {
            bucket.upstream_errors += 1;
        }
        let key = f
            .http_status
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        let entry = by_status.entry(key).or_default();
        if f.kind == modelgen_persistence::EventKind::SubmitFailed {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    let mut upstream_errors: Vec<UpstreamErrorCount> = by_status
        .into_iter()
        .map(|(status, (submits, polls))| UpstreamErrorCount {
            status,
            submits,
            polls,
        })
        .collect();
    upstream_errors.sort_by_key(|e| std::cmp::Reverse(e.submits + e.polls));

    // Read now from the database (admission control's cached snapshot may
    // still count tasks admitted in its last second).
    let window_len = crate::admission::DRAIN_WINDOW;
    let queue = state.service.tasks.queue_stats(now, window_len).await?;
    let processing = state
        .readiness
        .db
        .count_active_tasks()
        .await?
        .into_iter()
        .find(|(s, _)| *s == TaskStatus::Processing)
        .map_or(0, |(_, n)| u64::try_from(n).unwrap_or(0));
    let mut callbacks = CallbackCounts::default();
    for (status, count) in events.count_callbacks().await? {
        match status {
            CallbackStatus::Pending => callbacks.pending = count,
            CallbackStatus::Dead => callbacks.dead = count,
            CallbackStatus::Delivered => callbacks.delivered = count,
        }
    }
    let midnight = now
        .with_hour(0)
        .and_then(|t| t.with_minute(0))
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    let today = events
        .usage(&UsageQuery {
            user_id: None,
            from: midnight,
            to: now + TimeDelta::milliseconds(1),
            group_by: UsageGroup::Type,
        })
        .await?;
    let spend_today = SpendToday {
        since: format_timestamp(midnight),
        completed: today.iter().map(|r| r.count).sum(),
        cost: micros_to_units(
            today
                .iter()
                .fold(0_i64, |sum, r| sum.saturating_add(r.cost_micros)),
        ),
    };
    let decided = completed + failed;
    Ok(Stats {
        window: window.as_str().to_owned(),
        from: format_timestamp(from),
        to: format_timestamp(now),
        bucket_seconds: width,
        buckets,
        completed,
        failed,
        cancelled,
        success_rate: (decided > 0).then(|| completed as f64 / decided as f64),
        latency: LatencyStats {
            count: all_ms.len() as u64,
            p50_ms: percentile(&all_ms, 0.5),
            p95_ms: percentile(&all_ms, 0.95),
        },
        upstream_errors,
        queue: QueueView {
            depth: queue.depth,
            oldest_queued_at: queue.oldest_queued_at.map(format_timestamp),
            drain_per_second: queue.submitted_in_window as f64 / window_len.as_secs_f64(),
            processing,
        },
        callbacks,
        spend_today,
        truncated,
    })
}

/// `GET /admin/stats?window=1h|24h`: the console's Overview.
#[utoipa::path(get, path = "/admin/stats", tag = "admin",
    description = "Tasks ended per bucket by outcome, success rate, created→completed p50/p95, failed upstream calls by HTTP status (from the task timelines), the submit queue, callback deliveries pending/dead, and today's spend. Computed from the database, so every replica answers the same.",
    params(("window" = Option<String>, Query, description = "`1h` (default; 60 buckets of 1 minute) or `24h` (96 buckets of 15 minutes)")),
    responses(
        (status = 200, description = "The stats", body = Envelope<Stats>),
        (status = 400, description = "Bad window (1001)", body = crate::error::ErrorEnvelope),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = crate::error::ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn stats(
    query: web::Query<StatsQuery>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let window = StatsWindow::parse(query.window.as_deref())?;
    let stats = compute_stats(&state, window, Utc::now()).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Envelope::ok("success", stats)))
}

/// Where one input image of a task is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct InputView {
    /// Its index, from 0, in upstream order (`/admin/tasks/{task_id}/inputs/{n}`).
    pub n: usize,
    /// `upload` (the client's photo, private), `result` (a base model's
    /// result image) or `url` (an `https://` URL the upstream fetched;
    /// modelgen keeps no copy).
    pub source: String,
    /// Whether `GET /admin/tasks/{task_id}/inputs/{n}` can serve its bytes
    /// (an upload the retention cleanup or an erasure deleted cannot).
    pub available: bool,
}

/// `GET /admin/tasks/{task_id}/inputs` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct InputList {
    /// The task.
    pub task_id: String,
    /// Its inputs in upstream order.
    pub items: Vec<InputView>,
}

/// What an input reference is: its source and, when stored, its blob key.
fn classify_input(reference: &str) -> (&'static str, Option<&str>) {
    match reference.strip_prefix(BLOB_REF_PREFIX) {
        Some(key) if key.starts_with(INPUTS_PREFIX) => ("upload", Some(key)),
        Some(key) if key.starts_with(RESULTS_PREFIX) => ("result", Some(key)),
        Some(key) => ("upload", Some(key)),
        None => ("url", None),
    }
}

/// `GET /admin/tasks/{task_id}/inputs`: where each input image of a task is.
#[utoipa::path(get, path = "/admin/tasks/{task_id}/inputs", tag = "admin",
    params(("task_id" = String, Path, description = "A task id. Unknown or malformed ids are 404/1003.")),
    responses(
        (status = 200, description = "`data.items`: the task's inputs in upstream order", body = Envelope<InputList>),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = crate::error::ErrorEnvelope),
        (status = 404, description = "Unknown task (1003)", body = crate::error::ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn task_inputs(
    path: web::Path<String>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let task = state.service.find(&path).await?;
    let uploads_gone = task.purged_at.is_some() || task.inputs_purged_at.is_some();
    let items = task
        .input_images
        .iter()
        .enumerate()
        .map(|(n, r)| {
            let (source, key) = classify_input(r);
            let gone = match source {
                "upload" => uploads_gone,
                "result" => task.purged_at.is_some(),
                _ => true,
            };
            InputView {
                n,
                source: source.to_owned(),
                available: key.is_some() && !gone,
            }
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Envelope::ok(
            "success",
            InputList {
                task_id: task.task_id.to_string(),
                items,
            },
        )))
}

/// `GET /admin/tasks/{task_id}/inputs/{n}`: the bytes of one input image.
#[utoipa::path(get, path = "/admin/tasks/{task_id}/inputs/{n}", tag = "admin",
    description = "The private input photo (or the base model's result) a task was created with, for the signed-in operator; never cached (`Cache-Control: no-store`). The console shows it through a `blob:` URL it makes from the authenticated fetch.",
    params(
        ("task_id" = String, Path, description = "A task id. Unknown or malformed ids are 404/1003."),
        ("n" = usize, Path, description = "Index of the input, from 0 (see `GET /admin/tasks/{task_id}/inputs`)"),
    ),
    responses(
        (status = 200, description = "The image bytes, as stored", content(("image/jpeg"), ("image/png"), ("image/webp"))),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = crate::error::ErrorEnvelope),
        (status = 404, description = "Unknown task, no input `n`, an input that is a URL (never stored), or one deleted by the retention cleanup or an erasure (1003)", body = crate::error::ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn task_input(
    path: web::Path<(String, String)>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let (raw_id, raw_n) = path.into_inner();
    let task = state.service.find(&raw_id).await?;
    let count = task.input_images.len();
    let n: usize = raw_n.parse().ok().filter(|n| *n < count).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no input {}: the task has {count} (0 to {})",
            raw_n.chars().take(20).collect::<String>(),
            count.saturating_sub(1)
        ))
    })?;
    let reference = task.input_images.get(n).map_or("", String::as_str);
    let (source, key) = classify_input(reference);
    let Some(key) = key else {
        return Err(ApiError::NotFound(format!(
            "input {n} is a URL the upstream fetched; modelgen keeps no copy"
        )));
    };
    if let Some(at) = task
        .purged_at
        .or(task.inputs_purged_at.filter(|_| source == "upload"))
    {
        return Err(ApiError::NotFound(format!(
            "input {n} was deleted at {} (input retention or erasure)",
            format_timestamp(at)
        )));
    }
    let bytes = state.blobs.get(key).await?;
    let mime = ImageMime::sniff(&bytes).map_or("application/octet-stream", |m| m.as_str());
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, mime))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(bytes))
}

/// `POST /admin/tasks/{task_id}/retry`: put one failed task back in the
/// queue (the CLI's `modelgen tasks retry TASK_ID`).
#[utoipa::path(post, path = "/admin/tasks/{task_id}/retry", tag = "admin",
    description = "The task keeps its id; its timeline gets `retried`, and its next callback has event type `task.retry_<status>` (the earlier callback's record is kept).",
    params(("task_id" = String, Path, description = "A task id. Unknown or malformed ids are 404/1003.")),
    responses(
        (status = 200, description = "Queued again", body = Envelope<crate::dto::TaskView>),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = crate::error::ErrorEnvelope),
        (status = 404, description = "Unknown task (1003)", body = crate::error::ErrorEnvelope),
        (status = 409, description = "Not failed, imported, or its inputs were deleted (1006); `data.status` is the current status", body = crate::error::ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn retry_task(
    path: web::Path<String>,
    state: web::Data<HttpState>,
) -> Result<HttpResponse, ApiError> {
    let task = state.service.find(&path).await?;
    // `data.status` is read again after the refusal: a concurrent retry
    // may have moved the task since the read above.
    let conflict = async |message: String| {
        let status = match state.service.tasks.get_task(&task.task_id).await {
            Ok(now) => now.status,
            _ => task.status,
        };
        ApiError::Conflict {
            message,
            data: Some(serde_json::json!({
                "task_id": task.task_id.to_string(),
                "status": status.as_str(),
            })),
        }
    };
    match state
        .service
        .tasks
        .retry_task(&task.task_id, Utc::now())
        .await
    {
        Ok(_) => {}
        Err(RepoError::Conflict(reason)) => return Err(conflict(reason).await),
        Err(RepoError::InputsPurged { purged_at }) => {
            return Err(conflict(format!(
                "its input images were deleted at {}",
                format_timestamp(purged_at)
            ))
            .await);
        }
        Err(e) => return Err(e.into()),
    }
    metrics::counter!("tasks_retried_total").increment(1);
    state.service.wake.notify_one();
    tracing::info!(action = "retry", task.id = %task.task_id, "failed task put back in the queue");
    let view = state.service.get(&task.task_id.to_string(), false).await?;
    Ok(HttpResponse::Ok().json(Envelope::ok("success", view)))
}

/// Sends test events to `CALLBACK_URL`, signed like real callbacks.
#[derive(Clone)]
pub struct CallbackTester {
    /// The sender real callbacks go through (URL, token, signing secret, timeout).
    pub sender: Arc<dyn CallbackSender>,
    /// Whether callbacks are signed (`CALLBACK_SIGNING_SECRET` set).
    pub signed: bool,
}

/// The body of a test event: what the receiver gets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TestEventBody {
    /// Always `test`: a receiver should answer 2xx and change nothing.
    pub event_type: String,
    /// Same as the `webhook-id` header.
    pub event_id: String,
    /// What this is.
    pub message: String,
    /// When it was sent, RFC 3339 UTC.
    pub sent_at: String,
}

/// `POST /admin/callbacks/test` answer: how the receiver answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TestEventResult {
    /// The `webhook-id` sent (`evt_` + ULID).
    pub event_id: String,
    /// Whether the receiver answered 2xx.
    pub delivered: bool,
    /// Its HTTP status; null when there was no answer.
    pub http_status: Option<u16>,
    /// How long the request took, ms.
    pub latency_ms: u64,
    /// What went wrong: the status and the start of the receiver's body, or
    /// the transport error (`timeout`, `connect`, …); null when delivered.
    pub error: Option<String>,
    /// Whether the request was signed (`CALLBACK_SIGNING_SECRET` is set).
    pub signed: bool,
}

/// `POST /admin/callbacks/test`: one signed test event to `CALLBACK_URL`.
#[utoipa::path(post, path = "/admin/callbacks/test", tag = "admin",
    description = "Sends one request like a real callback (same URL, `Authorization: Bearer CALLBACK_TOKEN`, Standard Webhooks signature headers) with the body `{\"event_type\": \"test\", \"event_id\", \"message\", \"sent_at\"}`, once, without retries and without an outbox row; answers how the receiver answered. A receiver should answer 2xx to `event_type: test` and change nothing.",
    responses(
        (status = 200, description = "What the receiver answered (also when it refused: see `delivered`)", body = Envelope<TestEventResult>),
        (status = 401, description = "Missing or invalid bearer token (1005)", body = crate::error::ErrorEnvelope),
        (status = 409, description = "`CALLBACK_URL` is not set (1006)", body = crate::error::ErrorEnvelope),
    ),
    security(("bearer" = []), ())
)]
pub async fn test_callback(state: web::Data<HttpState>) -> Result<HttpResponse, ApiError> {
    let Some(tester) = &state.callback_tester else {
        return Err(ApiError::Conflict {
            message: "CALLBACK_URL is not set: there is no receiver to test".into(),
            data: None,
        });
    };
    let event_id = format!("evt_{}", ulid::Ulid::generate());
    let body = TestEventBody {
        event_type: "test".into(),
        event_id: event_id.clone(),
        message: "modelgen test event from the operator console: answer 2xx, change nothing".into(),
        sent_at: format_timestamp(Utc::now()),
    };
    let bytes = serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.into()))?;
    let started = Instant::now();
    let outcome = tester
        .sender
        .send(CallbackRequest {
            event_id: &event_id,
            body: &bytes,
        })
        .await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (delivered, http_status, error) = match outcome {
        DeliveryResult::Delivered { status } => (true, Some(status), None),
        DeliveryResult::Rejected {
            status,
            body_excerpt,
            ..
        } => (
            false,
            Some(status),
            Some(if body_excerpt.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {body_excerpt}")
            }),
        ),
        DeliveryResult::Failed { reason } => (false, None, Some(reason)),
    };
    tracing::info!(action = "callback_test", delivered, http.status = ?http_status, latency_ms, "test callback sent");
    Ok(HttpResponse::Ok().json(Envelope::ok(
        "success",
        TestEventResult {
            event_id,
            delivered,
            http_status,
            latency_ms,
            error,
            signed: tester.signed,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_no_inline_script_and_adds_only_a_plain_image_origin() {
        let csp = content_security_policy(None);
        assert!(csp.contains("default-src 'self'"));
        assert!(csp.contains("script-src 'self';"));
        assert!(!csp.contains("unsafe-inline"));
        assert!(csp.contains("img-src 'self' blob: data:;"));
        let csp = content_security_policy(Some("https://img.example.com"));
        assert!(csp.contains("img-src 'self' blob: data: https://img.example.com;"));
        // Something that could end the directive or add a source list is dropped.
        let csp = content_security_policy(Some("https://x; script-src *"));
        assert!(csp.contains("img-src 'self' blob: data:;"));
    }

    #[test]
    fn origins_of_image_urls() {
        assert_eq!(
            url_origin("http://127.0.0.1:8080/images/results/a.png").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            url_origin("https://bucket.s3.amazonaws.com/results/a.png?X-Amz=1").as_deref(),
            Some("https://bucket.s3.amazonaws.com")
        );
        assert_eq!(url_origin("not a url"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.95), Some(7));
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.95), Some(95));
        assert_eq!(percentile(&[1, 2, 3], 0.5), Some(2));
    }

    #[test]
    fn windows_parse_and_cover_their_span() {
        assert_eq!(StatsWindow::parse(None).unwrap(), StatsWindow::Hour);
        assert_eq!(StatsWindow::parse(Some("24h")).unwrap(), StatsWindow::Day);
        assert!(StatsWindow::parse(Some("7d")).is_err());
        for w in [StatsWindow::Hour, StatsWindow::Day] {
            let span = w.bucket_seconds() * w.buckets();
            assert_eq!(span, if w == StatsWindow::Hour { 3600 } else { 86_400 });
        }
    }

    #[test]
    fn inputs_are_classified_by_reference() {
        assert_eq!(
            classify_input("blob:inputs/t/0.jpg"),
            ("upload", Some("inputs/t/0.jpg"))
        );
        assert_eq!(
            classify_input("blob:results/t/0.png"),
            ("result", Some("results/t/0.png"))
        );
        assert_eq!(classify_input("https://x.test/a.png"), ("url", None));
    }

    #[test]
    fn every_asset_is_served_under_console() {
        for a in &ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert!(is_console_path(&format!("/console/{}", a.name)));
        }
        assert!(is_console_path("/console"));
        assert!(!is_console_path("/consoles"));
    }
}
