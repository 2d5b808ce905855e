#!/usr/bin/env bash
# The test command: installs what is missing, builds, then runs every test in the workspace.
# As root the tests run in a private network namespace that has only `lo`, so every WebRTC,
# socket.io and Redis packet stays on loopback (Chromium and webrtc-rs included).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# One test at a time within each test binary: many tests run Chromium, WebKit, encoders and
# whole meshes, and on a 2-core machine running them side by side starves WebRTC timers (ICE,
# SCTP) into failures that say nothing about the code. RUST_TEST_THREADS=2 (or more) overrides.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-1}"
# Build outside the namespace: fetching crates may need the network.
cargo test --workspace --no-run "$@"
./scripts/fuzz.sh smoke # before the tests: both branches below end in exec
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  echo "test: running in a loopback-only network namespace" >&2
  exec unshare -n sh -c 'ip link set lo up && exec cargo test --workspace --offline "$@"' sh "$@"
fi
echo "test: not root: running without a private network namespace" >&2
exec cargo test --workspace "$@"
