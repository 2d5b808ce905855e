#!/usr/bin/env bash
# Fuzzes every parser that peers, servers, files or users feed (fuzz/README.md).
#
#   scripts/fuzz.sh smoke            build all targets, run each for RTCIO_FUZZ_SMOKE_SECONDS
#                                    (default 15) from its seed corpus; fails on any crash (CI)
#   scripts/fuzz.sh long [SECONDS] [RUNS]
#                                    run each target in turn until RUNS executions (default
#                                    10 000 000) or SECONDS (default 3600), growing a corpus kept in
#                                    RTCIO_FUZZ_WORK; prints a table; fails on any crash
#   scripts/fuzz.sh build            only build
#
# RTCIO_FUZZ_TARGETS="a b" picks targets, RTCIO_FUZZ_SANITIZER (default address; `none` runs
# 2-5x faster), RTCIO_FUZZ_MAX_LEN caps input size, RTCIO_FUZZ_WORK is the long run's corpus.
#
# cargo-fuzz comes from scripts/setup.sh. No nightly toolchain: RUSTC_BOOTSTRAP=1 lets stable
# rustc take the sanitizer and coverage flags cargo-fuzz passes. Targets run one at a time, one
# process each, so a 2-core machine keeps a core for everything else.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
export RUSTC_BOOTSTRAP=1

mode="${1:-smoke}"
target_dir="${RTCIO_FUZZ_TARGET_DIR:-/var/cache/rtcio-ci/fuzz-target}"
sanitizer="${RTCIO_FUZZ_SANITIZER:-address}"
bin="$target_dir/x86_64-unknown-linux-gnu/release"

# The lock file is committed: refuse to build with anything it does not pin.
cargo metadata --locked --format-version 1 >/dev/null
build_start=$(date +%s)
cargo fuzz build -s "$sanitizer" --debug-assertions --target-dir "$target_dir" >&2
echo "fuzz: built in $(($(date +%s) - build_start)) s" >&2
[ "$mode" = build ] && exit 0

# RTCIO_FUZZ_TARGETS="a b" runs only those targets.
if [ -n "${RTCIO_FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$RTCIO_FUZZ_TARGETS"
else
  mapfile -t targets < <(cargo fuzz list)
fi
case "$mode" in
  smoke)
    seconds="${RTCIO_FUZZ_SMOKE_SECONDS:-15}"
    runs=-1
    # Smoke runs start from the seeds every time and throw their findings away.
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    ;;
  long)
    seconds="${2:-3600}"
    runs="${3:-10000000}"
    work="${RTCIO_FUZZ_WORK:-/var/cache/rtcio-ci/fuzz-corpus}"
    ;;
  *)
    echo "usage: $0 smoke | long [SECONDS] [RUNS] | build" >&2
    exit 2
    ;;
esac

# Crashing inputs are kept (fuzz/artifacts is ignored by git) whatever the mode.
artifacts="${RTCIO_FUZZ_ARTIFACTS:-$PWD/artifacts}/$mode-$(date -u +%Y%m%dT%H%M%S)"
mkdir -p "$artifacts"
failed=()
rows=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "$artifacts/$t"
  log="$work/$t.log"
  args=(-max_total_time="$seconds" -runs="$runs" -timeout=10 -rss_limit_mb=2048
    -print_final_stats=1 -artifact_prefix="$artifacts/$t/")
  [ -f "dict/$t.dict" ] && args+=(-dict="dict/$t.dict")
  # RTCIO_FUZZ_MAX_LEN caps input size (libFuzzer's default is the largest seed: 12 kB SDPs run
  # at ~1 000 exec/s under coverage instrumentation, too slow for a 10 M long run).
  [ -n "${RTCIO_FUZZ_MAX_LEN:-}" ] && args+=(-max_len="$RTCIO_FUZZ_MAX_LEN")
  echo "fuzz: $t (${seconds} s max)" >&2
  status=0
  # New inputs go to the first corpus directory (the work copy), never into git's seeds.
  nice -n 10 "$bin/$t" "${args[@]}" "$work/$t" "corpus/$t" >"$log" 2>&1 || status=$?
  stat_of() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  execs="$(stat_of number_of_executed_units)"
  rate="$(stat_of average_exec_per_sec)"
  crashes="$(find "$artifacts/$t" -type f | wc -l)"
  files="$(find "$work/$t" "corpus/$t" -type f | wc -l)"
  if [ "$status" != 0 ]; then
    failed+=("$t")
    [ "$crashes" = 0 ] && crashes="exit $status"
    echo "fuzz: $t FAILED (status $status); log $log, inputs in $artifacts/$t:" >&2
    grep -E -A2 "panicked|ERROR: |SUMMARY" "$log" | head -12 >&2 || true
    cp "$log" "$artifacts/$t.log"
  fi
  rows+=("$(printf '| %-16s | %12s | %8s | %7s | %11s |' "$t" "${execs:-?}" "${rate:-?}" "$crashes" "$files")")
done

printf '| %-16s | %12s | %8s | %7s | %11s |\n' target executions exec/s crashes corpus
printf '|%s|%s|%s|%s|%s|\n' ------------------ -------------- ---------- --------- -------------
printf '%s\n' "${rows[@]}"
find "$artifacts" -type d -empty -delete 2>/dev/null || true
if ((${#failed[@]})); then
  echo "fuzz: crashes in ${failed[*]} (reproduce: $bin/<target> <input>)" >&2
  exit 1
fi
