#!/usr/bin/env bash
# The GPU check of the CUDA build (scripts/build-cuda.sh), made for a lent GPU machine that has an
# NVIDIA driver, CUDA 13's cuBLAS and cuDNN 9 in a Python venv, and no Rust and no network. At most
# 64 MiB travel per run, so the binary, the model and the audio are staged here into .device/
# (ignored) in two parts that two runs carry one after the other (the machine keeps what the first
# left while it stays warm):
#
#   here:   scripts/device-check.sh stage     # prints the sizes; needs the CUDA build and the models
#   run 1:  carry .device/part1   bash scripts/device-check.sh unpack
#   run 2:  carry .device/part2   bash scripts/device-check.sh run   (about 3 minutes)
#
# A dry run here, on the CPU: `scripts/device-check.sh stage && scripts/device-check.sh unpack &&
# DEVICE_CHECK_GPU=cpu DEVICE_CHECK_STREAMS=1 DEVICE_CHECK_SECONDS=8 scripts/device-check.sh run`.
#
# `run` prints: the GPU, batch WER and RTF on real-dev and on long_3min on the CPU and on the GPU of
# the same binary and model, the stt service's readiness and GPU metrics, and `aldea bench-streams`
# with 8, 32, 64, 128 and 256 real-time streams of 20 s of real-dev speech each.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stage="$repo/.device"
# model.bin is cut here: the first part travels with the binary, the rest with the audio.
SPLIT_BYTES=$((36 * 1024 * 1024))

size() { du -sb "$@" | awk '{s += $1} END {printf "%.1f MiB", s / 1048576}'; }

stage_here() {
  source "$repo/scripts/env.sh"
  local bin="${ALDEA_CUDA_TARGET_DIR:-$HOME/.cache/aldea/target-cuda}/release/aldea"
  [ -x "$bin" ] || { echo "no CUDA build at $bin: run scripts/build-cuda.sh" >&2; exit 1; }
  local home="${ALDEA_TEST_HOME:-$HOME/.cache/aldea/test-home}"
  local wheels="${ALDEA_CUDA_HOME:-$HOME/.cache/aldea/cuda-13.0}/site/nvidia"
  export LD_LIBRARY_PATH="$wheels/cudnn/lib:$wheels/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  ALDEA_HOME="$home" "$bin" models pull tiny.en >/dev/null
  ALDEA_HOME="$home" "$bin" models pull silero-vad >/dev/null
  aldea_prepare_fixtures
  rm -rf "$stage"
  mkdir -p "$stage/part1" "$stage/part2/home/models" "$stage/part2/long"
  strip -o "$stage/part1/aldea" "$bin"
  xz -T0 -6 "$stage/part1/aldea"
  # The OpenMP runtime the binary links, for an image that lacks it (used only then).
  mkdir -p "$stage/part1/fallback-lib"
  cp -L "$(ldconfig -p | awk '/libgomp.so.1 .*x86-64/ {print $NF; exit}')" "$stage/part1/fallback-lib/"
  cp -a "$home/models/silero-vad" "$stage/part2/home/models/"
  cp -a "$home/models/tiny.en" "$stage/part2/home/models/"
  local model="$stage/part2/home/models/tiny.en/model.bin"
  sha256sum "$model" | cut -d' ' -f1 > "$stage/part2/model.bin.sha256"
  head -c "$SPLIT_BYTES" "$model" > "$stage/part1/model.bin.head"
  tail -c +$((SPLIT_BYTES + 1)) "$model" > "$stage/part2/model.bin.tail"
  rm "$model"
  # long_3min twice: the second row is timed with the model warm.
  cp "$ALDEA_TEST_SYNTH/long_3min.wav" "$stage/part2/long/"
  { head -n 1 "$ALDEA_TEST_SYNTH/refs_long.tsv"; tail -n +2 "$ALDEA_TEST_SYNTH/refs_long.tsv"; tail -n +2 "$ALDEA_TEST_SYNTH/refs_long.tsv"; } \
    > "$stage/part2/long/refs.tsv"
  echo "part1: $(size "$stage/part1") (aldea.xz $(size "$stage/part1/aldea.xz"), model.bin head)"
  echo "part2: $(size "$stage/part2") (model.bin tail, silero-vad, long_3min); fixtures/real-dev travels with the tree: $(size "$repo/fixtures/real-dev")"
}

unpack_there() {
  echo "needs: part1 $(size "$stage/part1") here, /tmp/aldea-device about 250 MiB unpacked"
  mkdir -p /tmp/aldea-device
  xz -dc "$stage/part1/aldea.xz" > /tmp/aldea-device/aldea
  chmod +x /tmp/aldea-device/aldea
  cp "$stage/part1/model.bin.head" /tmp/aldea-device/
  cp -a "$stage/part1/fallback-lib" /tmp/aldea-device/
  nvidia-smi -L || true
  cuda_libraries
  /tmp/aldea-device/aldea --version
  echo "unpacked: $(size /tmp/aldea-device)"
}

# cuBLAS, cuDNN and the CUDA runtime from the machine's Python packages (nvidia/*/lib).
cuda_libraries() {
  local dirs wheels="${ALDEA_CUDA_HOME:-$HOME/.cache/aldea/cuda-13.0}/site"
  # Here (a dry run): the toolkit wheels that scripts/build-cuda.sh installed.
  [ -d "$wheels/nvidia" ] && export PYTHONPATH="$wheels${PYTHONPATH:+:$PYTHONPATH}"
  python3 -c 'import nvidia' 2>/dev/null || { echo "python3 has no nvidia packages (cuBLAS, cuDNN): set LD_LIBRARY_PATH yourself" >&2; return 0; }
  dirs="$(python3 -c 'import nvidia, os
for p in nvidia.__path__:
    for d in sorted(os.listdir(p)):
        lib = os.path.join(p, d, "lib")
        if os.path.isdir(lib):
            print(lib)' | paste -sd: -)"
  export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if ! ldconfig -p | grep -q 'libgomp.so.1 '; then
    export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/tmp/aldea-device/fallback-lib"
  fi
}

eval_line() {  # DEVICE DIR: the summary of `aldea eval` as one line
  local out
  out="$("$aldea" eval "$2" --device "$1" --json)"
  printf '%s\n' "$out" > "/tmp/aldea-device/eval-$1-$(basename "$2").json"
  python3 -c 'import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
t, warm = rows[-1], rows[-2]
print("{:>5} {:<10} WER {:.2f}% ({}/{}: {} sub, {} del, {} ins); audio {:.1f} s; RTF {:.4f} over all files, last file (model warm) RTF {:.4f}".format(
    sys.argv[1], sys.argv[2], t["wer"], t["errors"], t["reference_words"], t["substitutions"], t["deletions"],
    t["insertions"], t["audio_seconds"], t["rtf"], warm["seconds"] / warm["duration"]))' "$1" "$(basename "$2")" <<<"$out"
}

run_there() {
  [ -x /tmp/aldea-device/aldea ] || { echo "run 'unpack' first (the machine went back?)" >&2; exit 1; }
  echo "needs: part2 $(size "$stage/part2") here; fixtures/real-dev $(size "$repo/fixtures/real-dev")"
  local home=/tmp/aldea-device/home
  rm -rf "$home" && cp -a "$stage/part2/home" "$home"
  cat /tmp/aldea-device/model.bin.head "$stage/part2/model.bin.tail" > "$home/models/tiny.en/model.bin"
  local sha
  sha="$(sha256sum "$home/models/tiny.en/model.bin" | cut -d' ' -f1)"
  [ "$sha" = "$(cat "$stage/part2/model.bin.sha256")" ] || { echo "model.bin: $sha is not the staged model (stage and unpack again)" >&2; exit 1; }
  echo "model.bin: $sha, as staged"
  cuda_libraries
  export ALDEA_HOME="$home"
  aldea=/tmp/aldea-device/aldea
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  echo "== batch: WER and RTF, same binary and model (tiny.en, beam 5); CPU: $(nproc) cores"
  local gpu="${DEVICE_CHECK_GPU:-cuda}"
  for device in cpu "$gpu"; do
    eval_line "$device" "$repo/fixtures/real-dev"
    eval_line "$device" "$stage/part2/long"
  done
  # real-dev + long_3min (its first row): the words the GPU gate pools.
  python3 -c 'import json, sys
def pooled(device):
    rows = [json.loads(l) for l in open("/tmp/aldea-device/eval-%s-real-dev.json" % device) if l.strip()]
    long = [json.loads(l) for l in open("/tmp/aldea-device/eval-%s-long.json" % device) if l.strip()]
    files = [r for r in rows if "file" in r] + [long[0]]
    return sum(r["errors"] for r in files), sum(r["reference_words"] for r in files)
(ce, cw), (ge, gw) = pooled("cpu"), pooled(sys.argv[1])
print("pooled real-dev + long_3min: CPU WER %.2f%% (%d/%d), GPU WER %.2f%% (%d/%d), difference %+.2f points" % (
    100 * ce / cw, ce, cw, 100 * ge / gw, ge, gw, 100 * ge / gw - 100 * ce / cw))' "$gpu"
  echo "== stt service on the GPU: readiness, metrics, one upload"
  "$aldea" stt --device "$gpu" --listen 127.0.0.1:18800 > /tmp/aldea-device/stt.log 2>&1 &
  stt_pid=$!
  local pid=$stt_pid started=$SECONDS
  # Whatever fails below, the service does not outlive the check (a rerun needs its port and GPU memory).
  trap 'kill "$stt_pid" 2>/dev/null || true' EXIT
  until curl -fs -o /dev/null http://127.0.0.1:18800/ready; do
    kill -0 "$pid" 2>/dev/null || { cat /tmp/aldea-device/stt.log; exit 1; }
    [ $((SECONDS - started)) -lt 120 ] || { echo "not ready after 120 s"; break; }
    sleep 0.2
  done
  echo "ready after $((SECONDS - started)) s"
  grep -m1 ' on ' /tmp/aldea-device/stt.log || true
  curl -fs http://127.0.0.1:18800/metrics | grep -E '^aldea_stt_(gpu|ready)' || echo "no GPU metrics"
  curl -fs --data-binary @"$repo/fixtures/real-dev/$(sed -n 2p "$repo/fixtures/real-dev/refs.tsv" | cut -f1)" \
    http://127.0.0.1:18800/v1/listen | python3 -c 'import json,sys; r=json.load(sys.stdin); print("upload:", r["results"]["channels"][0]["alternatives"][0]["transcript"])'
  kill "$pid"; wait "$pid" || true
  echo "== streams: real-time clients of 20 s of real-dev speech each, on the GPU"
  "$aldea" bench-streams --device "$gpu" --audio "$repo/fixtures/real-dev" --seconds "${DEVICE_CHECK_SECONDS:-20}" \
    --streams "${DEVICE_CHECK_STREAMS:-8,32,64,128,256}" --ramp-seconds 5 ${DEVICE_CHECK_BENCH_ARGS:-}
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader || true
}

case "${1:-}" in
  stage) stage_here ;;
  unpack) unpack_there ;;
  run) run_there ;;
  *) echo "usage: scripts/device-check.sh stage|unpack|run" >&2; exit 2 ;;
esac
