//! `aldea bench-streams --audio DIR [--streams 8,32,64] [--seconds S]`: N clients stream real speech
//! (the clips of `DIR/refs.tsv` joined with 1–3 s silences, each client from another clip) at
//! real-time pace into an in-process stt service on the chosen device, and the final latency after
//! each utterance's end, the first words' latency, the model calls and their batch sizes are printed
//! per N. The sizing table of ARCHITECTURE and scripts/device-check.sh come from it.

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::transcribe::{load, ModelArgs};
use crate::Settings;

const ENDPOINTING_S: f64 = 0.3;

#[derive(Debug, Args)]
pub(crate) struct BenchStreamsArgs {
    /// A folder with `refs.tsv` whose audio files make the streams (e.g. the real-dev recordings).
    #[arg(long)]
    audio: PathBuf,
    /// Concurrent streams, one measurement per number.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 2, 4])]
    streams: Vec<usize>,
    /// Seconds of audio each client sends.
    #[arg(long, default_value_t = 40.0)]
    seconds: f64,
    /// Clients start 370 ms apart, as real ones do, but all within this many seconds.
    #[arg(long, default_value_t = 10.0)]
    ramp_seconds: f64,
    /// Largest batch per model call (default: 8 on the CPU, 64 on a GPU); 1 turns batching off.
    #[arg(long)]
    max_batch: Option<usize>,
    /// Every client sends the same audio (their endpoints, and the final decodes, come together).
    #[arg(long)]
    same_audio: bool,
    /// Print each utterance's final as it arrives.
    #[arg(long)]
    verbose: bool,
    #[command(flatten)]
    model: ModelArgs,
}

/// What one client sends (16-bit PCM) and where its utterances lie.
type ClientAudio = (Arc<Vec<u8>>, Arc<Vec<Clip>>);

struct Clip {
    onset: f64,
    speech_end: f64,
}

/// Speech bounds by energy: 20-ms frames above an RMS floor.
fn speech_bounds(samples: &[f32]) -> Option<(f64, f64)> {
    let frames: Vec<bool> = samples
        .chunks(320)
        .map(|f| (f.iter().map(|x| x * x).sum::<f32>() / f.len().max(1) as f32).sqrt() > 0.01)
        .collect();
    let first = frames.iter().position(|&s| s)?;
    let last = frames.iter().rposition(|&s| s)?;
    Some((first as f64 * 0.02, (last + 1) as f64 * 0.02))
}

/// `seconds` of the clips joined with 1–3 s silences, starting at clip `first`.
fn build_stream(
    dir: &std::path::Path,
    files: &[String],
    seconds: f64,
    first: usize,
) -> anyhow::Result<(Vec<u8>, Vec<Clip>)> {
    let mut samples: Vec<f32> = Vec::new();
    let mut clips = Vec::new();
    let mut idx = first;
    while (samples.len() as f64) < seconds * 16_000.0 {
        let path = dir.join(&files[idx % files.len()]);
        let clip = aldea_audio::load_mono_16k(&path).with_context(|| format!("reading {}", path.display()))?;
        let start = samples.len() as f64 / 16_000.0;
        if let Some((onset, end)) = speech_bounds(&clip) {
            clips.push(Clip { onset: start + onset, speech_end: start + end });
        }
        samples.extend(clip);
        samples.extend(std::iter::repeat_n(0.0, 16_000 * (1 + idx % 3)));
        idx += 1;
    }
    let bytes = samples.iter().flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes()).collect();
    Ok((bytes, clips))
}

/// One real-time client: returns (final latencies, first-interim latencies) in seconds.
async fn client(
    addr: std::net::SocketAddr,
    audio: Arc<Vec<u8>>,
    clips: Arc<Vec<Clip>>,
    verbose: bool,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let url = format!("ws://{addr}/v1/listen?encoding=linear16&sample_rate=16000");
    let (socket, _) = tokio_tungstenite::connect_async(url).await.context("connecting")?;
    let (mut sink, mut source) = socket.split();
    let started = Instant::now();
    // Results that have not come 30 s after the audio ended count as missing.
    let deadline =
        tokio::time::Instant::from_std(started) + Duration::from_secs_f64(audio.len() as f64 / 32_000.0 + 30.0);
    let sender = tokio::spawn(async move {
        for (idx, chunk) in audio.chunks(3_200).enumerate() {
            tokio::time::sleep_until((started + Duration::from_millis(100 * idx as u64)).into()).await;
            if sink.send(Message::Binary(chunk.to_vec().into())).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Text(r#"{"type":"CloseStream"}"#.into())).await;
    });
    let mut results: Vec<(f64, Value)> = Vec::new();
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, source.next()).await {
        match frame {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).context("a message that is not JSON")?;
                if value["type"] == "Results" {
                    results.push((started.elapsed().as_secs_f64(), value));
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    sender.abort();
    let mut finals = Vec::new();
    let mut interims = Vec::new();
    for clip in clips.iter() {
        // The final that closes the utterance: the first speech_final reaching past its speech end.
        let final_at = results.iter().find(|(_, m)| {
            m["speech_final"] == true
                && m["start"].as_f64().unwrap_or(0.0) + m["duration"].as_f64().unwrap_or(0.0) >= clip.speech_end - 0.05
        });
        if let Some((arrived, m)) = final_at {
            finals.push(arrived - (clip.speech_end + ENDPOINTING_S));
            if verbose {
                println!(
                    "clip {:.2}-{:.2}: final at {arrived:.2} [{} +{}] {}",
                    clip.onset,
                    clip.speech_end,
                    m["start"],
                    m["duration"],
                    m["channel"]["alternatives"][0]["transcript"]
                );
            }
        }
        let first_words = results.iter().find(|(_, m)| {
            m["channel"]["alternatives"][0]["words"].as_array().is_some_and(|words| {
                words.iter().any(|w| {
                    let start = w["start"].as_f64().unwrap_or(-1.0);
                    start >= clip.onset - 0.3 && start <= clip.speech_end
                })
            })
        });
        if let Some((arrived, _)) = first_words {
            interims.push(arrived - clip.onset);
        }
    }
    Ok((finals, interims))
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

pub(crate) fn run(settings: &Settings, args: &BenchStreamsArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.streams.iter().all(|&n| n > 0), "--streams takes numbers of at least 1");
    let files: Vec<String> = crate::eval::read_refs(&args.audio)?.into_iter().map(|(file, _)| file).collect();
    let max_n = args.streams.iter().copied().max().unwrap_or(1);
    let streams: Vec<ClientAudio> = (0..max_n)
        .map(|i| {
            let (audio, clips) =
                build_stream(&args.audio, &files, args.seconds, if args.same_audio { 0 } else { i * 7 })?;
            Ok((Arc::new(audio), Arc::new(clips)))
        })
        .collect::<anyhow::Result<_>>()?;
    let loaded = load(settings, &args.model, crate::stt::GPU_REPLICAS)?;
    let device = loaded.device;
    let deps = aldea_stt::Deps { transcriber: loaded.transcriber, vad: loaded.vad };
    let (audio, clips) = streams[0].clone();
    println!(
        "stream: {:.1} s, {} utterances{}; {} on {device}, real-time pace",
        audio.len() as f64 / 32_000.0,
        clips.len(),
        if args.same_audio { ", the same for every client" } else { ", each client from another clip" },
        args.model.model,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(crate::stt::worker_threads(device))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        for &n in &args.streams {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let mut config = aldea_stt::Config {
                max_streams: n.max(1),
                max_batch: args.max_batch.unwrap_or(8),
                max_queue_wait_ms: 60_000,
                ..aldea_stt::Config::default()
            };
            if device.is_gpu() {
                crate::stt::size_for_gpu(
                    &mut config,
                    &crate::stt::Sizing { max_streams: Some(n.max(1)), max_batch: args.max_batch },
                );
            }
            let max_batch = config.max_batch;
            let state = aldea_stt::AppState::new(config, deps.clone());
            let shutdown = tokio_util::sync::CancellationToken::new();
            let server = tokio::spawn(aldea_stt::serve(state.clone(), listener, shutdown.clone()));
            let ready_by = Instant::now() + Duration::from_secs(120);
            while !state.is_ready() {
                anyhow::ensure!(Instant::now() < ready_by, "the stt service did not become ready");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Clients start a little apart, as real ones do, all within the ramp.
            let gap = Duration::from_secs_f64(0.37_f64.min(args.ramp_seconds / n.max(1) as f64));
            let mut tasks = Vec::new();
            for (i, (audio, clips)) in streams.iter().take(n).enumerate() {
                let (audio, clips, verbose) = (audio.clone(), clips.clone(), args.verbose);
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(gap * i as u32).await;
                    client(addr, audio, clips, verbose).await
                }));
            }
            let utterances: usize = streams.iter().take(n).map(|(_, clips)| clips.len()).sum();
            let mut finals = Vec::new();
            let mut interims = Vec::new();
            let mut failed = 0;
            for task in tasks {
                match task.await {
                    Ok(Ok((f, i))) => {
                        finals.extend(f);
                        interims.extend(i);
                    }
                    Ok(Err(e)) => {
                        failed += 1;
                        tracing::warn!(error = %format!("{e:#}"), "a client failed");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            shutdown.cancel();
            let _ = server.await;
            let (f50, f95) = (percentile(&mut finals, 50.0), percentile(&mut finals, 95.0));
            let (i50, i95) = (percentile(&mut interims, 50.0), percentile(&mut interims, 95.0));
            let text = state.metrics().render(aldea_stt::metrics::Snapshot {
                free_stream_slots: 0,
                queue_depth: 0,
                ready: true,
            });
            let mean = |name: &str| aldea_stt::metrics::mean_of(&text, name).unwrap_or(0.0);
            println!(
                "{n} stream(s), batches of up to {max_batch}: final after endpoint p50 {f50:.3} s p95 {f95:.3} s ({} finals of {utterances} utterances{}); first words after onset p50 {i50:.3} s p95 {i95:.3} s; {} model calls, batch size mean {:.2}, {:.3} s per call mean; stream windows queued+run {:.3} s mean",
                finals.len(),
                if failed > 0 { format!(", {failed} clients failed") } else { String::new() },
                aldea_stt::metrics::count_of(&text, "aldea_stt_batch_seconds").unwrap_or(0),
                mean("aldea_stt_batch_size"),
                mean("aldea_stt_batch_seconds"),
                mean("aldea_stt_stream_window_seconds"),
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
