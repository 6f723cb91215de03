//! `aldea stt [--listen ADDR] [--model M] [--device auto|cpu|cuda[:N]] [--threads N] [--service-token T]`:
//! the recognition service.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::transcribe::{load, ModelArgs};
use crate::{output, Settings};

#[derive(Debug, Args)]
pub(crate) struct SttArgs {
    /// Address to listen on. Off loopback a service token is required.
    #[arg(long, default_value = "0.0.0.0:8800", env = "ALDEA_STT_LISTEN")]
    listen: SocketAddr,
    /// A model name (pulled on first start when missing) or a model directory.
    #[arg(long, default_value = "tiny.en", env = "ALDEA_MODEL")]
    model: String,
    /// Inference threads (default: the number of cores).
    #[arg(long, env = "ALDEA_THREADS")]
    threads: Option<usize>,
    /// Every request must carry `Authorization: Bearer <token>` (probes excepted).
    #[arg(long, env = "ALDEA_SERVICE_TOKEN", hide_env_values = true, value_parser = crate::secret)]
    service_token: Option<secrecy::SecretString>,
    #[command(flatten)]
    device: crate::transcribe::DeviceArgs,
    /// Streams admitted at once (503 beyond). Default: 4 on the CPU, 64 on a GPU.
    #[arg(long, env = "ALDEA_STT_MAX_STREAMS")]
    max_streams: Option<usize>,
    /// Largest batch of windows per model call (1 = no batching). Default: 8 on the CPU, 64 on a GPU.
    #[arg(long, env = "ALDEA_STT_MAX_BATCH")]
    max_batch: Option<usize>,
    /// Seconds that streams may go on after SIGTERM before they are closed with 1012.
    #[arg(long, env = "ALDEA_STT_DRAIN_SECONDS")]
    drain_seconds: Option<u64>,
    /// Seconds after a stream window's audio that the encoder hears (the rest of its 30 s is an
    /// empty window's encoding, computed once): the default, 3, makes stream decodes about 3x
    /// cheaper on CPU. 0: whole windows. Otherwise at least 2. A GPU always encodes whole windows.
    #[arg(long, env = "ALDEA_STT_ENCODER_PADDING")]
    encoder_padding: Option<f64>,
    #[command(flatten)]
    body: crate::BodyArgs,
}

/// What an operator set explicitly, kept when the defaults are sized for a GPU.
#[derive(Debug, Default)]
pub(crate) struct Sizing {
    pub(crate) max_streams: Option<usize>,
    pub(crate) max_batch: Option<usize>,
}

/// Model replicas on a GPU: two model calls overlap, one's CPU work with the other's kernels.
pub(crate) const GPU_REPLICAS: usize = 2;

/// The stt defaults for a GPU: far more streams per replica (64: what one H200 carried at p95 final
/// under 0.5 s on every host it was measured on; 128 held on one host and not on a slower one,
/// docs/decisions/23-stt-on-a-gpu.md), large batches (one model call carries many
/// streams' windows, their previous text trimmed to bucket lengths so that they can), log-mel on
/// every core, two model calls at a time and more uploads at once. Whole 30-s windows: the partial
/// encoder is a CPU optimisation (the engine ignores it on a GPU too).
pub(crate) fn size_for_gpu(config: &mut aldea_stt::Config, set: &Sizing) {
    config.max_streams = set.max_streams.unwrap_or(64);
    config.max_batch = set.max_batch.unwrap_or(64);
    config.max_uploads = config.max_uploads.max(16);
    config.encoder_padding_s = None;
    config.model_workers = GPU_REPLICAS;
    config.bucket_context = true;
    config.parallel_prep = true;
}

/// Async worker threads of the stt service: 2 on the CPU (the cores are the model's), every core
/// with a GPU (each stream's VAD and WebSocket run on them, hundreds of streams).
pub(crate) fn worker_threads(device: aldea_engine::Device) -> usize {
    if device.is_gpu() {
        std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
    } else {
        2
    }
}

pub(crate) fn run(settings: &Settings, args: &SttArgs) -> anyhow::Result<ExitCode> {
    let defaults = aldea_stt::Config::default();
    let model_args = ModelArgs::for_service(&args.model, args.threads, &args.device);
    let mut config = aldea_stt::Config {
        service_token: crate::non_empty(&args.service_token),
        max_streams: args.max_streams.unwrap_or(defaults.max_streams),
        max_batch: args.max_batch.unwrap_or(defaults.max_batch),
        drain_timeout_ms: args.drain_seconds.map_or(defaults.drain_timeout_ms, |s| s * 1000),
        encoder_padding_s: args.encoder_padding.map_or(defaults.encoder_padding_s, |s| (s > 0.0).then_some(s)),
        ..defaults
    };
    args.body.apply_to_stt(&mut config);
    config.validate()?;
    config.check_listen(&args.listen)?;
    let loaded = load(settings, &model_args, GPU_REPLICAS)?;
    config.model_name = loaded.model_name.clone();
    if loaded.device.is_gpu() {
        size_for_gpu(&mut config, &Sizing { max_streams: args.max_streams, max_batch: args.max_batch });
        config.validate()?;
    }
    output::info(&format!(
        "model {} on {} ({} streams, batches of up to {})",
        config.model_name, loaded.device, config.max_streams, config.max_batch
    ));
    let device = loaded.device;
    let deps = aldea_stt::Deps { transcriber: loaded.transcriber, vad: loaded.vad };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads(device))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let address = listener.local_addr()?;
        output::info(&format!("stt listening on http://{address} (model {})", config.model_name));
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        let state = aldea_stt::AppState::new(config, deps);
        if let Some(monitor) = crate::gpu::monitor(device) {
            state.metrics().set_device_monitor(monitor);
        }
        aldea_stt::serve(state, listener, shutdown).await.context("serving")?;
        output::info("stt stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM (Kubernetes) or Ctrl-C starts the graceful shutdown.
pub(crate) async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; draining");
    shutdown.cancel();
}
