//! Audio input: decodes what users send into the one form the recognizer reads — 16 kHz mono `f32`
//! samples in [-1, 1] — and keeps per-channel access for multichannel requests.
//!
//! This first cut reads WAV (PCM 8/16/24/32-bit integer and 32-bit float) and headerless little-endian
//! 16-bit PCM; every other container and codec arrives in its own change.
//!
//! Invariant: sync and pure — no threads, no I/O beyond the `Read` it is handed, no async runtime.
//! Invariant: never panics on bad input; every failure is an [`AudioError`].
#![forbid(unsafe_code)]

use std::io::{Cursor, Read};

/// The sample rate the recognizer works at.
pub const TARGET_RATE: u32 = 16_000;

/// What can go wrong reading audio. Each variant says whether the input was bad or empty so that
/// services can answer 415 (undecodable) or 400 (empty) with a clear message.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("the audio is empty")]
    Empty,
    #[error("unsupported audio format: {0}")]
    Unsupported(String),
    #[error("corrupt or undecodable audio: {0}")]
    Corrupt(String),
    #[error("invalid audio parameters: {0}")]
    InvalidParams(String),
    #[error("resampling failed: {0}")]
    Resample(String),
    #[error("reading the audio failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Decoded audio: samples per channel at the source rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub sample_rate: u32,
    /// One vector per channel, all the same length.
    pub channels: Vec<Vec<f32>>,
}

impl Decoded {
    /// Number of frames (samples per channel).
    pub fn n_frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// Duration in seconds.
    pub fn duration_s(&self) -> f64 {
        self.n_frames() as f64 / f64::from(self.sample_rate)
    }

    /// Average of all channels.
    pub fn to_mono(&self) -> Vec<f32> {
        match self.channels.len() {
            0 => Vec::new(),
            1 => self.channels[0].clone(),
            n_channels => {
                let scale = 1.0 / n_channels as f32;
                (0..self.n_frames())
                    .map(|frame_idx| self.channels.iter().map(|ch| ch[frame_idx]).sum::<f32>() * scale)
                    .collect()
            }
        }
    }

    /// Mono at [`TARGET_RATE`]: what the recognizer reads.
    pub fn to_mono_16k(&self) -> Result<Vec<f32>, AudioError> {
        resample(&self.to_mono(), self.sample_rate, TARGET_RATE)
    }
}

/// Decodes a whole file's bytes. RIFF/WAVE is detected by its magic; anything else is refused here
/// (headerless PCM must be declared with [`decode_linear16`]).
pub fn decode(bytes: &[u8]) -> Result<Decoded, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    if is_wav(bytes) {
        return decode_wav(Cursor::new(bytes));
    }
    Err(AudioError::Unsupported(format!("unrecognized container (first bytes {:02x?})", head(bytes))))
}

/// Reads a file and decodes it to 16 kHz mono.
pub fn load_mono_16k(path: &std::path::Path) -> Result<Vec<f32>, AudioError> {
    let bytes = std::fs::read(path)?;
    decode(&bytes)?.to_mono_16k()
}

/// Headerless little-endian signed 16-bit PCM, interleaved.
pub fn decode_linear16(bytes: &[u8], sample_rate: u32, n_channels: u16) -> Result<Decoded, AudioError> {
    if sample_rate == 0 || n_channels == 0 {
        return Err(AudioError::InvalidParams("sample_rate and channels must be positive".to_owned()));
    }
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    let n_channels = usize::from(n_channels);
    let frame_bytes = 2 * n_channels;
    let n_frames = bytes.len() / frame_bytes;
    let mut channels = vec![Vec::with_capacity(n_frames); n_channels];
    for frame in bytes.chunks_exact(frame_bytes) {
        for (ch_idx, sample) in frame.chunks_exact(2).enumerate() {
            channels[ch_idx].push(f32::from(i16::from_le_bytes([sample[0], sample[1]])) / 32768.0);
        }
    }
    Ok(Decoded { sample_rate, channels })
}

/// Resamples mono audio with rubato's FFT resampler (fixed ratio, anti-aliased). A no-op when the
/// rates match.
pub fn resample(samples: &[f32], from_rate: u32, to_rate: u32) -> Result<Vec<f32>, AudioError> {
    use rubato::Resampler;

    if from_rate == to_rate || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    if from_rate == 0 || to_rate == 0 {
        return Err(AudioError::InvalidParams("sample rates must be positive".to_owned()));
    }
    let mut resampler =
        rubato::Fft::<f32>::new(from_rate as usize, to_rate as usize, 1024, 1, rubato::FixedSync::Input)
            .map_err(|e| AudioError::Resample(e.to_string()))?;
    let input = audioadapter_buffers::owned::InterleavedOwned::new_from(samples.to_vec(), 1, samples.len())
        .map_err(|e| AudioError::Resample(e.to_string()))?;
    let output = resampler.process_all(&input, samples.len(), None).map_err(|e| AudioError::Resample(e.to_string()))?;
    Ok(output.take_data())
}

fn is_wav(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE"
}

fn head(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(8)]
}

fn decode_wav<R: Read>(reader: R) -> Result<Decoded, AudioError> {
    let mut wav = hound::WavReader::new(reader).map_err(wav_error)?;
    let spec = wav.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(AudioError::Corrupt("WAV header declares zero channels or rate".to_owned()));
    }
    let n_channels = usize::from(spec.channels);
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => wav.samples::<f32>().collect::<Result<_, _>>().map_err(wav_error)?,
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            wav.samples::<i32>().map(|s| s.map(|v| v as f32 * scale)).collect::<Result<_, _>>().map_err(wav_error)?
        }
        (format, bits) => return Err(AudioError::Unsupported(format!("WAV {format:?} with {bits} bits per sample"))),
    };
    if interleaved.is_empty() {
        return Err(AudioError::Empty);
    }
    let n_frames = interleaved.len() / n_channels;
    let mut channels = vec![Vec::with_capacity(n_frames); n_channels];
    for frame in interleaved.chunks_exact(n_channels) {
        for (ch_idx, &sample) in frame.iter().enumerate() {
            channels[ch_idx].push(sample);
        }
    }
    Ok(Decoded { sample_rate: spec.sample_rate, channels })
}

fn wav_error(e: hound::Error) -> AudioError {
    match e {
        hound::Error::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::Corrupt("the WAV data is truncated".to_owned())
        }
        hound::Error::IoError(io) => AudioError::Io(io),
        hound::Error::Unsupported => AudioError::Unsupported("this WAV sample format".to_owned()),
        other => AudioError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn decodes_stereo_16_bit_and_downmixes() {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let bytes = wav_bytes(spec, &[16384, -16384, 8192, 8192]);
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.sample_rate, 16_000);
        assert_eq!(decoded.channels, vec![vec![0.5, 0.25], vec![-0.5, 0.25]]);
        assert_eq!(decoded.to_mono(), vec![0.0, 0.25]);
        assert_eq!(decoded.to_mono_16k().unwrap(), vec![0.0, 0.25]);
    }

    #[test]
    fn decodes_24_bit() {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8_000,
            bits_per_sample: 24,
            sample_format: hound::SampleFormat::Int,
        };
        let decoded = decode(&wav_bytes(spec, &[1 << 22, -(1 << 23)])).unwrap();
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
        // A RIFF header that stops short.
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let bytes = wav_bytes(spec, &[1, 2, 3, 4]);
        assert!(decode(&bytes[..30]).is_err());
        // Header only: no samples.
        assert!(matches!(decode(&wav_bytes(spec, &[])), Err(AudioError::Empty)));
        assert!(decode_linear16(b"\x00\x01", 0, 1).is_err());
    }

    #[test]
    fn linear16_is_read_interleaved() {
        let decoded = decode_linear16(&[0x00, 0x40, 0x00, 0xc0], 8_000, 2).unwrap();
        assert_eq!(decoded.channels, vec![vec![0.5], vec![-0.5]]);
        assert!((decoded.duration_s() - 1.0 / 8000.0).abs() < 1e-12);
    }
}
