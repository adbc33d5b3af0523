//! The diesel schema shared by both backends (migrations in `migrations/<backend>/`).
//!
//! Only SQL types both SQLite and PostgreSQL map the same way are used: `Text`,
//! `Integer`, `BigInt`, `Timestamp` (naive UTC) and `Nullable`.

diesel::table! {
    /// One generation task; see `migrations/*/…_init/up.sql`.
    ai_generation_task (task_id) {
        task_id -> Text,
        request_id -> Nullable<Text>,
        user_id -> Text,
        task_type -> Text,
        base_model_task_id -> Nullable<Text>,
        angle -> Nullable<Text>,
        size -> Text,
        prompt -> Text,
        model -> Text,
        input_images -> Text,
        request_fingerprint -> Nullable<Text>,
        external_task_id -> Nullable<Text>,
        status -> Text,
        progress -> Integer,
        error_code -> Nullable<Integer>,
        error_message -> Nullable<Text>,
        submit_attempts -> Integer,
        poll_count -> Integer,
        next_run_at -> Timestamp,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        completed_at -> Nullable<Timestamp>,
        started_at -> Nullable<Timestamp>,
        inputs_purged_at -> Nullable<Timestamp>,
        purged_at -> Nullable<Timestamp>,
        submitted_at -> Nullable<Timestamp>,
        queue_rank -> Nullable<BigInt>,
        cost_micros -> Nullable<BigInt>,
        retries -> Integer,
        callback_url -> Nullable<Text>,
    }
}

diesel::table! {
    /// One result image of a task: exactly one of `storage_key` (in our blob
    /// store; its URL is rendered when read) and `remote_url` (an image served
    /// elsewhere, e.g. imported) is set; see `migrations/*/…_image_location`.
    ai_generation_image (id) {
        id -> BigInt,
        task_id -> Text,
        angle -> Nullable<Text>,
        storage_key -> Nullable<Text>,
        remote_url -> Nullable<Text>,
        image_base64 -> Nullable<Text>,
        mime -> Nullable<Text>,
        width -> Nullable<Integer>,
        height -> Nullable<Integer>,
        bytes -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// The callback outbox: one row per (task, terminal event).
    callback_delivery (event_id) {
        event_id -> Text,
        task_id -> Text,
        event_type -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_error -> Nullable<Text>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
        run -> Integer,
    }
}

diesel::table! {
    /// The task timeline: append-only, one row per thing that happened to a
    /// task, written in the transaction of the change it describes; see
    /// `migrations/*/…_task_events`.
    task_events (seq) {
        seq -> BigInt,
        task_id -> Text,
        at -> Timestamp,
        kind -> Text,
        replica -> Nullable<Text>,
        attempt -> Nullable<Integer>,
        upstream_task_id -> Nullable<Text>,
        upstream_status -> Nullable<Text>,
        progress -> Nullable<Integer>,
        http_status -> Nullable<Integer>,
        latency_ms -> Nullable<BigInt>,
        error_code -> Nullable<Integer>,
        message -> Nullable<Text>,
    }
}

diesel::joinable!(ai_generation_image -> ai_generation_task (task_id));
diesel::joinable!(callback_delivery -> ai_generation_task (task_id));

diesel::allow_tables_to_appear_in_same_query!(
    ai_generation_task,
    ai_generation_image,
    callback_delivery,
    task_events,
);
