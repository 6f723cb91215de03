//! Streaming latency and concurrency benchmark: N clients stream real speech (the real-dev clips
//! joined with 1–3 s silences, each client from another clip) at real-time pace into an in-process
//! stt service, with batching on and off. Reports, per N: p50/p95 of the final after the endpointing window closes (speech end +
//! 300 ms on the audio timeline, which is the wall clock at real-time pace) and of the first
//! interim after speech onset; and the largest N whose p95 final latency stays ≤ 1.5 s.
//!
//! `ALDEA_TEST_MODELS=… cargo run --release -p aldea-stt --example stream_bench -- [SECONDS] [MAX_N]`

#![allow(clippy::print_stdout)] // A benchmark reports on stdout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aldea_engine::{EngineOptions, Transcriber, Vad};
use aldea_engine_ct2::Ct2Engine;
use aldea_stt::{AppState, Config, Deps};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const ENDPOINTING_S: f64 = 0.3;

/// What one client sends (16-bit PCM) and where its utterances lie.
type ClientAudio = (Arc<Vec<u8>>, Arc<Vec<Clip>>);

struct Clip {
    onset: f64,
    speech_end: f64,
}

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (see scripts/bench.sh)")))
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

/// `seconds` of the real-dev clips joined with 1–3 s silences, starting at clip `first`.
fn build_stream(seconds: f64, first: usize) -> (Vec<u8>, Vec<Clip>) {
    let files: Vec<String> = aldea_testkit::fixtures::real_dev_refs().into_iter().map(|(file, _)| file).collect();
    let mut samples: Vec<f32> = Vec::new();
    let mut clips = Vec::new();
    let mut idx = first;
    while (samples.len() as f64) < seconds * 16_000.0 {
        let clip =
            aldea_audio::load_mono_16k(&aldea_testkit::fixtures::real_dev(&files[idx % files.len()])).expect("clip");
        let start = samples.len() as f64 / 16_000.0;
        if let Some((onset, end)) = speech_bounds(&clip) {
            clips.push(Clip { onset: start + onset, speech_end: start + end });
        }
        samples.extend(clip);
        samples.extend(std::iter::repeat_n(0.0, 16_000 * (1 + idx % 3)));
        idx += 1;
    }
    let bytes = samples.iter().flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes()).collect();
    (bytes, clips)
}

/// One real-time client: returns (final latencies, first-interim latencies) in seconds.
async fn client(addr: std::net::SocketAddr, audio: Arc<Vec<u8>>, clips: Arc<Vec<Clip>>) -> (Vec<f64>, Vec<f64>) {
    let url = format!("ws://{addr}/v1/listen?encoding=linear16&sample_rate=16000");
    let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    let (mut sink, mut source) = socket.split();
    let started = Instant::now();
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
    while let Some(Ok(frame)) = source.next().await {
        match frame {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if value["type"] == "Results" {
                    results.push((started.elapsed().as_secs_f64(), value));
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let _ = sender.await;
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
            if std::env::var_os("BENCH_VERBOSE").is_some() {
                eprintln!(
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
    (finals, interims)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// The environment variable `name` parsed, or `default` when it is unset or does not parse.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // RUST_LOG=aldea_stt=debug traces every stream window (why it was due, its audio, its latency).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(40.0);
    let max_n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    // BENCH_THREADS: inference threads (default 2, the machine's cores); BENCH_BATCHING=on|off runs one
    // mode; BENCH_INTERIM_HOLD_MS: the service's `interim_hold_ms` (0: interims never wait);
    // BENCH_PACE=0: the service's `pace_interims` off; BENCH_AGREEMENT_BEAM: the service's
    // `agreement_beam_size`; BENCH_ENCODER_PAD: the service's `encoder_padding_s` (0: whole windows).
    let threads: usize = env_or("BENCH_THREADS", 2);
    let only = std::env::var("BENCH_BATCHING").ok();
    let models = env_path("ALDEA_TEST_MODELS");
    let engine =
        Ct2Engine::load(&models.join("tiny.en"), &EngineOptions { threads, ..Default::default() }).expect("tiny.en");
    let vad = Arc::new(Vad::load(&models.join("silero-vad/silero_vad_v6.onnx")).expect("VAD"));
    let deps = Deps { transcriber: Transcriber::new(Arc::new(engine), Some(vad.clone())), vad };
    // Each client starts at another clip, as independent speakers do. BENCH_SYNC=1: every client
    // sends the same audio 370 ms after the previous one, so their endpoints, and the final decodes
    // behind them, always come together (a synchronized worst case).
    let rotate = std::env::var_os("BENCH_SYNC").is_none();
    let streams: Vec<ClientAudio> = (0..max_n)
        .map(|i| {
            let (audio, clips) = build_stream(seconds, if rotate { i * 7 } else { 0 });
            (Arc::new(audio), Arc::new(clips))
        })
        .collect();
    let (audio, clips) = streams[0].clone();
    println!(
        "stream: {:.1} s, {} utterances{}; tiny.en, {threads} threads, real-time pace",
        audio.len() as f64 / 32_000.0,
        clips.len(),
        if rotate { ", each client from another clip" } else { ", the same for every client" }
    );
    for (label, max_batch) in [("batching on", 8), ("batching off", 1)] {
        if only.as_deref().is_some_and(|o| !label.ends_with(o)) {
            continue;
        }
        let mut best = 0;
        // BENCH_STREAMS=N measures N streams only.
        let only_n: Option<usize> = std::env::var("BENCH_STREAMS").ok().and_then(|v| v.parse().ok());
        for n in only_n.map_or(1..=max_n, |n| n..=n) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let defaults = Config::default();
            let config = Config {
                agreement_beam_size: env_or("BENCH_AGREEMENT_BEAM", defaults.agreement_beam_size),
                max_streams: 64,
                max_batch,
                max_queue_wait_ms: 60_000,
                interim_hold_ms: env_or("BENCH_INTERIM_HOLD_MS", defaults.interim_hold_ms),
                pace_interims: std::env::var("BENCH_PACE").map_or(defaults.pace_interims, |v| v != "0"),
                encoder_padding_s: Some(env_or("BENCH_ENCODER_PAD", defaults.encoder_padding_s.unwrap_or(0.0)))
                    .filter(|&pad| pad > 0.0),
                ..defaults
            };
            let state = AppState::new(config, deps.clone());
            let shutdown = tokio_util::sync::CancellationToken::new();
            let server = tokio::spawn(aldea_stt::serve(state.clone(), listener, shutdown.clone()));
            while !state.is_ready() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut tasks = Vec::new();
            for (i, (audio, clips)) in streams.iter().take(n).enumerate() {
                let (audio, clips) = (audio.clone(), clips.clone());
                tasks.push(tokio::spawn(async move {
                    // Clients start a little apart, as real ones do.
                    tokio::time::sleep(Duration::from_millis(370 * i as u64)).await;
                    client(addr, audio, clips).await
                }));
            }
            let mut finals = Vec::new();
            let mut interims = Vec::new();
            for task in tasks {
                let (f, i) = task.await.unwrap();
                finals.extend(f);
                interims.extend(i);
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
                "{label}: {n} stream(s): final after endpoint p50 {f50:.3} s p95 {f95:.3} s ({} finals); first words after onset p50 {i50:.3} s p95 {i95:.3} s; batch size mean {:.2}; {} model calls of {:.3} s mean, stream windows queued+run {:.3} s mean",
                finals.len(),
                mean("aldea_stt_batch_size"),
                aldea_stt::metrics::count_of(&text, "aldea_stt_batch_seconds").unwrap_or(0),
                mean("aldea_stt_batch_seconds"),
                mean("aldea_stt_stream_window_seconds"),
            );
            if f95 <= 1.5 {
                best = n;
            } else {
                break;
            }
        }
        println!(
            "{label}: {best} simultaneous real-time stream(s) with p95 final latency <= 1.5 s (tried up to {max_n})"
        );
    }
}
