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

/// The JWT secret `aldea all` shares between its platform (which issues browser tokens) and its
/// gateway (which checks them) when none is given: generated once (two random UUIDs, 244 random
/// bits, as hex) into `$ALDEA_HOME/jwt-secret`, readable by the owner only, and read back on later
/// starts. The file appears whole (written aside, then linked into place), so a process starting
/// at the same moment reads all of it or makes none.
pub(crate) fn home_jwt_secret(home: &std::path::Path) -> anyhow::Result<secrecy::SecretString> {
    use anyhow::Context;
    use std::io::Write;
    let path = home.join("jwt-secret");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let secret = text.trim().to_owned();
        anyhow::ensure!(secret.len() >= 32, "{} holds fewer than 32 characters", path.display());
        return Ok(secret.into());
    }
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let aside = home.join(format!("jwt-secret.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&aside).with_context(|| format!("creating {}", aside.display()))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", aside.display()))?;
    let linked = std::fs::hard_link(&aside, &path);
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok(secret.into()),
        // Another process linked its own first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => home_jwt_secret(home),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_generated_jwt_secret_is_kept_private_and_reused() {
        use secrecy::ExposeSecret;
        let home = tempfile::tempdir().unwrap();
        let first = super::home_jwt_secret(home.path()).unwrap();
        assert!(first.expose_secret().len() >= 64);
        assert_eq!(super::home_jwt_secret(home.path()).unwrap().expose_secret(), first.expose_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(home.path().join("jwt-secret")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
