//! Inputs that once crashed a decoder (found by the fuzz targets in `fuzz/`): each must now decode or
//! fail with an error, whole and streamed, without a panic.

use aldea_audio::{decode, DecodeOptions, StreamDecoder};

/// The `containers` fuzz target's prefixes.
const MAGICS: [&[u8]; 7] = [
    b"RIFF\x24\x00\x00\x00WAVE",
    b"fLaC",
    b"OggS",
    b"\x1a\x45\xdf\xa3",
    b"\x00\x00\x00\x18ftyp",
    b"\xff\xfb",
    b"\xff\xf1",
];

#[test]
fn past_crashes_are_errors_or_audio() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut n_inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let _ = decode(&bytes);
        // What the `containers` target made of it: a magic chosen by the first byte, prepended.
        let (selector, rest) = bytes.split_first().unwrap();
        let magic = MAGICS[usize::from(*selector) % MAGICS.len()];
        let mut prefixed = if rest.starts_with(magic) { Vec::new() } else { magic.to_vec() };
        prefixed.extend_from_slice(rest);
        let _ = decode(&prefixed);
        let mut decoder = StreamDecoder::new(DecodeOptions::default());
        let _ = decoder.push(&bytes).and_then(|_| decoder.finish());
        n_inputs += 1;
    }
    assert!(n_inputs >= 1, "no regression inputs in {}", dir.display());
}
