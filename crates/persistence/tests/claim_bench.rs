//! The claim benchmark (`make claim-bench`; docs/benchmarks.md, "Claims at
//! 100 000 queued"). Not a test: it asserts nothing about speed, and is
//! `#[ignore]`d so that `cargo test` does not run it.
//!
//! On each backend under test (SQLite, and PostgreSQL and MariaDB unless
//! `MODELGEN_SKIP_PG=1` / `MODELGEN_SKIP_MYSQL=1`), in a fresh database:
//! 1. times `CLAIMS` claims of `BATCH` on the empty queue;
//! 2. fills `QUEUED` queued tasks (most from one user, the rest from
//!    `SMALL_USERS` others) and `RUNNING` tasks running upstream (half of them
//!    due for a poll), then refreshes the planner's statistics;
//! 3. prints the plans of the queue's queries as the planner chooses them;
//! 4. times `CLAIMS` claims of `BATCH` (each batch's leases are given back
//!    before the next claim, so every claim sees the full queue), creates of a
//!    new task, `queue_position` of a newcomer and of the last task, and
//!    `queue_stats`; prints medians.

#![expect(clippy::unwrap_used, reason = "a panic is how a benchmark fails")]

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use modelgen_domain::{TaskId, TaskType};
use modelgen_persistence::testing::{backends_under_test, fresh_database};
use modelgen_persistence::{
    Backend, Database, Fence, InsertOutcome, NewTask, TaskChange, TaskRepository,
};

const QUEUED: usize = 100_000;
const SMALL_USERS: usize = 200;
/// One task in this many belongs to a small user.
const SMALL_SHARE: usize = 10;
const RUNNING: usize = 1_000;
const BATCH: i64 = 32;
const CLAIMS: usize = 20;
const LEASE: Duration = Duration::from_secs(30);

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn at(ms: i64) -> DateTime<Utc> {
    t0() + TimeDelta::milliseconds(ms)
}

fn task(user: &str, created_at: DateTime<Utc>) -> NewTask {
    NewTask {
        task_id: TaskId::generate(),
        request_id: None,
        user_id: user.to_owned(),
        task_type: TaskType::Default,
        base_model_task_id: None,
        angle: None,
        size: "3:4".to_owned(),
        prompt: "a person, front view, studio light".to_owned(),
        model: "gemini-2.5-flash-image-preview".to_owned(),
        input_images: vec!["blob:inputs/bench/0.jpg".to_owned()],
        request_fingerprint: Some("fp".to_owned()),
        created_at,
        callback_url: None,
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1_000.0)
}

/// Median of `CLAIMS` claims of `BATCH` at `now`, and the batch sizes seen.
async fn time_claims(db: &Database, now: DateTime<Utc>) -> (Duration, Vec<usize>) {
    let mut samples = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..CLAIMS {
        let owner = format!("bench-{i}");
        let start = Instant::now();
        let batch = db.claim_due_tasks(&owner, now, LEASE, BATCH).await.unwrap();
        samples.push(start.elapsed());
        sizes.push(batch.len());
        db.release_all_task_leases(&owner).await.unwrap();
    }
    (median(samples), sizes)
}

async fn time_creates(db: &Database, user: &str, now: DateTime<Utc>) -> Duration {
    let mut samples = Vec::new();
    for _ in 0..CLAIMS {
        let start = Instant::now();
        let created = db.insert_task(task(user, now)).await.unwrap();
        samples.push(start.elapsed());
        assert!(matches!(created, InsertOutcome::Created(_)));
    }
    median(samples)
}

async fn bench(backend: Backend) {
    println!("\n== {backend} ==");
    let (db, _guard) = fresh_database(backend).await;
    let now = at(10_000_000);
    let (empty, _) = time_claims(&db, now).await;
    let empty_create = time_creates(&db, "empty-queue-user", at(0)).await;
    // Start again from an empty table for the fill.
    let (db, _guard) = fresh_database(backend).await;

    let fill = Instant::now();
    let tasks: Vec<NewTask> = (0..QUEUED)
        .map(|i| {
            let user = if i % SMALL_SHARE == 0 {
                format!("user-{}", (i / SMALL_SHARE) % SMALL_USERS)
            } else {
                "catalogue".to_owned()
            };
            task(&user, at(i as i64))
        })
        .collect();
    db.bulk_queue_tasks(&tasks).await.unwrap();
    for i in 0..RUNNING {
        let created = match db
            .insert_task(task("running", at(200_000 + i as i64)))
            .await
            .unwrap()
        {
            InsertOutcome::Created(record) | InsertOutcome::Existing(record) => record,
        };
        // Half due for a poll now, half later.
        let poll_at = if i % 2 == 0 {
            at(300_000)
        } else {
            at(99_000_000)
        };
        db.update_task(
            &created.task_id,
            &Fence::Unfenced,
            at(250_000),
            TaskChange {
                external_task_id: Some(format!("up-{i}")),
                next_run_at: Some(poll_at),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    }
    db.analyze_tasks().await.unwrap();
    println!(
        "filled {QUEUED} queued ({} of them from one user, the rest from {SMALL_USERS} users) \
         and {RUNNING} running upstream ({} due) in {:.1} s",
        QUEUED - QUEUED / SMALL_SHARE,
        RUNNING / 2,
        fill.elapsed().as_secs_f64()
    );

    for plan in db.explain_queue_queries(now, BATCH, false).await.unwrap() {
        println!("-- {}\n{}", plan.name, plan.plan);
    }

    let (full, sizes) = time_claims(&db, now).await;
    let newcomer_create = time_creates(&db, "newcomer", now).await;
    let newcomer = db
        .list_tasks(&modelgen_persistence::TaskQuery {
            user_id: Some("newcomer".to_owned()),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .pop()
        .unwrap();
    let catalogue_create = time_creates(&db, "catalogue", now).await;
    let last = db
        .list_tasks(&modelgen_persistence::TaskQuery {
            user_id: Some("catalogue".to_owned()),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .pop()
        .unwrap();
    let mut newcomer_positions = Vec::new();
    let mut last_positions = Vec::new();
    let mut stats = Vec::new();
    let (mut newcomer_at, mut last_at, mut depth) = (0, 0, 0);
    for _ in 0..CLAIMS {
        let start = Instant::now();
        newcomer_at = db.queue_position(&newcomer).await.unwrap().unwrap_or(0);
        newcomer_positions.push(start.elapsed());
        let start = Instant::now();
        last_at = db.queue_position(&last).await.unwrap().unwrap_or(0);
        last_positions.push(start.elapsed());
        let start = Instant::now();
        depth = db.queue_stats(now, LEASE).await.unwrap().depth;
        stats.push(start.elapsed());
    }
    println!(
        "claim of {BATCH}, median of {CLAIMS}: empty queue {}, {QUEUED} queued {} \
         (batches of {:?})",
        ms(empty),
        ms(full),
        sizes.first().copied().unwrap_or(0)
    );
    println!(
        "create (2 rank lookups + insert), median of {CLAIMS}: empty queue {}, \
         {QUEUED} queued: a newcomer {}, the big user {}",
        ms(empty_create),
        ms(newcomer_create),
        ms(catalogue_create)
    );
    println!(
        "queue_position: a newcomer's task (position {newcomer_at}) {}, the big user's last \
         (position {last_at}) {}; queue_stats (depth {depth}) {}",
        ms(median(newcomer_positions)),
        ms(median(last_positions)),
        ms(median(stats))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark, not a test: `make claim-bench`"]
async fn claim_bench() {
    for backend in backends_under_test() {
        bench(backend).await;
    }
}
