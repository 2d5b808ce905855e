#!/usr/bin/env bash
# The test command: installs what is missing, builds, then runs every test in the workspace.
# As root the tests run in a private network namespace that has only `lo`, so every WebRTC,
# socket.io and Redis packet stays on loopback (Chromium and webrtc-rs included).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Build outside the namespace: fetching crates may need the network.
cargo test --workspace --no-run "$@"
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  echo "test: running in a loopback-only network namespace" >&2
  exec unshare -n sh -c 'ip link set lo up && exec cargo test --workspace --offline "$@"' sh "$@"
fi
echo "test: not root: running without a private network namespace" >&2
exec cargo test --workspace "$@"
