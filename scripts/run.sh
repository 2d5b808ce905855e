#!/usr/bin/env bash
# The run command: installs what is missing, then opens the desktop app. Its default server choice
# ("host on this computer") starts the embedded signaling server, so no infrastructure is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo run -p rtcio-desktop -- "$@"
