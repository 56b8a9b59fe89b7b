#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Runs the pyalloc benchmark suite against glibc malloc and the other allocators.

Every benchmark runs under every allocator (selected with LD_PRELOAD, proved by a probe first),
round after round; each round rotates which allocator goes first, so drift of the machine hits
all alike. Wall time and peak RSS come from wait4. Every run's checksum must equal glibc's for
that benchmark; a mismatch or a crash is reported loudly and makes the exit status non-zero.

  bench/run.py                       full suite, 3 rounds, results in bench/results/<date-time>/
  bench/run.py --quick               small subset at small scale, 1 round: checksums only
  bench/run.py --callgrind           instructions per malloc+free pair (bench/fastpath)
  bench/run.py --list                the benchmarks
  bench/run.py --benchmarks 'churn-*,trees' --allocators pyalloc,mimalloc --rounds 5

Python 3 standard library only. scripts/bench.sh installs what is needed and builds first.
"""
import argparse
import datetime
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))  # pyalloc_common, shared with the pyalloc command
sys.dont_write_bytecode = True  # no __pycache__ left in the source tree

from runner import allocators, benchmarks, callgrind, chart, report  # noqa: E402
from runner.execute import build_library_variant, build_programs, run_once  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# Run from the source tree, or installed (<datadir>/pyalloc, no CMakeLists.txt) for `pyalloc bench`.
IN_SOURCE_TREE = os.path.isfile(os.path.join(ROOT, "CMakeLists.txt"))


def parse_args(argv):
    # `pyalloc bench` gives --pyalloc-lib and --bench-dir (unless its user does): in its --help they
    # are shown as the defaults they are for that command, not the source tree's.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--pyalloc-lib")
    pre.add_argument("--bench-dir")
    given, _ = pre.parse_known_args(argv)
    if given.pyalloc_lib:
        lib_default = given.pyalloc_lib
    elif IN_SOURCE_TREE:
        lib_default = os.path.join(ROOT, "build", "release", "libpyalloc.so")
    else:
        lib_default = None
    # Installed, it is run as `pyalloc bench`: its examples say so, with their true results folder.
    prog = "bench/run.py" if IN_SOURCE_TREE else "pyalloc bench"
    epilog = __doc__.split("\n\n")[2].replace("bench/results/<date-time>/", default_out("<date-time>") + "/")
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                epilog=epilog.replace("bench/run.py", prog),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a small subset at small scale, 1 round: checks checksums, reports no timings")
    p.add_argument("--callgrind", action="store_true",
                   help="instructions per malloc+free pair under valgrind's callgrind")
    p.add_argument("--callgrind-pairs", default="1000000,5000000", metavar="N1,N2",
                   help="the two pair counts whose difference is measured (default %(default)s)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--benchmarks", metavar="NAMES", help="comma-separated names or globs (default: all)")
    p.add_argument("--allocators", metavar="NAMES",
                   help="comma-separated: glibc,pyalloc,pyalloc-a8,mimalloc,jemalloc,tcmalloc, and "
                        "pyalloc-sites (allocation sites sampled; only when named) "
                        "(default: every one installed; glibc is always run, it is the reference)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per benchmark (default 3)")
    p.add_argument("--metric", choices=("wall", "cpu"), default="wall",
                   help="time shown in the table: wall clock, or user + system CPU (default wall)")
    p.add_argument("--out", metavar="DIR", help="results folder (default %s)" % default_out("<date-time>"))
    p.add_argument("--pyalloc-lib", default=lib_default, metavar="LIB",
                   help="the pyalloc library to preload (default %s)"
                        % (lib_default or "none: pyalloc and pyalloc-a8 are not run"))
    p.add_argument("--bench-dir", metavar="DIR", default=given.bench_dir,
                   help="the built benchmark programs (default %s)"
                        % (given.bench_dir or ("build %s into %s" % (HERE, os.path.join(ROOT, "build", "bench"))
                                               if IN_SOURCE_TREE else
                                               "none: give the directory of the installed programs")))
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before a run is killed")
    return p.parse_args(argv)


def default_out(stamp: str) -> str:
    """The results folder when --out is not given: bench/results/ of the source tree, or the current
    directory for an installed runner (its own directory belongs to the package)."""
    if IN_SOURCE_TREE:
        return os.path.join(HERE, "results", stamp)
    return os.path.join(os.getcwd(), "pyalloc-bench-" + stamp)


def list_benchmarks() -> None:
    for b in benchmarks.BENCHMARKS:
        quick = "" if b.quick_argv else "  (not in --quick)"
        print("%-16s %-9s %s%s" % (b.name, b.kind, b.about, quick))


def machine_meta(args) -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    glibc = " ".join(platform.libc_ver())
    return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "machine": "%s, %d CPUs, Linux %s, %s" % (cpu, os.cpu_count() or 0, platform.release(), glibc),
            "rounds": args.rounds, "metric": args.metric, "argv": sys.argv[1:],
            "load_start": os.getloadavg()[0]}


def warn_if_busy(when: str) -> None:
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cpus:
        log("warning: load average %.2f on %d CPUs %s: other work is running, timings will be noisy"
            % (load, cpus, when))


class Checker:
    """Compares each run's checksum with glibc's for the same output group; keeps failures."""

    def __init__(self):
        self.reference = {}  # checksum group -> glibc's checksum
        self.failures = []

    def status(self, bench, alloc_name: str, rnd: int, run) -> str:
        where = "%s under %s, round %d" % (bench.name, alloc_name, rnd)
        if run.timed_out:
            return self._fail("timeout", "TIMEOUT: %s" % where, run)
        if run.exit_code != 0:
            how = "killed by signal %d" % -run.exit_code if run.exit_code < 0 else "exit %d" % run.exit_code
            return self._fail("crash", "CRASH: %s: %s" % (where, how), run)
        ref = self.reference.get(bench.group)
        if ref is None and alloc_name == "glibc":
            self.reference[bench.group] = run.checksum
        elif ref is not None and run.checksum != ref:
            return self._fail("mismatch", "CHECKSUM MISMATCH: %s: %s, glibc gave %s" % (where, run.checksum, ref), run)
        return "ok"

    def recheck(self, records) -> None:
        """Runs that came before glibc's first run of their group are checked at the end."""
        for r in records:
            ref = self.reference.get(r["group"])
            if r["status"] == "ok" and ref is not None and r["checksum"] != ref:
                r["status"] = "mismatch"
                self._fail("mismatch", "CHECKSUM MISMATCH: %s under %s, round %d: %s, glibc gave %s"
                           % (r["benchmark"], r["allocator"], r["round"], r["checksum"], ref), None)

    def _fail(self, status: str, msg: str, run) -> str:
        self.failures.append(msg)
        log("!!! " + msg)
        if run is not None and run.stderr.strip():
            log("    stderr: " + run.stderr.strip()[-800:].replace("\n", "\n    "))
        return status


def run_suite(args, benches, allocs, bin_dir: str, out_dir: str) -> int:
    rounds = 1 if args.quick else args.rounds
    meta = machine_meta(args)
    if not args.quick:
        warn_if_busy("before the runs")
    checker = Checker()
    records = []
    measure = os.path.join(bin_dir, "measure")
    logs = os.path.join(out_dir, "logs") if out_dir else None
    if logs:
        os.makedirs(logs, exist_ok=True)
    for b in benches:
        runnable = [a for a in allocs if b.only is None or a.name in b.only]
        cmd = b.command(args.quick, bin_dir, ROOT)
        stdin = b.stdin.format(root=ROOT) if b.stdin else None
        for k in range(rounds):
            order = runnable[k % len(runnable):] + runnable[:k % len(runnable)]
            for a in order:
                log("[%s] %s round %d/%d ..." % (b.name, a.name, k + 1, rounds))
                run = run_once(measure, cmd, a.environ(b.env), stdin, args.timeout)
                status = checker.status(b, a.name, k + 1, run)
                records.append({"benchmark": b.name, "kind": b.kind, "group": b.group, "allocator": a.name,
                                "round": k + 1, "status": status, "wall_s": run.wall_s, "user_s": run.user_s,
                                "sys_s": run.sys_s, "maxrss_kb": run.maxrss_kb, "exit_code": run.exit_code,
                                "checksum": run.checksum, "results": run.results})
                if logs:
                    with open(os.path.join(logs, "%s.%s.stderr" % (b.name, a.name)), "w") as f:
                        f.write(run.stderr)
    checker.recheck(records)
    for g in sorted({b.group for b in benches} - set(checker.reference)):
        log("note: no glibc run for %s: its checksums were not compared" % g)

    if args.quick:
        return quick_report(records, checker.failures, out_dir)

    meta["load_end"] = os.getloadavg()[0]
    warn_if_busy("after the runs")
    summary = report.summarize(records, benches, allocs, args.metric)
    report.write_raw(os.path.join(out_dir, "raw.csv"), records)
    report.write_json(os.path.join(out_dir, "summary.json"), summary,
                      {**meta, "allocators": {a.name: {"lib": a.lib, "env": a.env, "probe": a.probe} for a in allocs},
                       "failures": checker.failures})
    text = report.write_markdown(os.path.join(out_dir, "summary.md"), summary, meta, allocs, checker.failures)
    print(text)
    log(chart.draw(out_dir, summary, [a.name for a in allocs],
                   "pyalloc benchmarks: time relative to glibc malloc (%s)" % meta["date"]))
    log("results: " + out_dir)
    return 1 if checker.failures else 0


def quick_report(records, failures, out_dir) -> int:
    if out_dir:
        report.write_raw(os.path.join(out_dir, "raw.csv"), records)
    allocs = list(dict.fromkeys(r["allocator"] for r in records))
    lines = ["| benchmark | " + " | ".join(allocs) + " |", "|---|" + "---|" * len(allocs)]
    for b in dict.fromkeys(r["benchmark"] for r in records):
        cells = {r["allocator"]: r["status"] for r in records if r["benchmark"] == b}
        lines.append("| %s | %s |" % (b, " | ".join(cells.get(a, "—") for a in allocs)))
    print("\n".join(lines))
    bad = [r for r in records if r["status"] != "ok"]
    print("\nquick: %d runs, %d ok, %d failed" % (len(records), len(records) - len(bad), len(bad)))
    for f in failures:
        print("FAILED: " + f)
    return 1 if bad else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        list_benchmarks()
        return 0
    benches = benchmarks.select(args.benchmarks)
    if args.quick:
        benches = [b for b in benches if b.quick_argv]
    lib = args.pyalloc_lib or "(no --pyalloc-lib given)"
    allocs = allocators.choose(allocators.table(lib), args.allocators, log)

    if not args.bench_dir and not IN_SOURCE_TREE:
        raise SystemExit("--bench-dir is needed: the benchmark programs are built from a source tree only "
                         "(pyalloc bench gives the installed ones)")
    bin_dir = args.bench_dir or build_programs(ROOT, os.path.join(ROOT, "build", "bench"), log)
    for a in allocs:
        allocators.verify(a, os.path.join(bin_dir, "probe"))
        log("preload ok: %s: %s" % (a.name, a.describe))

    out_dir = args.out
    if out_dir is None and not args.quick:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = default_out(stamp + ("-callgrind" if args.callgrind else ""))
    if out_dir:
        out_dir = os.path.abspath(out_dir)
        os.makedirs(out_dir, exist_ok=True)

    if args.callgrind:
        n1, n2 = (int(x) for x in args.callgrind_pairs.split(","))
        if not 0 <= n1 < n2:
            raise SystemExit("--callgrind-pairs: need 0 <= N1 < N2")
        if any(a.name == "pyalloc" for a in allocs) and not IN_SOURCE_TREE:
            log("note: no pyalloc-nostats row: it is built from a source tree only")
        elif any(a.name == "pyalloc" for a in allocs):
            # The same library without its statistics counters: what the counters cost per pair.
            lib = build_library_variant(ROOT, os.path.join(ROOT, "build", "release-nostats"),
                                                ["PYALLOC_STATS=OFF"], log)
            a = allocators.Allocator("pyalloc-nostats", lib, expect_align=16)
            allocators.verify(a, os.path.join(bin_dir, "probe"))
            allocs.insert([x.name for x in allocs].index("pyalloc") + 1, a)
        rows = callgrind.run(allocs, bin_dir, out_dir, n1, n2, log)
        print(callgrind.write(out_dir, rows, n1, n2, machine_meta(args)))
        log("results: " + out_dir)
        return 0
    return run_suite(args, benches, allocs, bin_dir, out_dir)


if __name__ == "__main__":
    sys.exit(main())
