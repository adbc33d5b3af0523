#![doc = include_str!("../README.md")]

mod client;
mod config;
mod error;
mod model;
mod parse;
#[cfg(test)]
mod parse_fuzz;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod policy;
mod retry;
mod text;

pub use client::{ApimartClient, MAX_IDEMPOTENCY_KEY_LEN, MAX_TASK_ID_LEN};
pub use config::{ApiKey, ApimartConfig, CallObserver, Endpoint};
pub use error::{ApimartError, MAX_KEPT_BODY_BYTES, MAX_PLAIN_MESSAGE_CHARS};
pub use model::{
    Balance, GenerationRequest, ResultImage, SubmitResponse, TaskStatusResponse, UpstreamStatus,
    UpstreamTaskError,
};
pub use policy::{RetryPolicy, backoff_delay};
