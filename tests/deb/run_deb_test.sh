#!/bin/sh
# SPDX-License-Identifier: MIT
# The Debian package, end to end:
#   1. configure and build pyalloc (Release, no tests) in a scratch directory, `cpack -G DEB` there;
#   2. check the package: its control fields, and that it holds libpyalloc.so*, libpyalloc.a,
#      pyalloc.h, pyalloc.pc, the CMake package files, /usr/bin/pyalloc (executable), the man page,
#      the module the command shares with the benchmark runner, the runner and programs, and no
#      path of the build machine;
#   3. install it with dpkg -i (as root; otherwise, or if a pyalloc package is installed already, it
#      is unpacked with dpkg-deb -x into a scratch root instead, and the test says so);
#   4. from the installed paths: build a program with pkg-config and one with find_package(pyalloc)
#      and run them (malloc replaced: malloc_usable_size(malloc(24)) is 32); `pyalloc --version`,
#      `pyalloc lib`; `pyalloc run` preloads the installed library into a program that does not link
#      it (--align 8 observed); `pyalloc stats --json` and `--plot`; `pyalloc bench --quick` on one benchmark;
#      `man -w pyalloc` and the page renders;
#   5. dpkg -r (and --purge) the package, and check that nothing of it is left.
#
# usage: run_deb_test.sh SOURCE_DIR WORK_DIR [CMAKE [CC]]
# PYALLOC_DEB_TEST_MODE=extract tests the unpacked package even as root (what a non-root run does).
# Exit status 0 passed, 1 failed, 77 skipped (not a Debian system: no dpkg-deb).
set -u

[ $# -ge 2 ] || { echo "usage: $0 SOURCE_DIR WORK_DIR [CMAKE [CC]]" >&2; exit 2; }
SRC=$(cd "$1" && pwd) || exit 2
WORK=$2
CMAKE=${3:-cmake}
CC=${4:-cc}
CPACK=$(dirname "$CMAKE")/cpack
[ -x "$CPACK" ] || CPACK=cpack
JOBS=$(nproc 2>/dev/null || echo 2)

T0=$(date +%s)
step() { echo "==> [$(($(date +%s) - T0))s] $*"; }
fail() {
    echo "FAIL deb_package: $*" >&2
    exit 1
}
need() { # need PROGRAM DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 || fail "'$1' not found: apt-get install $2"
}

if ! command -v dpkg-deb >/dev/null 2>&1; then
    echo "SKIP deb_package: no dpkg-deb (not a Debian system)"
    exit 77
fi
need pkg-config pkg-config
need "$CC" build-essential
need python3 python3

VERSION=$(sed -n 's/^#define[ \t]*PA_VERSION_STRING[ \t]*"\([^"]*\)".*/\1/p' "$SRC/include/pyalloc.h")
[ -n "$VERSION" ] || fail "no PA_VERSION_STRING in $SRC/include/pyalloc.h"

case "$WORK" in
/*) ;;
*) WORK=$(pwd)/$WORK ;;
esac
rm -rf "$WORK"
mkdir -p "$WORK" || fail "cannot create $WORK"
unset LD_PRELOAD PYALLOC_LIB PYALLOC_ALIGN PYALLOC_STATS PYALLOC_STATS_FILE PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR \
    LD_LIBRARY_PATH CMAKE_PREFIX_PATH 2>/dev/null

# ---- 1. build and package ----------------------------------------------------------------------------
BUILD=$WORK/build
step "configure and build $SRC in $BUILD"
"$CMAKE" -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPYALLOC_BUILD_TESTS=OFF >"$WORK/configure.log" 2>&1 ||
    { cat "$WORK/configure.log" >&2; fail "configure failed"; }
"$CMAKE" --build "$BUILD" -j "$JOBS" >"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log" >&2; fail "build failed"; }
step "cpack -G DEB"
(cd "$BUILD" && "$CPACK" -G DEB) >"$WORK/cpack.log" 2>&1 || { cat "$WORK/cpack.log" >&2; fail "cpack -G DEB failed"; }
DEB=$(find "$BUILD" -maxdepth 1 -name 'pyalloc_*.deb' | head -1)
[ -n "$DEB" ] || fail "cpack wrote no pyalloc_*.deb in $BUILD"
echo "package: $DEB ($(wc -c <"$DEB") bytes)"

# ---- 2. what the package holds -----------------------------------------------------------------------
step "check the package"
for f in Package Version Architecture Depends; do
    echo "  $f: $(dpkg-deb -f "$DEB" "$f")"
done
[ "$(dpkg-deb -f "$DEB" Package)" = pyalloc ] || fail "Package is not pyalloc"
[ "$(dpkg-deb -f "$DEB" Version)" = "$VERSION" ] || fail "Version is not $VERSION"
dpkg-deb -f "$DEB" Depends | grep -q 'libc6' || fail "Depends lacks libc6"
dpkg-deb -f "$DEB" Depends | grep -q 'python3' || fail "Depends lacks python3 (/usr/bin/pyalloc needs it)"

dpkg-deb -c "$DEB" >"$WORK/contents.txt" || fail "dpkg-deb -c failed"
# has REGEX WHAT: a line of the listing (path with its leading ./) matches
has() {
    grep -Eq "$1" "$WORK/contents.txt" || { cat "$WORK/contents.txt" >&2; fail "the package has no $2"; }
}
L='\./usr/lib/(x86_64-linux-gnu/)?'
has " ${L}libpyalloc\\.so -> " "libpyalloc.so (development symlink)"
has " ${L}libpyalloc\\.so\\.0 -> " "libpyalloc.so.0 (SONAME symlink)"
has " ${L}libpyalloc\\.so\\.$(echo "$VERSION" | sed 's/\./\\./g')\$" "libpyalloc.so.$VERSION"
has " ${L}libpyalloc\\.a\$" "libpyalloc.a"
has ' \./usr/include/pyalloc\.h$' "pyalloc.h"
has " ${L}pkgconfig/pyalloc\\.pc\$" "pyalloc.pc"
for f in pyallocConfig.cmake pyallocConfigVersion.cmake pyallocTargets.cmake 'pyallocTargets-[a-z]+.cmake'; do
    has " ${L}cmake/pyalloc/$f\$" "CMake package file $f"
done
has '^-rwxr-xr-x .* \./usr/bin/pyalloc$' "executable /usr/bin/pyalloc"
has ' \./usr/share/man/man1/pyalloc\.1(\.gz)?$' "man page pyalloc.1"
has ' \./usr/share/pyalloc/tools/pyalloc_common\.py$' "module the command and the runner share (share/pyalloc/tools)"
has ' \./usr/share/pyalloc/bench/run\.py$' "benchmark runner (share/pyalloc/bench/run.py)"
has ' \./usr/share/pyalloc/tools/pyalloc_sites\.py$' "stats --sites' module (share/pyalloc/tools/pyalloc_sites.py)"
has '^-rwxr-xr-x .* \./usr/libexec/pyalloc/bench/measure$' "benchmark programs (libexec/pyalloc/bench)"
echo "  $(wc -l <"$WORK/contents.txt") entries, every one expected is there"

UNPACKED=$WORK/unpacked
dpkg-deb -x "$DEB" "$UNPACKED" || fail "dpkg-deb -x failed"
leaks=$(grep -rlF -e "$WORK" -e "$SRC" "$UNPACKED" 2>/dev/null)
[ -z "$leaks" ] || fail "files of the package name the build machine's paths ($WORK or $SRC): $leaks"
head -1 "$UNPACKED/usr/bin/pyalloc" | grep -q '^#!/usr/bin/python3' || fail "/usr/bin/pyalloc does not start #!/usr/bin/python3"

# ---- 3. install ----------------------------------------------------------------------------------------
MODE=extract
WHY=
INSTALLED=0
if [ "${PYALLOC_DEB_TEST_MODE:-}" = extract ]; then
    WHY="PYALLOC_DEB_TEST_MODE=extract"
elif [ "$(id -u)" -ne 0 ]; then
    WHY="not root"
elif ! command -v dpkg >/dev/null 2>&1; then
    WHY="no dpkg"
elif dpkg-query -W -f='${Status}' pyalloc 2>/dev/null | grep -q 'install ok installed'; then
    WHY="a pyalloc package ($(dpkg-query -W -f='${Version}' pyalloc)) is installed already; it is left alone"
else
    MODE=dpkg
fi

cleanup() {
    if [ "$INSTALLED" -eq 1 ]; then
        dpkg -r pyalloc >"$WORK/remove.log" 2>&1 || cat "$WORK/remove.log" >&2
        dpkg --purge pyalloc >>"$WORK/remove.log" 2>&1
        INSTALLED=0
    fi
}

if [ "$MODE" = dpkg ]; then
    # One test at a time installs the package (two build trees may run this test at once).
    if command -v flock >/dev/null 2>&1; then
        exec 9>/tmp/pyalloc-deb-test.lock
        flock -w 600 9 || fail "another deb test held /tmp/pyalloc-deb-test.lock for 10 minutes"
    fi
    trap cleanup EXIT
    trap 'cleanup; exit 1' INT TERM HUP
    step "dpkg -i $(basename "$DEB")"
    INSTALLED=1
    dpkg -i "$DEB" >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log" >&2; fail "dpkg -i failed"; }
    status=$(dpkg-query -W -f='${Status} ${Version}' pyalloc)
    [ "$status" = "install ok installed $VERSION" ] || fail "after dpkg -i, dpkg-query says '$status'"
    ROOT=
else
    echo "NOTE: $WHY: testing the package unpacked with dpkg-deb -x into $UNPACKED instead of installing it"
    ROOT=$UNPACKED
fi
PREFIX=$ROOT/usr
PA=$PREFIX/bin/pyalloc
PC=$(find "$PREFIX/lib" -name pyalloc.pc | head -1)
LIBDIR=$(dirname "$(dirname "$PC")")

# ---- 4. use it -----------------------------------------------------------------------------------------
step "use the installed package ($MODE)"
[ -x "$PA" ] || fail "$PA is not installed"
out=$("$PA" --version) || fail "pyalloc --version failed"
[ "$out" = "pyalloc $VERSION" ] || fail "pyalloc --version says '$out', expected 'pyalloc $VERSION'"
lib=$("$PA" lib) || fail "pyalloc lib failed"
[ "$lib" = "$LIBDIR/libpyalloc.so.0" ] || fail "pyalloc lib says '$lib', expected $LIBDIR/libpyalloc.so.0"
echo "  pyalloc --version: $out; pyalloc lib: $lib"

# (a) pkg-config
cat >"$WORK/linked.c" <<'EOF'
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <pyalloc.h>
int main(void)
{
    void *p = malloc(24);
    printf("usable=%zu mode=%d small=%d version=%s\n", malloc_usable_size(p), pa_alignment_mode(),
           pa_is_small(p), PA_VERSION_STRING);
    free(p);
    return 0;
}
EOF
if [ "$MODE" = dpkg ]; then
    flags=$(pkg-config --cflags --libs pyalloc) || fail "pkg-config --cflags --libs pyalloc failed"
    runenv=
else
    flags=$(PKG_CONFIG_PATH=$(dirname "$PC") PKG_CONFIG_SYSROOT_DIR=$ROOT pkg-config --cflags --libs pyalloc) ||
        fail "pkg-config --cflags --libs pyalloc failed"
    case "$flags" in *-I*) ;; *) flags="-I$PREFIX/include $flags" ;; esac   # /usr/include is implied, not ours
    runenv="LD_LIBRARY_PATH=$LIBDIR"
fi
echo "  pkg-config --cflags --libs pyalloc: $flags"
# shellcheck disable=SC2086 # flags are words on purpose
"$CC" -o "$WORK/linked" "$WORK/linked.c" $flags >"$WORK/cc.log" 2>&1 || { cat "$WORK/cc.log" >&2; fail "cc with pkg-config flags failed"; }
# check_linked WHAT EXE
check_linked() {
    # shellcheck disable=SC2086
    ldd_out=$(env $runenv ldd "$2") || fail "$1: ldd failed"
    loaded=$(echo "$ldd_out" | sed -n 's/^[ \t]*libpyalloc\.so\.0 => \([^ ]*\) .*/\1/p')
    if [ -z "$loaded" ] || [ "$(readlink -f "$loaded")" != "$(readlink -f "$LIBDIR/libpyalloc.so.0")" ]; then
        fail "$1: $2 does not load $LIBDIR/libpyalloc.so.0: $ldd_out"
    fi
    # shellcheck disable=SC2086
    out=$(env $runenv "$2") || fail "$1: $2 failed"
    [ "$out" = "usable=32 mode=16 small=1 version=$VERSION" ] || fail "$1: $2 printed '$out'"
    echo "  $1: $out"
}
check_linked pkg-config "$WORK/linked"

# (b) find_package(pyalloc)
mkdir -p "$WORK/consumer"
cat >"$WORK/consumer/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.13)
project(consumer C)
find_package(pyalloc $VERSION REQUIRED)
add_executable(linked "$WORK/linked.c")
target_link_libraries(linked PRIVATE pyalloc::pyalloc)
EOF
prefix_path=/nonexistent   # dpkg mode: the default search path must find it
[ "$MODE" = dpkg ] || prefix_path=$PREFIX
if ! "$CMAKE" -S "$WORK/consumer" -B "$WORK/consumer/build" -DCMAKE_PREFIX_PATH="$prefix_path" \
    -DCMAKE_C_COMPILER="$CC" >"$WORK/consumer.log" 2>&1 ||
    ! "$CMAKE" --build "$WORK/consumer/build" >>"$WORK/consumer.log" 2>&1; then
    cat "$WORK/consumer.log" >&2
    fail "a find_package(pyalloc) project did not build"
fi
check_linked find_package "$WORK/consumer/build/linked"

# (c) pyalloc run: a program that does not link pyalloc gets it preloaded from the installed path
"$CC" -O1 -o "$WORK/plain" "$SRC/tests/cli/prog.c" -ldl >"$WORK/cc2.log" 2>&1 || { cat "$WORK/cc2.log" >&2; fail "cc prog.c failed"; }
out=$("$WORK/plain" usable)
case "$out" in *" mode=0") ;; *) fail "the plain program has pyalloc without a preload: '$out'" ;; esac
out=$("$PA" run -- "$WORK/plain" usable) || fail "pyalloc run failed"
[ "$out" = "usable=32 mode=16" ] || fail "pyalloc run -- plain usable: '$out', expected usable=32 mode=16"
out=$("$PA" run --align 8 -- "$WORK/plain" usable) || fail "pyalloc run --align 8 failed"
[ "$out" = "usable=24 mode=8" ] || fail "pyalloc run --align 8 -- plain usable: '$out', expected usable=24 mode=8"
out=$("$PA" run -- "$WORK/plain" env LD_PRELOAD)
[ "$out" = "LD_PRELOAD=$LIBDIR/libpyalloc.so.0" ] || fail "pyalloc run preloads '$out'"
"$PA" run -- "$WORK/plain" exit 3
[ $? -eq 3 ] || fail "pyalloc run did not pass exit status 3 through"
echo "  pyalloc run: usable 32 (default), 24 (--align 8), from $LIBDIR/libpyalloc.so.0"

# (d) pyalloc stats, when the library has statistics
if grep -q PYALLOC_STATS "$LIBDIR/libpyalloc.so.0"; then
    "$PA" stats --json -o "$WORK/stats.json" -- "$WORK/plain" alloc 1000 200 >/dev/null || fail "pyalloc stats failed"
    python3 - "$WORK/stats.json" <<'EOF' || fail "pyalloc stats: the report is wrong"
import json, sys
doc = json.load(open(sys.argv[1]))
c = {c["size"]: c for c in doc["classes"]}[208]
assert c["allocs"] >= 1000 and c["in_use"] >= 1000 and c["wasted"] >= 8000, c
print("  pyalloc stats: class 208: %d allocs, %d in use, %d bytes wasted" % (c["allocs"], c["in_use"], c["wasted"]))
EOF
    if command -v gnuplot >/dev/null 2>&1; then
        "$PA" stats --plot "$WORK/classes.svg" -o /dev/null -- "$WORK/plain" alloc 100 200 >/dev/null ||
            fail "pyalloc stats --plot failed"
        grep -q "memory over time" "$WORK/classes.svg" || fail "pyalloc stats --plot drew no chart"
        echo "  pyalloc stats --plot: drawn with the installed share/pyalloc/tools/pyalloc_common.py"
    fi
    # stats --sites: the installed command finds its module; 20,000 x 3,000 bytes held to exit
    "$PA" stats --sites --sample-bytes 4096 --json -o "$WORK/sites.json" -- "$WORK/plain" alloc 20000 3000 >/dev/null ||
        fail "pyalloc stats --sites failed"
    python3 - "$WORK/sites.json" <<'EOF' || fail "pyalloc stats --sites: the report is wrong"
import json, sys
sites = json.load(open(sys.argv[1]))["sites"]
held = sites["exit"]["bytes"]
assert 0.95 * 60e6 < held < 1.05 * 60e6 + 1e6, held
print("  pyalloc stats --sites: %d bytes estimated live at exit (60000000 held), %d samples" % (held, sites["samples"]))
EOF
    # pyalloc top: the installed command reads a process that has the installed library preloaded
    # (plain LD_PRELOAD, not pyalloc run): one snapshot as JSON, and a clear answer for no process.
    # The snapshot is the library's last timeline point (every 100 ms while the program allocates):
    # top is asked again until one taken after the blocks were allocated shows them, for 8 s at most.
    LD_PRELOAD="$LIBDIR/libpyalloc.so.0" "$WORK/plain" hold 10000 200 10 >"$WORK/hold.out" &
    hold_pid=$!
    for _ in $(seq 1 200); do grep -q ready "$WORK/hold.out" 2>/dev/null && break; sleep 0.05; done
    top_ok=0
    for _ in $(seq 1 40); do
        "$PA" top --once --json "$hold_pid" >"$WORK/top.json" || { kill "$hold_pid"; fail "pyalloc top --once --json failed"; }
        if python3 - "$WORK/top.json" "$hold_pid" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["pid"] == int(sys.argv[2]), doc["pid"]
live = doc["live"]["bytes"]
assert live >= 10000 * 208 + (1 << 20), live
print("  pyalloc top --once --json: pid %d, %d bytes live (10000 x 208 + 1 MiB held)" % (doc["pid"], live))
EOF
        then top_ok=1; break; fi
        sleep 0.2
    done
    kill "$hold_pid" 2>/dev/null; wait "$hold_pid" 2>/dev/null
    [ "$top_ok" = 1 ] || fail "pyalloc top: no snapshot in 8 s showed the blocks held (last: $(cat "$WORK/top.json"))"
    "$PA" top --once 999999999 >/dev/null 2>"$WORK/top.err"
    [ $? -eq 3 ] && grep -q "no process" "$WORK/top.err" || fail "pyalloc top of no process: not exit status 3 with a reason"
else
    echo "  pyalloc stats: not checked, the library has no PYALLOC_STATS support"
fi

# (e) pyalloc bench: the installed runner and programs, one small benchmark
(cd "$WORK" && "$PA" bench --quick --benchmarks churn-1k --allocators pyalloc) >"$WORK/bench.out" 2>"$WORK/bench.err" ||
    { cat "$WORK/bench.out" "$WORK/bench.err" >&2; fail "pyalloc bench --quick failed"; }
grep -q "quick: 2 runs, 2 ok, 0 failed" "$WORK/bench.out" || { cat "$WORK/bench.out" >&2; fail "pyalloc bench: unexpected report"; }
grep -qF "malloc served by $LIBDIR/libpyalloc.so.0" "$WORK/bench.err" || { cat "$WORK/bench.err" >&2; fail "pyalloc bench did not run the installed library"; }
echo "  pyalloc bench --quick --benchmarks churn-1k: ok"

# (f) the man page
MANFILE=$(find "$PREFIX/share/man/man1" -name 'pyalloc.1*' 2>/dev/null | head -1)
if [ "$MODE" = dpkg ]; then
    if [ -z "$MANFILE" ] && grep -rqs 'path-exclude.*/usr/share/man' /etc/dpkg/dpkg.cfg.d; then
        echo "  man page: in the package, but dpkg here excludes /usr/share/man (/etc/dpkg/dpkg.cfg.d): not checked"
    else
        [ -n "$MANFILE" ] || fail "the man page was not installed in /usr/share/man/man1"
        if command -v man >/dev/null 2>&1; then
            w=$(man -w pyalloc) || fail "man -w pyalloc found nothing"
            [ "$w" = "$MANFILE" ] || fail "man -w pyalloc says '$w', expected $MANFILE"
            MANPAGER=cat MANWIDTH=100 man pyalloc 2>/dev/null | grep -q "pyalloc run" || fail "man pyalloc does not render"
            echo "  man -w pyalloc: $w"
        else
            echo "  man page: $MANFILE (man is not installed: apt-get install man-db)"
        fi
    fi
else
    [ -n "$MANFILE" ] || fail "no man page in the unpacked package"
    if command -v man >/dev/null 2>&1; then
        MANPAGER=cat MANWIDTH=100 man -l "$MANFILE" 2>/dev/null | grep -q "pyalloc run" || fail "man -l $MANFILE does not render"
    fi
    echo "  man page: $MANFILE"
fi

# ---- 5. remove -----------------------------------------------------------------------------------------
if [ "$MODE" = dpkg ]; then
    step "dpkg -r pyalloc"
    dpkg -r pyalloc >"$WORK/remove.log" 2>&1 || { cat "$WORK/remove.log" >&2; fail "dpkg -r pyalloc failed"; }
    dpkg --purge pyalloc >>"$WORK/remove.log" 2>&1 || { cat "$WORK/remove.log" >&2; fail "dpkg --purge pyalloc failed"; }
    INSTALLED=0
    status=$(dpkg-query -W -f='${Status}' pyalloc 2>/dev/null)
    case "$status" in "" | *not-installed*) ;; *) fail "after dpkg -r, dpkg-query says '$status'" ;; esac
    for f in /usr/bin/pyalloc "$LIBDIR/libpyalloc.so.0" /usr/include/pyalloc.h "$PC" /usr/share/pyalloc /usr/libexec/pyalloc; do
        [ ! -e "$f" ] || fail "$f is still there after dpkg -r"
    done
    ! ldconfig -p 2>/dev/null | grep -q libpyalloc || fail "ldconfig still lists libpyalloc after dpkg -r"
    echo "  removed; nothing of it is left"
fi
step "PASS deb_package ($MODE)"
