#!/usr/bin/env bash
# Streaming latency and concurrency benchmark of the stt service (`aldea bench-streams`): N real-time
# clients on the real-dev clips joined with silences (each from another clip), per N.
# Arguments: [SECONDS of audio per client, default 40] [N,N,... clients, default 1,2,4] [more
# `aldea bench-streams` options: --max-batch 1 (batching off), --same-audio, --device, --verbose].
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
aldea_ensure_system_packages
aldea_build_release
aldea_prepare_test_models
ALDEA_HOME="$ALDEA_TEST_HOME" "$ALDEA_BIN" bench-streams --audio "$ALDEA_REPO/fixtures/real-dev" \
  --seconds "${1:-40}" --streams "${2:-1,2,4}" "${@:3}"
