//! Prompt templates for the three jobs (DESIGN.md, "The three jobs"), rendered
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
use crate::task::Angle;

/// Apimart's prompt length limit on several models, in characters
/// (APIMART.md, "Submit"). Rendered prompts are always strictly shorter; the
/// built-in templates stay well below it for every valid input (tested), and
/// an override that runs longer is cut at a word boundary.
pub const MAX_PROMPT_CHARS: usize = 1000;

/// Most garment images an outfit request may carry (DESIGN.md: 1–5).
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
    /// branch the built-in context offers (with and without `body_shape`, each
    /// angle, one and five garments), so a syntax error, an undefined variable
    /// or an empty result fails here, naming the file.
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
    ///
    /// # Errors
    /// [`PromptError::Render`] or [`PromptError::EmptyPrompt`], only with an
    /// override template.
    pub fn render_default(&self, profile: &BodyProfile) -> Result<String, PromptError> {
        let ctx = DefaultContext {
            gender: profile.gender().as_str(),
            person: person_noun(profile.gender(), profile.age()),
            age: format_number(profile.age()),
            height_cm: format_number(profile.height_cm()),
            weight_kg: format_number(profile.weight_kg()),
            skin_tone: profile.skin_tone(),
            body_shape: profile.body_shape(),
        };
        self.render(DEFAULT_TEMPLATE, ctx)
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

    /// The outfit prompt (F3) for `angle` with `garment_count` garments.
    /// Image 1 is the base model, images 2 to `garment_count + 1` the garments.
    ///
    /// # Errors
    /// [`PromptError::GarmentCount`] unless `1 <= garment_count <= 5`;
    /// [`PromptError::Render`] or [`PromptError::EmptyPrompt`] with an override.
    pub fn render_outfit(&self, angle: Angle, garment_count: usize) -> Result<String, PromptError> {
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
                for (gender, age, body_shape) in [
                    (Gender::Female, 28.0, Some("hourglass")),
                    (Gender::Male, 15.5, None),
                ] {
                    let ctx = DefaultContext {
                        gender: gender.as_str(),
                        person: person_noun(gender, age),
                        age: format_number(age),
                        height_cm: "170".to_owned(),
                        weight_kg: "60.5".to_owned(),
                        skin_tone: "fair",
                        body_shape,
                    };
                    self.render(template, ctx)?;
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
                for angle in Angle::ALL {
                    for count in [1, MAX_OUTFIT_GARMENTS] {
                        self.render_outfit(*angle, count)?;
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

/// Variables of `default.j2`.
#[derive(Serialize)]
struct DefaultContext<'a> {
    gender: &'static str,
    person: &'static str,
    age: String,
    height_cm: String,
    weight_kg: String,
    skin_tone: &'a str,
    body_shape: Option<&'a str>,
}

/// Variables of `edit.j2`.
#[derive(Serialize)]
struct EditContext<'a> {
    instructions: &'a str,
}

/// Variables of `outfit.j2`.
#[derive(Serialize)]
struct OutfitContext {
    angle: &'static str,
    garment_count: usize,
}

fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Prompts are plain text: HTML escaping would turn `don't` into `don&#x27;t`.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// How the default prompt names the person: image models follow "a 28-year-old
/// woman" better than a bare gender, and children need other words.
fn person_noun(gender: Gender, age: f64) -> &'static str {
    match (gender, age) {
        (Gender::Female, a) if a < 13.0 => "girl",
        (Gender::Male, a) if a < 13.0 => "boy",
        (Gender::Female, a) if a < 18.0 => "teenage girl",
        (Gender::Male, a) if a < 18.0 => "teenage boy",
        (Gender::Female, _) => "woman",
        (Gender::Male, _) => "man",
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
        let one = t.render_outfit(Angle::Front, 1).unwrap();
        assert!(
            one.starts_with("Dress the model from image 1 in the garment shown in image 2."),
            "{one}"
        );
        assert!(one.contains("Front view"), "{one}");
        let five = t.render_outfit(Angle::Back, 5).unwrap();
        assert!(
            five.contains("the 5 garments shown in images 2 to 6, combined into one outfit"),
            "{five}"
        );
        assert!(
            five.contains("Back view") && !five.contains("Front view"),
            "{five}"
        );
        assert!(
            t.render_outfit(Angle::Side, 3)
                .unwrap()
                .contains("in profile")
        );
        assert!(matches!(
            t.render_outfit(Angle::Side, 0),
            Err(PromptError::GarmentCount { count: 0, max: 5 })
        ));
        assert!(matches!(
            t.render_outfit(Angle::Side, 6),
            Err(PromptError::GarmentCount { .. })
        ));
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
            age: Some(149.5),
            skin_tone: Some("w".repeat(64)),
            body_shape: Some("w".repeat(64)),
        })
        .unwrap();
        assert!(chars(&t.render_default(&big).unwrap()) < MAX_PROMPT_CHARS - 200);
        assert!(chars(&t.render_outfit(Angle::Side, 5).unwrap()) < MAX_PROMPT_CHARS - 200);
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
            female in any::<bool>(),
            h in 1e-9f64..=300.0, w in 1e-9f64..=500.0, a in 1e-9f64..=150.0,
            skin in "\\PC{1,64}", shape in proptest::option::of("\\PC{0,64}"),
        ) {
            let input = BodyProfileInput {
                gender: Some(if female { "female" } else { "male" }.into()),
                height_cm: Some(h), weight_kg: Some(w), age: Some(a),
                skin_tone: Some(skin), body_shape: shape,
            };
            // Some generated texts are blank; those profiles are invalid and out of scope.
            if let Ok(p) = BodyProfile::parse(input) {
                let prompt = PromptTemplates::builtin().render_default(&p)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(chars(&prompt) < MAX_PROMPT_CHARS);
                prop_assert!(prompt.contains(p.skin_tone()));
            }
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
            let prompt = PromptTemplates::builtin().render_outfit(Angle::ALL[i], count)
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
