//! Domain-level properties and file-based tests of `modelgen-domain`, through
//! its public API only: the seed properties 2, 3 and 5, and prompt template
//! overrides read from a directory.

use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use modelgen_domain::{
    Angle, BodyProfile, BodyProfileInput, EditInstructions, FieldError, ImageInput,
    ImageInputError, ImageMime, MAX_PROMPT_CHARS, PromptError, PromptTemplates,
};
use proptest::prelude::*;

#[path = "domain/fuzz.rs"]
mod fuzz;

const PNG: &[u8] = include_bytes!("fixtures/tiny.png");
const JPEG: &[u8] = include_bytes!("fixtures/tiny.jpg");
const WEBP: &[u8] = include_bytes!("fixtures/tiny.webp");
const MAX_BYTES: usize = 1 << 20;

/// A valid image: one of the fixtures plus a random tail (so that every
/// base64 padding length occurs).
fn image() -> impl Strategy<Value = (ImageMime, Vec<u8>)> {
    (0usize..3, proptest::collection::vec(any::<u8>(), 0..32)).prop_map(|(i, extra)| {
        let (mime, head) = [
            (ImageMime::Png, PNG),
            (ImageMime::Jpeg, JPEG),
            (ImageMime::Webp, WEBP),
        ][i];
        (
            mime,
            modelgen_domain::image::with_private_chunk(mime, head, &extra),
        )
    })
}

/// Ways to spoil a valid data URI, each of which must be refused.
#[derive(Debug, Clone)]
enum Mutation {
    /// Declare another of the three image types.
    OtherImageType(usize),
    /// Declare a type we do not accept.
    UnsupportedType(&'static str),
    /// Drop the `;base64` marker.
    NoBase64Marker,
    /// Replace one symbol with a URL-safe `-` or `_`.
    UrlSafe(proptest::sample::Index, bool),
    /// Remove 1–3 trailing symbols (padding or data).
    Truncate(usize),
    /// Insert characters outside the alphabet (and not whitespace).
    Garbage(proptest::sample::Index, String),
    /// Append a whole extra quad after the padding.
    DataAfterPadding,
    /// Drop everything after the comma.
    NoData,
    /// Drop the comma between header and data.
    NoComma,
    /// Replace the payload by valid base64 of bytes that are no image.
    NotAnImage(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (1usize..3).prop_map(Mutation::OtherImageType),
        prop::sample::select(vec![
            "image/gif",
            "image/svg+xml",
            "text/plain",
            "",
            "image/png+x",
            "image"
        ])
        .prop_map(Mutation::UnsupportedType),
        Just(Mutation::NoBase64Marker),
        (any::<proptest::sample::Index>(), any::<bool>())
            .prop_map(|(i, d)| Mutation::UrlSafe(i, d)),
        (1usize..=3).prop_map(Mutation::Truncate),
        (
            any::<proptest::sample::Index>(),
            prop_oneof![
                "[!#$%&*.:;@~()\\[\\]{}<>?,|^`\"'\\\\\u{0}\u{b}\u{c}]{1,3}",
                "[\u{80}-\u{2fff}]{1,3}",
            ]
        )
            .prop_map(|(i, g)| Mutation::Garbage(i, g)),
        Just(Mutation::DataAfterPadding),
        Just(Mutation::NoData),
        Just(Mutation::NoComma),
        proptest::collection::vec(any::<u8>(), 1..64)
            .prop_filter("no image magic", |b| ImageMime::sniff(b).is_none())
            .prop_map(Mutation::NotAnImage),
    ]
}

proptest! {
    /// Seed property 2: a valid data URI spoilt in any of the ways a client
    /// gets wrong (wrong or unsupported type, no `;base64`, URL-safe alphabet,
    /// broken padding, garbage, no data, non-image bytes) is rejected.
    #[test]
    fn invalid_data_uri_rejected((mime, bytes) in image(), m in mutation()) {
        let b64 = STANDARD.encode(&bytes);
        let mut header = format!("data:{mime};base64");
        let mut data = b64.clone();
        match &m {
            Mutation::OtherImageType(k) => {
                let i = ImageMime::ALL.iter().position(|x| *x == mime).unwrap_or(0);
                header = format!("data:{};base64", ImageMime::ALL[(i + k) % 3]);
            }
            Mutation::UnsupportedType(t) => header = format!("data:{t};base64"),
            Mutation::NoBase64Marker => header = format!("data:{mime}"),
            Mutation::UrlSafe(at, dash) => {
                let i = at.index(b64.trim_end_matches('=').len());
                data.replace_range(i..=i, if *dash { "-" } else { "_" });
            }
            Mutation::Truncate(n) => data.truncate(b64.len() - n),
            Mutation::Garbage(at, g) => data.insert_str(at.index(b64.len() + 1), g),
            Mutation::DataAfterPadding => {
                prop_assume!(b64.ends_with('='));
                data.push_str("AAAA");
            }
            Mutation::NoData => data.clear(),
            Mutation::NoComma => {}
            Mutation::NotAnImage(other) => data = STANDARD.encode(other),
        }
        let s = match m {
            Mutation::NoComma => format!("{header}{data}"),
            _ => format!("{header},{data}"),
        };
        let result = ImageInput::parse(&s, MAX_BYTES);
        prop_assert!(result.is_err(), "accepted after {:?}: {:?}", m, result);
        // The unspoilt URI is accepted, so the mutation is what was refused.
        let original = format!("data:{mime};base64,{b64}");
        prop_assert!(ImageInput::parse(&original, MAX_BYTES).is_ok());
    }

    /// Seed property 3: a body profile with any subset of its measurements out
    /// of range (≤ 0, above the maximum, NaN, ±∞, or a fractional age) is
    /// rejected, and the errors name exactly those fields. Missing fields are
    /// not errors: every body-profile field is optional (docs/legacy.md).
    #[test]
    fn out_of_range_body_profile_rejected(
        bad in proptest::collection::vec(any::<bool>(), 3).prop_filter("at least one bad field", |b| b.contains(&true)),
        values in proptest::collection::vec(bad_measure(), 3),
        good in (proptest::option::of(1e-6f64..=300.0), proptest::option::of(1e-6f64..=500.0), proptest::option::of(1u8..=150)),
    ) {
        let maxes = [300.0, 500.0, 150.0];
        let names = ["body_profile.height_cm", "body_profile.weight_kg", "body_profile.age"];
        let goods = [good.0, good.1, good.2.map(f64::from)];
        let pick = |i: usize| -> Option<f64> {
            if bad[i] { Some(values[i].resolve(maxes[i])) } else { goods[i] }
        };
        let input = BodyProfileInput {
            gender: Some("female".into()),
            height_cm: pick(0),
            weight_kg: pick(1),
            age: pick(2),
            skin_tone: Some("medium".into()),
            body_shape: None,
        };
        let errors: Vec<FieldError> = BodyProfile::parse(input).err().unwrap_or_default();
        let named: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        let expected: Vec<&str> = (0..3).filter(|i| bad[*i]).map(|i| names[i]).collect();
        prop_assert_eq!(named, expected);
        prop_assert!(errors.iter().all(|e| !e.message.is_empty()));
    }

    /// Seed property 5: every string other than `front`, `side`, `back`
    /// (including other cases and padded spellings) fails `Angle::from_str`.
    #[test]
    fn invalid_angle_rejected(s in prop_oneof![
        ".*",
        "(front|side|back)",
        " ?(Front|SIDE|Back|fronT|side |back\n| front)",
        "(front|side|back)[a-z]{1,3}",
    ]) {
        let valid = ["front", "side", "back"].contains(&s.as_str());
        prop_assert_eq!(Angle::from_str(&s).is_ok(), valid, "{:?}", s);
        if let Ok(a) = Angle::from_str(&s) {
            prop_assert_eq!(a.as_str(), s.as_str());
        }
    }

    /// Every valid profile, instruction and outfit renders with the built-in
    /// templates into a prompt below Apimart's limit.
    #[test]
    fn builtin_prompts_render_below_the_limit(
        h in 1e-6f64..=300.0, w in 1e-6f64..=500.0, a in 1u8..=150,
        skin in "[^\\p{C}\\s]\\PC{0,63}", shape in proptest::option::of("[^\\p{C}\\s]\\PC{0,63}"),
        instructions in "[^\\p{C}\\s](\\PC|\n){0,499}",
        angle in 0usize..3, garments in 1usize..=5,
    ) {
        let templates = PromptTemplates::builtin();
        let profile = BodyProfile::parse(BodyProfileInput {
            gender: Some("男".into()),
            height_cm: Some(h), weight_kg: Some(w), age: Some(f64::from(a)),
            skin_tone: Some(skin), body_shape: shape,
        }).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let edit = EditInstructions::parse(&instructions).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for prompt in [
            templates.render_default(&profile),
            templates.render_edit(&edit),
            templates.render_outfit(Angle::ALL[angle], garments, None),
        ] {
            let prompt = prompt.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(prompt.chars().count() < MAX_PROMPT_CHARS);
        }
    }
}

/// An out-of-range value, resolved against the field's maximum.
#[derive(Debug, Clone, Copy)]
enum BadMeasure {
    Zero,
    Negative(f64),
    AboveMax(f64),
    NaN,
    Infinite(bool),
    /// Half-way between two whole numbers in range: bad for the age only,
    /// so it is resolved to an out-of-range value for the other fields.
    Fractional(f64),
}

impl BadMeasure {
    fn resolve(self, max: f64) -> f64 {
        match self {
            BadMeasure::Zero => 0.0,
            BadMeasure::Negative(v) => -v,
            BadMeasure::AboveMax(f) => max * (1.0 + f),
            BadMeasure::NaN => f64::NAN,
            BadMeasure::Infinite(neg) => {
                if neg {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }
            }
            BadMeasure::Fractional(f) if max == 150.0 => (f * 149.0).floor() + 1.5,
            BadMeasure::Fractional(f) => -f - 1.0,
        }
    }
}

fn bad_measure() -> impl Strategy<Value = BadMeasure> {
    prop_oneof![
        Just(BadMeasure::Zero),
        (f64::MIN_POSITIVE..1e300).prop_map(BadMeasure::Negative),
        (1e-9f64..1e6).prop_map(BadMeasure::AboveMax),
        Just(BadMeasure::NaN),
        any::<bool>().prop_map(BadMeasure::Infinite),
        (0.0f64..1.0).prop_map(BadMeasure::Fractional),
    ]
}

#[expect(
    clippy::unwrap_used,
    reason = "test helper: a panic fails the calling test"
)]
fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[expect(
    clippy::unwrap_used,
    reason = "test helper: a panic fails the calling test"
)]
fn sample_profile() -> BodyProfile {
    BodyProfile::parse(BodyProfileInput {
        gender: Some("female".into()),
        height_cm: Some(170.0),
        weight_kg: Some(58.0),
        age: Some(31.0),
        skin_tone: Some("tan".into()),
        body_shape: Some("athletic".into()),
    })
    .unwrap()
}

#[test]
fn an_override_replaces_only_its_own_template() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "default.j2",
        "A {% if age is defined %}{{ age }}-year-old {% endif %}{{ person }}{% if gender is defined %} ({{ gender }}){% endif %}{% if height_cm is defined %}, {{ height_cm }} cm{% endif %}{% if weight_kg is defined %}, {{ weight_kg }} kg{% endif %}{% if skin_tone is defined %}, {{ skin_tone }}{% endif %}{% if body_shape is defined %}, {{ body_shape }}{% endif %}.\n\n   Studio.  \n",
    );
    write(dir.path(), "notes.txt", "{{ ignored");
    let t = PromptTemplates::from_dir(dir.path()).unwrap();
    assert_eq!(
        t.render_default(&sample_profile()).unwrap(),
        "A 31-year-old woman (female), 170 cm, 58 kg, tan, athletic.\nStudio."
    );
    assert_eq!(t.sources()[0], dir.path().join("default.j2"));
    assert_eq!(t.sources()[1].to_str(), Some("builtin:edit.j2"));
    assert_eq!(
        t.render_default(&BodyProfile::default()).unwrap(),
        "A person.\nStudio."
    );
    let builtin = PromptTemplates::builtin();
    assert_eq!(
        t.render_outfit(Angle::Side, 2, None).unwrap(),
        builtin.render_outfit(Angle::Side, 2, None).unwrap()
    );
}

/// Every body-profile field is optional, so an override that prints one
/// without testing it first is refused when loaded, naming the file.
#[test]
fn an_override_using_an_optional_field_unguarded_fails_at_load() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "default.j2",
        "A {{ age }}-year-old {{ person }}, {{ height_cm }} cm.",
    );
    let err = PromptTemplates::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, PromptError::InvalidTemplate { path, .. } if path.ends_with("default.j2")),
        "{err:?}"
    );
    write(
        dir.path(),
        "outfit.j2",
        "Dress image 1. {{ outfit_description }}",
    );
    std::fs::remove_file(dir.path().join("default.j2")).unwrap();
    let err = PromptTemplates::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, PromptError::InvalidTemplate { path, .. } if path.ends_with("outfit.j2")),
        "{err:?}"
    );
}

#[test]
fn an_empty_directory_gives_the_builtin_templates() {
    let dir = tempfile::tempdir().unwrap();
    let t = PromptTemplates::from_dir(dir.path()).unwrap();
    assert_eq!(
        t.render_default(&sample_profile()).unwrap(),
        PromptTemplates::builtin()
            .render_default(&sample_profile())
            .unwrap()
    );
}

#[test]
fn a_syntax_error_fails_at_load_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "edit.j2", "Apply {{ instructions ");
    let err = PromptTemplates::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, PromptError::InvalidTemplate { path, .. } if path == &dir.path().join("edit.j2")),
        "{err:?}"
    );
    assert!(err.to_string().contains("edit.j2"), "{err}");
}

#[test]
fn an_undefined_variable_fails_at_load_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // `angel` is a typo: strict undefined makes it an error even in an `if`.
    write(
        dir.path(),
        "outfit.j2",
        "Dress image 1 in {{ garment_count }} garments. {% if angel == \"back\" %}Back.{% endif %}",
    );
    let err = PromptTemplates::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, PromptError::InvalidTemplate { path, .. } if path.ends_with("outfit.j2")),
        "{err:?}"
    );
    write(dir.path(), "outfit.j2", "Dress image 1. {{ garments }}");
    assert!(PromptTemplates::from_dir(dir.path()).is_err());
}

#[test]
fn a_template_that_renders_nothing_fails_at_load() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "edit.j2", "{# nothing #}\n   \n");
    let err = PromptTemplates::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, PromptError::EmptyTemplate { .. }), "{err:?}");
}

#[test]
fn a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = PromptTemplates::from_dir(&missing).unwrap_err();
    assert!(matches!(err, PromptError::NotADirectory { .. }), "{err:?}");
}

#[test]
fn an_unreadable_template_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.j2"), [0xff, 0xfe, 0x00]).unwrap();
    let err = PromptTemplates::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, PromptError::Io { .. }), "{err:?}");
}

#[test]
fn an_overlong_override_is_cut_below_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "edit.j2",
        "{% for i in range(300) %}again {% endfor %}{{ instructions }}",
    );
    let t = PromptTemplates::from_dir(dir.path()).unwrap();
    let p = t
        .render_edit(&EditInstructions::parse("short hair").unwrap())
        .unwrap();
    assert!(p.chars().count() < MAX_PROMPT_CHARS);
    assert!(p.ends_with("again"), "cut at a word boundary: {p}");
}

#[test]
fn the_real_photo_round_trips_through_a_mime_wrapped_data_uri() {
    let photo = include_bytes!("fixtures/person_front.jpg");
    let b64 = STANDARD.encode(photo);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let s = format!(
        "data:image/jpg;name=front.jpg;base64,{}",
        lines.join("\r\n")
    );
    let input = ImageInput::parse(&s, MAX_BYTES).unwrap();
    assert_eq!(input.as_decoded().unwrap().bytes(), photo.as_slice());
    assert_eq!(
        input.to_data_uri().unwrap(),
        format!("data:image/jpeg;base64,{b64}")
    );
    assert_eq!(
        ImageInput::parse(&s, photo.len() - 1),
        Err(ImageInputError::TooLarge {
            bytes: photo.len(),
            max: photo.len() - 1
        })
    );
}

/// A file that only starts like a PNG (signature, cut-off header, cut-off data) is not an image.
#[test]
fn truncated_images_are_rejected_as_corrupt() {
    use base64::Engine as _;
    let png = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tiny.png"
    ))
    .unwrap();
    for cut in [8, 12, 20, 33, png.len() - 1] {
        let uri = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&png[..cut])
        );
        assert!(
            matches!(
                modelgen_domain::ImageInput::parse(&uri, 1 << 20),
                Err(modelgen_domain::ImageInputError::Corrupt { .. })
            ),
            "a PNG cut at {cut} bytes was accepted"
        );
    }
    let whole = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    assert!(modelgen_domain::ImageInput::parse(&whole, 1 << 20).is_ok());
}

/// Input URLs are fetched by the upstream, over `http://` or `https://`:
/// local, private, link-local and metadata addresses are refused either way.
/// Only the decision is tested; nothing is fetched.
#[test]
fn internal_hosts_are_refused_in_image_urls() {
    for scheme in ["https", "http", "HTTP"] {
        for bad in [
            "localhost/a.png",
            "api.localhost/a.png",
            "metadata.google.internal/computeMetadata/v1/",
            "metadata/latest",
            "printer.local/a.png",
            "127.0.0.1/a.png",
            "127.1/a.png",
            "2130706433/a.png",
            "10.1.2.3/a.png",
            "10.255.255.255:8080/a.png",
            "172.16.0.1/a.png",
            "192.168.1.1/a.png",
            "169.254.169.254/latest/meta-data/",
            "100.64.0.1/a.png",
            "100.100.100.200/latest/meta-data/",
            "0.0.0.0/a.png",
            "0x7f000001/a.png",
            "224.0.0.1/a.png",
            "255.255.255.255/a.png",
            "[::1]/a.png",
            "[::]/a.png",
            "[fd00::1]/a.png",
            "[fd00:ec2::254]/latest/meta-data/",
            "[fe80::1]/a.png",
            "[ff02::1]/a.png",
            "[::ffff:10.0.0.1]/a.png",
            "[::ffff:169.254.169.254]/a.png",
            "[::ffff:127.0.0.1]/a.png",
            "[64:ff9b::a9fe:a9fe]/a.png",
            "[2002:a9fe:a9fe::1]/a.png",
        ] {
            let url = format!("{scheme}://{bad}");
            assert!(
                matches!(
                    modelgen_domain::ImageInput::parse(&url, 1 << 20),
                    Err(modelgen_domain::ImageInputError::InvalidUrl(
                        modelgen_domain::InvalidUrlReason::InternalHost
                    ))
                ),
                "{url} was accepted"
            );
        }
        for good in [
            "cdn.example.com/a.png",
            "suitme.oss-cn-shenzhen.aliyuncs.com/u/1.jpg",
            "8.8.8.8/a.png",
            "[2606:4700:4700::1111]/a.png",
            "[::ffff:8.8.8.8]/a.png",
        ] {
            let url = format!("{scheme}://{good}");
            assert!(
                modelgen_domain::ImageInput::parse(&url, 1 << 20).is_ok(),
                "{url} was refused"
            );
        }
    }
}

/// The refusal decision as a pure function over addresses (what a resolver
/// would return), without any traffic.
#[test]
fn internal_addresses_are_recognised() {
    use modelgen_domain::image::is_internal_ip;
    use std::net::IpAddr;
    for bad in [
        "127.0.0.1",
        "10.0.0.1",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "100.100.100.200",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.251",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.0.8",
        "198.18.0.1",
        "192.0.2.1",
        "::1",
        "::",
        "fc00::1",
        "fe80::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:169.254.169.254",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "64:ff9b::7f00:1",
        "2002:c0a8:0101::",
    ] {
        let ip: IpAddr = bad.parse().unwrap();
        assert!(is_internal_ip(ip), "{bad} is internal");
    }
    for good in [
        "8.8.8.8",
        "1.1.1.1",
        "47.88.1.1",
        "100.63.255.255",
        "100.128.0.0",
        "172.32.0.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:0808:0808::",
    ] {
        let ip: IpAddr = good.parse().unwrap();
        assert!(!is_internal_ip(ip), "{good} is public");
    }
}

/// Cut-off JPEG and WebP files are refused too; whole ones pass.
#[test]
fn truncated_jpeg_and_webp_are_rejected() {
    use base64::Engine as _;
    for (name, mime) in [
        ("tiny.jpg", "image/jpeg"),
        ("tiny.webp", "image/webp"),
        ("person_front.jpg", "image/jpeg"),
    ] {
        let bytes = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap();
        let uri = |b: &[u8]| {
            format!(
                "data:{mime};base64,{}",
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        };
        assert!(
            modelgen_domain::ImageInput::parse(&uri(&bytes), 1 << 20).is_ok(),
            "{name} whole"
        );
        let cut = &bytes[..bytes.len() * 2 / 3];
        assert!(
            matches!(
                modelgen_domain::ImageInput::parse(&uri(cut), 1 << 20),
                Err(modelgen_domain::ImageInputError::Corrupt { .. })
            ),
            "{name} cut to {} bytes was accepted",
            cut.len()
        );
    }
}
