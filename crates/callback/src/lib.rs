//! Callbacks to the Java backend (the modelgen README, "Callbacks").
//!
//! - [`CallbackPayload`]: the JSON body sent when a task reaches a terminal state.
//! - [`sign`] / [`verify`]: Standard Webhooks HMAC-SHA256 signatures
//!   (<https://www.standardwebhooks.com/>); `verify` is what a receiver does.
//! - [`CallbackSender`]: one delivery attempt, the seam the outbox worker calls;
//!   [`HttpCallbackSender`] implements it with reqwest, `MockCallbackSender` (feature
//!   `mock`) mocks it.
//! - [`next_attempt_delay`] / [`attempts_for_horizon`]: the durable retry schedule.
//!
//! The crate never retries by itself: retries are the outbox's job, so they survive a
//! restart. See README.md for the wire format and a Java verifier.

pub mod backoff;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod payload;
pub mod sender;
pub mod signing;

pub use backoff::{attempt_ceiling, attempts_for_horizon, next_attempt_delay};
pub use payload::{CallbackImage, CallbackPayload, format_timestamp};
#[cfg(feature = "mock")]
pub use sender::MockCallbackSender;
pub use sender::{
    CallbackRequest, CallbackSender, DEFAULT_TIMEOUT, DEFAULT_USER_AGENT, DeliveryResult,
    HttpCallbackSender, MAX_BODY_EXCERPT_CHARS, SenderConfig, SenderError, parse_retry_after,
};
pub use signing::{
    DEFAULT_TOLERANCE_S, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP,
    SecretError, SigningSecret, VerifyError, sign, verify,
};

/// Compiles the Rust examples of README.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
