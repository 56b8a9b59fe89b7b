#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Tests of `pyalloc stats --sites` (label "sites"), one CTest test per group:

  c        sites_prog leakpeak: leak_fn's two sites live at exit and at the peak, peak_fn's two at the
           peak only, each named with its file:line (built -g), each estimate (bytes, blocks) within
           5 standard errors of the known figure (the standard error worked out from the known sizes
           and counts, so a biased estimator or a broken sampling fails); the folded stacks parsed;
           the same under a plain LD_PRELOAD with PYALLOC_SITES=1, its data file (default name) read
           by tools/pyalloc_sites.py on its own
  frames   sites_prog frames LIB, built -O2 -fomit-frame-pointer: whole stacks through a library
           opened with dlopen, a realigned frame (CFA as a DWARF expression), a frame of run-time size
  python   sites_py.py on Debian's python3.11 with PYTHONMALLOC=malloc: the Python functions and lines
           of the leak and the peak, their estimates within tolerance, the folded stacks
  refuse   a program that exports _PyRuntime and Py_Version of 3.12: its Python frames are refused
           with a reason, its native frames still reported

usage: test_sites.py --build DIR --prog PROG --lib LIB --fake-python PROG --source DIR --work DIR GROUP
Python 3 standard library only.
"""
import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import unittest

A = None
TIMEOUT = 300
PYTHON = "/usr/bin/python3.11"  # Debian's: pyframes.c reads 3.11's frames


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYALLOC_") and k not in ("LD_PRELOAD", "PYTHONMALLOC")}
    env.update(extra)
    return env


def marker_line(path, name):
    """The line of path that carries SITE:name."""
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if re.search(r"SITE:%s\b" % re.escape(name), line):
                return i
    raise AssertionError("no SITE:%s in %s" % (name, path))


def expected(parts, rate):
    """(bytes, blocks, tolerance of bytes, tolerance of blocks) of allocations parts = [(size, count)]:
    each sampled with p = 1 - exp(-size / rate) and weighted size / p, the estimate of the bytes has
    variance sum count size^2 (1 - p) / p, of the blocks sum count (1 - p) / p; the tolerance is 5
    standard errors, plus a byte per sample for the weights' rounding."""
    b = n = vb = vn = samples = 0.0
    for size, count in parts:
        p = -math.expm1(-size / rate)
        b += size * count
        n += count
        vb += count * size * size * (1 - p) / p
        vn += count * (1 - p) / p
        samples += count * p
    return b, n, 5 * math.sqrt(vb) + samples, 5 * math.sqrt(vn) + 1


def stats_sites(argv, rate, extra_env=None, folded=None, folded_leaks=None):
    """Runs pyalloc stats --sites --json on argv; returns the report's "sites" member."""
    args = [A.command, "stats", "--sites", "--json", "--sample-bytes", str(rate), "-o", "-"]
    if folded:
        args += ["--folded", folded]
    if folded_leaks:
        args += ["--folded-leaks", folded_leaks]
    r = subprocess.run(args + ["--"] + argv, env=clean_env(**(extra_env or {})), capture_output=True, text=True,
                       timeout=TIMEOUT, cwd=A.work)
    if r.returncode != 0:
        raise AssertionError("pyalloc stats failed (exit %d):\n%s\n%s" % (r.returncode, r.stdout[-2000:], r.stderr[-4000:]))
    doc = json.loads(r.stdout)
    assert "sites" in doc, "no sites in the report: %s" % r.stderr
    return doc["sites"]


def find_site(section, file_tail, line):
    for s in section["sites"]:
        if s.get("file", "").endswith(file_tail) and s.get("line") == line:
            return s
    return None


def read_folded(path):
    """[(frames root first, bytes)] of a folded-stacks file; every line must parse."""
    out = []
    with open(path) as f:
        for ln in f:
            ln = ln.rstrip("\n")
            stack, _, count = ln.rpartition(" ")
            assert stack and count.isdigit(), "not a folded-stack line: %r" % ln
            out.append((stack.split(";"), int(count)))
    return out


class Case(unittest.TestCase):
    maxDiff = None

    def near(self, site, parts, rate, what):
        want_b, want_n, tol_b, tol_n = expected(parts, rate)
        self.assertIsNotNone(site, "%s: no such site" % what)
        self.assertLessEqual(abs(site["bytes"] - want_b), tol_b,
                             "%s: %d bytes estimated, %d allocated (tolerance %d)" % (what, site["bytes"], want_b, tol_b))
        self.assertLessEqual(abs(site["blocks"] - want_n), tol_n,
                             "%s: %d blocks estimated, %d allocated (tolerance %d)" % (what, site["blocks"], want_n, tol_n))

    def callers(self, site, names):
        """The site's heaviest stack goes through names, in this order, right after the site."""
        got = [f["function"] for f in site["stack"]]
        self.assertEqual(got[:len(names)], names, "stack of %s: %s" % (site["function"], got))


# ---- C ------------------------------------------------------------------------------------------

class C(Case):
    RATE = 2048

    def test_leak_and_peak(self):
        src = os.path.join(A.source, "tests", "sites", "sites_prog.c")
        folded, leaks = os.path.join(A.work, "peak.folded"), os.path.join(A.work, "leaks.folded")
        sites = stats_sites([A.prog, "leakpeak"], self.RATE, folded=folded, folded_leaks=leaks)
        lines = {k: marker_line(src, k) for k in ("leak_small", "leak_large", "peak_small", "peak_large")}
        sizes = {"leak_small": (104, 200000), "leak_large": (4000, 5000),
                 "peak_small": (200, 200000), "peak_large": (8000, 5000)}
        fn = {"leak_small": "leak_fn", "leak_large": "leak_fn", "peak_small": "peak_fn", "peak_large": "peak_fn"}
        self.assertEqual(sites["sample_bytes"], self.RATE)
        self.assertIsNone(sites["python"])
        for key, line in lines.items():
            s = find_site(sites["peak"], "sites_prog.c", line)
            self.near(s, [sizes[key]], self.RATE, "live at the peak, %s" % key)
            self.assertEqual(s["function"], fn[key])
            self.callers(s, [fn[key], "main"])
            s = find_site(sites["exit"], "sites_prog.c", line)
            if key.startswith("leak"):
                self.near(s, [sizes[key]], self.RATE, "live at exit, %s" % key)
            else:
                self.assertIsNone(s, "%s is freed before exit: %s" % (key, s))
            s = find_site(sites["allocated"], "sites_prog.c", line)
            self.near(s, [sizes[key]], self.RATE, "allocated, %s" % key)
        # the folded stacks: every line parses, the bytes add up to the section's, main calls the sites
        for path, sec, names in ((folded, sites["peak"], ("leak_fn", "peak_fn")), (leaks, sites["exit"], ("leak_fn",))):
            stacks = read_folded(path)
            self.assertEqual(sum(b for _, b in stacks), sec["bytes"], path)
            for name in names:
                hits = [(st, b) for st, b in stacks if st[-1].startswith(name + " (sites_prog.c:")]
                self.assertTrue(hits, "%s: no stack ending in %s" % (path, name))
                for st, _ in hits:
                    self.assertTrue(st[-2].startswith("main (sites_prog.c:"), st)
        self.assertFalse([st for st, _ in read_folded(leaks) if st[-1].startswith("peak_fn")])

    def test_without_the_command(self):
        """PYALLOC_SITES=1 under a plain LD_PRELOAD: the data goes to pyalloc-sites.<pid> in the working
        directory, and tools/pyalloc_sites.py reports it."""
        lib = subprocess.run([A.command, "lib"], capture_output=True, text=True, check=True).stdout.strip()
        d = os.path.join(A.work, "plain")
        os.makedirs(d)
        p = subprocess.Popen([A.prog, "leakpeak"], cwd=d, env=clean_env(LD_PRELOAD=lib, PYALLOC_SITES="1",
                                                                        PYALLOC_SAMPLE_BYTES=str(self.RATE)))
        self.assertEqual(p.wait(timeout=TIMEOUT), 0)
        data = os.path.join(d, "pyalloc-sites.%d" % p.pid)
        self.assertEqual(os.listdir(d), [os.path.basename(data)])
        r = subprocess.run([sys.executable, os.path.join(A.source, "tools", "pyalloc_sites.py"), "--json", data],
                           capture_output=True, text=True, timeout=TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr)
        sites = json.loads(r.stdout)
        src = os.path.join(A.source, "tests", "sites", "sites_prog.c")
        s = find_site(sites["exit"], "sites_prog.c", marker_line(src, "leak_large"))
        self.near(s, [(4000, 5000)], self.RATE, "live at exit, leak_large, without the command")
        r = subprocess.run([sys.executable, os.path.join(A.source, "tools", "pyalloc_sites.py"), data],
                           capture_output=True, text=True, timeout=TIMEOUT)
        self.assertIn("leak_fn (sites_prog.c:%d)" % marker_line(src, "leak_large"), r.stdout)
        with open(data) as f:
            self.assertIsNone(re.search(r"[^\x20-\x7e\n]", f.read()), "the data file is printable ASCII")


class Frames(Case):
    RATE = 4096

    def test_stacks_without_frame_pointers(self):
        src = os.path.join(A.source, "tests", "sites")
        sites = stats_sites([A.prog, "frames", A.lib], self.RATE)
        ex = sites["exit"]
        s = find_site(ex, "sites_lib.c", marker_line(os.path.join(src, "sites_lib.c"), "lib_leak"))
        self.near(s, [(1000, 20000)], self.RATE, "lib_leak (a library opened with dlopen)")
        self.callers(s, ["lib_leak", "chain_c", "chain_b", "chain_a", "main"])
        prog = os.path.join(src, "sites_prog.c")
        s = find_site(ex, "sites_prog.c", marker_line(prog, "realign"))
        self.near(s, [(600, 20000)], self.RATE, "realign_fn (CFA by a DWARF expression)")
        self.callers(s, ["realign_fn", "main"])
        s = find_site(ex, "sites_prog.c", marker_line(prog, "alloca"))
        self.near(s, [(700, 20000)], self.RATE, "alloca_fn (a frame of run-time size)")
        self.callers(s, ["alloca_fn", "main"])
        # below main, the C library's start-up frames: the walk went all the way
        self.assertIn("__libc_start_call_main", [f["function"] for f in s["stack"]])


# ---- Python -------------------------------------------------------------------------------------

class Python(Case):
    RATE = 4096

    def test_python_functions_and_lines(self):
        script = os.path.join(A.source, "tests", "sites", "sites_py.py")
        folded = os.path.join(A.work, "py.folded")
        sites = stats_sites([PYTHON, script], self.RATE, extra_env={"PYTHONMALLOC": "malloc"}, folded=folded)
        self.assertEqual(sites["python"], "3.11")
        leak_line, peak_line = marker_line(script, "py_leak"), marker_line(script, "py_peak")
        leak = [(1033 + k, len(range(k, 20000, 3))) for k in range(3)]
        peak = [(1533, 40000)]
        # The list that holds them grows at the same line: at most 8 bytes a slot, 1/8 spare.
        lists = {"leak": 8 * 20000 * 9 // 8 + 1024, "peak": 8 * 40000 * 9 // 8 + 1024}
        for section in ("peak", "exit"):
            s = find_site(sites[section], script, leak_line)
            self.assertIsNotNone(s, "%s: no site at %s:%d" % (section, script, leak_line))
            self.assertEqual(s["function"], "leak")
            self.assertTrue(s["python"])
            want_b, _, tol_b, _ = expected(leak, self.RATE)
            self.assertLessEqual(abs(s["bytes"] - want_b - lists["leak"] / 2), tol_b + lists["leak"] / 2,
                                 "%s, leak: %d estimated, %d allocated" % (section, s["bytes"], want_b))
            self.assertEqual([f["function"] for f in s["stack"] if f.get("python")], ["leak", "<module>"])
        s = find_site(sites["peak"], script, peak_line)
        self.assertIsNotNone(s, "no peak site at %s:%d" % (script, peak_line))
        self.assertEqual(s["function"], "peak")
        want_b, _, tol_b, _ = expected(peak, self.RATE)
        self.assertLessEqual(abs(s["bytes"] - want_b - lists["peak"] / 2), tol_b + lists["peak"] / 2,
                             "peak: %d estimated, %d allocated" % (s["bytes"], want_b))
        self.assertIsNone(find_site(sites["exit"], script, peak_line), "peak()'s objects are gone at exit")
        self.assertEqual(sites["exit"]["source"], "python-finalize")
        stacks = read_folded(folded)
        self.assertEqual(sum(b for _, b in stacks), sites["peak"]["bytes"])
        for call, line, name in (("py_call_leak", leak_line, "leak"), ("py_call_peak", peak_line, "peak")):
            want = ["<module> (%s:%d)" % (script, marker_line(script, call)), "%s (%s:%d)" % (name, script, line)]
            self.assertTrue(any(want[0] in st and st.index(want[0]) + 1 < len(st) and st[st.index(want[0]) + 1] == want[1]
                                for st, _ in stacks), "no folded stack with %s" % ";".join(want))


class Refuse(Case):
    def test_unknown_python_version(self):
        sites = stats_sites([A.fake_python], 4096)
        self.assertIn("unsupported", sites["python"])
        self.assertIn("3.12.1", sites["python"])
        s = sites["exit"]["sites"][0]
        self.assertEqual(s["function"], "fake_alloc")
        self.near(s, [(3000, 2000)], 4096, "fake_alloc")


GROUPS = {"c": [C], "frames": [Frames], "python": [Python], "refuse": [Refuse]}


def main():
    global A
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", required=True, help="the build tree (its pyalloc command is run)")
    p.add_argument("--source", required=True)
    p.add_argument("--prog", required=True, help="sites_prog")
    p.add_argument("--lib", required=True, help="sites_lib (for dlopen)")
    p.add_argument("--fake-python", required=True, help="sites_fake_python")
    p.add_argument("--work", required=True)
    p.add_argument("group", choices=sorted(GROUPS))
    A = p.parse_args()
    A.command = os.path.join(A.build, "pyalloc")
    A.work = os.path.abspath(os.path.join(A.work, A.group))
    shutil.rmtree(A.work, ignore_errors=True)
    os.makedirs(A.work)
    suite = unittest.TestSuite()
    for cls in GROUPS[A.group]:
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    ok = unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
