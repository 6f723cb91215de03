//! Each container parser directly: the first byte picks a magic prefix so every input reaches the
//! chosen demuxer (WAV, FLAC, OGG, Matroska, MP4, MP3, ADTS).
#![no_main]

use libfuzzer_sys::fuzz_target;

const MAGICS: [&[u8]; 7] = [
    b"RIFF\x24\x00\x00\x00WAVE",
    b"fLaC",
    b"OggS",
    b"\x1a\x45\xdf\xa3",
    b"\x00\x00\x00\x18ftyp",
    b"\xff\xfb",
    b"\xff\xf1",
];

/// aldea-audio catches panics inside third-party demuxers and codecs and reports them as undecodable
/// input; libfuzzer's own hook would abort on them even when caught. This hook only reports, so a crash
/// here is a panic that escaped the API (libfuzzer-sys still aborts on those) or a sanitizer finding.
fn report_panics_without_aborting() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    });
}

fuzz_target!(|data: &[u8]| {
    report_panics_without_aborting();
    let Some((&selector, rest)) = data.split_first() else { return };
    let magic = MAGICS[usize::from(selector) % MAGICS.len()];
    let mut bytes = Vec::with_capacity(magic.len() + rest.len());
    // Inputs that already carry the magic (the seed corpus) are used as they are.
    if !rest.starts_with(magic) {
        bytes.extend_from_slice(magic);
    }
    bytes.extend_from_slice(rest);
    let _ = aldea_audio::decode(&bytes);
});
