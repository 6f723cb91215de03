#!/usr/bin/env bash
# Memory of idle WebSocket connections in the gateway: N streams (default 10000) opened by a separate
# load client, kept alive with KeepAlive, through `aldea gateway` to a stand-in replica that accepts
# any number of streams (the gateway's own cost, without stt's). Prints the gateway's RSS.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
aldea_ensure_system_packages
aldea_build_release
cargo build -q --release --locked --workspace --examples
n="${1:-10000}"
# Each stream costs the gateway two descriptors (client and stt sides): raise the limit as far as allowed.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
aldea_log "open-file limit $(ulimit -n) for $n streams"
examples="$CARGO_TARGET_DIR/release/examples"
home="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$home"' EXIT
"$examples/standin_replica" > "$home/standin.out" &
until grep -q listening "$home/standin.out" 2>/dev/null; do sleep 0.1; done
stt="$(sed -n 's/.*listening on //p' "$home/standin.out")"
key="$(ALDEA_HOME="$home" "$ALDEA_BIN" keys create --org idle | tail -n 1)"
ALDEA_HOME="$home" "$ALDEA_BIN" gateway --listen 127.0.0.1:0 --stt "$stt" --org-max-streams 1000000 --key-rpm 1000000 2> "$home/gateway.err" &
gateway_pid=$!
until grep -q "gateway listening" "$home/gateway.err" 2>/dev/null; do sleep 0.1; done
addr="$(sed -n 's/.*gateway listening on http:\/\///p' "$home/gateway.err")"
rss() { awk '/VmRSS/ { printf "%.1f MB", $2 / 1024 }' "/proc/$gateway_pid/status"; }
aldea_log "gateway RSS before: $(rss)"
"$examples/idle_clients" "$n" "$addr" "$key" 20 > "$home/clients.out" &
client_pid=$!
until grep -q "^open:" "$home/clients.out" 2>/dev/null; do sleep 0.2; done
cat "$home/clients.out"
sleep 10
aldea_log "gateway RSS with the connections open for 10 s: $(rss)"
wait "$client_pid"
aldea_log "gateway RSS after they closed: $(rss)"
