# SPDX-License-Identifier: MIT
"""cache.py: a Python cache that fills, then loses most of its entries at random, then sits idle.

The memory an allocator keeps after scattered eviction. N records (a dict of short strings, an
int, a list of two strings and a tuple of a float and an int: about a dozen small objects each)
are built into a cache keyed by "user:<i>"; then 90 % of the entries are deleted in a random
order, the program idles 1.5 s with no allocator call, then 99 % are gone, another 1.5 s idle.
RSS (/proc/self/statm), PSS (/proc/self/smaps_rollup) and the memory held (RSS of anonymous and file
pages plus the process's memfd files: what a compacting allocator's shared frames cost)
are reported after each step on stdout as key=value: rss_<step>_kb, pss_<step>_kb, mem_<step>_kb
for the steps start spike evict90 idle90 evict99 idle99.
The reference is a process that builds only the survivors (`survivors 10` or `survivors 1`, steps
start built idle): a perfectly compacting allocator would match it.

usage: cache.py evict|survivors [keep_percent] [--list] [--scale S] [--stop 90|99] [--trim]
    --list   the cache is a list indexed by record number (an evicted slot becomes None) instead
             of a dict, whose table CPython never shrinks on deletion (about 40 MB at 1 M entries)
    --scale  N = 1,000,000 * S
    --stop   end right after the idle at that step, through C exit(): the cache is still alive
             when atexit handlers and library destructors run (pyalloc's PYALLOC_DUMP test hook)
    --trim   call malloc_trim(0) after each eviction, before the idle, as a service that asks
             for its memory back does
Run with PYTHONMALLOC=malloc so every object goes through malloc. Deterministic: the checksum
covers the survivors of the last step, so `evict` matches `survivors 1` (and `evict --stop 90`
matches `survivors 10`).
"""
import array
import ctypes
import os
import sys
import time
from random import Random

IDLE_S = 1.5


def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def pss_kb():
    """(PSS, memory held). A page mapped at two addresses (as a merged page is) counts once in PSS
    and at every address touched in RSS; neither counts a memfd page no address maps yet, and PSS
    shares file pages with other processes. Memory held is RSS of anonymous and file pages
    (/proc/self/status RssAnon + RssFile) plus the pages of every memfd the process has open:
    RSS without the double counting, and what the machine (or a cgroup) pays for."""
    pss = held = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                held += int(line.split()[1])
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd).startswith("/memfd:"):
                held += os.fstat(int(fd)).st_blocks // 2
        except OSError:
            pass
    return pss, held


def measure(out, name):
    out["rss_%s_kb" % name] = rss_kb()
    out["pss_%s_kb" % name], out["mem_%s_kb" % name] = pss_kb()


def record(i):
    return {"id": i, "name": "user%07d" % i, "email": "user%07d@example.org" % i,
            "tags": ["tag%d" % (i % 13), "group%d" % (i % 7)], "point": (i * 0.5, i % 1000 + 300)}


def key(i):
    return "user:%d" % i


def order_of(n):
    """Record numbers in eviction order: the first 90 % go first, the next 9 % second."""
    order = array.array("I", range(n))
    Random(2024).shuffle(order)
    return order


def checksum(cache, as_list):
    h = 0
    values = cache if as_list else cache.values()
    for r in values:
        if r is not None:
            h = (h * 1000003 + r["id"] * 7 + len(r["email"]) + r["point"][1]) & 0xFFFFFFFFFFFFFFFF
    return h


def main(argv):
    args = list(argv)
    as_list = "--list" in args
    if as_list:
        args.remove("--list")
    trim = "--trim" in args
    if trim:
        args.remove("--trim")
    scale, stop = 1.0, None
    for opt in ("--scale", "--stop"):
        if opt in args:
            i = args.index(opt)
            val = args[i + 1]
            del args[i:i + 2]
            if opt == "--scale":
                scale = float(val)
            else:
                stop = int(val)
    if not args or args[0] not in ("evict", "survivors"):
        sys.exit(__doc__)
    n = max(100, int(1_000_000 * scale))
    out = {}
    measure(out, "start")
    t0 = time.monotonic()
    ck = 0

    if args[0] == "survivors":
        keep = int(args[1]) if len(args) > 1 else 10
        first = n - n * keep // 100
        survivors = sorted(order_of(n)[first:])
        if as_list:
            cache = [record(i) for i in survivors]
        else:
            cache = {key(i): record(i) for i in survivors}
        del survivors
        measure(out, "built")
        timed = time.monotonic() - t0
        time.sleep(IDLE_S)
        measure(out, "idle")
        ck = checksum(cache, as_list)
    else:
        if as_list:
            cache = [record(i) for i in range(n)]
        else:
            cache = {key(i): record(i) for i in range(n)}
        measure(out, "spike")
        timed = time.monotonic() - t0
        done = 0
        for pct in (90, 99):
            upto = n * pct // 100
            t1 = time.monotonic()
            order = order_of(n)  # made again at each step: the cache does not keep it meanwhile
            for j in range(done, upto):
                i = order[j]
                if as_list:
                    cache[i] = None
                else:
                    del cache[key(i)]
            del order
            done = upto
            if trim:
                ctypes.CDLL(None).malloc_trim(0)
            timed += time.monotonic() - t1
            measure(out, "evict%d" % pct)
            time.sleep(IDLE_S)
            measure(out, "idle%d" % pct)
            ck = checksum(cache, as_list)
            if stop == pct:
                break
    out["timed_s"] = "%.6f" % timed
    print(" ".join("%s=%s" % kv for kv in out.items()))
    print("checksum=%016x" % ck)
    sys.stdout.flush()
    if stop is not None:
        ctypes.CDLL(None).exit(0)  # skip the interpreter's teardown: the cache is alive at exit
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
