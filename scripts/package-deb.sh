#!/usr/bin/env bash
# Builds the desktop app's Debian package with the Tauri CLI (the prebuilt `@tauri-apps/cli` npm
# package pinned in tests/package/, so no `cargo install tauri-cli`) and prints the .deb's path.
#
#   ./scripts/package-deb.sh             dev profile (`tauri build --debug`): what CI and
#                                        src-tauri/tests/install.rs build, quick on a warm target dir
#   ./scripts/package-deb.sh --release   release profile: the package to hand to users
#
# Honours CARGO_TARGET_DIR: the package lands in <target dir>/{debug,release}/bundle/deb/.
# Everything the build prints goes to stderr; stdout is only the package's path.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
flags=(--debug)
case "${1:-}" in
  "") ;;
  --release) profile=release flags=() ;;
  *) echo "usage: $0 [--release]" >&2; exit 2 ;;
esac

./scripts/setup.sh >&2

# Where cargo puts this workspace's builds (CARGO_TARGET_DIR, .cargo/config or ./target).
target_dir="$(cargo metadata --format-version 1 --no-deps --offline |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
bundle_dir="$target_dir/$profile/bundle/deb"
# A stale package must not be mistaken for this build's.
rm -f "$bundle_dir"/*.deb

(cd src-tauri && ../tests/package/node_modules/.bin/tauri build "${flags[@]}" --bundles deb --ci) >&2

shopt -s nullglob
debs=("$bundle_dir"/*.deb)
if ((${#debs[@]} != 1)); then
  echo "package-deb: expected one .deb in $bundle_dir, found ${#debs[@]}" >&2
  exit 1
fi
echo "${debs[0]}"
