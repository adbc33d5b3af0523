//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>, spec
//! "Signature scheme"): `webhook-signature: v1,<base64(HMAC-SHA256(secret,
//! "{webhook-id}.{webhook-timestamp}.{body}"))>`.
//!
//! [`sign`] is what our sender does; [`verify`] is what a receiver does (the Java
//! backend, and our tests). Both work on the raw body bytes: a receiver must
//! verify the bytes it received, before any JSON parsing or re-serialising.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the event id, stable across retries (Standard Webhooks).
pub const HEADER_WEBHOOK_ID: &str = "webhook-id";
/// Header carrying the signing time, integer Unix seconds (Standard Webhooks).
pub const HEADER_WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated `v1,<base64>` signatures (Standard Webhooks).
pub const HEADER_WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// Prefix of a Standard Webhooks secret whose remainder is base64 (Standard Webhooks,
/// "Symmetric signatures").
pub const SECRET_PREFIX: &str = "whsec_";

/// Version tag of the HMAC-SHA256 scheme in `webhook-signature` entries.
pub const SIGNATURE_VERSION: &str = "v1";

/// Timestamp tolerance in seconds a receiver should allow between `webhook-timestamp`
/// and its own clock: 5 minutes, the value the Standard Webhooks reference libraries use,
/// which bounds replay of a captured request while absorbing ordinary clock skew.
pub const DEFAULT_TOLERANCE_S: i64 = 5 * 60;

/// A Standard Webhooks signing secret (the HMAC key).
///
/// Built only by [`SigningSecret::parse`]. `Debug` prints `***`, never the key.
#[derive(Clone)]
pub struct SigningSecret {
    /// HMAC-SHA256 state already keyed with the secret, cloned for every signature so the
    /// key schedule runs once and signing cannot fail.
    keyed: HmacSha256,
}

/// Why a string is not a usable signing secret. Never contains the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret (or the part after `whsec_`) is empty: an empty HMAC key signs nothing.
    #[error("signing secret is empty")]
    Empty,
    /// The part after `whsec_` is not standard padded base64.
    #[error("signing secret starts with `whsec_` but the rest is not valid base64")]
    InvalidBase64,
    /// The HMAC implementation refused the key. HMAC accepts keys of any length
    /// (RFC 2104), so this is not expected; it exists so parsing never panics.
    #[error("signing secret is not a usable HMAC-SHA256 key")]
    InvalidKey,
}

impl SigningSecret {
    /// Parses a secret as the Standard Webhooks libraries do: `whsec_<base64>` has the
    /// prefix stripped and the rest decoded (standard alphabet, padded) into the key;
    /// anything else is used as its raw UTF-8 bytes. Nothing is trimmed.
    ///
    /// # Errors
    /// [`SecretError::Empty`] for `""` or `"whsec_"`; [`SecretError::InvalidBase64`] when
    /// the part after `whsec_` does not decode.
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let key = match s.strip_prefix(SECRET_PREFIX) {
            Some(encoded) => BASE64
                .decode(encoded)
                .map_err(|_| SecretError::InvalidBase64)?,
            None => s.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        let keyed =
            <HmacSha256 as KeyInit>::new_from_slice(&key).map_err(|_| SecretError::InvalidKey)?;
        Ok(SigningSecret { keyed })
    }

    /// The HMAC state after absorbing `"{id}.{timestamp}.{body}"`.
    fn mac_over(&self, event_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(event_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Signs one delivery: returns the `webhook-signature` header value
/// `v1,<base64(HMAC-SHA256(secret, "{event_id}.{timestamp}.{body}"))>`
/// (Standard Webhooks, <https://www.standardwebhooks.com/>, "Signature scheme").
///
/// `timestamp` is Unix seconds, the same value sent in `webhook-timestamp`; `body` is the
/// exact bytes sent.
pub fn sign(secret: &SigningSecret, event_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret
        .mac_over(event_id, timestamp, body)
        .finalize()
        .into_bytes();
    format!("{SIGNATURE_VERSION},{}", BASE64.encode(tag))
}

/// Why a received request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `webhook-timestamp` is more than the tolerance away from `now` (too old: possible
    /// replay; too far ahead: clock skew). Answer 400/401 and do not process.
    #[error(
        "webhook timestamp {timestamp} is {skew_s} s away from now ({now}), tolerance {tolerance_s} s"
    )]
    TimestampOutOfTolerance {
        /// The `webhook-timestamp` received, Unix seconds.
        timestamp: i64,
        /// The receiver's clock, Unix seconds.
        now: i64,
        /// `|now - timestamp|`, seconds.
        skew_s: u64,
        /// The allowed skew, seconds.
        tolerance_s: i64,
    },
    /// The header holds no well-formed `v1,<base64>` entry.
    #[error("webhook-signature holds no v1 signature")]
    NoSignature,
    /// There are `v1` entries but none matches the body, id and timestamp.
    #[error("no webhook signature matches")]
    Mismatch,
}

/// Verifies a `webhook-signature` header value the way a receiver must (Standard Webhooks,
/// "Verifying webhooks"): the timestamp must be within `tolerance_s` seconds of `now`
/// (both Unix seconds; a negative tolerance counts as 0), and at least one space-separated
/// `v1,<base64>` entry must equal the HMAC of `"{event_id}.{timestamp}.{body}"`, compared
/// in constant time. Entries of other versions or with bad base64 are skipped, so a
/// sender can rotate secrets or add schemes.
///
/// # Errors
/// [`VerifyError::TimestampOutOfTolerance`], [`VerifyError::NoSignature`],
/// [`VerifyError::Mismatch`].
pub fn verify(
    secret: &SigningSecret,
    event_id: &str,
    timestamp: i64,
    body: &[u8],
    signature_header: &str,
    now: i64,
    tolerance_s: i64,
) -> Result<(), VerifyError> {
    let skew_s = now.abs_diff(timestamp);
    if skew_s > u64::try_from(tolerance_s).unwrap_or(0) {
        return Err(VerifyError::TimestampOutOfTolerance {
            timestamp,
            now,
            skew_s,
            tolerance_s,
        });
    }

    let candidates: Vec<Vec<u8>> = signature_header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == SIGNATURE_VERSION)
        .filter_map(|(_, encoded)| BASE64.decode(encoded).ok())
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::NoSignature);
    }

    // The body is hashed once; each candidate only costs the finalisation.
    let mac = secret.mac_over(event_id, timestamp, body);
    // `verify_slice` compares in constant time (digest's `CtOutput`, via `subtle`).
    if candidates
        .iter()
        .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
    {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Standard Webhooks reference test vector (standard-webhooks libraries' test suites).
    const KAT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const KAT_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const KAT_TIMESTAMP: i64 = 1_614_265_330;
    const KAT_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const KAT_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn kat_secret() -> SigningSecret {
        SigningSecret::parse(KAT_SECRET).expect("reference secret parses")
    }

    #[test]
    fn known_answer_matches_the_standard_webhooks_reference_vector() {
        assert_eq!(
            sign(&kat_secret(), KAT_ID, KAT_TIMESTAMP, KAT_BODY),
            KAT_SIGNATURE
        );
    }

    #[test]
    fn known_answer_verifies() {
        assert_eq!(
            verify(
                &kat_secret(),
                KAT_ID,
                KAT_TIMESTAMP,
                KAT_BODY,
                KAT_SIGNATURE,
                KAT_TIMESTAMP,
                DEFAULT_TOLERANCE_S
            ),
            Ok(())
        );
    }

    #[test]
    fn verify_accepts_a_matching_entry_among_others() {
        let header = format!("v2,abc v1,AAAA v1,not*base64 nocomma {KAT_SIGNATURE}");
        assert_eq!(
            verify(
                &kat_secret(),
                KAT_ID,
                KAT_TIMESTAMP,
                KAT_BODY,
                &header,
                KAT_TIMESTAMP,
                10
            ),
            Ok(())
        );
    }

    #[test]
    fn verify_without_v1_entry_is_no_signature() {
        for header in ["", "   ", "v2,abc", "v1", "v1,%%%"] {
            assert_eq!(
                verify(
                    &kat_secret(),
                    KAT_ID,
                    KAT_TIMESTAMP,
                    KAT_BODY,
                    header,
                    KAT_TIMESTAMP,
                    10
                ),
                Err(VerifyError::NoSignature),
                "header {header:?}"
            );
        }
    }

    #[test]
    fn verify_with_another_secret_is_mismatch() {
        let other = SigningSecret::parse("another secret").expect("raw secret parses");
        assert_eq!(
            verify(
                &other,
                KAT_ID,
                KAT_TIMESTAMP,
                KAT_BODY,
                KAT_SIGNATURE,
                KAT_TIMESTAMP,
                10
            ),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn tolerance_is_enforced_both_ways_and_inclusive() {
        let secret = kat_secret();
        let check = |now: i64, tolerance: i64| {
            verify(
                &secret,
                KAT_ID,
                KAT_TIMESTAMP,
                KAT_BODY,
                KAT_SIGNATURE,
                now,
                tolerance,
            )
        };
        assert_eq!(check(KAT_TIMESTAMP + 300, 300), Ok(()));
        assert_eq!(check(KAT_TIMESTAMP - 300, 300), Ok(()));
        assert!(matches!(
            check(KAT_TIMESTAMP + 301, 300),
            Err(VerifyError::TimestampOutOfTolerance { skew_s: 301, .. })
        ));
        assert!(matches!(
            check(KAT_TIMESTAMP - 301, 300),
            Err(VerifyError::TimestampOutOfTolerance { skew_s: 301, .. })
        ));
        assert!(matches!(
            check(KAT_TIMESTAMP + 1, -5),
            Err(VerifyError::TimestampOutOfTolerance { .. })
        ));
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let secret = kat_secret();
        let header = sign(&secret, "id", i64::MIN, b"x");
        assert!(matches!(
            verify(&secret, "id", i64::MIN, b"x", &header, i64::MAX, 300),
            Err(VerifyError::TimestampOutOfTolerance {
                skew_s: u64::MAX,
                ..
            })
        ));
        assert_eq!(
            verify(&secret, "id", i64::MIN, b"x", &header, i64::MIN, 0),
            Ok(())
        );
    }

    fn same_key(a: &SigningSecret, b: &SigningSecret) -> bool {
        sign(a, "id", 1, b"body") == sign(b, "id", 1, b"body")
    }

    #[test]
    fn whsec_prefix_is_base64_decoded() {
        let secret = SigningSecret::parse("whsec_aGVsbG8=").expect("valid");
        assert!(same_key(
            &secret,
            &SigningSecret::parse("hello").expect("raw")
        ));
        assert!(!same_key(
            &secret,
            &SigningSecret::parse("aGVsbG8=").expect("raw")
        ));
    }

    #[test]
    fn raw_secret_is_used_as_utf8_bytes_untrimmed() {
        let raw = SigningSecret::parse(" 密钥 ").expect("raw");
        let encoded = format!("whsec_{}", BASE64.encode(" 密钥 ".as_bytes()));
        assert!(same_key(
            &raw,
            &SigningSecret::parse(&encoded).expect("valid")
        ));
        assert!(!same_key(&raw, &SigningSecret::parse("密钥").expect("raw")));
    }

    #[test]
    fn invalid_base64_after_prefix_is_an_error() {
        for bad in ["whsec_***", "whsec_aGVsbG8", "whsec_aGVs bG8=", "whsec_a"] {
            assert_eq!(
                SigningSecret::parse(bad).err(),
                Some(SecretError::InvalidBase64),
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_secrets_are_rejected() {
        assert_eq!(SigningSecret::parse("").err(), Some(SecretError::Empty));
        assert_eq!(
            SigningSecret::parse("whsec_").err(),
            Some(SecretError::Empty)
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let secret = SigningSecret::parse("super-secret-value").expect("raw");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Some(secret)), "Some(***)");
    }

    #[test]
    fn error_messages_never_show_the_secret() {
        let err = SigningSecret::parse("whsec_leaky!").expect_err("invalid");
        assert!(!err.to_string().contains("leaky"));
        assert!(!format!("{err:?}").contains("leaky"));
    }

    fn flip_bit(bytes: &mut [u8], bit: usize) {
        bytes[bit / 8] ^= 1 << (bit % 8);
    }

    proptest! {
        #[test]
        fn sign_then_verify_round_trips(
            key in proptest::collection::vec(any::<u8>(), 1..64),
            id in "[ -~]{1,64}",
            timestamp in any::<i64>(),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let secret = SigningSecret::parse(&format!("whsec_{}", BASE64.encode(&key))).expect("valid");
            let header = sign(&secret, &id, timestamp, &body);
            prop_assert!(header.starts_with("v1,"));
            prop_assert_eq!(verify(&secret, &id, timestamp, &body, &header, timestamp, 0), Ok(()));
        }

        #[test]
        fn any_single_bit_flip_in_the_body_fails(
            body in proptest::collection::vec(any::<u8>(), 1..256),
            bit in any::<proptest::sample::Index>(),
        ) {
            let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
            let header = sign(&secret, "msg_1", 1_700_000_000, &body);
            let mut tampered = body.clone();
            flip_bit(&mut tampered, bit.index(body.len() * 8));
            prop_assert_eq!(
                verify(&secret, "msg_1", 1_700_000_000, &tampered, &header, 1_700_000_000, 300),
                Err(VerifyError::Mismatch)
            );
        }

        #[test]
        fn any_single_bit_flip_in_the_id_fails(
            id in "[a-zA-Z0-9_]{1,40}",
            bit in any::<proptest::sample::Index>(),
        ) {
            let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
            let header = sign(&secret, &id, 1_700_000_000, b"{}");
            let mut tampered = id.clone().into_bytes();
            // Flip one of the 7 low bits so the id stays ASCII (hence valid UTF-8).
            let bit = bit.index(tampered.len() * 7);
            flip_bit(&mut tampered, (bit / 7) * 8 + bit % 7);
            let tampered = String::from_utf8(tampered).expect("still ASCII");
            prop_assert_eq!(
                verify(&secret, &tampered, 1_700_000_000, b"{}", &header, 1_700_000_000, 300),
                Err(VerifyError::Mismatch)
            );
        }

        #[test]
        fn any_single_bit_flip_in_the_timestamp_fails(
            timestamp in any::<i64>(),
            bit in 0u32..64,
        ) {
            let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
            let header = sign(&secret, "msg_1", timestamp, b"{}");
            let tampered = timestamp ^ (1i64 << bit);
            // `now` equals the tampered timestamp so only the signature can reject it.
            prop_assert_eq!(
                verify(&secret, "msg_1", tampered, b"{}", &header, tampered, 0),
                Err(VerifyError::Mismatch)
            );
        }

        #[test]
        fn tolerance_is_exactly_the_allowed_skew(
            timestamp in -1_000_000_000_000i64..1_000_000_000_000,
            skew in -10_000i64..10_000,
            tolerance in 0i64..5_000,
        ) {
            let secret = SigningSecret::parse("k").expect("raw");
            let header = sign(&secret, "msg_1", timestamp, b"{}");
            let result = verify(&secret, "msg_1", timestamp, b"{}", &header, timestamp + skew, tolerance);
            prop_assert_eq!(result.is_ok(), skew.abs() <= tolerance);
        }

        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = SigningSecret::parse(&s);
        }
    }
}
