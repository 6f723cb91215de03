//! Each container parser directly: the first byte picks a magic prefix so every input reaches the
//! chosen demuxer (WAV, FLAC, OGG, Matroska, MP4, MP3, ADTS).
#![no_main]

#[path = "../common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::report_panics_without_aborting();
    let Some(bytes) = common::with_magic(data) else { return };
    let _ = aldea_audio::decode(&bytes);
});
