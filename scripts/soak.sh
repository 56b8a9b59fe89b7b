#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Soak test (not in CI): builds pyalloc and tests/soak/soak.c (Release, in build/soak) and runs the soak
# program under LD_PRELOAD=libpyalloc.so for MINUTES: rounds with a random number of threads, blocks
# handed between threads, freed by threads that did not allocate them or by the main thread after
# their thread exited, forks, every payload checked; one progress line per round with the RSS.
# Fails (exit 1) on any corrupted block, crash or pyalloc abort, and on RSS growth without bound
# (after the warm-up rounds, the RSS with only the long-lived blocks left must stay under
# baseline + GROWTH% + SLACK MiB). The stress binaries are then run under the preload once each.
#
# usage: bash scripts/soak.sh [MINUTES] [--threads MAX] [--seed N] [--align8] [--growth PCT] [--slack-mb MB]
#   MINUTES     total run time (default 10); may be fractional (0.5)
#   --threads   most threads in a round (default 16; each round picks 1..MAX at random)
#   --seed      the random seed (default: from the clock; printed, so a failure can be replayed)
#   --align8    run in pyalloc's classic mode (PYALLOC_ALIGN=8)
set -euo pipefail

usage() { sed -n '3,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

minutes=10 threads=16 seed=$(( $(date +%s) % 1000000 )) align="" growth=25 slack=48
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --align8) align=8; shift ;;
    --growth) growth=$2; shift 2 ;;
    --slack-mb) slack=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    [0-9]*) minutes=$1; shift ;;
    *) echo "soak.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=build/soak
echo "==> building pyalloc and pa_soak in $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DPYALLOC_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target pyalloc pa_soak stress_handoff_plain \
  stress_fork_plain >/dev/null
lib=$(readlink -f "$build/libpyalloc.so")

seconds=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
echo "==> soak: $minutes min, 1..$threads threads, seed $seed, PYALLOC_ALIGN=${align:-16}"
rc=0
env ${align:+PYALLOC_ALIGN=$align} LD_PRELOAD="$lib" "$build/tests/pa_soak" --seconds "$seconds" \
  --max-threads "$threads" --seed "$seed" --growth "$growth" --slack-mb "$slack" || rc=$?
if [[ $rc -ne 0 ]]; then
  echo "==> soak FAILED (exit $rc); replay with: bash scripts/soak.sh $minutes --threads $threads --seed $seed${align:+ --align8}" >&2
  exit 1
fi

echo "==> the stress programs under the preload"
for t in stress_handoff_plain stress_fork_plain; do
  env ${align:+PYALLOC_ALIGN=$align} LD_PRELOAD="$lib" "$build/tests/$t" >/dev/null ||
    { echo "==> $t FAILED under LD_PRELOAD" >&2; exit 1; }
  echo "  $t ok"
done
echo "==> soak passed"
