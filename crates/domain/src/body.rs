//! The body profile of a default-model request (README, "API").
//!
//! Every field is optional, as in the earlier service's latest code
//! (docs/legacy.md, "Body profile"): a missing field is left out of the prompt,
//! a present one is checked. [`BodyProfileInput`] is what arrives on the wire;
//! [`BodyProfile`] is the checked value, built only by [`BodyProfile::parse`].
//! Parsing collects every problem, not just the first.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::FieldError;
use crate::task::ParseEnumError;

/// Largest accepted `height_cm`, in centimetres (exclusive lower bound is 0).
/// Above every recorded human height (272 cm), so only nonsense is refused;
/// the earlier service had the same bound (docs/legacy.md).
pub const MAX_HEIGHT_CM: f64 = 300.0;

/// Largest accepted `weight_kg`, in kilograms (exclusive lower bound is 0).
/// Above every recorded human weight, so only nonsense is refused; the
/// earlier service had the same bound.
pub const MAX_WEIGHT_KG: f64 = 500.0;

/// Largest accepted `age`, in whole years (the smallest is 1). Above the
/// longest recorded human life (122 years); the earlier service's bound.
pub const MAX_AGE_YEARS: u8 = 150;

/// Longest accepted `skin_tone` and `body_shape`, in characters (Unicode scalar
/// values, not bytes), after trimming. Both go into the prompt verbatim, and
/// the prompt must stay under Apimart's 1000-character limit (docs/apimart.md, "Submit").
pub const MAX_BODY_TEXT_CHARS: usize = 64;

/// The wire path of the body profile object in a default-model request.
pub const BODY_PROFILE_FIELD: &str = "body_profile";

/// Every spelling of a gender the parser accepts, ASCII words in any case.
pub const GENDER_SPELLINGS: &str = "male, female, 男, 女, 男性, 女性";

/// The model's gender, `male` or `female` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    /// `male` (also accepted: `男`, `男性`, any ASCII case of `male`).
    Male,
    /// `female` (also accepted: `女`, `女性`, any ASCII case of `female`).
    Female,
}

impl Gender {
    /// Both values.
    pub const ALL: &'static [Gender] = &[Gender::Male, Gender::Female];

    /// The canonical wire form: `male` or `female`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Gender::Male => "male",
            Gender::Female => "female",
        }
    }
}

impl fmt::Display for Gender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Gender {
    type Err = ParseEnumError;

    /// Accepts `male`/`female` in any ASCII case and the Chinese `男`/`女`/
    /// `男性`/`女性` (the Java backend's users write either), ignoring
    /// surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("male") || t == "男" || t == "男性" {
            Ok(Gender::Male)
        } else if t.eq_ignore_ascii_case("female") || t == "女" || t == "女性" {
            Ok(Gender::Female)
        } else {
            Err(ParseEnumError {
                value: s.chars().take(64).collect(),
                expected: "male female 男 女 男性 女性",
            })
        }
    }
}

/// The body profile as received, before any check; every field optional.
///
/// Field names are the wire names; the earlier Python service's names
/// (`height`, `weight`, `skin_color`, `body_type`) are accepted as aliases
/// (docs/legacy.md). Numbers may also arrive as strings holding a decimal
/// number (`"165"`, `" 52.5 "`), as the earlier service accepted them; see
/// [`deserialize_measure`]. `null` means absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BodyProfileInput {
    /// `male`/`female`/`男`/`女`/`男性`/`女性`; blank means absent.
    pub gender: Option<String>,
    /// Height in centimetres.
    #[serde(alias = "height", default, deserialize_with = "deserialize_measure")]
    pub height_cm: Option<f64>,
    /// Weight in kilograms.
    #[serde(alias = "weight", default, deserialize_with = "deserialize_measure")]
    pub weight_kg: Option<f64>,
    /// Age in years; must be a whole number (`28` or `28.0`, not `28.5`).
    #[serde(default, deserialize_with = "deserialize_measure")]
    pub age: Option<f64>,
    /// Free-text skin tone (e.g. `fair`, `olive`, `白皙`); blank means absent.
    #[serde(alias = "skin_color")]
    pub skin_tone: Option<String>,
    /// Free-text body shape (e.g. `hourglass`, `pear`); blank means absent.
    #[serde(alias = "body_type")]
    pub body_shape: Option<String>,
}

/// Deserializes an optional measurement: a JSON number, a string holding a
/// plain decimal number (optional sign, digits, optional fraction and
/// exponent, surrounding ASCII whitespace ignored), or `null`/absent (`None`).
///
/// The earlier service (pydantic in its default "lax" mode) took numbers
/// written as strings, so a client that sends `"height": "165"` keeps working.
/// Booleans, `"inf"`, `"NaN"`, `""` and words are refused with a message that
/// says a number is expected.
///
/// # Errors
/// The deserializer's "invalid type" or "invalid value" error.
pub fn deserialize_measure<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct Measure;

    impl<'de> Visitor<'de> for Measure {
        type Value = Option<f64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number (or a string holding one)")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Measure)
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_decimal(v)
                .map(Some)
                .ok_or_else(|| E::invalid_value(Unexpected::Str(shorten(v)), &self))
        }
    }

    d.deserialize_option(Measure)
}

/// A string cut to 40 characters for an error message (it may be huge).
fn shorten(s: &str) -> &str {
    s.char_indices().nth(40).map_or(s, |(i, _)| &s[..i])
}

/// Parses a plain decimal number: `[+-]digits[.digits][e[+-]digits]` (at least
/// one digit before or after the point), with surrounding ASCII whitespace.
/// Refuses `inf`, `NaN`, hex and everything else `f64::from_str` would take
/// beyond plain decimals.
pub fn parse_decimal(s: &str) -> Option<f64> {
    let t = s.trim_ascii();
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !(digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty())) {
        return None;
    }
    if let Some(e) = exponent {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        if e.is_empty() || !digits(e) {
            return None;
        }
    }
    t.parse().ok()
}

/// A checked body profile: each field absent, or present and valid — a gender,
/// positive finite measurements within human bounds, a whole age, short
/// single-line texts.
///
/// Serialises with the canonical wire names (`gender`, `height_cm`,
/// `weight_kg`, `age`, `skin_tone`, `body_shape`), omitting absent fields, and
/// deserialises through [`BodyProfile::parse`], so a stored profile is
/// re-checked when read back.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BodyProfile {
    #[serde(skip_serializing_if = "Option::is_none")]
    gender: Option<Gender>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height_cm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight_kg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skin_tone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_shape: Option<String>,
}

impl BodyProfile {
    /// Checks `input`, naming fields `body_profile.<name>` in errors.
    ///
    /// Rules, for each field that is present (absent, `null` and — for the
    /// texts and `gender` — blank all mean absent): `gender` is `male`/`female`
    /// (any ASCII case) or `男`/`女`/`男性`/`女性`; `height_cm` in (0,
    /// [`MAX_HEIGHT_CM`]] and `weight_kg` in (0, [`MAX_WEIGHT_KG`]], finite;
    /// `age` a whole number from 1 to [`MAX_AGE_YEARS`] (`28.0` is 28, `28.5`
    /// is refused); `skin_tone` and `body_shape` at most
    /// [`MAX_BODY_TEXT_CHARS`] characters, trimmed, free of control characters.
    ///
    /// # Errors
    /// One [`FieldError`] per bad field, in field order, when any is bad.
    pub fn parse(input: BodyProfileInput) -> Result<BodyProfile, Vec<FieldError>> {
        Self::parse_at(input, BODY_PROFILE_FIELD)
    }

    /// Like [`BodyProfile::parse`], with field names under `path` instead of
    /// `body_profile` (`""` gives bare names such as `height_cm`, for a client
    /// that sends the fields at the top level).
    ///
    /// # Errors
    /// As [`BodyProfile::parse`].
    pub fn parse_at(input: BodyProfileInput, path: &str) -> Result<BodyProfile, Vec<FieldError>> {
        let name = |field: &str| {
            if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            }
        };
        let mut errors = Vec::new();
        let mut check = |field: &str, result: Result<(), String>| {
            if let Err(message) = result {
                errors.push(FieldError::new(name(field), message));
            }
        };
        let gender = parse_gender(input.gender.as_deref());
        check("gender", ok_or_message(&gender));
        let height_cm = parse_measure(input.height_cm, MAX_HEIGHT_CM, "centimetres");
        check("height_cm", ok_or_message(&height_cm));
        let weight_kg = parse_measure(input.weight_kg, MAX_WEIGHT_KG, "kilograms");
        check("weight_kg", ok_or_message(&weight_kg));
        let age = parse_age(input.age);
        check("age", ok_or_message(&age));
        let skin_tone = parse_text(input.skin_tone.as_deref());
        check("skin_tone", ok_or_message(&skin_tone));
        let body_shape = parse_text(input.body_shape.as_deref());
        check("body_shape", ok_or_message(&body_shape));

        match (gender, height_cm, weight_kg, age, skin_tone, body_shape) {
            (Ok(gender), Ok(height_cm), Ok(weight_kg), Ok(age), Ok(skin_tone), Ok(body_shape)) => {
                Ok(BodyProfile {
                    gender,
                    height_cm,
                    weight_kg,
                    age,
                    skin_tone,
                    body_shape,
                })
            }
            _ => Err(errors),
        }
    }

    /// The model's gender, if given.
    pub fn gender(&self) -> Option<Gender> {
        self.gender
    }

    /// Height in centimetres, in (0, 300], if given.
    pub fn height_cm(&self) -> Option<f64> {
        self.height_cm
    }

    /// Weight in kilograms, in (0, 500], if given.
    pub fn weight_kg(&self) -> Option<f64> {
        self.weight_kg
    }

    /// Age in whole years, 1 to 150, if given.
    pub fn age(&self) -> Option<u8> {
        self.age
    }

    /// Skin tone, trimmed, 1–64 characters, if given.
    pub fn skin_tone(&self) -> Option<&str> {
        self.skin_tone.as_deref()
    }

    /// Body shape, trimmed, 1–64 characters, if given.
    pub fn body_shape(&self) -> Option<&str> {
        self.body_shape.as_deref()
    }

    /// Whether no field is given (`{}` on the wire).
    pub fn is_empty(&self) -> bool {
        *self == BodyProfile::default()
    }
}

impl TryFrom<BodyProfileInput> for BodyProfile {
    type Error = Vec<FieldError>;

    fn try_from(input: BodyProfileInput) -> Result<Self, Self::Error> {
        BodyProfile::parse(input)
    }
}

impl<'de> Deserialize<'de> for BodyProfile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let input = BodyProfileInput::deserialize(deserializer)?;
        BodyProfile::parse(input).map_err(|errors| {
            let joined: Vec<String> = errors.iter().map(ToString::to_string).collect();
            de::Error::custom(joined.join("; "))
        })
    }
}

fn ok_or_message<T>(result: &Result<T, String>) -> Result<(), String> {
    result.as_ref().map(|_| ()).map_err(Clone::clone)
}

fn parse_gender(value: Option<&str>) -> Result<Option<Gender>, String> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|e: ParseEnumError| {
        format!(
            "must be `male` or `female` (also `男`, `女`, `男性` or `女性`); got `{}`",
            e.value
        )
    })
}

fn parse_measure(value: Option<f64>, max: f64, unit: &str) -> Result<Option<f64>, String> {
    let Some(v) = value else {
        return Ok(None);
    };
    if !v.is_finite() {
        return Err("must be a finite number".to_owned());
    }
    if v > 0.0 && v <= max {
        Ok(Some(v))
    } else {
        Err(format!(
            "must be greater than 0 and at most {max} ({unit}); got {v}"
        ))
    }
}

fn parse_age(value: Option<f64>) -> Result<Option<u8>, String> {
    let Some(v) = value else {
        return Ok(None);
    };
    if !v.is_finite() {
        return Err("must be a finite number".to_owned());
    }
    if v.fract() != 0.0 {
        return Err(format!(
            "must be a whole number of years (an integer such as 28); got {v}"
        ));
    }
    if v >= 1.0 && v <= f64::from(MAX_AGE_YEARS) {
        Ok(Some(v as u8))
    } else {
        Err(format!(
            "must be greater than 0 and at most {MAX_AGE_YEARS} (years); got {v}"
        ))
    }
}

/// `Ok(None)` for absent or blank text, `Ok(Some(trimmed))` when acceptable.
fn parse_text(value: Option<&str>) -> Result<Option<String>, String> {
    let Some(t) = value.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let chars = t.chars().count();
    if chars > MAX_BODY_TEXT_CHARS {
        return Err(format!(
            "must be at most {MAX_BODY_TEXT_CHARS} characters; got {chars}"
        ));
    }
    if t.chars().any(char::is_control) {
        return Err("must not contain control characters (such as line breaks)".to_owned());
    }
    Ok(Some(t.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid_input() -> BodyProfileInput {
        BodyProfileInput {
            gender: Some("female".into()),
            height_cm: Some(165.0),
            weight_kg: Some(52.5),
            age: Some(28.0),
            skin_tone: Some(" fair ".into()),
            body_shape: Some("".into()),
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn accepts_a_typical_profile_and_trims() {
        let p = BodyProfile::parse(valid_input()).unwrap();
        assert_eq!(p.gender(), Some(Gender::Female));
        assert_eq!(p.height_cm(), Some(165.0));
        assert_eq!(p.weight_kg(), Some(52.5));
        assert_eq!(p.age(), Some(28));
        assert_eq!(p.skin_tone(), Some("fair"));
        assert_eq!(p.body_shape(), None, "an empty body_shape means absent");
    }

    #[test]
    fn every_field_is_optional() {
        let p = BodyProfile::parse(BodyProfileInput::default()).unwrap();
        assert!(p.is_empty());
        assert_eq!(serde_json::to_value(&p).unwrap(), serde_json::json!({}));

        let p: BodyProfile =
            serde_json::from_value(serde_json::json!({"gender": "女", "height": 165})).unwrap();
        assert_eq!(p.gender(), Some(Gender::Female));
        assert_eq!(p.height_cm(), Some(165.0));
        assert_eq!((p.weight_kg(), p.age(), p.skin_tone()), (None, None, None));
        assert!(!p.is_empty());

        let blank = BodyProfileInput {
            gender: Some("  ".into()),
            skin_tone: Some(" \t ".into()),
            ..BodyProfileInput::default()
        };
        assert!(BodyProfile::parse(blank).unwrap().is_empty());
        let nulls: BodyProfile = serde_json::from_value(serde_json::json!({
            "gender": null, "height_cm": null, "weight_kg": null, "age": null,
            "skin_tone": null, "body_shape": null
        }))
        .unwrap();
        assert!(nulls.is_empty());
    }

    #[test]
    fn gender_accepts_chinese_and_any_ascii_case() {
        for (s, g) in [
            ("男", Gender::Male),
            ("女", Gender::Female),
            ("男性", Gender::Male),
            ("女性", Gender::Female),
            ("Male", Gender::Male),
            ("FEMALE", Gender::Female),
            (" female ", Gender::Female),
        ] {
            assert_eq!(s.parse::<Gender>(), Ok(g), "{s}");
        }
        for s in ["", "m", "f", "man", "woman", "其他", "males"] {
            assert!(s.parse::<Gender>().is_err(), "{s}");
        }
    }

    #[test]
    fn age_must_be_a_whole_number() {
        let age = |v: f64| {
            BodyProfile::parse(BodyProfileInput {
                age: Some(v),
                ..BodyProfileInput::default()
            })
        };
        assert_eq!(age(28.0).unwrap().age(), Some(28));
        assert_eq!(age(1.0).unwrap().age(), Some(1));
        assert_eq!(age(150.0).unwrap().age(), Some(150));
        let errors = age(28.5).unwrap_err();
        assert_eq!(fields(&errors), ["body_profile.age"]);
        assert_eq!(
            errors[0].message,
            "must be a whole number of years (an integer such as 28); got 28.5"
        );
        for bad in [0.0, -1.0, 151.0, 0.5, 150.000_001, f64::NAN, f64::INFINITY] {
            assert_eq!(
                fields(&age(bad).unwrap_err()),
                ["body_profile.age"],
                "{bad}"
            );
        }
    }

    #[test]
    fn boundaries_are_inclusive_at_the_top_and_exclusive_at_zero() {
        let mut input = valid_input();
        input.height_cm = Some(300.0);
        input.weight_kg = Some(500.0);
        input.age = Some(150.0);
        assert!(BodyProfile::parse(input.clone()).is_ok());
        input.height_cm = Some(0.0);
        input.weight_kg = Some(-0.0);
        input.age = Some(151.0);
        let errors = BodyProfile::parse(input).unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "body_profile.height_cm",
                "body_profile.weight_kg",
                "body_profile.age"
            ]
        );
        assert_eq!(
            errors[0].message,
            "must be greater than 0 and at most 300 (centimetres); got 0"
        );
    }

    #[test]
    fn text_fields_are_bounded_in_characters_not_bytes() {
        let mut input = valid_input();
        input.skin_tone = Some("白".repeat(64));
        input.body_shape = Some("梨".repeat(64));
        assert!(BodyProfile::parse(input.clone()).is_ok());
        input.skin_tone = Some("白".repeat(65));
        input.body_shape = Some("pear\nshaped".into());
        let errors = BodyProfile::parse(input).unwrap_err();
        assert_eq!(
            fields(&errors),
            ["body_profile.skin_tone", "body_profile.body_shape"]
        );
        assert_eq!(errors[0].message, "must be at most 64 characters; got 65");
        assert!(errors[1].message.contains("control characters"));
    }

    #[test]
    fn parse_at_names_fields_under_the_given_path() {
        let bad = BodyProfileInput {
            gender: Some("x".into()),
            height_cm: Some(-1.0),
            ..BodyProfileInput::default()
        };
        let errors = BodyProfile::parse_at(bad.clone(), "").unwrap_err();
        assert_eq!(errors[0].field, "gender");
        let errors = BodyProfile::parse_at(bad, "profile").unwrap_err();
        assert_eq!(errors[1].field, "profile.height_cm");
    }

    #[test]
    fn deserialises_legacy_aliases_and_round_trips_through_json() {
        let json = serde_json::json!({
            "gender": "男", "height": 180, "weight": 75, "age": 30,
            "skin_color": "olive", "body_type": "athletic"
        });
        let p: BodyProfile = serde_json::from_value(json).unwrap();
        assert_eq!(p.gender(), Some(Gender::Male));
        assert_eq!(p.height_cm(), Some(180.0));
        assert_eq!(p.body_shape(), Some("athletic"));
        let back: BodyProfile = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(serde_json::to_value(&p).unwrap()["gender"], "male");
        assert_eq!(serde_json::to_value(&p).unwrap()["age"], 30);

        let bad = serde_json::json!({"gender": "x", "height_cm": 400});
        let err = serde_json::from_value::<BodyProfile>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("body_profile.height_cm"), "{err}");
    }

    #[test]
    fn numbers_may_be_strings_but_not_booleans_or_words() {
        let p: BodyProfile = serde_json::from_str(
            r#"{"height_cm": "165", "weight_kg": " 52.5 ", "age": "28", "gender": "female"}"#,
        )
        .unwrap();
        assert_eq!(
            (p.height_cm(), p.weight_kg(), p.age()),
            (Some(165.0), Some(52.5), Some(28))
        );
        for (json, expected) in [
            (
                r#"{"age": true}"#,
                "invalid type: boolean `true`, expected a number",
            ),
            (r#"{"age": "tall"}"#, "invalid value: string \"tall\""),
            (r#"{"height_cm": ""}"#, "invalid value: string \"\""),
            (r#"{"height_cm": "NaN"}"#, "invalid value"),
            (r#"{"height_cm": [1]}"#, "invalid type: sequence"),
        ] {
            let err = serde_json::from_str::<BodyProfileInput>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn parse_decimal_takes_plain_decimals_only() {
        for (s, v) in [
            ("165", 165.0),
            (" 52.5\t", 52.5),
            ("+1", 1.0),
            ("-2", -2.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("1e2", 100.0),
            ("1E-1", 0.1),
        ] {
            assert_eq!(parse_decimal(s), Some(v), "{s:?}");
        }
        for s in [
            "", " ", ".", "+", "e5", "1e", "1e+", "inf", "NaN", "infinity", "0x10", "1_000", "1,5",
            "165cm", "1 2", "--1",
        ] {
            assert_eq!(parse_decimal(s), None, "{s:?}");
        }
    }

    fn in_range(max: f64) -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(max),
            f64::MIN_POSITIVE..=max,
            (1u32..=1000).prop_map(move |k| max * f64::from(k) / 1000.0),
        ]
    }

    fn out_of_range(max: f64) -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            -1e300..=0.0f64,
            (max..1e300).prop_filter("above max", move |v| *v > max),
            Just(max + max * f64::EPSILON),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z\u{4e00}-\u{4e2f} -]{0,64}".prop_map(|s| s.trim().to_owned())
    }

    proptest! {
        #[test]
        fn any_subset_of_valid_fields_is_accepted_unchanged(
            gender in proptest::option::of(proptest::sample::select(vec!["male", "female", "男", "女", "男性", "女性"])),
            h in proptest::option::of(in_range(MAX_HEIGHT_CM)),
            w in proptest::option::of(in_range(MAX_WEIGHT_KG)),
            a in proptest::option::of(1u8..=MAX_AGE_YEARS),
            skin in proptest::option::of(text()),
            shape in proptest::option::of(text()),
        ) {
            let input = BodyProfileInput {
                gender: gender.map(Into::into),
                height_cm: h, weight_kg: w, age: a.map(f64::from),
                skin_tone: skin.as_ref().map(|s| format!("  {s}\t")),
                body_shape: shape.clone(),
            };
            let p = BodyProfile::parse(input).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(p.gender().is_some(), gender.is_some());
            prop_assert_eq!(p.height_cm(), h);
            prop_assert_eq!(p.weight_kg(), w);
            prop_assert_eq!(p.age(), a);
            prop_assert_eq!(p.skin_tone(), skin.as_deref().filter(|s| !s.is_empty()));
            prop_assert_eq!(p.body_shape(), shape.as_deref().filter(|s| !s.is_empty()));
            let back: BodyProfile = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
            prop_assert_eq!(back, p);
        }

        #[test]
        fn each_out_of_range_measure_is_rejected_naming_only_its_field(
            which in 0usize..3,
            bad_h in out_of_range(MAX_HEIGHT_CM),
            bad_w in out_of_range(MAX_WEIGHT_KG),
            bad_a in prop_oneof![out_of_range(f64::from(MAX_AGE_YEARS)), (1u8..150).prop_map(|a| f64::from(a) + 0.5)],
        ) {
            let mut input = valid_input();
            let field = match which {
                0 => { input.height_cm = Some(bad_h); "body_profile.height_cm" }
                1 => { input.weight_kg = Some(bad_w); "body_profile.weight_kg" }
                _ => { input.age = Some(bad_a); "body_profile.age" }
            };
            let errors = BodyProfile::parse(input).unwrap_err();
            prop_assert_eq!(fields(&errors), vec![field]);
        }

        #[test]
        fn whole_ages_in_range_are_accepted_whatever_their_spelling(a in 1u8..=MAX_AGE_YEARS, form in 0usize..4) {
            let json = match form {
                0 => format!(r#"{{"age": {a}}}"#),
                1 => format!(r#"{{"age": {a}.0}}"#),
                2 => format!(r#"{{"age": "{a}"}}"#),
                _ => format!(r#"{{"age": {a}e0}}"#),
            };
            let p: BodyProfile = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(format!("{json}: {e}")))?;
            prop_assert_eq!(p.age(), Some(a));
        }

        #[test]
        fn too_long_text_is_rejected(extra in 1usize..100, c in "[a-z\u{4e00}-\u{4e2f}]") {
            let mut input = valid_input();
            input.body_shape = Some(c.repeat(MAX_BODY_TEXT_CHARS + extra));
            let errors = BodyProfile::parse(input).unwrap_err();
            prop_assert_eq!(fields(&errors), vec!["body_profile.body_shape"]);
        }

        #[test]
        fn parsing_any_gender_string_never_panics_and_accepts_only_known_words(s in ".*") {
            let known = ["male", "female"].iter().any(|w| s.trim().eq_ignore_ascii_case(w))
                || ["男", "女", "男性", "女性"].contains(&s.trim());
            prop_assert_eq!(s.parse::<Gender>().is_ok(), known);
        }

        #[test]
        fn parse_decimal_agrees_with_f64_on_plain_decimals(v in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
            prop_assert_eq!(parse_decimal(&v.to_string()), Some(v));
            prop_assert_eq!(parse_decimal(&format!("{v:e}")), Some(v));
        }

        #[test]
        fn parse_decimal_never_panics(s in ".*") {
            let _ = parse_decimal(&s);
        }
    }
}
