#!/usr/bin/env bash
# Streaming latency and concurrency benchmark of the stt service (crates/aldea-stt/examples/stream_bench.rs):
# N real-time clients on the real-dev clips joined with silences, batching on and off.
# Arguments: [SECONDS of audio per client, default 40] [MAX_N clients, default 4].
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
aldea_ensure_system_packages
aldea_build_release
export ALDEA_TEST_HOME="${ALDEA_TEST_HOME:-$HOME/.cache/aldea/test-home}"
ALDEA_HOME="$ALDEA_TEST_HOME" "$ALDEA_BIN" models pull tiny.en >/dev/null
ALDEA_HOME="$ALDEA_TEST_HOME" "$ALDEA_BIN" models pull silero-vad >/dev/null
export ALDEA_TEST_MODELS="$ALDEA_TEST_HOME/models"
export ALDEA_SHARED="${ALDEA_SHARED:-$ALDEA_REPO/../shared}"
# Built with the workspace's feature set (a per-package build would recompile the engine).
cargo build -q --release --locked --workspace --examples
"$CARGO_TARGET_DIR/release/examples/stream_bench" "${1:-40}" "${2:-4}"
