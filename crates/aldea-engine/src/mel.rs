//! Whisper's log-mel front end, exact to the reference implementation: a periodic Hann window of 400
//! samples, hop 160, centred frames with reflect padding, power spectrum, Slaney-scaled mel filters,
//! `log10` clamped at 1e-10, dynamic range limited to 8 (in log10 units) below the maximum, then
//! `(x + 4) / 4`.

use std::sync::Arc;

use realfft::RealFftPlanner;

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP_LENGTH: usize = 160;
/// Mel frames in one 30-s window.
pub const N_FRAMES: usize = 3000;
/// Samples in one 30-s window.
pub const N_SAMPLES: usize = 480_000;

/// A mel spectrogram: `n_mels` rows of `n_frames` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Mel {
    pub n_mels: usize,
    pub n_frames: usize,
    pub data: Vec<f32>,
}

impl Mel {
    /// Copies frames `[start, start + len)` into a zero-padded window of `N_FRAMES` frames,
    /// as `pad_or_trim` does.
    pub fn window(&self, start: usize, len: usize, out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.n_mels * N_FRAMES, 0.0);
        let len = len.min(N_FRAMES).min(self.n_frames.saturating_sub(start));
        for mel_idx in 0..self.n_mels {
            let row = &self.data[mel_idx * self.n_frames..(mel_idx + 1) * self.n_frames];
            out[mel_idx * N_FRAMES..mel_idx * N_FRAMES + len].copy_from_slice(&row[start..start + len]);
        }
    }
}

/// Computes log-mel spectrograms; holds the filters and the FFT plan so they are made once.
pub struct MelExtractor {
    n_mels: usize,
    /// Sparse filters: for each mel bin, the first FFT bin and its weights.
    filters: Vec<(usize, Vec<f32>)>,
    window: Vec<f32>,
    fft: Arc<dyn realfft::RealToComplex<f32>>,
}

impl std::fmt::Debug for MelExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelExtractor").field("n_mels", &self.n_mels).finish()
    }
}

impl MelExtractor {
    pub fn new(n_mels: usize) -> MelExtractor {
        let dense = mel_filters(SAMPLE_RATE as f64, N_FFT, n_mels);
        let filters = dense
            .into_iter()
            .map(|row| {
                let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).map_or(first, |i| i + 1);
                (first, row[first..last.max(first)].iter().map(|&w| w as f32).collect())
            })
            .collect();
        // Periodic Hann window, as torch.hann_window(400) and np.hanning(401)[:-1].
        let window = (0..N_FFT)
            .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()) as f32)
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        MelExtractor { n_mels, filters, window, fft }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Log-mel of `samples` (16 kHz mono) after appending `padding` zeros. The last STFT frame is
    /// dropped, so the result has `(len + padding) / 160` frames. `padding = 0` is Whisper's
    /// `log_mel_spectrogram`; faster-whisper pads 160 samples.
    pub fn compute(&self, samples: &[f32], padding: usize) -> Mel {
        let mut padded = Vec::with_capacity(samples.len() + padding + N_FFT);
        let half = N_FFT / 2;
        let mut signal = samples.to_vec();
        signal.resize(samples.len() + padding, 0.0);
        // Reflect padding needs at least half+1 samples; shorter clips are extended with zeros.
        if signal.len() <= half {
            signal.resize(half + 1, 0.0);
        }
        padded.extend((1..=half).rev().map(|i| signal[i]));
        padded.extend_from_slice(&signal);
        let n = signal.len();
        padded.extend((1..=half).map(|i| signal[n - 1 - i]));

        let n_frames_total = 1 + (padded.len() - N_FFT) / HOP_LENGTH;
        let n_frames = n_frames_total - 1;
        let n_bins = N_FFT / 2 + 1;
        let mut data = vec![0f32; self.n_mels * n_frames];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; n_bins];
        for frame_idx in 0..n_frames {
            let start = frame_idx * HOP_LENGTH;
            for (i, (x, w)) in padded[start..start + N_FFT].iter().zip(&self.window).enumerate() {
                input[i] = x * w;
            }
            // The FFT of a plan-sized buffer cannot fail.
            if self.fft.process_with_scratch(&mut input, &mut spectrum, &mut scratch).is_err() {
                continue;
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (mel_idx, (first, weights)) in self.filters.iter().enumerate() {
                let energy: f32 = weights.iter().zip(&power[*first..]).map(|(w, p)| w * p).sum();
                data[mel_idx * n_frames + frame_idx] = energy.max(1e-10).log10();
            }
        }
        let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let floor = max - 8.0;
        for v in &mut data {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
        Mel { n_mels: self.n_mels, n_frames, data }
    }
}

/// Slaney-style mel filterbank (librosa `filters.mel(sr, n_fft, n_mels, htk=False, norm="slaney")`),
/// computed in f64: `n_mels` rows of `n_fft / 2 + 1` weights.
pub fn mel_filters(sr: f64, n_fft: usize, n_mels: usize) -> Vec<Vec<f64>> {
    let n_bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_bins).map(|i| i as f64 * sr / n_fft as f64).collect();
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    let hz_to_mel = |hz: f64| if hz >= min_log_hz { min_log_mel + (hz / min_log_hz).ln() / logstep } else { hz / f_sp };
    let mel_to_hz =
        |mel: f64| if mel >= min_log_mel { min_log_hz * (logstep * (mel - min_log_mel)).exp() } else { f_sp * mel };
    let max_mel = hz_to_mel(sr / 2.0);
    let freqs: Vec<f64> = (0..n_mels + 2).map(|i| mel_to_hz(max_mel * i as f64 / (n_mels + 1) as f64)).collect();
    (0..n_mels)
        .map(|m| {
            let enorm = 2.0 / (freqs[m + 2] - freqs[m]);
            fft_freqs
                .iter()
                .map(|&f| {
                    let lower = (f - freqs[m]) / (freqs[m + 1] - freqs[m]);
                    let upper = (freqs[m + 2] - f) / (freqs[m + 2] - freqs[m + 1]);
                    lower.min(upper).max(0.0) * enorm
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_counts_follow_whisper() {
        let mel = MelExtractor::new(80);
        assert_eq!(mel.compute(&vec![0.0; 16_000], 0).n_frames, 100);
        assert_eq!(mel.compute(&vec![0.0; 16_000], 160).n_frames, 101);
        assert_eq!(mel.compute(&[0.1; 10], 0).n_frames, 1);
    }

    #[test]
    fn filters_match_librosa_shape() {
        let f = mel_filters(16_000.0, 400, 80);
        assert_eq!(f.len(), 80);
        assert_eq!(f[0].len(), 201);
        // librosa's first filter has weight 0.0248626 at bin 1 (numpy reference).
        assert!((f[0][1] - 0.024_862_595).abs() < 1e-6, "{}", f[0][1]);
    }

    #[test]
    fn window_pads_with_zeros() {
        let mel = Mel { n_mels: 2, n_frames: 3, data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] };
        let mut out = Vec::new();
        mel.window(1, 5, &mut out);
        assert_eq!(out.len(), 2 * N_FRAMES);
        assert_eq!(&out[..3], &[2.0, 3.0, 0.0]);
        assert_eq!(&out[N_FRAMES..N_FRAMES + 3], &[5.0, 6.0, 0.0]);
    }
}
