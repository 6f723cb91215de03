#!/usr/bin/env bash
# Streaming latency and concurrency benchmark of the stt service (crates/aldea-stt/examples/stream_bench.rs):
# N real-time clients on the real-dev clips joined with silences, batching on and off.
# Arguments: [SECONDS of audio per client, default 40] [MAX_N clients, default 4].
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
aldea_ensure_system_packages
aldea_build_release
aldea_prepare_test_models
# Built with the workspace's feature set (a per-package build would recompile the engine).
cargo build -q --release --locked --workspace --examples
"$CARGO_TARGET_DIR/release/examples/stream_bench" "${1:-40}" "${2:-4}"
