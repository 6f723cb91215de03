//! Whole-file decoding of arbitrary bytes: container detection and every decoder behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;

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
    let _ = aldea_audio::detect(data);
    if let Ok(decoded) = aldea_audio::decode(data) {
        assert!(decoded.channels.iter().all(|c| c.len() == decoded.n_frames()));
        let _ = decoded.to_mono_16k();
    }
});
