//! Upstream pacing: each replica sends Apimart requests at an adaptive rate,
//! never above `UPSTREAM_MAX_RPS` (the ceiling), with a budget per kind of
//! call so submits and polls cannot starve each other, and a shared pause
//! after a 429 so one rate-limit answer slows every task down instead of each
//! task hammering upstream on its own schedule.
//!
//! Apimart publishes no rate limit, so its 429s are the signal:
//! - **AIMD** ([`on_success`], [`on_throttle`]): every answer that is not a
//!   429 raises the rate additively ([`AimdSettings::increase_per_second`] per
//!   second of answers at that rate); a 429 cuts it multiplicatively
//!   ([`AimdSettings::decrease_factor`], at most once per
//!   [`AimdSettings::cut_interval`], so the 429s of requests already in flight
//!   count once) and pauses every call for its `Retry-After`. The rate stays in
//!   [`AimdSettings::floor`]..=[`AimdSettings::ceiling`].
//! - **Budgets** ([`next_grant`], [`split`]): two lanes, submits and polls,
//!   share the rate by weighted fair queueing. While both have calls waiting,
//!   polls get [`LaneShares::poll`] and submits [`LaneShares::submit`] of it,
//!   and the unassigned rest in the same proportion; a lane with nothing
//!   waiting leaves its share to the other.
//! - **The scheduler** ([`Pacer`]): one task per pacer grants the next waiting
//!   call a slot every `1 / rate` seconds.
//!
//! Every decision is a pure function; [`Pacer`] only holds the state and the clock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use apimart_client::{
    ApimartError, CallObserver, Endpoint, GenerationRequest, SubmitResponse, TaskStatusResponse,
};
use async_trait::async_trait;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ports::ImageGenerator;

/// Pause applied after a 429 that carried no `Retry-After`.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);
/// Longest pause honoured from a `Retry-After`, so a bogus value cannot stall the engine.
pub const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);
/// The rate a pacer starts at, requests/s (or the ceiling when lower): the
/// fixed rate modelgen used before pacing adapted, which Apimart took
/// without a 429. `MAX_QUEUED_TASKS`' default is derived from it
/// (`crates/api/src/admission.rs`).
pub const DEFAULT_START_RPS: f64 = 20.0;
/// Lowest rate, requests/s (or the ceiling when lower): a rate-limited
/// upstream still gets asked, so the pacer notices when it recovers.
pub const DEFAULT_FLOOR_RPS: f64 = 1.0;
/// Additive increase, requests/s gained per second of answers without a 429.
pub const DEFAULT_INCREASE_PER_SECOND: f64 = 5.0;
/// Multiplicative decrease on a 429.
pub const DEFAULT_DECREASE_FACTOR: f64 = 0.5;
/// Shortest time between two cuts.
pub const DEFAULT_CUT_INTERVAL: Duration = Duration::from_secs(1);
/// A pacer that was idle may send this much of its rate at once (at least one
/// request), so a timer that wakes late does not lose slots.
const BURST_WINDOW: Duration = Duration::from_millis(20);

/// The AIMD parameters. Rates are requests per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AimdSettings {
    /// Highest rate (`UPSTREAM_MAX_RPS`).
    pub ceiling: f64,
    /// Lowest rate; at most `ceiling`.
    pub floor: f64,
    /// Rate before any answer, in `floor..=ceiling`.
    pub start: f64,
    /// Requests/s added per second of answers without a 429 (each answer adds
    /// `increase_per_second / rate`).
    pub increase_per_second: f64,
    /// A 429 multiplies the rate by this, in `(0, 1)`.
    pub decrease_factor: f64,
    /// Shortest time between two cuts: 429s within it (requests that were
    /// already in flight) cut once.
    pub cut_interval: Duration,
}

impl AimdSettings {
    /// The shipped parameters under `ceiling` requests/s (at least 1): starts
    /// at [`DEFAULT_START_RPS`], floor [`DEFAULT_FLOOR_RPS`] (both at most the
    /// ceiling), +[`DEFAULT_INCREASE_PER_SECOND`]/s, ×[`DEFAULT_DECREASE_FACTOR`]
    /// on a 429, at most one cut per [`DEFAULT_CUT_INTERVAL`].
    pub fn with_ceiling(ceiling: u32) -> AimdSettings {
        let ceiling = f64::from(ceiling.max(1));
        AimdSettings {
            ceiling,
            floor: DEFAULT_FLOOR_RPS.min(ceiling),
            start: DEFAULT_START_RPS.min(ceiling),
            increase_per_second: DEFAULT_INCREASE_PER_SECOND,
            decrease_factor: DEFAULT_DECREASE_FACTOR,
            cut_interval: DEFAULT_CUT_INTERVAL,
        }
    }

    /// The same, starting at `start` (clamped to floor..=ceiling).
    #[must_use]
    pub fn starting_at(mut self, start: f64) -> AimdSettings {
        self.start = clamp_rate(start, &self);
        self
    }

    /// `rps` within floor..=ceiling (the floor for a non-finite value).
    fn clamp(&self, rps: f64) -> f64 {
        clamp_rate(rps, self)
    }
}

fn clamp_rate(rps: f64, s: &AimdSettings) -> f64 {
    let floor = s.floor.min(s.ceiling).max(f64::MIN_POSITIVE);
    if rps.is_nan() {
        return floor;
    }
    rps.clamp(floor, s.ceiling.max(floor))
}

/// The rate after an answer that was not a 429: `rate + increase_per_second / rate`,
/// so a second of answers at that rate adds about `increase_per_second`;
/// within floor..=ceiling.
pub fn on_success(rate: f64, s: &AimdSettings) -> f64 {
    let rate = s.clamp(rate);
    s.clamp(rate + s.increase_per_second / rate)
}

/// The rate after a 429, `since_last_cut` after the previous cut (`None`:
/// never cut): `rate × decrease_factor`, or `rate` unchanged within
/// `cut_interval` of the last cut; within floor..=ceiling.
pub fn on_throttle(rate: f64, since_last_cut: Option<Duration>, s: &AimdSettings) -> f64 {
    let rate = s.clamp(rate);
    match since_last_cut {
        Some(d) if d < s.cut_interval => rate,
        _ => s.clamp(rate * s.decrease_factor),
    }
}

/// How long a 429 pauses every call: its `Retry-After`, or
/// [`DEFAULT_RATE_LIMIT_PAUSE`] without one, at most [`MAX_RATE_LIMIT_PAUSE`].
pub fn throttle_pause(retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or(DEFAULT_RATE_LIMIT_PAUSE)
        .min(MAX_RATE_LIMIT_PAUSE)
}

/// A kind of upstream call, with its own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// `POST /images/generations`.
    Submit,
    /// `GET /tasks/{id}`.
    Poll,
}

impl Lane {
    fn index(self) -> usize {
        match self {
            Lane::Submit => 0,
            Lane::Poll => 1,
        }
    }
}

/// The guaranteed fractions of the rate, while both lanes have calls waiting.
/// Each is positive and they sum to at most 1; the rest is split in the same
/// proportion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LaneShares {
    /// Submits' fraction.
    pub submit: f64,
    /// Polls' fraction.
    pub poll: f64,
}

impl Default for LaneShares {
    /// Polls at least half, submits at least a quarter: polls of started
    /// tasks come first (their results expire), but a flood of polls never
    /// stops new work from starting.
    fn default() -> Self {
        LaneShares {
            submit: 0.25,
            poll: 0.5,
        }
    }
}

impl LaneShares {
    fn weight(&self, lane: Lane) -> f64 {
        let w = match lane {
            Lane::Submit => self.submit,
            Lane::Poll => self.poll,
        };
        if w.is_finite() && w > 0.0 { w } else { 1.0 }
    }
}

/// Each lane's rate, requests/s, given which lanes have calls waiting: both
/// waiting, `rate` in proportion to the shares; one waiting, all of it to
/// that lane; none, the proportional split (nothing to give away). Returns
/// `(submit, poll)`.
pub fn split(
    rate: f64,
    submit_waiting: bool,
    poll_waiting: bool,
    shares: &LaneShares,
) -> (f64, f64) {
    let (ws, wp) = (shares.weight(Lane::Submit), shares.weight(Lane::Poll));
    match (submit_waiting, poll_waiting) {
        (true, false) => (rate, 0.0),
        (false, true) => (0.0, rate),
        _ => (rate * ws / (ws + wp), rate * wp / (ws + wp)),
    }
}

/// Weighted fair queueing between the lanes: which lane gets the next slot,
/// and the lanes' new virtual times. `vtime` is indexed submit, poll;
/// `waiting` likewise. The waiting lane with the smaller virtual time wins
/// (polls on a tie) and advances by `1 / share`; a lane with nothing waiting
/// is brought up to the winner's time, so idleness banks no credit. `None`
/// when nothing waits.
pub fn next_grant(
    vtime: [f64; 2],
    waiting: [bool; 2],
    shares: &LaneShares,
) -> Option<(Lane, [f64; 2])> {
    let lane = match waiting {
        [false, false] => return None,
        [true, false] => Lane::Submit,
        [false, true] => Lane::Poll,
        [true, true] => {
            if vtime[1] <= vtime[0] {
                Lane::Poll
            } else {
                Lane::Submit
            }
        }
    };
    let (i, o) = (lane.index(), 1 - lane.index());
    let mut v = vtime.map(|t| if t.is_finite() { t } else { 0.0 });
    if !waiting[o] {
        v[o] = v[o].max(v[i]);
    }
    v[i] += 1.0 / shares.weight(lane);
    // Keep the numbers small: only their difference matters.
    let base = v[0].min(v[1]);
    Some((lane, [v[0] - base, v[1] - base]))
}

/// The pacer's state: the AIMD rate, the 429 pause, the waiting calls.
struct State {
    rate: f64,
    last_cut: Option<tokio::time::Instant>,
    paused_until: Option<tokio::time::Instant>,
    next_slot: Option<tokio::time::Instant>,
    lanes: [VecDeque<oneshot::Sender<()>>; 2],
    vtime: [f64; 2],
}

/// The shared scheduler behind a [`PacedGenerator`]: the current rate, the
/// lanes, and the task that grants slots. Also a [`CallObserver`] source
/// ([`Pacer::observer`]), so each HTTP attempt inside the Apimart client's
/// own retries (a 429 retried after its `Retry-After`) adjusts the rate.
pub struct Pacer {
    settings: AimdSettings,
    shares: LaneShares,
    state: Mutex<State>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    started: AtomicBool,
    attempts_observed: AtomicBool,
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Pacer {
    /// A pacer with `settings` and the default [`LaneShares`]. Sets the
    /// `upstream_rate_limit_rps` gauge to the start rate.
    pub fn new(settings: AimdSettings) -> Arc<Pacer> {
        let rate = settings.start;
        metrics::gauge!("upstream_rate_limit_rps").set(rate);
        Arc::new(Pacer {
            settings,
            shares: LaneShares::default(),
            state: Mutex::new(State {
                rate,
                last_cut: None,
                paused_until: None,
                next_slot: None,
                lanes: [VecDeque::new(), VecDeque::new()],
                vtime: [0.0, 0.0],
            }),
            wake: Arc::new(Notify::new()),
            stop: CancellationToken::new(),
            started: AtomicBool::new(false),
            attempts_observed: AtomicBool::new(false),
        })
    }

    /// The current rate, requests/s.
    pub fn rate(&self) -> f64 {
        self.state.lock().map_or(self.settings.start, |s| s.rate)
    }

    /// The settings it was built with.
    pub fn settings(&self) -> AimdSettings {
        self.settings
    }

    /// A [`CallObserver`] for the Apimart client that feeds every HTTP
    /// attempt's answer to this pacer, then passes it on to `next`. Once one
    /// exists, the [`PacedGenerator`] no longer feeds the calls' final results
    /// (they are attempts too).
    pub fn observer(
        self: &Arc<Self>,
        next: Option<Arc<dyn CallObserver>>,
    ) -> Arc<dyn CallObserver> {
        self.attempts_observed.store(true, Ordering::Relaxed);
        Arc::new(PaceObserver {
            pacer: Arc::downgrade(self),
            next,
        })
    }

    /// Records an answer: `Some(retry_after)` for a 429, `None` for any
    /// other answer from upstream.
    pub fn record(&self, throttled: Option<Option<Duration>>) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let before = s.rate;
        match throttled {
            None => s.rate = on_success(s.rate, &self.settings),
            Some(retry_after) => {
                let now = tokio::time::Instant::now();
                let since = s.last_cut.map(|t| now.saturating_duration_since(t));
                s.rate = on_throttle(s.rate, since, &self.settings);
                if since.is_none_or(|d| d >= self.settings.cut_interval) {
                    s.last_cut = Some(now);
                }
                let until = now + throttle_pause(retry_after);
                s.paused_until = Some(s.paused_until.map_or(until, |old| old.max(until)));
            }
        }
        if s.rate != before {
            metrics::gauge!("upstream_rate_limit_rps").set(s.rate);
        }
    }

    /// Waits for a slot in `lane`'s budget.
    pub async fn acquire(self: &Arc<Self>, lane: Lane) {
        self.ensure_dispatcher();
        let (tx, rx) = oneshot::channel();
        {
            let Ok(mut s) = self.state.lock() else {
                return;
            };
            let now = tokio::time::Instant::now();
            if s.paused_until.is_some_and(|p| p > now) {
                metrics::counter!("upstream_throttled_total", "reason" => "rate_limited")
                    .increment(1);
            } else if s.lanes.iter().any(|l| !l.is_empty()) || s.next_slot.is_some_and(|n| n > now)
            {
                metrics::counter!("upstream_throttled_total", "reason" => "rps_cap").increment(1);
            }
            s.lanes[lane.index()].push_back(tx);
        }
        self.wake.notify_one();
        // The dispatcher only drops a sender when the pacer goes away.
        let _ = rx.await;
    }

    fn ensure_dispatcher(self: &Arc<Self>) {
        if self
            .started
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tokio::spawn(dispatch(
                Arc::downgrade(self),
                self.wake.clone(),
                self.stop.clone(),
            ));
        }
    }

    /// Grants every slot that is due; returns when to look again (`None`:
    /// when a call arrives).
    fn grant_due(&self) -> Option<tokio::time::Instant> {
        let Ok(mut s) = self.state.lock() else {
            return None;
        };
        loop {
            for lane in &mut s.lanes {
                while lane.front().is_some_and(oneshot::Sender::is_closed) {
                    lane.pop_front();
                }
            }
            let waiting = [!s.lanes[0].is_empty(), !s.lanes[1].is_empty()];
            let (lane, vtime) = next_grant(s.vtime, waiting, &self.shares)?;
            let now = tokio::time::Instant::now();
            let interval = Duration::from_secs_f64(1.0 / s.rate.max(f64::MIN_POSITIVE))
                .min(Duration::from_secs(3600));
            let slack = interval.max(BURST_WINDOW);
            let slot = match s.next_slot {
                Some(n) if n + slack > now => n,
                _ => now,
            };
            let at = s.paused_until.map_or(slot, |p| p.max(slot));
            if at > now {
                return Some(at);
            }
            if let Some(tx) = s.lanes[lane.index()].pop_front()
                && tx.send(()).is_ok()
            {
                s.vtime = vtime;
                s.next_slot = Some(slot + interval);
            }
        }
    }
}

/// The scheduler task: grants slots while calls wait, sleeps until the next
/// slot or the next call, ends with the pacer.
async fn dispatch(pacer: Weak<Pacer>, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        let next = match pacer.upgrade() {
            Some(p) => p.grant_due(),
            None => return,
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// Feeds each HTTP attempt to a [`Pacer`] (see [`Pacer::observer`]).
struct PaceObserver {
    pacer: Weak<Pacer>,
    next: Option<Arc<dyn CallObserver>>,
}

impl CallObserver for PaceObserver {
    fn call_finished(&self, endpoint: Endpoint, attempts: u32, error: Option<&ApimartError>) {
        if let Some(next) = &self.next {
            next.call_finished(endpoint, attempts, error);
        }
    }

    fn attempt_finished(
        &self,
        endpoint: Endpoint,
        status: Option<u16>,
        error: Option<&ApimartError>,
    ) {
        if matches!(endpoint, Endpoint::Submit | Endpoint::TaskStatus) {
            // Filed under the task step making the call, for its timeline.
            crate::timeline::note_attempt(status, error);
        }
        if matches!(endpoint, Endpoint::Submit | Endpoint::TaskStatus)
            && let Some(pacer) = self.pacer.upgrade()
        {
            match (status, error) {
                (_, Some(ApimartError::RateLimited { retry_after, .. })) => {
                    pacer.record(Some(*retry_after));
                }
                (Some(429), _) => pacer.record(Some(None)),
                (Some(_), _) => pacer.record(None),
                // No answer (timeout, connection): says nothing about the rate.
                (None, _) => {}
            }
        }
        if let Some(next) = &self.next {
            next.attempt_finished(endpoint, status, error);
        }
    }
}

/// An [`ImageGenerator`] that waits for its lane's slot at the [`Pacer`]'s
/// rate before each call.
pub struct PacedGenerator {
    inner: Arc<dyn ImageGenerator>,
    pacer: Arc<Pacer>,
    health: crate::health::UpstreamHealth,
}

impl PacedGenerator {
    /// Paced by `pacer` (share it with the client through [`Pacer::observer`]
    /// so every retry attempt counts).
    pub fn new(inner: Arc<dyn ImageGenerator>, pacer: Arc<Pacer>) -> Self {
        PacedGenerator {
            inner,
            pacer,
            health: crate::health::UpstreamHealth::default(),
        }
    }

    /// Reports every answer to `health` (the 401/402 streak `/readyz` shows).
    #[must_use]
    pub fn with_health(mut self, health: crate::health::UpstreamHealth) -> Self {
        self.health = health;
        self
    }

    /// The pacer.
    pub fn pacer(&self) -> &Arc<Pacer> {
        &self.pacer
    }

    fn observe<T>(&self, result: &Result<T, ApimartError>) {
        if self.pacer.attempts_observed.load(Ordering::Relaxed) {
            return;
        }
        match result {
            Err(ApimartError::RateLimited { retry_after, .. }) => {
                self.pacer.record(Some(*retry_after));
            }
            Ok(_) => self.pacer.record(None),
            Err(e) if e.http_status().is_some() => self.pacer.record(None),
            Err(_) => {}
        }
    }
}

/// Counts the logical call as `upstream_calls_total{endpoint,outcome}`
/// (`ok`, or the final error's kind: `server`, `timeout`, `rate_limited`…)
/// and records its latency, measured after the pacing wait so that waiting
/// for a slot is not counted as Apimart's time (retries inside the call are).
/// The HTTP attempts inside the call are counted by the api crate's
/// `telemetry::UpstreamMetrics`.
fn record_call<T>(endpoint: &'static str, started: Instant, result: &Result<T, ApimartError>) {
    metrics::histogram!("upstream_request_duration_seconds", "endpoint" => endpoint)
        .record(started.elapsed().as_secs_f64());
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => crate::engine::upstream_error_kind(e),
    };
    metrics::counter!("upstream_calls_total", "endpoint" => endpoint, "outcome" => outcome)
        .increment(1);
}

#[async_trait]
impl ImageGenerator for PacedGenerator {
    async fn submit(
        &self,
        request: &GenerationRequest,
        idempotency_key: &str,
    ) -> Result<SubmitResponse, ApimartError> {
        self.pacer.acquire(Lane::Submit).await;
        let started = Instant::now();
        let result = self.inner.submit(request, idempotency_key).await;
        record_call("submit", started, &result);
        self.observe(&result);
        self.health.observe(&result, chrono::Utc::now());
        result
    }

    async fn status(&self, external_task_id: &str) -> Result<TaskStatusResponse, ApimartError> {
        self.pacer.acquire(Lane::Poll).await;
        let started = Instant::now();
        let result = self.inner.status(external_task_id).await;
        record_call("status", started, &result);
        self.observe(&result);
        self.health.observe(&result, chrono::Utc::now());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MockImageGenerator;
    use proptest::prelude::*;

    fn status_ok() -> TaskStatusResponse {
        let mut status = TaskStatusResponse::new("t", apimart_client::UpstreamStatus::Processing);
        status.progress = 10;
        status
    }

    fn settings(ceiling: u32, start: f64) -> AimdSettings {
        AimdSettings::with_ceiling(ceiling).starting_at(start)
    }

    #[test]
    fn success_adds_the_increase_spread_over_a_second_of_answers() {
        let s = settings(100, 20.0);
        // 20 answers at 20/s: about +5/s.
        let mut rate = 20.0;
        for _ in 0..20 {
            rate = on_success(rate, &s);
        }
        assert!((24.0..26.0).contains(&rate), "{rate}");
        assert_eq!(on_success(99.99, &s), 100.0, "never above the ceiling");
    }

    #[test]
    fn a_throttle_halves_once_per_cut_interval_and_stops_at_the_floor() {
        let s = settings(100, 80.0);
        assert_eq!(on_throttle(80.0, None, &s), 40.0);
        assert_eq!(on_throttle(80.0, Some(Duration::from_secs(2)), &s), 40.0);
        assert_eq!(
            on_throttle(80.0, Some(Duration::from_millis(300)), &s),
            80.0,
            "a 429 of a request already in flight does not cut again"
        );
        assert_eq!(on_throttle(1.5, None, &s), 1.0, "floor");
        assert_eq!(throttle_pause(None), DEFAULT_RATE_LIMIT_PAUSE);
        assert_eq!(
            throttle_pause(Some(Duration::from_secs(3600))),
            MAX_RATE_LIMIT_PAUSE
        );
    }

    #[test]
    fn the_shipped_settings_never_start_above_the_ceiling() {
        let s = AimdSettings::with_ceiling(5);
        assert_eq!((s.start, s.floor, s.ceiling), (5.0, 1.0, 5.0));
        let s = AimdSettings::with_ceiling(0);
        assert_eq!((s.start, s.floor, s.ceiling), (1.0, 1.0, 1.0));
        let s = AimdSettings::with_ceiling(100);
        assert_eq!((s.start, s.floor, s.ceiling), (20.0, 1.0, 100.0));
    }

    #[test]
    fn split_guarantees_each_lane_its_share_and_gives_an_idle_share_away() {
        let shares = LaneShares::default();
        let (submit, poll) = split(90.0, true, true, &shares);
        assert!((submit - 30.0).abs() < 1e-9 && (poll - 60.0).abs() < 1e-9);
        assert_eq!(split(90.0, true, false, &shares), (90.0, 0.0));
        assert_eq!(split(90.0, false, true, &shares), (0.0, 90.0));
    }

    /// Grants `n` slots with both lanes always waiting, from `vtime`.
    fn grants_both_waiting(mut vtime: [f64; 2], n: usize) -> (usize, usize) {
        let shares = LaneShares::default();
        let (mut submits, mut polls) = (0, 0);
        for _ in 0..n {
            let (lane, v) = next_grant(vtime, [true, true], &shares).unwrap();
            vtime = v;
            match lane {
                Lane::Submit => submits += 1,
                Lane::Poll => polls += 1,
            }
        }
        (submits, polls)
    }

    #[test]
    fn both_lanes_waiting_share_two_to_one() {
        assert_eq!(grants_both_waiting([0.0, 0.0], 300), (100, 200));
        assert_eq!(
            next_grant([0.0, 0.0], [false, false], &LaneShares::default()),
            None
        );
    }

    proptest! {
        #[test]
        fn aimd_stays_within_floor_and_ceiling(
            ceiling in 1u32..2000,
            start in 0.0f64..5000.0,
            steps in proptest::collection::vec((any::<bool>(), proptest::option::of(0u64..3000)), 0..200),
        ) {
            let s = settings(ceiling, start);
            let mut rate = s.start;
            for (throttled, since_ms) in steps {
                let before = rate;
                rate = if throttled {
                    let r = on_throttle(rate, since_ms.map(Duration::from_millis), &s);
                    prop_assert!(r <= before);
                    r
                } else {
                    let r = on_success(rate, &s);
                    prop_assert!(r >= before);
                    r
                };
                prop_assert!(rate >= s.floor && rate <= s.ceiling, "{rate} {s:?}");
            }
        }

        #[test]
        fn grants_go_to_waiting_lanes_and_neither_lane_starves(
            history in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..200),
            n in 1usize..400,
        ) {
            let shares = LaneShares::default();
            let mut vtime = [0.0, 0.0];
            for (s, p) in history {
                match next_grant(vtime, [s, p], &shares) {
                    None => prop_assert!(!s && !p),
                    Some((lane, v)) => {
                        let lane_waited = match lane { Lane::Submit => s, Lane::Poll => p };
                        prop_assert!(lane_waited);
                        vtime = v;
                    }
                }
            }
            // Whatever came before, a stretch with both lanes waiting gives
            // polls at least half and submits at least a quarter (give or take
            // the one slot in flight at the boundaries).
            let (submits, polls) = grants_both_waiting(vtime, n);
            prop_assert!(polls + 2 >= n / 2, "{polls} of {n}");
            prop_assert!(submits + 2 >= n / 4, "{submits} of {n}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_beyond_the_rate_wait_for_their_slot() {
        let mut inner = MockImageGenerator::new();
        inner
            .expect_status()
            .times(21)
            .returning(|_| Ok(status_ok()));
        // Ceiling 10, no increase: 10 calls/s exactly.
        let mut s = settings(10, 10.0);
        s.increase_per_second = 0.0;
        let paced = PacedGenerator::new(Arc::new(inner), Pacer::new(s));
        let start = tokio::time::Instant::now();
        for _ in 0..21 {
            paced.status("t").await.unwrap();
        }
        // The first goes at once, the 21st two seconds later (virtual time).
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_following_call_and_cuts_the_rate() {
        let mut inner = MockImageGenerator::new();
        let mut seq = mockall::Sequence::new();
        inner
            .expect_status()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| {
                Err(ApimartError::RateLimited {
                    retry_after: Some(Duration::from_secs(5)),
                    message: "slow down".into(),
                })
            });
        inner
            .expect_status()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(status_ok()));
        let paced = PacedGenerator::new(Arc::new(inner), Pacer::new(settings(100, 80.0)));
        assert!(paced.status("t").await.is_err());
        assert_eq!(paced.pacer().rate(), 40.0);
        let start = tokio::time::Instant::now();
        paced.status("t").await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(paced.pacer().rate() > 40.0, "an answer raises it again");
    }

    #[tokio::test(start_paused = true)]
    async fn successes_raise_the_rate_up_to_the_ceiling() {
        let mut inner = MockImageGenerator::new();
        inner.expect_status().returning(|_| Ok(status_ok()));
        let paced = PacedGenerator::new(Arc::new(inner), Pacer::new(settings(30, 20.0)));
        for _ in 0..200 {
            paced.status("t").await.unwrap();
        }
        assert_eq!(paced.pacer().rate(), 30.0);
    }

    #[tokio::test(start_paused = true)]
    async fn submits_and_polls_share_the_rate_and_an_idle_lane_gives_its_share_away() {
        let mut inner = MockImageGenerator::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (o1, o2) = (order.clone(), order.clone());
        inner.expect_status().returning(move |_| {
            o1.lock().unwrap().push(Lane::Poll);
            Ok(status_ok())
        });
        inner.expect_submit().returning(move |_, _| {
            o2.lock().unwrap().push(Lane::Submit);
            Err(ApimartError::Timeout)
        });
        let mut s = settings(10, 10.0);
        s.increase_per_second = 0.0;
        let paced = Arc::new(PacedGenerator::new(Arc::new(inner), Pacer::new(s)));
        let request = GenerationRequest {
            model: "m".into(),
            prompt: "p".into(),
            size: "1:1".into(),
            n: 1,
            image_urls: Vec::new(),
            resolution: None,
        };
        let mut calls = Vec::new();
        // 60 submits queue first, then 60 polls.
        for _ in 0..60 {
            let (p, r) = (paced.clone(), request.clone());
            calls.push(tokio::spawn(async move {
                let _ = p.submit(&r, "k").await;
            }));
            tokio::task::yield_now().await;
        }
        for _ in 0..60 {
            let p = paced.clone();
            calls.push(tokio::spawn(async move {
                let _ = p.status("t").await;
            }));
            tokio::task::yield_now().await;
        }
        for c in calls {
            c.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 120);
        // While both lanes waited (the first 90 grants: 30 submits and 60
        // polls at 1:2), each got its share; then submits had it all.
        let first = &order[..90];
        let polls = first.iter().filter(|l| **l == Lane::Poll).count();
        assert!((55..=62).contains(&polls), "{polls} polls in {first:?}");
        assert!(order[90..].iter().all(|l| *l == Lane::Submit));
    }
}
