#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""How much of pyalloc's pool is resident in a process: proof, from outside, that pyalloc served
blocks there (not only that the library was mapped).

pyalloc reserves one range of address space (PROT_NONE, 64 GiB by default) and makes it readable and
writable from its start an arena at a time, so in /proc/PID/smaps its pool is an anonymous rw-p
mapping directly followed by the anonymous ---p rest of the reservation, the two together at least
1 GiB (its page descriptors are a second, smaller reservation: not counted). The pool's Rss is memory
pyalloc's pages hold.

usage:
  pool_rss.py LIB PID              one line: PID MAPPED POOL_KB COMMAND (MAPPED: 1 if LIB is mapped)
  pool_rss.py LIB --watch PID OUT  until PID exits or the file OUT.stop appears, samples PID and every
                                   descendant twice a second; then writes one line per process seen
                                   to OUT (PID MAPPED POOL_KB SAMPLES COMMAND), POOL_KB its largest
"""
import os
import sys
import time

RESERVATION_MIN = 1 << 30


def smaps_pool_kb(pid, lib_real):
    """(mapped, pool_kb) for pid, or None if it is gone."""
    mapped = False
    pool_kb = 0
    prev = None  # (start, end, perms, anon, rss_kb) of the mapping before the current one
    cur = None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):
                    fields = line.split()
                    lo, hi = (int(x, 16) for x in fields[0].split("-"))
                    path = fields[5] if len(fields) > 5 else ""
                    if path and os.path.realpath(path) == lib_real:
                        mapped = True
                    new = [lo, hi, fields[1], path == "", 0]
                    prev, cur = cur, new
                    if (prev is not None and prev[2] == "rw-p" and prev[3] and cur[2] == "---p" and cur[3]
                            and prev[1] == cur[0] and cur[1] - prev[0] >= RESERVATION_MIN):
                        pool_kb += prev[4]
                elif first == "Rss:" and cur is not None:
                    cur[4] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return mapped, pool_kb


def command(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw = f.read().replace(b"\0", b" ").replace(b"\n", b" ").replace(b"\r", b" ")
            return raw.decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def descendants(root):
    kids = children_map()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def main():
    if len(sys.argv) == 3:
        lib_real = os.path.realpath(sys.argv[1])
        pid = int(sys.argv[2])
        r = smaps_pool_kb(pid, lib_real)
        if r is None:
            print("pool_rss.py: process %d is gone" % pid, file=sys.stderr)
            return 1
        print(pid, int(r[0]), r[1], command(pid))
        return 0
    if len(sys.argv) == 5 and sys.argv[2] == "--watch":
        lib_real = os.path.realpath(sys.argv[1])
        root = int(sys.argv[3])
        seen = {}
        stop = sys.argv[4] + ".stop"
        while os.path.exists("/proc/%d" % root) and not os.path.exists(stop):
            for pid in descendants(root):
                r = smaps_pool_kb(pid, lib_real)
                if r is None:
                    continue
                old = seen.setdefault(pid, [False, 0, 0, ""])
                old[0] = old[0] or r[0]
                old[1] = max(old[1], r[1])
                old[2] += 1
                old[3] = command(pid) or old[3]  # the latest command: a child may exec
            time.sleep(0.5)
        with open(sys.argv[4], "w") as f:
            for pid, (mapped, kb, samples, cmd) in sorted(seen.items()):
                f.write("%d %d %d %d %s\n" % (pid, int(mapped), kb, samples, cmd))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
