//! `data_uri`: `ImageInput::parse_within` on any text (the `fuzz_data_uri_*` tests'
//! target, crates/domain/tests/domain/fuzz.rs, coverage-guided).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgen_domain::{ImageInput, ImageMime, PixelBudget};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let budget = PixelBudget::default();
    if let Ok(ImageInput::DataUri(image)) = ImageInput::parse_within(&text, 1 << 20, budget) {
        assert_eq!(ImageMime::sniff(image.bytes()), Some(image.mime()));
        let (w, h) = image.dimensions();
        assert!(budget.check(w, h).is_ok());
        let again = ImageInput::parse_within(&image.to_data_uri(), 1 << 20, budget);
        assert_eq!(
            again.ok().as_ref().and_then(ImageInput::as_decoded),
            Some(&image)
        );
    }
});
