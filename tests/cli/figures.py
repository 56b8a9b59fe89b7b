# SPDX-License-Identifier: MIT
"""figures.py: the Python program of the figures test (tests/cli/test_cli.py), run by `pyalloc
stats` with PYTHONMALLOC=malloc. A peak in one function, a leak in another, in objects whose sizes
are known: bytes objects of 47 bytes (an 80-byte malloc each: 33 bytes of header and 47 of data),
the item arrays of lists made at their final length (8 bytes an item, passed to glibc), and
bytearrays of a few MiB (passed to glibc). Prints its markers (time.monotonic, ms) and the bytes
each phase holds, one key=value a line.

Between the markers it stays busy (a 100 KiB bytearray every 20 ms), the moments the library takes
its timeline points; when it sleeps, no point is taken.
"""
import sys
import time

N_PEAK, BLOB_PEAK = 200000, 16 << 20  # 200,000 x 80 bytes, 1.6 MB of list items, a 16 MiB bytearray
N_LEAK, BLOB_LEAK = 50000, 4 << 20


def say(key, value):
    sys.stdout.write("%s=%d\n" % (key, value))
    sys.stdout.flush()


def now_ms():
    return int(time.monotonic() * 1000)


def busy(ms):
    end = now_ms() + ms
    while now_ms() < end:
        bytearray(100 << 10)
        time.sleep(0.02)


def objects(n):
    """n distinct 47-byte bytes objects, in a list made at its final length."""
    v = [None] * n
    for i in range(n):
        v[i] = b"%047d" % i
    return v


def blob(n):
    b = bytearray(n)
    b[::4096] = b"\1" * len(b[::4096])  # touched: resident
    return b


def peak():
    say("peak_begin_ms", now_ms())
    held = (objects(N_PEAK), blob(BLOB_PEAK))
    say("peak_end_ms", now_ms())
    say("peak_bytes", N_PEAK * 80 + N_PEAK * 8 + BLOB_PEAK)
    busy(500)
    say("free_begin_ms", now_ms())
    del held
    say("free_end_ms", now_ms())


leaked = []


def leak():
    say("leak_begin_ms", now_ms())
    leaked.append((objects(N_LEAK), blob(BLOB_LEAK)))
    say("leak_end_ms", now_ms())
    say("leak_bytes", N_LEAK * 80 + N_LEAK * 8 + BLOB_LEAK)


def main():
    say("start_ms", now_ms())
    busy(500)
    say("base_end_ms", now_ms())
    peak()
    busy(500)
    leak()
    busy(500)
    say("exit_ms", now_ms())


if __name__ == "__main__":
    main()
