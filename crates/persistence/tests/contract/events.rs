//! The task timeline (`task_events`), written in the transaction of each
//! change; the upstream cost stored on completion and summed by day and type;
//! the list filters of a bulk retry.

use std::time::Duration;

use chrono::TimeDelta;
use modelgen_domain::{TaskEvent, TaskId, TaskStatus, TaskType};
use modelgen_persistence::{
    AttemptNote, AttemptOutcome, CallbackOutbox, CallbackStatus, Database, EventKind, EventLog,
    Fence, NewTaskEvent, RepoError, TaskChange, TaskQuery, TaskRecord, TaskRepository, UsageGroup,
    UsageQuery,
};

use crate::support::{at, create, new_task, t0};

const LEASE: Duration = Duration::from_secs(30);

async fn kinds(db: &Database, id: &TaskId) -> Vec<&'static str> {
    db.events_for_task(id, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.kind.as_str())
        .collect()
}

pub async fn every_change_appends_its_entries_in_the_same_transaction(db: Database) {
    let task = create(&db, new_task("u", None, t0())).await;
    let other = create(&db, new_task("v", None, t0())).await;
    assert_eq!(kinds(&db, &task.task_id).await, ["created"]);

    // A claim writes `claimed`, naming the replica, for each task it takes.
    let claimed = db.claim_due_tasks("r1", at(1), LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let events = db.events_for_task(&task.task_id, 10).await.unwrap();
    assert_eq!(events[1].event.kind, EventKind::Claimed);
    assert_eq!(events[1].event.replica.as_deref(), Some("r1"));
    assert_eq!(events[1].at, at(1));
    assert_eq!(kinds(&db, &other.task_id).await, ["created", "claimed"]);

    // A fenced change carries its entries; their details round-trip.
    let mut submitted = NewTaskEvent::new(EventKind::Submitted).by("r1");
    submitted.attempt = Some(1);
    submitted.upstream_task_id = Some("up-1".into());
    submitted.http_status = Some(200);
    submitted.latency_ms = Some(42);
    let mut throttled = NewTaskEvent::new(EventKind::SubmitFailed)
        .by("r1")
        .message("rate limited: 私は");
    throttled.http_status = Some(429);
    db.update_task(
        &task.task_id,
        &Fence::Lease("r1".into()),
        at(2),
        TaskChange {
            external_task_id: Some("up-1".into()),
            release_lease: true,
            events: vec![throttled.clone(), submitted.clone()],
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    let events = db.events_for_task(&task.task_id, 10).await.unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[2].event, throttled);
    assert_eq!(events[3].event, submitted);
    assert_eq!(events[3].at, at(2));
    assert_eq!(events[3].task_id, task.task_id);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));

    // A refused change (its lease is gone) writes none of its entries.
    let refused = db
        .update_task(
            &task.task_id,
            &Fence::Lease("r1".into()),
            at(3),
            TaskChange {
                count_poll: true,
                events: vec![NewTaskEvent::new(EventKind::Polled)],
                ..TaskChange::default()
            },
        )
        .await;
    assert!(matches!(refused, Err(RepoError::LeaseLost)));
    // So does one the state machine refuses.
    db.update_task(
        &other.task_id,
        &Fence::Unfenced,
        at(3),
        TaskChange {
            event: Some(TaskEvent::Cancelled),
            enqueue_callback: true,
            events: vec![NewTaskEvent::new(EventKind::Cancelled)],
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    let again = db
        .update_task(
            &other.task_id,
            &Fence::Unfenced,
            at(4),
            TaskChange {
                event: Some(TaskEvent::Cancelled),
                events: vec![NewTaskEvent::new(EventKind::Cancelled)],
                ..TaskChange::default()
            },
        )
        .await;
    assert!(again.is_err());
    assert_eq!(kinds(&db, &task.task_id).await.len(), 4);
    assert_eq!(
        kinds(&db, &other.task_id).await,
        ["created", "claimed", "cancelled"]
    );

    // Callback attempts: each one, then delivered or dead; redeliveries.
    let row = db.callbacks_for_task(&other.task_id).await.unwrap()[0].clone();
    db.claim_due_callbacks("r2", at(10), LEASE, 10)
        .await
        .unwrap();
    db.record_callback_attempt_noted(
        &row.event_id,
        "r2",
        at(11),
        AttemptOutcome::Dead {
            error: "HTTP 503".into(),
        },
        AttemptNote {
            replica: Some("r2".into()),
            http_status: Some(503),
            latency_ms: Some(7),
        },
    )
    .await
    .unwrap();
    db.redeliver_all_dead(at(12)).await.unwrap();
    db.claim_due_callbacks("r2", at(13), LEASE, 10)
        .await
        .unwrap();
    db.record_callback_attempt(&row.event_id, "r2", at(14), AttemptOutcome::Delivered)
        .await
        .unwrap();
    db.redeliver(&row.event_id, at(15)).await.unwrap();
    let events = db.events_for_task(&other.task_id, 100).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "claimed",
            "cancelled",
            "callback_attempt",
            "callback_dead",
            "callback_redelivered",
            "callback_attempt",
            "callback_delivered",
            "callback_redelivered",
        ]
    );
    let first = &events[3].event;
    assert_eq!(
        (first.attempt, first.http_status, first.latency_ms),
        (Some(1), Some(503), Some(7))
    );
    assert_eq!(first.message.as_deref(), Some("HTTP 503"));
    assert_eq!(first.replica.as_deref(), Some("r2"));
    assert_eq!(events[6].event.attempt, Some(1), "attempts restart at 1");

    // `limit` keeps the oldest entries; an unknown task has none.
    assert_eq!(
        db.events_for_task(&other.task_id, 2).await.unwrap()[1]
            .event
            .kind,
        EventKind::Claimed
    );
    assert!(
        db.events_for_task(&TaskId::generate(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_retry_is_on_the_timeline_and_long_messages_are_cut(db: Database) {
    let task = create(&db, new_task("u", None, t0())).await;
    let long = "x".repeat(5000);
    db.update_task(
        &task.task_id,
        &Fence::Unfenced,
        at(1),
        TaskChange {
            event: Some(TaskEvent::Failed),
            error: Some((1002, "apimart: no".into())),
            events: vec![NewTaskEvent::new(EventKind::Failed).message(long.clone())],
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    let mut raw = NewTaskEvent::new(EventKind::Snoozed);
    raw.message = Some(long);
    db.retry_task(&task.task_id, at(2)).await.unwrap();
    let events = db.events_for_task(&task.task_id, 10).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind.as_str()).collect();
    assert_eq!(kinds, ["created", "failed", "retried"]);
    assert_eq!(
        events[1].event.message.as_deref().map(str::len),
        Some(modelgen_persistence::MAX_EVENT_MESSAGE_CHARS)
    );
    // A message set directly is cut on write too.
    db.update_task(
        &task.task_id,
        &Fence::Unfenced,
        at(3),
        TaskChange {
            count_poll: true,
            events: vec![raw],
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    let events = db.events_for_task(&task.task_id, 10).await.unwrap();
    assert_eq!(
        events[3].event.message.as_deref().map(str::len),
        Some(modelgen_persistence::MAX_EVENT_MESSAGE_CHARS)
    );
}

pub async fn old_entries_are_purged_oldest_first_in_batches(db: Database) {
    let task = create(&db, new_task("u", None, t0())).await;
    for i in 1..=5 {
        db.update_task(
            &task.task_id,
            &Fence::Unfenced,
            at(i * 1000),
            TaskChange {
                count_poll: true,
                events: vec![NewTaskEvent::new(EventKind::Polled)],
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    }
    // `created` at t0 and polls at 1..=5 s: those before 3.5 s go, two at a time.
    assert_eq!(db.purge_events(at(3_500), 2).await.unwrap(), 2);
    assert_eq!(db.purge_events(at(3_500), 2).await.unwrap(), 2);
    assert_eq!(db.purge_events(at(3_500), 2).await.unwrap(), 0);
    let left: Vec<_> = db
        .events_for_task(&task.task_id, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.at)
        .collect();
    assert_eq!(left, [at(4_000), at(5_000)]);
    assert_eq!(db.purge_events(at(9_000), 0).await.unwrap(), 0);
}

/// Completes `task` at `ms` with `cost_micros`.
async fn complete(db: &Database, task: &TaskRecord, ms: i64, cost: Option<i64>) {
    for event in [
        TaskEvent::Progressed(modelgen_domain::Progress::clamped(100)),
        TaskEvent::Completed,
    ] {
        db.update_task(
            &task.task_id,
            &Fence::Unfenced,
            at(ms),
            TaskChange {
                event: Some(event),
                cost_micros: cost.filter(|_| event == TaskEvent::Completed),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    }
}

pub async fn cost_is_stored_and_summed_by_day_and_type(db: Database) {
    let day = 24 * 3600 * 1000;
    let a = create(&db, new_task("alice", None, t0())).await;
    let b = create(&db, new_task("alice", None, t0())).await;
    let mut outfit = new_task("bob", None, t0());
    outfit.task_type = TaskType::Outfit;
    let c = create(&db, outfit).await;
    let uncosted = create(&db, new_task("bob", None, t0())).await;
    let failed = create(&db, new_task("bob", None, t0())).await;
    complete(&db, &a, 1_000, Some(50_000)).await;
    complete(&db, &b, day + 1_000, Some(120_000)).await;
    complete(&db, &c, day + 2_000, Some(1_500_000)).await;
    complete(&db, &uncosted, day + 3_000, None).await;
    db.update_task(
        &failed.task_id,
        &Fence::Unfenced,
        at(day + 4_000),
        TaskChange {
            event: Some(TaskEvent::Failed),
            error: Some((1002, "no".into())),
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        db.get_task(&a.task_id).await.unwrap().cost_micros,
        Some(50_000)
    );
    assert_eq!(
        db.get_task(&uncosted.task_id).await.unwrap().cost_micros,
        None
    );

    let query = |user: Option<&str>, group_by| UsageQuery {
        user_id: user.map(str::to_owned),
        from: t0(),
        to: t0() + TimeDelta::days(3),
        group_by,
    };
    let by_day = db.usage(&query(None, UsageGroup::Day)).await.unwrap();
    let d0 = t0().format("%Y-%m-%d").to_string();
    let d1 = (t0() + TimeDelta::days(1)).format("%Y-%m-%d").to_string();
    let got: Vec<(String, u64, i64, u64)> = by_day
        .into_iter()
        .map(|r| (r.key, r.count, r.cost_micros, r.costed))
        .collect();
    assert_eq!(
        got,
        [(d0.clone(), 1, 50_000, 1), (d1.clone(), 3, 1_620_000, 2)]
    );
    let by_type = db.usage(&query(None, UsageGroup::Type)).await.unwrap();
    let got: Vec<(String, u64, i64)> = by_type
        .into_iter()
        .map(|r| (r.key, r.count, r.cost_micros))
        .collect();
    assert_eq!(
        got,
        [
            ("default".to_owned(), 3, 170_000),
            ("outfit".to_owned(), 1, 1_500_000)
        ]
    );
    let alice = db
        .usage(&query(Some("alice"), UsageGroup::Type))
        .await
        .unwrap();
    assert_eq!(alice.len(), 1);
    assert_eq!((alice[0].count, alice[0].cost_micros), (2, 170_000));
    // The end is exclusive; an empty range has no groups.
    let first_day = UsageQuery {
        to: at(1_000),
        ..query(None, UsageGroup::Day)
    };
    assert!(db.usage(&first_day).await.unwrap().is_empty());
}

pub async fn failed_tasks_are_listed_by_error_code_and_end_time(db: Database) {
    let mut ids = Vec::new();
    for (i, code) in [1002, 1002, 1004].into_iter().enumerate() {
        let task = create(&db, new_task("u", None, t0())).await;
        db.update_task(
            &task.task_id,
            &Fence::Unfenced,
            at(1_000 * (i as i64 + 1)),
            TaskChange {
                event: Some(TaskEvent::Failed),
                error: Some((code, "no".into())),
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
        ids.push(task.task_id);
    }
    create(&db, new_task("u", None, t0())).await;
    let failed = |code, since, until| TaskQuery {
        status: Some(TaskStatus::Failed),
        error_code: code,
        ended_since: since,
        ended_until: until,
        limit: 100,
        ..TaskQuery::default()
    };
    let listed = |q: TaskQuery| {
        let db = db.clone();
        async move {
            let mut got: Vec<TaskId> = db
                .list_tasks(&q)
                .await
                .unwrap()
                .iter()
                .map(|t| t.task_id)
                .collect();
            got.sort();
            got
        }
    };
    let mut want = vec![ids[0], ids[1]];
    want.sort();
    assert_eq!(listed(failed(Some(1002), None, None)).await, want);
    assert_eq!(
        listed(failed(Some(1002), Some(at(2_000)), None)).await,
        [ids[1]]
    );
    assert_eq!(listed(failed(None, None, Some(at(2_000)))).await, [ids[0]]);
    let mut created = TaskQuery {
        created_since: Some(at(1)),
        limit: 100,
        ..TaskQuery::default()
    };
    assert!(listed(created.clone()).await.is_empty());
    created.created_since = Some(t0());
    created.created_until = Some(at(1));
    assert_eq!(listed(created).await.len(), 4);
}

/// Ends `task` at `at(ms)` with `event`, queueing its callback.
async fn end(db: &Database, task: &TaskRecord, ms: i64, event: TaskEvent) {
    db.update_task(
        &task.task_id,
        &Fence::Unfenced,
        at(ms),
        TaskChange {
            event: Some(event),
            error: (event == TaskEvent::Failed).then(|| (1002, "upstream said no".into())),
            enqueue_callback: true,
            ..TaskChange::default()
        },
    )
    .await
    .unwrap();
}

pub async fn console_stats_read_ended_tasks_upstream_failures_and_callback_counts(db: Database) {
    let done = create(&db, new_task("u", None, t0())).await;
    let failed = create(&db, new_task("u", None, t0())).await;
    let cancelled = create(&db, new_task("v", None, t0())).await;
    let running = create(&db, new_task("v", None, t0())).await;
    let late = create(&db, new_task("v", None, t0())).await;
    complete(&db, &done, 1_000, Some(10)).await;
    end(&db, &failed, 2_000, TaskEvent::Failed).await;
    end(&db, &cancelled, 3_000, TaskEvent::Cancelled).await;
    end(&db, &late, 60_000, TaskEvent::Cancelled).await;

    // Terminal tasks ended in the window, oldest end first; the running one
    // and the one ending at the window's (exclusive) end are left out.
    let ended = db.ended_tasks(t0(), at(60_000), 100).await.unwrap();
    let got: Vec<(TaskStatus, i64)> = ended
        .iter()
        .map(|e| (e.status, (e.completed_at - e.created_at).num_milliseconds()))
        .collect();
    // `complete` writes twice at the same instant: the second stamp is 1 ms later.
    assert_eq!(
        got,
        [
            (TaskStatus::Completed, 1_001),
            (TaskStatus::Failed, 2_000),
            (TaskStatus::Cancelled, 3_000)
        ]
    );
    for e in &ended {
        assert_eq!(e.created_at, t0());
    }
    assert_eq!(db.ended_tasks(t0(), at(60_000), 2).await.unwrap().len(), 2);
    assert!(
        db.ended_tasks(t0(), at(60_000), 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        db.get_task(&running.task_id)
            .await
            .unwrap()
            .completed_at
            .is_none()
    );

    // Failed upstream calls on the timeline, with their HTTP status (none
    // when there was no answer); other entries are not counted.
    let mut throttled = NewTaskEvent::new(EventKind::SubmitFailed).message("rate limited");
    throttled.http_status = Some(429);
    let timed_out = NewTaskEvent::new(EventKind::PollFailed).message("timeout");
    let mut polled = NewTaskEvent::new(EventKind::Polled);
    polled.http_status = Some(200);
    for (ms, entry) in [(4_000, throttled), (5_000, timed_out), (6_000, polled)] {
        db.update_task(
            &running.task_id,
            &Fence::Unfenced,
            at(ms),
            TaskChange {
                events: vec![entry],
                ..TaskChange::default()
            },
        )
        .await
        .unwrap();
    }
    let failures = db.upstream_failures(t0(), at(60_000), 100).await.unwrap();
    let got: Vec<(EventKind, Option<i32>, i64)> = failures
        .iter()
        .map(|f| (f.kind, f.http_status, (f.at - t0()).num_milliseconds()))
        .collect();
    assert_eq!(
        got,
        [
            (EventKind::SubmitFailed, Some(429), 4_000),
            (EventKind::PollFailed, None, 5_000)
        ]
    );
    assert!(
        db.upstream_failures(at(5_001), at(60_000), 100)
            .await
            .unwrap()
            .is_empty()
    );

    // Callback rows per status (the three tasks `end` ended queue one each):
    // three pending, then one delivered and one dead.
    let counts = |c: Vec<(CallbackStatus, u64)>| {
        let mut c: Vec<(&'static str, u64)> = c.into_iter().map(|(s, n)| (s.as_str(), n)).collect();
        c.sort();
        c
    };
    assert_eq!(
        counts(db.count_callbacks().await.unwrap()),
        [("pending", 3)]
    );
    let claimed = db
        .claim_due_callbacks("w", at(120_000), LEASE, 2)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    db.record_callback_attempt(
        &claimed[0].event_id,
        "w",
        at(120_001),
        AttemptOutcome::Delivered,
    )
    .await
    .unwrap();
    db.record_callback_attempt(
        &claimed[1].event_id,
        "w",
        at(120_001),
        AttemptOutcome::Dead {
            error: "HTTP 500".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        counts(db.count_callbacks().await.unwrap()),
        [("dead", 1), ("delivered", 1), ("pending", 1)]
    );
}
