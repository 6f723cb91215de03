#!/usr/bin/env bash
# Builds aldea, pulls the default model and runs the whole platform in one process (`aldea all`):
# the Speech API on http://127.0.0.1:8000, SQLite under $ALDEA_HOME. On the first run it creates an
# organization and an API key and prints the key. Usage: scripts/run.sh [aldea all options...]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
aldea_ensure_system_packages
aldea_build_release
"$ALDEA_BIN" models pull tiny.en >/dev/null
"$ALDEA_BIN" models pull silero-vad >/dev/null
if [ -z "$("$ALDEA_BIN" keys list)" ]; then
  key="$("$ALDEA_BIN" keys create --org default --name first | tail -n 1)"
  aldea_log "your API key (shown once): $key"
  aldea_log "try: curl -H \"Authorization: Token $key\" --data-binary @talk.wav http://127.0.0.1:8000/v1/listen"
fi
exec "$ALDEA_BIN" all "$@"
