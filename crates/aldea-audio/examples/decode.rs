//! Decodes a file with aldea-audio and writes 16 kHz mono float32 little-endian samples, for comparing
//! decoders: `cargo run --release -p aldea-audio --example decode -- IN OUT.f32`.
#![allow(clippy::print_stderr)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (input, output) = match (args.get(1), args.get(2)) {
        (Some(i), Some(o)) => (i, o),
        _ => return Err("usage: decode IN OUT.f32".into()),
    };
    let decoded = aldea_audio::decode(&std::fs::read(input)?)?;
    eprintln!(
        "{} Hz, {} channels, {:.3} s, truncated: {}",
        decoded.sample_rate,
        decoded.channels.len(),
        decoded.duration_s(),
        decoded.truncated
    );
    let samples = decoded.to_mono_16k()?;
    std::fs::write(output, samples.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>())?;
    Ok(())
}
