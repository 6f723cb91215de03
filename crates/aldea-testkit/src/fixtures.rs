//! The speech fixtures: `fixtures/real-dev` (real recordings, carried in the repository) and the
//! synthesized set that `fixtures/synth/make.sh` makes from the text in the repository into the build
//! cache on first use (`$ALDEA_TEST_SYNTH`, default `~/.cache/aldea/fixtures/synth`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// `fixtures/real-dev`: 20 real recordings, 16 kHz mono WAV, references in `refs.tsv`.
pub fn real_dev_dir() -> PathBuf {
    repo_root().join("fixtures/real-dev")
}

/// One real-dev recording.
pub fn real_dev(file: &str) -> PathBuf {
    real_dev_dir().join(file)
}

/// The real-dev (file, reference) rows, in `refs.tsv` order.
pub fn real_dev_refs() -> Vec<(String, String)> {
    refs(&real_dev_dir().join("refs.tsv"))
}

/// The synthesized set (espeak-ng): `synth_01.wav` … `synth_10.wav` with `refs.tsv`, and
/// `long_3min.wav` with `refs_long.tsv`. Made on first use (a few seconds), again when its inputs
/// in `fixtures/synth` change.
pub fn synth_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("ALDEA_TEST_SYNTH").map(PathBuf::from).unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
            home.join(".cache/aldea/fixtures/synth")
        });
        ensure_synth(&dir);
        dir
    })
    .clone()
}

/// One synthesized file.
pub fn synth(file: &str) -> PathBuf {
    synth_dir().join(file)
}

/// `long_3min.wav`'s reference.
pub fn long_3min_reference() -> String {
    refs(&synth_dir().join("refs_long.tsv"))
        .into_iter()
        .find_map(|(file, text)| (file == "long_3min.wav").then_some(text))
        .expect("long_3min's reference")
}

/// (file, reference) rows of a `refs.tsv` (a header line, then file TAB reference TAB …).
pub fn refs(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split('\t');
            Some((cols.next()?.to_owned(), cols.next()?.to_owned()))
        })
        .collect()
}

/// What made a synth folder: the hash of the script and its inputs, as `make.sh` writes it.
fn synth_inputs_stamp() -> String {
    let source = repo_root().join("fixtures/synth");
    let mut hasher = Sha256::new();
    for name in ["make.sh", "sentences.txt", "long_paragraphs.txt", "SHA256SUMS"] {
        let path = source.join(name);
        hasher.update(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    }
    hex::encode(hasher.finalize())
}

fn ensure_synth(dir: &Path) {
    let stamp = synth_inputs_stamp();
    let current = std::fs::read_to_string(dir.join(".inputs")).unwrap_or_default();
    if current.trim() == stamp {
        return;
    }
    let script = repo_root().join("fixtures/synth/make.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed (it needs espeak-ng and ffmpeg; scripts/test.sh installs them): {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let made = std::fs::read_to_string(dir.join(".inputs")).unwrap_or_default();
    assert_eq!(made.trim(), stamp, "{} made {} from other inputs", script.display(), dir.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_dev_set_is_in_the_repository() {
        let rows = real_dev_refs();
        assert_eq!(rows.len(), 20);
        for (file, reference) in rows {
            assert!(real_dev(&file).is_file(), "{file}");
            assert!(!reference.is_empty(), "{file}");
        }
    }
}
