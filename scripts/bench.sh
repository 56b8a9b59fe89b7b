#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Benchmarks pyalloc against glibc malloc (and mimalloc, jemalloc, tcmalloc where installed).
#
#   scripts/bench.sh                 the full suite (several minutes); results in bench/results/<date-time>/
#   scripts/bench.sh --quick         a small subset at small scale: checksums only, under a minute
#   scripts/bench.sh --callgrind     instructions per malloc+free pair under valgrind
#   scripts/bench.sh --help          every option of bench/run.py
#
# As root it first installs what it needs from Debian's packages (build-essential cmake python3
# sqlite3 gnuplot-nox valgrind, and the peer allocators libmimalloc2.0 libjemalloc2
# libtcmalloc-minimal4); as another user, --install-peers installs them through sudo.
# --no-install skips installing. Then it builds the library in build/release and runs bench/run.py
# with the remaining arguments.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build/release"
BASE_PACKAGES=(build-essential cmake python3 sqlite3 gnuplot-nox valgrind)
PEER_PACKAGES=(libmimalloc2.0 libjemalloc2 libtcmalloc-minimal4)

install_peers=0
no_install=0
args=()
for a in "$@"; do
  case "$a" in
    --install-peers) install_peers=1 ;;
    --no-install) no_install=1 ;;
    *) args+=("$a") ;;
  esac
done

missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

install_packages() {
  local sudo=() wanted=()
  if [ "$(id -u)" -eq 0 ]; then
    wanted=("${BASE_PACKAGES[@]}" "${PEER_PACKAGES[@]}")
  elif [ "$install_peers" -eq 1 ]; then
    command -v sudo >/dev/null || { echo "bench.sh: --install-peers needs root or sudo" >&2; exit 1; }
    sudo=(sudo)
    wanted=("${BASE_PACKAGES[@]}" "${PEER_PACKAGES[@]}")
  else
    return 0
  fi
  command -v dpkg-query >/dev/null && command -v apt-get >/dev/null || return 0
  mapfile -t todo < <(missing "${wanted[@]}")
  if [ "${#todo[@]}" -gt 0 ]; then
    echo "bench.sh: installing ${todo[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${todo[@]}" >&2
  fi
}

[ "$no_install" -eq 1 ] || install_packages

# The library under test: configure once, then an incremental build of the library alone (cheap
# when nothing changed; the tests' targets are not needed here).
if [ -f "$ROOT/CMakeLists.txt" ]; then
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >&2
  fi
  grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$BUILD/CMakeCache.txt" ||
    echo "bench.sh: warning: $BUILD is not a Release build" >&2
  cmake --build "$BUILD" --target pyalloc -j "$(nproc)" >&2
fi
[ -f "$BUILD/libpyalloc.so" ] || echo "bench.sh: $BUILD/libpyalloc.so not built: pyalloc is left out" >&2

# Debian's python3 runs the runner (stdlib only); any python3 will do if it is absent.
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"
exec "$PY" "$ROOT/bench/run.py" "${args[@]+"${args[@]}"}"
