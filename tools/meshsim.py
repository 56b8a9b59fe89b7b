#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""meshsim.py: what compaction without moving blocks could reach on a dump of pyalloc's pages.

A library built with -DPYALLOC_DEBUG_DUMP=ON writes, with PYALLOC_DUMP=path, every page's class,
resident 4 KiB parts and live-block bitmap at exit (src/dump.c); bench/evict and bench/py/cache.py
take a `stop` argument that exits with the survivors alive. This tool reads such a dump and prints,
for each strategy, the memory the process would hold (its memory outside pyalloc's pages, as
measured, plus the 4 KiB frames the strategy keeps), its ratio to a reference (the survivors-only
run's RSS), the VMAs it needs and the search work it did. Strategies:

  holes    4 KiB regions with no live byte given back (MADV_DONTNEED); no VMA
  perfect  live bytes alone, rounded to 4 KiB: no allocator can do better
  ideal    every region onto the fullest frame its live 8-byte words fit (exhaustive, densest
           first), with no VMA limit: the best any 4 KiB meshing reaches (KSM-like)
  single   the heap mapped from a memfd at identity offsets; single regions move onto frames they
           fit (first fit); each moved region is its own VMA unless its neighbours line up
  page     the same with whole pages (Mesh): a page moves onto a page whose regions all fit
  lanes    regions in address order lay consecutive frames; a region rides the next frame of its
           run when it fits (no new VMA), else a run starts where the frames take the longest
           stretch of the next regions (exhaustive search by bitsets over frames), or on fresh
           frames; each run one VMA (what src/mesh.c does, with probing instead)
  probeK   lanes, trying K random frames for a new run, as src/mesh.c does (K = 256 there)

usage: meshsim.py DUMP REFERENCE_KB [STRATEGIES [BUDGETS]]
  STRATEGIES comma-separated (default holes,perfect,lanes,probe256); BUDGETS VMAs (16000,32000,60000)
Python 3 standard library only; big ints serve as bitsets. A 190k-region dump takes minutes.
"""
import random
import sys
import time

REGION = 4096
WORDS = REGION // 8  # one bit per 8-byte word of a region


def bits_of(x):
    out = []
    while x:
        b = x & -x
        out.append(b.bit_length() - 1)
        x ^= b
    return out


class Dump:
    """The pages of a PYALLOC_DUMP file, as regions: {page * rpp + r: live-word bitmap}."""

    def __init__(self, path):
        self.regions = {}
        self.live_bytes = 0
        inuse_res = free_res = 0
        with open(path) as f:
            head = f.readline().split()
            if head[:2] != ["pyalloc-dump", "1"]:
                raise SystemExit("%s: not a pyalloc dump" % path)
            meta = dict(kv.split("=") for kv in head[2:])
            rpp = int(meta["page"]) // REGION
            for line in f:
                p = line.split()
                if p[0] == "R":
                    free_res += bin(int(p[2])).count("1")
                    continue
                idx, bsize, res = int(p[1]), int(p[3]), int(p[6])
                inuse_res += bin(res).count("1")
                words = [0] * rpp
                for d, ch in enumerate(p[-1]):
                    v = int(ch, 16)
                    for b in range(4):
                        if not (v >> b) & 1:
                            continue
                        off = (d * 4 + b) * bsize
                        self.live_bytes += bsize
                        for w in range(off // 8, (off + bsize) // 8):
                            words[w // WORDS] |= 1 << (w % WORDS)
                for r in range(rpp):
                    self.regions[idx * rpp + r] = words[r]
        self.rpp = rpp
        self.rss_kb = int(meta["rss_kb"])
        self.inuse_res = inuse_res
        # the process's memory outside pyalloc's pages: interpreter, glibc's heap, the program's tables
        self.base_kb = self.rss_kb - 4 * (inuse_res + free_res)


class Frames:
    """Frame occupancies, and per word the set of frames where it is free (a big int)."""

    def __init__(self, cap):
        self.occ = [0] * cap
        self.cnt = [0] * cap
        self.all = (1 << cap) - 1
        self.free = [self.all] * WORDS
        self.ops = 0

    def fits(self, x):
        c = self.all
        for s in bits_of(x):
            c &= self.free[s]
        self.ops += bin(x).count("1")
        return c

    def put(self, f, x):
        self.occ[f] |= x
        self.cnt[f] += 1
        clear = ~(1 << f)
        for s in bits_of(x):
            self.free[s] &= clear

    def take(self, f, x):
        self.occ[f] &= ~x
        self.cnt[f] -= 1
        bit = 1 << f
        for s in bits_of(x):
            self.free[s] |= bit

    def resident(self):
        return sum(1 for c in self.cnt if c)


def ordered(d):
    keys = sorted(d.regions)
    b = [d.regions[k] for k in keys]
    adj = [i + 1 < len(keys) and keys[i + 1] == keys[i] + 1 for i in range(len(keys))]
    return keys, b, adj


def ideal(d):
    regs = sorted((x for x in d.regions.values() if x), key=lambda x: -bin(x).count("1"))
    fr = Frames(len(regs))
    used, nz, fill = 0, 0, {}
    for x in regs:
        c = fr.fits(x) & nz
        f, best = None, -1
        for _ in range(32):
            if not c:
                break
            g = (c & -c).bit_length() - 1
            c &= c - 1
            if fill[g] > best:
                best, f = fill[g], g
        if f is None:
            f, used = used, used + 1
            nz |= 1 << f
            fill[f] = 0
        fr.put(f, x)
        fill[f] += bin(x).count("1")
    return used, 0, fr.ops


def identity(d, budget, whole_pages):
    """single / page: the heap at identity offsets; regions (or whole pages) move onto frames."""
    keys, b, adj = ordered(d)
    n = len(keys)
    fr = Frames(n)
    for p, x in enumerate(b):
        if x:
            fr.put(p, x)
    frame = list(range(n))
    moved = [False] * n
    nonempty = sum(1 << p for p, x in enumerate(b) if x)

    def boundary(p):
        if p < 0 or p + 1 >= n:
            return 0
        if not adj[p]:
            return int(moved[p] or moved[p + 1])
        return int(frame[p + 1] != frame[p] + 1)

    vmas = 0
    unit = d.rpp if whole_pages else 1
    aligned = sum(1 << p for p in range(n) if keys[p] % d.rpp == 0) if whole_pages else fr.all
    for v in range(0, n, 1):
        if vmas >= budget:
            break
        if whole_pages and (keys[v] % d.rpp or v + unit > n or not all(adj[v:v + unit - 1])):
            continue
        span = range(v, v + unit)
        if not any(b[p] for p in span) or any(b[p] and (moved[p] or fr.cnt[p] != 1) for p in span):
            continue
        c = aligned & nonempty & ~(1 << v)
        for i, p in enumerate(span):
            if b[p]:
                c &= fr.fits(b[p]) >> i
        if not c:
            continue
        f = (c & -c).bit_length() - 1
        before = sum(boundary(q) for q in range(v - 1, v + unit))
        for i, p in enumerate(span):
            if b[p]:
                fr.take(p, b[p])
                nonempty &= ~(1 << p)
                fr.put(f + i, b[p])
            frame[p], moved[p] = f + i, True
        vmas += sum(boundary(q) for q in range(v - 1, v + unit)) - before
    return fr.resident(), vmas, fr.ops


def lanes(d, budget, probes=None, lookahead=32, jump=4, seed=1):
    keys, b, adj = ordered(d)
    n = len(keys)
    fr = Frames(n + 64)
    rng = random.Random(seed)
    withc, nz = [], 0
    top = runs = unmerged = 0
    cur = None
    for p in range(n):
        x = b[p]
        if not x:
            cur = cur + 1 if (cur is not None and adj[p]) else None
            continue
        cont = cur is not None and not (fr.occ[cur] & x)
        if cont and fr.cnt[cur]:
            f = cur
        else:
            f = None
            if runs < budget and withc:
                best, bestf = 0, None
                if probes is None:  # every frame at once, by bitsets
                    c, k = fr.fits(x) & nz, 1
                    while c:
                        bestf, best = (c & -c).bit_length() - 1, k
                        if k >= lookahead or p + k >= n or not adj[p + k - 1]:
                            break
                        if b[p + k]:
                            c &= (fr.fits(b[p + k]) & nz) >> k
                        k += 1
                else:
                    for _ in range(probes):
                        g = withc[rng.randrange(len(withc))]
                        k = 0
                        while k < lookahead and g + k < top:
                            y = b[p + k]
                            fr.ops += 1
                            if y and (fr.occ[g + k] & y or not fr.cnt[g + k]):
                                break
                            k += 1
                            if p + k >= n or not adj[p + k - 1]:
                                break
                        if k > best:
                            best, bestf = k, g
                if best >= (jump if cont else 1):
                    f = bestf
                    runs += 1
            if f is None:
                if cont:
                    f = cur
                elif runs < budget:
                    f, runs = top, runs + 1
                else:
                    unmerged += 1
                    cur = None
                    continue
        if not fr.cnt[f]:
            withc.append(f)
            nz |= 1 << f
        fr.put(f, x)
        top = max(top, f + 1)
        cur = f + 1 if adj[p] else None
    return fr.resident() + unmerged, runs, fr.ops


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    d = Dump(argv[0])
    ref_kb = float(argv[1])
    names = argv[2].split(",") if len(argv) > 2 else ["holes", "perfect", "lanes", "probe256"]
    budgets = [int(x) for x in argv[3].split(",")] if len(argv) > 3 else [16000, 32000, 60000]
    nonempty = sum(1 for x in d.regions.values() if x)
    print("%s: %d regions (%d with live bytes), %.1f MB live, %.1f MB outside pyalloc's pages; "
          "reference %.1f MB" % (argv[0], len(d.regions), nonempty, d.live_bytes / 2**20, d.base_kb / 1024,
                                 ref_kb / 1024))
    print("| strategy | budget | memory | ratio | VMAs | search work | time |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def row(name, budget, frames, vmas, ops, secs):
        kb = d.base_kb + 4 * frames
        print("| %s | %s | %.1f MB | %.2fx | %s | %s | %.0f s |" % (
            name, budget, kb / 1024, kb / ref_kb, vmas, ops, secs))
        sys.stdout.flush()

    row("pages in use, resident", "-", d.inuse_res, 0, 0, 0)
    for name in names:
        t0 = time.time()
        if name == "holes":
            row(name, "-", nonempty, 0, 0, 0)
        elif name == "perfect":
            row(name, "-", d.live_bytes / REGION, 0, 0, 0)
        elif name == "ideal":
            frames, vmas, ops = ideal(d)
            row(name, "-", frames, "-", "%d bitset ANDs" % ops, time.time() - t0)
        else:
            for budget in budgets:
                t0 = time.time()
                if name in ("single", "page"):
                    frames, vmas, ops = identity(d, budget, name == "page")
                    work = "%d bitset ANDs" % ops
                elif name == "lanes":
                    frames, vmas, ops = lanes(d, budget)
                    work = "%d bitset ANDs" % ops
                elif name.startswith("probe"):
                    frames, vmas, ops = lanes(d, budget, probes=int(name[5:]))
                    work = "%d region tests" % ops
                else:
                    raise SystemExit("unknown strategy %s" % name)
                row(name, budget, frames, vmas, work, time.time() - t0)


if __name__ == "__main__":
    main(sys.argv[1:])
