#!/usr/bin/env bash
# Runs every fuzz target of aldea-audio for SECONDS each (default 20), seeded from fuzz/seeds; a crash
# stops the script with the failing input under crates/aldea-audio/fuzz/artifacts/<target>/.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# With ALDEA_FUZZ_RUNS=N each target instead runs N inputs from a fixed seed (CI), still stopping after
# SECONDS: the stream target's threads make its pace vary from run to run.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
seconds="${1:-20}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(detect_decode declared containers stream)
command -v cargo-fuzz >/dev/null 2>&1 || { aldea_log "installing cargo-fuzz"; cargo install -q cargo-fuzz --locked; }
cd "$ALDEA_REPO/crates/aldea-audio/fuzz"
# cargo-fuzz passes -Z flags (sanitizer, coverage); the stable toolchain takes them this way.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$HOME/.cache/aldea/fuzz-target"
cargo fuzz build
corpus_root="${ALDEA_FUZZ_CORPUS:-corpus}"
for target in "${targets[@]}"; do
  mkdir -p "$corpus_root/$target"
  cp -n seeds/* "$corpus_root/$target/" 2>/dev/null || true
  if [ -n "${ALDEA_FUZZ_RUNS:-}" ]; then
    budget=(-runs="$ALDEA_FUZZ_RUNS" -seed=1 -max_total_time="$seconds")
    aldea_log "fuzzing $target: $ALDEA_FUZZ_RUNS inputs from seed 1"
  else
    budget=(-max_total_time="$seconds")
    aldea_log "fuzzing $target for ${seconds} s"
  fi
  cargo fuzz run "$target" "$corpus_root/$target" -- "${budget[@]}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|Done [0-9]+ runs|==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)" || true
  if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    aldea_log "fuzz target $target found a failing input: artifacts/$target/"
    exit 1
  fi
done
