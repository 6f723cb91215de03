//! Where things live and how models are fetched, read once from the environment.

use std::path::PathBuf;
use std::time::Duration;

use aldea_models::{ModelStore, PullOptions};

/// Settings shared by every subcommand.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `$ALDEA_HOME`, default `~/.local/share/aldea`.
    pub home: PathBuf,
    /// `$ALDEA_MODELS`, default `$ALDEA_HOME/models`.
    pub models: PathBuf,
    /// `$ALDEA_HUB_URL`, default the public hub.
    pub hub_url: String,
    /// `$ALDEA_PIP`: the pip command used by the package fallback, default `python3 -m pip`.
    pub pip: Vec<String>,
}

impl Settings {
    pub fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = var("ALDEA_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let user_home = var("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            user_home.join(".local/share/aldea")
        });
        let models = var("ALDEA_MODELS").map(PathBuf::from).unwrap_or_else(|| home.join("models"));
        let hub_url = var("ALDEA_HUB_URL").unwrap_or_else(|| aldea_models::DEFAULT_HUB_URL.to_owned());
        let pip = var("ALDEA_PIP")
            .map(|p| p.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_else(|| PullOptions::default().pip);
        Settings { home, models, hub_url, pip }
    }

    pub fn model_store(&self) -> ModelStore {
        ModelStore::new(
            &self.models,
            PullOptions {
                hub_url: self.hub_url.clone(),
                connect_timeout: Duration::from_secs(5),
                pip: self.pip.clone(),
            },
        )
    }
}
