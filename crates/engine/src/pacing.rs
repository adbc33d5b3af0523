//! Upstream pacing: a per-replica cap on Apimart requests per second, and a
//! shared pause after a 429 so one rate-limit answer slows every task down
//! instead of each task hammering upstream on its own schedule.
//!
//! The token bucket is `governor`'s GCRA limiter (a well-kept library);
//! this module only adds the 429 pause and wraps [`ImageGenerator`].

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apimart_client::{ApimartError, GenerationRequest, SubmitResponse, TaskStatusResponse};
use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::ports::ImageGenerator;

/// Pause applied after a 429 that carried no `Retry-After`.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);
/// Longest pause honoured from a `Retry-After`, so a bogus value cannot stall the engine.
pub const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);

/// An [`ImageGenerator`] that waits for a token before each call.
pub struct PacedGenerator {
    inner: Arc<dyn ImageGenerator>,
    limiter: DefaultDirectRateLimiter,
    paused_until: Mutex<Option<Instant>>,
    health: crate::health::UpstreamHealth,
}

impl PacedGenerator {
    /// At most `per_second` calls per second (bursts up to the same number).
    pub fn new(inner: Arc<dyn ImageGenerator>, per_second: NonZeroU32) -> Self {
        PacedGenerator {
            inner,
            limiter: RateLimiter::direct(Quota::per_second(per_second)),
            paused_until: Mutex::new(None),
            health: crate::health::UpstreamHealth::default(),
        }
    }

    /// Reports every answer to `health` (the 401/402 streak `/readyz` shows).
    #[must_use]
    pub fn with_health(mut self, health: crate::health::UpstreamHealth) -> Self {
        self.health = health;
        self
    }

    async fn admit(&self) {
        let pause = self
            .paused_until
            .lock()
            .ok()
            .and_then(|p| *p)
            .and_then(|until| until.checked_duration_since(Instant::now()));
        if let Some(wait) = pause {
            metrics::counter!("upstream_throttled_total", "reason" => "rate_limited").increment(1);
            tokio::time::sleep(wait).await;
        }
        if self.limiter.check().is_err() {
            metrics::counter!("upstream_throttled_total", "reason" => "rps_cap").increment(1);
            self.limiter.until_ready().await;
        }
    }

    fn observe<T>(&self, result: &Result<T, ApimartError>) {
        if let Err(ApimartError::RateLimited { retry_after, .. }) = result {
            let pause = retry_after
                .unwrap_or(DEFAULT_RATE_LIMIT_PAUSE)
                .min(MAX_RATE_LIMIT_PAUSE);
            if let Ok(mut p) = self.paused_until.lock() {
                let until = Instant::now() + pause;
                *p = Some(p.map_or(until, |old| old.max(until)));
            }
        }
    }
}

/// Counts the logical call as `upstream_calls_total{endpoint,outcome}`
/// (`ok`, or the final error's kind: `server`, `timeout`, `rate_limited`…)
/// and records its latency, measured after the pacing wait so that waiting
/// for a token is not counted as Apimart's time (retries inside the call are).
/// The HTTP attempts inside the call are counted by
/// [`crate::telemetry::UpstreamMetrics`].
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
        self.admit().await;
        let started = Instant::now();
        let result = self.inner.submit(request, idempotency_key).await;
        record_call("submit", started, &result);
        self.observe(&result);
        self.health.observe(&result, chrono::Utc::now());
        result
    }

    async fn status(&self, external_task_id: &str) -> Result<TaskStatusResponse, ApimartError> {
        self.admit().await;
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

    fn status_ok() -> TaskStatusResponse {
        let mut status = TaskStatusResponse::new("t", apimart_client::UpstreamStatus::Processing);
        status.progress = 10;
        status
    }

    #[tokio::test]
    async fn calls_beyond_the_cap_wait_for_the_next_second() {
        let mut inner = MockImageGenerator::new();
        inner
            .expect_status()
            .times(6)
            .returning(|_| Ok(status_ok()));
        let paced = PacedGenerator::new(Arc::new(inner), NonZeroU32::new(3).unwrap());
        let start = std::time::Instant::now();
        for _ in 0..6 {
            paced.status("t").await.unwrap();
        }
        // Three fit the burst; the other three need about a second of refill.
        assert!(
            start.elapsed() >= Duration::from_millis(900),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_following_call() {
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
        let paced = PacedGenerator::new(Arc::new(inner), NonZeroU32::new(100).unwrap());
        assert!(paced.status("t").await.is_err());
        let start = tokio::time::Instant::now();
        paced.status("t").await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }
}
