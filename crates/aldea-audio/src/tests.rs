use super::*;

fn wav_bytes(spec: hound::WavSpec, samples: &[i32]) -> Vec<u8> {
    let mut cursor = Cursor::new(Vec::new());
    {
        let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for &s in samples {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
    }
    cursor.into_inner()
}

fn spec(channels: u16, sample_rate: u32, bits: u16) -> hound::WavSpec {
    hound::WavSpec { channels, sample_rate, bits_per_sample: bits, sample_format: hound::SampleFormat::Int }
}

#[test]
fn decodes_stereo_16_bit_and_downmixes() {
    let bytes = wav_bytes(spec(2, 16_000, 16), &[16384, -16384, 8192, 8192]);
    let decoded = decode(&bytes).unwrap();
    assert_eq!(decoded.sample_rate, 16_000);
    assert_eq!(decoded.channels, vec![vec![0.5, 0.25], vec![-0.5, 0.25]]);
    assert_eq!(decoded.to_mono(), vec![0.0, 0.25]);
    assert_eq!(decoded.to_mono_16k().unwrap(), vec![0.0, 0.25]);
    assert!(!decoded.truncated);
}

#[test]
fn decodes_24_bit() {
    let decoded = decode(&wav_bytes(spec(1, 8_000, 24), &[1 << 22, -(1 << 23)])).unwrap();
    assert_eq!(decoded.channels[0], vec![0.5, -1.0]);
}

#[test]
fn resampling_keeps_duration_and_a_tone() {
    let from = 44_100;
    let tone: Vec<f32> =
        (0..from).map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / from as f32).sin() * 0.5).collect();
    let out = resample(&tone, from, TARGET_RATE).unwrap();
    assert_eq!(out.len(), 16_000);
    // The tone's amplitude survives: RMS of a 0.5 sine is 0.354.
    let rms = (out[1000..15000].iter().map(|s| s * s).sum::<f32>() / 14000.0).sqrt();
    assert!((rms - 0.3536).abs() < 0.01, "rms {rms}");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    assert!(matches!(decode(b""), Err(AudioError::Empty)));
    assert!(matches!(decode(b"hello world, not audio"), Err(AudioError::Unsupported(_))));
    let bytes = wav_bytes(spec(1, 16_000, 16), &[1, 2, 3, 4]);
    assert!(decode(&bytes[..30]).is_err());
    assert!(decode(&wav_bytes(spec(1, 16_000, 16), &[])).is_err());
    assert!(decode_linear16(b"\x00\x01", 0, 1).is_err());
    // Magic bytes followed by garbage.
    for magic in [&b"fLaC"[..], b"OggS", b"\x1a\x45\xdf\xa3", b"ID3\x04", b"\x00\x00\x00\x18ftypM4A "] {
        let mut bytes = magic.to_vec();
        bytes.extend((0..2000u32).map(|i| (i * 7919 % 251) as u8));
        assert!(decode(&bytes).is_err(), "{magic:?}");
    }
}

#[test]
fn linear16_is_read_interleaved() {
    let decoded = decode_linear16(&[0x00, 0x40, 0x00, 0xc0], 8_000, 2).unwrap();
    assert_eq!(decoded.channels, vec![vec![0.5], vec![-0.5]]);
    assert!((decoded.duration_s() - 1.0 / 8000.0).abs() < 1e-12);
}

#[test]
fn g711_tables() {
    assert_eq!(mulaw_to_linear(0xFF), 0);
    assert_eq!(mulaw_to_linear(0x80), 32124);
    assert_eq!(mulaw_to_linear(0x00), -32124);
    assert_eq!(alaw_to_linear(0xD5), 8);
    assert_eq!(alaw_to_linear(0x55), -8);
    assert_eq!(alaw_to_linear(0xAA), 32256);
    assert_eq!(alaw_to_linear(0x2A), -32256);
    // Monotonic over the positive half of mu-law codes.
    let values: Vec<i16> = (0x80..=0xFFu8).rev().map(mulaw_to_linear).collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn detects_containers_by_magic() {
    assert_eq!(detect(b"RIFF\0\0\0\0WAVEfmt "), Some(Container::Wav));
    assert_eq!(detect(b"fLaC\0"), Some(Container::Flac));
    assert_eq!(detect(b"OggS\0"), Some(Container::Ogg));
    assert_eq!(detect(&[0x1A, 0x45, 0xDF, 0xA3, 1]), Some(Container::Matroska));
    assert_eq!(detect(b"\0\0\0\x20ftypM4A "), Some(Container::Mp4));
    assert_eq!(detect(b"ID3\x04\0"), Some(Container::Mp3));
    assert_eq!(detect(&[0xFF, 0xFB, 0x90, 0x00]), Some(Container::Mp3));
    assert_eq!(detect(&[0xFF, 0xF1, 0x50, 0x80]), Some(Container::Adts));
    assert_eq!(detect(&[0xFF, 0xF9, 0x50, 0x80]), Some(Container::Adts));
    assert_eq!(detect(b"\x01\x02\x03\x04"), None);
}

#[test]
fn declared_encoding_is_authoritative_and_strips_only_a_wav_header() {
    // mu-law bytes that happen to start like an MP3 frame are still mu-law when declared.
    let options = DecodeOptions { encoding: Some(Encoding::Mulaw), sample_rate: 8_000, ..DecodeOptions::default() };
    let decoded = decode_with(&[0xFF, 0xFB, 0x80, 0x00], &options).unwrap();
    assert_eq!(decoded.sample_rate, 8_000);
    assert_eq!(
        decoded.channels[0],
        vec![0.0, mulaw_to_linear(0xFB) as f32 / 32768.0, 32124.0 / 32768.0, -32124.0 / 32768.0]
    );
    // A WAV header in front of declared linear16 is parsed and stripped; the declared rate wins.
    let wav = wav_bytes(spec(1, 44_100, 16), &[16384, -16384]);
    let options = DecodeOptions { encoding: Some(Encoding::Linear16), sample_rate: 16_000, ..DecodeOptions::default() };
    let decoded = decode_with(&wav, &options).unwrap();
    assert_eq!((decoded.sample_rate, decoded.channels[0].clone()), (16_000, vec![0.5, -0.5]));
    assert_eq!("pcm".parse::<Encoding>().unwrap(), Encoding::Linear16);
    assert!("opus".parse::<Encoding>().is_err());
}

#[test]
fn unknown_bytes_can_be_read_as_linear16() {
    let options = DecodeOptions { unknown_as_linear16: true, ..DecodeOptions::default() };
    let decoded = decode_with(&[0x00, 0x40, 0x00, 0xc0], &options).unwrap();
    assert_eq!(decoded.channels[0], vec![0.5, -0.5]);
}

#[test]
fn limits_are_enforced() {
    let bytes = wav_bytes(spec(1, 1_000, 16), &vec![0; 3_000]);
    let short = Limits { max_bytes: 1 << 20, max_duration_s: 2.0 };
    let options = DecodeOptions { limits: short, ..DecodeOptions::default() };
    assert!(matches!(decode_with(&bytes, &options), Err(AudioError::TooLong { .. })));
    let small = Limits { max_bytes: 100, max_duration_s: 100.0 };
    let options = DecodeOptions { limits: small, ..DecodeOptions::default() };
    assert!(matches!(decode_with(&bytes, &options), Err(AudioError::TooLarge { limit: 100 })));
}

#[test]
fn truncated_wav_decodes_what_it_can() {
    let bytes = wav_bytes(spec(1, 16_000, 16), &vec![1000; 16_000]);
    let decoded = decode(&bytes[..bytes.len() / 2]).unwrap();
    assert!(decoded.n_frames() > 7_000 && decoded.n_frames() < 8_100, "{}", decoded.n_frames());
}

#[test]
fn stream_resampler_matches_the_whole_file_resampler() {
    let rate = 44_100;
    let samples: Vec<f32> =
        (0..rate * 2).map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 0.5).collect();
    let whole = resample(&samples, rate as u32, 16_000).unwrap();
    let mut stream = StreamResampler::new(rate as u32, 16_000).unwrap();
    let mut streamed = Vec::new();
    for chunk in samples.chunks(777) {
        streamed.extend(stream.push(chunk).unwrap());
    }
    streamed.extend(stream.finish().unwrap());
    assert_eq!(streamed.len(), whole.len());
    // Same filter and alignment: equal except for float rounding across chunk edges.
    let max_diff = whole.iter().zip(&streamed).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max_diff < 1e-3, "streamed resampling differs by {max_diff}");
    let mut same_rate = StreamResampler::new(16_000, 16_000).unwrap();
    assert_eq!(same_rate.push(&[0.1, 0.2]).unwrap(), vec![0.1, 0.2]);
    assert!(same_rate.finish().unwrap().is_empty());
}

#[test]
fn sample_rates_out_of_range_are_refused() {
    // The fuzzer's input: a WAV header declaring a ~4-GHz rate made the resampler allocate gigabytes.
    let mut bytes = wav_bytes(spec(1, 16_000, 16), &[0; 64]);
    bytes[24..28].copy_from_slice(&0xF1FF_1F40u32.to_le_bytes());
    assert!(matches!(decode(&bytes), Err(AudioError::Unsupported(_))));
    let bytes = wav_bytes(spec(1, 999, 16), &[0; 64]);
    assert!(matches!(decode(&bytes), Err(AudioError::Unsupported(_))));
    let declared =
        DecodeOptions { encoding: Some(Encoding::Linear16), sample_rate: 2_000_000, ..DecodeOptions::default() };
    assert!(matches!(decode_with(&[0; 64], &declared), Err(AudioError::InvalidParams(_))));
    assert!(matches!(resample(&[0.0; 8], 400_000, 16_000), Err(AudioError::Unsupported(_))));
    assert!(StreamResampler::new(1_000_000, 16_000).is_err());
    let mut streamed = StreamDecoder::new(declared);
    assert!(streamed.push(&[0; 64]).is_err());
    // The edges are accepted.
    for rate in [*SAMPLE_RATES.start(), *SAMPLE_RATES.end()] {
        let bytes = wav_bytes(spec(1, rate, 16), &[100; 64]);
        assert_eq!(decode(&bytes).unwrap().sample_rate, rate);
    }
}
