#!/usr/bin/env bash
# Builds aldea, pulls the default model and transcribes a sample. (Becomes `aldea all` once the
# services land.) Usage: scripts/run.sh [audio file...]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
aldea_ensure_system_packages
aldea_build_release
"$ALDEA_BIN" models pull tiny.en
"$ALDEA_BIN" models pull silero-vad
if [ $# -eq 0 ]; then
  sample="$ALDEA_REPO/../shared/eval/real-dev/ps_librivox_0870.wav"
  [ -f "$sample" ] || { aldea_log "no sample at $sample: pass an audio file"; exit 1; }
  set -- "$sample"
fi
exec "$ALDEA_BIN" transcribe --format text "$@"
