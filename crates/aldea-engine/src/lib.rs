//! Speech recognition: Whisper models behind one [`Engine`] trait, the exact log-mel front end, the
//! long-form transcription loop (the algorithm faster-whisper runs, written here) with word
//! timestamps, and the Silero voice-activity detector that keeps silence free of words.
//!
//! A backend implements [`Engine`] in its own crate (`aldea-engine-ct2`: CTranslate2, the runtime
//! behind faster-whisper); this crate names no Whisper runtime, so everything above the trait (the
//! stt service's recognizer and scheduler, their tests) builds and runs without the C++ engine.
//!
//! Invariant: never serializes anything to the wire — `aldea-stt` converts these types to `proto`.
//! Invariant: never reads environment variables or configuration files; callers pass paths and options.
//! Invariant: names no Whisper runtime; the only ML runtime here is `tract-onnx` (the VAD).

use std::any::Any;
use std::path::{Path, PathBuf};

pub mod mel;
pub mod model;
pub mod tokenizer;
pub mod transcribe;
pub mod vad;

pub use model::ModelConfig;
pub use tokenizer::Tokenizer;
pub use transcribe::{
    Segment, TranscribeOptions, Transcriber, Transcript, WindowJob, WindowOutput, WindowTimes, Word, WordTiming,
};
pub use vad::{SpeechSpan, Vad, VadOptions, VadStream, GUARD_NEG_THRESHOLD, GUARD_THRESHOLD};

/// Errors of the engine crate.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model files at {path}: {msg}")]
    ModelFile { path: PathBuf, msg: String },
    #[error("model: {0}")]
    Model(String),
    /// The device asked for cannot run the model (missing, or unable to run the compute type).
    #[error("device: {0}")]
    Device(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("voice activity detector: {0}")]
    Vad(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl EngineError {
    /// A model file that could not be read or used.
    pub fn model(path: &Path, e: impl std::fmt::Display) -> EngineError {
        EngineError::ModelFile { path: path.to_owned(), msg: e.to_string() }
    }
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// The CUDA GPU with this index (as `nvidia-smi` numbers them, or as `CUDA_VISIBLE_DEVICES` remaps).
    Cuda(usize),
}

impl Device {
    pub fn is_gpu(self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

/// The numeric type of the weights and the arithmetic. `Auto`: int8 on the CPU, float16 on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeType {
    Auto,
    Int8,
    Int8Float16,
    Float16,
    Float32,
}

impl ComputeType {
    /// `Auto` made concrete for `device`.
    pub fn resolve(self, device: Device) -> ComputeType {
        match (self, device) {
            (ComputeType::Auto, Device::Cpu) => ComputeType::Int8,
            (ComputeType::Auto, Device::Cuda(_)) => ComputeType::Float16,
            (other, _) => other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ComputeType::Auto => "auto",
            ComputeType::Int8 => "int8",
            ComputeType::Int8Float16 => "int8_float16",
            ComputeType::Float16 => "float16",
            ComputeType::Float32 => "float32",
        }
    }
}

impl std::str::FromStr for ComputeType {
    type Err = String;

    fn from_str(s: &str) -> Result<ComputeType, String> {
        [ComputeType::Auto, ComputeType::Int8, ComputeType::Int8Float16, ComputeType::Float16, ComputeType::Float32]
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown compute type {s:?} (auto, int8, int8_float16, float16, float32)"))
    }
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub device: Device,
    pub compute_type: ComputeType,
    /// Intra-op threads per replica (0 = the runtime's default).
    pub threads: usize,
    /// Parallel model replicas (each runs one batch at a time).
    pub replicas: usize,
    /// Seed of the sampling used by the temperature fallback; `None` seeds from the system's
    /// entropy (results then vary from run to run on audio that needs the fallback).
    pub random_seed: Option<u32>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        // A fixed seed: the same audio gives the same transcript on every run and every replica.
        EngineOptions {
            device: Device::Cpu,
            compute_type: ComputeType::Auto,
            threads: 0,
            replicas: 1,
            random_seed: Some(0x41_6c_64_65),
        }
    }
}

/// Encoder output of a batch, opaque to callers: a backend downcasts its own handle.
pub struct Encoded {
    pub batch: usize,
    /// Mel frames of each window that went through the encoder: 3000 for a whole window, fewer when
    /// [`Engine::encode_head`] encoded it in part.
    pub frames: usize,
    inner: Box<dyn Any + Send + Sync>,
}

impl Encoded {
    /// The encoder output of `batch` whole windows.
    pub fn new<T: Any + Send + Sync>(batch: usize, inner: T) -> Encoded {
        Encoded { batch, frames: mel::N_FRAMES, inner: Box::new(inner) }
    }

    /// The encoder output of `batch` windows of which the encoder heard the first `frames`.
    pub fn in_part<T: Any + Send + Sync>(batch: usize, frames: usize, inner: T) -> Encoded {
        Encoded { batch, frames, inner: Box::new(inner) }
    }

    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.inner.downcast_ref::<T>()
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded").field("batch", &self.batch).field("frames", &self.frames).finish()
    }
}

/// Decoding settings for one `generate` call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub beam_size: usize,
    pub patience: f32,
    pub length_penalty: f32,
    pub repetition_penalty: f32,
    pub no_repeat_ngram_size: usize,
    pub max_length: usize,
    /// 0 = greedy / beam search; above 0 samples with this temperature.
    pub temperature: f32,
    pub num_hypotheses: usize,
    pub suppress_blank: bool,
    pub suppress_tokens: Vec<i32>,
    pub max_initial_timestamp_index: usize,
}

/// One decoded sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated token ids (the prompt excluded, end-of-text excluded).
    pub tokens: Vec<u32>,
    /// The runtime's score: cumulative log-probability divided by `len ^ length_penalty`.
    pub score: f32,
    pub no_speech_prob: f32,
}

/// Token-level alignment of one sequence: for each text token, its encoder frame (DTW path jumps).
#[derive(Debug, Clone, PartialEq)]
pub struct Alignment {
    /// `(text token index, encoder frame index)` path of the DTW.
    pub path: Vec<(i64, i64)>,
    pub text_token_probs: Vec<f32>,
}

/// A Whisper model that can encode batches of mel windows, decode from prompts, align tokens to
/// frames and detect the language. All batched: the stt service gathers concurrent work into one call.
pub trait Engine: Send + Sync {
    fn config(&self) -> &ModelConfig;
    /// Where the model runs.
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn tokenizer(&self) -> &Tokenizer;
    /// Runs the encoder on `batch` windows of `[n_mels, 3000]` log-mel frames laid out one after
    /// another in `mels`.
    fn encode(&self, mels: &mut [f32], batch: usize) -> Result<Encoded, EngineError>;
    /// Like [`Engine::encode`] for windows whose frames from `frames` on are padding: only the first
    /// `frames` (even, under 3000) go through the encoder, and the output beyond them is the
    /// encoder's output for an empty window (all padding), so the decoder still sees 30 s. The
    /// encoder's cost falls with its input. A backend that cannot do this encodes the whole window.
    fn encode_head(&self, mels: &mut [f32], batch: usize, frames: usize) -> Result<Encoded, EngineError> {
        let _ = frames;
        self.encode(mels, batch)
    }
    /// Decodes one sequence per prompt from the encoded batch (`prompts.len() == encoded.batch`).
    fn generate(
        &self,
        encoded: &Encoded,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Vec<Generation>, EngineError>;
    /// Aligns text tokens to encoder frames with the alignment heads' cross-attention (DTW).
    fn align(
        &self,
        encoded: &Encoded,
        start_sequence: &[u32],
        text_tokens: &[Vec<u32>],
        num_frames: &[usize],
        median_filter_width: i64,
    ) -> Result<Vec<Alignment>, EngineError>;
    /// Language probabilities per batch item, best first, as `("en", p)`.
    fn detect_language(&self, encoded: &Encoded) -> Result<Vec<Vec<(String, f32)>>, EngineError>;
}
