//! Shared simulator state: task records, idempotency keys, the account and counters, behind
//! one mutex that is never held across an `.await` (every method here is synchronous).
//!
//! With a state directory, every change is mirrored into the [`Store`] inside the same
//! critical section, so memory and disk never disagree about order; a restart reloads it
//! ([`Shared::restore`]). Task clocks are wall-clock unix milliseconds ([`SimClock`]), so a
//! task keeps running while the simulator is down and is terminal on its first poll after
//! a restart if its time has passed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::web::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::SimStats;
use crate::config::{CREDITS_PER_UNIT, ShapeMode, SimConfig};
use crate::faults::FaultSpec;
use crate::lifecycle::{Outcome, Status, phase_at};
use crate::render::{InputImage, RenderJob};
use crate::store::{KeyRecord, Loaded, Store, StoreError, SubmitWrite, TaskFaults, TaskRecord};

/// Most bytes of drawn result PNGs kept in memory (256 MiB): enough for about a thousand
/// tasks at the default size, so long load runs cannot exhaust memory through the cache.
pub const MAX_CACHED_IMAGE_BYTES: u64 = 256 * 1024 * 1024;
/// Most bytes of input images and result PNGs kept in the state directory (1 GiB, a few
/// thousand tasks at the default size). Beyond it the oldest tasks' blobs are dropped first:
/// their results were downloaded long ago in any realistic run, and a dropped one answers
/// 410 like an expired URL.
pub const MAX_STORED_BLOB_BYTES: u64 = 1024 * 1024 * 1024;
/// Money is counted in millionths of the balance unit, so sums are exact.
const MICROS_PER_UNIT: f64 = 1_000_000.0;

/// Wall-clock milliseconds that never go backwards within one process: the wall clock read
/// once at start, advanced by the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SimClock {
    started: Instant,
    started_unix_ms: u64,
}

impl SimClock {
    pub(crate) fn new() -> Self {
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(ms)
            .unwrap_or(0);
        Self {
            started: Instant::now(),
            started_unix_ms,
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.started_unix_ms
            .saturating_add(ms(self.started.elapsed()))
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    config: RwLock<SimConfig>,
    state: Mutex<State>,
    /// Port the server listens on (for result URLs when the request has no usable Host).
    pub(crate) port: u16,
    /// [`MAX_CACHED_IMAGE_BYTES`], lowered in tests.
    cache_budget: u64,
    /// [`MAX_STORED_BLOB_BYTES`], lowered in tests.
    store_budget: u64,
    clock: SimClock,
    /// The bucket of [`SimConfig::rate_limit`], rebuilt when the rate changes.
    limiter: Mutex<Option<(NonZeroU32, Arc<DefaultDirectRateLimiter>)>>,
}

#[derive(Debug, Default)]
struct State {
    stats: SimStats,
    tasks: HashMap<String, Task>,
    keys: HashMap<String, KeyEntry>,
    /// Tasks created per canonical body hash (feeds `max_tasks_per_body`).
    body_tasks: HashMap<u64, u64>,
    /// Which one-shot faults (`submit-once`, `lost`, `garbled`) already fired, by key or body.
    once_fired: HashSet<(&'static str, OnceKey)>,
    next_seq: u64,
    /// Bytes of result PNGs held in task records.
    cached_bytes: u64,
    /// The durable mirror; `None` without a state directory (or after `close`).
    store: Option<Store>,
    /// Bytes of blobs in the store, and which tasks hold them by creation order (oldest
    /// dropped first beyond [`MAX_STORED_BLOB_BYTES`]).
    stored_bytes: u64,
    stored_by_seq: BTreeMap<u64, String>,
    /// Completed-task charges not yet taken from the balance: `(done_ms, cost_micros)`.
    pending_charges: BinaryHeap<Reverse<(u64, u64)>>,
    /// Cost of the tasks completed so far, in millionths.
    used_micros: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum OnceKey {
    Key(String),
    Body(u64),
}

impl OnceKey {
    fn scope(&self) -> String {
        match self {
            Self::Key(k) => format!("key:{k}"),
            Self::Body(h) => format!("body:{h:016x}"),
        }
    }

    fn from_scope(s: &str) -> Option<Self> {
        if let Some(k) = s.strip_prefix("key:") {
            Some(Self::Key(k.to_owned()))
        } else {
            s.strip_prefix("body:")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .map(Self::Body)
        }
    }
}

/// The one-shot fault kinds, as stored.
fn once_kind(kind: &str) -> Option<&'static str> {
    ["submit-once", "lost", "garbled"]
        .into_iter()
        .find(|k| *k == kind)
}

#[derive(Debug)]
struct KeyEntry {
    body_hash: u64,
    task_id: String,
    tasks_created: u64,
}

#[derive(Debug)]
struct Task {
    rec: TaskRecord,
    polls: u64,
    /// Kept in memory until the results are drawn, then dropped. After a restart they
    /// are read back from the store when needed.
    inputs: Option<Arc<[InputImage]>>,
    /// Drawn at the first download, then served from here until the URL expires.
    images: Option<Arc<Vec<Bytes>>>,
    /// Bytes this task holds in the store (inputs or results).
    stored_bytes: u64,
}

impl Task {
    fn duration(&self) -> Duration {
        Duration::from_millis(self.rec.duration_ms)
    }

    fn elapsed(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.rec.created_unix_ms))
    }

    fn done_ms(&self) -> u64 {
        self.rec
            .created_unix_ms
            .saturating_add(self.rec.duration_ms)
    }

    fn expires_ms(&self) -> u64 {
        self.done_ms().saturating_add(self.rec.image_ttl_ms)
    }

    fn phase(&self, now_ms: u64) -> (Status, u8) {
        phase_at(self.elapsed(now_ms), self.duration(), self.rec.outcome)
    }

    fn slow(&self) -> Option<Duration> {
        self.rec.faults.slow_ms.map(Duration::from_millis)
    }
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
    /// A task was created; `lost` is the status to answer instead of success, `garbled`
    /// asks for a success whose body cannot be decoded.
    Created {
        body: Value,
        task_id: String,
        lost: Option<u16>,
        garbled: bool,
    },
    /// Same key and body as an earlier submit: its answer again.
    Replay { body: Value, slow: Option<Duration> },
    /// Same key, different body.
    Conflict,
    /// An injected submit fault.
    Fault(u16),
    /// The account cannot pay for the images.
    InsufficientBalance,
    /// The task could not be made durable; nothing was created.
    StoreFailed,
}

/// The outcome of a status poll.
#[derive(Debug)]
pub(crate) enum StatusDecision {
    Unknown,
    Fault {
        status: u16,
        style: Option<crate::wire::ErrorStyle>,
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
    /// The state could not be read; worth another try.
    Unavailable,
    Ready {
        png: Bytes,
        slow: Option<Duration>,
    },
    Render {
        job: RenderJob,
        slow: Option<Duration>,
    },
}

/// The account as `GET /v1/balance` reports it, in balance units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Account {
    pub(crate) remain: f64,
    pub(crate) used: f64,
    pub(crate) unlimited: bool,
}

/// Language of failure messages (`?language=zh|en|ko|ja`, docs/apimart.md "Status").
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

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whole seconds, rounded up so that any non-zero time reports at least 1.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Money in balance units to millionths (the value is already clamped to `MAX_MONEY`).
fn to_micros(units: f64) -> u64 {
    // Rounded and non-negative after the clamp; 1e12 units is 1e18 micros, within u64.
    (units.max(0.0) * MICROS_PER_UNIT).round() as u64
}

fn to_units(micros: u64) -> f64 {
    micros as f64 / MICROS_PER_UNIT
}

/// A hash of a JSON value that ignores object key order and whitespace, so that the same
/// logical body always matches its idempotency key. SHA-256 (truncated to 64 bits), so the
/// value is stable across builds and can be kept in the state directory.
pub(crate) fn canonical_hash(v: &Value) -> u64 {
    fn tag(h: &mut Sha256, t: u8, len: usize) {
        h.update([t]);
        h.update((len as u64).to_le_bytes());
    }
    fn walk(v: &Value, h: &mut Sha256) {
        match v {
            Value::Null => tag(h, 0, 0),
            Value::Bool(b) => tag(h, 1, usize::from(*b)),
            Value::Number(n) => {
                let s = n.to_string();
                tag(h, 2, s.len());
                h.update(s.as_bytes());
            }
            Value::String(s) => {
                tag(h, 3, s.len());
                h.update(s.as_bytes());
            }
            Value::Array(a) => {
                tag(h, 4, a.len());
                a.iter().for_each(|x| walk(x, h));
            }
            Value::Object(m) => {
                tag(h, 5, m.len());
                let mut entries: Vec<_> = m.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (k, x) in entries {
                    tag(h, 6, k.len());
                    h.update(k.as_bytes());
                    walk(x, h);
                }
            }
        }
    }
    let mut h = Sha256::new();
    walk(v, &mut h);
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

fn input_bytes(inputs: &[InputImage]) -> u64 {
    inputs
        .iter()
        .map(|i| match i {
            InputImage::Encoded(b) => b.len() as u64,
            InputImage::Url { host } => host.len() as u64,
            InputImage::Undecodable => 0,
        })
        .sum()
}

impl Shared {
    /// A fresh simulator without a state directory.
    pub(crate) fn new(config: SimConfig, port: u16) -> Self {
        Self {
            config: RwLock::new(config.sanitized()),
            state: Mutex::new(State::default()),
            port,
            cache_budget: MAX_CACHED_IMAGE_BYTES,
            store_budget: MAX_STORED_BLOB_BYTES,
            clock: SimClock::new(),
            limiter: Mutex::new(None),
        }
    }

    /// A simulator continuing from `loaded`, mirroring every change into `store`. Drops
    /// the blobs that can no longer be served (expired URLs, tasks that ended without
    /// images) and rebuilds the counters the state implies.
    pub(crate) fn restore(
        config: SimConfig,
        port: u16,
        mut store: Store,
        loaded: Loaded,
    ) -> Result<Self, StoreError> {
        let stored_sizes = loaded.stored_sizes;
        let shared = Self::new(config, port);
        let now = shared.clock.now_ms();
        {
            let mut st = shared.lock();
            let st = &mut *st;
            for (id, rec) in loaded.tasks {
                st.next_seq = st.next_seq.max(rec.seq.saturating_add(1));
                *st.body_tasks.entry(rec.body_hash).or_insert(0) += 1;
                let mut task = Task {
                    polls: u64::from(rec.polled),
                    rec,
                    inputs: None,
                    images: None,
                    stored_bytes: stored_sizes.get(&id).copied().unwrap_or(0),
                };
                if task.rec.outcome == Outcome::Complete && task.rec.cost_micros > 0 {
                    st.pending_charges
                        .push(Reverse((task.done_ms(), task.rec.cost_micros)));
                }
                let (status, _) = task.phase(now);
                let dead = (status.is_terminal() && status != Status::Completed)
                    || (status == Status::Completed && now >= task.expires_ms());
                if dead && task.stored_bytes > 0 {
                    store.drop_blobs(&id)?;
                    task.stored_bytes = 0;
                }
                if task.stored_bytes > 0 {
                    st.stored_bytes += task.stored_bytes;
                    st.stored_by_seq.insert(task.rec.seq, id.clone());
                }
                st.tasks.insert(id, task);
            }
            st.stats.max_tasks_per_body = st.body_tasks.values().copied().max().unwrap_or(0);
            for k in loaded.keys {
                st.stats.max_tasks_per_key = st.stats.max_tasks_per_key.max(k.tasks_created);
                st.keys.insert(
                    k.key,
                    KeyEntry {
                        body_hash: k.body_hash,
                        task_id: k.task_id,
                        tasks_created: k.tasks_created,
                    },
                );
            }
            for (kind, scope) in loaded.once_fired {
                if let (Some(kind), Some(key)) = (once_kind(&kind), OnceKey::from_scope(&scope)) {
                    st.once_fired.insert((kind, key));
                }
            }
            st.store = Some(store);
            settle(st, now);
            shared.enforce_store_budget(st);
        }
        Ok(shared)
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

    /// Remembers the listening port in the store (no-op without one).
    pub(crate) fn remember_port(&self) -> Result<(), StoreError> {
        match self.lock().store.as_mut() {
            Some(store) => store.set_port(self.port),
            None => Ok(()),
        }
    }

    /// Closes the store, releasing its lock so that another simulator may open it.
    pub(crate) fn close_store(&self) {
        self.lock().store = None;
    }

    /// The rate limit: `Err(wait)` when this request is beyond [`SimConfig::rate_limit`]
    /// (counted in `rate_limited`), with the time until one would fit.
    pub(crate) fn admit(&self, cfg: &SimConfig) -> Result<(), Duration> {
        let Some(rate) = cfg.rate_limit else {
            return Ok(());
        };
        let limiter = {
            let mut slot = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
            match &*slot {
                Some((r, l)) if *r == rate => Arc::clone(l),
                _ => {
                    let l = Arc::new(RateLimiter::direct(Quota::per_second(rate)));
                    *slot = Some((rate, Arc::clone(&l)));
                    l
                }
            }
        };
        match limiter.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                self.count(|s| s.rate_limited += 1);
                use governor::clock::Clock as _;
                Err(not_until.wait_time_from(limiter.clock().now()))
            }
        }
    }

    /// The account at this instant.
    pub(crate) fn account(&self, cfg: &SimConfig) -> Account {
        let mut st = self.lock();
        let now = self.clock.now_ms();
        settle(&mut st, now);
        account_of(&st, cfg)
    }

    /// Idempotency, submit faults, the balance and task creation as one atomic step.
    pub(crate) fn submit(&self, new: NewTask, cfg: &SimConfig) -> SubmitDecision {
        let mut st = self.lock();
        let st = &mut *st;
        let now = self.clock.now_ms();
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
                    slow: task.slow(),
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
        let mut fired: Vec<(&'static str, OnceKey)> = Vec::new();
        if let Some(status) = new.spec.submit_once
            && !st.once_fired.contains(&("submit-once", once_key.clone()))
        {
            fired.push(("submit-once", once_key));
            if !persist_once(st, &fired) {
                return SubmitDecision::StoreFailed;
            }
            st.once_fired.extend(fired);
            st.stats.faults_injected += 1;
            return SubmitDecision::Fault(status);
        }
        let cost_micros = to_micros(cfg.cost_per_image).saturating_mul(u64::from(new.n));
        settle(st, now);
        let account = account_of(st, cfg);
        if !account.unlimited && to_micros(account.remain) < cost_micros {
            return SubmitDecision::InsufficientBalance;
        }

        let seq = st.next_seq;
        let (object_shape, url_array, legacy_id) = match cfg.response_shape {
            ShapeMode::Array => (false, true, false),
            ShapeMode::Object => (true, false, false),
            ShapeMode::Alternate => (seq % 2 == 1, (seq / 2) % 2 == 0, seq % 4 == 3),
        };
        let task_id = loop {
            let id = if legacy_id {
                let suffix: String = (0..8)
                    .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
                    .collect();
                format!("task-unified-{}-{suffix}", now / 1000)
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
        let rec = TaskRecord {
            seq,
            created_unix_ms: now,
            duration_ms: ms(duration),
            estimated_secs: (!spec.no_estimate).then(|| ceil_secs(estimated)),
            outcome,
            object_shape,
            url_array,
            n: new.n,
            ratio: new.ratio,
            long_side: cfg.image_long_side,
            prompt_label: new.prompt_label,
            image_ttl_ms: ms(cfg.image_ttl),
            faults: TaskFaults {
                status: spec.status,
                status_once: spec.status_once,
                slow_ms: spec.slow.map(ms),
                body: spec.body,
                result_addr: spec.result_addr,
            },
            polled: false,
            body_hash: new.body_hash,
            cost_micros: if outcome == Outcome::Complete {
                cost_micros
            } else {
                0
            },
            blobs_dropped: false,
        };
        let key_record = new.idempotency_key.as_ref().map(|key| {
            let created = st.keys.get(key).map_or(0, |e| e.tasks_created);
            KeyRecord {
                key: key.clone(),
                body_hash: new.body_hash,
                task_id: task_id.clone(),
                tasks_created: created + 1,
            }
        });
        for (kind, on) in [("lost", spec.lost.is_some()), ("garbled", spec.garbled)] {
            if on && !st.once_fired.contains(&(kind, once_key.clone())) {
                fired.push((kind, once_key.clone()));
            }
        }
        let lost = spec
            .lost
            .filter(|_| fired.iter().any(|(k, _)| *k == "lost"));
        let garbled = fired.iter().any(|(k, _)| *k == "garbled");
        let inputs: Arc<[InputImage]> = Arc::from(new.inputs);
        let mut stored_bytes = 0;
        if let Some(store) = st.store.as_mut() {
            let write = SubmitWrite {
                task: Some((&task_id, &rec, &inputs)),
                key: key_record.clone(),
                once_fired: fired.iter().map(|(k, o)| (*k, o.scope())).collect(),
            };
            if let Err(e) = store.write_submit(&write) {
                tracing::error!(error = %e, "sim could not persist a new task; answering 500");
                return SubmitDecision::StoreFailed;
            }
            stored_bytes = input_bytes(&inputs);
        }

        let task = Task {
            rec,
            polls: 0,
            inputs: Some(inputs),
            images: None,
            stored_bytes,
        };
        let body = submit_body(&task_id, &task);
        tracing::debug!(apimart.task_id = %task_id, task.seq = seq, outcome = ?outcome, duration_ms = ms(duration), "sim task created");
        if task.rec.cost_micros > 0 {
            st.pending_charges
                .push(Reverse((task.done_ms(), task.rec.cost_micros)));
        }
        st.tasks.insert(task_id.clone(), task);
        st.next_seq += 1;
        if stored_bytes > 0 {
            st.stored_bytes += stored_bytes;
            st.stored_by_seq.insert(seq, task_id.clone());
            self.enforce_store_budget(st);
        }

        st.stats.tasks_created += 1;
        let per_body = st.body_tasks.entry(new.body_hash).or_insert(0);
        *per_body += 1;
        st.stats.max_tasks_per_body = st.stats.max_tasks_per_body.max(*per_body);
        if let Some(k) = key_record {
            st.stats.max_tasks_per_key = st.stats.max_tasks_per_key.max(k.tasks_created);
            st.keys.insert(
                k.key,
                KeyEntry {
                    body_hash: k.body_hash,
                    task_id: k.task_id,
                    tasks_created: k.tasks_created,
                },
            );
        }
        st.stats.faults_injected += fired.len() as u64;
        st.once_fired.extend(fired);
        SubmitDecision::Created {
            body,
            task_id,
            lost,
            garbled,
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
        let now = self.clock.now_ms();
        let Some(task) = st.tasks.get_mut(id) else {
            return StatusDecision::Unknown;
        };
        task.polls += 1;
        let first = task.polls == 1;
        if first && task.rec.faults.status_once.is_some() {
            // `status-once` must not fire again after a restart.
            task.rec.polled = true;
            if let Some(store) = st.store.as_mut()
                && let Err(e) = store.update_task(id, &task.rec)
            {
                tracing::warn!(apimart.task_id = %id, error = %e, "sim could not persist a first poll");
            }
        }
        let slow = extra.slow.or(task.slow());
        let fault = extra
            .status
            .or(extra.status_once)
            .or(task.rec.faults.status)
            .or(task.rec.faults.status_once.filter(|_| first));
        if let Some(status) = fault {
            let style = extra.body.or(task.rec.faults.body);
            st.stats.faults_injected += 1;
            return StatusDecision::Fault {
                status,
                style,
                slow,
            };
        }
        let body = status_body(id, task, lang, file_base, now);
        if matches!(
            body["data"]["status"].as_str(),
            Some("failed" | "cancelled")
        ) {
            // Such a task has no images to draw.
            task.inputs = None;
            if task.stored_bytes > 0 {
                let seq = task.rec.seq;
                let bytes = std::mem::take(&mut task.stored_bytes);
                forget_stored(st, id, seq, bytes);
            }
        }
        StatusDecision::Ok { body, slow }
    }

    /// A download of result image `index`.
    pub(crate) fn file(&self, id: &str, index: usize, extra: &FaultSpec) -> FileDecision {
        let mut st = self.lock();
        let st = &mut *st;
        let now = self.clock.now_ms();
        let Some(task) = st.tasks.get_mut(id) else {
            return FileDecision::NotFound;
        };
        let (status, _) = task.phase(now);
        if status != Status::Completed || index >= usize::from(task.rec.n) {
            return FileDecision::NotFound;
        }
        if now >= task.expires_ms() {
            // The URL is dead for good: free the memory and disk it held.
            task.inputs = None;
            if let Some(images) = task.images.take() {
                let size: u64 = images.iter().map(|p| p.len() as u64).sum();
                st.cached_bytes = st.cached_bytes.saturating_sub(size);
            }
            let (seq, bytes) = (task.rec.seq, std::mem::take(&mut task.stored_bytes));
            if bytes > 0 {
                forget_stored(st, id, seq, bytes);
            }
            return FileDecision::Expired;
        }
        let slow = extra.slow.or(task.slow());
        if let Some(png) = task.images.as_ref().and_then(|imgs| imgs.get(index)) {
            return FileDecision::Ready {
                png: png.clone(),
                slow,
            };
        }
        // Not in memory (a restart, or the cache was full): the store holds the drawn
        // results or the inputs to draw them from, unless the state budget dropped them.
        if task.inputs.is_none() {
            if task.rec.blobs_dropped {
                return FileDecision::Expired;
            }
            if let Some(store) = st.store.as_mut() {
                let n = usize::from(task.rec.n);
                let loaded = store.images(id).and_then(|pngs| {
                    if pngs.len() == n {
                        Ok(Ok(pngs))
                    } else {
                        store.inputs(id).map(Err)
                    }
                });
                match loaded {
                    Ok(Ok(pngs)) => {
                        let pngs: Vec<Bytes> = pngs.into_iter().map(Bytes::from).collect();
                        let png = pngs.get(index).cloned().unwrap_or_default();
                        let size: u64 = pngs.iter().map(|p| p.len() as u64).sum();
                        if st.cached_bytes.saturating_add(size) <= self.cache_budget {
                            st.cached_bytes += size;
                            task.images = Some(Arc::new(pngs));
                        }
                        return FileDecision::Ready { png, slow };
                    }
                    Ok(Err(inputs)) => task.inputs = Some(Arc::from(inputs)),
                    Err(e) => {
                        tracing::warn!(apimart.task_id = %id, error = %e, "sim could not read a stored task's results");
                        return FileDecision::Unavailable;
                    }
                }
            }
        }
        let Some(inputs) = task.inputs.clone() else {
            return FileDecision::Expired;
        };
        FileDecision::Render {
            job: RenderJob {
                ratio: task.rec.ratio,
                long_side: task.rec.long_side,
                prompt_label: task.rec.prompt_label.clone(),
                count: usize::from(task.rec.n),
                inputs,
            },
            slow,
        }
    }

    /// Caches drawn results (the first render wins if two raced) and drops the inputs,
    /// unless the cache is full: then the inputs stay and the next download draws again
    /// (drawing is deterministic, so the bytes are the same). With a store, the results
    /// replace the inputs there, whatever the memory cache does.
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
        let mut persisted = false;
        if !task.rec.blobs_dropped
            && let Some(store) = st.store.as_mut()
        {
            let slices: Vec<&[u8]> = fresh.iter().map(|b| b.as_ref()).collect();
            match store.put_images(id, &slices) {
                Ok(()) => {
                    st.stored_bytes = st.stored_bytes.saturating_sub(task.stored_bytes) + size;
                    task.stored_bytes = size;
                    st.stored_by_seq.insert(task.rec.seq, id.to_owned());
                    persisted = true;
                }
                Err(e) => {
                    tracing::warn!(apimart.task_id = %id, error = %e, "sim could not persist drawn results");
                }
            }
        }
        if st.cached_bytes.saturating_add(size) <= self.cache_budget {
            st.cached_bytes += size;
            task.inputs = None;
            task.images = Some(Arc::clone(&fresh));
        } else if persisted {
            // The store can draw them again: no need to hold the inputs in memory.
            task.inputs = None;
        }
        if persisted {
            self.enforce_store_budget(st);
        }
        fresh
    }

    /// Drops the oldest tasks' blobs from the store until it fits its budget.
    fn enforce_store_budget(&self, st: &mut State) {
        while st.stored_bytes > self.store_budget {
            let Some((seq, id)) = st.stored_by_seq.pop_first() else {
                break;
            };
            let Some(task) = st.tasks.get_mut(&id) else {
                continue;
            };
            let bytes = std::mem::take(&mut task.stored_bytes);
            task.rec.blobs_dropped = true;
            st.stored_bytes = st.stored_bytes.saturating_sub(bytes);
            if let Some(store) = st.store.as_mut()
                && let Err(e) = store.drop_blobs_of(&id, &task.rec)
            {
                tracing::warn!(apimart.task_id = %id, error = %e, "sim could not drop stored blobs");
            }
            tracing::debug!(apimart.task_id = %id, task.seq = seq, bytes, "sim state budget: dropped the oldest task's blobs");
        }
    }
}

/// Forgets the stored blobs of one task (expired, or ended without results).
fn forget_stored(st: &mut State, id: &str, seq: u64, bytes: u64) {
    st.stored_bytes = st.stored_bytes.saturating_sub(bytes);
    st.stored_by_seq.remove(&seq);
    if let Some(store) = st.store.as_mut()
        && let Err(e) = store.drop_blobs(id)
    {
        tracing::warn!(apimart.task_id = %id, error = %e, "sim could not drop stored blobs");
    }
}

/// Persists one-shot faults that fire without creating a task; `false` when that failed.
fn persist_once(st: &mut State, fired: &[(&'static str, OnceKey)]) -> bool {
    let Some(store) = st.store.as_mut() else {
        return true;
    };
    let write = SubmitWrite {
        task: None,
        key: None,
        once_fired: fired.iter().map(|(k, o)| (*k, o.scope())).collect(),
    };
    match store.write_submit(&write) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "sim could not persist a fired fault; answering 500");
            false
        }
    }
}

/// Takes the charges of tasks completed by `now` from the balance.
fn settle(st: &mut State, now: u64) {
    while let Some(Reverse((done, cost))) = st.pending_charges.peek().copied() {
        if done > now {
            break;
        }
        st.pending_charges.pop();
        st.used_micros = st.used_micros.saturating_add(cost);
    }
}

fn account_of(st: &State, cfg: &SimConfig) -> Account {
    let used = to_units(st.used_micros);
    match cfg.balance {
        None => Account {
            remain: -1.0,
            used,
            unlimited: true,
        },
        Some(balance) => Account {
            remain: to_units(to_micros(balance).saturating_sub(st.used_micros)),
            used,
            unlimited: false,
        },
    }
}

/// `POST /v1/images/generations` success body in the task's shape (docs/apimart.md
/// "Submit").
fn submit_body(id: &str, task: &Task) -> Value {
    if task.rec.object_shape {
        let mut info = json!({"can_cancel": true});
        if let Some(secs) = task.rec.estimated_secs {
            info["estimated_time"] = json!(secs);
        }
        json!({"code": 200, "data": {
            "id": id,
            "object": "image.generation.task",
            "status": "pending",
            "progress": 0,
            "created": task.rec.created_unix_ms / 1000,
            "task_info": info,
        }})
    } else {
        json!({"code": 200, "data": [{"status": "submitted", "task_id": id}]})
    }
}

/// `GET /v1/tasks/{id}` body at `now` (docs/apimart.md "Status").
fn status_body(id: &str, task: &Task, lang: Language, file_base: &str, now: u64) -> Value {
    let (status, progress) = task.phase(now);
    let mut data = json!({
        "id": id,
        "status": status.as_str(),
        "progress": progress,
        "created": task.rec.created_unix_ms / 1000,
    });
    if let Some(secs) = task.rec.estimated_secs {
        data["estimated_time"] = json!(secs);
    }
    if status.is_terminal() {
        data["completed"] = json!(task.done_ms() / 1000);
        data["actual_time"] = json!(ceil_secs(task.duration()));
    }
    match status {
        Status::Completed => {
            let expires_at = task.expires_ms() / 1000;
            let file_base = match task.rec.faults.result_addr {
                Some(addr) => format!("http://{addr}"),
                None => file_base.to_owned(),
            };
            let urls: Vec<String> = (0..task.rec.n)
                .map(|i| format!("{file_base}/files/{id}/{i}.png"))
                .collect();
            let images: Vec<Value> = if task.rec.url_array {
                vec![json!({"url": urls, "expires_at": expires_at})]
            } else {
                urls.into_iter()
                    .map(|u| json!({"url": u, "expires_at": expires_at}))
                    .collect()
            };
            data["result"] = json!({"images": images});
            data["cost"] = json!(to_units(task.rec.cost_micros));
            data["credits_cost"] = json!(to_units(task.rec.cost_micros) * CREDITS_PER_UNIT);
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
        // Stable across builds: the value is kept in state directories.
        assert_eq!(canonical_hash(&json!({})), canonical_hash(&json!({})));
        assert_ne!(
            canonical_hash(&json!(["ab"])),
            canonical_hash(&json!(["a", "b"]))
        );
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
    fn the_state_budget_drops_the_oldest_blobs_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        let cfg = SimConfig {
            task_duration: Duration::ZERO,
            ..SimConfig::default()
        };
        let mut shared = Shared::restore(cfg.clone(), 1, store, loaded).unwrap();
        shared.store_budget = 20;
        shared.cache_budget = 0;
        let with_input = |p: &str| NewTask {
            inputs: vec![InputImage::Encoded(vec![7; 8])],
            ..new_task(p)
        };
        let a = created(shared.submit(with_input("a"), &cfg));
        let b = created(shared.submit(with_input("b"), &cfg));
        assert_eq!(shared.lock().stored_bytes, 16);
        let c = created(shared.submit(with_input("c"), &cfg));
        // 24 > 20: the oldest task's inputs went.
        assert_eq!(shared.lock().stored_bytes, 16);
        let none = FaultSpec::default();
        shared.close_store();
        // Memory still has everything until a restart.
        for id in [&a, &b, &c] {
            assert!(matches!(
                shared.file(id, 0, &none),
                FileDecision::Render { .. }
            ));
        }
        let mut store = Store::open(dir.path()).unwrap();
        assert!(store.inputs(&a).unwrap().is_empty());
        assert_eq!(store.inputs(&b).unwrap().len(), 1);
        assert_eq!(store.inputs(&c).unwrap().len(), 1);
        // Restarted: the dropped task's URL is gone, the others draw from their inputs,
        // and a task without any input image draws too.
        let loaded = store.load().unwrap();
        let shared = Shared::restore(cfg.clone(), 1, store, loaded).unwrap();
        assert!(matches!(shared.file(&a, 0, &none), FileDecision::Expired));
        for id in [&b, &c] {
            match shared.file(id, 0, &none) {
                FileDecision::Render { job, .. } => assert_eq!(job.inputs.len(), 1),
                other => panic!("{other:?}"),
            }
        }
        let bare = created(shared.submit(
            NewTask {
                inputs: Vec::new(),
                ..new_task("bare")
            },
            &cfg,
        ));
        shared.close_store();
        let mut store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        let shared = Shared::restore(cfg, 1, store, loaded).unwrap();
        assert!(matches!(
            shared.file(&bare, 0, &none),
            FileDecision::Render { .. }
        ));
    }

    #[test]
    fn the_balance_pays_for_completed_tasks_only_and_refuses_beyond_it() {
        let cfg = SimConfig {
            task_duration: Duration::ZERO,
            cost_per_image: 0.4,
            balance: Some(1.0),
            ..SimConfig::default()
        };
        let shared = Shared::new(cfg.clone(), 1);
        let failing = NewTask {
            spec: FaultSpec::parse("fail"),
            ..new_task("fail")
        };
        created(shared.submit(failing, &cfg));
        let two = NewTask {
            n: 2,
            ..new_task("two")
        };
        created(shared.submit(two, &cfg));
        let account = shared.account(&cfg);
        assert!((account.used - 0.8).abs() < 1e-9, "{account:?}");
        assert!((account.remain - 0.2).abs() < 1e-9, "{account:?}");
        assert!(!account.unlimited);
        assert!(matches!(
            shared.submit(new_task("broke"), &cfg),
            SubmitDecision::InsufficientBalance
        ));
        let unlimited = SimConfig {
            balance: None,
            ..cfg
        };
        created(shared.submit(new_task("free"), &unlimited));
        assert!(shared.account(&unlimited).unlimited);
    }

    #[test]
    fn ceil_secs_rounds_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(200)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
    }
}
