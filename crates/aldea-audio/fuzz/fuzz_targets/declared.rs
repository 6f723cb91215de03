//! Declared headerless encodings (with or without a WAV header in front) at any rate and channel count.
#![no_main]

#[path = "../common.rs"]
mod common;

use aldea_audio::{decode_with, DecodeOptions, Encoding, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::report_panics_without_aborting();
    let Some((&selector, rest)) = data.split_first() else { return };
    let encoding = match selector % 4 {
        0 => Some(Encoding::Linear16),
        1 => Some(Encoding::Mulaw),
        2 => Some(Encoding::Alaw),
        _ => None,
    };
    let rates = [0, 8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 96_000];
    let options = DecodeOptions {
        encoding,
        sample_rate: rates[usize::from(selector >> 2) % rates.len()],
        channels: u16::from(selector >> 5),
        unknown_as_linear16: selector & 1 == 1,
        limits: Limits { max_bytes: 1 << 20, max_duration_s: 600.0 },
    };
    if let Ok(decoded) = decode_with(rest, &options) {
        assert!(decoded.channels.iter().all(|c| c.len() == decoded.n_frames()));
    }
});
