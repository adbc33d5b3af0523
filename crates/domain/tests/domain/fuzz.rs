//! Fuzz targets of the domain's parsers (fuzz/README.md): the data-URI and
//! base64 parser (`data_uri`) and the image header sniffer (`image_header`).
//!
//! Each target is a plain function that must not panic on any input and must
//! keep its promises on what it accepts. It runs three ways: over every file
//! of its committed corpus (`fuzz/corpus/<target>/`), over arbitrary bytes, and
//! over structure-aware inputs (nearly valid images and URIs, mutated). Cases
//! per run: `MODELGEN_FUZZ_CASES` (default 256; `make fuzz` runs many more).

#![expect(
    clippy::unwrap_used,
    reason = "fuzz harness: a failed read or a broken promise must fail the test"
)]

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use modelgen_domain::{
    ImageInput, ImageInputError, ImageMime, MAX_IMAGE_URL_CHARS, PixelBudget, declared_dimensions,
};
use proptest::prelude::*;

const PNG: &[u8] = include_bytes!("../fixtures/tiny.png");
const JPEG: &[u8] = include_bytes!("../fixtures/tiny.jpg");
const WEBP: &[u8] = include_bytes!("../fixtures/tiny.webp");
const PHOTO: &[u8] = include_bytes!("../fixtures/person_front.jpg");

/// Decoded-size cap used by the targets, bytes.
const MAX_BYTES: usize = 1 << 20;
/// Longest error message a client may get from an image field, characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// Cases per property: `MODELGEN_FUZZ_CASES`, else 256.
fn config() -> ProptestConfig {
    let cases = std::env::var("MODELGEN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Every file of `fuzz/corpus/<target>/`, with its name. The corpus must exist:
/// an empty one would make the replay test pass without testing anything.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{}: only {} files",
        dir.display(),
        files.len()
    );
    files
}

// ---- data_uri ---------------------------------------------------------------

/// The `data_uri` target: `ImageInput::parse_within` on any text.
fn data_uri_target(input: &str) {
    let budget = PixelBudget::default();
    match ImageInput::parse_within(input, MAX_BYTES, budget) {
        Ok(ImageInput::DataUri(image)) => {
            assert!(!image.bytes().is_empty());
            assert!(image.size_bytes() <= MAX_BYTES);
            assert_eq!(ImageMime::sniff(image.bytes()), Some(image.mime()));
            let (w, h) = image.dimensions();
            assert!(w > 0 && h > 0);
            assert!(budget.check(w, h).is_ok());
            // The canonical form parses back to the same image.
            let again = ImageInput::parse_within(&image.to_data_uri(), MAX_BYTES, budget).unwrap();
            assert_eq!(again.as_decoded(), Some(&image));
            // Logs get the type and size, never the data.
            assert_eq!(
                again.redacted(),
                format!(
                    "data:{};base64,<{} bytes>",
                    image.mime(),
                    image.size_bytes()
                )
            );
        }
        Ok(ImageInput::Url(url)) => {
            assert!(url.as_str().chars().count() <= MAX_IMAGE_URL_CHARS);
            assert!(matches!(url.as_url().scheme(), "http" | "https"));
            let again = ImageInput::parse_within(url.as_str(), MAX_BYTES, budget).unwrap();
            assert_eq!(again.as_url(), Some(&url));
            assert!(!url.redacted().contains('#'));
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
            assert!(
                message.chars().count() <= MAX_MESSAGE_CHARS,
                "{} characters: {message:.200}",
                message.chars().count()
            );
            if let ImageInputError::TooManyPixels(over) = e {
                assert!(budget.check(over.width, over.height).is_err());
            }
        }
    }
}

/// The file types the structured inputs start from.
fn seed_image() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(PNG.to_vec()),
        Just(JPEG.to_vec()),
        Just(WEBP.to_vec()),
        Just(PHOTO[..4096].to_vec()),
        (1_u32..200_000, 1_u32..200_000).prop_map(|(w, h)| png_header(w, h)),
        (any::<u16>(), any::<u16>()).prop_map(|(w, h)| jpeg_header(w, h)),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

/// `bytes` with a few bytes changed, cut, or extended.
fn mutated(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len();
    prop_oneof![
        3 => Just(bytes.clone()),
        2 => (0..len.max(1), any::<u8>()).prop_map({
            let bytes = bytes.clone();
            move |(i, b)| {
                let mut out = bytes.clone();
                if let Some(slot) = out.get_mut(i) {
                    *slot = b;
                }
                out
            }
        }),
        2 => (0..=len).prop_map({
            let bytes = bytes.clone();
            move |cut| bytes[..cut].to_vec()
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..32).prop_map(move |tail| {
            let mut out = bytes.clone();
            out.extend(tail);
            out
        }),
    ]
}

/// A PNG signature and an IHDR declaring `width` × `height` (CRC left zero:
/// header readers do not check it), then `IEND`.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    out.extend(width.to_be_bytes());
    out.extend(height.to_be_bytes());
    out.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
    out.extend([0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]);
    out
}

/// A JPEG start, an SOF0 segment declaring `width` × `height`, and EOI.
fn jpeg_header(width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08];
    out.extend(height.to_be_bytes());
    out.extend(width.to_be_bytes());
    out.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    out
}

/// A data URI around `payload`, with header spellings and whitespace varied.
fn data_uri() -> impl Strategy<Value = String> {
    let header = (
        prop::sample::select(vec!["data:", "DATA:", " data:", "data: ", "dat:"]),
        prop::sample::select(vec![
            "image/png",
            "image/jpeg",
            "image/jpg",
            "image/webp",
            "IMAGE/PNG",
            "image/gif",
            "",
            "text/plain",
        ]),
        prop::sample::select(vec!["", ";name=a.png", ";charset=utf-8", ";;"]),
        prop::sample::select(vec![";base64", ";BASE64", "", ";base32"]),
    );
    let payload = seed_image().prop_flat_map(mutated);
    (header, payload, any::<u8>(), 0_usize..80).prop_map(
        |((scheme, mime, params, marker), bytes, style, wrap)| {
            let mut data = STANDARD.encode(&bytes);
            match style % 6 {
                // MIME line breaks every `wrap` characters.
                0 if wrap > 0 => {
                    let chars: Vec<char> = data.chars().collect();
                    data = chars
                        .chunks(wrap)
                        .map(|c| c.iter().collect::<String>())
                        .collect::<Vec<_>>()
                        .join("\r\n");
                }
                1 => data = data.trim_end_matches('=').to_string(),
                2 => data = data.replace('+', "-").replace('/', "_"),
                3 => data.insert(data.len() / 2, '='),
                _ => {}
            }
            format!("{scheme}{mime}{params}{marker},{data}")
        },
    )
}

/// An http(s) URL with hosts public and internal.
fn image_url() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["https://", "http://", "HTTPS://", "ftp://", "https:/"]),
        prop::sample::select(vec![
            "cdn.example.com",
            "127.0.0.1",
            "[::ffff:169.254.169.254]",
            "169.254.169.254",
            "localhost",
            "user:pw@cdn.example.com",
            "xn--nxasmq6b.com",
            "",
            "10.0.0.1:8080",
        ]),
        "[a-zA-Z0-9/._%?#=&-]{0,40}",
    )
        .prop_map(|(scheme, host, path)| format!("{scheme}{host}/{path}"))
}

#[test]
fn fuzz_data_uri_corpus() {
    for (name, bytes) in corpus("data_uri") {
        let text = String::from_utf8_lossy(&bytes);
        let outcome = std::panic::catch_unwind(|| data_uri_target(&text));
        assert!(outcome.is_ok(), "corpus file {name} fails");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_data_uri_arbitrary_text(s in ".{0,300}") {
        data_uri_target(&s);
        data_uri_target(&format!("data:{s}"));
        data_uri_target(&format!("data:image/png;base64,{s}"));
    }

    #[test]
    fn fuzz_data_uri_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut uri = String::from("data:image/png;base64,");
        uri.push_str(&STANDARD.encode(&bytes));
        data_uri_target(&uri);
        data_uri_target(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn fuzz_data_uri_structured(uri in data_uri()) {
        data_uri_target(&uri);
    }

    #[test]
    fn fuzz_data_uri_urls(url in image_url()) {
        data_uri_target(&url);
    }
}

// ---- image_header -----------------------------------------------------------

/// The `image_header` target: what the request path and the result download
/// read of an image without decoding it (magic bytes, declared dimensions,
/// the pixel budget), on any bytes and on every prefix a download delivers.
fn image_header_target(bytes: &[u8]) {
    let mime = ImageMime::sniff(bytes);
    let dims = declared_dimensions(bytes);
    if let Some((w, h)) = dims {
        let budget = PixelBudget::default();
        let fits = budget.check(w, h).is_ok();
        let side = u64::from(budget.max_side());
        assert_eq!(
            fits,
            w <= side && h <= side && u128::from(w) * u128::from(h) <= 40_000_000
        );
    }
    // A download is sniffed on a growing head: a prefix never claims another type.
    for cut in [1, 3, 8, 12, 16, 24, 32, 64, bytes.len() / 2] {
        let head = &bytes[..cut.min(bytes.len())];
        if let (Some(early), Some(whole)) = (ImageMime::sniff(head), mime) {
            assert_eq!(early, whole);
        }
        let _ = declared_dimensions(head);
    }
}

fn image_bytes() -> impl Strategy<Value = Vec<u8>> {
    let webp =
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(k, body)| {
            let kind: &[u8] = match k % 3 {
                0 => b"VP8 ",
                1 => b"VP8L",
                _ => b"VP8X",
            };
            let mut out = b"RIFF".to_vec();
            out.extend(u32::try_from(body.len() + 12).unwrap().to_le_bytes());
            out.extend(b"WEBP");
            out.extend(kind);
            out.extend(u32::try_from(body.len()).unwrap().to_le_bytes());
            out.extend(body);
            out
        });
    let jpeg_segments = proptest::collection::vec(
        (
            0xC0_u8..=0xFE,
            proptest::collection::vec(any::<u8>(), 0..12),
        ),
        0..6,
    )
    .prop_map(|segments| {
        let mut out = vec![0xFF, 0xD8];
        for (marker, body) in segments {
            out.extend([0xFF, marker]);
            out.extend(u16::try_from(body.len() + 2).unwrap().to_be_bytes());
            out.extend(body);
        }
        out
    });
    prop_oneof![
        seed_image().prop_flat_map(mutated),
        webp,
        jpeg_segments,
        proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

#[test]
fn fuzz_image_header_corpus() {
    for (name, bytes) in corpus("image_header") {
        let outcome = std::panic::catch_unwind(|| image_header_target(&bytes));
        assert!(outcome.is_ok(), "corpus file {name} fails");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_image_header_arbitrary(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        image_header_target(&bytes);
    }

    #[test]
    fn fuzz_image_header_structured(bytes in image_bytes()) {
        image_header_target(&bytes);
    }
}
