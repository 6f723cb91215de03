#!/usr/bin/env bash
# The gateway's failover under load: N real-time streams (default 1) through one gateway over two
# `aldea stt --threads 1` replicas, one SIGKILLed after 15 s; prints each stream's WER against an
# unbroken run. Pick N as 80 % of one replica's capacity (scripts/bench-stream.sh 40 1,2,4 --threads 1).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
aldea_ensure_system_packages
aldea_build_release
aldea_prepare_test_models
ALDEA_FAILOVER_STREAMS="${1:-1}" cargo test -q --release --locked --workspace --test failover -- --ignored --nocapture failover_under_load
