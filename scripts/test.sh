#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what is missing, then formatting, clippy,
# the tests (real model, real audio, real servers), and the workspace rules.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ALDEA_REPO"
aldea_ensure_system_packages
aldea_ensure_venv
aldea_ensure_node_tools
# Where the dashboard's browser test writes its screenshots (it prints the folder).
export ALDEA_TEST_SHOTS="${ALDEA_TEST_SHOTS:-$HOME/.cache/aldea/web-shots}"

# Servers the tests may use; started when they are not up.
export ALDEA_TEST_POSTGRES_URL="${ALDEA_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
export ALDEA_TEST_REDIS_URL="${ALDEA_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
if command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  aldea_log "starting redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null || true
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  aldea_log "starting postgresql"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi

export ALDEA_TEST_PYTHON="$ALDEA_VENV/bin/python"

aldea_log "cargo fmt --check"
cargo fmt --all -- --check
aldea_log "clippy"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
aldea_build_release
aldea_prepare_test_models
aldea_log "tests"
test_log="$(mktemp)"
trap 'rm -f "$test_log"' EXIT
cargo test --release --locked --workspace --no-fail-fast 2>&1 | tee "$test_log"
aldea_log "the Helm chart, workflows and Dockerfiles"
bash "$ALDEA_REPO/scripts/check-deploy.sh"
aldea_log "the container image"
bash "$ALDEA_REPO/scripts/check-image.sh"
aldea_log "xtask tidy"
cargo run -q --release --locked -p xtask -- tidy
# Fuzz targets on a fresh corpus (the seeds): a fixed number of inputs from a fixed seed, at most 30 s
# each. Long runs: scripts/fuzz.sh 600.
fuzz_corpus="$(mktemp -d)"
ALDEA_FUZZ_RUNS="${ALDEA_FUZZ_RUNS:-20000}" ALDEA_FUZZ_CORPUS="$fuzz_corpus" bash "$ALDEA_REPO/scripts/fuzz.sh" 30
rm -rf "$fuzz_corpus"
# One closing line with the totals of every test binary (cargo prints one line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$test_log"
