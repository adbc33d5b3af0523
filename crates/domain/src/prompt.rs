//! Prompt templates for the three jobs (README, "modelgen"), rendered
//! with minijinja.
//!
//! The built-in templates live in `crates/domain/templates/*.j2` and are
//! compiled into the binary; an operator can override any of them by putting a
//! file of the same name in a directory (see [`PromptTemplates::from_dir`]).
//! Every template is compiled and test-rendered when loaded, with strict
//! undefined variables, so a broken override stops startup with its file name
//! instead of failing every task later.
//!
//! Rendering is plain text (no auto-escaping). After rendering, each line is
//! trimmed and blank lines are dropped, so templates can be laid out freely;
//! the result is always shorter than [`MAX_PROMPT_CHARS`].

use std::fmt;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::body::{BodyProfile, Gender};
use crate::edit::EditInstructions;
use crate::outfit::OutfitDescription;
use crate::task::Angle;

/// Apimart's prompt length limit on several models, in characters
/// (docs/apimart.md, "Submit"). Rendered prompts are always strictly shorter; the
/// built-in templates stay well below it for every valid input (tested), and
/// an override that runs longer is cut at a word boundary.
pub const MAX_PROMPT_CHARS: usize = 1000;

/// Most garment images an outfit request may carry (README, "API": 1–5).
pub const MAX_OUTFIT_GARMENTS: usize = 5;

/// File name of the default-model template (F1).
pub const DEFAULT_TEMPLATE: &str = "default.j2";
/// File name of the edit template (F2).
pub const EDIT_TEMPLATE: &str = "edit.j2";
/// File name of the outfit template (F3).
pub const OUTFIT_TEMPLATE: &str = "outfit.j2";

const BUILTIN: [(&str, &str); 3] = [
    (DEFAULT_TEMPLATE, include_str!("../templates/default.j2")),
    (EDIT_TEMPLATE, include_str!("../templates/edit.j2")),
    (OUTFIT_TEMPLATE, include_str!("../templates/outfit.j2")),
];

/// Why templates could not be loaded or a prompt could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The template directory does not exist or is not a directory.
    #[error("prompt template directory {} does not exist or is not a directory", .path.display())]
    NotADirectory {
        /// The directory given.
        path: PathBuf,
    },
    /// A template file exists but cannot be read (permissions, not UTF-8 …).
    #[error("cannot read prompt template {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A template file does not compile, or fails (e.g. an undefined variable)
    /// when tried with sample values at load time.
    #[error("prompt template {} is invalid: {source}", .path.display())]
    InvalidTemplate {
        /// The file.
        path: PathBuf,
        /// The template engine's error, with line number.
        source: minijinja::Error,
    },
    /// A template file renders only whitespace with sample values at load time.
    #[error("prompt template {} renders an empty prompt", .path.display())]
    EmptyTemplate {
        /// The file.
        path: PathBuf,
    },
    /// Rendering failed (only possible with an override that passed the
    /// load-time check but fails on other values).
    #[error("prompt template {template} failed to render: {source}")]
    Render {
        /// The template name, e.g. `edit.j2`.
        template: &'static str,
        /// The template engine's error.
        source: minijinja::Error,
    },
    /// The template rendered only whitespace.
    #[error("prompt template {template} rendered an empty prompt")]
    EmptyPrompt {
        /// The template name.
        template: &'static str,
    },
    /// An outfit needs 1 to [`MAX_OUTFIT_GARMENTS`] garment images.
    #[error("an outfit needs 1 to {max} garment images; got {count}")]
    GarmentCount {
        /// The count given.
        count: usize,
        /// [`MAX_OUTFIT_GARMENTS`].
        max: usize,
    },
}

/// The three compiled prompt templates. Cheap to share behind an `Arc`;
/// rendering takes `&self`.
#[derive(Clone)]
pub struct PromptTemplates {
    env: Environment<'static>,
    /// Where each template came from, for messages: the override's path, or
    /// `builtin:<name>`.
    sources: [PathBuf; 3],
}

impl fmt::Debug for PromptTemplates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptTemplates")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl PromptTemplates {
    /// The built-in templates.
    #[expect(
        clippy::expect_used,
        reason = "the embedded templates are fixed at build time and compiled by the unit tests; \
                  a failure here is a programming error, not an input error"
    )]
    pub fn builtin() -> Self {
        let mut env = new_environment();
        for (name, source) in BUILTIN {
            env.add_template(name, source)
                .expect("built-in prompt templates compile");
        }
        PromptTemplates {
            env,
            sources: BUILTIN.map(|(name, _)| PathBuf::from(format!("builtin:{name}"))),
        }
    }

    /// The built-in templates, each replaced by `dir/<name>` when that file
    /// exists (`default.j2`, `edit.j2`, `outfit.j2`; other files are ignored).
    ///
    /// Each override is compiled and rendered with sample values for every
    /// branch the built-in context offers (a full body profile and an empty
    /// one, each angle, one and five garments, with and without an outfit
    /// description), so a syntax error, an undefined variable, an optional
    /// variable used without a guard (every body-profile variable but `person`
    /// and `article`, and `outfit_description`, may be undefined: test them with
    /// `{% if age is defined %}`), or an empty result fails here, naming the file.
    ///
    /// # Errors
    /// [`PromptError::NotADirectory`], [`PromptError::Io`],
    /// [`PromptError::InvalidTemplate`], [`PromptError::EmptyTemplate`].
    pub fn from_dir(dir: &Path) -> Result<Self, PromptError> {
        if !dir.is_dir() {
            return Err(PromptError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let mut templates = PromptTemplates::builtin();
        let mut overridden = Vec::new();
        for (i, (name, _)) in BUILTIN.into_iter().enumerate() {
            let path = dir.join(name);
            let source = match std::fs::read_to_string(&path) {
                Ok(source) => source,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(PromptError::Io { path, source }),
            };
            if let Err(source) = templates.env.add_template_owned(name, source) {
                return Err(PromptError::InvalidTemplate { path, source });
            }
            templates.sources[i] = path;
            overridden.push(i);
        }
        for i in overridden {
            templates.try_samples(BUILTIN[i].0).map_err(|e| {
                let path = templates.sources[i].clone();
                match e {
                    PromptError::Render { source, .. } => {
                        PromptError::InvalidTemplate { path, source }
                    }
                    PromptError::EmptyPrompt { .. } => PromptError::EmptyTemplate { path },
                    other => other,
                }
            })?;
        }
        Ok(templates)
    }

    /// Where each template was loaded from, in the order default, edit,
    /// outfit: a file path, or `builtin:<name>`.
    pub fn sources(&self) -> &[PathBuf; 3] {
        &self.sources
    }

    /// The default-model prompt (F1) for `profile`. Image 1 is the user's photo.
    /// Fields missing from the profile are left out of the context (see
    /// `templates/default.j2` for the variables).
    ///
    /// # Errors
    /// [`PromptError::Render`] or [`PromptError::EmptyPrompt`], only with an
    /// override template.
    pub fn render_default(&self, profile: &BodyProfile) -> Result<String, PromptError> {
        self.render(DEFAULT_TEMPLATE, DefaultContext::of(profile))
    }

    /// The edit prompt (F2). Image 1 is the base model.
    ///
    /// The instructions are inserted as text: template syntax inside them is
    /// not evaluated.
    ///
    /// # Errors
    /// [`PromptError::Render`] or [`PromptError::EmptyPrompt`], only with an
    /// override template.
    pub fn render_edit(&self, instructions: &EditInstructions) -> Result<String, PromptError> {
        self.render(
            EDIT_TEMPLATE,
            EditContext {
                instructions: instructions.as_str(),
            },
        )
    }

    /// The outfit prompt (F3) for `angle` with `garment_count` garments and
    /// the client's optional `description` of the outfit. Image 1 is the base
    /// model, images 2 to `garment_count + 1` the garments.
    ///
    /// # Errors
    /// [`PromptError::GarmentCount`] unless `1 <= garment_count <= 5`;
    /// [`PromptError::Render`] or [`PromptError::EmptyPrompt`] with an override.
    pub fn render_outfit(
        &self,
        angle: Angle,
        garment_count: usize,
        description: Option<&OutfitDescription>,
    ) -> Result<String, PromptError> {
        if !(1..=MAX_OUTFIT_GARMENTS).contains(&garment_count) {
            return Err(PromptError::GarmentCount {
                count: garment_count,
                max: MAX_OUTFIT_GARMENTS,
            });
        }
        self.render(
            OUTFIT_TEMPLATE,
            OutfitContext {
                angle: angle.as_str(),
                garment_count,
                outfit_description: description.map(OutfitDescription::as_str),
            },
        )
    }

    fn render(&self, template: &'static str, ctx: impl Serialize) -> Result<String, PromptError> {
        let rendered = self
            .env
            .get_template(template)
            .and_then(|t| t.render(minijinja::value::Serde(ctx)))
            .map_err(|source| PromptError::Render { template, source })?;
        let prompt = fit_prompt(&rendered);
        if prompt.is_empty() {
            return Err(PromptError::EmptyPrompt { template });
        }
        Ok(prompt)
    }

    /// Renders `template` with sample values covering each branch the
    /// built-in context can take.
    fn try_samples(&self, template: &'static str) -> Result<(), PromptError> {
        match template {
            DEFAULT_TEMPLATE => {
                let full = BodyProfile::parse(crate::body::BodyProfileInput {
                    gender: Some("female".into()),
                    height_cm: Some(170.0),
                    weight_kg: Some(60.5),
                    age: Some(28.0),
                    skin_tone: Some("fair".into()),
                    body_shape: Some("hourglass".into()),
                })
                .unwrap_or_default();
                let teen = BodyProfile::parse(crate::body::BodyProfileInput {
                    gender: Some("male".into()),
                    age: Some(15.0),
                    ..Default::default()
                })
                .unwrap_or_default();
                for profile in [full, teen, BodyProfile::default()] {
                    self.render(template, DefaultContext::of(&profile))?;
                }
            }
            EDIT_TEMPLATE => {
                self.render(
                    template,
                    EditContext {
                        instructions: "Make the hair short and blond.\nAdd glasses.",
                    },
                )?;
            }
            _ => {
                let description = OutfitDescription::parse("white T-shirt with blue jeans")
                    .ok()
                    .flatten();
                for angle in Angle::ALL {
                    for count in [1, MAX_OUTFIT_GARMENTS] {
                        for description in [None, description.as_ref()] {
                            self.render_outfit(*angle, count, description)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Default for PromptTemplates {
    fn default() -> Self {
        PromptTemplates::builtin()
    }
}

/// Variables of `default.j2`. Absent profile fields are left out (undefined
/// in the template), so a template tests them with `{% if … is defined %}`.
#[derive(Serialize)]
struct DefaultContext<'a> {
    /// `woman`, `man`, `person`, `teenage girl`, … from gender and age.
    person: &'static str,
    /// `a` or `an`, the article for the phrase that starts with the age (or,
    /// without an age, with `person`).
    article: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gender: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height_cm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight_kg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skin_tone: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_shape: Option<&'a str>,
}

impl<'a> DefaultContext<'a> {
    fn of(profile: &'a BodyProfile) -> Self {
        let age = profile.age();
        let person = person_noun(profile.gender(), age);
        DefaultContext {
            person,
            article: match age {
                Some(a) => article_for_age(a),
                None => "a",
            },
            gender: profile.gender().map(|g| g.as_str()),
            age: age.map(|a| a.to_string()),
            height_cm: profile.height_cm().map(format_number),
            weight_kg: profile.weight_kg().map(format_number),
            skin_tone: profile.skin_tone(),
            body_shape: profile.body_shape(),
        }
    }
}

/// Variables of `edit.j2`.
#[derive(Serialize)]
struct EditContext<'a> {
    instructions: &'a str,
}

/// Variables of `outfit.j2`.
#[derive(Serialize)]
struct OutfitContext<'a> {
    angle: &'static str,
    garment_count: usize,
    /// The client's description of the outfit; undefined when not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    outfit_description: Option<&'a str>,
}

fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Prompts are plain text: HTML escaping would turn `don't` into `don&#x27;t`.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Any use of an undefined variable fails, even in an `{% if %}`: a typo is
    // caught, and an optional variable must be tested with `is defined`.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// How the default prompt names the person: image models follow "a 28-year-old
/// woman" better than a bare gender, and children need other words. Without a
/// gender the words are neutral; without an age, adult.
fn person_noun(gender: Option<Gender>, age: Option<u8>) -> &'static str {
    let stage = match age {
        Some(a) if a < 13 => 0,
        Some(a) if a < 18 => 1,
        _ => 2,
    };
    match (gender, stage) {
        (Some(Gender::Female), 0) => "girl",
        (Some(Gender::Male), 0) => "boy",
        (None, 0) => "child",
        (Some(Gender::Female), 1) => "teenage girl",
        (Some(Gender::Male), 1) => "teenage boy",
        (None, 1) => "teenager",
        (Some(Gender::Female), _) => "woman",
        (Some(Gender::Male), _) => "man",
        (None, _) => "person",
    }
}

/// `an` before an age said with a leading vowel sound (8, 11, 18, 80–89),
/// else `a`: "an 18-year-old", "a 28-year-old".
fn article_for_age(age: u8) -> &'static str {
    if age == 8 || age == 11 || age == 18 || (80..90).contains(&age) {
        "an"
    } else {
        "a"
    }
}

/// A measurement with at most one decimal and no trailing `.0`: `170`, `52.5`.
fn format_number(value: f64) -> String {
    let s = format!("{value:.1}");
    match s.strip_suffix(".0") {
        Some(whole) => whole.to_owned(),
        None => s,
    }
}

/// Trims every line, drops blank lines, and cuts the result below
/// [`MAX_PROMPT_CHARS`] characters, at the last space within the final 100
/// characters when there is one, so that no word is split.
fn fit_prompt(rendered: &str) -> String {
    let mut prompt = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let limit = MAX_PROMPT_CHARS - 1;
    if let Some((cut, _)) = prompt.char_indices().nth(limit) {
        let head = &prompt[..cut];
        let at_space = head
            .char_indices()
            .rev()
            .take(100)
            .find(|(_, c)| c.is_whitespace())
            .map_or(cut, |(i, _)| i);
        prompt.truncate(at_space);
        prompt.truncate(prompt.trim_end().len());
    }
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::BodyProfileInput;
    use proptest::prelude::*;

    fn profile(gender: &str, age: f64, body_shape: Option<&str>) -> BodyProfile {
        BodyProfile::parse(BodyProfileInput {
            gender: Some(gender.into()),
            height_cm: Some(165.0),
            weight_kg: Some(52.5),
            age: Some(age),
            skin_tone: Some("light olive".into()),
            body_shape: body_shape.map(Into::into),
        })
        .unwrap()
    }

    fn partial(json: serde_json::Value) -> BodyProfile {
        serde_json::from_value(json).unwrap()
    }

    fn description(s: &str) -> OutfitDescription {
        OutfitDescription::parse(s).unwrap().unwrap()
    }

    fn chars(s: &str) -> usize {
        s.chars().count()
    }

    #[test]
    fn default_prompt_describes_the_profile() {
        let p = PromptTemplates::builtin()
            .render_default(&profile("女", 28.0, Some("pear")))
            .unwrap();
        assert!(
            p.starts_with("Full-body e-commerce fashion photo of a digital model based on the person in image 1: a 28-year-old woman, 165 cm tall, 52.5 kg, skin tone: light olive, body shape: pear."),
            "{p}"
        );
        assert!(p.contains("Keep the face"), "{p}");
        assert!(!p.contains("\n\n") && !p.contains("{{"), "{p}");

        let p = PromptTemplates::builtin()
            .render_default(&profile("male", 9.0, None))
            .unwrap();
        assert!(
            p.contains("a 9-year-old boy, 165 cm tall, 52.5 kg, skin tone: light olive."),
            "{p}"
        );
        assert!(!p.contains("body shape"), "{p}");

        let p = PromptTemplates::builtin()
            .render_default(&profile("female", 18.0, None))
            .unwrap();
        assert!(p.contains(": an 18-year-old woman, 165 cm"), "{p}");
    }

    #[test]
    fn missing_profile_fields_are_left_out_of_the_default_prompt() {
        let t = PromptTemplates::builtin();
        let p = t
            .render_default(&partial(serde_json::json!({"gender": "女", "height": 165})))
            .unwrap();
        assert!(
            p.starts_with("Full-body e-commerce fashion photo of a digital model based on the person in image 1: a woman, 165 cm tall.\n"),
            "{p}"
        );
        assert!(p.contains("Body proportions must match the height."), "{p}");
        for absent in ["year-old", " kg", "skin tone", "body shape", "weight"] {
            assert!(!p.contains(absent), "{absent} in {p}");
        }

        let p = t.render_default(&BodyProfile::default()).unwrap();
        assert!(
            p.starts_with("Full-body e-commerce fashion photo of a digital model based on the person in image 1: a person.\n"),
            "{p}"
        );
        assert!(
            p.contains("Keep the body proportions of the person in image 1."),
            "{p}"
        );
        assert!(
            !p.contains("none") && !p.contains("  ") && !p.contains(" ,"),
            "{p}"
        );

        let p = t
            .render_default(&partial(
                serde_json::json!({"age": 11, "weight_kg": 40, "skin_tone": "fair"}),
            ))
            .unwrap();
        assert!(
            p.contains(": an 11-year-old child, 40 kg, skin tone: fair."),
            "{p}"
        );
        assert!(p.contains("Body proportions must match the weight."), "{p}");
        let p = t
            .render_default(&partial(
                serde_json::json!({"age": 16, "body_shape": "slim"}),
            ))
            .unwrap();
        assert!(
            p.contains(": a 16-year-old teenager, body shape: slim."),
            "{p}"
        );
    }

    #[test]
    fn edit_prompt_inserts_instructions_verbatim() {
        let e =
            EditInstructions::parse("Make the hair {{ short }} & <blond>, don't smile").unwrap();
        let p = PromptTemplates::builtin().render_edit(&e).unwrap();
        assert!(
            p.contains("\nMake the hair {{ short }} & <blond>, don't smile\n"),
            "{p}"
        );
    }

    #[test]
    fn outfit_prompt_numbers_images_and_describes_the_angle() {
        let t = PromptTemplates::builtin();
        let one = t.render_outfit(Angle::Front, 1, None).unwrap();
        assert!(
            one.starts_with("Dress the model from image 1 in the garment shown in image 2."),
            "{one}"
        );
        assert!(one.contains("Front view"), "{one}");
        let five = t.render_outfit(Angle::Back, 5, None).unwrap();
        assert!(
            five.contains("the 5 garments shown in images 2 to 6, combined into one outfit"),
            "{five}"
        );
        assert!(
            five.contains("Back view") && !five.contains("Front view"),
            "{five}"
        );
        assert!(
            t.render_outfit(Angle::Side, 3, None)
                .unwrap()
                .contains("in profile")
        );
        assert!(!one.contains("describes"), "{one}");
        assert!(matches!(
            t.render_outfit(Angle::Side, 0, None),
            Err(PromptError::GarmentCount { count: 0, max: 5 })
        ));
        assert!(matches!(
            t.render_outfit(Angle::Side, 6, None),
            Err(PromptError::GarmentCount { .. })
        ));
    }

    #[test]
    fn outfit_prompt_carries_the_clients_description() {
        let t = PromptTemplates::builtin();
        let p = t
            .render_outfit(
                Angle::Front,
                2,
                Some(&description("白色T恤搭配牛仔裤和运动鞋")),
            )
            .unwrap();
        assert!(
            p.contains("\nThe outfit as the client describes it: 白色T恤搭配牛仔裤和运动鞋\nReproduce each garment"),
            "{p}"
        );
        let longest = description(&"裤".repeat(crate::outfit::MAX_OUTFIT_DESCRIPTION_CHARS));
        let p = t.render_outfit(Angle::Side, 5, Some(&longest)).unwrap();
        assert!(p.ends_with("no other people."), "truncated: {p}");
        assert!(chars(&p) < MAX_PROMPT_CHARS, "{}", chars(&p));
    }

    #[test]
    fn builtin_prompts_stay_far_below_the_limit_for_extreme_inputs() {
        let t = PromptTemplates::builtin();
        let longest = EditInstructions::parse(&"长".repeat(MAX_EDIT_INSTRUCTIONS)).unwrap();
        let p = t.render_edit(&longest).unwrap();
        assert!(p.ends_with("no watermark."), "not truncated: {p}");
        assert!(chars(&p) < MAX_PROMPT_CHARS - 50, "{}", chars(&p));

        let big = BodyProfile::parse(BodyProfileInput {
            gender: Some("female".into()),
            height_cm: Some(299.99),
            weight_kg: Some(499.95),
            age: Some(149.0),
            skin_tone: Some("w".repeat(64)),
            body_shape: Some("w".repeat(64)),
        })
        .unwrap();
        assert!(chars(&t.render_default(&big).unwrap()) < MAX_PROMPT_CHARS - 200);
        assert!(chars(&t.render_outfit(Angle::Side, 5, None).unwrap()) < MAX_PROMPT_CHARS - 200);
    }

    const MAX_EDIT_INSTRUCTIONS: usize = crate::edit::MAX_EDIT_INSTRUCTIONS_CHARS;

    #[test]
    fn fit_prompt_cuts_at_a_word_boundary_below_the_limit() {
        let long = "word ".repeat(400);
        let p = fit_prompt(&long);
        assert!(chars(&p) < MAX_PROMPT_CHARS);
        assert!(p.ends_with("word"), "{p}");
        let unbroken = "长".repeat(2000);
        assert_eq!(chars(&fit_prompt(&unbroken)), MAX_PROMPT_CHARS - 1);
        assert_eq!(fit_prompt("  a  \n\n \t\n  b "), "a\nb");
    }

    #[test]
    fn format_number_drops_a_trailing_zero_decimal() {
        assert_eq!(format_number(170.0), "170");
        assert_eq!(format_number(52.5), "52.5");
        assert_eq!(format_number(52.46), "52.5");
        assert_eq!(format_number(0.01), "0");
    }

    #[test]
    fn templates_render_plain_text_without_escaping() {
        let t = PromptTemplates::builtin();
        let e = EditInstructions::parse("a \"b\" <c> & 'd'").unwrap();
        assert!(t.render_edit(&e).unwrap().contains("a \"b\" <c> & 'd'"));
    }

    proptest! {
        #[test]
        fn default_prompt_renders_for_any_valid_profile_below_the_limit(
            gender in proptest::option::of(prop_oneof![Just("female"), Just("male")]),
            h in proptest::option::of(1e-9f64..=300.0), w in proptest::option::of(1e-9f64..=500.0),
            a in proptest::option::of(1u8..=150),
            skin in proptest::option::of("\\PC{1,64}"), shape in proptest::option::of("\\PC{0,64}"),
        ) {
            let input = BodyProfileInput {
                gender: gender.map(Into::into),
                height_cm: h, weight_kg: w, age: a.map(f64::from),
                skin_tone: skin, body_shape: shape,
            };
            let p = BodyProfile::parse(input).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let prompt = PromptTemplates::builtin().render_default(&p)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(chars(&prompt) < MAX_PROMPT_CHARS);
            prop_assert!(prompt.ends_with("no props."), "truncated: {}", prompt);
            if let Some(skin) = p.skin_tone() {
                let expected = format!("skin tone: {skin}");
                prop_assert!(prompt.contains(&expected));
            } else {
                prop_assert!(!prompt.contains("skin tone:"));
            }
            prop_assert_eq!(prompt.contains("-year-old"), p.age().is_some());
            prop_assert_eq!(prompt.contains(" cm tall"), p.height_cm().is_some());
            prop_assert_eq!(prompt.contains(" kg"), p.weight_kg().is_some());
        }

        #[test]
        fn edit_prompt_renders_for_any_valid_instructions_below_the_limit_untruncated(
            s in "(\\PC|\n|\t){1,500}",
        ) {
            if let Ok(e) = EditInstructions::parse(&s) {
                let prompt = PromptTemplates::builtin().render_edit(&e)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(chars(&prompt) < MAX_PROMPT_CHARS);
                prop_assert!(prompt.ends_with("no watermark."));
            }
        }

        #[test]
        fn outfit_prompt_renders_for_every_angle_and_count_below_the_limit(
            i in 0usize..3, count in 1usize..=MAX_OUTFIT_GARMENTS,
        ) {
            let prompt = PromptTemplates::builtin().render_outfit(Angle::ALL[i], count, None)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(chars(&prompt) < MAX_PROMPT_CHARS);
            let last_image = format!("image {}", count + 1);
            let last_images = format!("images 2 to {}", count + 1);
            prop_assert!(prompt.contains(&last_image) || prompt.contains(&last_images));
        }

        #[test]
        fn fit_prompt_always_ends_below_the_limit(s in "(\\PC|\n| ){0,1500}") {
            prop_assert!(chars(&fit_prompt(&s)) < MAX_PROMPT_CHARS);
        }
    }
}
