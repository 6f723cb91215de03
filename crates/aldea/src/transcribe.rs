//! `aldea transcribe <file|dir>... [--model M] [--format json|text|srt|vtt] [--threads N] [--beam N]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use aldea_engine::{EngineOptions, TranscribeOptions, Transcriber, Transcript, Vad};
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
}

impl ModelArgs {
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
}

pub(crate) fn load(settings: &Settings, args: &ModelArgs) -> anyhow::Result<Loaded> {
    let store = settings.model_store();
    let mut report = |line: &str| output::info(line);
    let model_dir = store.resolve(&args.model, &mut report).context("resolving the model")?;
    let vad_dir = store.resolve("silero-vad", &mut report).context("resolving the VAD model")?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let engine = Ct2Engine::load(&model_dir, &EngineOptions { threads, ..EngineOptions::default() })
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let vad = Arc::new(Vad::load(&vad_dir.join("silero_vad_v6.onnx")).context("loading the VAD")?);
    let model_name =
        Path::new(&args.model).file_name().map_or_else(|| args.model.clone(), |n| n.to_string_lossy().into_owned());
    Ok(Loaded { transcriber: Transcriber::new(Arc::new(engine), Some(vad.clone())), vad, model_name })
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
    let loaded = load(settings, &args.model)?;
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
