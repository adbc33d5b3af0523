//! Requests waiting for a task to change (`GET /tasks/{task_id}?wait=N`,
//! README "Waiting for a result"): a registry from task id to a
//! [`Notify`], woken by whoever changes the task (the engine's recorder, a
//! cancel, or another replica's change announced over PostgreSQL
//! `NOTIFY modelgen_task_changes`), so a waiting request reads the database
//! only when its task changed, never on a timer.
//!
//! The registry holds at most `max` waiters in all; past that,
//! [`TaskWaiters::register`] refuses and the caller answers at once. The
//! `task_waiters` gauge shows how many are held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// One task's waiters.
struct Entry {
    notify: Arc<Notify>,
    /// Guards alive for this task.
    holders: usize,
}

#[derive(Default)]
struct Registry {
    tasks: HashMap<String, Entry>,
    /// Guards alive in all.
    total: usize,
}

/// The waiter registry of one process. Cheap to share (`Arc`).
pub struct TaskWaiters {
    max: usize,
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for TaskWaiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskWaiters")
            .field("max", &self.max)
            .field("held", &self.held())
            .finish()
    }
}

impl TaskWaiters {
    /// A registry holding at most `max` waiters (`MAX_WAITERS`).
    pub fn new(max: usize) -> Arc<TaskWaiters> {
        Arc::new(TaskWaiters {
            max,
            registry: Mutex::default(),
        })
    }

    /// `MAX_WAITERS`.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Waiters held now.
    pub fn held(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves the map consistent (every
        // change is one insert or remove): keep using it.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a waiter on `task_id`; `None` when `max` waiters are held
    /// already. Dropping the guard unregisters it.
    pub fn register(self: &Arc<Self>, task_id: &str) -> Option<WaitGuard> {
        let mut registry = self.lock();
        if registry.total >= self.max {
            return None;
        }
        registry.total += 1;
        let entry = registry
            .tasks
            .entry(task_id.to_owned())
            .or_insert_with(|| Entry {
                notify: Arc::new(Notify::new()),
                holders: 0,
            });
        entry.holders += 1;
        let notify = entry.notify.clone();
        metrics::gauge!("task_waiters").set(registry.total as f64);
        Some(WaitGuard {
            waiters: self.clone(),
            task_id: task_id.to_owned(),
            notify,
        })
    }

    /// Wakes every waiter of `task_id` (nothing when there is none).
    pub fn notify(&self, task_id: &str) {
        if let Some(entry) = self.lock().tasks.get(task_id) {
            entry.notify.notify_waiters();
        }
    }

    /// Wakes every waiter of every task: changes may have been missed (the
    /// cross-replica listener reconnected).
    pub fn notify_all(&self) {
        for entry in self.lock().tasks.values() {
            entry.notify.notify_waiters();
        }
    }

    /// Wakes the waiters of each task id `changes` yields (the ids of tasks
    /// other processes changed), and every waiter on `None` (the listener
    /// reconnected: changes may have been missed), until `token` is
    /// cancelled or the stream ends.
    pub async fn follow(
        self: Arc<Self>,
        mut changes: futures_util::stream::BoxStream<'static, Option<String>>,
        token: tokio_util::sync::CancellationToken,
    ) {
        use futures_util::StreamExt as _;
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                next = changes.next() => match next {
                    Some(Some(task_id)) => self.notify(&task_id),
                    Some(None) => self.notify_all(),
                    None => return,
                },
            }
        }
    }

    fn release(&self, task_id: &str) {
        let mut registry = self.lock();
        registry.total = registry.total.saturating_sub(1);
        if let Some(entry) = registry.tasks.get_mut(task_id) {
            entry.holders = entry.holders.saturating_sub(1);
            if entry.holders == 0 {
                registry.tasks.remove(task_id);
            }
        }
        metrics::gauge!("task_waiters").set(registry.total as f64);
    }
}

/// A registered waiter; unregisters on drop.
pub struct WaitGuard {
    waiters: Arc<TaskWaiters>,
    task_id: String,
    notify: Arc<Notify>,
}

impl WaitGuard {
    /// What [`TaskWaiters::notify`] wakes. Create and `enable` a
    /// `notified()` future *before* reading the task, so a change between
    /// the read and the wait is not missed.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.waiters.release(&self.task_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_wakes_its_tasks_waiters_only() {
        let waiters = TaskWaiters::new(10);
        let a = waiters.register("a").expect("room");
        let b = waiters.register("b").expect("room");
        let mut wake_a = std::pin::pin!(a.notify().notified());
        wake_a.as_mut().enable();
        let mut wake_b = std::pin::pin!(b.notify().notified());
        wake_b.as_mut().enable();
        waiters.notify("a");
        wake_a.await;
        // b was not woken: a poll finds it pending.
        assert!(futures_util::FutureExt::now_or_never(wake_b.as_mut()).is_none());
        waiters.notify_all();
        wake_b.await;
    }

    #[test]
    fn the_cap_refuses_and_dropping_gives_room_back() {
        let waiters = TaskWaiters::new(2);
        let one = waiters.register("a").expect("room");
        let two = waiters.register("a").expect("room");
        assert!(waiters.register("b").is_none());
        assert_eq!(waiters.held(), 2);
        drop(one);
        assert_eq!(waiters.held(), 1);
        let three = waiters.register("b").expect("room again");
        drop((two, three));
        assert_eq!(waiters.held(), 0);
        assert!(waiters.lock().tasks.is_empty());
    }
}
