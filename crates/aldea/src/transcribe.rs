//! `aldea transcribe <file|dir>... [--model M] [--format json|text|srt|vtt] [--threads N] [--beam N]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use aldea_engine::{ComputeType, Device, EngineOptions, TranscribeOptions, Transcriber, Transcript, Vad};
use aldea_engine_ct2::Ct2Engine;
use anyhow::Context;
use clap::{Args, ValueEnum};

use aldea_stt::response;

use crate::{output, Settings};

/// File name extensions picked up when walking a directory.
const AUDIO_EXTENSIONS: &[&str] =
    &["wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "webm", "weba", "m4a", "mp4", "aac", "mka", "raw", "pcm"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Json,
    Text,
    Srt,
    Vtt,
}

#[derive(Debug, Args)]
pub(crate) struct TranscribeArgs {
    /// Audio files, or directories to walk for audio files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    #[command(flatten)]
    audio: AudioArgs,
}

/// How to read the input bytes (the Speech API's `encoding`, `sample_rate`, `channels`).
#[derive(Debug, Clone, Args)]
pub(crate) struct AudioArgs {
    /// A headerless encoding (linear16, mulaw, alaw); without it the container is detected.
    #[arg(long)]
    encoding: Option<String>,
    /// Sample rate of headerless audio.
    #[arg(long, default_value_t = 16_000)]
    sample_rate: u32,
    /// Channels of headerless audio.
    #[arg(long, default_value_t = 1)]
    channels: u16,
}

impl AudioArgs {
    pub(crate) fn options(&self) -> anyhow::Result<aldea_audio::DecodeOptions> {
        let encoding = self.encoding.as_deref().map(str::parse).transpose()?;
        Ok(aldea_audio::DecodeOptions {
            encoding,
            sample_rate: self.sample_rate,
            channels: self.channels,
            ..aldea_audio::DecodeOptions::default()
        })
    }
}

/// Model choice and decoding settings shared by `transcribe` and `eval`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ModelArgs {
    /// A model name (pulled on first use) or a model directory.
    #[arg(long, default_value = "tiny.en")]
    pub(crate) model: String,
    /// Inference threads (default: the number of cores).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Beam size (1 = greedy).
    #[arg(long, default_value_t = 5)]
    pub(crate) beam: usize,
    /// Language of the audio for multilingual models (`auto` detects it).
    #[arg(long, default_value = "en")]
    pub(crate) language: String,
    #[command(flatten)]
    pub(crate) device: DeviceArgs,
}

/// Where the model runs and in which numeric type.
#[derive(Debug, Clone, Args)]
pub(crate) struct DeviceArgs {
    /// Where the model runs: auto (the first CUDA GPU when this build and the machine have one, else
    /// the CPU), cpu, cuda (GPU 0) or cuda:N (CUDA's numbering: CUDA_DEVICE_ORDER=PCI_BUS_ID makes it
    /// nvidia-smi's).
    #[arg(long, default_value = "auto", env = "ALDEA_DEVICE", value_parser = parse_device)]
    pub(crate) device: DeviceChoice,
    /// Weights and arithmetic: auto (int8 on the CPU, float16 on a GPU), int8, int8_float16, float16
    /// or float32.
    #[arg(long, default_value = "auto", env = "ALDEA_COMPUTE_TYPE", value_parser = parse_compute_type)]
    pub(crate) compute_type: ComputeType,
}

/// `--device`: a device, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceChoice {
    Auto,
    Fixed(Device),
}

impl DeviceChoice {
    pub(crate) fn resolve(self) -> Device {
        match self {
            DeviceChoice::Auto => aldea_engine_ct2::auto_device(),
            DeviceChoice::Fixed(device) => device,
        }
    }
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    match s {
        "auto" => Ok(DeviceChoice::Auto),
        "cpu" => Ok(DeviceChoice::Fixed(Device::Cpu)),
        "cuda" | "gpu" => Ok(DeviceChoice::Fixed(Device::Cuda(0))),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(|n| DeviceChoice::Fixed(Device::Cuda(n)))
            .ok_or_else(|| format!("{s:?} is not a device: auto, cpu, cuda or cuda:N")),
    }
}

fn parse_compute_type(s: &str) -> Result<ComputeType, String> {
    s.parse()
}

impl ModelArgs {
    /// What a service loads (`stt`, `all`): its model, threads and device; the decoding settings
    /// are the service's own, per request.
    pub(crate) fn for_service(model: &str, threads: Option<usize>, device: &DeviceArgs) -> ModelArgs {
        ModelArgs { model: model.to_owned(), threads, beam: 5, language: "en".to_owned(), device: device.clone() }
    }

    pub(crate) fn options(&self) -> TranscribeOptions {
        TranscribeOptions {
            beam_size: self.beam.max(1),
            language: (self.language != "auto").then(|| self.language.clone()),
            ..TranscribeOptions::default()
        }
    }
}

/// The loaded model, VAD and the model's name as users refer to it.
pub(crate) struct Loaded {
    pub(crate) transcriber: Transcriber,
    pub(crate) vad: Arc<Vad>,
    pub(crate) model_name: String,
    /// Where the model runs.
    pub(crate) device: Device,
}

/// Loads the model and the VAD; on a GPU with `gpu_replicas` replicas (the stt service's model
/// workers; 1 where one caller decodes).
pub(crate) fn load(settings: &Settings, args: &ModelArgs, gpu_replicas: usize) -> anyhow::Result<Loaded> {
    let store = settings.model_store();
    let mut report = |line: &str| output::info(line);
    let model_dir = store.resolve(&args.model, &mut report).context("resolving the model")?;
    let vad_dir = store.resolve("silero-vad", &mut report).context("resolving the VAD model")?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let device = args.device.device.resolve();
    let compute_type = args.device.compute_type.resolve(device);
    // A replica on the CPU would only split its cores.
    let replicas = if device.is_gpu() { gpu_replicas.max(1) } else { 1 };
    let engine = Ct2Engine::load(
        &model_dir,
        &EngineOptions { device, compute_type, threads, replicas, ..EngineOptions::default() },
    )
    .with_context(|| format!("loading {} on {device}", model_dir.display()))?;
    tracing::info!(%device, compute_type = compute_type.as_str(), "model loaded");
    let vad = Arc::new(Vad::load(&vad_dir.join("silero_vad_v6.onnx")).context("loading the VAD")?);
    let model_name =
        Path::new(&args.model).file_name().map_or_else(|| args.model.clone(), |n| n.to_string_lossy().into_owned());
    Ok(Loaded { transcriber: Transcriber::new(Arc::new(engine), Some(vad.clone())), vad, model_name, device })
}

/// Audio files named directly, plus those found under named directories (sorted, recursive).
pub(crate) fn expand_inputs(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found);
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    files
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
}

/// Reads, decodes and transcribes one file. Errors say what was wrong with the file.
pub(crate) fn transcribe_file(
    loaded: &Loaded,
    path: &Path,
    audio: &aldea_audio::DecodeOptions,
    options: &TranscribeOptions,
) -> anyhow::Result<(Transcript, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let decoded =
        aldea_audio::decode_with(&bytes, audio).with_context(|| format!("{}: cannot decode", path.display()))?;
    if decoded.truncated {
        output::info(&format!(
            "warning: {}: the audio is truncated or damaged; transcribing what decoded",
            path.display()
        ));
    }
    let samples = decoded.to_mono_16k().with_context(|| format!("{}: cannot resample", path.display()))?;
    let bar = progress_bar(decoded.duration_s(), path);
    let transcript = loaded
        .transcriber
        .transcribe(&samples, options, &mut |done| bar.set_position((done * 10.0) as u64))
        .with_context(|| format!("{}: transcription failed", path.display()))?;
    bar.finish_and_clear();
    Ok((transcript, bytes))
}

fn progress_bar(duration_s: f64, path: &Path) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some((duration_s * 10.0).ceil() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} {bar:30} {percent}% {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    bar
}

pub(crate) fn run(settings: &Settings, args: &TranscribeArgs) -> anyhow::Result<ExitCode> {
    let files = expand_inputs(&args.inputs);
    if files.is_empty() {
        anyhow::bail!("no audio files found in the inputs");
    }
    let audio = args.audio.options()?;
    let loaded = load(settings, &args.model, 1)?;
    let options = args.model.options();
    let several = files.len() > 1 || args.inputs.iter().any(|i| i.is_dir());
    let mut n_failed = 0;
    for path in &files {
        match transcribe_file(&loaded, path, &audio, &options) {
            Ok((transcript, bytes)) => emit(&loaded, path, &transcript, &bytes, args.format, several)?,
            Err(e) => {
                n_failed += 1;
                output::error(&format!("error: {e:#}"));
            }
        }
    }
    if n_failed > 0 {
        output::error(&format!("{n_failed} of {} inputs failed", files.len()));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn emit(
    loaded: &Loaded,
    path: &Path,
    transcript: &Transcript,
    bytes: &[u8],
    format: Format,
    several: bool,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let body = response::prerecorded(transcript, &loaded.model_name, bytes);
            let mut value = serde_json::to_value(&body)?;
            if several {
                if let Some(object) = value.as_object_mut() {
                    object.insert("file".to_owned(), serde_json::Value::String(path.display().to_string()));
                }
                output::result_line(&serde_json::to_string(&value)?);
            } else {
                output::result_line(&serde_json::to_string_pretty(&value)?);
            }
        }
        Format::Text => {
            let text = transcript.text();
            if several {
                output::result_line(&format!("{}\t{text}", path.display()));
            } else {
                output::result_line(&text);
            }
        }
        Format::Srt | Format::Vtt => {
            let (body, ext) = if format == Format::Srt {
                (response::srt(transcript), "srt")
            } else {
                (response::vtt(transcript), "vtt")
            };
            if several {
                let mut target = path.as_os_str().to_owned();
                target.push(format!(".{ext}"));
                let target = PathBuf::from(target);
                std::fs::write(&target, body).with_context(|| format!("writing {}", target.display()))?;
                output::info(&format!("wrote {}", target.display()));
            } else {
                output::result_line(body.trim_end());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_as_operators_write_them() {
        assert_eq!(parse_device("auto"), Ok(DeviceChoice::Auto));
        assert_eq!(parse_device("cpu"), Ok(DeviceChoice::Fixed(Device::Cpu)));
        assert_eq!(parse_device("cuda"), Ok(DeviceChoice::Fixed(Device::Cuda(0))));
        assert_eq!(parse_device("cuda:3"), Ok(DeviceChoice::Fixed(Device::Cuda(3))));
        for bad in ["cuda:", "cuda:x", "tpu", ""] {
            let e = parse_device(bad).unwrap_err();
            assert!(e.contains("auto, cpu, cuda or cuda:N"), "{bad:?}: {e}");
        }
        assert_eq!(parse_compute_type("int8_float16"), Ok(ComputeType::Int8Float16));
        assert!(parse_compute_type("fp16").unwrap_err().contains("float16"));
    }

    #[test]
    fn auto_is_the_cpu_in_a_cpu_build() {
        if !aldea_engine_ct2::CUDA_BUILD {
            assert_eq!(DeviceChoice::Auto.resolve(), Device::Cpu);
        }
        assert_eq!(ComputeType::Auto.resolve(Device::Cpu), ComputeType::Int8);
        assert_eq!(ComputeType::Auto.resolve(Device::Cuda(0)), ComputeType::Float16);
        assert_eq!(ComputeType::Int8Float16.resolve(Device::Cuda(0)), ComputeType::Int8Float16);
    }
}
