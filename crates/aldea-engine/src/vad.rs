//! Voice activity detection with Silero VAD (the ONNX graph faster-whisper ships), run by tract, a
//! pure-Rust ONNX runtime: 512-sample windows at 16 kHz, each with 64 samples of context, the
//! encoder batched over all windows and the LSTM carried across them.

use std::path::Path;

use tract_onnx::prelude::*;

use crate::EngineError;

/// Samples per VAD window at 16 kHz.
pub const WINDOW: usize = 512;
/// Samples of the previous window prepended to each window.
const CONTEXT: usize = 64;
const STATE: usize = 128;
const SAMPLE_RATE: f64 = 16_000.0;

/// How speech is cut out of the probabilities (faster-whisper's `VadOptions`, same defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct VadOptions {
    pub threshold: f32,
    /// Below this, always silence; `None` = `threshold - 0.15`.
    pub neg_threshold: Option<f32>,
    pub min_speech_duration_ms: u32,
    pub min_silence_duration_ms: u32,
    pub speech_pad_ms: u32,
}

impl Default for VadOptions {
    fn default() -> Self {
        VadOptions {
            threshold: 0.5,
            neg_threshold: None,
            min_speech_duration_ms: 0,
            min_silence_duration_ms: 2000,
            speech_pad_ms: 400,
        }
    }
}

/// Speech probability at which the guard's speech starts ([`VadOptions::guard`]; streams start
/// speech here too).
pub const GUARD_THRESHOLD: f32 = 0.25;
/// Below this the guard's speech ends (after the minimum silence; streams count it toward the
/// endpoint).
pub const GUARD_NEG_THRESHOLD: f32 = 0.10;

impl VadOptions {
    /// The spans the VAD guard keeps words in (`TranscribeOptions::vad`): faster-whisper's options
    /// with the threshold at 0.25 (silence below 0.10). At 0.5, band-limited (8-kHz G.711),
    /// compressed and whispered speech scores below the threshold and its words were dropped;
    /// non-speech (silence, white/pink/brown noise, hum, room tone) stays far below 0.25
    /// (docs/decisions/20-the-vad-guard-keeps-quiet-speech.md has the measurements).
    pub fn guard() -> VadOptions {
        VadOptions { threshold: GUARD_THRESHOLD, neg_threshold: Some(GUARD_NEG_THRESHOLD), ..VadOptions::default() }
    }
}

/// A stretch of speech, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeechSpan {
    pub start: f64,
    pub end: f64,
}

type Plan = std::sync::Arc<TypedSimplePlan>;

/// A loaded Silero VAD. The model is stateless between calls; each call starts a fresh LSTM state.
pub struct Vad {
    plan: Plan,
}

impl std::fmt::Debug for Vad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vad").finish_non_exhaustive()
    }
}

impl Vad {
    pub fn load(path: &Path) -> Result<Vad, EngineError> {
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| EngineError::model(path, format!("{e:#}")))?;
        Ok(Vad { plan })
    }

    /// Speech probability of each 512-sample window (the audio is zero-padded to whole windows).
    pub fn probabilities(&self, samples: &[f32]) -> Result<Vec<f32>, EngineError> {
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        let n_windows = samples.len().div_ceil(WINDOW);
        // Rows of at most MAX_BATCH windows, each with the context before it: memory stays at one
        // batch however long the audio; the LSTM state carries over from batch to batch.
        let mut state = LstmState::new()?;
        let mut probs = Vec::with_capacity(n_windows);
        let mut batch = Vec::new();
        for first in (0..n_windows).step_by(MAX_BATCH) {
            let last = (first + MAX_BATCH).min(n_windows);
            batch.clear();
            batch.resize((last - first) * (CONTEXT + WINDOW), 0f32);
            for window_idx in first..last {
                let row_idx = window_idx - first;
                let row = &mut batch[row_idx * (CONTEXT + WINDOW)..(row_idx + 1) * (CONTEXT + WINDOW)];
                let start = window_idx * WINDOW;
                if window_idx > 0 {
                    row[..CONTEXT].copy_from_slice(&samples[start - CONTEXT..start]);
                }
                let end = (start + WINDOW).min(samples.len());
                row[CONTEXT..CONTEXT + end - start].copy_from_slice(&samples[start..end]);
            }
            self.run_rows(&batch, &mut state, &mut probs)?;
        }
        probs.truncate(n_windows);
        Ok(probs)
    }

    /// Runs rows of `[CONTEXT + WINDOW]` samples through the model, carrying the LSTM state.
    fn run_rows(&self, batch: &[f32], state: &mut LstmState, probs: &mut Vec<f32>) -> Result<(), EngineError> {
        for chunk in batch.chunks(MAX_BATCH * (CONTEXT + WINDOW)) {
            let rows = chunk.len() / (CONTEXT + WINDOW);
            let input = Tensor::from_shape(&[rows, CONTEXT + WINDOW], chunk).map_err(vad_error)?;
            let h = std::mem::replace(&mut state.h, Tensor::zero::<f32>(&[1, 1, STATE]).map_err(vad_error)?);
            let c = std::mem::replace(&mut state.c, Tensor::zero::<f32>(&[1, 1, STATE]).map_err(vad_error)?);
            let mut outputs =
                self.plan.run(tvec![input.into_tvalue(), h.into_tvalue(), c.into_tvalue()]).map_err(vad_error)?;
            if outputs.len() < 3 {
                return Err(EngineError::Vad("the model returned fewer than 3 outputs".to_owned()));
            }
            state.c = outputs.remove(2).into_tensor();
            state.h = outputs.remove(1).into_tensor();
            let out = outputs.remove(0).into_tensor();
            probs.extend(out.to_plain_array_view::<f32>().map_err(vad_error)?.iter().copied());
        }
        Ok(())
    }

    /// Speech spans of the audio (faster-whisper's `get_speech_timestamps`).
    pub fn speech_spans(&self, samples: &[f32], options: &VadOptions) -> Result<Vec<SpeechSpan>, EngineError> {
        let probs = self.probabilities(samples)?;
        Ok(spans_from_probabilities(&probs, samples.len(), options))
    }
}

/// Windows run through the model at once.
const MAX_BATCH: usize = 2_000;

/// The LSTM state carried from one window to the next.
struct LstmState {
    h: Tensor,
    c: Tensor,
}

impl LstmState {
    fn new() -> Result<LstmState, EngineError> {
        Ok(LstmState {
            h: Tensor::zero::<f32>(&[1, 1, STATE]).map_err(vad_error)?,
            c: Tensor::zero::<f32>(&[1, 1, STATE]).map_err(vad_error)?,
        })
    }
}

/// The VAD over a live stream: samples in, one probability per completed 512-sample window out,
/// the same values [`Vad::probabilities`] gives for the whole audio. Holds under one window of audio.
pub struct VadStream {
    vad: std::sync::Arc<Vad>,
    state: LstmState,
    /// The last `CONTEXT` samples of the previous window (zeros before the first).
    context: [f32; CONTEXT],
    pending: Vec<f32>,
}

impl std::fmt::Debug for VadStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VadStream").field("pending", &self.pending.len()).finish_non_exhaustive()
    }
}

impl VadStream {
    pub fn new(vad: std::sync::Arc<Vad>) -> Result<VadStream, EngineError> {
        Ok(VadStream { vad, state: LstmState::new()?, context: [0.0; CONTEXT], pending: Vec::with_capacity(WINDOW) })
    }

    /// Feeds samples; returns the probabilities of the windows they completed.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>, EngineError> {
        self.pending.extend_from_slice(samples);
        let n_windows = self.pending.len() / WINDOW;
        if n_windows == 0 {
            return Ok(Vec::new());
        }
        let mut batch = Vec::with_capacity(n_windows * (CONTEXT + WINDOW));
        for window in self.pending[..n_windows * WINDOW].chunks_exact(WINDOW) {
            batch.extend_from_slice(&self.context);
            batch.extend_from_slice(window);
            self.context.copy_from_slice(&window[WINDOW - CONTEXT..]);
        }
        self.pending.drain(..n_windows * WINDOW);
        let mut probs = Vec::with_capacity(n_windows);
        self.vad.run_rows(&batch, &mut self.state, &mut probs)?;
        Ok(probs)
    }
}

fn vad_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Vad(e.to_string())
}

/// Turns window probabilities into padded speech spans: speech starts at a window above `threshold`
/// and ends after `min_silence_duration_ms` below the negative threshold.
pub fn spans_from_probabilities(probs: &[f32], n_samples: usize, options: &VadOptions) -> Vec<SpeechSpan> {
    let threshold = options.threshold;
    let neg_threshold = options.neg_threshold.unwrap_or((threshold - 0.15).max(0.01));
    let min_speech_samples = SAMPLE_RATE * f64::from(options.min_speech_duration_ms) / 1000.0;
    let speech_pad_samples = (SAMPLE_RATE * f64::from(options.speech_pad_ms) / 1000.0) as usize;
    let min_silence_samples = SAMPLE_RATE * f64::from(options.min_silence_duration_ms) / 1000.0;

    let mut triggered = false;
    let mut speeches: Vec<(usize, usize)> = Vec::new();
    let mut current_start = 0usize;
    let mut temp_end = 0usize;
    for (i, &p) in probs.iter().enumerate() {
        let pos = WINDOW * i;
        if p >= threshold && temp_end != 0 {
            temp_end = 0;
        }
        if p >= threshold && !triggered {
            triggered = true;
            current_start = pos;
            continue;
        }
        if p < neg_threshold && triggered {
            if temp_end == 0 {
                temp_end = pos;
            }
            if ((pos - temp_end) as f64) < min_silence_samples {
                continue;
            }
            if (temp_end - current_start) as f64 > min_speech_samples {
                speeches.push((current_start, temp_end));
            }
            temp_end = 0;
            triggered = false;
        }
    }
    if triggered && (n_samples.saturating_sub(current_start)) as f64 > min_speech_samples {
        speeches.push((current_start, n_samples));
    }

    let n = speeches.len();
    for i in 0..n {
        if i == 0 {
            speeches[i].0 = speeches[i].0.saturating_sub(speech_pad_samples);
        }
        if i + 1 < n {
            let silence = speeches[i + 1].0.saturating_sub(speeches[i].1);
            if silence < 2 * speech_pad_samples {
                speeches[i].1 += silence / 2;
                speeches[i + 1].0 = speeches[i + 1].0.saturating_sub(silence / 2);
            } else {
                speeches[i].1 = (speeches[i].1 + speech_pad_samples).min(n_samples);
                speeches[i + 1].0 = speeches[i + 1].0.saturating_sub(speech_pad_samples);
            }
        } else {
            speeches[i].1 = (speeches[i].1 + speech_pad_samples).min(n_samples);
        }
    }
    speeches
        .into_iter()
        .map(|(s, e)| SpeechSpan { start: s as f64 / SAMPLE_RATE, end: e as f64 / SAMPLE_RATE })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_need_enough_silence_to_end() {
        let options = VadOptions { min_silence_duration_ms: 100, speech_pad_ms: 0, ..Default::default() };
        // 1 window of speech every ~32 ms window; 100 ms of silence = 4 windows (3.125 rounded up).
        let mut probs = vec![0.0; 10];
        probs.extend(vec![0.9; 20]);
        probs.extend(vec![0.0; 20]);
        probs.extend(vec![0.9; 5]);
        probs.extend(vec![0.2; 2]); // a short dip is not an end
        probs.extend(vec![0.9; 5]);
        let n_samples = probs.len() * WINDOW;
        let spans = spans_from_probabilities(&probs, n_samples, &options);
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert!((spans[0].start - 10.0 * 512.0 / 16000.0).abs() < 1e-9);
        assert!((spans[0].end - 30.0 * 512.0 / 16000.0).abs() < 1e-9);
        assert!((spans[1].end - n_samples as f64 / 16000.0).abs() < 1e-9);
    }

    #[test]
    fn silence_gives_no_spans() {
        assert!(spans_from_probabilities(&[0.01; 100], 51_200, &VadOptions::default()).is_empty());
    }
}
