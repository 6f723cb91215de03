//! The `aldea` binary: command-line parsing, configuration, and the wiring of every crate. Subcommands
//! `models`, `transcribe`, `eval`, the services `stt` and `gateway`, `all` (every service in one
//! process), `cluster` (every service as processes of its own, as the Helm chart deploys them),
//! `platform` (the platform API), `web` (the dashboard), `migrate`, and `keys`/`credit` on
//! the system of record.
//!
//! Invariant: the only crate that reads environment variables or knows `clap`, and the only place that
//! picks adapters and backends.
//! Invariant: results go to stdout through `output`; progress and logs go to stderr.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod all;
mod bench;
mod cluster;
mod eval;
mod gateway;
mod gpu;
mod keys;
mod models;
mod output;
mod platform;
mod probe;
mod settings;
mod stores;
mod stt;
mod transcribe;
mod usage_worker;
mod users;
mod web;

pub use settings::Settings;

/// `aldea --version`: the release and the engine's build (the GPU build says so).
const VERSION: &str = if aldea_engine_ct2::CUDA_BUILD {
    concat!(env!("CARGO_PKG_VERSION"), " (engine: CTranslate2 with CUDA 13 and cuDNN 9; --device auto|cpu|cuda[:N])")
} else {
    concat!(env!("CARGO_PKG_VERSION"), " (engine: CTranslate2 on the CPU)")
};

#[derive(Debug, Parser)]
#[command(name = "aldea", version = VERSION, about = "Self-hosted speech-to-text")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the models under $ALDEA_MODELS.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// Transcribe audio files or directories (walked recursively).
    Transcribe(transcribe::TranscribeArgs),
    /// Transcribe `<dir>/refs.tsv`'s files and print word error rates and the real-time factor.
    Eval(eval::EvalArgs),
    /// Run the recognition service (stt-api): uploads and streams on /v1/listen.
    Stt(stt::SttArgs),
    /// Measure streaming: N real-time clients against an in-process stt service (latency, batching).
    BenchStreams(bench::BenchStreamsArgs),
    /// Run the gateway: the public Speech API in front of the stt replicas.
    Gateway(gateway::GatewayArgs),
    /// Run the platform API (backend host): accounts, organizations, API keys, usage, credit.
    Platform(platform::PlatformArgs),
    /// Exit 0 when a service on this machine answers its liveness probe (a container HEALTHCHECK).
    Probe(probe::ProbeArgs),
    /// Run the web dashboard (platform host): sign-up, API keys, usage, members, billing, a playground.
    Web(web::WebArgs),
    /// Run the usage worker: moves usage events from the Redis queue into the database, once each.
    UsageWorker(usage_worker::UsageWorkerArgs),
    /// Run everything in one process: dashboard, gateway, stt and platform, SQLite under $ALDEA_HOME.
    All(all::AllArgs),
    /// The Helm chart's topology as processes on this machine (2 gateways, 2 stt, 2 platforms, the
    /// dashboard, the usage worker, a 3-node Redis Cluster, PostgreSQL) behind one host-routing port.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Manage API keys (in $ALDEA_HOME's database, or --database).
    Keys {
        #[command(flatten)]
        database: stores::DatabaseArgs,
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Bring the database's schema up to date and exit (what a deployment runs before it rolls
    /// out; every service also migrates on start, under PostgreSQL's advisory lock).
    Migrate {
        #[command(flatten)]
        database: stores::DatabaseArgs,
    },
    /// Platform admins and password resets (in $ALDEA_HOME's database, or --database).
    Users {
        #[command(flatten)]
        database: stores::DatabaseArgs,
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// Manage organizations' credit (in $ALDEA_HOME's database, or --database).
    Credit {
        #[command(flatten)]
        database: stores::DatabaseArgs,
        #[command(subcommand)]
        command: keys::CreditCommand,
    },
}

/// Runs the command line; the process exit code says whether everything succeeded.
pub fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let settings = Settings::from_env();
    let result = match cli.command {
        Command::Models { command } => models::run(&settings, command),
        Command::Transcribe(args) => transcribe::run(&settings, &args),
        Command::Eval(args) => eval::run(&settings, &args),
        Command::Stt(args) => stt::run(&settings, &args),
        Command::BenchStreams(args) => bench::run(&settings, &args),
        Command::Gateway(args) => gateway::run(&settings, &args),
        Command::All(args) => all::run(&settings, &args),
        Command::Cluster { command } => cluster::run(&settings, command),
        Command::Platform(args) => platform::run(&settings, &args),
        Command::UsageWorker(args) => usage_worker::run(&settings, &args),
        Command::Web(args) => web::run(&args),
        Command::Probe(args) => probe::run(&args),
        Command::Keys { database, command } => keys::run_keys(&settings, &database, &command),
        Command::Users { database, command } => users::run(&settings, &database, &command),
        Command::Credit { database, command } => keys::run_credit(&settings, &database, &command),
        Command::Migrate { database } => keys::run_migrate(&settings, &database),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            output::error(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALDEA_LOG")
        // symphonia reports recoverable oddities (skipped junk before a frame) as warnings; they are
        // not the user's concern unless asked for.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,symphonia_core=error,symphonia=error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// How both services read upload bodies.
#[derive(Debug, clap::Args)]
pub(crate) struct BodyArgs {
    /// Seconds an upload's body may stall (no byte arriving) before it is answered 408.
    #[arg(long, env = "ALDEA_BODY_IDLE_SECONDS", default_value_t = 30.0)]
    pub(crate) body_idle_seconds: f64,
    /// Upload bodies up to this many bytes are held in memory; larger ones go to an unnamed
    /// temporary file while they are sent on (gateway) or wait and are decoded (stt).
    #[arg(long, env = "ALDEA_SPOOL_MEMORY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub(crate) spool_memory_bytes: usize,
    /// Directory of those temporary files (default: the system's temporary directory; in a
    /// container with a read-only root, a writable volume).
    #[arg(long, env = "ALDEA_SPOOL_DIR")]
    pub(crate) spool_dir: Option<std::path::PathBuf>,
}

impl BodyArgs {
    /// The idle timeout, clamped to 0.1 s..1 h.
    pub(crate) fn idle(&self) -> std::time::Duration {
        let seconds = if self.body_idle_seconds.is_finite() { self.body_idle_seconds.clamp(0.1, 3600.0) } else { 30.0 };
        std::time::Duration::from_secs_f64(seconds)
    }

    /// The settings in stt's configuration.
    pub(crate) fn apply_to_stt(&self, config: &mut aldea_stt::Config) {
        config.spool_memory_bytes = self.spool_memory_bytes;
        config.spool_dir = self.spool_dir.clone();
        config.body_idle_timeout_ms = self.idle().as_millis() as u64;
    }
}

/// A secret flag or variable (tokens, signing keys): kept as a type whose `Debug` is redacted.
fn secret(value: &str) -> Result<secrecy::SecretString, std::convert::Infallible> {
    Ok(value.into())
}

/// A secret that was given and is not empty (an empty variable means unset).
fn non_empty(secret: &Option<secrecy::SecretString>) -> Option<secrecy::SecretString> {
    use secrecy::ExposeSecret;
    secret.clone().filter(|s| !s.expose_secret().is_empty())
}
