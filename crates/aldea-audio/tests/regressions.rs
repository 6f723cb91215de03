//! Inputs that once crashed a decoder (found by the fuzz targets in `fuzz/`): each must now decode or
//! fail with an error, whole and streamed, without a panic.

use aldea_audio::{decode, DecodeOptions, StreamDecoder};

#[path = "../fuzz/common.rs"]
mod common;

#[test]
fn past_crashes_are_errors_or_audio() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut n_inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let _ = decode(&bytes);
        // What the `containers` target made of it.
        let prefixed = common::with_magic(&bytes).unwrap();
        let _ = decode(&prefixed);
        let mut decoder = StreamDecoder::new(DecodeOptions::default());
        let _ = decoder.push(&bytes).and_then(|_| decoder.finish());
        n_inputs += 1;
    }
    assert!(n_inputs >= 1, "no regression inputs in {}", dir.display());
}
