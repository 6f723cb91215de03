//! The `aldea` binary: command-line parsing, configuration, and the wiring of every crate. Subcommands
//! `models`, `transcribe`, `eval`, the services `stt` and `gateway`, `all` (every service in one
//! process), and `keys`/`credit` on the embedded database; `platform` and `web` join as they land.
//!
//! Invariant: the only crate that reads environment variables or knows `clap`, and the only place that
//! picks adapters and backends.
//! Invariant: results go to stdout through `output`; progress and logs go to stderr.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod all;
mod eval;
mod gateway;
mod keys;
mod models;
mod output;
mod settings;
mod stores;
mod stt;
mod transcribe;

pub use settings::Settings;

#[derive(Debug, Parser)]
#[command(name = "aldea", version, about = "Self-hosted speech-to-text")]
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
    /// Run the gateway: the public Speech API in front of the stt replicas.
    Gateway(gateway::GatewayArgs),
    /// Run everything in one process: gateway and stt, SQLite under $ALDEA_HOME.
    All(all::AllArgs),
    /// Manage API keys in $ALDEA_HOME's database.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Manage organizations' credit in $ALDEA_HOME's database.
    Credit {
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
        Command::Gateway(args) => gateway::run(&settings, &args),
        Command::All(args) => all::run(&settings, &args),
        Command::Keys { command } => keys::run_keys(&settings, &command),
        Command::Credit { command } => keys::run_credit(&settings, &command),
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

/// A secret flag or variable (tokens, signing keys): kept as a type whose `Debug` is redacted.
fn secret(value: &str) -> Result<secrecy::SecretString, std::convert::Infallible> {
    Ok(value.into())
}

/// A secret that was given and is not empty (an empty variable means unset).
fn non_empty(secret: &Option<secrecy::SecretString>) -> Option<secrecy::SecretString> {
    use secrecy::ExposeSecret;
    secret.clone().filter(|s| !s.expose_secret().is_empty())
}
