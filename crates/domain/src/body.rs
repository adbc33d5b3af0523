//! The body profile of a default-model request (DESIGN.md, "Wire contract", "Inputs").
//!
//! [`BodyProfileInput`] is what arrives on the wire, every field optional so
//! that a missing field is reported like any other bad one; [`BodyProfile`] is
//! the checked value, built only by [`BodyProfile::parse`]. Parsing collects
//! every problem, not just the first.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::FieldError;
use crate::task::ParseEnumError;

/// Largest accepted `height_cm`, in centimetres (exclusive lower bound is 0).
/// Above every recorded human height (272 cm), so only nonsense is refused.
pub const MAX_HEIGHT_CM: f64 = 300.0;

/// Largest accepted `weight_kg`, in kilograms (exclusive lower bound is 0).
/// Above every recorded human weight, so only nonsense is refused.
pub const MAX_WEIGHT_KG: f64 = 500.0;

/// Largest accepted `age`, in years (exclusive lower bound is 0).
/// Above the longest recorded human life (122 years).
pub const MAX_AGE_YEARS: f64 = 150.0;

/// Longest accepted `skin_tone` and `body_shape`, in characters (Unicode scalar
/// values, not bytes), after trimming. Both go into the prompt verbatim, and
/// the prompt must stay under Apimart's 1000-character limit (APIMART.md).
pub const MAX_BODY_TEXT_CHARS: usize = 64;

/// The wire path of the body profile object in a default-model request.
pub const BODY_PROFILE_FIELD: &str = "body_profile";

/// The model's gender, `male` or `female` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    /// `male` (also accepted: `男`, any ASCII case of `male`).
    Male,
    /// `female` (also accepted: `女`, any ASCII case of `female`).
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

    /// Accepts `male`/`female` in any ASCII case and the Chinese `男`/`女`
    /// (the Java backend's users write either), ignoring surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("male") || t == "男" {
            Ok(Gender::Male)
        } else if t.eq_ignore_ascii_case("female") || t == "女" {
            Ok(Gender::Female)
        } else {
            Err(ParseEnumError {
                value: s.chars().take(64).collect(),
                expected: "male female 男 女",
            })
        }
    }
}

/// The body profile as received, before any check.
///
/// Field names are the wire names; the earlier Python service's names
/// (`height`, `weight`, `skin_color`, `body_type`) are accepted as aliases
/// (DESIGN.md, "Inputs").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BodyProfileInput {
    /// `male`/`female`/`男`/`女`; required.
    pub gender: Option<String>,
    /// Height in centimetres; required.
    #[serde(alias = "height")]
    pub height_cm: Option<f64>,
    /// Weight in kilograms; required.
    #[serde(alias = "weight")]
    pub weight_kg: Option<f64>,
    /// Age in years; required.
    pub age: Option<f64>,
    /// Free-text skin tone (e.g. `fair`, `olive`, `白皙`); required.
    #[serde(alias = "skin_color")]
    pub skin_tone: Option<String>,
    /// Free-text body shape (e.g. `hourglass`, `pear`); optional.
    #[serde(alias = "body_type")]
    pub body_shape: Option<String>,
}

/// A checked body profile: gender, positive finite measurements within human
/// bounds, a non-empty skin tone, an optional body shape.
///
/// Serialises with the canonical wire names (`gender`, `height_cm`,
/// `weight_kg`, `age`, `skin_tone`, `body_shape`) and deserialises through
/// [`BodyProfile::parse`], so a stored profile is re-checked when read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BodyProfile {
    gender: Gender,
    height_cm: f64,
    weight_kg: f64,
    age: f64,
    skin_tone: String,
    body_shape: Option<String>,
}

impl BodyProfile {
    /// Checks `input`, naming fields `body_profile.<name>` in errors.
    ///
    /// Rules: `gender` is `male`/`female` (any ASCII case) or `男`/`女`;
    /// `height_cm` in (0, [`MAX_HEIGHT_CM`]], `weight_kg` in (0, [`MAX_WEIGHT_KG`]],
    /// `age` in (0, [`MAX_AGE_YEARS`]], all finite; `skin_tone` non-empty and
    /// `body_shape` (empty means absent) at most [`MAX_BODY_TEXT_CHARS`]
    /// characters, both trimmed and free of control characters.
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
        let mut record = |field: &str, result: Result<(), String>| {
            if let Err(message) = result {
                errors.push(FieldError::new(name(field), message));
            }
        };
        let gender = parse_gender(input.gender.as_deref());
        record("gender", gender.as_ref().map(|_| ()).map_err(Clone::clone));
        let height = parse_measure(input.height_cm, MAX_HEIGHT_CM, "centimetres");
        record(
            "height_cm",
            height.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        let weight = parse_measure(input.weight_kg, MAX_WEIGHT_KG, "kilograms");
        record(
            "weight_kg",
            weight.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        let age = parse_measure(input.age, MAX_AGE_YEARS, "years");
        record("age", age.as_ref().map(|_| ()).map_err(Clone::clone));
        let skin_tone = parse_text(input.skin_tone.as_deref())
            .and_then(|t| t.ok_or_else(|| "is required".to_owned()));
        record(
            "skin_tone",
            skin_tone.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        let body_shape = parse_text(input.body_shape.as_deref());
        record(
            "body_shape",
            body_shape.as_ref().map(|_| ()).map_err(Clone::clone),
        );

        match (gender, height, weight, age, skin_tone, body_shape) {
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

    /// The model's gender.
    pub fn gender(&self) -> Gender {
        self.gender
    }

    /// Height in centimetres, in (0, 300].
    pub fn height_cm(&self) -> f64 {
        self.height_cm
    }

    /// Weight in kilograms, in (0, 500].
    pub fn weight_kg(&self) -> f64 {
        self.weight_kg
    }

    /// Age in years, in (0, 150].
    pub fn age(&self) -> f64 {
        self.age
    }

    /// Skin tone, trimmed, 1–64 characters.
    pub fn skin_tone(&self) -> &str {
        &self.skin_tone
    }

    /// Body shape, trimmed, 1–64 characters, if given.
    pub fn body_shape(&self) -> Option<&str> {
        self.body_shape.as_deref()
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
            serde::de::Error::custom(joined.join("; "))
        })
    }
}

fn parse_gender(value: Option<&str>) -> Result<Gender, String> {
    let Some(value) = value else {
        return Err("is required".to_owned());
    };
    value.parse().map_err(|e: ParseEnumError| {
        format!(
            "must be `male` or `female` (also `男` or `女`); got `{}`",
            e.value
        )
    })
}

fn parse_measure(value: Option<f64>, max: f64, unit: &str) -> Result<f64, String> {
    let Some(v) = value else {
        return Err("is required".to_owned());
    };
    if !v.is_finite() {
        return Err("must be a finite number".to_owned());
    }
    if v > 0.0 && v <= max {
        Ok(v)
    } else {
        Err(format!(
            "must be greater than 0 and at most {max} ({unit}); got {v}"
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
        assert_eq!(p.gender(), Gender::Female);
        assert_eq!(p.height_cm(), 165.0);
        assert_eq!(p.weight_kg(), 52.5);
        assert_eq!(p.age(), 28.0);
        assert_eq!(p.skin_tone(), "fair");
        assert_eq!(p.body_shape(), None, "an empty body_shape means absent");
    }

    #[test]
    fn gender_accepts_chinese_and_any_ascii_case() {
        for (s, g) in [
            ("男", Gender::Male),
            ("女", Gender::Female),
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
    fn an_empty_input_reports_every_required_field() {
        let errors = BodyProfile::parse(BodyProfileInput::default()).unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "body_profile.gender",
                "body_profile.height_cm",
                "body_profile.weight_kg",
                "body_profile.age",
                "body_profile.skin_tone",
            ]
        );
        assert!(errors.iter().all(|e| e.message == "is required"));
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
        input.age = Some(150.000_001);
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
    fn blank_skin_tone_is_missing() {
        let mut input = valid_input();
        input.skin_tone = Some(" \t ".into());
        let errors = BodyProfile::parse(input).unwrap_err();
        assert_eq!(fields(&errors), ["body_profile.skin_tone"]);
    }

    #[test]
    fn parse_at_names_fields_under_the_given_path() {
        let errors = BodyProfile::parse_at(BodyProfileInput::default(), "").unwrap_err();
        assert_eq!(errors[0].field, "gender");
        let errors = BodyProfile::parse_at(BodyProfileInput::default(), "profile").unwrap_err();
        assert_eq!(errors[1].field, "profile.height_cm");
    }

    #[test]
    fn deserialises_legacy_aliases_and_round_trips_through_json() {
        let json = serde_json::json!({
            "gender": "男", "height": 180, "weight": 75, "age": 30,
            "skin_color": "olive", "body_type": "athletic"
        });
        let p: BodyProfile = serde_json::from_value(json).unwrap();
        assert_eq!(p.gender(), Gender::Male);
        assert_eq!(p.height_cm(), 180.0);
        assert_eq!(p.body_shape(), Some("athletic"));
        let back: BodyProfile = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(serde_json::to_value(&p).unwrap()["gender"], "male");

        let bad = serde_json::json!({"gender": "x", "height_cm": 400});
        let err = serde_json::from_value::<BodyProfile>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("body_profile.height_cm"), "{err}");
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
        fn in_range_finite_profiles_are_accepted_unchanged(
            male in any::<bool>(),
            h in in_range(MAX_HEIGHT_CM),
            w in in_range(MAX_WEIGHT_KG),
            a in in_range(MAX_AGE_YEARS),
            skin in text().prop_filter("non-empty", |s| !s.is_empty()),
            shape in proptest::option::of(text()),
        ) {
            let input = BodyProfileInput {
                gender: Some(if male { "male" } else { "female" }.into()),
                height_cm: Some(h), weight_kg: Some(w), age: Some(a),
                skin_tone: Some(format!("  {skin}\t")),
                body_shape: shape.clone(),
            };
            let p = BodyProfile::parse(input).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(p.height_cm(), h);
            prop_assert_eq!(p.weight_kg(), w);
            prop_assert_eq!(p.age(), a);
            prop_assert_eq!(p.skin_tone(), skin.as_str());
            prop_assert_eq!(p.body_shape(), shape.as_deref().filter(|s| !s.is_empty()));
        }

        #[test]
        fn each_out_of_range_measure_is_rejected_naming_only_its_field(
            which in 0usize..3,
            bad_h in out_of_range(MAX_HEIGHT_CM),
            bad_w in out_of_range(MAX_WEIGHT_KG),
            bad_a in out_of_range(MAX_AGE_YEARS),
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
        fn too_long_text_is_rejected(extra in 1usize..100, c in "[a-z\u{4e00}-\u{4e2f}]") {
            let mut input = valid_input();
            input.body_shape = Some(c.repeat(MAX_BODY_TEXT_CHARS + extra));
            let errors = BodyProfile::parse(input).unwrap_err();
            prop_assert_eq!(fields(&errors), vec!["body_profile.body_shape"]);
        }

        #[test]
        fn parsing_any_gender_string_never_panics_and_accepts_only_known_words(s in ".*") {
            let known = ["male", "female"].iter().any(|w| s.trim().eq_ignore_ascii_case(w))
                || ["男", "女"].contains(&s.trim());
            prop_assert_eq!(s.parse::<Gender>().is_ok(), known);
        }
    }
}
