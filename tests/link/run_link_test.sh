#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the build tree into a scratch prefix with `cmake --install`, then builds prog.c against
# the installed pyalloc two ways, (a) cc with `pkg-config --cflags --libs pyalloc` and (b) a CMake
# project using find_package(pyalloc) and pyalloc::pyalloc, and runs each: it must print 32 for
# malloc_usable_size(malloc(32)), proving that -lpyalloc replaced malloc (glibc says 40).
#
# usage: run_link_test.sh BUILD_DIR LINK_SRC_DIR CMAKE CC WORKDIR
set -u
[ $# -eq 5 ] || { echo "usage: $0 BUILD_DIR LINK_SRC_DIR CMAKE CC WORKDIR" >&2; exit 2; }
BUILD=$1 SRC=$2 CMAKE=$3 CC=$4 WORK=$5

fail() {
    echo "FAIL link_install: $*" >&2
    exit 1
}
command -v pkg-config >/dev/null 2>&1 || fail "pkg-config not found: apt-get install pkg-config"

rm -rf "$WORK"
mkdir -p "$WORK" || fail "cannot create $WORK"
PREFIX=$WORK/prefix

"$CMAKE" --install "$BUILD" --prefix "$PREFIX" >"$WORK/install.log" 2>&1 || {
    cat "$WORK/install.log" >&2
    fail "cmake --install $BUILD failed"
}
[ -f "$PREFIX/include/pyalloc.h" ] || fail "pyalloc.h not installed in $PREFIX/include"
PC=$(find "$PREFIX" -name pyalloc.pc | head -1)
[ -n "$PC" ] || fail "pyalloc.pc not installed under $PREFIX"
LIBDIR=$(dirname "$(dirname "$PC")")
ls "$LIBDIR"/libpyalloc.so* >/dev/null 2>&1 || fail "libpyalloc.so not installed in $LIBDIR"
[ -f "$LIBDIR/libpyalloc.a" ] || fail "libpyalloc.a not installed in $LIBDIR"

# check_prog NAME EXE: runs EXE against the installed library only
check_prog() {
    ldd_out=$(LD_LIBRARY_PATH=$LIBDIR ldd "$2") || fail "$1: ldd $2 failed"
    echo "$ldd_out" | grep -F "$LIBDIR/libpyalloc.so" >/dev/null ||
        fail "$1: $2 does not load libpyalloc.so from $LIBDIR: $ldd_out"
    out=$(LD_LIBRARY_PATH=$LIBDIR "$2") || fail "$1: $2 exited non-zero (output: $out)"
    first=$(echo "$out" | head -1)
    [ "$first" = 32 ] ||
        fail "$1: malloc_usable_size(malloc(32)) = '$first', expected 32 (malloc not replaced?)"
    echo "$1: malloc_usable_size(malloc(32)) = 32, version $(echo "$out" | tail -1)"
}

# (a) pkg-config
flags=$(PKG_CONFIG_PATH=$(dirname "$PC") pkg-config --cflags --libs pyalloc) ||
    fail "pkg-config --cflags --libs pyalloc failed"
# shellcheck disable=SC2086 # the flags are words on purpose
"$CC" -o "$WORK/prog_pkgconfig" "$SRC/prog.c" $flags >"$WORK/pkgconfig.log" 2>&1 || {
    cat "$WORK/pkgconfig.log" >&2
    fail "cc prog.c $flags failed"
}
check_prog pkg-config "$WORK/prog_pkgconfig"

# (b) find_package
"$CMAKE" -S "$SRC/consumer" -B "$WORK/consumer" -DCMAKE_PREFIX_PATH="$PREFIX" \
    -DCMAKE_C_COMPILER="$CC" -DPROG_SOURCE="$SRC/prog.c" >"$WORK/consumer.log" 2>&1 &&
    "$CMAKE" --build "$WORK/consumer" >>"$WORK/consumer.log" 2>&1 || {
    cat "$WORK/consumer.log" >&2
    fail "the find_package(pyalloc) consumer project did not configure and build"
}
check_prog find_package "$WORK/consumer/prog"

echo "PASS link_install"
