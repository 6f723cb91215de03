#!/usr/bin/env bash
# Streaming latency and concurrency benchmark of the stt service (crates/aldea-stt/examples/stream_bench.rs):
# N real-time clients on the real-dev clips joined with silences (each from another clip), batching on and off.
# Arguments: [SECONDS of audio per client, default 40] [MAX_N clients, default 4].
# Environment: BENCH_SYNC=1 (every client sends the same audio 370 ms apart), BENCH_STREAMS=N (only N clients),
# BENCH_BATCHING=on|off, BENCH_THREADS, BENCH_INTERIM_HOLD_MS (the service's interim_hold_ms), BENCH_VERBOSE=1.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
aldea_ensure_system_packages
aldea_build_release
aldea_prepare_test_models
# Built with the workspace's feature set (a per-package build would recompile the engine).
cargo build -q --release --locked --workspace --examples
"$CARGO_TARGET_DIR/release/examples/stream_bench" "${1:-40}" "${2:-4}"
