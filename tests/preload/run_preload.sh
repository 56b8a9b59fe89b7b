#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs an unmodified Debian program under LD_PRELOAD=libpyalloc.so and compares its output with a run
# on glibc's malloc. ld.so ignores a preload it cannot open and the program then runs on glibc, so
# every case also proves that pyalloc served the blocks: ld.so's own binding log (LD_DEBUG=bindings)
# of the preloaded run must show the program (and libc) binding malloc and free to libpyalloc, and a
# probe program that knows nothing of pyalloc must see pyalloc's size classes.
#
# usage: run_preload.sh CASE LIB PROBE WORKDIR SRCDIR [EXE]
#   CASE    probe | python | sort | sqlite3 | gzip | git | stress_handoff | stress_fork
#   LIB     libpyalloc.so (absolute path)     PROBE  the pa_probe program (not linked to pyalloc)
#   WORKDIR scratch directory                 SRCDIR tests/preload (workload.py, workload.sql)
#   EXE     for stress_*: the stress program built without pyalloc
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
        git log --stat --format='%H %s' &&
            git diff --stat HEAD~3 HEAD &&
            git gc -q &&
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
