#!/bin/sh
# Runs selftest.mjs (or its bench mode) inside a fresh network namespace that has only `lo`, with
# our Rust signaling server started in the same namespace, so every packet stays on loopback.
#   tests/browser/netns-selftest.sh [test|bench]     (root, or a user allowed to `unshare -n`)
# RTCIO_SERVER_BIN overrides the server binary (default: target/debug/rtcio-server, built if missing).
set -eu
cd "$(dirname "$0")/../.."
MODE=${1:-test}
BIN=${RTCIO_SERVER_BIN:-target/debug/rtcio-server}
if [ ! -x "$BIN" ]; then cargo build -p rtcio-server; fi
export BIN MODE
exec unshare -n sh -c '
  set -eu
  ip link set lo up
  LOG=$(mktemp)
  "$BIN" --port 0 >"$LOG" 2>&1 &
  SRV=$!
  trap "kill $SRV 2>/dev/null; rm -f $LOG" EXIT
  i=0
  until URL=$(grep -o "http://127.0.0.1:[0-9]*" "$LOG" | head -n 1) && [ -n "$URL" ]; do
    i=$((i + 1)); [ $i -le 100 ] || { echo "rtcio-server did not start:" >&2; cat "$LOG" >&2; exit 1; }
    sleep 0.1
  done
  node tests/browser/selftest.mjs "$URL" "$MODE"
'
