//! Request-path logic: validate, store input images, insert the task, read
//! tasks back. Nothing here calls Apimart: workers do that (see `engine`).

use std::sync::Arc;

use base64::Engine as _;
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use modelgen_domain::{
    Angle, AspectRatio, BodyProfile, EditInstructions, FieldError, ImageInput, ImageMime,
    OutfitDescription, PixelBudget, PromptTemplates, TaskEvent, TaskId, TaskStatus, TaskType,
    format_timestamp,
};
use modelgen_persistence::{
    BlobError, BlobStore, EventKind, Fence, IMPORT_FINGERPRINT_PREFIX, ImageLocation, ImageRecord,
    ImageRepository, InsertOutcome, NewTask, NewTaskEvent, RepoError, TaskChange, TaskQuery,
    TaskRecord, TaskRepository, parked_until,
};

use crate::dto::{
    CreateDefaultRequest, CreateEditRequest, CreateOutfitRequest, CreatedTask, ImageView,
    MAX_OUTFIT_IMAGES, TaskPage, TaskView, validation_errors,
};
use crate::error::ApiError;

/// Prefix of an input reference that points into the blob store.
pub const BLOB_REF_PREFIX: &str = modelgen_persistence::BLOB_REF_PREFIX;
/// Largest page of `GET /tasks`.
pub const MAX_PAGE_SIZE: i64 = 100;
/// Page size of `GET /tasks` when `limit` is absent.
pub const DEFAULT_PAGE_SIZE: i64 = 20;

/// What the request path needs, as trait objects (wired in `startup`).
#[derive(Clone)]
pub struct TaskService {
    /// Tasks table.
    pub tasks: Arc<dyn TaskRepository>,
    /// Images table.
    pub images: Arc<dyn ImageRepository>,
    /// Input and result image bytes.
    pub blobs: Arc<dyn BlobStore>,
    /// Prompt templates.
    pub prompts: Arc<PromptTemplates>,
    /// Upstream model name recorded on each task.
    pub model: String,
    /// Largest decoded input image, bytes.
    pub max_image_bytes: usize,
    /// Largest input image by its declared dimensions.
    pub pixel_budget: PixelBudget,
    /// Wakes this replica's workers when a task is created.
    pub wake: Arc<Notify>,
    /// Whether terminal tasks enqueue a callback.
    pub callbacks_enabled: bool,
    /// Refuses creates while the submit queue is full (`MAX_QUEUED_TASKS`).
    pub admission: Arc<crate::admission::Admission>,
    /// Requests waiting for a task to change (`?wait=N`), woken by the
    /// engine, a cancel, or another replica's change.
    pub waiters: Arc<modelgen_engine::waiters::TaskWaiters>,
    /// Cancelled at shutdown: a held wait answers at once.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Longest wait a request may ask for (`MAX_WAIT`), seconds.
    pub max_wait: u64,
    /// Which per-task `callback_url`s are accepted (`CALLBACK_URL_ALLOWED_HOSTS`).
    pub callback_urls: Arc<crate::callback_url::CallbackUrlPolicy>,
}

/// How a `?wait=N` request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// No wait was asked for (`wait=0` or none).
    NotAsked,
    /// Waited (until the task was terminal, the time ran out or the process
    /// began to shut down): `Preference-Applied: wait=N`.
    Honoured,
    /// `MAX_WAITERS` requests were held already: answered at once.
    Refused,
}

/// A create's result: the task, and whether it was an idempotent replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// Body of the answer.
    pub task: CreatedTask,
    /// `true` when an existing task with the same idempotency key and payload was returned.
    pub replayed: bool,
    /// The admission limit's room after this create (the `RateLimit-*`
    /// headers); `None` without a limit.
    pub rate_limit: Option<crate::admission::Quota>,
}

/// A checked task ready to insert.
struct Draft {
    task_type: TaskType,
    user_id: String,
    request_id: Option<String>,
    base_model_task_id: Option<TaskId>,
    angle: Option<Angle>,
    size: AspectRatio,
    prompt: String,
    /// Input images in upstream order; `None` entries are the base model (already stored).
    inputs: Vec<InputImage>,
    /// The task's own callback receiver, checked.
    callback_url: Option<String>,
}

enum InputImage {
    New(ImageInput),
    Stored(String),
}

/// Characters refused in ids (`user_id`, `request_id`): control characters
/// (PostgreSQL rejects NUL outright) and invisible format characters that make
/// two ids look equal.
fn is_forbidden_id_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// Checks an id-like field has no control or invisible characters (length is checked by the DTO).
fn check_id(value: &str, field: &str, errors: &mut Vec<FieldError>) -> bool {
    if value.chars().any(is_forbidden_id_char) {
        errors.push(field_error(
            field,
            "must not contain control or invisible characters",
        ));
        return false;
    }
    true
}

/// At most this many characters of a client-supplied id are echoed in a message.
const MAX_ECHOED_ID_CHARS: usize = 64;

/// How long after a create failed with an unknown outcome, or its request
/// was dropped half-way (the client went away), its input images are checked
/// against the database and deleted when no task holds them: longer than any
/// insert the dropped request may have left running (a database call is
/// bounded by `DATABASE_CALL_TIMEOUT`, 5 s by default).
pub const UNCLAIMED_INPUTS_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Input images a create has written for `task_id` before its insert: users'
/// photos, which must not stay in the store without a task (nothing else
/// would ever delete them). [`UnclaimedInputs::claimed`] once the task is
/// created, [`UnclaimedInputs::discard`] when it certainly was not. Dropped
/// with keys left (an early return, a failed insert, or the request's future
/// dropped because its client went away), it deletes them after `grace`
/// unless the task exists by then: an insert whose answer was lost may have
/// committed, and then the inputs are the task's.
struct UnclaimedInputs {
    tasks: Arc<dyn TaskRepository>,
    blobs: Arc<dyn BlobStore>,
    task_id: TaskId,
    /// Keys written and not yet claimed or deleted.
    keys: Vec<String>,
    grace: std::time::Duration,
}

impl UnclaimedInputs {
    /// The task was created: the inputs are its own.
    fn claimed(&mut self) {
        self.keys.clear();
    }

    /// No task was created: deletes the inputs now.
    async fn discard(&mut self) {
        delete_inputs(&*self.blobs, &std::mem::take(&mut self.keys)).await;
    }
}

impl Drop for UnclaimedInputs {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.keys);
        let (tasks, blobs) = (Arc::clone(&self.tasks), Arc::clone(&self.blobs));
        let (task_id, grace) = (self.task_id, self.grace);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(task.id = %task_id, inputs = keys.len(), "input images of a failed create left in the store: no runtime to delete them");
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep(grace).await;
            match tasks.get_task(&task_id).await {
                Ok(_) => {}
                Err(RepoError::NotFound) => delete_inputs(&*blobs, &keys).await,
                Err(e) => {
                    tracing::warn!(error = %e, task.id = %task_id, inputs = keys.len(), "could not check whether a failed create's input images belong to a task; they are kept");
                }
            }
        });
    }
}

/// Deletes input images that belong to no task; a failure is logged.
async fn delete_inputs(blobs: &dyn BlobStore, keys: &[String]) {
    for key in keys {
        if let Err(e) = blobs.delete(key).await {
            tracing::warn!(error = %e, blob.key = %key, "could not delete an unused input image");
        }
    }
}

/// 404/1003 for the task `raw_id` names (cut to 64 characters).
fn task_not_found(raw_id: &str) -> ApiError {
    ApiError::NotFound(format!("task {} not found", shown(raw_id)))
}

/// A task id from the path; a malformed one is a task that does not exist (404/1003).
fn parse_task_id(raw_id: &str) -> Result<TaskId, ApiError> {
    raw_id.parse().map_err(|_| task_not_found(raw_id))
}

/// A repository read of the task `raw_id` names: absent → 404/1003, other
/// failures as [`ApiError::from`] maps them.
fn found<T>(raw_id: &str, read: Result<T, RepoError>) -> Result<T, ApiError> {
    match read {
        Ok(value) => Ok(value),
        Err(RepoError::NotFound) => Err(task_not_found(raw_id)),
        Err(e) => Err(e.into()),
    }
}

/// A client-supplied id, shortened for messages.
fn shown(raw: &str) -> String {
    if raw.chars().count() > MAX_ECHOED_ID_CHARS {
        let mut s: String = raw.chars().take(MAX_ECHOED_ID_CHARS).collect();
        s.push('…');
        s
    } else {
        raw.to_string()
    }
}

fn required<'a>(
    value: &'a Option<String>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a str> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => check_id(v, field, errors).then_some(v),
        _ => {
            errors.push(FieldError {
                field: field.into(),
                message: "is required".into(),
            });
            None
        }
    }
}

fn field_error(field: &str, message: impl ToString) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.to_string(),
    }
}

fn parse_size(size: &Option<String>, errors: &mut Vec<FieldError>) -> AspectRatio {
    match size.as_deref().map(str::trim) {
        None | Some("") => AspectRatio::default(),
        Some(s) => s.parse().unwrap_or_else(|e| {
            errors.push(field_error("size", e));
            AspectRatio::default()
        }),
    }
}

/// The fields every create request has, checked.
struct Common {
    user_id: Option<String>,
    request_id: Option<String>,
    size: AspectRatio,
}

/// Runs the DTO's validator rules and checks the common fields, returning the
/// errors found so far (the caller adds its own) and the parsed values.
fn common(
    req: &impl validator::Validate,
    user_id: &Option<String>,
    request_id: &Option<String>,
    size: &Option<String>,
    idem_header: Option<&str>,
) -> (Vec<FieldError>, Common) {
    let mut errors = validation_errors(req.validate());
    let user_id = required(user_id, "user_id", &mut errors).map(str::to_string);
    let request_id = idempotency_key(request_id.as_deref(), idem_header, &mut errors);
    let size = parse_size(size, &mut errors);
    (
        errors,
        Common {
            user_id,
            request_id,
            size,
        },
    )
}

/// Picks the idempotency key from the body and the `Idempotency-Key` header.
fn idempotency_key(
    body: Option<&str>,
    header: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let header = header.map(str::trim).filter(|h| !h.is_empty());
    if let Some(h) = header
        && h.chars().count() > 64
    {
        errors.push(field_error("Idempotency-Key", "must be 1 to 64 characters"));
        return None;
    }
    if let Some(b) = body
        && b.trim().is_empty()
    {
        errors.push(field_error("request_id", "must be 1 to 64 characters"));
        return None;
    }
    for (field, value) in [("request_id", body), ("Idempotency-Key", header)] {
        if let Some(v) = value
            && !check_id(v, field, errors)
        {
            return None;
        }
    }
    match (body.map(str::trim), header) {
        (Some(b), Some(h)) if b != h => {
            errors.push(field_error(
                "request_id",
                "differs from the Idempotency-Key header",
            ));
            None
        }
        (Some(b), _) => Some(b.to_string()),
        (None, h) => h.map(str::to_string),
    }
}

/// Parses one image field; `bare_base64` allows a base64 string without the
/// `data:` prefix (the earlier service's `*_base64` fields).
fn parse_image(
    field: &str,
    raw: &str,
    limits: (usize, PixelBudget),
    bare_base64: bool,
) -> Result<ImageInput, FieldError> {
    let trimmed = raw.trim();
    let lower = trimmed.get(..8).unwrap_or(trimmed).to_ascii_lowercase();
    let looks_bare = !(lower.starts_with("data:") || lower.starts_with("http"));
    let owned;
    let candidate = if bare_base64 && looks_bare {
        // Sniff the type from the first decoded bytes to build a data URI.
        let head: String = trimmed
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .take(24)
            .collect();
        let head_bytes = base64::engine::general_purpose::STANDARD
            .decode(head.as_bytes())
            .map_err(|_| field_error(field, "is not valid base64"))?;
        let mime = ImageMime::sniff(&head_bytes)
            .ok_or_else(|| field_error(field, "is not a PNG, JPEG or WebP image"))?;
        owned = format!("data:{};base64,{trimmed}", mime.as_str());
        owned.as_str()
    } else {
        trimmed
    };
    let (max_bytes, pixels) = limits;
    ImageInput::parse_within(candidate, max_bytes, pixels).map_err(|e| field_error(field, e))
}

fn fingerprint(draft: &Draft) -> String {
    let mut h = Sha256::new();
    for part in [
        draft.task_type.as_str(),
        &draft.user_id,
        draft.request_id.as_deref().unwrap_or(""),
        &draft
            .base_model_task_id
            .map(|t| t.to_string())
            .unwrap_or_default(),
        draft.angle.map(|a| a.as_str()).unwrap_or(""),
        draft.size.as_str(),
        &draft.prompt,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for input in &draft.inputs {
        match input {
            InputImage::New(ImageInput::DataUri(img)) => {
                h.update(b"d");
                h.update(Sha256::digest(img.bytes()));
            }
            InputImage::New(ImageInput::Url(u)) => {
                h.update(b"u");
                h.update(Sha256::digest(u.as_str().as_bytes()));
            }
            InputImage::Stored(r) => {
                h.update(b"s");
                h.update(Sha256::digest(r.as_bytes()));
            }
        }
    }
    // Only when given, so the fingerprints of tasks without one are those
    // stored before the field existed.
    if let Some(url) = &draft.callback_url {
        h.update(b"c");
        h.update(Sha256::digest(url.as_bytes()));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

pub use modelgen_engine::image_url;

/// The API view of a task and its images, with URLs rendered now. `inline`
/// holds `(image id, base64)` pairs to include (`?include=image_base64`).
///
/// # Errors
/// As [`image_url`].
pub async fn task_view(
    blobs: &dyn BlobStore,
    task: &TaskRecord,
    images: &[ImageRecord],
    inline: &[(i64, String)],
) -> Result<TaskView, BlobError> {
    let mut views = Vec::with_capacity(images.len());
    for i in images {
        views.push(ImageView {
            image_url: image_url(blobs, i).await?,
            width: i.width,
            height: i.height,
            mime: i.mime.clone(),
            image_base64: inline
                .iter()
                .find(|(id, _)| *id == i.id)
                .map(|(_, b64)| b64.clone()),
        });
    }
    Ok(TaskView {
        task_id: task.task_id.to_string(),
        request_id: task.request_id.clone(),
        user_id: task.user_id.clone(),
        task_type: task.task_type.as_str().into(),
        status: task.status.as_str().into(),
        progress: task.progress.get(),
        angle: task.angle.map(|a| a.as_str().into()),
        base_model_task_id: task.base_model_task_id.map(|t| t.to_string()),
        image: views.first().cloned(),
        images: views,
        error_code: task.error_code,
        error_message: task.error_message.clone(),
        created_at: format_timestamp(task.created_at),
        updated_at: format_timestamp(task.updated_at),
        completed_at: task.completed_at.map(format_timestamp),
        queued_at: format_timestamp(task.run_started_at()),
        submitted_at: task.upstream_started_at().map(format_timestamp),
        queue_position: None,
        estimated_start_at: None,
        cost: task.cost_micros.map(micros_to_units),
        retries: task.retries,
        callback_url: task.callback_url.clone(),
    })
}

/// Parses an RFC 3339 instant given as query parameter `field` (e.g.
/// `2026-12-01T00:00:00Z`), or says why it is not one.
pub fn parse_instant(value: &str, field: &str) -> Result<chrono::DateTime<Utc>, FieldError> {
    chrono::DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            field_error(
                field,
                "must be an RFC 3339 date-time, e.g. 2026-12-01T00:00:00Z",
            )
        })
}

/// Millionths of a balance unit as the unit (the wire form of a cost).
pub fn micros_to_units(micros: i64) -> f64 {
    micros as f64 / 1_000_000.0
}

impl TaskService {
    /// Checks a create's `callback_url` (blank means not given), adding the
    /// reason to `errors` when it is refused.
    async fn callback_url(
        &self,
        raw: Option<&str>,
        errors: &mut Vec<FieldError>,
    ) -> Option<String> {
        let raw = raw.map(str::trim).filter(|r| !r.is_empty())?;
        match self.callback_urls.check(raw).await {
            Ok(url) => Some(url),
            Err(message) => {
                errors.push(field_error("callback_url", message));
                None
            }
        }
    }

    /// The limits every input image is checked against: decoded bytes, pixels.
    fn image_limits(&self) -> (usize, PixelBudget) {
        (self.max_image_bytes, self.pixel_budget)
    }

    /// F1: a user's model from a front photo and a body profile.
    ///
    /// # Errors
    /// 400/1001 with every bad field; 409/1006 when the idempotency key was used
    /// with another payload; 500 on storage failure.
    pub async fn create_default(
        &self,
        mut req: CreateDefaultRequest,
        idem_header: Option<&str>,
    ) -> Result<Created, ApiError> {
        let (
            mut errors,
            Common {
                user_id,
                request_id,
                size,
            },
        ) = common(&req, &req.user_id, &req.request_id, &req.size, idem_header);
        let callback_url = self
            .callback_url(req.callback_url.as_deref(), &mut errors)
            .await;

        let given = [&req.user_image, &req.picture_url, &req.user_image_base64]
            .iter()
            .filter(|f| f.is_some())
            .count();
        if given > 1 {
            errors.push(field_error(
                "user_image",
                "give only one of user_image, picture_url and user_image_base64",
            ));
        }
        let image = match (&req.user_image, &req.picture_url, &req.user_image_base64) {
            (Some(s), _, _) => Some(parse_image("user_image", s, self.image_limits(), false)),
            (None, Some(s), _) => Some(parse_image("picture_url", s, self.image_limits(), false)),
            (None, None, Some(s)) => Some(parse_image(
                "user_image_base64",
                s,
                self.image_limits(),
                true,
            )),
            (None, None, None) => {
                errors.push(field_error("user_image", "is required"));
                None
            }
        };
        // The image's text (its base64 can be 1.33 × MAX_IMAGE_BYTES) is not
        // needed once decoded.
        req.user_image = None;
        req.picture_url = None;
        req.user_image_base64 = None;
        let image = match image {
            Some(Ok(i)) => Some(i),
            Some(Err(e)) => {
                errors.push(e);
                None
            }
            None => None,
        };

        let profile = match req.body_profile.clone() {
            None => {
                errors.push(field_error(
                    "body_profile",
                    "is required (an object; every field in it is optional, so {} will do)",
                ));
                None
            }
            Some(p) => {
                let input = p.into_input(&mut errors);
                match BodyProfile::parse(input) {
                    Ok(p) => Some(p),
                    Err(errs) => {
                        errors.extend(errs);
                        None
                    }
                }
            }
        };

        let (Some(user_id), Some(image), Some(profile), true) =
            (user_id, image, profile, errors.is_empty())
        else {
            return Err(ApiError::Invalid(errors));
        };
        let prompt = self
            .prompts
            .render_default(&profile)
            .map_err(|e| ApiError::Internal(e.into()))?;
        self.insert(Draft {
            task_type: TaskType::Default,
            user_id,
            request_id,
            base_model_task_id: None,
            angle: None,
            size,
            prompt,
            inputs: vec![InputImage::New(image)],
            callback_url,
        })
        .await
    }

    /// F2: an edit of a completed model.
    ///
    /// # Errors
    /// As [`TaskService::create_default`], plus 404/1003 for an unknown base
    /// model (or another user's) and 400/1001 for one that is not completed.
    pub async fn create_edit(
        &self,
        req: CreateEditRequest,
        idem_header: Option<&str>,
    ) -> Result<Created, ApiError> {
        let (
            mut errors,
            Common {
                user_id,
                request_id,
                size,
            },
        ) = common(&req, &req.user_id, &req.request_id, &req.size, idem_header);
        let callback_url = self
            .callback_url(req.callback_url.as_deref(), &mut errors)
            .await;
        let base_raw = required(&req.base_model_task_id, "base_model_task_id", &mut errors)
            .map(str::to_string);
        let instructions = match req.edit_instructions.as_deref() {
            None => {
                errors.push(field_error("edit_instructions", "is required"));
                None
            }
            Some(s) => match EditInstructions::parse(s) {
                Ok(i) => Some(i),
                Err(e) => {
                    errors.push(field_error("edit_instructions", e));
                    None
                }
            },
        };
        let (Some(user_id), Some(base_raw), Some(instructions), true) =
            (user_id, base_raw, instructions, errors.is_empty())
        else {
            return Err(ApiError::Invalid(errors));
        };
        let (base_id, base_ref) = self.base_model(&base_raw, &user_id).await?;
        let prompt = self
            .prompts
            .render_edit(&instructions)
            .map_err(|e| ApiError::Internal(e.into()))?;
        self.insert(Draft {
            task_type: TaskType::Edit,
            user_id,
            request_id,
            base_model_task_id: Some(base_id),
            angle: None,
            size,
            prompt,
            inputs: vec![InputImage::Stored(base_ref)],
            callback_url,
        })
        .await
    }

    /// F3: garments put on a completed model, from one angle.
    ///
    /// # Errors
    /// As [`TaskService::create_edit`].
    pub async fn create_outfit(
        &self,
        mut req: CreateOutfitRequest,
        idem_header: Option<&str>,
    ) -> Result<Created, ApiError> {
        let (
            mut errors,
            Common {
                user_id,
                request_id,
                size,
            },
        ) = common(&req, &req.user_id, &req.request_id, &req.size, idem_header);
        let callback_url = self
            .callback_url(req.callback_url.as_deref(), &mut errors)
            .await;
        let base_raw = required(&req.base_model_task_id, "base_model_task_id", &mut errors)
            .map(str::to_string);
        let angle = match req.angle.as_deref().map(str::trim) {
            None | Some("") => {
                errors.push(field_error("angle", "is required (front, side or back)"));
                None
            }
            Some(a) => match a.to_ascii_lowercase().parse::<Angle>() {
                Ok(a) => Some(a),
                Err(e) => {
                    errors.push(field_error("angle", e));
                    None
                }
            },
        };
        // Taken out of the request, not copied: each can be a base64 text of
        // up to 1.33 × MAX_IMAGE_BYTES, dropped once decoded.
        let mut lists = [
            ("outfit_images", false, req.outfit_images.take()),
            ("outfit_image_urls", false, req.outfit_image_urls.take()),
            ("outfit_image_base64", true, req.outfit_image_base64.take()),
        ];
        if lists.iter().filter(|(_, _, list)| list.is_some()).count() > 1 {
            errors.push(field_error(
                "outfit_images",
                "give only one of outfit_images, outfit_image_urls and outfit_image_base64",
            ));
        }
        let (field, bare, raw) = lists.iter_mut().find(|(_, _, list)| list.is_some()).map_or(
            ("outfit_images", false, None),
            |(field, bare, list)| {
                (
                    *field,
                    *bare,
                    list.take().map(crate::dto::OneOrMany::into_vec),
                )
            },
        );
        let mut garments = Vec::new();
        match raw {
            None => errors.push(field_error(field, "is required (1 to 5 images)")),
            Some(list) if list.is_empty() || list.len() as u64 > MAX_OUTFIT_IMAGES => {
                errors.push(field_error(field, "must hold 1 to 5 images"));
            }
            Some(list) => {
                for (i, s) in list.into_iter().enumerate() {
                    match parse_image(&format!("{field}[{i}]"), &s, self.image_limits(), bare) {
                        Ok(img) => garments.push(InputImage::New(img)),
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        let description = match req
            .outfit_description
            .as_deref()
            .map(OutfitDescription::parse)
        {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(d))) => Some(d),
            Some(Err(e)) => {
                errors.push(field_error("outfit_description", e));
                None
            }
        };
        let (Some(user_id), Some(base_raw), Some(angle), true) =
            (user_id, base_raw, angle, errors.is_empty())
        else {
            return Err(ApiError::Invalid(errors));
        };
        let (base_id, base_ref) = self.base_model(&base_raw, &user_id).await?;
        let prompt = self
            .prompts
            .render_outfit(angle, garments.len(), description.as_ref())
            .map_err(|e| ApiError::Internal(e.into()))?;
        let mut inputs = vec![InputImage::Stored(base_ref)];
        inputs.extend(garments);
        self.insert(Draft {
            task_type: TaskType::Outfit,
            user_id,
            request_id,
            base_model_task_id: Some(base_id),
            angle: Some(angle),
            size,
            prompt,
            inputs,
            callback_url,
        })
        .await
    }

    /// Resolves a base model: a completed `default`/`edit` task of `user_id`.
    /// Returns its id and the blob reference of its first image.
    async fn base_model(&self, raw: &str, user_id: &str) -> Result<(TaskId, String), ApiError> {
        let not_found = || ApiError::NotFound(format!("base model task {} not found", shown(raw)));
        let id: TaskId = raw.parse().map_err(|_| not_found())?;
        let base = match self.tasks.get_task(&id).await {
            Ok(t) => t,
            Err(RepoError::NotFound) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        if base.user_id != user_id {
            return Err(not_found());
        }
        if !base.task_type.can_be_base_model() {
            return Err(ApiError::Invalid(vec![field_error(
                "base_model_task_id",
                format!(
                    "task {raw} is an {} task; a base model must be a default or edit task",
                    base.task_type
                ),
            )]));
        }
        if base.status != TaskStatus::Completed {
            let imported = base
                .request_fingerprint
                .as_deref()
                .is_some_and(|f| f.starts_with(IMPORT_FINGERPRINT_PREFIX));
            let hint = if base.status.is_terminal() {
                "it will never complete; create a new base model"
            } else if imported && base.next_run_at >= parked_until() {
                "it was imported unfinished and is not running (an operator can resume \
                 it with `modelgen import legacy --resume-unfinished` when it kept its \
                 Apimart id); create a new base model"
            } else {
                "wait until it completes"
            };
            return Err(ApiError::Invalid(vec![field_error(
                "base_model_task_id",
                format!(
                    "base model task {raw} is {}, not completed; {hint}",
                    base.status
                ),
            )]));
        }
        if base.purged_at.is_some() {
            return Err(ApiError::Invalid(vec![field_error(
                "base_model_task_id",
                format!("base model task {raw} has no image any more: its owner's data was erased"),
            )]));
        }
        let images = self.images.images_for_task(&id).await?;
        // A task modelgen ran has an image once completed; an imported one may
        // not (the earlier service's row had no URL and no data).
        let first = images.first().ok_or_else(|| {
            ApiError::Invalid(vec![field_error(
                "base_model_task_id",
                format!("base model task {raw} has no image"),
            )])
        })?;
        // A stored base model goes upstream from our store; an imported one
        // (remote URL) is passed to Apimart as its URL.
        let reference = match &first.location {
            ImageLocation::Stored(key) => format!("{BLOB_REF_PREFIX}{key}"),
            ImageLocation::Remote(url) => url.clone(),
        };
        Ok((id, reference))
    }

    async fn insert(&self, mut draft: Draft) -> Result<Created, ApiError> {
        let fingerprint = draft.request_id.as_ref().map(|_| fingerprint(&draft));
        // Admission before anything is stored; a replay of an existing task
        // is answered whatever the queue holds.
        let admitted = match self.admission.admit().await {
            Ok(admitted) => admitted,
            Err(Err(e)) => return Err(e.into()),
            Err(Ok(full)) => {
                if let Some(request_id) = draft.request_id.as_deref()
                    && let Some(task) = self
                        .tasks
                        .find_by_request_id(&draft.user_id, request_id)
                        .await?
                {
                    return existing(task, &draft, fingerprint.as_ref());
                }
                return Err(ApiError::QueueFull {
                    queued: full.depth,
                    limit: full.limit,
                    retry_after: full.retry_after,
                });
            }
        };
        let quota = admitted.quota();
        let task_id = TaskId::generate();
        let mut refs = Vec::with_capacity(draft.inputs.len());
        // The inputs written below, deleted again unless the task is created:
        // at once when the insert says it was not, later (after a check) when
        // the outcome is unknown or this request is dropped half-way.
        let mut written = UnclaimedInputs {
            tasks: Arc::clone(&self.tasks),
            blobs: Arc::clone(&self.blobs),
            task_id,
            keys: Vec::new(),
            grace: UNCLAIMED_INPUTS_GRACE,
        };
        // Taken by value: the decoded bytes (up to MAX_IMAGE_BYTES) move to
        // the store, not a copy of them.
        for (i, input) in std::mem::take(&mut draft.inputs).into_iter().enumerate() {
            refs.push(match input {
                InputImage::Stored(r) => r,
                InputImage::New(ImageInput::Url(u)) => u.as_str().to_string(),
                InputImage::New(ImageInput::DataUri(img)) => {
                    let key = input_key(&task_id, i, img.mime());
                    // Held before the upload starts: a local store writes on a
                    // blocking thread that finishes the file even when this
                    // request is dropped during the upload.
                    written.keys.push(key.clone());
                    self.blobs
                        .put(&key, bytes::Bytes::from(img.into_bytes()))
                        .await
                        .map_err(|e| ApiError::Internal(e.into()))?;
                    format!("{BLOB_REF_PREFIX}{key}")
                }
            });
        }
        let new = NewTask {
            task_id,
            request_id: draft.request_id.clone(),
            user_id: draft.user_id.clone(),
            task_type: draft.task_type,
            base_model_task_id: draft.base_model_task_id,
            angle: draft.angle,
            size: draft.size.as_str().to_string(),
            prompt: draft.prompt.clone(),
            model: self.model.clone(),
            input_images: refs,
            request_fingerprint: fingerprint.clone(),
            created_at: Utc::now(),
            callback_url: draft.callback_url.clone(),
        };
        let outcome = self.tasks.insert_task(new).await;
        match &outcome {
            Ok(InsertOutcome::Created(_)) => written.claimed(),
            // A replay or a conflict: the inputs just written belong to no task.
            Ok(InsertOutcome::Existing(_)) | Err(RepoError::Conflict(_)) => {
                written.discard().await;
            }
            // A failed insert may still have committed (an answer lost to a
            // timeout): `written` checks before it deletes, when dropped.
            Err(_) => {}
        }
        match outcome? {
            InsertOutcome::Created(task) => {
                admitted.keep();
                metrics::counter!("tasks_created_total", "type" => task.task_type.as_str())
                    .increment(1);
                tracing::info!(task.id = %task.task_id, task.r#type = %task.task_type, "task created");
                self.wake.notify_one();
                Ok(Created {
                    task: created(&task),
                    replayed: false,
                    rate_limit: quota,
                })
            }
            InsertOutcome::Existing(task) => {
                existing(task, &draft, fingerprint.as_ref()).map(|c| Created {
                    rate_limit: quota,
                    ..c
                })
            }
        }
    }

    /// The task `raw_id` names, as stored. Unknown or malformed id →
    /// 404/1003 naming it (cut to 64 characters).
    ///
    /// # Errors
    /// 404/1003, or 500/503 on database failure.
    pub async fn find(&self, raw_id: &str) -> Result<TaskRecord, ApiError> {
        let id = parse_task_id(raw_id)?;
        found(raw_id, self.tasks.get_task(&id).await)
    }

    /// `GET /tasks/{id}`: the task and its images, with URLs rendered now;
    /// with `include_base64`, each image's inline copy when one was stored.
    /// Unknown or malformed id → 404/1003.
    ///
    /// # Errors
    /// 404/1003, or 500/503 on database or storage failure.
    pub async fn get(&self, raw_id: &str, include_base64: bool) -> Result<TaskView, ApiError> {
        let id = parse_task_id(raw_id)?;
        // The task and its images in one statement (one round trip).
        let (task, images) = found(raw_id, self.tasks.get_task_with_images(&id).await)?;
        let inline = if include_base64 {
            self.images.inline_images_for_task(&id).await?
        } else {
            Vec::new()
        };
        let mut view = task_view(&*self.blobs, &task, &images, &inline).await?;
        if !task.status.is_terminal() && task.upstream_started_at().is_none() {
            let position = self.tasks.queue_position(&task).await?;
            let snapshot = self.admission.snapshot().await?;
            view.queue_position = position;
            view.estimated_start_at = position.map(|ahead| {
                format_timestamp(
                    Utc::now()
                        + self
                            .admission
                            .time_to_drain(ahead.saturating_add(1), &snapshot),
                )
            });
        }
        Ok(view)
    }

    /// `GET /tasks/{id}?wait=N`: [`TaskService::get`], after holding the
    /// request until the task is terminal or `wait` has passed. The task is
    /// read once at the start, once per change of it ([`TaskService::waiters`]
    /// is woken by every writer), and once at the end; never on a timer.
    /// With `MAX_WAITERS` requests held already it answers at once.
    ///
    /// # Errors
    /// As [`TaskService::get`].
    pub async fn get_waiting(
        &self,
        raw_id: &str,
        include_base64: bool,
        wait: std::time::Duration,
    ) -> Result<(TaskView, WaitOutcome), ApiError> {
        let key = match raw_id.parse::<TaskId>() {
            Ok(id) if !wait.is_zero() => id.to_string(),
            _ => {
                return Ok((
                    self.get(raw_id, include_base64).await?,
                    WaitOutcome::NotAsked,
                ));
            }
        };
        let Some(guard) = self.waiters.register(&key) else {
            metrics::counter!("task_waits_refused_total").increment(1);
            return Ok((
                self.get(raw_id, include_base64).await?,
                WaitOutcome::Refused,
            ));
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Armed before the read: a change between the read and the
            // wait still wakes it.
            let changed = guard.notify().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let view = self.get(raw_id, include_base64).await?;
            if view
                .status
                .parse::<TaskStatus>()
                .is_ok_and(|s| s.is_terminal())
            {
                return Ok((view, WaitOutcome::Honoured));
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(deadline) => break,
                () = self.shutdown.cancelled() => break,
            }
        }
        Ok((
            self.get(raw_id, include_base64).await?,
            WaitOutcome::Honoured,
        ))
    }

    /// `GET /tasks`: descending task id (newest first for modelgen's ULID ids), keyset pagination with an opaque cursor.
    ///
    /// # Errors
    /// 400/1001 for a bad filter, limit or cursor.
    pub async fn list(
        &self,
        user_id: Option<String>,
        status: Option<&str>,
        task_type: Option<&str>,
        limit: Option<i64>,
        cursor: Option<&str>,
        created: (Option<&str>, Option<&str>),
    ) -> Result<TaskPage, ApiError> {
        let filters = ListFilters {
            user_id,
            status,
            task_type,
            limit,
            cursor,
            created,
        };
        list_page(&*self.tasks, &*self.images, &*self.blobs, filters).await
    }

    /// `POST /tasks/{id}/cancel`: a non-terminal task becomes `cancelled` (its
    /// callback is enqueued); a terminal one answers 409/1006 with its status.
    ///
    /// # Errors
    /// 404/1003, 409/1006.
    pub async fn cancel(&self, raw_id: &str) -> Result<TaskView, ApiError> {
        let id = parse_task_id(raw_id)?;
        let change = TaskChange {
            event: Some(TaskEvent::Cancelled),
            enqueue_callback: self.callbacks_enabled,
            events: vec![NewTaskEvent::new(EventKind::Cancelled)],
            ..TaskChange::default()
        };
        match self
            .tasks
            .update_task(&id, &Fence::Unfenced, Utc::now(), change)
            .await
        {
            Ok(task) => {
                metrics::counter!("tasks_finished_total", "type" => task.task_type.as_str(), "status" => "cancelled", "error_kind" => "none").increment(1);
                self.waiters.notify(task.task_id.as_str());
                let images = self.images.images_for_task(&id).await?;
                Ok(task_view(&*self.blobs, &task, &images, &[]).await?)
            }
            Err(RepoError::NotFound) => Err(task_not_found(raw_id)),
            Err(RepoError::AlreadyTerminal(status))
            | Err(RepoError::InvalidTransition(modelgen_domain::TransitionError::Terminal(
                status,
            ))) => Err(ApiError::Conflict {
                message: format!("task {raw_id} is already {status} and cannot be cancelled"),
                data: Some(serde_json::json!({ "task_id": raw_id, "status": status.as_str() })),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// Blob key of a task's `index`-th input image: `inputs/<task_id>/<index>.<ext>`.
fn input_key(task_id: &TaskId, index: usize, mime: ImageMime) -> String {
    format!(
        "{}{task_id}/{index}.{}",
        modelgen_persistence::INPUTS_PREFIX,
        mime.extension()
    )
}

/// The answer to a create whose idempotency key names an existing task: a
/// replay when the payload is the same, else 409/1006.
fn existing(
    task: TaskRecord,
    draft: &Draft,
    fingerprint: Option<&String>,
) -> Result<Created, ApiError> {
    if task.request_fingerprint.as_ref() == fingerprint && task.task_type == draft.task_type {
        Ok(Created {
            task: created(&task),
            replayed: true,
            rate_limit: None,
        })
    } else {
        Err(ApiError::Conflict {
            message: format!(
                "request_id {} was already used with a different payload",
                draft.request_id.as_deref().unwrap_or_default()
            ),
            data: Some(serde_json::json!({ "task_id": task.task_id.to_string() })),
        })
    }
}

fn created(task: &TaskRecord) -> CreatedTask {
    CreatedTask {
        task_id: task.task_id.to_string(),
        status: task.status.as_str().into(),
        angle: task.angle.map(|a| a.as_str().into()),
    }
}

fn encode_cursor(id: &TaskId) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.to_string())
}

fn decode_cursor(cursor: &str) -> Option<TaskId> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    String::from_utf8(bytes).ok()?.parse().ok()
}

/// Filters of a task list page (`GET /tasks`, `modelgen tasks list`), as
/// the caller got them: checked by [`list_page`].
#[derive(Debug, Clone, Default)]
pub struct ListFilters<'a> {
    /// Only this user.
    pub user_id: Option<String>,
    /// Only this status (wire form).
    pub status: Option<&'a str>,
    /// Only this type (wire form).
    pub task_type: Option<&'a str>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<&'a str>,
    /// Creation time range `[from, to)`, RFC 3339.
    pub created: (Option<&'a str>, Option<&'a str>),
}

/// A page of tasks (`GET /tasks`, `modelgen tasks list`): descending task id (newest first for modelgen's ULID ids), keyset pagination with an opaque cursor.
///
/// # Errors
/// 400/1001 for a bad filter, limit or cursor.
pub async fn list_page(
    tasks: &dyn TaskRepository,
    images: &dyn ImageRepository,
    blobs: &dyn BlobStore,
    filters: ListFilters<'_>,
) -> Result<TaskPage, ApiError> {
    let ListFilters {
        user_id,
        status,
        task_type,
        limit,
        cursor,
        created,
    } = filters;
    let mut errors = Vec::new();
    let created_since = created
        .0
        .and_then(|v| parse_instant(v, "from").map_err(|e| errors.push(e)).ok());
    let created_until = created
        .1
        .and_then(|v| parse_instant(v, "to").map_err(|e| errors.push(e)).ok());
    if let Some(u) = &user_id {
        check_id(u, "user_id", &mut errors);
    }
    let status = status.and_then(|s| {
        s.parse::<TaskStatus>()
            .map_err(|e| errors.push(field_error("status", e)))
            .ok()
    });
    let task_type = task_type.and_then(|s| {
        s.parse::<TaskType>()
            .map_err(|e| errors.push(field_error("type", e)))
            .ok()
    });
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        errors.push(field_error("limit", "must be between 1 and 100"));
    }
    let before = cursor.and_then(|c| {
        decode_cursor(c)
            .ok_or_else(|| errors.push(field_error("cursor", "is not a valid cursor")))
            .ok()
    });
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let rows = tasks
        .list_tasks(&TaskQuery {
            user_id,
            status,
            task_type,
            before,
            limit: limit + 1,
            created_since,
            created_until,
            ..TaskQuery::default()
        })
        .await?;
    let has_more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let ids: Vec<TaskId> = page.iter().map(|t| t.task_id).collect();
    let images = images.images_for_tasks(&ids).await?;
    let mut items = Vec::with_capacity(page.len());
    for task in page {
        let own: Vec<ImageRecord> = images
            .iter()
            .filter(|i| i.task_id == task.task_id)
            .cloned()
            .collect();
        items.push(task_view(blobs, task, &own, &[]).await?);
    }
    let next_cursor = if has_more {
        rows.get(limit as usize - 1)
            .map(|t| encode_cursor(&t.task_id))
    } else {
        None
    };
    Ok(TaskPage { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgen_persistence::{Database, ObjectBlobStore, PoolOptions};

    /// A store of one input photo under `key`, and a fresh SQLite database.
    async fn store_and_database(
        dir: &std::path::Path,
        key: &str,
    ) -> (Arc<dyn BlobStore>, Database) {
        let store =
            ObjectBlobStore::from_url(&format!("file://{}", dir.join("blobs").display())).unwrap();
        store
            .put(key, bytes::Bytes::from_static(b"photo"))
            .await
            .unwrap();
        let db = Database::connect(
            &format!("sqlite://{}", dir.join("db.sqlite").display()),
            PoolOptions::default(),
        )
        .await
        .unwrap();
        db.migrate().await.unwrap();
        (Arc::new(store), db)
    }

    /// Whether `key` is still in `blobs` after at most two seconds of waiting for it to go.
    async fn still_there_after_a_while(blobs: &dyn BlobStore, key: &str) -> bool {
        for _ in 0..40 {
            if blobs.get(key).await.is_err() {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        true
    }

    #[tokio::test]
    async fn inputs_a_dropped_create_left_are_deleted_unless_the_task_exists() {
        let dir = tempfile::tempdir().unwrap();
        let key = "inputs/task_x/0.png".to_owned();
        let (blobs, db) = store_and_database(dir.path(), &key).await;
        let tasks: Arc<dyn TaskRepository> = Arc::new(db);
        let unclaimed = |task_id: TaskId| UnclaimedInputs {
            tasks: Arc::clone(&tasks),
            blobs: Arc::clone(&blobs),
            task_id,
            keys: vec![key.clone()],
            grace: std::time::Duration::from_millis(20),
        };

        // The insert committed although its request went away: the photo is the task's.
        let created = TaskId::generate();
        tasks
            .insert_task(NewTask {
                task_id: created,
                request_id: None,
                user_id: "u".into(),
                task_type: TaskType::Default,
                base_model_task_id: None,
                angle: None,
                size: "1:1".into(),
                prompt: "p".into(),
                model: "m".into(),
                input_images: vec![format!("{BLOB_REF_PREFIX}{key}")],
                request_fingerprint: None,
                created_at: Utc::now(),
                callback_url: None,
            })
            .await
            .unwrap();
        drop(unclaimed(created));
        assert!(still_there_after_a_while(&*blobs, &key).await);

        // Claimed: kept at once, whatever the database says.
        let mut claimed = unclaimed(TaskId::generate());
        claimed.claimed();
        drop(claimed);
        assert!(still_there_after_a_while(&*blobs, &key).await);

        // No task holds it: deleted after the grace.
        drop(unclaimed(TaskId::generate()));
        assert!(!still_there_after_a_while(&*blobs, &key).await);

        // Discarded: deleted at once.
        blobs
            .put(&key, bytes::Bytes::from_static(b"photo"))
            .await
            .unwrap();
        let mut discarded = unclaimed(TaskId::generate());
        discarded.discard().await;
        assert!(blobs.get(&key).await.is_err());
        drop(discarded);
    }
}
