//! Fair per-user queueing and the two lanes of a claim, as pure functions.
//!
//! **The fair order.** Every task waiting to be submitted upstream carries a
//! `queue_rank` (start-time fair queueing over users, a per-user virtual
//! time). A new task of a user gets [`queue_rank`]`(head, user_last)`: the
//! queue's current head rank when the user has nothing queued, else one past
//! the user's last queued rank (never below the head). Submits are claimed in
//! `(queue_rank, next_run_at, task_id)` order. So a user who queues 10 000
//! tasks gets consecutive ranks, and another user's single task, arriving
//! later, gets the head's rank and goes out in the next claim batch; several
//! users with backlogs take turns, one task each per rank.
//!
//! **The lanes.** A claim serves two lanes: polls (tasks already running
//! upstream, or with no rank) and submits (ranked tasks). Polls come first,
//! but submits keep a guaranteed share of every batch ([`split_claim`]).
//!
//! The repository (`db/tasks.rs`) reads `head` and `user_last` with two index
//! lookups inside the insert's (or retry's) write transaction and applies
//! these functions; see docs/design.md, "Fair queueing and claims".

/// The rank of a task joining the queue.
///
/// - `head`: the smallest `queue_rank` in the queue, `None` when it is empty
///   (taken as 0);
/// - `user_last`: the largest `queue_rank` among the same user's queued
///   tasks, `None` when the user has none queued.
///
/// Returns `max(head, user_last + 1)`, or `head` when the user has nothing
/// queued. Saturates at `i64::MAX` (never reached: a rank grows by one per
/// task).
pub fn queue_rank(head: Option<i64>, user_last: Option<i64>) -> i64 {
    let head = head.unwrap_or(0);
    match user_last {
        Some(last) => head.max(last.saturating_add(1)),
        None => head,
    }
}

/// The share of a claim batch of `limit` slots that submits are guaranteed
/// when tasks are queued: a quarter, rounded up (`limit = 1` keeps its slot
/// for polls, which come first).
pub fn submit_share(limit: usize) -> usize {
    if limit < 2 { 0 } else { limit.div_ceil(4) }
}

/// How many of a claim batch of `limit` slots go to each lane, given how many
/// due tasks each lane has (`polls_available`, `submits_available`; each may
/// be counted only up to `limit`). Returns `(polls, submits)`.
///
/// Submits first get up to their guaranteed [`submit_share`]; polls take what
/// they can of the rest; any slot polls leave unused goes to submits. So:
/// - `polls + submits <= limit`, each at most what its lane has;
/// - every slot is used while either lane has work left;
/// - with `limit >= 2` and work in both lanes, each lane gets at least one slot
///   (submits at least a quarter of `limit`, polls at least three quarters of
///   it, rounded down, whenever they have that much).
pub fn split_claim(
    limit: usize,
    polls_available: usize,
    submits_available: usize,
) -> (usize, usize) {
    let reserved = submits_available.min(submit_share(limit));
    let polls = polls_available.min(limit - reserved);
    let submits = submits_available.min(limit - polls);
    (polls, submits)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ranks_follow_the_rule() {
        assert_eq!(queue_rank(None, None), 0, "empty queue");
        assert_eq!(queue_rank(Some(500), None), 500, "a newcomer gets the head");
        assert_eq!(
            queue_rank(Some(500), Some(9_999)),
            10_000,
            "after its own last"
        );
        assert_eq!(
            queue_rank(Some(500), Some(100)),
            500,
            "never behind the head"
        );
        assert_eq!(queue_rank(Some(0), Some(i64::MAX)), i64::MAX);
    }

    #[test]
    fn split_serves_polls_first_and_keeps_a_quarter_for_submits() {
        assert_eq!(split_claim(32, 100, 100), (24, 8));
        assert_eq!(
            split_claim(32, 5, 100),
            (5, 27),
            "unused poll slots go to submits"
        );
        assert_eq!(
            split_claim(32, 100, 3),
            (29, 3),
            "unused submit slots go to polls"
        );
        assert_eq!(split_claim(32, 100, 0), (32, 0));
        assert_eq!(split_claim(32, 0, 0), (0, 0));
        assert_eq!(split_claim(2, 5, 5), (1, 1));
        assert_eq!(split_claim(1, 5, 5), (1, 0), "one slot: polls first");
        assert_eq!(split_claim(1, 0, 5), (0, 1));
        assert_eq!(split_claim(0, 5, 5), (0, 0));
    }

    /// A model of the queue: tasks `(rank, arrival, user)`; the head is the
    /// smallest rank, and a claim takes the first `batch` in rank order.
    #[derive(Default)]
    struct Queue {
        tasks: Vec<(i64, u64, u8)>,
        arrivals: u64,
    }

    impl Queue {
        fn head(&self) -> Option<i64> {
            self.tasks.iter().map(|t| t.0).min()
        }
        fn last_of(&self, user: u8) -> Option<i64> {
            self.tasks.iter().filter(|t| t.2 == user).map(|t| t.0).max()
        }
        fn push(&mut self, user: u8) -> i64 {
            let rank = queue_rank(self.head(), self.last_of(user));
            self.arrivals += 1;
            self.tasks.push((rank, self.arrivals, user));
            rank
        }
        fn claim(&mut self, batch: usize) -> Vec<(i64, u64, u8)> {
            self.tasks.sort_unstable();
            let n = batch.min(self.tasks.len());
            self.tasks.drain(..n).collect()
        }
    }

    /// A sequence of pushes (a user id) and claims (`None`, batch of 4).
    fn steps() -> impl Strategy<Value = Vec<Option<u8>>> {
        prop::collection::vec(prop::option::weighted(0.8, 0u8..5), 1..300)
    }

    proptest! {
        #[test]
        fn a_user_with_nothing_queued_joins_at_the_head(steps in steps()) {
            let mut queue = Queue::default();
            for step in steps {
                match step {
                    Some(user) => {
                        let last = queue.last_of(user);
                        let head = queue.head().unwrap_or(0);
                        let rank = queue.push(user);
                        match last {
                            // Nothing queued: not one rank behind the head.
                            None => prop_assert_eq!(rank, head),
                            // Right after its own last task, or at the head.
                            Some(last) => prop_assert_eq!(rank, head.max(last + 1)),
                        }
                        prop_assert!(rank >= head);
                    }
                    None => {
                        queue.claim(4);
                    }
                }
            }
        }

        #[test]
        fn per_user_order_is_fifo(steps in steps()) {
            let mut queue = Queue::default();
            let mut claimed: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
            for step in steps {
                match step {
                    Some(user) => {
                        queue.push(user);
                    }
                    None => {
                        for (_, arrival, user) in queue.claim(4) {
                            claimed.entry(user).or_default().push(arrival);
                        }
                    }
                }
            }
            for (_, arrival, user) in queue.claim(usize::MAX) {
                claimed.entry(user).or_default().push(arrival);
            }
            for (user, arrivals) in claimed {
                let mut sorted = arrivals.clone();
                sorted.sort_unstable();
                prop_assert_eq!(arrivals, sorted, "user {} out of order", user);
            }
        }

        #[test]
        fn a_late_single_task_waits_at_most_one_turn_per_queued_user(
            backlog in 1usize..400,
            others in 0u8..4,
        ) {
            // User 0 queues `backlog` tasks, users 1..=others one each, then
            // user 9 one task: at most one task per user is ahead of it.
            let mut queue = Queue::default();
            for _ in 0..backlog {
                queue.push(0);
            }
            for user in 1..=others {
                queue.push(user);
            }
            let rank = queue.push(9);
            queue.tasks.sort_unstable();
            let position = queue.tasks.iter().position(|t| t.2 == 9).unwrap_or(usize::MAX);
            prop_assert_eq!(rank, 0);
            prop_assert!(position <= usize::from(others) + 1, "position {}", position);
        }

        #[test]
        fn split_never_exceeds_never_starves_and_uses_every_slot(
            limit in 0usize..200,
            polls in 0usize..300,
            submits in 0usize..300,
        ) {
            let (p, s) = split_claim(limit, polls, submits);
            prop_assert!(p + s <= limit);
            prop_assert!(p <= polls && s <= submits);
            prop_assert_eq!(p + s, limit.min(polls + submits), "every slot used while work exists");
            if limit >= 2 && polls > 0 && submits > 0 {
                prop_assert!(p >= 1 && s >= 1, "a lane starved: {:?}", (p, s));
                prop_assert!(s >= submits.min(limit.div_ceil(4)), "submit share");
                prop_assert!(p >= polls.min(limit - limit.div_ceil(4)), "polls first");
            }
        }
    }
}
