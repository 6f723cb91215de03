#!/usr/bin/env bash
# Speed benchmark against faster-whisper (see tools/bench/compare.py). Defaults: long_3min.wav, tiny.en,
# 2 threads, beam 1, median of 3. Extra arguments go to compare.py (e.g. --beam 5 --runs 5).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
aldea_ensure_system_packages
aldea_ensure_venv
aldea_build_release
model_dir="$("$ALDEA_BIN" models pull tiny.en | tail -n 1)"
"$ALDEA_BIN" models pull silero-vad >/dev/null
aldea_prepare_fixtures
file="${BENCH_FILE:-$ALDEA_TEST_SYNTH/long_3min.wav}"
reference="$(awk -F '\t' -v f="$(basename "$file")" 'FNR > 1 && $1 == f { print $2 }' \
  "$ALDEA_REPO/fixtures/synth/refs_long.tsv" "$ALDEA_REPO/fixtures/synth/refs.tsv" "$ALDEA_REPO/fixtures/real-dev/refs.tsv")"
exec "$ALDEA_VENV/bin/python" "$ALDEA_REPO/tools/bench/compare.py" --aldea "$ALDEA_BIN" \
  --model-dir "$model_dir" --file "$file" --reference "$reference" --threads 2 --beam 1 --runs 3 "$@"
