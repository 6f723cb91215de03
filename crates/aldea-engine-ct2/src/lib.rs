//! The CTranslate2 backend of [`aldea_engine::Engine`] (`ct2rs::sys::Whisper`): the engine behind
//! faster-whisper, reading the same model directories with no conversion; int8 on CPU, float16 on
//! CUDA (the `cuda` feature, see scripts/build-cuda.sh). Only the `aldea` binary (which picks adapters), tests and benchmarks name this crate.
//!
//! Invariant: the only crate that names `ct2rs` (and so links CTranslate2 and oneDNN).
//! Invariant: the only unsafe code of the workspace is in `host` (the runtime's memory seen from Rust).

use std::path::Path;
use std::sync::{Arc, Mutex};

use ct2rs::sys;
use host::{copy_to_host, HostView};

#[allow(unsafe_code)]
mod host;

use aldea_engine::mel::N_FRAMES;
use aldea_engine::{
    Alignment, ComputeType, Device, Encoded, Engine, EngineError, EngineOptions, GenerateOptions, Generation,
    ModelConfig, Tokenizer,
};

/// Whether this build can run on CUDA GPUs (the `cuda` feature).
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// The CUDA GPUs the runtime sees (0 in a CPU build, without a driver or without a GPU).
pub fn cuda_device_count() -> usize {
    if !CUDA_BUILD {
        return 0;
    }
    usize::try_from(sys::get_device_count(sys::Device::CUDA)).unwrap_or(0)
}

/// `auto`: the first GPU when the runtime sees one, else the CPU.
pub fn auto_device() -> Device {
    if cuda_device_count() > 0 {
        Device::Cuda(0)
    } else {
        Device::Cpu
    }
}

/// A loaded CTranslate2 Whisper model.
pub struct Ct2Engine {
    model: sys::Whisper,
    config: ModelConfig,
    tokenizer: Tokenizer,
    device: Device,
    /// The encoder's output for an empty window (`[1500, d_model]`, all padding), made on first use
    /// by [`Engine::encode_head`].
    empty_window: Mutex<Option<Arc<Vec<f32>>>>,
}

impl std::fmt::Debug for Ct2Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ct2Engine").field("n_mels", &self.config.n_mels).finish()
    }
}

/// Encoder output: kept in the runtime's memory, or (windows encoded in part) assembled on the host.
enum Ct2Encoded {
    Runtime(sys::StorageView<'static>),
    Host(HostView),
}

impl Ct2Encoded {
    fn view(&self) -> &sys::StorageView<'static> {
        match self {
            Ct2Encoded::Runtime(view) => view,
            Ct2Encoded::Host(host) => host.view(),
        }
    }
}

impl Ct2Engine {
    pub fn load(dir: &Path, options: &EngineOptions) -> Result<Ct2Engine, EngineError> {
        let mut config = ModelConfig::from_model_dir(dir)?;
        let tokenizer = Tokenizer::from_model_dir(dir)?;
        let (device, index) = match options.device {
            Device::Cpu => (sys::Device::CPU, 0),
            Device::Cuda(index) => {
                let visible = cuda_device_count();
                if !CUDA_BUILD {
                    return Err(EngineError::Device(
                        "this aldea was built without CUDA (scripts/build-cuda.sh builds the GPU variant); use --device cpu"
                            .to_owned(),
                    ));
                }
                if index >= visible {
                    return Err(EngineError::Device(format!(
                        "no CUDA device {index}: the runtime sees {visible} (driver, CUDA_VISIBLE_DEVICES, libcudnn.so.9 and libcublas.so.13 on the library path?)"
                    )));
                }
                (sys::Device::CUDA, index)
            }
        };
        let resolved = options.compute_type.resolve(options.device);
        if options.device == Device::Cpu && matches!(resolved, ComputeType::Float16 | ComputeType::Int8Float16) {
            return Err(EngineError::Device(format!(
                "{} needs a GPU; on the CPU use int8 or float32",
                resolved.as_str()
            )));
        }
        let compute_type = match resolved {
            ComputeType::Auto | ComputeType::Int8 => sys::ComputeType::INT8,
            ComputeType::Int8Float16 => sys::ComputeType::INT8_FLOAT16,
            ComputeType::Float16 => sys::ComputeType::FLOAT16,
            ComputeType::Float32 => sys::ComputeType::FLOAT32,
        };
        let index = i32::try_from(index).map_err(|e| EngineError::Model(e.to_string()))?;
        let ct2_config = sys::Config {
            device,
            compute_type,
            num_threads_per_replica: options.threads,
            device_indices: vec![index; options.replicas.max(1)],
            ..Default::default()
        };
        if let Some(seed) = options.random_seed {
            // The runtime seeds each worker thread's generator from this when it first samples.
            sys::set_random_seed(seed);
        }
        let model = sys::Whisper::new(dir, ct2_config).map_err(|e| EngineError::model(dir, e))?;
        config.n_mels = model.n_mels();
        config.multilingual = model.is_multilingual();
        Ok(Ct2Engine { model, config, tokenizer, device: options.device, empty_window: Mutex::new(None) })
    }

    fn encoded<'a>(&self, encoded: &'a Encoded) -> Result<&'a sys::StorageView<'static>, EngineError> {
        encoded
            .downcast_ref::<Ct2Encoded>()
            .map(Ct2Encoded::view)
            .ok_or_else(|| EngineError::InvalidInput("encoder output from another backend".to_owned()))
    }

    /// Runs the encoder on mel frames of the given shape and returns its output on the host.
    fn encode_on_host(&self, mels: &mut [f32], shape: &[usize]) -> Result<Vec<f32>, EngineError> {
        let view =
            sys::StorageView::new(shape, mels, sys::Device::CPU).map_err(|e| EngineError::Inference(e.to_string()))?;
        let out = self.model.encode(&view, true).map_err(|e| EngineError::Inference(e.to_string()))?;
        let len = usize::try_from(out.size()).map_err(|e| EngineError::Inference(e.to_string()))?;
        copy_to_host(&out, len).map_err(EngineError::Inference)
    }

    /// The encoder's output for a window of padding alone (computed once).
    fn empty_window(&self) -> Result<Arc<Vec<f32>>, EngineError> {
        if let Some(empty) = self.empty_window.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(empty.clone());
        }
        let mut mels = vec![0.0f32; self.config.n_mels * N_FRAMES];
        let empty = Arc::new(self.encode_on_host(&mut mels, &[1, self.config.n_mels, N_FRAMES])?);
        *self.empty_window.lock().unwrap_or_else(|p| p.into_inner()) = Some(empty.clone());
        Ok(empty)
    }

    fn token_strings(&self, ids: &[u32]) -> Result<Vec<&str>, EngineError> {
        ids.iter()
            .map(|&id| {
                self.tokenizer.token(id).ok_or_else(|| EngineError::InvalidInput(format!("token id {id} out of range")))
            })
            .collect()
    }
}

impl Engine for Ct2Engine {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn device(&self) -> Device {
        self.device
    }

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn encode(&self, mels: &mut [f32], batch: usize) -> Result<Encoded, EngineError> {
        let n_mels = self.config.n_mels;
        if batch == 0 || mels.len() != batch * n_mels * N_FRAMES {
            return Err(EngineError::InvalidInput(format!(
                "expected {batch} windows of {n_mels}x{N_FRAMES} mel frames, got {} values",
                mels.len()
            )));
        }
        let view = sys::StorageView::new(&[batch, n_mels, N_FRAMES], mels, sys::Device::CPU)
            .map_err(|e| EngineError::Inference(e.to_string()))?;
        let out = self.model.encode(&view, false).map_err(|e| EngineError::Inference(e.to_string()))?;
        Ok(Encoded::new(batch, Ct2Encoded::Runtime(out)))
    }

    fn encode_head(&self, mels: &mut [f32], batch: usize, frames: usize) -> Result<Encoded, EngineError> {
        let n_mels = self.config.n_mels;
        // Host assembly only pays on the CPU (on a GPU the output would travel to the host and back).
        if self.device != Device::Cpu || frames == 0 || frames >= N_FRAMES || !frames.is_multiple_of(2) {
            return self.encode(mels, batch);
        }
        if batch == 0 || mels.len() != batch * n_mels * N_FRAMES {
            return Err(EngineError::InvalidInput(format!(
                "expected {batch} windows of {n_mels}x{N_FRAMES} mel frames, got {} values",
                mels.len()
            )));
        }
        let mut head = Vec::with_capacity(batch * n_mels * frames);
        for row in mels.chunks_exact(N_FRAMES) {
            head.extend_from_slice(&row[..frames]);
        }
        let heads = self.encode_on_host(&mut head, &[batch, n_mels, frames])?;
        let empty = self.empty_window()?;
        let positions = frames / 2;
        let d_model = empty.len() / (N_FRAMES / 2);
        if heads.len() != batch * positions * d_model {
            return Err(EngineError::Inference(format!(
                "the encoder returned {} values for {batch} windows of {positions} positions",
                heads.len()
            )));
        }
        let mut data = Vec::with_capacity(batch * (N_FRAMES / 2) * d_model);
        for window in heads.chunks_exact(positions * d_model) {
            data.extend_from_slice(window);
            data.extend_from_slice(&empty[positions * d_model..]);
        }
        let view = HostView::new(&[batch, N_FRAMES / 2, d_model], data).map_err(EngineError::Inference)?;
        Ok(Encoded::in_part(batch, frames, Ct2Encoded::Host(view)))
    }

    fn generate(
        &self,
        encoded: &Encoded,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Vec<Generation>, EngineError> {
        if prompts.len() != encoded.batch {
            return Err(EngineError::InvalidInput(format!(
                "{} prompts for a batch of {}",
                prompts.len(),
                encoded.batch
            )));
        }
        let view = self.encoded(encoded)?;
        let prompts = prompts.iter().map(|p| self.token_strings(p)).collect::<Result<Vec<_>, _>>()?;
        let sampling = options.temperature > 0.0;
        let ct2_options = sys::WhisperOptions {
            beam_size: if sampling { 1 } else { options.beam_size },
            patience: options.patience,
            length_penalty: options.length_penalty,
            repetition_penalty: options.repetition_penalty,
            no_repeat_ngram_size: options.no_repeat_ngram_size,
            max_length: options.max_length,
            sampling_topk: if sampling { 0 } else { 1 },
            sampling_temperature: if sampling { options.temperature } else { 1.0 },
            num_hypotheses: options.num_hypotheses.max(1),
            return_scores: true,
            return_logits_vocab: false,
            return_no_speech_prob: true,
            max_initial_timestamp_index: options.max_initial_timestamp_index,
            suppress_blank: options.suppress_blank,
            suppress_tokens: options.suppress_tokens.clone(),
        };
        let results =
            self.model.generate(view, &prompts, &ct2_options).map_err(|e| EngineError::Inference(e.to_string()))?;
        results
            .into_iter()
            .map(|r| {
                let tokens = r.sequences_ids.first().cloned().unwrap_or_default();
                Ok(Generation {
                    tokens: tokens.into_iter().map(|t| t as u32).collect(),
                    score: r.scores.first().copied().unwrap_or(f32::NEG_INFINITY),
                    no_speech_prob: r.no_speech_prob,
                })
            })
            .collect()
    }

    fn align(
        &self,
        encoded: &Encoded,
        start_sequence: &[u32],
        text_tokens: &[Vec<u32>],
        num_frames: &[usize],
        median_filter_width: i64,
    ) -> Result<Vec<Alignment>, EngineError> {
        let view = self.encoded(encoded)?;
        let start: Vec<usize> = start_sequence.iter().map(|&t| t as usize).collect();
        let text: Vec<Vec<usize>> = text_tokens.iter().map(|s| s.iter().map(|&t| t as usize).collect()).collect();
        let results = self
            .model
            .align(view, &start, &text, num_frames, median_filter_width)
            .map_err(|e| EngineError::Inference(e.to_string()))?;
        Ok(results
            .into_iter()
            .map(|r| Alignment {
                path: r.alignments.iter().map(|a| (a.token_x, a.frame_x)).collect(),
                text_token_probs: r.text_token_probs,
            })
            .collect())
    }

    fn detect_language(&self, encoded: &Encoded) -> Result<Vec<Vec<(String, f32)>>, EngineError> {
        if !self.config.multilingual {
            return Ok(vec![vec![("en".to_owned(), 1.0)]; encoded.batch]);
        }
        let view = self.encoded(encoded)?;
        let results = self.model.detect_language(view).map_err(|e| EngineError::Inference(e.to_string()))?;
        Ok(results
            .into_iter()
            .map(|langs| {
                langs
                    .into_iter()
                    .map(|d| (d.language.trim_start_matches("<|").trim_end_matches("|>").to_owned(), d.probability))
                    .collect()
            })
            .collect())
    }
}
