//! Audio as test input: samples in [-1, 1] as 16-bit little-endian PCM and as a mono WAV file.

/// 16-bit little-endian PCM of `samples` (clamped to [-1, 1]).
pub fn pcm16(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes()).collect()
}

/// A mono 16-bit PCM WAV file of `samples` at `rate` Hz.
pub fn wav_mono16(samples: &[f32], rate: u32) -> Vec<u8> {
    let data = pcm16(samples);
    let mut bytes = Vec::with_capacity(44 + data.len());
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&rate.to_le_bytes());
    bytes.extend_from_slice(&(rate * 2).to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&data);
    bytes
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_wav_has_its_header_and_clamped_samples() {
        let wav = super::wav_mono16(&[0.0, 2.0, -1.0], 8_000);
        assert_eq!(wav.len(), 44 + 6);
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 8_000);
        assert_eq!(u32::from_le_bytes(wav[28..32].try_into().unwrap()), 16_000);
        assert_eq!(&wav[44..], &[0, 0, 0xff, 0x7f, 0x01, 0x80]);
    }
}
