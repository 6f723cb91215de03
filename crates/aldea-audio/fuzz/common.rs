//! Shared by the fuzz targets and by the regression test that replays what they found.
#![allow(dead_code)]

/// The `containers` target's prefixes: its first input byte picks one, so every input reaches the
/// chosen demuxer (WAV, FLAC, OGG, Matroska, MP4, MP3, ADTS).
pub(crate) const MAGICS: [&[u8]; 7] = [
    b"RIFF\x24\x00\x00\x00WAVE",
    b"fLaC",
    b"OggS",
    b"\x1a\x45\xdf\xa3",
    b"\x00\x00\x00\x18ftyp",
    b"\xff\xfb",
    b"\xff\xf1",
];

/// What the `containers` target decodes for an input: the chosen magic, then the rest of the input
/// (inputs that already carry the magic, like the seed corpus, are used as they are).
pub(crate) fn with_magic(data: &[u8]) -> Option<Vec<u8>> {
    let (&selector, rest) = data.split_first()?;
    let magic = MAGICS[usize::from(selector) % MAGICS.len()];
    let mut bytes = Vec::with_capacity(magic.len() + rest.len());
    if !rest.starts_with(magic) {
        bytes.extend_from_slice(magic);
    }
    bytes.extend_from_slice(rest);
    Some(bytes)
}

/// aldea-audio catches panics inside third-party demuxers and codecs and reports them as undecodable
/// input; libfuzzer's own hook would abort on them even when caught. This hook only reports, so a crash
/// is a panic that escaped the API (libfuzzer-sys still aborts on those) or a sanitizer finding.
pub(crate) fn report_panics_without_aborting() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    });
}
