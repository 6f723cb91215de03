//! Decoding throughput on one thread, in multiples of real time, for the files given:
//! `cargo run --release -p aldea-audio --example throughput -- FILE...` (each file is decoded
//! repeatedly for about two seconds; whole-file decoding and 250-ms streaming chunks both reported).
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use aldea_audio::{decode, DecodeOptions, StreamDecoder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path)?;
        let audio_s = decode(&bytes)?.duration_s();
        let (mut runs, started) = (0u32, Instant::now());
        while started.elapsed() < Duration::from_secs(2) {
            std::hint::black_box(decode(&bytes)?);
            runs += 1;
        }
        let whole = audio_s * f64::from(runs) / started.elapsed().as_secs_f64();
        // Streaming: chunks of a quarter of a second of the file's bytes.
        let chunk = (bytes.len() as f64 / audio_s / 4.0).ceil().max(1.0) as usize;
        let (mut runs, started) = (0u32, Instant::now());
        while started.elapsed() < Duration::from_secs(2) {
            let mut decoder = StreamDecoder::new(DecodeOptions::default());
            for piece in bytes.chunks(chunk) {
                std::hint::black_box(decoder.push(piece)?);
            }
            std::hint::black_box(decoder.finish()?);
            runs += 1;
        }
        let streamed = audio_s * f64::from(runs) / started.elapsed().as_secs_f64();
        println!(
            "{path}: {audio_s:.1} s of audio; whole-file {whole:.0}x real time, streamed {streamed:.0}x real time"
        );
    }
    Ok(())
}
