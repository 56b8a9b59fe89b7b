# SPDX-License-Identifier: MIT
"""The table of benchmarks: what each one runs at full and at quick scale, and its kind.

Kinds: "small" — every block is <= 512 bytes (pyalloc's pools); "large" — includes blocks past
512 (the passthrough to the system allocator); "real" — a real program; "reference" — a row run
under glibc only, for comparison (CPython on its own pymalloc); "memory" — judged by the RSS it
reports (spike, scattered eviction, idle) against its survivors-only run; out of the geomeans.
In argv, {bin} is the directory of the built benchmark programs and {root} the repository root.
"""
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Dict, List, Optional, Tuple

PYTHON = "/usr/bin/python3"  # Debian's 3.11, not a python3 that PATH may put first
SQLITE = "/usr/bin/sqlite3"
GXX = "/usr/bin/g++"  # Debian's g++ 12 (build-essential)


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str
    argv: Tuple[str, ...]
    quick_argv: Optional[Tuple[str, ...]]  # None: not part of --quick
    stdin: Optional[str] = None  # a path under {root}
    env: Dict[str, str] = field(default_factory=dict)
    only: Optional[Tuple[str, ...]] = None  # allocators it runs under; None: all
    checksum_group: Optional[str] = None  # benchmarks whose output must agree; default: itself
    about: str = ""
    default: bool = True  # in the suite when no --benchmarks names it; False: run only by name

    @property
    def group(self) -> str:
        return self.checksum_group or self.name

    def command(self, quick: bool, bin_dir: str, root: str) -> List[str]:
        argv = self.quick_argv if quick else self.argv
        return [a.format(bin=bin_dir, root=root) for a in argv]


def _c(name, kind, args, quick_args, about, default=True):
    return Benchmark(name, kind, ("{bin}/" + args[0],) + tuple(args[1:]),
                     ("{bin}/" + quick_args[0],) + tuple(quick_args[1:]), about=about, default=default)


def _python(name, kind, script, scale, quick_scale, env, group, only=None, about=""):
    path = "{root}/bench/py/" + script
    return Benchmark(name, kind, (PYTHON, path, scale), (PYTHON, path, quick_scale), env=env,
                     only=only, checksum_group=group, about=about)


def _gxx():
    # -S -o -: the assembly is the output, hashed as the checksum (no checksum= line): every
    # allocator must make g++ emit the same code. -frandom-seed keeps it reproducible.
    return (GXX, "-std=c++17", "-O2", "-frandom-seed=pyalloc", "-S", "-o", "-", "{root}/bench/cxx/unit.cpp")


def _evict(name, args, group, about, default=True):
    """bench/evict (C; SCALE in args becomes its scale) and bench/py/cache.py (Python,
    PYTHONMALLOC=malloc): memory after eviction."""
    if args[0] == "cache":
        script = ("{root}/bench/py/cache.py",) + tuple(args[1:])
        return Benchmark(name, "memory", (PYTHON,) + script, (PYTHON,) + script + ("--scale", "0.05"),
                         env={"PYTHONMALLOC": "malloc"}, checksum_group=group, about=about, default=default)
    args = ["{scale}" if a == "SCALE" else a for a in args[1:]]
    return Benchmark(name, "memory", ("{bin}/evict",) + tuple(a.replace("{scale}", "1") for a in args),
                     ("{bin}/evict",) + tuple(a.replace("{scale}", "0.05") for a in args),
                     checksum_group=group, about=about, default=default)


def _sqlite(scale):
    return (SQLITE, "-batch", "-cmd", ".parameter set @scale %s" % scale, ":memory:")


BENCHMARKS: List[Benchmark] = [
    _c("churn-1k", "small", ["churn", "4", "1000"], ["churn", "0.05", "1000"],
       "1 thread, 1000 live blocks of 8..512 B, random replace (cache-resident)"),
    _c("churn-1m", "small", ["churn", "0.2", "1000000"], ["churn", "0.01", "100000"],
       "1 thread, 1M live blocks of 8..512 B, random replace (cache-missing)"),
    _c("sweep-small", "small", ["sweep", "4", "small"], ["sweep", "0.05", "small"],
       "each size 8..512 (step 8) alone: batches of 1024 malloc'd, then freed scrambled"),
    _c("sweep-large", "large", ["sweep", "0.3", "large"], ["sweep", "0.02", "large"],
       "the same for 520, 600, 1024 and 4096 B (past 512: the passthrough)"),
    _c("trees", "small", ["trees", "18"], ["trees", "12"],
       "binary trees of 24-byte nodes built and torn down (binarytrees)"),
    _c("lists", "small", ["lists", "1"], ["lists", "0.1"],
       "64 linked lists of 16..128 B nodes: build, traverse, free"),
    _c("strhash", "small", ["strhash", "1"], ["strhash", "0.1"],
       "hash table of 8..64 B strings growing and shrinking with rehash"),
    _c("realloc", "large", ["realloc", "1"], ["realloc", "0.02"],
       "string builders and vectors realloc'd from 0 to 2..6 KB and back"),
    _c("prodcons", "small", ["prodcons", "1"], ["prodcons", "0.02"],
       "malloc on one thread, free on another (batches through a ring)"),
    _c("threads-1", "small", ["threads", "1", "1"], ["threads", "1", "0.02"],
       "1 thread churning its own blocks"),
    _c("threads-2", "small", ["threads", "2", "1"], ["threads", "2", "0.02"],
       "2 threads churning their own blocks (same total work)"),
    _c("threads-4", "small", ["threads", "4", "1"], ["threads", "4", "0.02"],
       "4 threads churning their own blocks on 2 cores (same total work)"),
    _c("larson", "small", ["larson", "1", "4"], ["larson", "0.1", "4"],
       "rounds of 4 fresh threads replacing blocks that exited threads allocated"),
    _c("larson-mixed", "large", ["larson", "1", "2", "8", "1000", "chain"],
       ["larson", "0.125", "2", "8", "1000", "chain"],
       "Larson's server: 2 chains of threads replacing 8..1000 B blocks, each thread replaced by the next"),
    _c("larson-small", "small", ["larson", "1", "2", "8", "512", "chain"],
       ["larson", "0.125", "2", "8", "512", "chain"],
       "larson-mixed's small half alone: 8..512 B (only by name)", default=False),
    _c("larson-large", "large", ["larson", "1", "2", "513", "1000", "chain"],
       ["larson", "0.125", "2", "513", "1000", "chain"],
       "larson-mixed's large half alone: 513..1000 B (only by name)", default=False),
    _c("rptest", "large", ["rptest", "1", "2"], ["rptest", "0.02", "2"],
       "rpmalloc's pattern: 2 threads, 16..16000 B falling off, batches freed by the other thread"),
    _c("mstress", "large", ["mstress", "1", "2"], ["mstress", "0.05", "2"],
       "mimalloc's stress: fresh threads allocate mixed sizes, keep some, swap some through a shared table"),
    _c("footprint", "small", ["footprint", "1"], ["footprint", "0.05"],
       "2M blocks of 16..256 B allocated then freed: RSS before, at peak, after"),
    _c("idle-small", "small", ["idle", "small", "1"], ["idle", "small", "1", "0.05"],
       "2M blocks of 16..496 B freed, then 1.5 s with no allocator call: RSS after the spike, free, idle"),
    _c("idle-small-mt", "small", ["idle", "small", "4"], ["idle", "small", "4", "0.05"],
       "the same by 4 threads, which stay alive, blocked, while the process idles"),
    _c("idle-large", "large", ["idle", "large", "1"], ["idle", "large", "1", "0.05"],
       "200k blocks of 600..8000 B (glibc's side) freed scrambled, 1 in 16 kept, then 1.5 s idle"),
    _c("idle-large-mt", "large", ["idle", "large", "4"], ["idle", "large", "4", "0.05"],
       "the same by 4 threads, which stay alive, blocked, while the process idles"),
    Benchmark("idle-small-bg1", "small", ("{bin}/idle", "small", "1"), ("{bin}/idle", "small", "1", "0.05"),
              env={"PYALLOC_BACKGROUND": "1"}, only=("pyalloc", "pyalloc-a8"),
              about="idle-small with PYALLOC_BACKGROUND=1: the single-threaded program opts in"),
    Benchmark("idle-large-bg1", "large", ("{bin}/idle", "large", "1"), ("{bin}/idle", "large", "1", "0.05"),
              env={"PYALLOC_BACKGROUND": "1"}, only=("pyalloc", "pyalloc-a8"),
              about="idle-large with PYALLOC_BACKGROUND=1: the single-threaded program opts in"),
    _c("fastpath", "small", ["fastpath", "100000000"], ["fastpath", "1000000"],
       "malloc+free pairs over 256 live blocks of 8..512 B (also --callgrind)"),
    _python("python", "real", "objects.py", "1", "0.05", {"PYTHONMALLOC": "malloc"}, "python",
            about="CPython 3.11 objects.py with PYTHONMALLOC=malloc"),
    _python("python-pymalloc", "reference", "objects.py", "1", "0.05", {}, "python", only=("glibc",),
            about="CPython 3.11 objects.py on its own pymalloc (reference, glibc only)"),
    _python("python-web", "real", "web.py", "1", "0.05", {"PYTHONMALLOC": "malloc"}, "python-web",
            about="CPython 3.11 web.py (request loop: parse, dicts, json) with PYTHONMALLOC=malloc"),
    _python("python-web-pymalloc", "reference", "web.py", "1", "0.05", {}, "python-web", only=("glibc",),
            about="CPython 3.11 web.py on its own pymalloc (reference, glibc only)"),
    _python("python-text", "real", "textproc.py", "1", "0.05", {"PYTHONMALLOC": "malloc"}, "python-text",
            about="CPython 3.11 textproc.py (short strings: split, strip, join, counting) with PYTHONMALLOC=malloc"),
    _python("python-text-pymalloc", "reference", "textproc.py", "1", "0.05", {}, "python-text", only=("glibc",),
            about="CPython 3.11 textproc.py on its own pymalloc (reference, glibc only)"),
    _evict("evict", ["evict", "evict", "SCALE"], "evict-1",
           "C: 4M blocks of 16..512 B, 90 % then 99 % freed at random, 1.5 s idle after each: RSS"),
    _evict("evict-survivors-10", ["evict", "survivors", "10", "SCALE"], "evict-10",
           "C: only the blocks evict keeps at 90 % (its reference)"),
    _evict("evict-survivors-1", ["evict", "survivors", "1", "SCALE"], "evict-1",
           "C: only the blocks evict keeps at 99 % (its reference)"),
    _evict("evict-trim", ["evict", "evict", "SCALE", "0", "trim"], "evict-1",
           "the same, calling malloc_trim(0) after each eviction (pyalloc then repacks at once)"),
    _evict("cache", ["cache", "evict"], "cache-1",
           "CPython dict cache of 1M records, 90 % then 99 % deleted at random, 1.5 s idle: RSS"),
    _evict("cache-survivors-10", ["cache", "survivors", "10"], "cache-10",
           "CPython: only the records cache keeps at 90 % (its reference)"),
    _evict("cache-survivors-1", ["cache", "survivors", "1"], "cache-1",
           "CPython: only the records cache keeps at 99 % (its reference)"),
    _evict("cache-trim", ["cache", "evict", "--trim"], "cache-1",
           "the same, calling malloc_trim(0) after each deletion step"),
    _evict("cache-list", ["cache", "evict", "--list"], "cache-list-1",
           "the same cache as a list (no dict table that never shrinks; only by name)", default=False),
    _evict("cache-list-survivors-10", ["cache", "survivors", "10", "--list"], "cache-list-10",
           "CPython: only the records cache-list keeps at 90 % (its reference)", default=False),
    _evict("cache-list-survivors-1", ["cache", "survivors", "1", "--list"], "cache-list-1",
           "CPython: only the records cache-list keeps at 99 % (its reference)", default=False),
    Benchmark("sqlite", "real", _sqlite(1), _sqlite(0.05), stdin="{root}/bench/sql/workload.sql",
              about="sqlite3 CLI, in-memory: CTE inserts, indexes, GROUP BY, joins"),
    Benchmark("gcc", "real", _gxx(), None,
              about="g++ 12 -O2 -S of bench/cxx/unit.cpp (std headers, template instances)"),
]

KINDS = ("small", "large", "real", "reference", "memory")


def select(patterns: Optional[str]) -> List[Benchmark]:
    """Benchmarks matching a comma-separated list of names or globs (threads-*); if None, every
    one in the default suite."""
    if not patterns:
        return [b for b in BENCHMARKS if b.default]
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    unknown = [p for p in wanted if not any(fnmatch(b.name, p) for b in BENCHMARKS)]
    if unknown:
        raise SystemExit("unknown benchmark(s): %s (see --list)" % ", ".join(unknown))
    return [b for b in BENCHMARKS if any(fnmatch(b.name, p) for p in wanted)]
