//! `image_header`: magic bytes, declared dimensions and the pixel budget on any
//! bytes and their prefixes (the `fuzz_image_header_*` tests' target,
//! crates/domain/tests/domain/fuzz.rs, coverage-guided).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgen_domain::{ImageMime, PixelBudget, declared_dimensions};

fuzz_target!(|data: &[u8]| {
    let whole = ImageMime::sniff(data);
    if let Some((w, h)) = declared_dimensions(data) {
        let _ = PixelBudget::default().check(w, h);
    }
    for cut in [3, 12, 16, 24, 32, data.len() / 2] {
        let head = &data[..cut.min(data.len())];
        if let (Some(early), Some(whole)) = (ImageMime::sniff(head), whole) {
            assert_eq!(early, whole);
        }
        let _ = declared_dimensions(head);
    }
});
