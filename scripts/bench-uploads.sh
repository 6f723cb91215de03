#!/usr/bin/env bash
# Bursts of uploads against `aldea all`: 8 recordings of 10-30 s (cut from the synthesized 3-minute
# file) sent one after another, then the 8 at once, then 32 at once (each file 4 times). Prints, per
# run, the statuses, the wall time, the throughput (audio seconds per wall second) and the p50/p95
# latency of the uploads. Usage: scripts/bench-uploads.sh [extra `aldea all` flags...]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
aldea_ensure_system_packages
aldea_build_release
aldea_prepare_test_models
home="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$home"' EXIT

# Eight files of 10, 13, ... 30 s, cut at whole samples from the long synthesized file.
python3 - "$ALDEA_TEST_SYNTH/long_3min.wav" "$home" <<'EOF'
import sys, wave
source, out = sys.argv[1], sys.argv[2]
with wave.open(source) as w:
    rate, frames = w.getframerate(), w.readframes(w.getnframes())
start = 0
for i, seconds in enumerate([10, 13, 16, 19, 22, 25, 28, 30]):
    piece = frames[start * 2 : (start + seconds * rate) * 2]
    start += seconds * rate
    with wave.open(f"{out}/upload_{i}.wav", "wb") as o:
        o.setnchannels(1); o.setsampwidth(2); o.setframerate(rate); o.writeframes(piece)
EOF

key="$(ALDEA_HOME="$home" "$ALDEA_BIN" keys create --org bench --rpm 100000 | tail -n 1)"
ALDEA_HOME="$home" ALDEA_MODELS="$ALDEA_TEST_MODELS" "$ALDEA_BIN" all --gateway-listen 127.0.0.1:0 --stt-listen 127.0.0.1:0 --platform-listen 127.0.0.1:0 --web-listen 127.0.0.1:0 \
  --org-max-uploads 1000 --key-rpm 100000 "$@" 2> "$home/all.err" &
until grep -q "Speech API:" "$home/all.err" 2>/dev/null; do sleep 0.2; done
addr="$(sed -n 's/.*Speech API: *http:\/\/\([^/]*\)\/.*/\1/p' "$home/all.err")"
until curl -fs "http://$addr/ready" >/dev/null; do sleep 0.2; done

upload() {  # file -> "status seconds"
  curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -H "authorization: Token $key" \
    -H 'content-type: audio/wav' --data-binary "@$1" "http://$addr/v1/listen"
}
export -f upload
export key addr

run() {  # name parallelism files...
  local name="$1" parallel="$2"; shift 2
  local audio started ended
  audio="$(python3 -c 'import sys, wave
print(sum(wave.open(f).getnframes() / 16000 for f in sys.argv[1:]))' "$@")"
  started="$(date +%s.%N)"
  printf '%s\n' "$@" | xargs -P "$parallel" -I{} bash -c 'upload {}' > "$home/$name.out"
  ended="$(date +%s.%N)"
  python3 - "$name" "$started" "$ended" "$audio" "$home/$name.out" <<'EOF'
import sys
name, started, ended, audio, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rows = [line.split() for line in open(path) if line.strip()]
statuses = {}
for status, _ in rows:
    statuses[status] = statuses.get(status, 0) + 1
ok = sorted(float(t) for status, t in rows if status == "200")
pick = lambda q: ok[min(len(ok) - 1, int(round(q * (len(ok) - 1))))] if ok else float("nan")
wall = ended - started
print(f"{name:<14} uploads {len(rows):>3}  statuses {statuses}  wall {wall:6.1f} s  "
      f"throughput {audio / wall:5.1f} audio s/s  latency p50 {pick(0.5):5.1f} s  p95 {pick(0.95):5.1f} s")
EOF
}

files=("$home"/upload_*.wav)
upload "${files[0]}" >/dev/null  # warm-up
run sequential 1 "${files[@]}"
run burst-8 8 "${files[@]}"
run burst-32 32 "${files[@]}" "${files[@]}" "${files[@]}" "${files[@]}"
