#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, run and test rtcio. Idempotent and quick
# when everything is already there. Needs root (or sudo) only when a package is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential pkg-config libssl-dev
  libwebkit2gtk-4.1-dev libdbus-1-dev libasound2-dev libclang-dev clang nasm libopus-dev
  libpipewire-0.3-dev libxcb1-dev libxcb-randr0-dev libxcb-shm0-dev libegl-dev libgbm-dev libwayland-dev
  xvfb x11-utils dbus-daemon pipewire-bin imagemagick chromium redis-server iproute2 procps
  webkit2gtk-driver coturn stress-ng
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node and npm usually come with the machine image; Debian's packages otherwise.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node packages (socket.io reference server and client suite; the browser peer and its
# Playwright driver; the desktop UI tests' Playwright driver; the Tauri CLI that builds the .deb,
# scripts/package-deb.sh), pinned by their lock files.
# Chromium itself comes from Debian above.
for dir in tests/node tests/browser tests/ui tests/package; do
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "setup: npm ci in $dir" >&2
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >&2
  fi
done

# WebDriver for the desktop app's end-to-end test (src-tauri/tests/e2e.rs): tauri-driver in front
# of WebKitGTK's WebKitWebDriver (Debian package webkit2gtk-driver, above).
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v tauri-driver >/dev/null; then
  echo "setup: cargo install tauri-driver" >&2
  cargo install tauri-driver --version "^2" --locked >&2
fi

# libFuzzer driver for the fuzz targets (scripts/fuzz.sh, fuzz/README.md), pinned.
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "setup: cargo install cargo-fuzz@$CARGO_FUZZ_VERSION" >&2
  cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION" >&2
fi
