//! Streaming decoding on real speech encoded by ffmpeg: the PCM of a stream cut into two chunks at
//! every byte offset equals the PCM of the whole file, and a MediaRecorder-style live WebM/Opus stream
//! gives PCM from its first 250-ms chunk. Needs ffmpeg (scripts/test.sh installs it).

use std::process::Command;

use aldea_audio::{decode, decode_with, DecodeOptions, Encoding, Pcm, StreamDecoder};

/// Encodes the first `seconds` of a real-dev clip with ffmpeg and returns the bytes.
fn encode(seconds: f64, args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-t", &seconds.to_string(), "-i"])
        .arg(aldea_testkit::fixtures::real_dev("ps_librivox_0870.wav"))
        .args(args)
        .arg("pipe:1")
        .output()
        .expect("ffmpeg (scripts/test.sh installs it)");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn stream(options: &DecodeOptions, chunks: &[&[u8]]) -> Pcm {
    let mut decoder = StreamDecoder::new(options.clone());
    let mut all = Pcm { sample_rate: 0, channels: Vec::new() };
    let mut add = |pcm: Option<Pcm>| {
        if let Some(pcm) = pcm {
            if all.channels.is_empty() {
                all = pcm;
            } else {
                assert_eq!(pcm.sample_rate, all.sample_rate);
                for (a, b) in all.channels.iter_mut().zip(pcm.channels) {
                    a.extend(b);
                }
            }
        }
    };
    for chunk in chunks {
        add(decoder.push(chunk).unwrap());
    }
    add(decoder.finish().unwrap());
    all
}

fn check_every_split(name: &str, bytes: &[u8], options: &DecodeOptions) {
    let whole_file = decode_with(bytes, options).unwrap();
    let whole = stream(options, &[bytes]);
    assert_eq!(whole.sample_rate, whole_file.sample_rate, "{name}");
    assert_eq!(whole.channels, whole_file.channels, "{name}: streamed in one piece vs whole-file decoding");
    assert!(whole.n_frames() > 1000, "{name}");
    for split in 1..bytes.len() {
        let pcm = stream(options, &[&bytes[..split], &bytes[split..]]);
        assert!(pcm.channels == whole.channels, "{name}: split at byte {split} of {} differs", bytes.len());
    }
    eprintln!("{name}: {} bytes, every split identical ({} frames)", bytes.len(), whole.n_frames());
}

#[test]
fn every_split_point_gives_the_whole_file_pcm() {
    let detect = DecodeOptions::default();
    let declared =
        |encoding, sample_rate| DecodeOptions { encoding: Some(encoding), sample_rate, ..DecodeOptions::default() };
    check_every_split("raw linear16", &encode(0.3, &["-f", "s16le"]), &declared(Encoding::Linear16, 16_000));
    check_every_split("raw mu-law", &encode(0.4, &["-ar", "8000", "-f", "mulaw"]), &declared(Encoding::Mulaw, 8_000));
    check_every_split("wav", &encode(0.3, &["-f", "wav"]), &detect);
    check_every_split("ogg opus", &encode(0.5, &["-c:a", "libopus", "-b:a", "24k", "-f", "ogg"]), &detect);
    check_every_split("webm opus", &encode(0.5, &["-c:a", "libopus", "-b:a", "32k", "-f", "webm"]), &detect);
    check_every_split("flac", &encode(0.3, &["-c:a", "flac", "-f", "flac"]), &detect);
    check_every_split("mp3", &encode(0.5, &["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"]), &detect);
}

#[test]
fn live_webm_yields_pcm_from_the_first_250_ms_chunk() {
    // ffmpeg writing to a pipe cannot go back to fill in sizes: the segment and its clusters have
    // unknown sizes, as in MediaRecorder's output.
    let bytes =
        encode(5.0, &["-c:a", "libopus", "-b:a", "32k", "-ar", "48000", "-f", "webm", "-cluster_time_limit", "250"]);
    assert_eq!(&bytes[..4], &[0x1A, 0x45, 0xDF, 0xA3]);
    // 32 kb/s is 1000 bytes per 250 ms; the first chunk also carries the header.
    let header = 300;
    let mut decoder = StreamDecoder::new(DecodeOptions::default());
    let first = decoder.push(&bytes[..header + 1000]).unwrap().expect("PCM from the first chunk");
    assert!(first.n_frames() > 0);
    eprintln!(
        "first 250-ms chunk gave {:.0} ms of audio",
        first.n_frames() as f64 * 1000.0 / f64::from(first.sample_rate)
    );
    let mut total = first.n_frames();
    for chunk in bytes[header + 1000..].chunks(1000) {
        total += decoder.push(chunk).unwrap().map_or(0, |p| p.n_frames());
    }
    total += decoder.finish().unwrap().map_or(0, |p| p.n_frames());
    let whole = decode(&bytes).unwrap();
    assert_eq!(total, whole.n_frames());
}

#[test]
fn bad_streams_are_errors() {
    let mut decoder = StreamDecoder::new(DecodeOptions::default());
    assert!(decoder.push(b"definitely not an audio container").is_err());
    let mut decoder = StreamDecoder::new(DecodeOptions::default());
    let mut garbage = b"OggS".to_vec();
    garbage.extend((0..5000u32).map(|i| (i * 7919 % 251) as u8));
    let result = decoder.push(&garbage).and_then(|_| decoder.finish());
    assert!(result.is_err() || result.is_ok_and(|p| p.is_none()));
    // Dropping a decoder mid-stream ends its thread.
    let mut decoder = StreamDecoder::new(DecodeOptions::default());
    let bytes = encode(1.0, &["-c:a", "libopus", "-f", "ogg"]);
    let _ = decoder.push(&bytes[..bytes.len() / 2]).unwrap();
    drop(decoder);
}
