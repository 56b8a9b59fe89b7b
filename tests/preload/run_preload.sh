#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs an unmodified Debian program under LD_PRELOAD=libpyalloc.so and compares its output with a run
# on glibc's malloc. ld.so ignores a preload it cannot open and the program then runs on glibc, so
# every case also proves that pyalloc served the blocks: ld.so's own binding log (LD_DEBUG=bindings)
# of the preloaded run must show the program (and libc) binding malloc and free to libpyalloc, and a
# probe program that knows nothing of pyalloc must see pyalloc's size classes.
#
# Long-running programs (redis-server, CPython's regression tests) are also checked from outside:
# pool_rss.py reads /proc/PID/smaps and must find pyalloc's pool resident in the process. The cases
# added with issue 12 (php, clang, node, ruby, cmake, make, jq) also read pyalloc's own report
# (PYALLOC_STATS=json, PYALLOC_STATS_FILE per process): it must count small blocks handed out.
#
# usage: run_preload.sh CASE LIB PROBE WORKDIR SRCDIR [EXE]
#   CASE    probe | python | sort | sqlite3 | gzip | git | gcc | perl | lua | redis | cpython_tests |
#           php | clang | node | ruby | cmake | make | jq | stress_handoff | stress_fork
#   LIB     libpyalloc.so (absolute path)     PROBE  the pa_probe program (not linked to pyalloc)
#   WORKDIR scratch directory                 SRCDIR tests/preload (workload.*, helper scripts)
#   EXE     for stress_*: the stress program built without pyalloc
# Environment for cpython_tests: PYALLOC_CPYTHON_TESTS (the tests to run; default: the CI subset),
# PYALLOC_CPYTHON_JOBS (-j, default 2), PYALLOC_CPYTHON_ARGS (more regrtest options),
# PYALLOC_CPYTHON_ALIGN (8: the pyalloc run in classic mode).
# PYALLOC_MESH=1 in the environment runs every case with compaction on (the preload_*_mesh tests);
# the python case then also checks that meshing ran in a cache that loses most of its entries.
set -u

[ $# -ge 5 ] || { echo "usage: $0 CASE LIB PROBE WORKDIR SRCDIR [EXE]" >&2; exit 2; }
CASE=$1 LIB=$2 PROBE=$3 WORK=$4 SRC=$5 EXE=${6:-}

fail() {
    echo "FAIL preload_$CASE: $*" >&2
    exit 1
}

# need PROGRAM DEBIAN-PACKAGE
need() {
    command -v "$1" >/dev/null 2>&1 || fail "'$1' not found: install it with 'apt-get install $2'"
}

case "$LIB" in
/*) ;;
*) fail "LIB must be an absolute path, got '$LIB'" ;;
esac
[ -f "$LIB" ] || fail "preload library '$LIB' does not exist (ld.so would ignore it and run on glibc)"
[ -x "$PROBE" ] || fail "probe program '$PROBE' missing"
LIB_REAL=$(readlink -f "$LIB")

DIR=$WORK/$CASE
rm -rf "$DIR"
mkdir -p "$DIR" || fail "cannot create $DIR"
unset LD_PRELOAD PYALLOC_ALIGN LD_DEBUG LD_DEBUG_OUTPUT
export LC_ALL=C # the same collation for both runs

# pre CMD...: CMD under the preload, ld.so's binding log written to $DIR/ld.<pid>
pre() {
    LD_PRELOAD=$LIB LD_DEBUG=bindings LD_DEBUG_OUTPUT=$DIR/ld "$@"
}

# bound_to_pyalloc FILE-PATTERN SYMBOL: the binding log has FILE-PATTERN's SYMBOL bound to LIB
bound_to_pyalloc() {
    cat "$DIR"/ld.* 2>/dev/null |
        grep -F "to $LIB [0]: normal symbol \`$2'" |
        grep -E "binding file ([^ ]*/)?$1 \[" >/dev/null
}

# prove_bindings PROGRAM-FILE-PATTERN: the preloaded run really used pyalloc, in its own process
prove_bindings() {
    ls "$DIR"/ld.* >/dev/null 2>&1 || fail "no LD_DEBUG binding log in $DIR: did ld.so run the program?"
    for sym in malloc free; do
        bound_to_pyalloc "$1" "$sym" ||
            fail "ld.so did not bind $1's '$sym' to $LIB (see $DIR/ld.*): pyalloc did not serve it"
        # libc's own calls (strdup, stdio, ...) bind to pyalloc directly, or to a canonical PLT entry
        # of a non-PIE program (python3), which the check above showed is bound to pyalloc
        cat "$DIR"/ld.* | grep -E "binding file ([^ ]*/)?libc\.so\.6 \[0\] to [^ ]+ \[0\]: normal symbol \`$sym'" |
            while read -r _pid _b _f _file _n _to target _rest; do
                [ "$target" = "$LIB" ] && echo yes && break
                echo "$target" | grep -E "^([^ ]*/)?$1\$" >/dev/null && echo yes && break
            done | grep yes >/dev/null ||
            fail "ld.so did not bind libc's own '$sym' calls to $LIB (see $DIR/ld.*)"
    done
    rm -f "$DIR"/ld.*
}

# pre_stats CMD...: pre, and each process writes pyalloc's JSON report to $DIR/stats.<pid> at exit
pre_stats() {
    PYALLOC_STATS=json PYALLOC_STATS_FILE=$DIR/stats.%p pre "$@"
}

# prove_stats MIN: the reports pre_stats left count at least MIN small blocks handed out in all
prove_stats() {
    ls "$DIR"/stats.* >/dev/null 2>&1 || fail "no PYALLOC_STATS_FILE report in $DIR: pyalloc did not run"
    # A process that ended with _exit() (dash does) leaves the record it wrote at start-up instead
    # of a report ("started": true): it counts for nothing, but one report at least is needed.
    served=$(python3 -c '
import json, sys
docs = [json.load(open(f)) for f in sys.argv[1:]]
reports = [d for d in docs if not d.get("started")]
assert reports, "every process left only its start-up record"
print(sum(d["total"]["allocs"] for d in reports))' "$DIR"/stats.*) ||
        fail "cannot read the reports $DIR/stats.*"
    [ "$served" -ge "$1" ] || fail "pyalloc's reports count $served small blocks, expected at least $1"
    echo "pyalloc's report: $served small blocks handed out in $(ls "$DIR"/stats.* | wc -l) process(es)"
    rm -f "$DIR"/stats.*
}

# same_in_mode8 NAME CMD...: CMD under the preload with PYALLOC_ALIGN=8 prints $DIR/NAME.glibc
same_in_mode8() {
    name=$1
    shift
    PYALLOC_ALIGN=8 LD_PRELOAD=$LIB "$@" >"$DIR/${name}8.pyalloc" || fail "$* failed under pyalloc with PYALLOC_ALIGN=8"
    cp "$DIR/$name.glibc" "$DIR/${name}8.glibc" && compare "${name}8"
}

# prove_probe: the probe sees pyalloc's classes under the preload and glibc's without it, in both
# modes; the preload is visible in a Debian program's own memory map.
prove_probe() {
    out=$("$PROBE" 32 24 | tr '\n' ' ')
    [ "$out" = "40 24 " ] || fail "probe without preload printed '$out', expected glibc's '40 24 '"
    out=$(LD_PRELOAD=$LIB "$PROBE" 32 24 | tr '\n' ' ')
    [ "$out" = "32 32 " ] || fail "probe under LD_PRELOAD printed '$out', expected pyalloc's '32 32 '"
    out=$(LD_PRELOAD=$LIB PYALLOC_ALIGN=8 "$PROBE" 32 24 | tr '\n' ' ')
    [ "$out" = "32 24 " ] ||
        fail "probe under LD_PRELOAD, PYALLOC_ALIGN=8 printed '$out', expected '32 24 '"
    LD_PRELOAD=$LIB cat /proc/self/maps | grep -F "$LIB_REAL" >/dev/null ||
        fail "$LIB_REAL is not mapped in cat's process under LD_PRELOAD"
}

# compare NAME: $DIR/NAME.glibc and $DIR/NAME.pyalloc must be identical
compare() {
    cmp -s "$DIR/$1.glibc" "$DIR/$1.pyalloc" || {
        diff "$DIR/$1.glibc" "$DIR/$1.pyalloc" | head -20 >&2
        fail "output of '$1' differs between glibc and pyalloc (files in $DIR)"
    }
}

# gen_lines N SEED: deterministic text, N lines of "number,word,index"
gen_lines() {
    awk -v n="$1" -v seed="$2" 'BEGIN {
        srand(seed); w = "abcdefghijklmnopqrstuvwxyz0123456789"
        for (i = 0; i < n; i++)
            printf "%08d,%s,%d\n", int(rand() * 100000000), substr(w, int(rand() * 26) + 1, int(rand() * 12) + 1), i
    }'
}

prove_probe

case "$CASE" in
probe)
    echo "probe: malloc_usable_size(malloc(32)) is 32 under LD_PRELOAD=$LIB, 40 without"
    ;;

python)
    PY=/usr/bin/python3
    [ -x "$PY" ] || fail "$PY not found: install it with 'apt-get install python3'"
    export PYTHONMALLOC=malloc # every object through malloc/realloc/free, not pymalloc's arenas
    unset PYTHONUNBUFFERED PYTHONPATH PYTHONHOME PYTHONSTARTUP
    SIZES='import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.malloc_usable_size.argtypes = [ctypes.c_void_p]
libc.malloc_usable_size.restype = ctypes.c_size_t
print(*[libc.malloc_usable_size(libc.malloc(n)) for n in (32, 24)])'
    out=$("$PY" -c "$SIZES") || fail "python3 crashed on glibc"
    [ "$out" = "40 24" ] || fail "python3 on glibc: usable sizes '$out', expected '40 24'"
    out=$(LD_PRELOAD=$LIB "$PY" -c "$SIZES") || fail "python3 crashed under LD_PRELOAD"
    [ "$out" = "32 32" ] || fail "python3 under LD_PRELOAD: usable sizes '$out', expected '32 32'"
    out=$(LD_PRELOAD=$LIB PYALLOC_ALIGN=8 "$PY" -c "$SIZES") || fail "python3 crashed (PYALLOC_ALIGN=8)"
    [ "$out" = "32 24" ] || fail "python3, PYALLOC_ALIGN=8: usable sizes '$out', expected '32 24'"

    "$PY" "$SRC/workload.py" >"$DIR/workload.glibc" || fail "workload.py failed on glibc"
    pre "$PY" "$SRC/workload.py" >"$DIR/workload.pyalloc" || fail "workload.py failed under pyalloc"
    prove_bindings 'python3(\.11)?'
    compare workload
    PYALLOC_ALIGN=8 LD_PRELOAD=$LIB "$PY" "$SRC/workload.py" >"$DIR/workload8.pyalloc" ||
        fail "workload.py failed under pyalloc with PYALLOC_ALIGN=8"
    cp "$DIR/workload.glibc" "$DIR/workload8.glibc"
    compare workload8
    if [ "${PYALLOC_MESH:-0}" = 1 ]; then
        # compaction must really have run: a cache that loses most of its entries, then malloc_trim
        CACHE=$SRC/../../bench/py/cache.py
        "$PY" "$CACHE" evict --scale 0.05 --trim | grep checksum >"$DIR/cache.glibc" ||
            fail "cache.py failed on glibc"
        PYALLOC_STATS=json PYALLOC_STATS_FILE="$DIR/cache.stats" LD_PRELOAD=$LIB "$PY" "$CACHE" evict \
            --scale 0.05 --trim | grep checksum >"$DIR/cache.pyalloc" || fail "cache.py failed under pyalloc"
        compare cache
        grep -E '"mesh": \{"passes": [1-9]' "$DIR/cache.stats" >/dev/null ||
            fail "PYALLOC_MESH=1, yet no meshing pass ran in cache.py (see $DIR/cache.stats)"
    fi
    tail -1 "$DIR/workload.pyalloc"
    ;;

sort)
    need sort coreutils
    need awk mawk
    gen_lines 200000 7 >"$DIR/input" || fail "cannot generate input"
    # in memory; by field with temp files and two threads; unique reverse
    for variant in plain fields unique; do
        case $variant in
        plain) set -- ;;
        fields) set -- -t, -k2,2 -k1,1n -S 1M --parallel=2 -T "$DIR" ;;
        unique) set -- -u -r -t, -k1,1 ;;
        esac
        sort "$@" "$DIR/input" >"$DIR/$variant.glibc" || fail "sort $* failed on glibc"
        pre sort "$@" "$DIR/input" >"$DIR/$variant.pyalloc" || fail "sort $* failed under pyalloc"
        prove_bindings sort
        compare "$variant"
    done
    wc -l <"$DIR/plain.pyalloc"
    ;;

sqlite3)
    need sqlite3 sqlite3
    sqlite3 :memory: <"$SRC/workload.sql" >"$DIR/sql.glibc" || fail "sqlite3 failed on glibc"
    pre sqlite3 :memory: <"$SRC/workload.sql" >"$DIR/sql.pyalloc" || fail "sqlite3 failed under pyalloc"
    prove_bindings 'libsqlite3\.so\.0'
    compare sql
    wc -l <"$DIR/sql.pyalloc"
    ;;

gzip)
    need gzip gzip
    need tar tar
    need awk mawk
    mkdir -p "$DIR/tree"
    for i in 1 2 3 4 5 6 7 8; do
        gen_lines 100000 "$i" >"$DIR/tree/f$i" || fail "cannot generate input"
    done
    (cd "$DIR" && tar --sort=name --mtime=@0 --owner=0 --group=0 -cf - tree | gzip -9 -n) \
        >"$DIR/tgz.glibc" || fail "tar | gzip failed on glibc"
    (cd "$DIR" && pre tar --sort=name --mtime=@0 --owner=0 --group=0 -cf - tree | pre gzip -9 -n) \
        >"$DIR/tgz.pyalloc" || fail "tar | gzip failed under pyalloc"
    prove_bindings gzip
    compare tgz
    mkdir -p "$DIR/out"
    pre gunzip -c "$DIR/tgz.pyalloc" | (cd "$DIR/out" && pre tar -xf -) ||
        fail "gunzip | tar -x failed under pyalloc"
    prove_bindings tar
    for i in 1 2 3 4 5 6 7 8; do
        cmp -s "$DIR/tree/f$i" "$DIR/out/tree/f$i" || fail "round trip changed f$i"
    done
    wc -c <"$DIR/tgz.pyalloc"
    ;;

git)
    need git git
    need awk mawk
    export HOME=$DIR/home GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=pyalloc GIT_AUTHOR_EMAIL=t@pyalloc.invalid \
        GIT_COMMITTER_NAME=pyalloc GIT_COMMITTER_EMAIL=t@pyalloc.invalid
    mkdir -p "$HOME"
    # git_session REPO: the same history built and inspected in REPO; all output on stdout
    git_session() {
        mkdir -p "$1" && cd "$1" || return 1
        git init -q -b main . || return 1
        for c in 1 2 3 4 5; do
            for f in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
                gen_lines $((200 * f)) $((c * 100 + f)) >"file$f.txt"
            done
            mkdir -p "dir$c" && gen_lines 3000 "$c" >"dir$c/data"
            git add -A && GIT_AUTHOR_DATE="2024-01-0${c}T00:00:00Z" GIT_COMMITTER_DATE="2024-01-0${c}T00:00:00Z" \
                git commit -q -m "commit $c" || return 1
        done
        # many small commits on top: an edit, a new file, a rename, a deletion, a branch merged back
        for c in $(seq 1 60); do
            f=$((c % 20 + 1))
            gen_lines 20 $((c + 1000)) >>"file$f.txt"
            [ $((c % 4)) -eq 0 ] && gen_lines 50 "$c" >"new$c.txt"
            [ $((c % 8)) -eq 5 ] && { git mv "new$((c - 1)).txt" "moved$c.txt" || return 1; }
            [ $((c % 8)) -eq 1 ] && [ "$c" -gt 1 ] && { git rm -q "new$((c - 1)).txt" || return 1; }
            when=$(printf '2024-02-01T%02d:%02d:00Z' $((1 + c / 60)) $((c % 60)))
            git add -A && GIT_AUTHOR_DATE=$when GIT_COMMITTER_DATE=$when git commit -q -m "small $c" ||
                return 1
            if [ "$c" -eq 30 ]; then
                git checkout -q -b side HEAD~10 && gen_lines 100 30 >side.txt && git add side.txt &&
                    GIT_AUTHOR_DATE="2024-02-02T00:00:00Z" GIT_COMMITTER_DATE="2024-02-02T00:00:00Z" \
                        git commit -q -m side && git checkout -q main &&
                    GIT_AUTHOR_DATE="2024-02-02T00:00:01Z" GIT_COMMITTER_DATE="2024-02-02T00:00:01Z" \
                        git merge -q --no-edit side || return 1
            fi
        done
        git rev-list --count HEAD &&
            git log --stat --format='%H %s' &&
            git diff --stat HEAD~3 HEAD &&
            git gc -q &&
            git repack -a -d -f -q --depth=50 --window=50 &&
            git fsck --full --no-progress 2>&1 &&
            git rev-list --objects --all | sort &&
            git count-objects -v | grep -E '^(count|in-pack|packs)' &&
            git blame -s file3.txt | tail -5 &&
            git grep -c ',abc' HEAD -- '*.txt' | sort
    }
    (git_session "$DIR/repo.glibc") >"$DIR/git.glibc" 2>&1 || fail "git session failed on glibc"
    # every process of the session (git and its helpers, awk, sort) runs under the preload
    (export LD_PRELOAD="$LIB" LD_DEBUG=bindings LD_DEBUG_OUTPUT="$DIR/ld" && git_session "$DIR/repo.pyalloc") \
        >"$DIR/git.pyalloc" 2>&1 || { tail -20 "$DIR/git.pyalloc" >&2; fail "git session failed under pyalloc"; }
    prove_bindings git
    compare git
    wc -l <"$DIR/git.pyalloc"
    ;;

gcc)
    need gcc gcc
    # the driver and every program it runs (cc1, as, collect2, ld) run under the preload
    cp "$SRC/workload.c" "$DIR/workload.c" || fail "cannot copy workload.c"
    # plus a larger generated unit: 400 functions with switches and loops, compiled at -O2 to assembly
    awk 'BEGIN {
        print "#include <stdint.h>"
        for (i = 0; i < 400; i++) {
            printf "uint64_t f%d(uint64_t x, int k) {\n  uint64_t a[16];\n", i
            printf "  for (int j = 0; j < 16; j++) a[j] = x * %d + j * (k ^ %d);\n", i * 2 + 1, i
            printf "  switch (k & 7) {\n"
            for (c = 0; c < 8; c++) printf "  case %d: x ^= a[%d] >> %d; break;\n", c, (c * 3 + i) % 16, (c + i) % 60 + 1
            printf "  }\n  for (int j = 0; j < 16; j++) x += a[j] * a[15 - j];\n"
            if (i > 0) printf "  return k > 0 ? f%d(x, k - 1) : x;\n}\n", i - 1
            else print "  return x;\n}"
        }
    }' >"$DIR/big.c" || fail "cannot generate big.c"
    # build NAME ENV...: object, program, assembly of big.c and diagnostics, in $DIR/*.NAME*
    build() {
        name=$1
        shift
        (cd "$DIR" && "$@" gcc -O2 -Wall -Wextra -c workload.c -o "w.$name.o" 2>"diag.$name" &&
            "$@" gcc -O2 "w.$name.o" -o "w.$name" &&
            "$@" gcc -O2 -S big.c -o "big.$name.s" 2>>"diag.$name")
    }
    build glibc env || fail "gcc failed on glibc"
    build pyalloc env LD_PRELOAD="$LIB" LD_DEBUG=bindings LD_DEBUG_OUTPUT="$DIR/ld" ||
        fail "gcc failed under pyalloc (see $DIR/diag.pyalloc)"
    prove_bindings cc1
    for f in w.o big.s; do
        cp "$DIR/${f%.*}.glibc.${f#*.}" "$DIR/$f.glibc" && cp "$DIR/${f%.*}.pyalloc.${f#*.}" "$DIR/$f.pyalloc"
        compare "$f"
    done
    compare diag
    "$DIR/w.glibc" >"$DIR/run.glibc" || fail "the program gcc built on glibc failed"
    "$DIR/w.pyalloc" >"$DIR/run.pyalloc" || fail "the program gcc built under pyalloc failed"
    compare run
    LD_PRELOAD=$LIB "$DIR/w.pyalloc" >"$DIR/run2.pyalloc" || fail "the program failed under pyalloc"
    cp "$DIR/run.glibc" "$DIR/run2.glibc" && compare run2
    echo "gcc: identical object ($(wc -c <"$DIR/w.o.pyalloc") bytes) and assembly ($(wc -l <"$DIR/big.s.pyalloc") lines)"
    ;;

perl)
    need perl perl
    # fixed hash seed: perl's hash order is random per process otherwise (the script never prints an
    # unsorted hash, this only makes the two runs' allocation patterns alike)
    export PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0
    perl "$SRC/workload.pl" >"$DIR/pl.glibc" || fail "perl failed on glibc"
    pre perl "$SRC/workload.pl" >"$DIR/pl.pyalloc" || fail "perl failed under pyalloc"
    prove_bindings perl
    compare pl
    PYALLOC_ALIGN=8 LD_PRELOAD=$LIB perl "$SRC/workload.pl" >"$DIR/pl8.pyalloc" ||
        fail "perl failed under pyalloc with PYALLOC_ALIGN=8"
    cp "$DIR/pl.glibc" "$DIR/pl8.glibc" && compare pl8
    wc -l <"$DIR/pl.pyalloc"
    ;;

lua)
    LUA=
    for l in lua5.4 lua5.3 lua; do
        command -v "$l" >/dev/null 2>&1 && LUA=$l && break
    done
    [ -n "$LUA" ] || fail "no lua interpreter: install it with 'apt-get install lua5.4'"
    "$LUA" "$SRC/workload.lua" >"$DIR/lua.glibc" || fail "$LUA failed on glibc"
    pre "$LUA" "$SRC/workload.lua" >"$DIR/lua.pyalloc" || fail "$LUA failed under pyalloc"
    prove_bindings "$(echo "$LUA" | sed 's/\./\\./g')"
    compare lua
    PYALLOC_ALIGN=8 LD_PRELOAD=$LIB "$LUA" "$SRC/workload.lua" >"$DIR/lua8.pyalloc" ||
        fail "$LUA failed under pyalloc with PYALLOC_ALIGN=8"
    cp "$DIR/lua.glibc" "$DIR/lua8.glibc" && compare lua8
    echo "$LUA: $(wc -l <"$DIR/lua.pyalloc") lines"
    ;;

redis)
    need redis-server redis-server
    need redis-cli redis-tools
    need redis-benchmark redis-tools
    need python3 python3
    need timeout coreutils
    SERVER_PID=
    stop_server() {
        [ -n "$SERVER_PID" ] || return 0
        kill "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
        SERVER_PID=
    }
    trap stop_server EXIT
    # redis_run NAME PRELOAD(0|1): a server on a free port of 127.0.0.1, a deterministic session whose
    # output goes to $DIR/redis.NAME, a bounded benchmark, the server shut down
    redis_run() {
        name=$1 preload=$2
        mkdir -p "$DIR/$name"
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
            fail "no free port"
        if [ "$preload" = 1 ]; then
            set -- env LD_PRELOAD="$LIB" LD_DEBUG=bindings LD_DEBUG_OUTPUT="$DIR/ld"
        else
            set -- env
        fi
        # timeout: the server can never outlive the test, even if this script is killed
        "$@" timeout -k 5 300 redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes \
            --save '' --appendonly no --daemonize no --dir "$DIR/$name" --logfile "$DIR/$name/server.log" \
            --enable-debug-command yes --io-threads 2 --lazyfree-lazy-user-del yes --databases 4 &
        SERVER_PID=$!
        i=0
        until redis-cli -p "$port" PING 2>/dev/null | grep -q PONG; do
            i=$((i + 1))
            [ $i -lt 100 ] || { tail -20 "$DIR/$name/server.log" >&2; fail "redis-server ($name) did not start"; }
            sleep 0.1
        done
        {
            # bulk load through the protocol pipe, then queries whose replies do not depend on hash order
            awk -v n=20000 'BEGIN {
                for (i = 0; i < n; i++) {
                    printf "SET key:%d %s\n", i, substr("abcdefghijklmnopqrstuvwxyz0123456789", 1, 1 + i % 36) i
                    printf "RPUSH list:%d item-%d\n", i % 50, i
                    printf "SADD set:%d member-%d\n", i % 30, (i * 7) % 1000
                    printf "ZADD zset:%d %d m-%d\n", i % 20, (i * 13) % 997, i
                    printf "HSET hash:%d f-%d v-%d\n", i % 40, i % 300, i
                    printf "INCRBY counter:%d %d\n", i % 10, i
                    printf "APPEND str:%d x%d,\n", i % 25, i
                    printf "XADD stream:%d %d-1 field %d\n", i % 5, i + 1, i
                    printf "PFADD hll:%d e-%d\n", i % 3, i
                    if (i % 7 == 0 && i >= 100) printf "DEL key:%d\n", i - 100
                    if (i % 11 == 0) printf "LPOP list:%d\n", i % 50
                    if (i % 13 == 0) printf "HDEL hash:%d f-%d\n", i % 40, (i * 3) % 300
                    if (i % 17 == 0) printf "ZREM zset:%d m-%d\n", i % 20, i - 17
                }
            }' | "$@" redis-cli -p "$port" --pipe
            awk -v q="'" 'BEGIN {
                print "DBSIZE"; print "DEBUG DIGEST"
                for (k = 0; k < 50; k += 7) { print "LRANGE list:" k " 0 20"; print "LLEN list:" k }
                for (k = 0; k < 20; k += 3) { print "ZRANGE zset:" k " 0 30 WITHSCORES"; print "ZCARD zset:" k }
                for (k = 0; k < 30; k += 4) { print "SORT set:" k " ALPHA LIMIT 0 25"; print "SCARD set:" k }
                for (k = 0; k < 40; k += 5) { print "HLEN hash:" k; print "HGET hash:" k " f-" k * 7 }
                for (k = 0; k < 10; k++) print "GET counter:" k
                for (k = 0; k < 25; k += 6) print "STRLEN str:" k
                print "GETRANGE str:3 0 60"
                for (k = 0; k < 5; k++) { print "XLEN stream:" k; print "XRANGE stream:" k " - + COUNT 3" }
                for (k = 0; k < 3; k++) print "PFCOUNT hll:" k
                print "SINTERSTORE inter set:1 set:2 set:3"; print "SORT inter ALPHA"
                print "ZUNIONSTORE zu 3 zset:1 zset:2 zset:3 WEIGHTS 1 2 3"; print "ZRANGE zu 0 20 WITHSCORES"
                print "EVAL \"local t = {} for i = 1, 5000 do t[i] = tostring((i * 7919) % 10007) end table.sort(t) local s = 0 for _, v in ipairs(redis.call(" q "ZRANGE" q ", " q "zset:4" q ", 0, -1)) do s = s + #v end return {#t, t[1], t[5000], s, cjson.encode({a = 1})}\" 0"
                print "OBJECT ENCODING list:1"; print "OBJECT ENCODING set:1"; print "OBJECT ENCODING hash:1"
                print "DEBUG DIGEST"; print "DEBUG RELOAD"; print "DEBUG DIGEST"; print "DBSIZE"
            }' | "$@" redis-cli -p "$port"
            # a bounded benchmark in its own database, 16 clients, pipelined: throughput is not compared
            "$@" redis-benchmark -p "$port" --dbnum 1 -n 10000 -r 20000 -c 16 -P 8 -q \
                -t set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,mset \
                >"$DIR/$name/bench" 2>&1 || echo "benchmark failed"
            echo "benchmark: $(tr '\r' '\n' <"$DIR/$name/bench" | grep -c 'requests per second') tests"
            "$@" redis-cli -p "$port" -n 1 FLUSHDB
            "$@" redis-cli -p "$port" DEBUG DIGEST # the session's data, untouched by the benchmark
            "$@" redis-cli -p "$port" INFO | grep -E '^(redis_version|mem_allocator):' | tr -d '\r'
        } >"$DIR/redis.$name" 2>&1
        if [ "$preload" = 1 ]; then
            pid=$(redis-cli -p "$port" INFO server | sed -n 's/^process_id:\([0-9]*\).*/\1/p')
            python3 "$SRC/pool_rss.py" "$LIB" "$pid" >"$DIR/pool" || fail "cannot read redis-server's maps"
        fi
        redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1
        wait "$SERVER_PID"
        rc=$?
        SERVER_PID=
        [ $rc -eq 0 ] || { tail -20 "$DIR/$name/server.log" >&2; fail "redis-server ($name) exited with $rc"; }
    }
    redis_run glibc 0
    redis_run pyalloc 1
    # 14 tests, and the LPUSH that fills the list for LRANGE_100
    grep -q 'benchmark: 15 tests' "$DIR/redis.pyalloc" || { cat "$DIR/pyalloc/bench" >&2; fail "redis-benchmark under pyalloc did not complete"; }
    prove_bindings redis-server
    compare redis
    read -r _pid mapped pool_kb _cmd <"$DIR/pool"
    [ "$mapped" = 1 ] || fail "libpyalloc is not mapped in redis-server"
    [ "$pool_kb" -ge 1024 ] || fail "only ${pool_kb} kB of pyalloc's pool resident in redis-server"
    # Debian's redis-server is linked with jemalloc: under the preload its malloc, calloc, realloc, free and
    # malloc_usable_size bind to pyalloc (the check above); jemalloc's own mallctl and nallocx stay its own
    echo "redis-server (INFO says $(grep mem_allocator "$DIR/redis.pyalloc")): pyalloc's pool ${pool_kb} kB resident at the end"
    tr '\r' '\n' <"$DIR/pyalloc/bench" | grep 'requests per second' | sed 's/^ *//' | head -3
    ;;

cpython_tests)
    PY=/usr/bin/python3
    [ -x "$PY" ] || fail "$PY not found: install it with 'apt-get install python3'"
    "$PY" -c 'import test.libregrtest' 2>/dev/null ||
        fail "CPython's test suite is missing: install it with 'apt-get install libpython3.11-testsuite'"
    need python3 python3
    TESTS=${PYALLOC_CPYTHON_TESTS:-"test_dict test_list test_set test_unicode test_json test_pickle test_re test_gc
        test_weakref test_threading test_thread test_queue test_fork1 test_subprocess test_mmap test_ctypes test_zlib"}
    JOBS=${PYALLOC_CPYTHON_JOBS:-2}
    export PYTHONMALLOC=malloc # every object through malloc, not pymalloc's arenas
    unset PYTHONUNBUFFERED PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONWARNINGS PYTHONDEVMODE
    # regrtest NAME ENV...: the run, in its own directory and HOME; results in $DIR/results.NAME.
    # SIGINT must not be ignored (as it is in a background job of sh, and so in whatever that job
    # starts): the tests of signals and _thread.interrupt_main need it. So the run is in the foreground
    # and python3 restores SIGINT's default before it execs the regrtest itself. The pyalloc run is
    # sampled from outside by pool_rss.py meanwhile.
    regrtest() {
        name=$1
        shift
        mkdir -p "$DIR/$name/home"
        if [ "$name" = pyalloc ]; then
            rm -f "$DIR/pool" "$DIR/pool.stop"
            python3 "$SRC/pool_rss.py" "$LIB" --watch $$ "$DIR/pool" &
            watcher=$!
        fi
        # shellcheck disable=SC2086
        (cd "$DIR/$name" && exec env HOME="$DIR/$name/home" "$@" \
            "$PY" -c "$DEFAULT_SIGINT" -m test -j"$JOBS" --timeout 1200 --junit-xml "$DIR/$name.xml" \
            ${PYALLOC_CPYTHON_ARGS:-} $TESTS) \
            >"$DIR/$name.log" 2>&1
        rc=$?
        if [ "$name" = pyalloc ]; then
            touch "$DIR/pool.stop"
            wait "$watcher"
        fi
        grep -q '^Tests result:\|^== Tests result:' "$DIR/$name.log" ||
            { tail -30 "$DIR/$name.log" >&2; fail "regrtest did not finish on $name (exit $rc)"; }
        { echo "exit $rc"; python3 "$SRC/regrtest_results.py" "$DIR/$name.log" "$DIR/$name.xml"; } >"$DIR/results.$name" ||
            fail "cannot read the results of the $name run"
        echo "$name: exit $rc, $(grep -c '^file ' "$DIR/results.$name") test files, $(grep -c '^case .* ok$' "$DIR/results.$name") cases ok, $(grep -c '^case .* skipped$' "$DIR/results.$name") skipped, $(grep -cE '^case .* (failure|error)$' "$DIR/results.$name") failed; $(grep -E '^Total duration' "$DIR/$name.log")"
    }
    DEFAULT_SIGINT='import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.executable, [sys.executable] + sys.argv[1:])'
    regrtest glibc
    regrtest pyalloc LD_PRELOAD="$LIB" ${PYALLOC_CPYTHON_ALIGN:+PYALLOC_ALIGN=$PYALLOC_CPYTHON_ALIGN}
    # The one difference allowed: the descriptor every process on pyalloc keeps for `pyalloc top`
    # (PYALLOC_PUBLISH=1, the default: a memfd at 800), which test_pass_fds_redirected sees among
    # the descriptors of a child python (docs/compat.md). That case must fail on it, with 800 as the
    # only descriptor too many, and is then counted as passed; every other result must be glibc's.
    known='case test.test_subprocess.POSIXProcessTestCase.test_pass_fds_redirected'
    if grep -qx "$known failure" "$DIR/results.pyalloc"; then
        grep -qx "$known ok" "$DIR/results.glibc" || fail "$known failed on glibc too"
        grep -A3 'in test_pass_fds_redirected' "$DIR/pyalloc.log" | grep -q "^800 : output=b'0,1,2,[0-9,]*,800" ||
            fail "$known failed on pyalloc, not (only) because of the descriptor at 800 (see $DIR/pyalloc.log)"
        sed -i "s/^$known failure\$/$known ok/" "$DIR/results.pyalloc"
        if ! grep -qE '^case test\.test_subprocess\..* (failure|error)$' "$DIR/results.pyalloc"; then
            sed -i 's/^file test_subprocess failed$/file test_subprocess passed/' "$DIR/results.pyalloc"
        fi
        if ! grep -q '^file .* failed$' "$DIR/results.pyalloc"; then
            sed -i '1s/^exit 2$/exit 0/' "$DIR/results.pyalloc"
        fi
        echo "pyalloc: $known failed on the publication's descriptor (800) alone, as documented"
    fi
    compare results
    # proof, in the run itself: every regrtest worker seen more than once had libpyalloc mapped and
    # pyalloc's pool resident (a worker seen once may have been sampled right after its exec, before
    # ld.so mapped the preloads: a loaded machine showed it), at least one had; and ld.so binds python3's
    # malloc/free to libpyalloc in this environment
    grep -e '--worker-args' "$DIR/pool" >"$DIR/pool.workers"
    workers=$(wc -l <"$DIR/pool.workers")
    [ "$workers" -ge 1 ] || fail "no regrtest worker process was seen (see $DIR/pool)"
    awk '$4 >= 2 && $2 != 1' "$DIR/pool.workers" | grep -q . && fail "regrtest workers without libpyalloc mapped (see $DIR/pool)"
    awk '$2 == 1' "$DIR/pool.workers" | grep -q . || fail "no regrtest worker had libpyalloc mapped (see $DIR/pool)"
    awk '$4 >= 2 && $3 == 0' "$DIR/pool.workers" | grep -q . &&
        fail "regrtest workers without pyalloc's pool resident (see $DIR/pool)"
    served=$(awk '$3 > 0' "$DIR/pool.workers" | wc -l)
    [ "$served" -ge 1 ] || fail "no regrtest worker had pyalloc's pool resident (see $DIR/pool)"
    pre "$PY" -c 'import json, re; json.dumps([re.escape(str(i)) for i in range(1000)])' || fail "python3 failed under pyalloc"
    prove_bindings 'python3(\.11)?'
    echo "$workers regrtest workers sampled, $(awk '$2 == 1' "$DIR/pool.workers" | wc -l) with libpyalloc mapped, $served with pyalloc's pool resident (largest $(awk '{ if ($3 + 0 > m) m = $3 + 0 } END { print m }' "$DIR/pool.workers") kB)"
    ;;

php)
    need php php-cli
    # Debian's php-cli with its default configuration: conf.d loads its extensions with
    # dlopen(RTLD_DEEPBIND), so their free binds to glibc's (it aborted at start-up before pyalloc
    # repaired them; `php -n`, without extensions, ran)
    php "$SRC/workload.php" >"$DIR/php.glibc" || fail "php failed on glibc"
    grep -q MISSING "$DIR/php.glibc" && fail "php's default configuration lacks an extension: $(grep MISSING "$DIR/php.glibc")"
    pre_stats php "$SRC/workload.php" >"$DIR/php.pyalloc" || fail "php failed under pyalloc"
    cat "$DIR"/ld.* | grep -E "binding file [^ ]*/(pdo|phar|iconv|fileinfo|tokenizer)\.so \[0\] to [^ ]*libc\.so\.6 \[0\]: normal symbol \`free'" >/dev/null ||
        fail "no php extension bound free to glibc's (RTLD_DEEPBIND): the case this tests did not arise"
    prove_bindings 'php(8\.2)?'
    prove_stats 10000
    compare php
    same_in_mode8 php php "$SRC/workload.php"
    echo "php $(php -r 'echo PHP_VERSION;'): $(grep -c ': loaded' "$DIR/php.pyalloc") extensions used, $(wc -l <"$DIR/php.pyalloc") lines"
    ;;

clang)
    need clang clang
    need clang++ clang
    # a C++ unit through every stage (parse, templates, -O2, object), an empty C file (PYALLOC_ALIGN=8
    # crashed on it: operator new's 8-aligned blocks met clang's movaps), each in both modes; the
    # object files must be identical to glibc's, and the program built must run
    cp "$SRC/workload.cpp" "$DIR/w.cpp" && : >"$DIR/empty.c" || fail "cannot copy the sources"
    # build NAME ENV...: objects, diagnostics and the linked program in $DIR/*.NAME*
    build() {
        name=$1
        shift
        (cd "$DIR" && "$@" clang++ -std=c++17 -O2 -Wall -c w.cpp -o "w.$name.o" 2>"diag.$name" &&
            "$@" clang -O2 -c empty.c -o "e.$name.o" 2>>"diag.$name" &&
            "$@" clang++ "w.$name.o" -o "w.$name")
    }
    build glibc env || fail "clang failed on glibc"
    build pyalloc env LD_PRELOAD="$LIB" LD_DEBUG=bindings LD_DEBUG_OUTPUT="$DIR/ld" PYALLOC_STATS=json \
        PYALLOC_STATS_FILE="$DIR/stats.%p" || fail "clang failed under pyalloc (see $DIR/diag.pyalloc)"
    bound_to_pyalloc 'libclang-cpp\.so\.14' _Znwm || fail "libclang-cpp's operator new is not pyalloc's"
    prove_bindings 'libclang-cpp\.so(\.[0-9]+)*'
    prove_stats 10000
    build pyalloc8 env LD_PRELOAD="$LIB" PYALLOC_ALIGN=8 || fail "clang failed under pyalloc with PYALLOC_ALIGN=8"
    for f in w e; do
        cp "$DIR/$f.glibc.o" "$DIR/$f.o.glibc" && cp "$DIR/$f.pyalloc.o" "$DIR/$f.o.pyalloc" && compare "$f.o"
        cp "$DIR/$f.glibc.o" "$DIR/$f.o8.glibc" && cp "$DIR/$f.pyalloc8.o" "$DIR/$f.o8.pyalloc" && compare "$f.o8"
    done
    for n in pyalloc pyalloc8; do
        cp "$DIR/diag.glibc" "$DIR/diag_$n.glibc" && cp "$DIR/diag.$n" "$DIR/diag_$n.pyalloc" && compare "diag_$n"
    done
    "$DIR/w.glibc" >"$DIR/run.glibc" || fail "the program clang built on glibc failed"
    LD_PRELOAD=$LIB "$DIR/w.pyalloc" >"$DIR/run.pyalloc" || fail "the program clang built under pyalloc failed"
    compare run
    same_in_mode8 run "$DIR/w.pyalloc8"
    echo "clang: identical objects ($(wc -c <"$DIR/w.o.pyalloc") bytes) in both modes"
    ;;

node)
    NODE=$(command -v node || command -v nodejs) || fail "node not found: install it with 'apt-get install nodejs'"
    "$NODE" "$SRC/workload.js" >"$DIR/js.glibc" || fail "node failed on glibc"
    pre_stats "$NODE" "$SRC/workload.js" >"$DIR/js.pyalloc" || fail "node failed under pyalloc"
    prove_bindings 'node(js)?'
    prove_stats 10000
    compare js
    same_in_mode8 js "$NODE" "$SRC/workload.js"
    echo "node $("$NODE" --version): $(wc -l <"$DIR/js.pyalloc") lines"
    ;;

ruby)
    need ruby ruby
    ruby "$SRC/workload.rb" >"$DIR/rb.glibc" || fail "ruby failed on glibc"
    pre_stats ruby "$SRC/workload.rb" >"$DIR/rb.pyalloc" || fail "ruby failed under pyalloc"
    prove_bindings 'libruby-?[0-9.]*\.so(\.[0-9]+)*'
    prove_stats 100000
    compare rb
    same_in_mode8 rb ruby "$SRC/workload.rb"
    echo "$(ruby -e 'print RUBY_DESCRIPTION[0, 11]'): $(wc -l <"$DIR/rb.pyalloc") lines"
    ;;

cmake)
    need cmake cmake
    # cmake -P: C++ strings and lists (operator new) in a script
    mkdir -p "$DIR/g" "$DIR/p" "$DIR/p8"
    cmake -DWORK="$DIR/g" -P "$SRC/workload.cmake" >"$DIR/cm.glibc" || fail "cmake failed on glibc"
    pre_stats cmake -DWORK="$DIR/p" -P "$SRC/workload.cmake" >"$DIR/cm.pyalloc" || fail "cmake failed under pyalloc"
    bound_to_pyalloc cmake _Znwm || fail "cmake's operator new is not pyalloc's"
    prove_bindings cmake
    prove_stats 10000
    compare cm
    same_in_mode8 cm cmake -DWORK="$DIR/p8" -P "$SRC/workload.cmake"
    echo "$(cmake --version | head -1): $(wc -l <"$DIR/cm.pyalloc") lines"
    ;;

make)
    need make make
    need seq coreutils
    make -s -f "$SRC/workload.mk" >"$DIR/mk.glibc" || fail "make failed on glibc"
    pre_stats make -s -f "$SRC/workload.mk" >"$DIR/mk.pyalloc" || fail "make failed under pyalloc"
    prove_bindings make
    prove_stats 10000
    compare mk
    same_in_mode8 mk make -s -f "$SRC/workload.mk"
    echo "$(make --version | head -1): $(head -1 "$DIR/mk.pyalloc")"
    ;;

jq)
    need jq jq
    need awk mawk
    # 15,000 JSON records, generated
    awk 'BEGIN {
        srand(11); split("alpha beta gamma delta skip", kinds, " "); printf "["
        for (i = 0; i < 15000; i++) {
            printf "%s{\"name\":\"n%d_%s\",\"kind\":\"%s\",\"value\":%d,\"tags\":[\"t%d\",\"u%d\"]}",
                i ? "," : "", int(rand() * 5000), substr("abcdefghij", 1, 1 + int(rand() * 9)), kinds[1 + int(rand() * 5)],
                int(rand() * 1000), int(rand() * 50), int(rand() * 7)
        }
        print "]"
    }' >"$DIR/records.json" || fail "cannot generate the records"
    jq -S -f "$SRC/workload.jq" "$DIR/records.json" >"$DIR/jq.glibc" || fail "jq failed on glibc"
    pre_stats jq -S -f "$SRC/workload.jq" "$DIR/records.json" >"$DIR/jq.pyalloc" || fail "jq failed under pyalloc"
    prove_bindings 'libjq\.so\.1'
    prove_stats 100000
    compare jq
    same_in_mode8 jq jq -S -f "$SRC/workload.jq" "$DIR/records.json"
    echo "$(jq --version): $(wc -l <"$DIR/jq.pyalloc") lines"
    ;;

stress_handoff | stress_fork)
    [ -n "$EXE" ] && [ -x "$EXE" ] || fail "stress program '$EXE' missing"
    pre "$EXE" || fail "$EXE failed under LD_PRELOAD=$LIB"
    prove_bindings "$(basename "$EXE")"
    ;;

*)
    fail "unknown case '$CASE'"
    ;;
esac
echo "PASS preload_$CASE"
