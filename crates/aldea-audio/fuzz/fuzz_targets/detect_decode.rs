//! Whole-file decoding of arbitrary bytes: container detection and every decoder behind it.
#![no_main]

#[path = "../common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::report_panics_without_aborting();
    let _ = aldea_audio::detect(data);
    if let Ok(decoded) = aldea_audio::decode(data) {
        assert!(decoded.channels.iter().all(|c| c.len() == decoded.n_frames()));
        let _ = decoded.to_mono_16k();
    }
});
