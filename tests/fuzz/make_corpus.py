#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpus of fuzz_ops (tests/fuzz/corpus/): small hand-made programs of allocator
operations, one file each, in the instruction format fuzz_ops.c documents:
    [op] [slot] [size-lo] [size-hi]     op % 10: 0 malloc 1 calloc 2 realloc 3 free 4 posix_memalign
                                        5 aligned_alloc/memalign 6 usable-size check 7 free on the
                                        helper thread 8 malloc on the helper thread 9 free all
                                        op >= 250: a write that damages a free list (forked child)
Deterministic: running it again rewrites the same bytes. usage: make_corpus.py [DIR]"""
import os
import random
import sys

MALLOC, CALLOC, REALLOC, FREE, POSIX_MEMALIGN, ALIGNED, USABLE, REMOTE_FREE, REMOTE_MALLOC, FREE_ALL = range(10)
CORRUPT = 250  # 250 + even: freed by this thread; + odd: by the helper
SLOTS = 64
MAX_LEN = 4096  # libFuzzer's -max_len in CI and scripts/fuzz.sh


def size_bytes(n):
    """(lo, hi) for a size: 0..1024 exactly; 1025..32 KiB in steps of 16."""
    if n <= 1024:
        return n & 0xFF, n >> 8
    v = min(n // 16, 0x7FF)
    return v & 0xFF, 0xF8 | (v >> 8)


def ins(op, slot=0, size=0, align_exp=0):
    lo, hi = size_bytes(size)
    return bytes([(op + 10 * align_exp) & 0xFF, slot % SLOTS, lo, hi])


def seeds():
    # every request size of the pools and just past them, in rotating slots, then all freed
    yield "every-size", [ins(MALLOC, n, n) for n in range(0, 520)] + [ins(FREE_ALL)]
    # one block grown through every class, into the passthrough, to mmap sizes, and back down
    chain = [1, 8, 9, 16, 17, 24, 32, 48, 64, 100, 128, 256, 384, 500, 512, 513, 600, 1024,
             4096, 20000, 32000, 700, 512, 100, 16, 8, 1, 0]
    yield "realloc-chain", [ins(REALLOC, 3, n) for n in chain] + [ins(REALLOC, 4, 40), ins(REALLOC, 4, 0)]
    # calloc of small, boundary and large totals (count = 1 + lo % 16)
    yield "calloc", [ins(CALLOC, i, n) for i, n in enumerate([0, 1, 7, 8, 16, 100, 511, 512, 513, 1024, 5000])]
    # every alignment 1..4096 at sizes around the classes, both aligned entry points and posix_memalign
    ops = []
    for exp in range(13):
        for j, n in enumerate([0, 1, 8, 24, 100, 512, 513, 1000]):
            ops.append(ins(POSIX_MEMALIGN, exp * 8 + j, n, exp))
            ops.append(ins(ALIGNED, exp * 8 + j + 1, n | 1, exp))  # odd size: memalign (lo & 1)
            ops.append(ins(ALIGNED, exp * 8 + j + 2, n & ~1, exp))  # even size: aligned_alloc
    yield "aligned", ops + [ins(FREE_ALL)]
    # blocks made by the helper thread and freed or realloc'ed here; blocks made here freed there
    ops = []
    for i in range(SLOTS):
        ops.append(ins(REMOTE_MALLOC, i, 16 + 8 * (i % 20)))
    for i in range(0, SLOTS, 2):
        ops.append(ins(FREE, i))
    for i in range(1, SLOTS, 2):
        ops.append(ins(REALLOC, i, 300))
    for i in range(SLOTS):
        ops.append(ins(MALLOC, i, 48))
    for i in range(SLOTS):
        ops.append(ins(REMOTE_FREE, i))
    yield "cross-thread", ops
    # fill whole pages of one class, free them in another order, refill: page reuse and return
    ops = []
    for rnd, n in enumerate([512, 256, 8, 496]):
        ops += [ins(MALLOC, i, n) for i in range(SLOTS)]
        ops += [ins(FREE, (i * 37) % SLOTS) for i in range(SLOTS)]
        ops += [ins(MALLOC, i, n) for i in range(SLOTS)]
        ops += [ins(USABLE, i) for i in range(0, SLOTS, 9)]
        ops.append(ins(FREE_ALL))
    yield "page-churn", ops
    # edge cases: realloc(NULL, n), realloc(p, 0), free(NULL), free of an empty slot, realloc in place
    yield "edges", [ins(REALLOC, 1, 10), ins(REALLOC, 1, 0), ins(FREE, 1, 0x100), ins(FREE, 2),
                    ins(MALLOC, 5, 0), ins(REALLOC, 5, 8), ins(REALLOC, 5, 7), ins(REALLOC, 5, 30),
                    ins(REALLOC, 5, 20), ins(USABLE, 5), ins(MALLOC, 6, 600), ins(REALLOC, 6, 500),
                    ins(REALLOC, 6, 601), ins(REMOTE_FREE, 6), ins(REMOTE_FREE, 5)]
    # a long mixed program from a fixed PRNG seed, weighted towards the pool sizes
    rng = random.Random(20240101)
    ops = []
    while len(ops) * 4 + 4 <= MAX_LEN:
        op = rng.choices(range(10), weights=[30, 5, 20, 25, 3, 3, 3, 5, 5, 1])[0]
        n = rng.choice([rng.randint(0, 512)] * 6 + [rng.randint(0, 1024)] * 3 + [rng.randint(1025, 20000)])
        ops.append(ins(op, rng.randrange(SLOTS), n, rng.randrange(13) if op in (4, 5) else 0))
    yield "mixed", ops
    # writes into freed blocks: freed here (even op) or on another thread (odd), each size class
    # group, the written word made from the size bytes (ins(CORRUPT...) sends them raw)
    ops = [ins(MALLOC, i, n) for i, n in enumerate([8, 16, 24, 40, 100, 255, 256, 512])]
    for i in range(8):
        ops.append(bytes([CORRUPT + (i & 1), i, 0x5A + i, 0x13 * i]))
    yield "corrupt", ops + [ins(FREE_ALL)]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for i, (name, ops) in enumerate(seeds()):
        data = b"".join(ops)
        chunks = [data[k:k + MAX_LEN - MAX_LEN % 4] for k in range(0, len(data), MAX_LEN - MAX_LEN % 4)]
        for j, chunk in enumerate(chunks):
            suffix = "" if len(chunks) == 1 else "-%d" % (j + 1)
            with open(os.path.join(out, "seed-%02d-%s%s" % (i + 1, name, suffix)), "wb") as f:
                f.write(chunk)


if __name__ == "__main__":
    main()
