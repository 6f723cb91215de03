//! The rule that the repository is self-contained: no test, bench, example, script, tool or doc
//! reads a path outside the checkout (a `../shared` beside it exists only on some machines; a fresh
//! clone anywhere must pass its own tests).

use std::path::{Component, Path, PathBuf};

/// Folders and files scanned, relative to the repository root.
const SCANNED: &[&str] = &["crates", "scripts", "tools", "fixtures", "docs", ".ci", "README.md", "ARCHITECTURE.md"];
/// Never scanned: build output, fuzz corpora, and xtask itself (its rules spell the patterns).
const SKIPPED: &[&str] = &["target", "corpus", "artifacts", "xtask", "node_modules", ".git"];
/// Text files worth reading.
const EXTENSIONS: &[&str] = &["rs", "sh", "py", "md", "toml", "yaml", "yml", "json", "txt", "tsv", "js", "html"];

/// Every place under `root` that names a path outside it: "file:line: why".
pub(crate) fn outside_paths(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in SCANNED {
        collect(&root.join(entry), &mut files);
    }
    files.sort();
    let parent = root.parent().map(|p| p.to_string_lossy().into_owned()).filter(|p| p.len() > 1);
    let mut problems = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let relative = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
        for (idx, line) in text.lines().enumerate() {
            for why in line_problems(&relative, line, parent.as_deref()) {
                problems.push(format!("{}:{}: {why}", relative.display(), idx + 1));
            }
        }
    }
    problems
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if SKIPPED.contains(&name.as_str()) {
        return;
    }
    if path.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else { return };
        for entry in entries.flatten() {
            collect(&entry.path(), files);
        }
    } else if path.extension().is_some_and(|e| EXTENSIONS.contains(&e.to_string_lossy().as_ref())) {
        files.push(path.to_path_buf());
    }
}

/// Why one line of `file` (relative to the root) leaves the repository, if it does.
fn line_problems(file: &Path, line: &str, parent: Option<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    if line.contains("ALDEA_SHARED") {
        problems.push("ALDEA_SHARED names a folder outside the repository".to_owned());
    }
    for folder in ["shared/eval", "shared/spec", "shared/notes"] {
        if line.contains(folder) {
            problems.push(format!("`{folder}` is the team's folder beside the checkout, not part of it"));
        }
    }
    if let Some(parent) = parent {
        let prefix = format!("{parent}/");
        if line.contains(&prefix) {
            problems.push(format!("an absolute path into {parent}, outside the repository"));
        }
    }
    let file_depth = depth(file.parent().unwrap_or(Path::new("")));
    let crate_depth = crate_dir_depth(file);
    let is_script = file.extension().is_some_and(|e| e == "sh");
    let is_rust = file.extension().is_some_and(|e| e == "rs");
    let mut rest = line;
    let mut offset = 0;
    while let Some(found) = rest.find("..") {
        let start = offset + found;
        let ups = count_ups(&line[start..]);
        let before = &line[..start];
        if ups > 0 {
            // Where the climb starts: the repository root, the crate, or the file's own folder.
            let base = if before.ends_with("ALDEA_REPO/")
                || before.ends_with("ALDEA_REPO}/")
                || before.contains("repo_root()")
            {
                0
            } else if is_rust && crate_depth.is_some() {
                // Joined to CARGO_MANIFEST_DIR, or relative to the working folder, which cargo
                // sets to the crate's for its tests, benches and examples.
                crate_depth.unwrap_or(file_depth)
            } else if is_script && !(before.contains("dirname") || before.contains("BASH_SOURCE")) {
                // Scripts run from the repository root (scripts/env.sh changes to it).
                0
            } else {
                file_depth
            };
            if ups > base {
                problems.push(format!("`{}` climbs out of the repository", path_at(&line[start..])));
            }
        }
        let skip = found + 2 + ups.saturating_sub(1) * 3;
        offset += skip;
        rest = &line[offset..];
    }
    problems
}

/// How many `..` components a path starting at `text` begins with (`../../x` is 2; `...` is 0).
fn count_ups(text: &str) -> usize {
    let mut ups = 0;
    let mut rest = text;
    while let Some(after) = rest.strip_prefix("..") {
        let ends = after.is_empty() || after.starts_with('/') || after.starts_with(['"', '\'', ')', ' ', '`']);
        if !ends {
            break;
        }
        ups += 1;
        match after.strip_prefix('/') {
            Some(next) => rest = next,
            None => break,
        }
    }
    ups
}

/// The path token at the start of `text`, for the message.
fn path_at(text: &str) -> &str {
    let end = text.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '`' | ',')).unwrap_or(text.len());
    &text[..end]
}

fn depth(dir: &Path) -> usize {
    dir.components().filter(|c| matches!(c, Component::Normal(_))).count()
}

/// The depth of the crate folder holding `file` (`crates/NAME` is 2), if it is in one.
fn crate_dir_depth(file: &Path) -> Option<usize> {
    let mut parts = file.components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(first)), Some(Component::Normal(_))) if first == "crates" => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flagged(file: &str, line: &str) -> bool {
        !line_problems(Path::new(file), line, Some("/work")).is_empty()
    }

    #[test]
    fn a_test_reading_the_folder_beside_the_checkout_is_flagged() {
        let test = "crates/aldea-stt/tests/stt.rs";
        assert!(flagged(test, r#"    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")"#));
        assert!(flagged(test, r#"    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../data/eval");"#));
        assert!(flagged(test, r#"    std::env::var("ALDEA_SHARED").unwrap()"#));
        assert!(flagged(test, r#"    repo_root().join("../corpus")"#));
        assert!(flagged(test, r#"    let clip = "/work/shared/eval/real-dev/a.wav";"#));
        assert!(flagged("scripts/bench.sh", r#"file="$ALDEA_REPO/../shared/eval/synth/long_3min.wav""#));
        assert!(flagged("scripts/bench.sh", r#"cat ../data/refs.tsv"#));
        assert!(flagged("README.md", "aldea eval ../shared/eval/real-dev"));
    }

    #[test]
    fn paths_inside_the_repository_pass() {
        let test = "crates/aldea-stt/tests/stt.rs";
        assert!(!flagged(test, r#"    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/real-dev")"#));
        assert!(!flagged(test, r#"    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/sdk/sdk_check.py")"#));
        assert!(!flagged("scripts/env.sh", r#"ALDEA_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)""#));
        assert!(!flagged("crates/aldea/src/lib.rs", "    for x in 0..n {"));
        assert!(!flagged("crates/aldea/src/lib.rs", "    let range = ..=5; // and so on..."));
        assert!(!flagged("docs/decisions/x.md", "see [the spec](../spec/speech-api.md)"));
        assert!(!flagged("fixtures/README.md", "recordings of real people, 1.7 MB"));
    }

    #[test]
    fn the_scan_reports_file_and_line() {
        let root = std::env::temp_dir().join(format!("xtask-paths-{}", std::process::id()));
        let tests = root.join("repo/crates/aldea-x/tests");
        std::fs::create_dir_all(&tests).unwrap();
        std::fs::write(tests.join("ok.rs"), "fn a() {}\n").unwrap();
        std::fs::write(
            tests.join("bad.rs"),
            "fn a() {}\nfn b() { let _ = std::path::Path::new(\"../../../shared/eval/a.wav\"); }\n",
        )
        .unwrap();
        let problems = outside_paths(&root.join("repo"));
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(|p| p.starts_with("crates/aldea-x/tests/bad.rs:2: ")), "{problems:?}");
    }
}
