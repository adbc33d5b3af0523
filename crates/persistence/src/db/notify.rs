//! Cross-process wake-ups for new tasks. On PostgreSQL a created task is
//! announced with `NOTIFY modelgen_tasks` inside its create's transaction
//! (`postgres::announce_task_created`), and [`Database::task_notifications`]
//! follows the channel on a dedicated `LISTEN` connection, so a worker in any
//! process sharing the database claims a new task at once instead of at its
//! next idle interval. SQLite and MySQL have no such channel: their workers
//! rely on the in-process wake-up and the idle interval.
//!
//! A task that reaches a terminal state is announced on a second channel,
//! `NOTIFY modelgen_task_changes, '<task id>'`, which
//! [`Database::task_change_notifications`] follows, so a request waiting for
//! that task (`GET /tasks/{id}?wait=N`) on any replica is woken.

use std::time::Duration;

use diesel_async::RunQueryDsl as _;
use futures_util::stream::BoxStream;

use super::{Backend, Database};

/// The PostgreSQL channel announcing created tasks (no payload).
pub(crate) const TASKS_CHANNEL: &str = "modelgen_tasks";

/// The PostgreSQL channel announcing tasks that reached a terminal state;
/// the payload is the task id.
pub(crate) const TASK_CHANGES_CHANNEL: &str = "modelgen_task_changes";

/// Longest wait between attempts to (re)open the `LISTEN` connection.
#[cfg(feature = "postgres")]
const MAX_RELISTEN_DELAY: Duration = Duration::from_secs(30);

impl Database {
    /// Announces a task that reached a terminal state to every process
    /// (PostgreSQL `NOTIFY modelgen_task_changes, '<task id>'`; nothing on
    /// other backends). Best effort: a failure is logged; a waiter still
    /// reads the task when its wait ends.
    pub(crate) async fn announce_task_changed(&self, task_id: &str) {
        if self.backend() != Backend::Postgres {
            return;
        }
        if let Err(e) = self.notify_task_changes_channel(task_id).await {
            tracing::warn!(error = %e, task.id = task_id, "could not announce a task change to other processes");
        }
    }

    async fn notify_task_changes_channel(
        &self,
        task_id: &str,
    ) -> Result<(), crate::error::RepoError> {
        with_conn!(self, |conn| {
            diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<diesel::sql_types::Text, _>(TASK_CHANGES_CHANNEL)
                .bind::<diesel::sql_types::Text, _>(task_id)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// A stream of the ids of tasks that reached a terminal state in any
    /// process on this database (PostgreSQL, [`TASK_CHANGES_CHANNEL`]); it
    /// yields `None` after each (re)connection of its listener, when changes
    /// may have been missed. One connection of its own, reopened with
    /// backoff like [`Database::task_notifications`]. `None` on SQLite and
    /// MySQL.
    pub fn task_change_notifications(&self) -> Option<BoxStream<'static, Option<String>>> {
        #[cfg(feature = "postgres")]
        if self.backend() == Backend::Postgres {
            return Some(listen_postgres(self.target.clone(), TASK_CHANGES_CHANNEL));
        }
        None
    }

    /// A stream that yields once for every task created by any process on
    /// this database, and once after each (re)connection of its listener
    /// (announcements may have been missed meanwhile); it never ends. On
    /// PostgreSQL it holds one connection of its own (outside the pool)
    /// listening on [`TASKS_CHANNEL`], reopened with backoff (at most 30 s)
    /// when it breaks. `None` on SQLite and MySQL, which have no such channel.
    pub fn task_notifications(&self) -> Option<BoxStream<'static, ()>> {
        #[cfg(feature = "postgres")]
        if self.backend() == Backend::Postgres {
            use futures_util::StreamExt as _;
            return Some(
                listen_postgres(self.target.clone(), TASKS_CHANNEL)
                    .map(|_| ())
                    .boxed(),
            );
        }
        None
    }
}

/// Follows `channel`: `None` after each (re)connection, then each
/// notification's payload.
#[cfg(feature = "postgres")]
fn listen_postgres(url: String, channel: &'static str) -> BoxStream<'static, Option<String>> {
    use diesel_async::{AsyncConnection as _, AsyncPgConnection};
    use futures_util::StreamExt as _;

    struct State {
        url: String,
        channel: &'static str,
        conn: Option<AsyncPgConnection>,
        failures: u32,
    }

    async fn open(url: &str, channel: &str) -> Result<AsyncPgConnection, String> {
        let mut conn = AsyncPgConnection::establish(url)
            .await
            .map_err(|e| e.to_string())?;
        diesel::sql_query(format!("LISTEN {channel}"))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(conn)
    }

    let state = State {
        url,
        channel,
        conn: None,
        failures: 0,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            match state.conn.as_mut() {
                None => match open(&state.url, state.channel).await {
                    Ok(conn) => {
                        tracing::debug!(channel = state.channel, "listening");
                        state.conn = Some(conn);
                        state.failures = 0;
                        return Some((None, state));
                    }
                    Err(error) => {
                        let wait = modelgen_domain::backoff_delay(
                            state.failures,
                            Duration::from_millis(500),
                            MAX_RELISTEN_DELAY,
                        );
                        tracing::warn!(%error, channel = state.channel,
                            retry_in_ms = wait.as_millis() as u64, "could not listen; retrying");
                        state.failures = state.failures.saturating_add(1);
                        tokio::time::sleep(wait).await;
                    }
                },
                Some(conn) => {
                    let next = {
                        let mut notifications = std::pin::pin!(conn.notifications_stream());
                        notifications.next().await
                    };
                    match next {
                        Some(Ok(n)) => return Some((Some(n.payload), state)),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, channel = state.channel,
                                "the listener broke; reopening it");
                            state.conn = None;
                        }
                        None => {
                            tracing::warn!(
                                channel = state.channel,
                                "the listener closed; reopening it"
                            );
                            state.conn = None;
                        }
                    }
                }
            }
        }
    })
    .boxed()
}
