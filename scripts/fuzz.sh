#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fuzz pyalloc for longer than CI does: builds the libFuzzer target tests/fuzz/fuzz_ops with clang
# (ASan + UBSan + pyalloc's internal assertions, in build/fuzz) and runs it SECONDS in each alignment
# mode (default, then PYALLOC_ALIGN=8), from the committed seed corpus tests/fuzz/corpus plus the
# working corpus build/fuzz/tests/fuzz/work-<mode>/corpus, which grows from run to run.
# A failing input is kept in build/fuzz/tests/fuzz/work-<mode>/artifacts and the script fails.
#
# usage: bash scripts/fuzz.sh [SECONDS] [--mode default|align8|both] [--jobs N] [--merge]
#   SECONDS   per mode (default 600)
#   --jobs N  N fuzzing processes per mode in parallel (libFuzzer -fork=N; default 1)
#   --merge   afterwards, minimise the working corpus into tests/fuzz/corpus-new/ for review (the
#             committed seeds are written by tests/fuzz/make_corpus.py and are not changed)
set -euo pipefail

usage() { sed -n '3,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

seconds=600 mode=both jobs=1 merge=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mode) mode=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --merge) merge=1; shift ;;
    -h|--help) usage; exit 0 ;;
    [0-9]*) seconds=$1; shift ;;
    *) echo "fuzz.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$mode" in default|align8|both) ;; *) echo "fuzz.sh: --mode must be default, align8 or both" >&2; exit 2 ;; esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v clang >/dev/null || { echo "fuzz.sh: clang not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
dir=build/fuzz
echo "==> building fuzz_ops in $dir"
CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYALLOC_FUZZ=ON -DPYALLOC_BUILD_BENCH=OFF >/dev/null
cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)" --target fuzz_ops >/dev/null
bin=$dir/tests/fuzz/fuzz_ops

extra=()
[[ $jobs -gt 1 ]] && extra+=(-fork="$jobs" -ignore_crashes=0)
export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
rc=0
for m in default align8; do
  [[ $mode == both || $mode == "$m" ]] || continue
  work=$dir/tests/fuzz/work-$m
  if [[ $m == align8 ]]; then
    PYALLOC_ALIGN=8 sh tests/fuzz/run_fuzz.sh "$bin" tests/fuzz/corpus "$work" "$seconds" "${extra[@]}" || rc=1
  else
    env -u PYALLOC_ALIGN sh tests/fuzz/run_fuzz.sh "$bin" tests/fuzz/corpus "$work" "$seconds" "${extra[@]}" || rc=1
  fi
done

if [[ $merge -eq 1 ]]; then
  rm -rf tests/fuzz/corpus-new && mkdir -p tests/fuzz/corpus-new
  "$bin" -merge=1 -max_len=4096 tests/fuzz/corpus-new tests/fuzz/corpus "$dir"/tests/fuzz/work-*/corpus \
    >"$dir/merge.log" 2>&1 || { tail -20 "$dir/merge.log" >&2; rc=1; }
  echo "==> minimised corpus: $(ls tests/fuzz/corpus-new | wc -l) inputs in tests/fuzz/corpus-new"
fi
[[ $rc -eq 0 ]] && echo "==> fuzzing passed" || echo "==> fuzzing FAILED" >&2
exit "$rc"
