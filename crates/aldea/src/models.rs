//! `aldea models pull|list`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::{output, Settings};

#[derive(Debug, Subcommand)]
pub(crate) enum ModelsCommand {
    /// Download and verify a model; prints its directory as the last line of stdout.
    Pull {
        /// A model name (`tiny.en`, `base`, `silero-vad`).
        name: String,
    },
    /// List the models this build can pull and whether each is installed.
    List,
}

pub(crate) fn run(settings: &Settings, command: ModelsCommand) -> anyhow::Result<ExitCode> {
    let store = settings.model_store();
    match command {
        ModelsCommand::Pull { name } => {
            let (dir, source) = store.pull(&name, &mut |line| output::info(line))?;
            output::info(&format!("{name}: ready ({source:?})"));
            output::result_line(&dir.display().to_string());
        }
        ModelsCommand::List => {
            for name in aldea_models::known_models() {
                let state = if store.is_installed(&name) { "installed" } else { "not pulled" };
                output::result_line(&format!("{name}\t{state}\t{}", store.dir_of(&name).display()));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
