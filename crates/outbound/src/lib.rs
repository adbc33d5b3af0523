//! Outbound fetches that cannot be turned against the network they run in (server-side
//! request forgery): the service downloads URLs that others name (a result image URL
//! reported by the upstream), and such a URL, or a redirect it answers with, may point at
//! a cloud metadata service, a database on the private network or the service itself.
//!
//! - [`policy`]: what is refused ([`classify`]), the operator's exceptions
//!   ([`Allowlist`], `OUTBOUND_ALLOWLIST`), and the decision ([`OutboundPolicy`]). Pure;
//!   `modelgen-domain` judges input URLs with the same [`classify`].
//! - `fetch` (feature `fetch`, on by default): the one [`Fetcher`] that applies the policy
//!   to every hop of a download, pinned to the checked addresses.
//!
//! docs/outbound.md says what is refused and why.

pub mod policy;

#[cfg(feature = "fetch")]
mod fetch;

#[cfg(feature = "fetch")]
pub use fetch::{
    DEFAULT_MAX_REDIRECTS, FetchError, Fetcher, FetcherConfig, Pinned, Refusal, Resolve,
    SystemResolver,
};
pub use policy::{Allowlist, AllowlistError, Forbidden, OutboundPolicy, RefusedAddress, classify};
