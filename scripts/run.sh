#!/usr/bin/env bash
# The run command: installs what is missing, then starts the app. Until the desktop app lands this
# starts the signaling server on http://127.0.0.1:3001 (pass server flags after the command).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo run --release -p rtcio-server -- "$@"
