//! `apimart_response`: the parsers of Apimart's 2xx bodies on any bytes (the
//! `fuzz_apimart_response_*` tests' target, crates/apimart-client/src/parse_fuzz.rs,
//! coverage-guided).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    apimart_client::fuzzing::parse_all(data);
});
