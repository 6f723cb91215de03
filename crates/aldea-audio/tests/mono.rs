//! `decode_mono_16k` (chunked reading, mono and 16 kHz as the audio comes) gives what whole-file
//! decoding then `to_mono_16k` gives, for every container and declared encoding, from memory and
//! from a file; and the same errors. Needs ffmpeg (scripts/test.sh installs it).

use std::io::Cursor;
use std::process::Command;

use aldea_audio::{decode_mono_16k, decode_with, AudioError, DecodeOptions, Encoding, Limits};

/// Encodes the first `seconds` of a real-dev clip with ffmpeg into `path`, returning its bytes.
fn encode(seconds: f64, args: &[&str], path: &std::path::Path) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-t", &seconds.to_string(), "-i"])
        .arg(aldea_testkit::fixtures::real_dev("ps_librivox_0870.wav"))
        .args(args)
        .arg(path)
        .output()
        .expect("ffmpeg (scripts/test.sh installs it)");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(path).unwrap()
}

fn declared(encoding: Encoding, sample_rate: u32, channels: u16) -> DecodeOptions {
    DecodeOptions { encoding: Some(encoding), sample_rate, channels, ..DecodeOptions::default() }
}

/// Largest difference between two signals, and their lengths.
fn compare(name: &str, chunked: &[f32], whole: &[f32]) {
    assert!(whole.len() > 16_000, "{name}: {} samples", whole.len());
    assert_eq!(chunked.len(), whole.len(), "{name}: samples");
    let worst = chunked.iter().zip(whole).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let peak = whole.iter().map(|s| s.abs()).fold(0.0f32, f32::max);
    eprintln!("{name}: {} samples, largest difference {worst:.2e} (peak {peak:.2})", chunked.len());
    assert!(worst == 0.0, "{name}: the chunked decoding differs by {worst}");
}

#[test]
fn chunked_mono_16k_equals_whole_file_decoding_for_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let detect = DecodeOptions::default();
    let cases: Vec<(&str, Vec<&str>, &str, DecodeOptions)> = vec![
        ("wav 16 kHz", vec![], "a.wav", detect.clone()),
        ("wav 44.1 kHz stereo", vec!["-ar", "44100", "-ac", "2"], "b.wav", detect.clone()),
        ("wav 8 kHz mu-law", vec!["-ar", "8000", "-c:a", "pcm_mulaw"], "c.wav", detect.clone()),
        ("raw linear16 48 kHz", vec!["-ar", "48000", "-f", "s16le"], "d.raw", declared(Encoding::Linear16, 48_000, 1)),
        ("raw mu-law 8 kHz", vec!["-ar", "8000", "-f", "mulaw"], "e.raw", declared(Encoding::Mulaw, 8_000, 1)),
        ("wav with a declared encoding", vec!["-ar", "22050"], "f.wav", declared(Encoding::Linear16, 22_050, 1)),
        ("flac", vec!["-c:a", "flac"], "g.flac", detect.clone()),
        ("mp3 64k", vec!["-c:a", "libmp3lame", "-b:a", "64k"], "h.mp3", detect.clone()),
        ("ogg opus", vec!["-c:a", "libopus", "-b:a", "24k"], "i.ogg", detect.clone()),
        ("webm opus stereo", vec!["-c:a", "libopus", "-ac", "2"], "j.webm", detect.clone()),
        ("m4a aac (index at the end)", vec!["-c:a", "aac", "-b:a", "64k"], "k.m4a", detect.clone()),
        ("aac adts", vec!["-c:a", "aac", "-f", "adts"], "l.aac", detect.clone()),
    ];
    for (name, args, file, options) in cases {
        let path = dir.path().join(file);
        let bytes = encode(4.0, &args, &path);
        let whole = decode_with(&bytes, &options).unwrap().to_mono_16k().unwrap();
        let from_memory = decode_mono_16k(Cursor::new(bytes.clone()), &options).unwrap();
        compare(name, &from_memory.samples, &whole);
        let from_file = decode_mono_16k(std::fs::File::open(&path).unwrap(), &options).unwrap();
        assert_eq!(from_file, from_memory, "{name}: a file and the same bytes in memory");
    }
}

#[test]
fn bad_inputs_get_the_same_errors() {
    let unsupported = decode_mono_16k(Cursor::new(b"definitely not audio".to_vec()), &DecodeOptions::default());
    assert!(matches!(unsupported, Err(AudioError::Unsupported(_))), "{unsupported:?}");
    let empty = decode_mono_16k(Cursor::new(Vec::new()), &DecodeOptions::default());
    assert!(matches!(empty, Err(AudioError::Empty)), "{empty:?}");
    // Unknown bytes are linear16 where the Speech API says so.
    let as_pcm = DecodeOptions { unknown_as_linear16: true, ..DecodeOptions::default() };
    let noise: Vec<u8> = (0..64_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    assert_eq!(decode_mono_16k(Cursor::new(noise.clone()), &as_pcm).unwrap().samples.len(), 32_000);
    let small = DecodeOptions { limits: Limits { max_bytes: 1000, max_duration_s: 3600.0 }, ..as_pcm.clone() };
    assert!(matches!(decode_mono_16k(Cursor::new(noise.clone()), &small), Err(AudioError::TooLarge { limit: 1000 })));
    let short = DecodeOptions { limits: Limits { max_bytes: 1 << 20, max_duration_s: 1.5 }, ..as_pcm.clone() };
    assert!(matches!(decode_mono_16k(Cursor::new(noise.clone()), &short), Err(AudioError::TooLong { .. })));
    let zero_rate = DecodeOptions { sample_rate: 0, ..declared(Encoding::Mulaw, 8000, 1) };
    assert!(matches!(decode_mono_16k(Cursor::new(noise), &zero_rate), Err(AudioError::InvalidParams(_))));
    // A WAV cut inside its header, and one whose data ends early.
    let dir = tempfile::tempdir().unwrap();
    let wav = encode(2.0, &[], &dir.path().join("a.wav"));
    let cut = decode_mono_16k(Cursor::new(wav[..30].to_vec()), &DecodeOptions::default());
    assert!(matches!(cut, Err(AudioError::Corrupt(_))), "{cut:?}");
    let truncated = decode_mono_16k(Cursor::new(wav[..wav.len() / 2].to_vec()), &DecodeOptions::default()).unwrap();
    assert!(truncated.truncated);
    let whole_file = decode_with(&wav[..wav.len() / 2], &DecodeOptions::default()).unwrap();
    assert!(whole_file.truncated);
    assert_eq!(truncated.samples.len(), whole_file.n_frames());
    // Garbage behind an MP3 magic is refused, not a panic.
    let mut fake = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    fake.extend(std::iter::repeat_n(0xAB, 5000));
    assert!(decode_mono_16k(Cursor::new(fake), &DecodeOptions::default()).is_err());
}
