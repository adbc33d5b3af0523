//! Shared simulator state: task records, idempotency keys and counters, behind one mutex
//! that is never held across an `.await` (every method here is synchronous).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::web::Bytes;
use serde_json::{Value, json};

use crate::SimStats;
use crate::config::{ShapeMode, SimConfig};
use crate::faults::FaultSpec;
use crate::lifecycle::{Outcome, Status, phase_at};
use crate::render::{InputImage, RenderJob};
use crate::wire::ErrorStyle;

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    config: RwLock<SimConfig>,
    state: Mutex<State>,
    /// Port the server listens on (for result URLs when the request has no usable Host).
    pub(crate) port: u16,
    /// [`MAX_CACHED_IMAGE_BYTES`], lowered in tests.
    cache_budget: u64,
}

#[derive(Debug, Default)]
struct State {
    stats: SimStats,
    tasks: HashMap<String, Task>,
    keys: HashMap<String, KeyEntry>,
    /// Tasks created per canonical body hash (feeds `max_tasks_per_body`).
    body_tasks: HashMap<u64, u64>,
    /// Which `submit-once`/`lost` faults already fired, by key or body.
    once_fired: HashSet<(&'static str, OnceKey)>,
    next_seq: u64,
    /// Bytes of result PNGs held in task records.
    cached_bytes: u64,
}

/// Most bytes of drawn result PNGs kept in memory (256 MiB): enough for about a thousand
/// tasks at the default size, so long load runs cannot exhaust memory through the cache.
pub const MAX_CACHED_IMAGE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum OnceKey {
    Key(String),
    Body(u64),
}

#[derive(Debug)]
struct KeyEntry {
    body_hash: u64,
    task_id: String,
    tasks_created: u64,
}

/// Per-task faults that act after submit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TaskFaults {
    pub(crate) status: Option<u16>,
    pub(crate) status_once: Option<u16>,
    pub(crate) slow: Option<Duration>,
    pub(crate) body: Option<ErrorStyle>,
}

#[derive(Debug)]
struct Task {
    seq: u64,
    created: Instant,
    created_unix_ms: u64,
    duration: Duration,
    /// `None` with the `no-estimate` fault.
    estimated_secs: Option<u64>,
    outcome: Outcome,
    object_shape: bool,
    url_array: bool,
    n: u8,
    ratio: (u32, u32),
    long_side: u32,
    prompt_label: String,
    image_ttl: Duration,
    faults: TaskFaults,
    polls: u64,
    /// Kept until the results are drawn, then dropped.
    inputs: Option<Arc<[InputImage]>>,
    /// Drawn at the first download, then served from here until the URL expires.
    images: Option<Arc<Vec<Bytes>>>,
}

/// What a new task is made of (validated request plus faults, decided outside the lock).
#[derive(Debug)]
pub(crate) struct NewTask {
    pub(crate) n: u8,
    pub(crate) ratio: (u32, u32),
    pub(crate) prompt_label: String,
    pub(crate) inputs: Vec<InputImage>,
    pub(crate) spec: FaultSpec,
    pub(crate) body_hash: u64,
    pub(crate) idempotency_key: Option<String>,
}

/// The outcome of a submit, decided atomically.
#[derive(Debug)]
pub(crate) enum SubmitDecision {
    /// A task was created; `lost` is the status to answer instead of success.
    Created {
        body: Value,
        task_id: String,
        lost: Option<u16>,
    },
    /// Same key and body as an earlier submit: its answer again.
    Replay { body: Value, slow: Option<Duration> },
    /// Same key, different body.
    Conflict,
    /// An injected submit fault.
    Fault(u16),
}

/// The outcome of a status poll.
#[derive(Debug)]
pub(crate) enum StatusDecision {
    Unknown,
    Fault {
        status: u16,
        style: Option<ErrorStyle>,
        slow: Option<Duration>,
    },
    Ok {
        body: Value,
        slow: Option<Duration>,
    },
}

/// The outcome of a download request.
#[derive(Debug)]
pub(crate) enum FileDecision {
    NotFound,
    Expired,
    Ready {
        png: Bytes,
        slow: Option<Duration>,
    },
    Render {
        job: RenderJob,
        slow: Option<Duration>,
    },
}

/// Language of failure messages (`?language=zh|en|ko|ja`, APIMART.md "Status").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Language {
    #[default]
    En,
    Zh,
    Ko,
    Ja,
}

impl Language {
    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "zh" => Self::Zh,
            "ko" => Self::Ko,
            "ja" => Self::Ja,
            _ => Self::En,
        }
    }

    fn failure_message(self) -> &'static str {
        match self {
            Self::En => "Image generation failed (simulated failure)",
            Self::Zh => "图像生成失败（模拟失败）",
            Self::Ko => "이미지 생성에 실패했습니다 (시뮬레이션)",
            Self::Ja => "画像の生成に失敗しました（シミュレーション）",
        }
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whole seconds, rounded up so that any non-zero time reports at least 1.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A hash of a JSON value that ignores object key order and whitespace, so that the same
/// logical body always matches its idempotency key.
pub(crate) fn canonical_hash(v: &Value) -> u64 {
    fn walk(v: &Value, h: &mut DefaultHasher) {
        match v {
            Value::Null => 0u8.hash(h),
            Value::Bool(b) => (1u8, b).hash(h),
            Value::Number(n) => (2u8, n.to_string()).hash(h),
            Value::String(s) => (3u8, s).hash(h),
            Value::Array(a) => {
                (4u8, a.len()).hash(h);
                a.iter().for_each(|x| walk(x, h));
            }
            Value::Object(m) => {
                (5u8, m.len()).hash(h);
                let mut entries: Vec<_> = m.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (k, x) in entries {
                    k.hash(h);
                    walk(x, h);
                }
            }
        }
    }
    let mut h = DefaultHasher::new();
    walk(v, &mut h);
    h.finish()
}

impl Shared {
    pub(crate) fn new(config: SimConfig, port: u16) -> Self {
        Self {
            config: RwLock::new(config.sanitized()),
            state: Mutex::new(State::default()),
            port,
            cache_budget: MAX_CACHED_IMAGE_BYTES,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; should one ever do so, the counters
        // are still meaningful, so keep serving rather than poisoning every later request.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn config(&self) -> SimConfig {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_config(&self, config: SimConfig) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config.sanitized();
    }

    /// Applies `f` to the configuration under the write lock (read-modify-write for patches).
    pub(crate) fn update_config<R>(&self, f: impl FnOnce(&mut SimConfig) -> R) -> R {
        f(&mut self.config.write().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut SimStats)) {
        f(&mut self.lock().stats);
    }

    /// Idempotency, submit faults and task creation as one atomic step.
    pub(crate) fn submit(&self, new: NewTask, cfg: &SimConfig) -> SubmitDecision {
        let mut st = self.lock();
        let st = &mut *st;
        if let Some(key) = &new.idempotency_key
            && let Some(entry) = st.keys.get(key)
        {
            if entry.body_hash != new.body_hash {
                st.stats.idempotency_conflicts += 1;
                return SubmitDecision::Conflict;
            }
            if let Some(task) = st.tasks.get(&entry.task_id) {
                st.stats.idempotent_replays += 1;
                return SubmitDecision::Replay {
                    body: submit_body(&entry.task_id, task),
                    slow: task.faults.slow,
                };
            }
        }
        let once_key = match &new.idempotency_key {
            Some(k) => OnceKey::Key(k.clone()),
            None => OnceKey::Body(new.body_hash),
        };
        if let Some(status) = new.spec.submit {
            st.stats.faults_injected += 1;
            return SubmitDecision::Fault(status);
        }
        if let Some(status) = new.spec.submit_once
            && st.once_fired.insert(("submit-once", once_key.clone()))
        {
            st.stats.faults_injected += 1;
            return SubmitDecision::Fault(status);
        }

        let seq = st.next_seq;
        st.next_seq += 1;
        let (object_shape, url_array, legacy_id) = match cfg.response_shape {
            ShapeMode::Array => (false, true, false),
            ShapeMode::Object => (true, false, false),
            ShapeMode::Alternate => (seq % 2 == 1, (seq / 2) % 2 == 0, seq % 4 == 3),
        };
        let created_unix_ms = unix_ms_now();
        let task_id = loop {
            let id = if legacy_id {
                let suffix: String = (0..8)
                    .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
                    .collect();
                format!("task-unified-{}-{suffix}", created_unix_ms / 1000)
            } else {
                format!("task_{}", ulid::Ulid::generate())
            };
            if !st.tasks.contains_key(&id) {
                break id;
            }
        };
        let spec = &new.spec;
        let outcome = if spec.fail {
            Outcome::Fail
        } else if spec.cancel {
            Outcome::Cancel
        } else if spec.never {
            Outcome::Never
        } else if cfg.fail_rate > 0.0 && fastrand::f64() < cfg.fail_rate {
            Outcome::Fail
        } else {
            Outcome::Complete
        };
        let duration = spec.duration.unwrap_or(cfg.task_duration);
        let estimated = spec.duration.unwrap_or(cfg.estimated_time);
        let task = Task {
            seq,
            created: Instant::now(),
            created_unix_ms,
            duration,
            estimated_secs: (!spec.no_estimate).then(|| ceil_secs(estimated)),
            outcome,
            object_shape,
            url_array,
            n: new.n,
            ratio: new.ratio,
            long_side: cfg.image_long_side,
            prompt_label: new.prompt_label,
            image_ttl: cfg.image_ttl,
            faults: TaskFaults {
                status: spec.status,
                status_once: spec.status_once,
                slow: spec.slow,
                body: spec.body,
            },
            polls: 0,
            inputs: Some(Arc::from(new.inputs)),
            images: None,
        };
        let body = submit_body(&task_id, &task);
        tracing::debug!(apimart.task_id = %task_id, task.seq = task.seq, outcome = ?outcome, duration_ms = ms(duration), "sim task created");
        st.tasks.insert(task_id.clone(), task);

        st.stats.tasks_created += 1;
        let per_body = st.body_tasks.entry(new.body_hash).or_insert(0);
        *per_body += 1;
        st.stats.max_tasks_per_body = st.stats.max_tasks_per_body.max(*per_body);
        if let Some(key) = new.idempotency_key {
            let entry = st.keys.entry(key).or_insert(KeyEntry {
                body_hash: new.body_hash,
                task_id: task_id.clone(),
                tasks_created: 0,
            });
            entry.task_id.clone_from(&task_id);
            entry.body_hash = new.body_hash;
            entry.tasks_created += 1;
            st.stats.max_tasks_per_key = st.stats.max_tasks_per_key.max(entry.tasks_created);
        }

        let lost = new
            .spec
            .lost
            .filter(|_| st.once_fired.insert(("lost", once_key)));
        if lost.is_some() {
            st.stats.faults_injected += 1;
        }
        SubmitDecision::Created {
            body,
            task_id,
            lost,
        }
    }

    /// One status poll. `extra` are faults from the poll's own `X-Sim-Fault` header.
    pub(crate) fn poll(
        &self,
        id: &str,
        extra: &FaultSpec,
        lang: Language,
        file_base: &str,
    ) -> StatusDecision {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(task) = st.tasks.get_mut(id) else {
            return StatusDecision::Unknown;
        };
        task.polls += 1;
        let slow = extra.slow.or(task.faults.slow);
        let first = task.polls == 1;
        let fault = extra
            .status
            .or(extra.status_once)
            .or(task.faults.status)
            .or(task.faults.status_once.filter(|_| first));
        if let Some(status) = fault {
            let style = extra.body.or(task.faults.body);
            st.stats.faults_injected += 1;
            return StatusDecision::Fault {
                status,
                style,
                slow,
            };
        }
        let body = status_body(id, task, lang, file_base);
        if matches!(
            body["data"]["status"].as_str(),
            Some("failed" | "cancelled")
        ) {
            // Such a task has no images to draw.
            task.inputs = None;
        }
        StatusDecision::Ok { body, slow }
    }

    /// A download of result image `index`.
    pub(crate) fn file(&self, id: &str, index: usize, extra: &FaultSpec) -> FileDecision {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(task) = st.tasks.get_mut(id) else {
            return FileDecision::NotFound;
        };
        let elapsed = task.created.elapsed();
        let (status, _) = phase_at(elapsed, task.duration, task.outcome);
        if status != Status::Completed || index >= usize::from(task.n) {
            return FileDecision::NotFound;
        }
        if elapsed >= task.duration.saturating_add(task.image_ttl) {
            // The URL is dead for good: free the memory it held.
            task.inputs = None;
            if let Some(images) = task.images.take() {
                let size: u64 = images.iter().map(|p| p.len() as u64).sum();
                st.cached_bytes = st.cached_bytes.saturating_sub(size);
            }
            return FileDecision::Expired;
        }
        let slow = extra.slow.or(task.faults.slow);
        if let Some(png) = task.images.as_ref().and_then(|imgs| imgs.get(index)) {
            return FileDecision::Ready {
                png: png.clone(),
                slow,
            };
        }
        FileDecision::Render {
            job: RenderJob {
                ratio: task.ratio,
                long_side: task.long_side,
                prompt_label: task.prompt_label.clone(),
                count: usize::from(task.n),
                inputs: task.inputs.clone().unwrap_or_else(|| Arc::from(Vec::new())),
            },
            slow,
        }
    }

    /// Caches drawn results (the first render wins if two raced) and drops the inputs,
    /// unless the cache is full: then the inputs stay and the next download draws again
    /// (drawing is deterministic, so the bytes are the same).
    pub(crate) fn store_images(&self, id: &str, pngs: Vec<Vec<u8>>) -> Arc<Vec<Bytes>> {
        let size: u64 = pngs.iter().map(|p| p.len() as u64).sum();
        let fresh = Arc::new(pngs.into_iter().map(Bytes::from).collect::<Vec<_>>());
        let mut st = self.lock();
        let st = &mut *st;
        let Some(task) = st.tasks.get_mut(id) else {
            return fresh;
        };
        if let Some(cached) = &task.images {
            return Arc::clone(cached);
        }
        if st.cached_bytes.saturating_add(size) <= self.cache_budget {
            st.cached_bytes += size;
            task.inputs = None;
            task.images = Some(Arc::clone(&fresh));
        }
        fresh
    }
}

/// `POST /v1/images/generations` success body in the task's shape (APIMART.md "Submit").
fn submit_body(id: &str, task: &Task) -> Value {
    if task.object_shape {
        let mut info = json!({"can_cancel": true});
        if let Some(secs) = task.estimated_secs {
            info["estimated_time"] = json!(secs);
        }
        json!({"code": 200, "data": {
            "id": id,
            "object": "image.generation.task",
            "status": "pending",
            "progress": 0,
            "created": task.created_unix_ms / 1000,
            "task_info": info,
        }})
    } else {
        json!({"code": 200, "data": [{"status": "submitted", "task_id": id}]})
    }
}

/// `GET /v1/tasks/{id}` body at this instant (APIMART.md "Status").
fn status_body(id: &str, task: &Task, lang: Language, file_base: &str) -> Value {
    let (status, progress) = phase_at(task.created.elapsed(), task.duration, task.outcome);
    let mut data = json!({
        "id": id,
        "status": status.as_str(),
        "progress": progress,
        "created": task.created_unix_ms / 1000,
    });
    if let Some(secs) = task.estimated_secs {
        data["estimated_time"] = json!(secs);
    }
    if status.is_terminal() {
        let done_ms = task.created_unix_ms.saturating_add(ms(task.duration));
        data["completed"] = json!(done_ms / 1000);
        data["actual_time"] = json!(ceil_secs(task.duration));
    }
    match status {
        Status::Completed => {
            let done_ms = task.created_unix_ms.saturating_add(ms(task.duration));
            let expires_at = done_ms.saturating_add(ms(task.image_ttl)) / 1000;
            let urls: Vec<String> = (0..task.n)
                .map(|i| format!("{file_base}/files/{id}/{i}.png"))
                .collect();
            let images: Vec<Value> = if task.url_array {
                vec![json!({"url": urls, "expires_at": expires_at})]
            } else {
                urls.into_iter()
                    .map(|u| json!({"url": u, "expires_at": expires_at}))
                    .collect()
            };
            data["result"] = json!({"images": images});
        }
        Status::Failed => {
            data["error"] = json!({
                "code": "generation_failed",
                "message": lang.failure_message(),
                "type": "generation_error",
            });
        }
        Status::Pending | Status::Processing | Status::Cancelled => {}
    }
    json!({"code": 200, "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_hash_ignores_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":[1,{"x":"y","z":null}]}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{ "b" : [1, {"z":null, "x":"y"}], "a" : 1 }"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":2,"b":[1,{"x":"y","z":null}]}"#).unwrap();
        assert_eq!(canonical_hash(&a), canonical_hash(&b));
        assert_ne!(canonical_hash(&a), canonical_hash(&c));
    }

    fn new_task(prompt: &str) -> NewTask {
        NewTask {
            n: 1,
            ratio: (1, 1),
            prompt_label: prompt.into(),
            inputs: vec![InputImage::Undecodable],
            spec: FaultSpec::default(),
            body_hash: canonical_hash(&json!(prompt)),
            idempotency_key: None,
        }
    }

    fn created(d: SubmitDecision) -> String {
        match d {
            SubmitDecision::Created { task_id, .. } => task_id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn image_cache_keeps_to_its_budget_and_frees_on_expiry() {
        let cfg = SimConfig {
            task_duration: Duration::ZERO,
            ..SimConfig::default()
        };
        let mut shared = Shared::new(cfg.clone(), 1);
        shared.cache_budget = 10;
        let none = FaultSpec::default();
        let a = created(shared.submit(new_task("a"), &cfg));
        let b = created(shared.submit(new_task("b"), &cfg));
        assert!(matches!(
            shared.file(&a, 0, &none),
            FileDecision::Render { .. }
        ));
        shared.store_images(&a, vec![vec![1; 8]]);
        assert!(matches!(
            shared.file(&a, 0, &none),
            FileDecision::Ready { .. }
        ));
        // Over budget: served but not cached, and the inputs stay for the next draw.
        let served = shared.store_images(&b, vec![vec![2; 8]]);
        assert_eq!(served[0].len(), 8);
        match shared.file(&b, 0, &none) {
            FileDecision::Render { job, .. } => assert_eq!(job.inputs.len(), 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(shared.lock().cached_bytes, 8);

        // Expiry frees the cached bytes.
        let short = SimConfig {
            image_ttl: Duration::ZERO,
            ..cfg
        };
        let c = created(shared.submit(new_task("c"), &short));
        shared.cache_budget = 12;
        shared.store_images(&c, vec![vec![3; 4]]);
        assert_eq!(shared.lock().cached_bytes, 12);
        assert!(matches!(shared.file(&c, 0, &none), FileDecision::Expired));
        assert_eq!(shared.lock().cached_bytes, 8);
    }

    #[test]
    fn ceil_secs_rounds_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(200)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
    }
}
