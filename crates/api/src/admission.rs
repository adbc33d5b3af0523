//! Admission control (README, "Admission control"): creates are refused with
//! 429/1010 while the backlog of tasks not yet submitted upstream is at
//! `MAX_QUEUED_TASKS`, so a burst larger than the upstream can drain within
//! `QUEUE_TIMEOUT` is pushed back to the client instead of failing later.
//!
//! The backlog is shared by every replica, so it is read from the database;
//! cheaply: each replica reads it (with the drain rate, one call of
//! [`TaskRepository::queue_stats`], index range reads only) at most once per
//! [`REFRESH_INTERVAL`], when a create or a metrics scrape needs it, and counts
//! its own admissions since that read on top. Within one replica the limit is
//! exact (a reservation is taken atomically before the insert). Across
//! replicas each one sees the others' creates only at its next read, so the
//! backlog can overshoot the limit by at most what the *other* replicas admit
//! in one refresh interval: `(replicas − 1) × (creates per second of one
//! replica) × REFRESH_INTERVAL`, and never more than `(replicas − 1) ×
//! MAX_QUEUED_TASKS`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use modelgen_persistence::{QueueStats, RepoError, TaskRepository};

use crate::ports::Clock;

/// How old a replica's reading of the backlog may get before a create or a
/// scrape reads it again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// The window over which the drain rate (tasks accepted upstream per second,
/// by every replica) is measured.
pub const DRAIN_WINDOW: Duration = Duration::from_secs(60);
/// Upstream requests one task is assumed to cost when nothing is measured:
/// a submit and up to three polls. The simulator's tasks take 2 (a submit and
/// one poll, docs/benchmarks.md); longer real tasks are polled a few times
/// more. Used for the default `MAX_QUEUED_TASKS` and the `Retry-After` before
/// a drain rate is measured.
pub const NOMINAL_REQUESTS_PER_TASK: f64 = 4.0;
/// Shortest `Retry-After` of a refused create, seconds.
pub const MIN_RETRY_AFTER: u64 = 1;
/// Longest `Retry-After` of a refused create, seconds.
pub const MAX_RETRY_AFTER: u64 = 300;

/// The default `MAX_QUEUED_TASKS`: the tasks one replica drains in
/// `queue_timeout` at its nominal rate, `start_rps /`
/// [`NOMINAL_REQUESTS_PER_TASK`] tasks per second. `start_rps` is the rate
/// the upstream pacer starts at (`AimdSettings::start` in
/// `crates/engine/src/pacing.rs`: 20 requests/s, or `UPSTREAM_MAX_RPS` when
/// lower), not the ceiling: the pacer only rises above it while Apimart
/// answers without a 429, so the ceiling promises nothing. A full queue then
/// empties before its last task's `QUEUE_TIMEOUT` runs out even with one
/// replica and twice the upstream requests per task the simulator measures.
/// With the shipped defaults (24 h, 20 requests/s): 432 000.
pub fn default_max_queued(queue_timeout: Duration, start_rps: f64) -> u64 {
    let per_second = start_rps.max(0.0) / NOMINAL_REQUESTS_PER_TASK;
    (queue_timeout.as_secs_f64() * per_second).floor().max(1.0) as u64
}

/// The rate, tasks/s, at which a queue of `depth` tasks is expected to
/// drain: the `measured` rate, or `nominal` while none is measured; for an
/// empty queue the larger of the two, since what was measured then is the
/// arrival rate, not the queue's capacity.
pub fn drain_rate(depth: u64, measured: f64, nominal: f64) -> f64 {
    if depth == 0 {
        measured.max(nominal)
    } else if measured > 0.0 {
        measured
    } else {
        nominal
    }
}

/// `Retry-After` for a create refused with `excess` tasks above the room
/// left: the time the queue needs to drain them at `drain_per_second` (the
/// measured rate, or `nominal_per_second` while none is measured), bounded to
/// [`MIN_RETRY_AFTER`]..=[`MAX_RETRY_AFTER`] seconds.
pub fn retry_after_secs(excess: u64, drain_per_second: f64, nominal_per_second: f64) -> u64 {
    let rate = if drain_per_second > 0.0 {
        drain_per_second
    } else {
        nominal_per_second
    };
    if !(rate.is_finite() && rate > 0.0) {
        return MAX_RETRY_AFTER;
    }
    let secs = (excess.max(1) as f64 / rate).ceil();
    if secs.is_finite() {
        (secs as u64).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER)
    } else {
        MAX_RETRY_AFTER
    }
}

/// A create admitted: hold it until the insert is known, then
/// [`Admitted::keep`] it (a task was created) or drop it (a replay, a conflict
/// or a failure: the reservation is given back).
#[must_use = "dropping an admission gives the reservation back"]
pub struct Admitted {
    counters: Option<Arc<Counters>>,
    quota: Option<Quota>,
}

/// The room the admission limit leaves, as the creates' `RateLimit-Limit`,
/// `RateLimit-Remaining` and `RateLimit-Reset` headers tell it (README,
/// "Rate-limit headers"; docs/design.md says why these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// `MAX_QUEUED_TASKS`.
    pub limit: u64,
    /// Tasks that may still be created before creates are refused, as this
    /// replica counts it (this create included in the backlog).
    pub remaining: u64,
    /// Seconds until the backlog as it stands has drained and the whole
    /// limit is free again, at the measured drain rate (the nominal rate
    /// while none is measured); on a refusal, the `Retry-After`.
    pub reset: u64,
}

impl Admitted {
    /// The room left after this admission; `None` when there is no limit
    /// (`MAX_QUEUED_TASKS=0`).
    pub fn quota(&self) -> Option<Quota> {
        self.quota
    }

    /// The task was created: it now counts in this replica's backlog until
    /// the next reading of the database includes it.
    pub fn keep(mut self) {
        if let Some(c) = self.counters.take() {
            // Counted as kept before the reservation ends: for an instant
            // the depth is one too high, never one too low.
            c.kept.fetch_add(1, Ordering::AcqRel);
            c.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(c) = self.counters.take() {
            c.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// This replica's admissions that the last database reading may not include.
#[derive(Default)]
struct Counters {
    /// Admitted, insert not finished yet.
    pending: AtomicI64,
    /// Created since the last reading began.
    kept: AtomicI64,
}

impl Counters {
    fn local(&self) -> u64 {
        let n = self.pending.load(Ordering::Acquire) + self.kept.load(Ordering::Acquire);
        u64::try_from(n).unwrap_or(0)
    }
}

/// Why a create was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFull {
    /// The backlog as this replica counts it.
    pub depth: u64,
    /// `MAX_QUEUED_TASKS`.
    pub limit: u64,
    /// Seconds the client should wait ([`retry_after_secs`]).
    pub retry_after: u64,
}

/// A reading of the queue, with what this replica measured from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSnapshot {
    /// Tasks waiting to be submitted (database reading plus this replica's
    /// admissions since).
    pub depth: u64,
    /// When the oldest waiting task joined the queue.
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Tasks accepted upstream per second over [`DRAIN_WINDOW`], by every
    /// replica; 0 when none was.
    pub drain_per_second: f64,
    /// When the database was read.
    pub read_at: DateTime<Utc>,
}

struct Reading {
    stats: QueueStats,
    at: DateTime<Utc>,
}

/// One replica's admission control.
pub struct Admission {
    tasks: Arc<dyn TaskRepository>,
    clock: Arc<dyn Clock>,
    /// `MAX_QUEUED_TASKS`; `None` admits everything (`0` in the config).
    limit: Option<u64>,
    /// Tasks per second a replica drains at its upstream cap, when nothing is
    /// measured yet.
    nominal_per_second: f64,
    /// Admissions of this replica not yet in `reading`.
    counters: Arc<Counters>,
    reading: Mutex<Option<Reading>>,
}

impl Admission {
    /// Admission control over `tasks` with `limit` (`None`: no limit) and the
    /// replica's upstream start rate in requests/s (for the nominal drain rate;
    /// see [`default_max_queued`]).
    pub fn new(
        tasks: Arc<dyn TaskRepository>,
        clock: Arc<dyn Clock>,
        limit: Option<u64>,
        start_rps: f64,
    ) -> Admission {
        Admission {
            tasks,
            clock,
            limit,
            nominal_per_second: start_rps.max(1.0) / NOMINAL_REQUESTS_PER_TASK,
            counters: Arc::default(),
            reading: Mutex::new(None),
        }
    }

    /// `MAX_QUEUED_TASKS`, `None` when there is no limit.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// The queue as of at most [`REFRESH_INTERVAL`] ago: reads the database
    /// when the last reading is older (one caller reads, concurrent callers
    /// wait for it), and updates the queue gauges.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub async fn snapshot(&self) -> Result<QueueSnapshot, RepoError> {
        Ok(self.read().await?.0)
    }

    /// [`Admission::snapshot`], and the depth the database reported.
    async fn read(&self) -> Result<(QueueSnapshot, u64), RepoError> {
        let mut reading = self.reading.lock().await;
        let now = self.clock.now();
        let fresh = reading.as_ref().is_some_and(|r| {
            now >= r.at
                && (now - r.at)
                    .to_std()
                    .is_ok_and(|age| age < REFRESH_INTERVAL)
        });
        if !fresh {
            // Tasks created before the read are in the database by then;
            // later ones stay counted here. One that commits during the read
            // may be counted twice until the next reading: an overestimate,
            // never an underestimate. Pending reservations always count.
            let before = self.counters.kept.load(Ordering::Acquire);
            let stats = self.tasks.queue_stats(now, DRAIN_WINDOW).await?;
            self.counters.kept.fetch_sub(before, Ordering::AcqRel);
            *reading = Some(Reading { stats, at: now });
        }
        let Some(r) = reading.as_ref() else {
            return Err(RepoError::Unavailable("no queue reading".into()));
        };
        let db_depth = r.stats.depth;
        let snapshot = QueueSnapshot {
            depth: db_depth.saturating_add(self.counters.local()),
            oldest_queued_at: r.stats.oldest_queued_at,
            drain_per_second: r.stats.submitted_in_window as f64 / DRAIN_WINDOW.as_secs_f64(),
            read_at: r.at,
        };
        drop(reading);
        metrics::gauge!("queue_depth").set(snapshot.depth as f64);
        metrics::gauge!("queue_oldest_age_seconds").set(
            snapshot
                .oldest_queued_at
                .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
        );
        metrics::gauge!("queue_drain_rate").set(snapshot.drain_per_second);
        Ok((snapshot, db_depth))
    }

    /// How long the queue needs to submit `tasks` more at the drain rate of
    /// `snapshot`, or the nominal rate while none is measured (capped at a
    /// year, so any count gives a representable instant). While the queue
    /// is empty the measured rate is how fast tasks arrived, not how fast
    /// the queue can go, so the larger of it and the nominal rate is used:
    /// an idle service does not announce a minute's wait for one task.
    pub fn time_to_drain(&self, tasks: u64, snapshot: &QueueSnapshot) -> chrono::TimeDelta {
        let rate = drain_rate(
            snapshot.depth,
            snapshot.drain_per_second,
            self.nominal_per_second,
        );
        let secs = (tasks as f64 / rate).clamp(0.0, 365.0 * 86_400.0);
        chrono::TimeDelta::milliseconds((secs * 1000.0) as i64)
    }

    /// Admits one create, or refuses it when the backlog is at the limit.
    /// Refusals are counted in `tasks_refused_total{reason="queue_full"}`.
    ///
    /// # Errors
    /// `Err(Ok(QueueFull))` when refused; `Err(Err(_))` when the backlog
    /// cannot be read.
    pub async fn admit(&self) -> Result<Admitted, Result<QueueFull, RepoError>> {
        let Some(limit) = self.limit else {
            return Ok(Admitted {
                counters: None,
                quota: None,
            });
        };
        let (snapshot, db_depth) = self.read().await.map_err(Err)?;
        // Reserve atomically: concurrent creates of this replica never
        // admit more than the room left.
        let mut pending = self.counters.pending.load(Ordering::Acquire);
        loop {
            let kept = self.counters.kept.load(Ordering::Acquire);
            let local = u64::try_from(pending.saturating_add(kept)).unwrap_or(0);
            let depth = db_depth.saturating_add(local);
            if depth >= limit {
                metrics::counter!("tasks_refused_total", "reason" => "queue_full").increment(1);
                return Err(Ok(QueueFull {
                    depth,
                    limit,
                    retry_after: retry_after_secs(
                        depth + 1 - limit,
                        snapshot.drain_per_second,
                        self.nominal_per_second,
                    ),
                }));
            }
            match self.counters.pending.compare_exchange(
                pending,
                pending + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let backlog = depth.saturating_add(1);
                    let reset = self.time_to_drain(backlog, &snapshot).num_milliseconds();
                    return Ok(Admitted {
                        counters: Some(self.counters.clone()),
                        quota: Some(Quota {
                            limit,
                            remaining: limit.saturating_sub(backlog),
                            reset: u64::try_from(reset.max(0)).unwrap_or(0).div_ceil(1000),
                        }),
                    });
                }
                Err(seen) => pending = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_drains_within_the_queue_timeout_at_the_nominal_rate() {
        let day = Duration::from_secs(86_400);
        assert_eq!(default_max_queued(day, 20.0), 432_000);
        let limit = default_max_queued(day, 20.0) as f64;
        let nominal = 20.0 / NOMINAL_REQUESTS_PER_TASK;
        assert!(limit / nominal <= day.as_secs_f64());
        assert_eq!(default_max_queued(Duration::from_secs(1), 1.0), 1);
    }

    #[test]
    fn the_default_limit_follows_the_pacers_start_rate_not_its_ceiling() {
        let day = Duration::from_secs(86_400);
        let shipped = modelgen_engine::pacing::AimdSettings::with_ceiling(100);
        assert_eq!(default_max_queued(day, shipped.start), 432_000);
        let low = modelgen_engine::pacing::AimdSettings::with_ceiling(8);
        assert_eq!(default_max_queued(day, low.start), 172_800);
    }

    #[test]
    fn an_empty_queue_drains_at_least_at_the_nominal_rate() {
        // Idle: one task a minute arrived; the queue can do 5/s.
        assert_eq!(drain_rate(0, 1.0 / 60.0, 5.0), 5.0);
        assert_eq!(drain_rate(0, 8.0, 5.0), 8.0);
        // A backlog: what was measured is what the queue does.
        assert_eq!(drain_rate(10, 1.0 / 60.0, 5.0), 1.0 / 60.0);
        assert_eq!(drain_rate(10, 0.0, 5.0), 5.0);
    }

    #[test]
    fn retry_after_follows_the_measured_rate_within_bounds() {
        assert_eq!(retry_after_secs(100, 10.0, 5.0), 10);
        assert_eq!(retry_after_secs(1, 10.0, 5.0), MIN_RETRY_AFTER);
        assert_eq!(retry_after_secs(0, 10.0, 5.0), MIN_RETRY_AFTER);
        assert_eq!(retry_after_secs(1_000_000, 10.0, 5.0), MAX_RETRY_AFTER);
        // Nothing measured: the nominal rate.
        assert_eq!(retry_after_secs(50, 0.0, 5.0), 10);
        assert_eq!(retry_after_secs(50, 0.0, 0.0), MAX_RETRY_AFTER);
        assert_eq!(retry_after_secs(50, f64::NAN, f64::NAN), MAX_RETRY_AFTER);
    }
}
