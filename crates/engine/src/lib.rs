//! The modelgen task engine.
//!
//! Leased workers claim due tasks from the database, submit them to Apimart,
//! poll them, download and store their results, and deliver the callbacks of
//! the outbox; every write is fenced by the worker's lease (docs/design.md,
//! "Leases and fencing"). The engine meets the rest of the service through
//! traits only: the repositories and the blob store of `modelgen-persistence`,
//! the [`ports::ImageGenerator`] (Apimart), the [`ports::ImageFetcher`] (result
//! downloads), the [`ports::Clock`] and `modelgen-callback`'s sender. It has no
//! HTTP server, no CLI and no configuration loading: the `modelgen` binary
//! (`crates/api`) builds an [`Engine`] from its configuration and runs it.
//!
//! Modules:
//! - [`engine`]: the task and callback workers ([`Engine`], [`EngineSettings`]);
//! - [`outcome`]: what a step decided ([`outcome::StepOutcome`]) and the
//!   writes that record it;
//! - [`decide`]: the pure decisions (upstream error policy, poll delays,
//!   step timeout);
//! - [`pacing`]: the shared upstream request pacing ([`pacing::PacedGenerator`]);
//! - [`health`]: the loops' heartbeat and the upstream account's health;
//! - [`alerts`]: rate-limited operator alerts;
//! - [`ports`]: the seams that are not storage;
//! - [`timeline`]: what a step saw upstream, and the timeline entries that record it;
//! - [`waiters`]: requests waiting for a task to change, woken by its changes.

pub mod alerts;
pub mod decide;
pub mod engine;
pub mod health;
pub mod outcome;
pub mod pacing;
pub mod ports;
pub mod timeline;
pub mod waiters;

pub use engine::{Engine, EngineSettings, TimedOut, timed_out};

/// `error_code` of a task failed by the upstream or by the engine on its
/// behalf (an upstream error, a timeout, a result that could not be stored):
/// the earlier service's code for generation failures, kept.
pub const CODE_UPSTREAM: i32 = 1002;

/// The URL a client gets for `image`, rendered now from the store's URL mode:
/// a stored image's key through [`BlobStore::url`](modelgen_persistence::BlobStore::url),
/// a remote image's own URL.
///
/// # Errors
/// When the store cannot render the URL (e.g. presigning credentials unavailable).
pub async fn image_url(
    blobs: &dyn modelgen_persistence::BlobStore,
    image: &modelgen_persistence::ImageRecord,
) -> Result<String, modelgen_persistence::BlobError> {
    match &image.location {
        modelgen_persistence::ImageLocation::Stored(key) => blobs.url(key).await,
        modelgen_persistence::ImageLocation::Remote(url) => Ok(url.clone()),
    }
}
