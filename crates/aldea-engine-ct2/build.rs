//! Compiles the small C++ shim that reads a CTranslate2 `StorageView` on the host (ct2rs has no
//! accessor for it); it links against the CTranslate2 library ct2rs builds.
//!
//! The shim must see the headers of exactly the CTranslate2 that ct2rs compiles, so they are taken
//! from the ct2rs package itself (its `CTranslate2/include`), found with `cargo metadata` — no copy of
//! them lives in this repository.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=shim.cc");
    println!("cargo:rerun-if-changed=build.rs");
    let include = ct2rs_include().unwrap_or_else(|e| panic!("locating the CTranslate2 headers of ct2rs: {e}"));
    cc::Build::new().cpp(true).std("c++17").include(&include).file("shim.cc").warnings(false).compile("aldea_ct2_shim");
}

/// `CTranslate2/include` of the ct2rs package this build resolved (the lock file decides which).
fn ct2rs_include() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").map_err(|e| format!("CARGO: {e}"))?;
    let dir = std::env::var("CARGO_MANIFEST_DIR").map_err(|e| format!("CARGO_MANIFEST_DIR: {e}"))?;
    let target = std::env::var("TARGET").map_err(|e| format!("TARGET: {e}"))?;
    // Offline and locked: the build already resolved and downloaded every package it compiles for
    // this target — and only those: without the platform filter, cargo metadata wants the packages
    // of every platform (e.g. Android's), which a fresh machine's build never downloaded.
    let out = Command::new(cargo)
        .args(["metadata", "--frozen", "--format-version", "1", "--filter-platform", &target])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("running cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata output: {e}"))?;
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "ct2rs")
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("no ct2rs package in the dependency graph")?;
    let include = PathBuf::from(manifest).with_file_name("CTranslate2").join("include");
    if !include.join("ctranslate2/storage_view.h").is_file() {
        return Err(format!("{} has no ctranslate2/storage_view.h", include.display()));
    }
    Ok(include)
}
