#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the libFuzzer target fuzz_ops: first every seed of the committed corpus once (a regression
# run), then fuzzing for SECONDS from the seeds plus whatever WORKDIR/corpus holds from earlier runs.
# New inputs are written to WORKDIR/corpus, never to the committed SEEDDIR; a crashing input is saved
# in WORKDIR/artifacts and the run fails. The alignment mode is the caller's PYALLOC_ALIGN.
#
# usage: run_fuzz.sh FUZZ_OPS SEEDDIR WORKDIR SECONDS [libFuzzer options...]
set -u
[ $# -ge 4 ] || { echo "usage: $0 FUZZ_OPS SEEDDIR WORKDIR SECONDS [libFuzzer options...]" >&2; exit 2; }
BIN=$1 SEEDS=$2 WORK=$3 SECONDS_=$4
shift 4

[ -x "$BIN" ] || { echo "run_fuzz.sh: $BIN is not built" >&2; exit 2; }
ls "$SEEDS"/seed-* >/dev/null 2>&1 || { echo "run_fuzz.sh: no seeds in $SEEDS" >&2; exit 2; }
mkdir -p "$WORK/corpus" "$WORK/artifacts" || exit 2

mode=${PYALLOC_ALIGN:-16}
echo "==> fuzz_ops, PYALLOC_ALIGN=$mode: replaying $(ls "$SEEDS"/seed-* | wc -l) seeds"
"$BIN" "$SEEDS"/seed-* >"$WORK/replay.log" 2>&1 || {
    tail -40 "$WORK/replay.log" >&2
    echo "FAIL: a committed seed fails (log: $WORK/replay.log)" >&2
    exit 1
}

echo "==> fuzzing for ${SECONDS_}s (corpus: $WORK/corpus + $SEEDS)"
"$BIN" -max_total_time="$SECONDS_" -max_len=4096 -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$WORK/artifacts/" "$@" "$WORK/corpus" "$SEEDS" >"$WORK/fuzz.log" 2>&1
rc=$?
grep -E '^#[0-9]+ +(INITED|DONE)|^stat::number_of_executed_units|^stat::peak_rss_mb' "$WORK/fuzz.log"
if [ $rc -ne 0 ]; then
    grep -v -E '^#[0-9]+ ' "$WORK/fuzz.log" | tail -60 >&2
    echo "FAIL: fuzz_ops found a failing input (exit $rc); saved in $WORK/artifacts:" >&2
    ls -l "$WORK/artifacts" >&2
    echo "reproduce: PYALLOC_ALIGN=$mode $BIN $WORK/artifacts/<file>" >&2
    exit 1
fi
echo "PASS fuzz_ops (PYALLOC_ALIGN=$mode): $(ls "$WORK/corpus" | wc -l) inputs in the working corpus"
