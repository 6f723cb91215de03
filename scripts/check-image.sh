#!/usr/bin/env bash
# The container image, built and run with podman (no Docker engine or registry here): the runtime
# stage of deploy/docker/Dockerfile around the binary the tests built (target `prebuilt`: no
# second compile of CTranslate2), on a Debian base made locally with debootstrap. Checks that it
# runs as UID 10001 with a read-only root, that `aldea all` in it becomes ready and its HEALTHCHECK
# passes, and that it transcribes a real recording. Needs ALDEA_BIN and ALDEA_TEST_MODELS (what
# scripts/test.sh exports). Installs podman, runc and debootstrap when missing. ALDEA_CHECK_IMAGE=NAME
# checks an image built otherwise (scripts/build-image.sh's full build) instead.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ALDEA_REPO"
# The models the tests pulled (scripts/test.sh, or aldea_prepare_test_models in env.sh).
ALDEA_TEST_MODELS="${ALDEA_TEST_MODELS:-$HOME/.cache/aldea/test-home/models}"
[ -d "$ALDEA_TEST_MODELS/tiny.en" ] || { aldea_log "no test models in $ALDEA_TEST_MODELS: run scripts/test.sh first"; exit 1; }
[ -n "${ALDEA_CHECK_IMAGE:-}" ] || : "${ALDEA_BIN:?the aldea binary to put in the image}"
aldea_podman_setup
context="$(mktemp -d)" work="$(mktemp -d)"
name="aldea-image-check-$$"
cleanup() { "${P[@]}" rm -f -v "$name" >/dev/null 2>&1 || true; rm -rf "$context" "$work"; }
trap cleanup EXIT
image="${ALDEA_CHECK_IMAGE:-}"
if [ -z "$image" ]; then
  image=localhost/aldea:check
  cp "$ALDEA_BIN" "$context/aldea"
  aldea_log "building the image (runtime stage around $ALDEA_BIN)"
  "${P[@]}" build --isolation=chroot --pull=never --network=host --format docker --target prebuilt \
    -f deploy/docker/Dockerfile -t "$image" "$context" >/dev/null
fi
user="$("${P[@]}" image inspect --format '{{.Config.User}}' "$image")"
[ "$user" = "10001:10001" ] || { aldea_log "the image runs as '$user', not 10001:10001"; exit 1; }
health="$("${P[@]}" image inspect --format '{{.Config.Healthcheck.Test}}' "$image")"
case "$health" in *"aldea probe"*) ;; *) aldea_log "no HEALTHCHECK in the image: $health"; exit 1 ;; esac

# One-off: transcribe a real recording with the read-only root and the models mounted read-only.
# (podman schedules HEALTHCHECKs through systemd, absent here: the check runs its command itself.)
run=("${P[@]}" run --rm --no-healthcheck --network=host "${U[@]}" --read-only --tmpfs /tmp:rw,mode=1777 -v /data
  -v "$ALDEA_TEST_MODELS:/models:ro" -v "$ALDEA_REPO/fixtures/real-dev:/audio:ro")
text="$("${run[@]}" "$image" transcribe --format text /audio/ps_librivox_0880.wav)"
aldea_log "transcribed in the container: $text"
echo "$text" | grep -qi "not an .* young man" || { aldea_log "unexpected transcript"; exit 1; }

# A server: `aldea all` on free ports, ready, healthy, as UID 10001.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gw="$(port)" st="$(port)" pf="$(port)" web="$(port)"
"${P[@]}" run -d --no-healthcheck --name "$name" --network=host "${U[@]}" --read-only --tmpfs /tmp:rw,mode=1777 -v /data \
  -v "$ALDEA_TEST_MODELS:/models:ro" "$image" \
  all --gateway-listen "127.0.0.1:$gw" --stt-listen "127.0.0.1:$st" --platform-listen "127.0.0.1:$pf" \
  --web-listen "127.0.0.1:$web" --threads 2 >/dev/null
for _ in $(seq 1 240); do
  curl -fsS "http://127.0.0.1:$gw/ready" >/dev/null 2>&1 && break
  [ "$("${P[@]}" inspect --format '{{.State.Running}}' "$name")" = true ] || break
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$gw/ready" >/dev/null || { "${P[@]}" logs "$name" | tail -20; exit 1; }
curl -fsS "http://127.0.0.1:$web/login" | grep -q '>Log in<' || { aldea_log "the dashboard does not answer"; exit 1; }
"${P[@]}" exec "$name" /usr/local/bin/aldea probe "http://127.0.0.1:$gw/live" >/dev/null
uid="$("${P[@]}" top "$name" huser | tail -n +2 | sort -u | tr -d ' ')"
aldea_log "image: ready on :$gw, dashboard on :$web, HEALTHCHECK command passes, process user $uid"
[ "$uid" = "10001" ] || { aldea_log "the process runs as $uid"; exit 1; }
aldea_log "image: ok ($("${P[@]}" image inspect --format '{{.Size}}' "$image") bytes)"
