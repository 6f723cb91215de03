//! Measurement aid for the VAD guard (docs/decisions): transcribes each file with the guard off and
//! prints, per file, one JSON line with the segments (text, no-speech probability, average
//! log-probability, words with their times and probabilities) and the VAD's speech probability of
//! every 32-ms window, so guard policies can be compared offline on the same decodes.
//!
//! usage: guard_dump MODEL_DIR VAD_ONNX BEAM FILE...
#![allow(clippy::print_stdout)] // A measurement aid reports on stdout.

use std::path::PathBuf;
use std::sync::Arc;

use aldea_engine::{EngineOptions, TranscribeOptions, Transcriber, Vad};
use aldea_engine_ct2::Ct2Engine;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return Err("usage: guard_dump MODEL_DIR VAD_ONNX BEAM FILE...".into());
    }
    let engine = Ct2Engine::load(&PathBuf::from(&args[0]), &EngineOptions { threads: 2, ..Default::default() })?;
    let vad = Arc::new(Vad::load(&PathBuf::from(&args[1]))?);
    let transcriber = Transcriber::new(Arc::new(engine), Some(vad.clone()));
    let options = TranscribeOptions { beam_size: args[2].parse()?, vad: None, ..TranscribeOptions::default() };
    for file in &args[3..] {
        let samples = aldea_audio::load_mono_16k(&PathBuf::from(file))?;
        let transcript = transcriber.transcribe(&samples, &options, &mut |_| {})?;
        let probabilities = vad.probabilities(&samples)?;
        let segments: Vec<serde_json::Value> = transcript
            .segments
            .iter()
            .map(|s| {
                serde_json::json!({
                    "start": s.start, "end": s.end, "text": s.text,
                    "no_speech_prob": s.no_speech_prob, "avg_logprob": s.avg_logprob,
                    "compression_ratio": s.compression_ratio, "temperature": s.temperature,
                    "words": s.words.iter().map(|w| serde_json::json!({
                        "text": w.text, "start": w.start, "end": w.end, "probability": w.probability,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let line = serde_json::json!({
            "file": file, "duration": transcript.duration, "segments": segments, "vad": probabilities,
        });
        println!("{line}");
    }
    Ok(())
}
