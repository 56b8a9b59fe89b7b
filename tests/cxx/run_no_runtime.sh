#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs no_runtime (a C program linked with -lpyalloc) and checks that a failed throwing operator new,
# with no C++ runtime to throw std::bad_alloc, ends in pyalloc's one-line message and SIGABRT; and
# that libpyalloc.so itself needs nothing but libc.so.6 (no libstdc++ at run time).
# usage: run_no_runtime.sh NO_RUNTIME_EXE LIBPYALLOC_SO
set -u
EXE=$1 LIB=$2
fail() {
    echo "FAIL cxx_no_runtime: $*" >&2
    exit 1
}
needed=$(readelf -d "$LIB" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
[ "$needed" = "libc.so.6 " ] || fail "libpyalloc.so needs '$needed', expected libc.so.6 alone"
ldd "$LIB" | grep -q 'libstdc++' && fail "ldd libpyalloc.so lists libstdc++"
out=$("$EXE" 2>"$EXE.err")
rc=$?
[ "$out" = "nothrow: NULL" ] || fail "stdout '$out'"
[ "$rc" -eq 134 ] || fail "exit status $rc, expected 134 (SIGABRT); stderr: $(cat "$EXE.err")"
[ "$(wc -l <"$EXE.err")" -eq 1 ] || fail "stderr is not one line: $(cat "$EXE.err")"
grep -q '^pyalloc: operator new: out of memory, and no C++ runtime loaded to throw std::bad_alloc$' "$EXE.err" ||
    fail "stderr: $(cat "$EXE.err")"
ldd "$EXE" | grep -q 'libstdc++' && fail "the C program loads libstdc++"
echo "PASS cxx_no_runtime: NEEDED $needed; $(cat "$EXE.err")"
