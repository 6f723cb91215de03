//! Repository automation: `cargo run -p xtask -- tidy` checks the rules that keep the workspace's shape
//! (dependency directions between aldea crates, crate headers with invariants, and no path that leaves
//! the repository in tests, benches, examples, scripts or docs).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::Context;

mod paths;

/// The one table of allowed internal dependencies (normal and build; dev-dependencies are free
/// except that `aldea-testkit` may only be one).
const ALLOWED: &[(&str, &[&str])] = &[
    ("aldea-testkit", &[]),
    ("aldea-proto", &[]),
    ("aldea-http", &[]),
    ("aldea-audio", &[]),
    ("aldea-eval", &[]),
    ("aldea-models", &[]),
    ("aldea-engine", &["aldea-audio"]),
    ("aldea-engine-ct2", &["aldea-engine"]),
    ("aldea-store", &["aldea-proto"]),
    ("aldea-store-sql", &["aldea-store"]),
    ("aldea-store-redis", &["aldea-store"]),
    ("aldea-store-http", &["aldea-store"]),
    // aldea-eval only as a dev-dependency: tests score transcripts.
    ("aldea-stt", &["aldea-proto", "aldea-http", "aldea-audio", "aldea-engine", "aldea-eval"]),
    // The gateway reaches stt only over the network.
    ("aldea-gateway", &["aldea-proto", "aldea-http", "aldea-store"]),
    ("aldea-platform", &["aldea-proto", "aldea-http", "aldea-store"]),
    // The dashboard reaches the platform only over its HTTP API (the platform is a dev-dependency
    // of its tests).
    ("aldea-web", &["aldea-proto", "aldea-http"]),
    (
        "aldea",
        &[
            "aldea-proto",
            "aldea-audio",
            "aldea-engine",
            "aldea-engine-ct2",
            "aldea-models",
            "aldea-eval",
            "aldea-stt",
            "aldea-gateway",
            "aldea-platform",
            "aldea-web",
            "aldea-store",
            "aldea-store-sql",
            "aldea-store-redis",
            "aldea-store-http",
        ],
    ),
];

/// External crates that only one aldea crate may name.
const OWNERS: &[(&str, &str)] = &[
    ("ct2rs", "aldea-engine-ct2"),
    ("tract-onnx", "aldea-engine"),
    ("sqlx", "aldea-store-sql"),
    ("redis", "aldea-store-redis"),
    ("clap", "aldea"),
    ("nvml-wrapper", "aldea"),
    ("maud", "aldea-web"),
];

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "tidy" => tidy(),
        _ => Err(anyhow::anyhow!("usage: cargo run -p xtask -- tidy")),
    };
    match result {
        Ok(problems) if problems.is_empty() => {
            println!("tidy: ok");
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            for p in &problems {
                eprintln!("tidy: {p}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tidy() -> anyhow::Result<Vec<String>> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut problems = Vec::new();
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    for package in &packages {
        let name = package["name"].as_str().unwrap_or_default();
        if name == "xtask" {
            continue;
        }
        let Some(allowed_deps) = allowed.get(name) else {
            problems.push(format!("{name} is not in xtask's dependency table"));
            continue;
        };
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            let kind = dep["kind"].as_str();
            if dep_name.starts_with("aldea") {
                if dep_name == "aldea-testkit" && kind != Some("dev") {
                    problems.push(format!("{name} depends on aldea-testkit outside [dev-dependencies]"));
                }
                if kind != Some("dev") && !allowed_deps.contains(&dep_name) {
                    problems.push(format!("{name} may not depend on {dep_name} (see ARCHITECTURE.md layers)"));
                }
            }
            if kind != Some("dev") {
                for (external, owner) in OWNERS {
                    if dep_name == *external && name != *owner {
                        problems.push(format!("{name} names {external}, which only {owner} may use"));
                    }
                }
            }
        }
        let manifest = package["manifest_path"].as_str().unwrap_or_default();
        let dir = Path::new(manifest).parent().unwrap_or(Path::new("."));
        let lib = dir.join("src/lib.rs");
        if lib.exists() {
            let text = std::fs::read_to_string(&lib)?;
            if !text.starts_with("//!") {
                problems.push(format!("{} does not open with a //! header", lib.display()));
            }
            if !text.lines().take_while(|l| l.starts_with("//!")).any(|l| l.contains("Invariant:")) {
                problems.push(format!("{}'s header states no `Invariant:` line", lib.display()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    problems.extend(paths::outside_paths(&root.canonicalize().context("the repository root")?));
    for name in allowed.keys() {
        if !packages.iter().any(|p| p["name"] == *name) {
            problems.push(format!("xtask's table names {name}, which is not in the workspace"));
        }
    }
    Ok(problems)
}
