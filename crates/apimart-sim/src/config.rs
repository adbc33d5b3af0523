//! Simulator behaviour: [`SimConfig`] (set at start or with `SimHandle::set_config`) and
//! [`ConfigPatch`], the partial JSON accepted by `POST /_sim/config`.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// Smallest accepted result-image long side, in pixels: below this the banner text is
/// unreadable and tiles collapse to nothing.
pub const MIN_IMAGE_LONG_SIDE: u32 = 16;
/// Largest accepted result-image long side, in pixels: 4096 px is Apimart's largest
/// documented resolution (`4K`, docs/apimart.md) and bounds the memory of one render (~50 MB).
pub const MAX_IMAGE_LONG_SIDE: u32 = 4096;
/// Longest task duration the simulator honours (7 days): keeps time arithmetic far from
/// overflow while allowing "practically never finishes" tests.
pub const MAX_TASK_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest result-URL validity the simulator honours (1 year), for the same reason.
pub const MAX_IMAGE_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Largest accepted cost per image or account balance, in balance units: far beyond any
/// real price, and small enough that sums in millionths (`u64`) never overflow.
pub const MAX_MONEY: f64 = 1e12;
/// Default cost of one result image, in balance units. An arbitrary round figure of the
/// simulator, not an Apimart price.
pub const DEFAULT_COST_PER_IMAGE: f64 = 0.05;
/// Default starting balance of the simulated account, in balance units: twenty million
/// images at the default cost, so no test or load run empties it by accident.
pub const DEFAULT_BALANCE: f64 = 1_000_000.0;
/// Credits per balance unit: `credits_cost` is `cost` times this, and `remain_credits` is
/// `remain_balance` times this. Apimart's own ratio is not documented (docs/apimart.md);
/// this is the simulator's choice.
pub const CREDITS_PER_UNIT: f64 = 10.0;

/// Which of the documented response shapes the simulator answers with
/// (docs/apimart.md: submit answers `data` as an array *or* an object; results carry `url` as
/// a string *or* an array of strings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapeMode {
    /// Submit: `data: [{"status":"submitted","task_id":…}]`; result: one `images[]` entry
    /// whose `url` is an array of `n` strings (the newer documented form).
    Array,
    /// Submit: `data: {"id":…,"object":"image.generation.task",…,"task_info":{…}}`;
    /// result: `n` `images[]` entries whose `url` is a plain string (the older form).
    Object,
    /// Per task, deterministic by creation order: task k uses the array submit shape when k is
    /// even, the array `url` form when k / 2 is even, and the legacy id form
    /// `task-unified-<unix>-<8 chars>` when k % 4 == 3, so any four consecutive tasks cover
    /// every combination.
    #[default]
    Alternate,
}

impl std::str::FromStr for ShapeMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "array" => Ok(Self::Array),
            "object" => Ok(Self::Object),
            "alternate" => Ok(Self::Alternate),
            _ => Err(ConfigError::UnknownShape(s.to_owned())),
        }
    }
}

/// How the simulator behaves. Cheap to clone; change it at runtime with
/// `SimHandle::set_config` or `POST /_sim/config`. Durations and TTLs apply to tasks
/// created after the change (each task keeps the values it was created with).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Time from submit to the terminal state (`completed`/`failed`). Default 3 s.
    pub task_duration: Duration,
    /// What submit and status report as `estimated_time` (whole seconds, rounded up).
    /// Default: equal to `task_duration`.
    pub estimated_time: Duration,
    /// Validity of a result URL after completion; afterwards the file answers 410.
    /// Default 24 h (docs/apimart.md: `expires_at` is 24 h in the documented examples).
    pub image_ttl: Duration,
    /// Fraction (0..=1) of API requests (submit and status) answered with a random
    /// 500/502/503/429 (429 with `Retry-After: 1`). Default 0.
    pub error_rate: f64,
    /// Fraction (0..=1) of created tasks that end `failed`. Default 0.
    pub fail_rate: f64,
    /// When `Some`, requests must carry `Authorization: Bearer <it>`, else 401. When `None`
    /// any non-empty bearer token is accepted. A missing header is always 401.
    pub api_key: Option<String>,
    /// Submit and result shapes; see [`ShapeMode`]. Default [`ShapeMode::Alternate`].
    pub response_shape: ShapeMode,
    /// Long side of result PNGs in pixels, clamped to
    /// [`MIN_IMAGE_LONG_SIDE`]..=[`MAX_IMAGE_LONG_SIDE`]. Default 512.
    pub image_long_side: u32,
    /// Most API requests (submits, status polls and balance reads together) answered per
    /// second; beyond it a request is answered 429 with a `Retry-After` (whole seconds until
    /// the next request fits) and counted in `SimStats::rate_limited`. A GCRA bucket that
    /// allows bursts of the same size. `None` (the default): no limit. Result downloads
    /// (a CDN in front of Apimart) are never limited.
    pub rate_limit: Option<NonZeroU32>,
    /// What one result image costs, in balance units: a completed task reports
    /// `cost = n × cost_per_image` and `credits_cost = cost ×` [`CREDITS_PER_UNIT`], and the
    /// balance decreases by it when the task completes (failed and cancelled tasks cost
    /// nothing). Default [`DEFAULT_COST_PER_IMAGE`]; clamped to 0..=[`MAX_MONEY`].
    pub cost_per_image: f64,
    /// Starting balance of the simulated account, in balance units; `None` is an unlimited
    /// quota (`unlimited_quota: true`). A submit whose images would cost more than what
    /// remains answers 402. Default [`DEFAULT_BALANCE`]; clamped to 0..=[`MAX_MONEY`].
    pub balance: Option<f64>,
    /// When `Some`, `GET /v1/balance` answers this HTTP status (400..=599) with an error
    /// body, e.g. to show a readiness check failing. Default `None`.
    pub balance_status: Option<u16>,
}

impl Default for SimConfig {
    fn default() -> Self {
        let task_duration = Duration::from_secs(3);
        Self {
            task_duration,
            estimated_time: task_duration,
            image_ttl: Duration::from_secs(24 * 3600),
            error_rate: 0.0,
            fail_rate: 0.0,
            api_key: None,
            response_shape: ShapeMode::Alternate,
            image_long_side: 512,
            rate_limit: None,
            cost_per_image: DEFAULT_COST_PER_IMAGE,
            balance: Some(DEFAULT_BALANCE),
            balance_status: None,
        }
    }
}

impl SimConfig {
    /// The same configuration with every value forced into its valid range: rates into
    /// 0..=1 (NaN becomes 0), durations capped at [`MAX_TASK_DURATION`] /
    /// [`MAX_IMAGE_TTL`], the long side into its bounds. The simulator stores only
    /// sanitized configurations, so `set_config` can never make it misbehave.
    #[must_use]
    pub fn sanitized(mut self) -> Self {
        self.error_rate = clamp_rate(self.error_rate);
        self.fail_rate = clamp_rate(self.fail_rate);
        self.task_duration = self.task_duration.min(MAX_TASK_DURATION);
        self.estimated_time = self.estimated_time.min(MAX_TASK_DURATION);
        self.image_ttl = self.image_ttl.min(MAX_IMAGE_TTL);
        self.image_long_side = self
            .image_long_side
            .clamp(MIN_IMAGE_LONG_SIDE, MAX_IMAGE_LONG_SIDE);
        self.cost_per_image = clamp_money(self.cost_per_image);
        self.balance = self.balance.map(clamp_money);
        self.balance_status = self
            .balance_status
            .filter(|s| (MIN_ERROR_STATUS..=MAX_ERROR_STATUS).contains(s));
        self
    }

    /// Applies a partial update. When the patch sets `task_duration_ms` but not
    /// `estimated_time_ms`, the estimate follows the new duration (as at startup).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first out-of-range field; `self` is unchanged then.
    pub fn apply(&mut self, patch: &ConfigPatch) -> Result<(), ConfigError> {
        for (field, value) in [
            ("error_rate", patch.error_rate),
            ("fail_rate", patch.fail_rate),
        ] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                return Err(ConfigError::RateOutOfRange { field, value: v });
            }
        }
        if let Some(side) = patch.image_long_side
            && !(MIN_IMAGE_LONG_SIDE..=MAX_IMAGE_LONG_SIDE).contains(&side)
        {
            return Err(ConfigError::LongSideOutOfRange(side));
        }
        for (field, value) in [
            ("cost_per_image", patch.cost_per_image),
            ("balance", patch.balance.flatten()),
        ] {
            if let Some(v) = value
                && !(0.0..=MAX_MONEY).contains(&v)
            {
                return Err(ConfigError::MoneyOutOfRange { field, value: v });
            }
        }
        if let Some(Some(status)) = patch.balance_status
            && !(MIN_ERROR_STATUS..=MAX_ERROR_STATUS).contains(&status)
        {
            return Err(ConfigError::StatusOutOfRange(status));
        }
        let mut next = self.clone();
        if let Some(ms) = patch.task_duration_ms {
            next.task_duration = Duration::from_millis(ms);
            next.estimated_time = next.task_duration;
        }
        if let Some(ms) = patch.estimated_time_ms {
            next.estimated_time = Duration::from_millis(ms);
        }
        if let Some(ms) = patch.image_ttl_ms {
            next.image_ttl = Duration::from_millis(ms);
        }
        if let Some(v) = patch.error_rate {
            next.error_rate = v;
        }
        if let Some(v) = patch.fail_rate {
            next.fail_rate = v;
        }
        if let Some(shape) = patch.response_shape {
            next.response_shape = shape;
        }
        if let Some(side) = patch.image_long_side {
            next.image_long_side = side;
        }
        if let Some(key) = &patch.api_key {
            next.api_key.clone_from(key);
        }
        if let Some(rps) = patch.rate_limit_rps {
            next.rate_limit = rps.and_then(NonZeroU32::new);
        }
        if let Some(v) = patch.cost_per_image {
            next.cost_per_image = v;
        }
        if let Some(v) = patch.balance {
            next.balance = v;
        }
        if let Some(v) = patch.balance_status {
            next.balance_status = v;
        }
        *self = next.sanitized();
        Ok(())
    }

    /// The JSON view served by `GET/POST /_sim/config` (the key itself is never shown).
    #[must_use]
    pub fn view(&self) -> ConfigView {
        ConfigView {
            task_duration_ms: millis(self.task_duration),
            estimated_time_ms: millis(self.estimated_time),
            image_ttl_ms: millis(self.image_ttl),
            error_rate: self.error_rate,
            fail_rate: self.fail_rate,
            api_key_set: self.api_key.is_some(),
            response_shape: self.response_shape,
            image_long_side: self.image_long_side,
            rate_limit_rps: self.rate_limit.map(NonZeroU32::get),
            cost_per_image: self.cost_per_image,
            balance: self.balance,
            balance_status: self.balance_status,
        }
    }
}

/// Lowest status accepted for `balance_status`: only error statuses make sense.
const MIN_ERROR_STATUS: u16 = 400;
/// Highest status accepted for `balance_status`.
const MAX_ERROR_STATUS: u16 = 599;

fn clamp_money(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(0.0, MAX_MONEY)
    }
}

fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Body of `POST /_sim/config`: every field optional, unknown fields rejected (400).
/// Example: `{"task_duration_ms":500,"error_rate":0.1,"api_key":null}`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    /// New [`SimConfig::task_duration`] in milliseconds.
    pub task_duration_ms: Option<u64>,
    /// New [`SimConfig::estimated_time`] in milliseconds.
    pub estimated_time_ms: Option<u64>,
    /// New [`SimConfig::image_ttl`] in milliseconds.
    pub image_ttl_ms: Option<u64>,
    /// New [`SimConfig::error_rate`], 0..=1.
    pub error_rate: Option<f64>,
    /// New [`SimConfig::fail_rate`], 0..=1.
    pub fail_rate: Option<f64>,
    /// New [`SimConfig::response_shape`]: `"array"`, `"object"` or `"alternate"`.
    pub response_shape: Option<ShapeMode>,
    /// New [`SimConfig::image_long_side`] in pixels.
    pub image_long_side: Option<u32>,
    /// Absent: unchanged; `null`: accept any bearer token; a string: require it.
    #[serde(default, deserialize_with = "present")]
    pub api_key: Option<Option<String>>,
    /// New [`SimConfig::rate_limit`] in requests per second; `null` or `0`: no limit.
    #[serde(default, deserialize_with = "present")]
    pub rate_limit_rps: Option<Option<u32>>,
    /// New [`SimConfig::cost_per_image`], 0..=[`MAX_MONEY`].
    pub cost_per_image: Option<f64>,
    /// New [`SimConfig::balance`], 0..=[`MAX_MONEY`]; `null`: unlimited quota.
    #[serde(default, deserialize_with = "present")]
    pub balance: Option<Option<f64>>,
    /// New [`SimConfig::balance_status`] (400..=599); `null`: balance reads succeed again.
    #[serde(default, deserialize_with = "present")]
    pub balance_status: Option<Option<u16>>,
}

/// Distinguishes an explicit `null` (`Some(None)`) from an absent field (`None`, via
/// `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The effective configuration as served by `/_sim/config` (durations in milliseconds).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ConfigView {
    /// [`SimConfig::task_duration`] in ms.
    pub task_duration_ms: u64,
    /// [`SimConfig::estimated_time`] in ms.
    pub estimated_time_ms: u64,
    /// [`SimConfig::image_ttl`] in ms.
    pub image_ttl_ms: u64,
    /// [`SimConfig::error_rate`].
    pub error_rate: f64,
    /// [`SimConfig::fail_rate`].
    pub fail_rate: f64,
    /// Whether a specific API key is required.
    pub api_key_set: bool,
    /// [`SimConfig::response_shape`].
    pub response_shape: ShapeMode,
    /// [`SimConfig::image_long_side`] in px.
    pub image_long_side: u32,
    /// [`SimConfig::rate_limit`] in requests per second (`null`: none).
    #[serde(default)]
    pub rate_limit_rps: Option<u32>,
    /// [`SimConfig::cost_per_image`] in balance units.
    #[serde(default)]
    pub cost_per_image: f64,
    /// [`SimConfig::balance`] in balance units (`null`: unlimited).
    #[serde(default)]
    pub balance: Option<f64>,
    /// [`SimConfig::balance_status`].
    #[serde(default)]
    pub balance_status: Option<u16>,
}

/// A rejected configuration value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// A rate outside 0..=1 (or NaN).
    #[error("{field} must be within 0..=1, got {value}")]
    RateOutOfRange {
        /// The offending field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// An image long side outside the accepted bounds.
    #[error(
        "image_long_side must be within {MIN_IMAGE_LONG_SIDE}..={MAX_IMAGE_LONG_SIDE}, got {0}"
    )]
    LongSideOutOfRange(u32),
    /// A shape name other than `array`, `object`, `alternate`.
    #[error("unknown response shape {0:?} (expected array, object or alternate)")]
    UnknownShape(String),
    /// A cost or balance outside 0..=[`MAX_MONEY`] (or NaN).
    #[error("{field} must be within 0..={MAX_MONEY}, got {value}")]
    MoneyOutOfRange {
        /// The offending field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A `balance_status` that is not an error status.
    #[error("balance_status must be within 400..=599, got {0}")]
    StatusOutOfRange(u16),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_updates_only_given_fields_and_estimate_follows_duration() {
        let mut cfg = SimConfig::default();
        let patch: ConfigPatch =
            serde_json::from_str(r#"{"task_duration_ms":500,"error_rate":0.25}"#).unwrap();
        cfg.apply(&patch).unwrap();
        assert_eq!(cfg.task_duration, Duration::from_millis(500));
        assert_eq!(cfg.estimated_time, Duration::from_millis(500));
        assert_eq!(cfg.error_rate, 0.25);
        assert_eq!(cfg.image_long_side, 512);
        assert_eq!(cfg.api_key, None);
    }

    #[test]
    fn api_key_null_clears_and_absent_keeps() {
        let mut cfg = SimConfig {
            api_key: Some("k".into()),
            ..SimConfig::default()
        };
        cfg.apply(&serde_json::from_str(r#"{"fail_rate":0.5}"#).unwrap())
            .unwrap();
        assert_eq!(cfg.api_key.as_deref(), Some("k"));
        cfg.apply(&serde_json::from_str(r#"{"api_key":null}"#).unwrap())
            .unwrap();
        assert_eq!(cfg.api_key, None);
    }

    #[test]
    fn out_of_range_values_are_rejected_and_leave_config_unchanged() {
        let mut cfg = SimConfig::default();
        let err = cfg
            .apply(&serde_json::from_str(r#"{"error_rate":1.5,"task_duration_ms":1}"#).unwrap())
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::RateOutOfRange {
                field: "error_rate",
                ..
            }
        ));
        assert_eq!(cfg.task_duration, Duration::from_secs(3));
        assert!(serde_json::from_str::<ConfigPatch>(r#"{"bogus":1}"#).is_err());
    }

    #[test]
    fn sanitized_clamps_everything() {
        let cfg = SimConfig {
            error_rate: f64::NAN,
            fail_rate: 7.0,
            image_long_side: 1,
            task_duration: Duration::MAX,
            ..SimConfig::default()
        }
        .sanitized();
        assert_eq!(cfg.error_rate, 0.0);
        assert_eq!(cfg.fail_rate, 1.0);
        assert_eq!(cfg.image_long_side, MIN_IMAGE_LONG_SIDE);
        assert_eq!(cfg.task_duration, MAX_TASK_DURATION);
    }

    #[test]
    fn rate_limit_cost_and_balance_patches() {
        let mut cfg = SimConfig::default();
        assert_eq!(cfg.rate_limit, None);
        cfg.apply(
            &serde_json::from_str(
                r#"{"rate_limit_rps":5,"cost_per_image":0.25,"balance":null,"balance_status":503}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(cfg.rate_limit, NonZeroU32::new(5));
        assert_eq!(cfg.cost_per_image, 0.25);
        assert_eq!(cfg.balance, None);
        assert_eq!(cfg.balance_status, Some(503));
        let view = cfg.view();
        assert_eq!(view.rate_limit_rps, Some(5));
        cfg.apply(
            &serde_json::from_str(r#"{"rate_limit_rps":0,"balance":2.5,"balance_status":null}"#)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (cfg.rate_limit, cfg.balance, cfg.balance_status),
            (None, Some(2.5), None)
        );
        for bad in [
            r#"{"cost_per_image":-1}"#,
            r#"{"balance":1e13}"#,
            r#"{"balance_status":200}"#,
        ] {
            assert!(
                cfg.apply(&serde_json::from_str(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
        assert_eq!(cfg.balance, Some(2.5));
    }
}
