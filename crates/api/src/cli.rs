//! The `modelgen` command line.

use std::path::PathBuf;

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use modelgen_persistence::{CallbackOutbox, CallbackStatus, ImageRepository, TaskRepository};

use crate::admin::{Admin, CallbackView};
use crate::config::Config;
use crate::ports::SystemClock;
use crate::privacy::{Actor, Privacy};
use crate::service::task_view;
use crate::startup::{Application, Role, open_blob_store, open_database};
use crate::telemetry;

/// modelgen: digital-model image generation for e-commerce, over the Apimart API.
///
/// Configuration comes from built-in defaults, an optional TOML file
/// (--config), a .env file, then environment variables (see the README table).
/// Without APIMART_API_KEY the service uses its built-in Apimart simulator.
#[derive(Debug, Parser)]
#[command(name = "modelgen", version, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file; keys are the environment variable names in lower case.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the workers (the default).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Inspect tasks.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Inspect and redeliver callbacks (the outbox).
    #[command(subcommand)]
    Callbacks(CallbacksCommand),
    /// Check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Users' personal data.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Bring data over from another system.
    #[command(subcommand)]
    Import(ImportCommand),
}

/// `import …`.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import the earlier (Python) service's tasks and images from its
    /// MySQL/MariaDB database into this one (DATABASE_URL).
    ///
    /// Reads `base_model_task`, `edit_task`, `outfit_task` and
    /// `generation_image` (read only) and writes each task under its own
    /// task id, with its user, request id, type (`model` becomes `default`),
    /// base model, angle, status, progress, error and timestamps, and its
    /// images (kept at their URLs, or copied with --copy-images). Safe to run
    /// again: nothing is duplicated, rows changed in the source since are
    /// updated, and tasks modelgen has changed since are left alone.
    /// Unfinished tasks are imported as they are and not run, unless
    /// --resume-unfinished. Prints a JSON summary: what was created,
    /// updated, unchanged, skipped and why. See docs/legacy.md.
    Legacy(LegacyImportArgs),
}

/// What `migrate` prints: how many migrations it applied, and their names.
fn migrate_report(applied: &[String]) -> String {
    if applied.is_empty() {
        "applied 0 migrations: the database is up to date".to_owned()
    } else {
        format!(
            "applied {} migration(s): {}",
            applied.len(),
            applied.join(", ")
        )
    }
}

/// Exit status of `import legacy` when the import finished but some
/// `--copy-images` download failed (docs/legacy.md, "Exit status").
pub const IMPORT_COPY_FAILED: u8 = 3;

/// A command that did its work but not all of it: the binary exits with
/// `status` (not 1) after printing `message`.
#[derive(Debug)]
pub struct PartialFailure {
    /// The process exit status.
    pub status: u8,
    /// What was not done.
    pub message: String,
}

impl std::fmt::Display for PartialFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PartialFailure {}

/// Options of `import legacy`.
#[derive(Debug, Args)]
pub struct LegacyImportArgs {
    /// The earlier service's database: `mysql://user:password@host:3306/db`
    /// (also `mariadb://…` and its own `mysql+aiomysql://…?charset=utf8mb4`).
    /// Prefer the variable LEGACY_DATABASE_URL: a command line is visible to
    /// other users of the machine.
    #[arg(
        long,
        value_name = "URL",
        env = "LEGACY_DATABASE_URL",
        hide_env_values = true
    )]
    pub from: String,
    /// Time zone of the earlier database server's clock, in which its
    /// `created_at` columns were written (`NOW()`): `UTC`, an offset like
    /// `+08:00`, or an IANA name like `Asia/Shanghai`.
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub source_timezone: crate::import::SourceZone,
    /// Time zone of `updated_at` and `completed_at`, which the earlier
    /// service's code wrote from Python's UTC clock; change it only if its
    /// code was changed to write local time.
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub app_timezone: crate::import::SourceZone,
    /// Copy each image into modelgen's storage (STORAGE_URL) instead of
    /// keeping its URL (for when the earlier bucket goes away). Downloads
    /// reach public addresses and OUTBOUND_ALLOWLIST only. Images held only
    /// inline (base64) in the source are always stored.
    #[arg(long)]
    pub copy_images: bool,
    /// Read everything and print what would be done; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Let the workers resume unfinished tasks that kept their Apimart task
    /// id (`apimart_task_id`): they poll it, never submit again. Without
    /// this flag unfinished tasks are imported as they are and not run.
    #[arg(long)]
    pub resume_unfinished: bool,
}

/// `users …`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Erase a user's data: cancel their running tasks, delete their input
    /// and result images (storage and image rows), blank their prompts and
    /// body profiles. Ids, types, statuses, timestamps and counters stay for
    /// accounting. Idempotent; prints what was deleted as JSON.
    Purge {
        /// The user id, as sent on task creation.
        user_id: String,
        /// Change nothing; print what would be cancelled and deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Options of `serve`.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Serve the HTTP API only; run no workers.
    #[arg(long, conflicts_with = "workers_only")]
    pub api_only: bool,
    /// Run the workers only; HOST:PORT serves only /healthz, /readyz and /metrics.
    #[arg(long)]
    pub workers_only: bool,
}

/// `tasks …`.
#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Print a task, its images and its callbacks as JSON.
    Show {
        /// Task id: `task_…`, or any imported id (1–128 URL-safe ASCII characters).
        task_id: String,
    },
    /// Put a failed task back to `submitted` so the workers run it again
    /// (fresh upstream submit, timeout counted from now, a new callback of
    /// type `task.retry_<status>` when it ends; the earlier callback's record
    /// is kept). With --failed instead of an id: every failed task the
    /// filters match (at most 1000 a run), e.g. after an outage:
    /// `tasks retry --failed --since 2026-12-01T09:00:00Z --error-code 1002 --dry-run`.
    /// Prints a JSON report (matched, retried, skipped and why).
    Retry {
        /// Task id: `task_…`, or any imported id (1–128 URL-safe ASCII characters).
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        task_id: Option<String>,
        /// Retry failed tasks by filter rather than one task by id.
        #[arg(long)]
        failed: bool,
        /// Only tasks that failed at or after this instant (RFC 3339).
        #[arg(long, requires = "failed")]
        since: Option<String>,
        /// Only tasks that failed before this instant (RFC 3339).
        #[arg(long, requires = "failed")]
        until: Option<String>,
        /// Only tasks failed with this error code (e.g. 1002).
        #[arg(long, requires = "failed")]
        error_code: Option<i32>,
        /// Only this user's tasks.
        #[arg(long, requires = "failed")]
        user: Option<String>,
        /// Say which tasks would be retried; change nothing.
        #[arg(long, requires = "failed")]
        dry_run: bool,
    },
    /// List tasks as JSON, newest first, with filters; `next_cursor` of the
    /// output continues the list (`--cursor`).
    List {
        /// Only this user's tasks.
        #[arg(long)]
        user: Option<String>,
        /// Only this status: submitted, processing, completed, failed, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only this type: default, edit, outfit.
        #[arg(long = "type")]
        task_type: Option<String>,
        /// Only tasks created at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only tasks created before this instant (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// At most this many (1–100).
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
}

/// `callbacks …`.
#[derive(Debug, Subcommand)]
pub enum CallbacksCommand {
    /// List deliveries, newest first.
    List {
        /// Only dead deliveries.
        #[arg(long)]
        dead: bool,
        /// Only this status: pending, delivered or dead.
        #[arg(long, conflicts_with = "dead")]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Put a delivery (or every dead one) back in the queue, same event id.
    Redeliver {
        /// Event id (`evt_…`).
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        event_id: Option<String>,
        /// Every dead delivery.
        #[arg(long)]
        all_dead: bool,
    },
}

/// `config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (secrets redacted) and every problem found.
    Check,
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    out(&serde_json::to_string_pretty(value)?)
}

/// Prints one line of a command's output on stdout. A reader that went away
/// (`modelgen callbacks list | head`) ends the output quietly, as in other
/// command-line tools, where the standard print macro would panic.
fn out(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// An API error as a command-line error: its message, and each bad field
/// with what is wrong with it (`--since: must be an RFC 3339 date-time`).
fn cli_error(e: crate::error::ApiError) -> anyhow::Error {
    match e {
        crate::error::ApiError::Invalid(fields) => anyhow::anyhow!(
            "invalid arguments: {}",
            fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => anyhow::anyhow!("{other}"),
    }
}

/// Runs the parsed command line.
///
/// # Errors
/// Whatever the command fails with; `main` prints it and exits non-zero.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    if let Command::Config(ConfigCommand::Check) = command {
        return config_check(cli.config.as_deref());
    }
    let config = Config::load(cli.config.as_deref())?;
    // The service logs to stdout; other commands print their result there,
    // so their logs (e.g. the purge's audit event) go to stderr.
    let output = if matches!(command, Command::Serve(_)) {
        telemetry::LogOutput::Stdout
    } else {
        telemetry::LogOutput::Stderr
    };
    telemetry::init_logging_to(config.log_format, output);
    match command {
        Command::Serve(args) => {
            let role = if args.api_only {
                Role::ApiOnly
            } else if args.workers_only {
                Role::WorkersOnly
            } else {
                Role::All
            };
            for note in crate::legacy::notes_from_env(&config) {
                tracing::warn!(
                    setting = note.name,
                    note = %note.message,
                    "setting of the earlier service"
                );
            }
            let app = Application::build(config, role).await?;
            tracing::info!(port = app.port(), "modelgen listening");
            app.run_until_stopped().await
        }
        Command::Migrate => {
            let db = open_database(&config).await?;
            let applied = db.migrate().await.context("running migrations")?;
            out(&migrate_report(&applied))
        }
        Command::Tasks(TasksCommand::Show { task_id }) => {
            let db = open_database(&config).await?;
            let id = task_id
                .parse()
                .map_err(|_| anyhow::anyhow!("{task_id} is not a task id"))?;
            let task = db
                .get_task(&id)
                .await
                .with_context(|| format!("task {task_id}"))?;
            let images = db.images_for_task(&id).await?;
            let blobs = open_blob_store(&config)?;
            let view = task_view(&*blobs, &task, &images, &[]).await?;
            let callbacks: Vec<CallbackView> = db
                .callbacks_for_task(&id)
                .await?
                .iter()
                .map(CallbackView::from)
                .collect();
            print_json(&serde_json::json!({
                "task": view,
                "external_task_id": task.external_task_id,
                "submit_attempts": task.submit_attempts,
                "poll_count": task.poll_count,
                "lease_owner": task.lease_owner,
                "inputs_purged_at": task.inputs_purged_at.map(modelgen_domain::format_timestamp),
                "purged_at": task.purged_at.map(modelgen_domain::format_timestamp),
                "callbacks": callbacks,
            }))
        }
        Command::Tasks(TasksCommand::Retry {
            task_id: None,
            since,
            until,
            error_code,
            user,
            dry_run,
            ..
        }) => {
            let db: std::sync::Arc<dyn TaskRepository> =
                std::sync::Arc::new(open_database(&config).await?);
            let filter = crate::timeline::RetryFilter {
                user_id: user,
                error_code,
                since,
                until,
                dry_run,
            };
            let query = crate::timeline::retry_query(&filter).map_err(cli_error)?;
            let report =
                crate::timeline::retry_failed(&db, query, dry_run, chrono::Utc::now()).await?;
            print_json(&report)
        }
        Command::Tasks(TasksCommand::List {
            user,
            status,
            task_type,
            since,
            until,
            limit,
            cursor,
        }) => {
            let db = open_database(&config).await?;
            let blobs = open_blob_store(&config)?;
            let filters = crate::service::ListFilters {
                user_id: user,
                status: status.as_deref(),
                task_type: task_type.as_deref(),
                limit: Some(limit),
                cursor: cursor.as_deref(),
                created: (since.as_deref(), until.as_deref()),
            };
            let page = crate::service::list_page(&db, &db, &*blobs, filters)
                .await
                .map_err(cli_error)?;
            print_json(&page)
        }
        Command::Tasks(TasksCommand::Retry {
            task_id: Some(task_id),
            ..
        }) => {
            let db = open_database(&config).await?;
            let id = task_id
                .parse()
                .map_err(|_| anyhow::anyhow!("{task_id} is not a task id"))?;
            let task = db
                .retry_task(&id, chrono::Utc::now())
                .await
                .with_context(|| format!("task {task_id}"))?;
            out(&format!(
                "task {} is {} again; the workers will pick it up",
                task.task_id, task.status
            ))
        }
        Command::Callbacks(cmd) => {
            let db = open_database(&config).await?;
            let admin = Admin {
                outbox: std::sync::Arc::new(db),
            };
            match cmd {
                CallbacksCommand::List {
                    dead,
                    status,
                    limit,
                } => {
                    let status = match (dead, status.as_deref()) {
                        (true, _) => Some(CallbackStatus::Dead),
                        (false, None) => None,
                        (false, Some(s)) => {
                            Some(crate::admin::parse_status(s).ok_or_else(|| {
                                anyhow::anyhow!("--status must be pending, delivered or dead")
                            })?)
                        }
                    };
                    print_json(&admin.list(status, limit).await?)
                }
                CallbacksCommand::Redeliver { event_id, all_dead } => {
                    if all_dead {
                        let n = admin.redeliver_all_dead().await?;
                        out(&format!("{n} dead callback(s) queued for redelivery"))?;
                    } else if let Some(id) = event_id {
                        let view = admin
                            .redeliver(&id)
                            .await
                            .with_context(|| format!("callback {id}"))?;
                        print_json(&view)?;
                    }
                    Ok(())
                }
            }
        }
        Command::Users(UsersCommand::Purge { user_id, dry_run }) => {
            let db = std::sync::Arc::new(open_database(&config).await?);
            let privacy = Privacy {
                tasks: db.clone(),
                images: db.clone(),
                retention: db.clone(),
                blobs: open_blob_store(&config)?,
                clock: std::sync::Arc::new(SystemClock),
                owner: format!("modelgen-cli-{}", std::process::id()),
                callbacks_enabled: config.callback_url.is_some(),
                events: db,
            };
            let report = privacy
                .purge_user(&user_id, dry_run, Actor::Cli)
                .await
                .context("users purge")?;
            print_json(&report)
        }
        Command::Import(ImportCommand::Legacy(args)) => {
            let db = std::sync::Arc::new(open_database(&config).await?);
            if args.dry_run {
                let pending = db.pending_migrations().await?;
                if !pending.is_empty() {
                    anyhow::bail!(
                        "the database (DATABASE_URL) has pending migrations ({}): run \
                         `modelgen migrate` first; a dry run writes nothing, migrations included",
                        pending.join(", ")
                    );
                }
            } else if config.auto_migrate {
                db.migrate().await.context("running migrations")?;
            }
            let target = crate::import::Target {
                tasks: db.clone(),
                images: db.clone(),
                import: db,
                blobs: open_blob_store(&config)?,
                fetcher: std::sync::Arc::new(crate::ports::HttpImageFetcher::new(
                    crate::import::FETCH_TIMEOUT,
                    modelgen_outbound::OutboundPolicy::new(
                        config
                            .outbound_allowlist()
                            .map_err(|e| anyhow::anyhow!("OUTBOUND_ALLOWLIST: {e}"))?,
                    ),
                )),
            };
            let options = crate::import::ImportOptions {
                from: args.from,
                zones: crate::import::Zones {
                    server: args.source_timezone,
                    app: args.app_timezone,
                },
                copy_images: args.copy_images,
                dry_run: args.dry_run,
                resume_unfinished: args.resume_unfinished,
                progress: true,
            };
            let summary = crate::import::run(&options, &target)
                .await
                .context("import legacy")?;
            print_json(&summary)?;
            if summary.copy_failed() {
                return Err(PartialFailure {
                    status: IMPORT_COPY_FAILED,
                    message: format!(
                        "{} image(s) could not be copied and kept their remote URL \
                         (copy_failures in the summary)",
                        summary.images.copy_failed
                    ),
                }
                .into());
            }
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => Ok(()),
    }
}

fn config_check(file: Option<&std::path::Path>) -> anyhow::Result<()> {
    match Config::load(file) {
        Ok(config) => {
            out(toml_like(&config)?.trim_end())?;
            if config.apimart_api_key.is_none() {
                out(&format!(
                    "# note: APIMART_API_KEY is not set; the built-in simulator will be used, \
                     with its state in {}",
                    config.sim_state_path().display()
                ))?;
            }
            if let Ok(allow) = config.outbound_allowlist() {
                out(&format!(
                    "# downloads: public addresses{}{} (docs/outbound.md)",
                    if allow.is_empty() {
                        String::new()
                    } else {
                        format!(", and {allow}")
                    },
                    if config.apimart_api_key.is_none() {
                        ", and the built-in simulator's own address"
                    } else {
                        ""
                    }
                ))?;
            }
            out(
                &match (config.max_queued_tasks, config.max_queued_tasks()) {
                    (_, None) => {
                        "# admission: no limit on queued tasks (MAX_QUEUED_TASKS = 0)".into()
                    }
                    (Some(_), Some(n)) => {
                        format!("# admission: creates answer 429 at {n} queued tasks")
                    }
                    (None, Some(n)) => format!(
                        "# admission: creates answer 429 at {n} queued tasks \
                     (default: QUEUE_TIMEOUT x min(20, UPSTREAM_MAX_RPS) / {})",
                        crate::admission::NOMINAL_REQUESTS_PER_TASK
                    ),
                },
            )?;
            let notes = crate::legacy::notes_from_env(&config);
            if !notes.is_empty() {
                out("# settings of the earlier service:")?;
                for note in notes {
                    out(&format!("# note: {}: {}", note.name, note.message))?;
                }
            }
            if let Ok(storage) = crate::storage::resolve(&config) {
                out(&format!("# storage: {}", storage.describe()))?;
                if let Ok(mode) = crate::storage::url_mode(&config, &storage, config.port) {
                    match mode {
                        modelgen_persistence::UrlMode::Public { base } => {
                            out(&format!("# image URLs: {base}/results/<task_id>/<n>.<ext>"))?;
                        }
                        modelgen_persistence::UrlMode::Presigned { expiry } => out(&format!(
                            "# image URLs: presigned, valid {} s from each read or callback attempt",
                            expiry.as_secs()
                        ))?,
                    }
                }
            }
            for (role, label) in [
                (Role::All, "serve"),
                (Role::WorkersOnly, "serve --workers-only"),
            ] {
                for warning in crate::storage::warnings(&config, role) {
                    out(&format!("# warning ({label}): {warning}"))?;
                }
            }
            out("configuration OK")
        }
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

fn toml_like(config: &Config) -> anyhow::Result<String> {
    let value = serde_json::to_value(config)?;
    let mut out = String::new();
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            out.push_str(&format!("{} = {}\n", k.to_uppercase(), v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_report_has_no_dangling_colon() {
        assert_eq!(
            migrate_report(&[]),
            "applied 0 migrations: the database is up to date"
        );
        assert_eq!(
            migrate_report(&["0001_init".to_owned(), "0002_x".to_owned()]),
            "applied 2 migration(s): 0001_init, 0002_x"
        );
    }
}
