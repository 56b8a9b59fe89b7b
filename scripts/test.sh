#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build pyalloc (Release in build/release, Debug in build/debug) and run its CTest suite in each.
# Then (not with --quick) the sanitizer builds (build/tsan, build/ubsan) and the fuzz target (build/fuzz).
# Each build tree is a preset of CMakePresets.json (cmake --preset release, ...).
# Usage: bash scripts/test.sh [--quick]
#   --quick   Release build only, for iteration
# Environment: PYALLOC_TEST_TIMEOUT (seconds per test, default 300), PYALLOC_JOBS (build jobs, default nproc),
#   PYALLOC_FUZZ_SECONDS (fuzzing time per alignment mode, default 30).
# Runs from anywhere; needs no stdin. As root it installs missing Debian packages; otherwise it lists them.
set -euo pipefail

# Debian packages the build and the tests need. Append here (one list, space separated).
PYALLOC_APT_PACKAGES="build-essential cmake pkg-config libcmocka-dev python3 sqlite3 git gzip tar coreutils mawk diffutils clang gnuplot-nox groff-base man-db util-linux"
# the preload matrix (tests/preload) and the fuzz target (libFuzzer is not among clang's dependencies)
PYALLOC_APT_PACKAGES+=" perl lua5.4 redis-server redis-tools libpython3.11-testsuite libclang-rt-14-dev"
# issue 12: php with its default configuration (RTLD_DEEPBIND extensions), C++ programs (clang, cmake),
# and more of the matrix (node, ruby, make, jq); g++ builds tests/cxx
PYALLOC_APT_PACKAGES+=" php-cli nodejs ruby jq make g++"
# stats --sites (tests/sites, tests/unit/test_py311.c): Debian's python3.11, its headers (internal ones too), addr2line
PYALLOC_APT_PACKAGES+=" python3.11 python3.11-dev binutils"

usage() { sed -n '3,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "test.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root_dir=$(pwd)

# ---- (a) dependencies ------------------------------------------------------------------------------
ensure_packages() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "test.sh: not a Debian system; make sure these are installed: $PYALLOC_APT_PACKAGES" >&2
    return 0
  fi
  local missing=() pkg status
  for pkg in $PYALLOC_APT_PACKAGES; do
    status=$(dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null || true)
    [[ $status == *"install ok installed"* ]] || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: missing packages: ${missing[*]}" >&2
    echo "test.sh: install them with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "==> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
}
ensure_packages

jobs=${PYALLOC_JOBS:-$(nproc 2>/dev/null || echo 2)}
timeout=${PYALLOC_TEST_TIMEOUT:-300}

echo "==> pyalloc tests in $root_dir ($(cmake --version | head -n1), $(cc --version | head -n1))"

# ---- (b, c) configure, build and test each configuration ------------------------------------------
summary=()
failed=0

# run_step NAME COMMAND...: runs the command, records "ok"/"FAILED" with its duration.
run_step() {
  local name=$1; shift
  local start=$SECONDS rc=0
  echo
  echo "==> $name: $*"
  "$@" </dev/null || rc=$?
  local took=$((SECONDS - start))
  if [[ $rc -eq 0 ]]; then
    summary+=("$(printf '  %-8s %-22s %4ss' ok "$name" "$took")")
  else
    summary+=("$(printf '  %-8s %-22s %4ss  (exit %s)' FAILED "$name" "$took" "$rc")")
    failed=1
  fi
  return "$rc"
}

ctest_args=(--output-on-failure -j2 --timeout "$timeout")
# Once tests/ has a CMakeLists.txt, a configuration that registers no test is an error.
[[ -f tests/CMakeLists.txt ]] && ctest_args+=(--no-tests=error)

# ctest_in DIR ARGS...: ctest in a build directory (ctest --test-dir needs CMake 3.20).
ctest_in() { (cd "$1" && shift && ctest "$@"); }

# run_config NAME PRESET: configure and build the preset's tree, then run ctest in it.
run_config() {
  local type=$1 preset=$2
  run_step "$type configure" cmake --preset "$preset" || return 0
  run_step "$type build" cmake --build "build/$preset" -j "$jobs" || return 0
  run_step "$type test" ctest_in "build/$preset" "${ctest_args[@]}" || return 0
}

run_config Release release
if [[ $quick -eq 0 ]]; then
  # Debug runs everything but the preload matrix (Release runs it; CI time is bounded)
  ctest_args_release=("${ctest_args[@]}")
  ctest_args+=(-LE preload)
  run_config Debug debug
  ctest_args=("${ctest_args_release[@]}")
fi

# ---- (c3) fuzz: libFuzzer target tests/fuzz/fuzz_ops (clang, ASan+UBSan), PYALLOC_FUZZ_SECONDS per
# alignment mode (default 30) from the committed seed corpus; scripts/fuzz.sh runs it longer ----------
run_fuzz() {
  local dir=build/fuzz
  run_step "fuzz configure" cmake --preset fuzz -DPYALLOC_FUZZ_SECONDS="${PYALLOC_FUZZ_SECONDS:-30}" || return 0
  run_step "fuzz build" cmake --build "$dir" -j "$jobs" --target fuzz_ops || return 0
  run_step "fuzz run" ctest_in "$dir" "${ctest_args[@]}" -L fuzz || return 0
}

if [[ $quick -eq 0 ]]; then
  # (c2) sanitizers: pyalloc_core and the api/stress/unit tests through pa_*, the sanitizer's own
  # malloc in place; TSan reports make a test exit 66, UBSan aborts (-fno-sanitize-recover)
  run_config thread tsan
  run_config undefined ubsan
  run_fuzz
fi

# ---- (d) summary -----------------------------------------------------------------------------------
echo
echo "==> summary$([[ $quick -eq 1 ]] && echo ' (--quick: Release only)')"
printf '%s\n' "${summary[@]}"
if [[ $failed -ne 0 ]]; then
  echo "==> FAILED"
  exit 1
fi
echo "==> all passed"
