//! The adaptive pacer in front of a real simulator that enforces a rate limit
//! (429 with `Retry-After` beyond N requests/s), on loopback, with the
//! pacer's ceiling ten times N and its start at the ceiling: the rate comes
//! down below N within the first 429s and stays near it, so 429s are a small
//! fraction of the calls afterwards. Counts only, no wall-clock assertion.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use apimart_client::{
    ApiKey, ApimartClient, ApimartConfig, ApimartError, CallObserver, Endpoint, GenerationRequest,
    RetryPolicy,
};
use apimart_sim::{SimConfig, Simulator};
use modelgen_engine::pacing::{AimdSettings, PacedGenerator, Pacer};
use modelgen_engine::ports::ImageGenerator;

/// The simulator's limit, requests/s.
const LIMIT: u32 = 50;
/// Calls made after the pacer first came down to the limit.
const MEASURED: usize = 800;
/// Concurrent callers.
const CALLERS: usize = 16;

/// Counts every HTTP attempt and the 429s among them.
#[derive(Default)]
struct Attempts {
    total: AtomicU64,
    throttled: AtomicU64,
}

impl CallObserver for Attempts {
    fn call_finished(&self, _: Endpoint, _: u32, _: Option<&ApimartError>) {}

    fn attempt_finished(&self, _: Endpoint, status: Option<u16>, _: Option<&ApimartError>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if status == Some(429) {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pacer_converges_below_the_upstream_limit_with_few_429s() {
    let sim = Simulator::start(
        SimConfig {
            rate_limit: NonZeroU32::new(LIMIT),
            task_duration: Duration::from_secs(3600),
            estimated_time: Duration::from_secs(3600),
            ..SimConfig::default()
        },
        0,
    )
    .await
    .expect("the simulator starts on loopback");

    let ceiling = LIMIT * 10;
    let pacer = Pacer::new(AimdSettings::with_ceiling(ceiling).starting_at(f64::from(ceiling)));
    let attempts = Arc::new(Attempts::default());
    let client = ApimartClient::new(
        ApimartConfig::new(ApiKey::new("sim"))
            .with_base_url(sim.base_url())
            // One attempt per call: each 429 reaches the test as it happened.
            .with_retry(RetryPolicy::none())
            .with_observer(pacer.observer(Some(attempts.clone()))),
    )
    .expect("a client for the simulator");
    let paced = Arc::new(PacedGenerator::new(Arc::new(client), pacer.clone()));

    let request = GenerationRequest {
        model: "gemini-2.5-flash-image-preview".into(),
        prompt: "a chair".into(),
        size: "1:1".into(),
        n: 1,
        image_urls: Vec::new(),
        resolution: None,
    };
    let task = paced
        .submit(&request, "pacing-test-1")
        .await
        .expect("the first request fits the simulator's burst");

    // Callers poll until MEASURED calls were made after the rate first came
    // down to the limit; `converged` holds the attempt counts at that moment.
    let after = Arc::new(AtomicUsize::new(0));
    let converged = Arc::new(std::sync::Mutex::new(None::<(u64, u64)>));
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (paced, pacer, attempts, after, converged, id) = (
            paced.clone(),
            pacer.clone(),
            attempts.clone(),
            after.clone(),
            converged.clone(),
            task.task_id.clone(),
        );
        callers.push(tokio::spawn(async move {
            loop {
                {
                    let mut c = converged.lock().unwrap();
                    if c.is_none() && pacer.rate() <= f64::from(LIMIT) {
                        *c = Some((
                            attempts.total.load(Ordering::Relaxed),
                            attempts.throttled.load(Ordering::Relaxed),
                        ));
                    }
                    if c.is_some() && after.fetch_add(1, Ordering::Relaxed) >= MEASURED {
                        return;
                    }
                }
                let _ = paced.status(&id).await;
            }
        }));
    }
    for c in callers {
        c.await.expect("a caller ran to the end");
    }

    let (total0, throttled0) = converged.lock().unwrap().expect("the rate came down");
    let total = attempts.total.load(Ordering::Relaxed) - total0;
    let throttled = attempts.throttled.load(Ordering::Relaxed) - throttled0;
    let stats = sim.stats();
    sim.stop().await;
    eprintln!(
        "after convergence: {throttled} of {total} attempts answered 429; \
         before: {throttled0} of {total0}; final rate {:.1} requests/s",
        pacer.rate()
    );
    assert!(total >= MEASURED as u64, "{total} calls measured");
    assert!(
        throttled * 20 <= total,
        "{throttled} of {total} calls answered 429 after convergence (more than 5 %)"
    );
    assert!(
        stats.rate_limited > 0,
        "the limit was met, so the pacer had a signal"
    );
    assert!(
        pacer.rate() < f64::from(2 * LIMIT),
        "the rate stays near the limit, far below the ceiling: {}",
        pacer.rate()
    );
}
