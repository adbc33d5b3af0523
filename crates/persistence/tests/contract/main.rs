//! The repository contract, run against every backend: each test gets a fresh
//! database from `modelgen_persistence::testing` (a new SQLite file, or a new
//! PostgreSQL or MySQL/MariaDB database dropped afterwards). Server tests fail
//! when the server is unreachable unless `MODELGEN_SKIP_PG=1` /
//! `MODELGEN_SKIP_MYSQL=1`.

#![expect(clippy::unwrap_used, reason = "a panic is how a test fails")]

mod blob;
mod callbacks;
mod claims;
mod connect;
mod events;
mod fair_queue_migration;
mod fairness;
mod image_migration;
mod import;
mod mysql;
mod properties;
mod retention;
mod sqlite_writer;
mod submitted_at_migration;
mod support;
mod tasks;
mod timeouts;

/// Declares each listed `async fn(Database)` case once per backend, as
/// `sqlite::<case>`, `postgres::<case>` and `mysql::<case>`.
macro_rules! contract_tests {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::support::run(modelgen_persistence::Backend::Sqlite, crate::$module::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::support::run(modelgen_persistence::Backend::Postgres, crate::$module::$case).await;
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::support::run(modelgen_persistence::Backend::Mysql, crate::$module::$case).await;
                }
            )*
        }
    };
}

contract_tests!(
    tasks::insert_get_and_list_with_filters_and_cursor,
    tasks::callback_url_round_trips_and_terminal_changes_are_announced,
    tasks::insert_is_idempotent_per_user_and_request_id,
    tasks::concurrent_inserts_of_one_request_id_make_one_row,
    tasks::reused_task_id_is_a_conflict,
    tasks::state_machine_is_enforced_and_nothing_is_written_on_refusal,
    tasks::completion_writes_images_and_one_outbox_row,
    tasks::unfenced_cancel_of_a_terminal_task_is_already_terminal,
    tasks::updated_at_strictly_increases_and_completed_at_is_set,
    tasks::bookkeeping_fields_are_applied,
    tasks::migrations_are_idempotent,
    tasks::concurrent_updates_do_not_lose_writes,
    tasks::retry_puts_only_failed_tasks_back_to_submitted,
    tasks::queue_stats_and_positions_follow_submissions,
    tasks::keyset_pages_over_60_tasks_of_one_millisecond_return_each_once,
    tasks::text_and_timestamps_round_trip_exactly,
    claims::concurrent_claimers_get_disjoint_tasks,
    claims::claims_respect_due_time_limit_order_and_leave_updated_at,
    claims::expired_lease_is_reclaimed_and_the_stale_owner_is_fenced_out,
    claims::leases_renew_and_release,
    claims::tasks_running_upstream_are_claimed_before_new_submits,
    fairness::a_late_user_is_served_in_the_next_batch,
    fairness::backlogs_of_several_users_interleave,
    fairness::polls_come_first_and_submits_keep_their_share,
    fairness::the_rank_follows_the_tasks_life,
    fairness::positions_follow_the_fair_order,
    fairness::imported_tasks_join_the_queue_only_when_resumed,
    fairness::a_queued_task_without_a_rank_is_still_claimed,
    fairness::concurrent_claimers_drain_both_lanes_without_loss,
    fairness::queue_queries_are_served_by_the_new_indexes,
    callbacks::callback_lifecycle_claim_retry_dead_redeliver_deliver,
    callbacks::concurrent_callback_claimers_get_disjoint_rows,
    callbacks::redeliver_all_dead_and_not_found,
    retention::input_purge_claims_take_ended_unprocessed_tasks_oldest_first,
    retention::concurrent_input_purge_claims_are_disjoint,
    retention::marking_inputs_purged_is_fenced_by_the_claim,
    retention::retry_is_refused_once_uploaded_inputs_are_deleted,
    retention::erasure_blanks_personal_data_keeps_accounting_and_is_idempotent,
    import::import_upsert_creates_then_updates_only_what_changed,
    import::import_never_touches_tasks_modelgen_made_or_erased,
    import::imported_unfinished_tasks_are_parked_or_resumed_by_polling,
    import::imported_edit_and_outfit_keep_links_angles_and_stored_images,
    events::every_change_appends_its_entries_in_the_same_transaction,
    events::a_retry_is_on_the_timeline_and_long_messages_are_cut,
    events::old_entries_are_purged_oldest_first_in_batches,
    events::cost_is_stored_and_summed_by_day_and_type,
    events::failed_tasks_are_listed_by_error_code_and_end_time,
);
