#!/usr/bin/env bash
# Accuracy per input format (tools/bench/formats.py): real-dev as WAV, MP3 64k, Opus 24k, AAC 64k,
# 8 kHz mu-law and a-law, and whispered espeak-ng sentences, aldea beside faster-whisper on the same
# files, tiny.en, beam 5, 2 threads. Extra arguments go to formats.py (e.g. --formats mulaw_8k,whispered;
# --stream adds the same files streamed to `aldea stt` in real time; --engines aldea-stream with --stream for that alone).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
aldea_ensure_system_packages
aldea_ensure_venv
aldea_build_release
model_dir="$("$ALDEA_BIN" models pull tiny.en | tail -n 1)"
"$ALDEA_BIN" models pull silero-vad >/dev/null
# The copies are made once (delete the folder after changing how they are made).
work="$HOME/.cache/aldea/formats/v1"
mkdir -p "$work"
exec "$ALDEA_VENV/bin/python" "$ALDEA_REPO/tools/bench/formats.py" --aldea "$ALDEA_BIN" --model-dir "$model_dir" \
  --real-dev "$ALDEA_REPO/fixtures/real-dev" --synth-refs "$ALDEA_REPO/fixtures/synth/refs.tsv" --work "$work" "$@"
