#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Tests of the `pyalloc` command (tools/pyalloc), one group per CTest test:

  basic    --help, --version, usage errors (exit 2), library search order and its errors (125),
           gnuplot missing (125, names the package)
  run      run: --align 8 / default observed in a program (malloc_usable_size(malloc(24)) 24 / 32),
           options reach CMD as PYALLOC_*, LD_PRELOAD kept, exit status passed through (3, 128+N for
           a signal, signals sent to pyalloc forwarded), CMD not found 127 / not executable 126
  stats    stats: figures of a program whose allocations are known, JSON and text, both modes,
           --output, --all (a forked child), exit status, no report after SIGKILL, the report never
           on CMD's streams, output paths checked before CMD runs, processes that left no report
           named, Python objects counted (PYTHONMALLOC)
  report   the library's report without the command: the same text as stats, sizes in human units
           matching the JSON, reaching the user when the program closes stderr (cat), never
           written into a file that took fd 2, no descriptor held by a daemon, none taken unless
           asked for, started records of processes that leave no report
  figures  live bytes at exit, the peak and its time, the timeline's shape, of a C program and a Python
           program whose allocations are known (a peak in one function, a leak in another)
  top      top --once (--json) against running programs: their figures, a forked child's own; the
           live view in a pseudo-terminal; no such process (3), another user's (4, with setpriv as
           root), not pyalloc (5), not publishing (6), another layout (7), usage (2)
  plot     stats --plot: a PNG and an SVG drawn by gnuplot (memory over time, and per class)
  bench    bench: --help, --list, --quick on one small benchmark
  install  cmake --install into a scratch prefix: the installed copy finds its library (also moved
           elsewhere), knows its version, runs, and runs the installed benchmark runner
  man      docs/pyalloc.1: no groff warnings, renders with man -l, has every section, every option,
           command and PYALLOC_* variable; docs/command.md covers every command

usage: test_cli.py --source DIR --build DIR --lib LIB --prog PROG --work DIR [--cmake CMAKE] GROUP
Exit status 0: passed, 1: failed, 77: skipped (stats, report, figures, top and plot, while the
library under test has no PYALLOC_STATS support). Python 3 standard library only.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

A = None  # the parsed arguments
SKIP = 77
TIMEOUT = 120
EXIT_USAGE_STATUS = 2


def clean_env(**extra):
    """The environment without anything that would choose an allocator or its options."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYALLOC_") and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONMALLOC")}
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def run(argv, env=None, timeout=TIMEOUT, **kw):
    return subprocess.run(argv, env=env if env is not None else clean_env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def pa(*args, cmd=None, env=None, **kw):
    """Runs the build-tree copy of the command (or cmd)."""
    return run([cmd or A.command] + list(args), env=env, **kw)


def header_version():
    with open(os.path.join(A.source, "include", "pyalloc.h")) as f:
        return re.search(r'^#define\s+PA_VERSION_STRING\s+"([^"]*)"', f.read(), re.M).group(1)


def documented_variables():
    """{name: default} of the table in docs/options.md."""
    with open(os.path.join(A.source, "docs", "options.md")) as f:
        return dict(re.findall(r"^\|\s*`(PYALLOC_[A-Z0-9_]+)`\s*\|\s*`?([^`|]*?)`?(?:\s*\([^)]*\))?\s*\|", f.read(), re.M))


def option_of(name):
    """The `run` option that sets variable name: PYALLOC_PURGE_DELAY_MS -> --purge-delay-ms."""
    return "--" + name[len("PYALLOC_"):].lower().replace("_", "-")


def lib_has_stats():
    with open(A.lib, "rb") as f:
        return b"PYALLOC_STATS" in f.read()


def common_module():
    """tools/pyalloc_common.py (sizes in the report's units, gnuplot, key=value)."""
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    sys.path.insert(0, os.path.join(A.source, "tools"))
    try:
        import pyalloc_common
    finally:
        sys.path.pop(0)
    return pyalloc_common


def preload_env(**extra):
    """clean_env with this build's library preloaded."""
    return clean_env(LD_PRELOAD=A.lib, **extra)


def text_rows(text):
    """{size or "total": {column: value}} of a text report's table, and its column headings: counts
    as ints, sizes (held, wasted) as the strings the report prints."""
    lines = text.splitlines()
    head_line = next(line for line in lines if line.startswith("class "))
    heads = re.split(r"\s{2,}", head_line.strip())
    rows = {}
    for line in lines:
        m = re.match(r"^\s*(\d+|total)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+(?:\.\d)? \S+)\s+"
                     r"(\d+(?:\.\d)? \S+)$", line)
        if m:
            key = m.group(1) if m.group(1) == "total" else int(m.group(1))
            vals = [int(x) for x in m.groups()[1:7]] + [m.group(8), m.group(9)]
            rows[key] = dict(zip(heads[1:], vals))
    return rows, heads


def work(name):
    d = os.path.join(A.work, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


class Case(unittest.TestCase):
    maxDiff = None

    def ok(self, r, what=""):
        self.assertEqual(r.returncode, 0, "%s: exit %d\nstdout: %s\nstderr: %s" % (what, r.returncode, r.stdout, r.stderr))
        return r

    def status(self, r, want, what=""):
        self.assertEqual(r.returncode, want, "%s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                         % (what, r.returncode, want, r.stdout, r.stderr))
        return r


# ---- basic -------------------------------------------------------------------------------------------

class Basic(Case):
    def test_version(self):
        want = "pyalloc %s\n" % header_version()
        for cmd in (A.command, A.source_command):
            for opt in ("--version", "-V"):
                r = self.ok(pa(opt, cmd=cmd), cmd)
                self.assertEqual(r.stdout, want, cmd)

    def test_help_everywhere(self):
        r = self.ok(pa("--help"))
        self.assertTrue(r.stdout.startswith("usage: pyalloc COMMAND"), r.stdout)
        for sub in ("run", "stats", "bench", "lib"):
            self.assertIn("\n  %s " % sub, r.stdout)
        self.assertEqual(self.ok(pa("-h")).stdout, r.stdout)
        self.assertEqual(self.ok(pa("help")).stdout, r.stdout)
        self.assertEqual(self.ok(pa("help", "--help")).stdout, r.stdout)
        for sub in ("run", "stats", "bench", "lib"):
            r = self.ok(pa(sub, "--help"), sub)
            self.assertTrue(r.stdout.startswith("usage: pyalloc %s" % sub), r.stdout[:200])
            self.assertEqual(r.stderr, "", sub)
            self.assertEqual(self.ok(pa("help", sub)).stdout, r.stdout, sub)
            self.assertEqual(self.ok(pa(sub, "-h")).stdout, r.stdout, sub)
        r = self.ok(pa("run", "--help"))
        for opt in ("--lib", "--align", "--reserve-mb", "--dirty-kb", "--dirty-ratio", "--stats", "--stats-file"):
            self.assertIn(opt, r.stdout)
        self.assertIn("128+N", r.stdout)
        r = self.ok(pa("stats", "--help"))
        for opt in ("--json", "--plot", "--output", "--all", "--lib", "--align"):
            self.assertIn(opt, r.stdout)
        r = self.ok(pa("bench", "--help"))
        self.assertIn("--quick", r.stdout)  # the runner's own help follows ours
        self.assertIn("--benchmarks", r.stdout)

    def test_no_command(self):
        r = self.status(pa(), 2)
        self.assertIn("usage: pyalloc", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_unknown_subcommand(self):
        r = self.status(pa("frobnicate", "--", "true"), 2)
        self.assertIn("no such command 'frobnicate'", r.stderr)
        self.assertIn("usage: pyalloc COMMAND", r.stderr)
        r = self.status(pa("help", "frobnicate"), 2)
        self.assertIn("no such command 'frobnicate'", r.stderr)
        r = self.status(pa("--frobnicate"), 2)
        self.assertIn("unknown option '--frobnicate'", r.stderr)

    def test_usage_errors(self):
        cases = [
            (["run", "--bogus", "--", "true"], "unknown option '--bogus'"),
            (["run"], "no command given"),
            (["run", "--"], "no command given"),
            (["run", "--align"], "needs a value"),
            (["run", "--align", "7", "--", "true"], "--align must be one of 8, 16"),
            (["run", "--reserve-mb", "lots", "--", "true"], "--reserve-mb needs a non-negative whole number"),
            (["run", "--dirty-kb=-1", "--", "true"], "--dirty-kb needs a non-negative whole number"),
            (["run", "--stats", "xml", "--", "true"], "--stats must be one of"),
            (["stats", "--plot", "out.pdf", "--", "true"], "must end in .png or .svg"),
            (["stats"], "no command given"),
            (["lib", "extra"], "unexpected argument 'extra'"),
        ]
        for args, msg in cases:
            r = self.status(pa(*args), 2, " ".join(args))
            self.assertIn(msg, r.stderr, args)
            self.assertIn("usage: pyalloc %s" % args[0], r.stderr, args)

    def test_lib_found_in_its_build_tree(self):
        r = self.ok(pa("lib"))
        self.assertEqual(os.path.realpath(r.stdout.strip()), os.path.realpath(A.lib))
        self.assertTrue(os.path.isabs(r.stdout.strip()))

    def test_lib_explicit_choices(self):
        other = os.path.join(work("libcopy"), "libpyalloc-copy.so")
        shutil.copy(A.lib, other)
        self.assertEqual(self.ok(pa("lib", "--lib", other)).stdout.strip(), other)
        self.assertEqual(self.ok(pa("lib", env=clean_env(PYALLOC_LIB=other))).stdout.strip(), other)
        # --lib comes before $PYALLOC_LIB
        r = self.ok(pa("lib", "--lib", other, env=clean_env(PYALLOC_LIB="/nonexistent/libpyalloc.so")))
        self.assertEqual(r.stdout.strip(), other)
        # a relative --lib is made absolute (CMD may change directory)
        r = self.ok(pa("lib", "--lib", "libpyalloc-copy.so", cwd=os.path.dirname(other)))
        self.assertEqual(r.stdout.strip(), other)

    def test_missing_library(self):
        r = self.status(pa("run", "--lib", "/nonexistent/libpyalloc.so", "--", "true"), 125)
        self.assertIn("/nonexistent/libpyalloc.so: no such file", r.stderr)
        r = self.status(pa("run", "--", "true", env=clean_env(PYALLOC_LIB="/nonexistent/lib2.so")), 125)
        self.assertIn("PYALLOC_LIB: /nonexistent/lib2.so: no such file", r.stderr)
        text = os.path.join(work("notelf"), "libpyalloc.so")
        with open(text, "w") as f:
            f.write("not a library\n")
        r = self.status(pa("run", "--lib", text, "--", "true"), 125)
        self.assertIn("not an ELF shared library", r.stderr)
        spaced = os.path.join(work("spaced"), "my lib.so")
        shutil.copy(A.lib, spaced)
        r = self.status(pa("run", "--lib", spaced, "--", "true"), 125)
        self.assertIn("spaces or colons", r.stderr)

    def test_search_order_of_a_source_tree(self):
        """A source-tree copy looks in build/release, build, build/debug beside it, in that order; when
        none has the library it says where it looked and how to build it."""
        tree = work("tree")
        os.makedirs(os.path.join(tree, "tools"))
        os.makedirs(os.path.join(tree, "include"))
        script = os.path.join(tree, "tools", "pyalloc")
        shutil.copy(A.source_command, script)
        shutil.copy(os.path.join(A.source, "include", "pyalloc.h"), os.path.join(tree, "include"))
        open(os.path.join(tree, "CMakeLists.txt"), "w").close()
        py = [sys.executable, script]
        r = self.status(run(py + ["run", "--", "true"]), 125)
        for where in ("--lib PATH: not given", "$PYALLOC_LIB: not set",
                      os.path.join(tree, "build", "release", "libpyalloc.so"),
                      os.path.join(tree, "build", "libpyalloc.so"),
                      os.path.join(tree, "build", "debug", "libpyalloc.so"),
                      "cmake -S %s -B %s" % (tree, os.path.join(tree, "build", "release")), "cmake --install"):
            self.assertIn(where, r.stderr)
        # full paths: the work directory itself may lie under a build/debug tree
        self.assertLess(r.stderr.index(os.path.join(tree, "build", "release", "")),
                        r.stderr.index(os.path.join(tree, "build", "debug", "")))
        r = self.status(run(py + ["lib"]), 125)
        self.assertIn("not found", r.stderr)
        self.assertEqual(self.ok(run(py + ["--version"])).stdout, "pyalloc %s\n" % header_version())
        for t in ("build/debug", "build", "build/release"):
            os.makedirs(os.path.join(tree, t), exist_ok=True)
            os.symlink(A.lib, os.path.join(tree, t, "libpyalloc.so"))
            self.assertEqual(self.ok(run(py + ["lib"])).stdout.strip(), os.path.join(tree, t, "libpyalloc.so"))
        # an explicit choice that is missing is an error, never skipped for the build trees
        self.status(run(py + ["lib"], env=clean_env(PYALLOC_LIB="/nonexistent/libpyalloc.so")), 125)
        # outside any source tree, the message says so
        lonely = os.path.join(work("lonely"), "bin")
        os.makedirs(lonely)
        shutil.copy(A.source_command, os.path.join(lonely, "pyalloc"))
        r = self.status(run([sys.executable, os.path.join(lonely, "pyalloc"), "run", "--", "true"]), 125)
        self.assertIn("neither installed nor in a pyalloc source tree", r.stderr)

    def test_common_module(self):
        """tools/pyalloc_common.py, shared by the command and the benchmark runner."""
        c = common_module()
        for n, text in ((0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (7800, "7.6 KiB"),
                        (1048575, "1.0 MiB"), (32768, "32.0 KiB"), (5 << 30, "5.0 GiB"), (3 << 50, "3072.0 TiB")):
            self.assertEqual(c.human_size(n), text, n)
        self.assertEqual(c.parse_kv("checksum=00ff wall_s=1.5\nnote: a=b=c -x=1 =2 k= plain"),
                         {"checksum": "00ff", "wall_s": "1.5", "a": "b=c", "k": ""})
        self.assertEqual(c.quote("it's"), "'it''s'")
        d = work("common")
        if c.gnuplot():
            self.assertIsNone(c.draw("plot x\n", ["a.svg"], d))
            with open(os.path.join(d, "a.svg")) as f:
                self.assertIn("<svg", f.read())
            why = c.draw("plot no_such_function(x)\n", ["b.png"], d)
            self.assertIn("no_such_function", why)
            self.assertFalse(os.path.exists(os.path.join(d, "b.png")), "an empty picture was left behind")

    def test_gnuplot_missing(self):
        """--plot without gnuplot fails before CMD runs and names the Debian package."""
        empty = work("nogp")
        marker = os.path.join(empty, "ran")
        env = clean_env(PATH=empty)
        r = self.status(run([sys.executable, A.command, "stats", "--plot", os.path.join(empty, "p.png"), "--",
                             "/bin/sh", "-c", "touch %s" % marker], env=env), 125)
        self.assertIn("apt-get install gnuplot-nox", r.stderr)
        self.assertFalse(os.path.exists(marker), "CMD ran although the plot could not be drawn")


# ---- run ---------------------------------------------------------------------------------------------

def usable(r):
    m = re.fullmatch(r"usable=(\d+) mode=(\d+)\n", r.stdout)
    assert m, "unexpected output %r (stderr %r)" % (r.stdout, r.stderr)
    return int(m.group(1)), int(m.group(2))


class Run(Case):
    def test_program_alone_is_on_glibc(self):
        r = self.ok(run([A.prog, "usable"]))
        self.assertEqual(usable(r)[1], 0, "cli_prog must not be linked to pyalloc")

    def test_default_alignment(self):
        r = self.ok(pa("run", "--", A.prog, "usable"))
        self.assertEqual(usable(r), (32, 16))

    def test_align8(self):
        for args in (["--align", "8"], ["--align=8"]):
            r = self.ok(pa("run", *args, "--", A.prog, "usable"))
            self.assertEqual(usable(r), (24, 8), args)
        # without `--`: the first word that is not an option starts CMD
        self.assertEqual(usable(self.ok(pa("run", "--align", "8", A.prog, "usable"))), (24, 8))

    def test_environment_passes_through_and_options_win(self):
        r = self.ok(pa("run", "--", A.prog, "usable", env=clean_env(PYALLOC_ALIGN="8")))
        self.assertEqual(usable(r), (24, 8))
        r = self.ok(pa("run", "--align", "16", "--", A.prog, "usable", env=clean_env(PYALLOC_ALIGN="8")))
        self.assertEqual(usable(r), (32, 16))

    def test_source_copy_runs(self):
        r = self.ok(run([sys.executable, A.source_command, "run", "--lib", A.lib, "--align", "8", "--", A.prog, "usable"]))
        self.assertEqual(usable(r), (24, 8))

    def test_pythonmalloc(self):
        """run and stats set PYTHONMALLOC=malloc for CMD, unless PYTHONMALLOC is set or --pymalloc given."""
        for sub in (["run"], ["stats", "-o", os.devnull]):
            r = self.ok(pa(*sub, "--", A.prog, "env", "PYTHONMALLOC"))
            self.assertEqual(r.stdout, "PYTHONMALLOC=malloc\n", sub)
            r = self.ok(pa(*sub, "--pymalloc", "--", A.prog, "env", "PYTHONMALLOC"))
            self.assertEqual(r.stdout, "PYTHONMALLOC=(unset)\n", sub)
            for user in ("pymalloc_debug", ""):
                for opt in ([], ["--pymalloc"]):
                    r = self.ok(pa(*sub, *opt, "--", A.prog, "env", "PYTHONMALLOC", env=clean_env(PYTHONMALLOC=user)))
                    self.assertEqual(r.stdout, "PYTHONMALLOC=%s\n" % user, (sub, opt, user))
        self.assertIn("--pymalloc", self.ok(pa("run", "--help")).stdout)
        self.assertIn("PYTHONMALLOC=malloc", self.ok(pa("stats", "--help")).stdout)

    def test_every_documented_variable_has_an_option(self):
        """docs/options.md's variables each have a `run` option that sets it for CMD."""
        docs = documented_variables()
        self.assertIn("PYALLOC_ALIGN", docs)
        values = {"PYALLOC_ALIGN": ("8", "8"), "PYALLOC_STATS": ("json", "json"), "PYALLOC_BACKGROUND": ("1", "1"), "PYALLOC_MESH": ("1", "1"),
                  "PYALLOC_STATS_FILE": ("/dev/null", "/dev/null"), "PYALLOC_PUBLISH": ("0", "0"),
                  "PYALLOC_TIMELINE_MS": ("250", "250"), "PYALLOC_SITES": ("0", "0"),
                  "PYALLOC_SITES_FILE": ("/dev/null", "/dev/null")}
        args, want = [], []
        for name in sorted(docs):
            given, seen = values.get(name, ("7", "7"))
            args += [option_of(name), given]
            want.append("%s=%s" % (name, seen))
        helptext = self.ok(pa("run", "--help")).stdout
        for name in docs:
            self.assertIn(option_of(name) + " ", helptext)
        r = self.ok(pa("run", *args, "--", A.prog, "env", *sorted(docs)))
        self.assertEqual(r.stdout.split(), want)

    def test_options_set_variables(self):
        names = ["PYALLOC_ALIGN", "PYALLOC_RESERVE_MB", "PYALLOC_PURGE_DELAY_MS", "PYALLOC_DIRTY_KB",
                 "PYALLOC_DIRTY_RATIO", "PYALLOC_STATS", "PYALLOC_STATS_FILE"]
        r = self.ok(pa("run", "--align", "8", "--reserve-mb", "64", "--purge-delay-ms=0", "--dirty-kb=256",
                       "--dirty-ratio", "0", "--stats", "json", "--stats-file", "/dev/null", "--", A.prog, "env",
                       *names))
        self.assertEqual(r.stdout.split(), ["PYALLOC_ALIGN=8", "PYALLOC_RESERVE_MB=64", "PYALLOC_PURGE_DELAY_MS=0",
                                            "PYALLOC_DIRTY_KB=256", "PYALLOC_DIRTY_RATIO=0", "PYALLOC_STATS=json",
                                            "PYALLOC_STATS_FILE=/dev/null"])
        r = self.ok(pa("run", "--stats", "text", "--stats-file", "/dev/null", "--", A.prog, "env", "PYALLOC_STATS"))
        self.assertEqual(r.stdout, "PYALLOC_STATS=1\n")
        r = self.ok(pa("run", "--", A.prog, "env", *names))
        self.assertEqual(r.stdout.split(), [n + "=(unset)" for n in names])
        # the library takes a small reservation and still serves the program
        r = self.ok(pa("run", "--reserve-mb", "64", "--dirty-kb", "0", "--", A.prog, "usable"))
        self.assertEqual(usable(r), (32, 16))

    def test_ld_preload(self):
        lib = self.ok(pa("lib")).stdout.strip()
        r = self.ok(pa("run", "--", A.prog, "env", "LD_PRELOAD"))
        self.assertEqual(r.stdout, "LD_PRELOAD=%s\n" % lib)
        libm = next((p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                                 "/lib64/libm.so.6") if os.path.exists(p)), None)
        if libm:
            # a preload already set is kept, after pyalloc; another libpyalloc is dropped
            r = self.ok(pa("run", "--", A.prog, "env", "LD_PRELOAD",
                           env=clean_env(LD_PRELOAD="%s:/old/libpyalloc.so.0" % libm)))
            self.assertEqual(r.stdout, "LD_PRELOAD=%s %s\n" % (lib, libm))

    def test_exit_status(self):
        for code in (0, 1, 3, 42, 255):
            self.status(pa("run", "--", A.prog, "exit", str(code)), code, "exit %d" % code)
        self.status(pa("run", "--", "sh", "-c", "exit 3"), 3)

    def test_death_by_signal(self):
        for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGABRT, signal.SIGSEGV):
            self.status(pa("run", "--", A.prog, "signal", str(int(sig))), 128 + sig, sig.name)
        self.status(pa("run", "--", "sh", "-c", "kill -TERM $$"), 128 + signal.SIGTERM)

    def _sleeper(self):
        p = subprocess.Popen([A.command, "run", "--", A.prog, "sleep", "60"], env=clean_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertEqual(p.stdout.readline(), "sleeping\n")  # CMD runs; pyalloc's handlers are set
        return p

    def test_signals_to_pyalloc_reach_cmd(self):
        for sig in (signal.SIGTERM, signal.SIGHUP):
            p = self._sleeper()
            t0 = time.time()
            p.send_signal(sig)
            self.assertEqual(p.wait(timeout=30), 128 + sig, sig.name)
            self.assertLess(time.time() - t0, 20)
            p.stdout.close()
            p.stderr.close()

    def test_early_sigterm_is_not_lost(self):
        """SIGTERM sent while pyalloc starts CMD (before or as Popen returns) still ends the run."""
        for delay in (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4):
            p = subprocess.Popen([A.command, "run", "--", A.prog, "sleep", "60"], env=clean_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                self.fail("SIGTERM %.2f s after start was lost: pyalloc kept waiting" % delay)
            # before pyalloc set its handlers it dies of the signal itself (-15); after, CMD does (143)
            self.assertIn(rc, (-signal.SIGTERM, 128 + signal.SIGTERM), delay)

    def test_sigint_waits_for_cmd(self):
        """SIGINT to pyalloc alone (a terminal sends it to CMD as well) does not end pyalloc before CMD."""
        p = self._sleeper()
        p.send_signal(signal.SIGINT)
        time.sleep(0.5)
        self.assertIsNone(p.poll(), "pyalloc ended on SIGINT while CMD still ran")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=30), 128 + signal.SIGTERM)
        p.stdout.close()
        p.stderr.close()

    def test_command_not_found(self):
        r = self.status(pa("run", "--", "no-such-command-pyalloc-test"), 127)
        self.assertIn("no-such-command-pyalloc-test: command not found", r.stderr)
        r = self.status(pa("run", "--", "/nonexistent/prog"), 127)
        self.assertIn("/nonexistent/prog: No such file or directory", r.stderr)
        d = work("noexec")
        f = os.path.join(d, "script")
        with open(f, "w") as fh:
            fh.write("#!/bin/sh\necho hi\n")
        os.chmod(f, 0o644)
        r = self.status(pa("run", "--", f), 126)
        self.assertIn("Permission denied", r.stderr)
        self.status(pa("run", "--", d), 126)
        # PATH lookup finds an executable one
        os.chmod(f, 0o755)
        r = self.ok(pa("run", "--", "script", env=clean_env(PATH=d + os.pathsep + os.environ.get("PATH", ""))))
        self.assertEqual(r.stdout, "hi\n")

    def test_stdio_passes_through(self):
        r = self.ok(pa("run", "--", "cat", input="hello\nworld\n"))
        self.assertEqual(r.stdout, "hello\nworld\n")
        r = self.ok(pa("run", "--", "sh", "-c", "echo out; echo err >&2"))
        self.assertEqual((r.stdout, r.stderr), ("out\n", "err\n"))


# ---- stats -------------------------------------------------------------------------------------------

def default_sizes():
    return [8, 16] + list(range(32, 513, 16))


class Stats(Case):
    def stats(self, *args, extra=(), env=None, status=0, prog=None):
        out = os.path.join(A.work, "stats-out")
        if os.path.exists(out):
            os.unlink(out)
        r = self.status(pa("stats", "-o", out, *extra, "--", *(prog or [A.prog]), *args, env=env), status,
                        " ".join(args))
        with open(out) as f:
            return r, f.read()

    def json(self, *args, extra=(), **kw):
        r, text = self.stats(*args, extra=("--json",) + tuple(extra), **kw)
        return r, json.loads(text)

    def by_size(self, doc):
        return {c["size"]: c for c in doc["classes"]}

    def check_consistent(self, doc, align):
        self.assertEqual(doc["pyalloc"], header_version())
        self.assertIsInstance(doc["pid"], int)
        self.assertEqual(doc["exe"], os.path.realpath(A.prog))
        self.assertEqual(doc["alignment"], align)
        page = doc["page_size"]
        self.assertTrue(page >= 4096 and page & (page - 1) == 0, page)
        sizes = [c["size"] for c in doc["classes"]]
        self.assertEqual(sizes, default_sizes() if align == 16 else list(range(8, 513, 8)))
        fields = ("allocs", "frees", "in_use", "peak_in_use", "pages", "bytes_held", "wasted")
        for c in doc["classes"]:
            for k in fields:
                self.assertIsInstance(c[k], int, (c["size"], k))
                self.assertGreaterEqual(c[k], 0, (c["size"], k))
            self.assertEqual(c["frees"], c["allocs"] - c["in_use"], c)
            self.assertEqual(c["bytes_held"], c["pages"] * page, c)
            self.assertLessEqual(c["in_use"], c["peak_in_use"], c)
            self.assertLessEqual(c["in_use"] * c["size"], c["bytes_held"], c)
        t = doc["total"]
        for k in ("allocs", "frees", "in_use", "pages", "bytes_held", "wasted"):
            self.assertEqual(t[k], sum(c[k] for c in doc["classes"]), k)
        self.assertEqual(t["in_use_bytes"], sum(c["in_use"] * c["size"] for c in doc["classes"]))
        for k in ("calls", "bytes"):
            self.assertIsInstance(doc["passthrough"][k], int)
        for k in ("committed", "bytes_committed", "pages_given_back", "bytes_given_back"):
            self.assertIsInstance(doc["arenas"][k], int)
        self.assertGreaterEqual(doc["arenas"]["bytes_committed"], t["bytes_held"])
        if t["pages"]:  # a program that made no small allocation has neither
            self.assertGreaterEqual(doc["arenas"]["committed"], 1)
        if t["allocs"]:
            self.assertGreaterEqual(doc["heaps"]["live"] + doc["heaps"]["abandoned"], 1)
        self.assertIsInstance(doc["cross_thread_frees"], int)

    def test_json_known_allocations(self):
        """1000 x 200 bytes held to exit: class 208 in default mode, 8 bytes wasted each."""
        r, doc = self.json("alloc", "1000", "200")
        self.assertEqual(r.stdout, "allocated 1000 x 200\n")  # CMD's output stays on stdout, alone
        self.check_consistent(doc, 16)
        c = self.by_size(doc)[208]
        self.assertGreaterEqual(c["allocs"], 1000)
        self.assertGreaterEqual(c["in_use"], 1000)
        self.assertGreaterEqual(c["peak_in_use"], 1000)
        self.assertGreaterEqual(c["wasted"], 8000)
        self.assertGreaterEqual(c["pages"], -(-1000 // (doc["page_size"] // 208)))  # 157 blocks a 32 KiB page
        pt = doc["passthrough"]
        self.assertGreaterEqual(pt["calls"], 15)  # 10 x 4096 B, 5 aligned to 64
        self.assertGreaterEqual(pt["bytes"], 10 * 4096 + 5 * 64)
        self.assertGreaterEqual(doc["total"]["in_use_bytes"], 1000 * 208)

    def test_json_freed(self):
        _, doc = self.json("alloc", "1000", "200", "free")
        self.check_consistent(doc, 16)
        c = self.by_size(doc)[208]
        self.assertGreaterEqual(c["frees"], 1000)
        self.assertGreaterEqual(c["peak_in_use"], 1000)
        self.assertLessEqual(c["in_use"], c["allocs"] - 1000)

    def test_json_classic_mode(self):
        """--align 8: 64 classes, a 200-byte request is served exactly by class 200."""
        _, doc = self.json("alloc", "1000", "200", extra=("--align", "8"))
        self.check_consistent(doc, 8)
        sizes = self.by_size(doc)
        self.assertGreaterEqual(sizes[200]["allocs"], 1000)
        self.assertGreaterEqual(sizes[200]["in_use"], 1000)
        self.assertLess(sizes[208]["allocs"], 1000)

    def test_text_report(self):
        """The library's text report, as stats prints it: exact counts, sizes in KiB/MiB/GiB."""
        _, text = self.stats("alloc", "1000", "200")
        lines = text.splitlines()
        self.assertTrue(lines[0].startswith("pyalloc %s report: pid " % header_version()), lines[0])
        self.assertIn("(%s), alignment 16, pages of 32.0 KiB" % os.path.realpath(A.prog), lines[0])
        rows, heads = text_rows(text)
        self.assertEqual(heads, ["class", "allocs", "frees", "in use", "peak <=", "peak pages", "pages", "held",
                                 "wasted"])
        row = rows[208]
        self.assertGreaterEqual(row["allocs"], 1000)
        self.assertEqual(row["frees"], row["allocs"] - row["in use"])
        self.assertGreaterEqual(row["in use"], 1000)
        self.assertGreaterEqual(row["peak <="], 1000)
        self.assertEqual(row["held"], "%.1f KiB" % (row["pages"] * 32))
        self.assertRegex(row["wasted"], r"^\d+\.\d KiB$")  # >= 8000 bytes
        self.assertGreaterEqual(float(row["wasted"].split()[0]), 7.8)
        self.assertGreaterEqual(rows["total"]["allocs"], row["allocs"])
        for start in ("in use:           ", "passed to glibc:  ", "arenas:           ", "heaps:            "):
            self.assertTrue(any(line.startswith(start) for line in lines), start)
        self.assertRegex(text, r"\nin use: +\d+ blocks, \d+\.\d (KiB|MiB) \(blocks x class size\)\n")
        self.assertRegex(text, r"\(\d+ of the 33 size classes were not used and are not shown\)\n")

    def test_python_objects_are_counted(self):
        """A Python script that builds 200,000 dict entries (a str key and a list each): hundreds of
        thousands of small blocks, because stats sets PYTHONMALLOC=malloc; with --pymalloc, or a
        PYTHONMALLOC of the user's, CPython's pymalloc serves them and pyalloc sees a few hundred."""
        script = os.path.join(work("python"), "dicts.py")
        with open(script, "w") as f:
            f.write("d = {}\nfor i in range(200000):\n    d['k%d' % i] = [i]\nprint(len(d))\n")
        py = [sys.executable, script]
        r, doc = self.json(prog=py)
        self.assertEqual(r.stdout, "200000\n")
        self.assertGreaterEqual(doc["total"]["allocs"], 400000)
        for extra, env in ((("--pymalloc",), None), ((), clean_env(PYTHONMALLOC="pymalloc"))):
            _, doc = self.json(prog=py, extra=extra, env=env)
            self.assertLess(doc["total"]["allocs"], 20000, (extra, env and env["PYTHONMALLOC"]))

    def test_report_never_shares_a_stream_with_cmd(self):
        """Text to stderr, CMD's output on stdout; --json (or -o -) to stdout alone, CMD's output on stderr."""
        r = self.ok(pa("stats", "--", A.prog, "alloc", "100", "200"))
        self.assertEqual(r.stdout, "allocated 100 x 200\n")
        self.assertTrue(r.stderr.startswith("pyalloc %s report: pid " % header_version()), r.stderr[:300])
        r = self.ok(pa("stats", "--json", "--", A.prog, "alloc", "100", "200"))
        self.assertEqual(json.loads(r.stdout)["alignment"], 16)
        self.assertEqual(r.stderr, "allocated 100 x 200\n")
        r = self.ok(pa("stats", "--json", "--all", "--", A.prog, "fork", "100", "200"))
        self.assertEqual(len(json.loads(r.stdout)), 2)
        self.assertRegex(r.stderr, r"^child \d+ done\n")
        r = self.ok(pa("stats", "-o", "-", "--", A.prog, "alloc", "100", "200"))
        self.assertTrue(r.stdout.startswith("pyalloc %s report: pid " % header_version()), r.stdout[:300])
        self.assertEqual(r.stderr, "allocated 100 x 200\n")

    def test_output_paths_checked_before_cmd_runs(self):
        """An output path that cannot be written: one line, 125, and CMD never runs; an existing report
        file is left as it was when no report comes."""
        d = work("paths")
        marker = os.path.join(d, "ran")
        cmd = ["--", "/bin/sh", "-c", "touch %s" % marker]
        for args, what in ((["-o", os.path.join(d, "no", "such", "r.txt")], "No such file or directory"),
                           (["-o", d], "it is a directory"),
                           (["--json", "-o", os.path.join(d, "no", "r.json")], "No such file or directory"),
                           (["--plot", os.path.join(d, "no", "p.svg"), "-o", os.devnull], "No such file or directory")):
            r = self.status(pa("stats", *args, *cmd), 125, " ".join(args))
            self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
            self.assertIn(what, r.stderr)
            self.assertIn("CMD was not run", r.stderr)
            self.assertFalse(os.path.exists(marker), args)
        self.assertEqual(os.listdir(d), [])  # the checks leave nothing behind
        old = os.path.join(d, "old.txt")
        with open(old, "w") as f:
            f.write("an older report\n")
        self.status(pa("stats", "-o", old, "--", A.prog, "signal", "9"), 128 + 9)
        with open(old) as f:
            self.assertEqual(f.read(), "an older report\n")

    def test_processes_that_left_no_report_are_named(self):
        """A child that ends with _exit() writes no report; stats names it, by pid and program."""
        r, doc = self.json("fork", "100", "200", "_exit")
        child = int(re.search(r"child (\d+) done", r.stdout).group(1))
        self.assertRegex(r.stderr, r"pyalloc stats: 1 process started but left no report: %d \(%s\); it ended with "
                         r"_exit\(\) or a signal" % (child, re.escape(os.path.realpath(A.prog))))
        self.check_consistent(doc, 16)
        r, _ = self.json("fork", "100", "200")
        self.assertNotIn("left no report", r.stderr)

    def test_exit_status_and_report(self):
        r, doc = self.json("exit", "3", status=3)
        self.check_consistent(doc, 16)
        self.assertIn("exit status 3", r.stderr)

    def test_reports_cut_short(self):
        """A report file left empty or cut short (a process killed while it wrote) is named, and the
        command's own report is still printed. CMD writes two such files beside the real ones."""
        script = 'd=$(dirname "$PYALLOC_STATS_FILE"); : > "$d/99999.json"; printf \'{"pyalloc": "0.' \
                 '\' > "$d/99998.json"'
        r = self.ok(pa("stats", "--", "/bin/bash", "-c", script))  # dash leaves with _exit(): no report
        self.assertIn("pyalloc stats: the report of pid 99998 is not valid JSON", r.stderr)
        self.assertIn("pyalloc stats: 1 process started but left no report: 99999 (?)", r.stderr)
        self.assertIn(" report: pid ", r.stderr)

    def test_killed_cmd_has_no_report(self):
        r = self.status(pa("stats", "--", A.prog, "signal", "9"), 128 + 9)
        self.assertRegex(r.stderr, r"1 process started but left no report: \d+ \(%s: the command itself\); it "
                         r"was killed by SIGKILL" % re.escape(os.path.realpath(A.prog)))

    def test_cmd_not_found(self):
        self.status(pa("stats", "--", "no-such-command-pyalloc-test"), 127)

    def test_every_process(self):
        """CMD forks a child that allocates 500 x 200: CMD's own report is the one shown; --all adds the child's."""
        r, doc = self.json("fork", "500", "200")
        self.assertIn("also reported (--all shows them)", r.stderr)
        self.assertLess(self.by_size(doc)[208]["allocs"], 500)
        _, docs = self.json("fork", "500", "200", extra=("--all",))
        self.assertIsInstance(docs, list)
        self.assertGreaterEqual(len(docs), 2)
        self.assertEqual(len({d["pid"] for d in docs}), len(docs))
        self.assertTrue(any(self.by_size(d)[208]["allocs"] >= 500 for d in docs[1:]))
        _, text = self.stats("fork", "500", "200", extra=("--all",))
        self.assertEqual(text.count(" report: pid "), len(docs))


# ---- report: the library's own report (PYALLOC_STATS), without the command ---------------------------

class Report(Case):
    def lib_run(self, argv, timeout=TIMEOUT, **env):
        return run(argv, env=preload_env(**env), timeout=timeout)

    def test_one_format(self):
        """PYALLOC_STATS=1 prints what `pyalloc stats` prints, to the byte (but the pid, the times and
        the resident set sizes)."""
        r = self.ok(self.lib_run([A.prog, "alloc", "1000", "200"], PYALLOC_STATS="1", PYTHONMALLOC="malloc"))
        out = os.path.join(work("oneformat"), "report.txt")
        self.ok(pa("stats", "-o", out, "--", A.prog, "alloc", "1000", "200"))
        with open(out) as f:
            text = f.read()
        # the pid, and the moments and resident sizes of the live line, differ from run to run
        unpid = lambda t: re.sub(r"\(RSS [\d.]+ \w+\) at \d+\.\d{3} s", "(RSS R) at T s",  # noqa: E731
                                 re.sub(r"report: pid \d+ ", "report: pid N ", t))
        self.assertEqual(unpid(text), unpid(r.stderr))
        self.assertEqual(unpid(text).count("(RSS R) at T s"), 2, text)
        self.assertIn(" report: pid ", text)

    def test_sizes_in_human_units_match_the_json(self):
        """One exit, both formats (PYALLOC_STATS=text,json, %p.txt and %p.json): every row of the text
        has the JSON's counts, and its sizes are the JSON's bytes in KiB/MiB/GiB with one decimal."""
        d = work("bothformats")
        self.ok(self.lib_run([A.prog, "alloc", "3000", "300", "free"], PYALLOC_STATS="text,json",
                             PYALLOC_STATS_FILE=os.path.join(d, "r-%p")))
        names = sorted(os.listdir(d))
        self.assertEqual(len(names), 2, names)
        self.assertTrue(names[0].endswith(".json") and names[1].endswith(".txt"), names)
        with open(os.path.join(d, names[0])) as f:
            doc = json.load(f)
        with open(os.path.join(d, names[1])) as f:
            text = f.read()
        human = common_module().human_size
        rows, _ = text_rows(text)
        used = {c["size"]: c for c in doc["classes"] if c["allocs"] or c["pages"] or c["peak_pages"]}
        self.assertEqual(set(rows) - {"total"}, set(used))
        self.assertIn(304, used)
        for key, c in list(used.items()) + [("total", doc["total"])]:
            row = rows[key]
            for col, field in (("allocs", "allocs"), ("frees", "frees"), ("in use", "in_use"),
                               ("peak <=", "peak_in_use"), ("peak pages", "peak_pages"), ("pages", "pages")):
                self.assertEqual(row[col], c[field], (key, col))
            self.assertEqual(row["held"], human(c["bytes_held"]), key)
            self.assertEqual(row["wasted"], human(c["wasted"]), key)
        self.assertIn("\nin use:           %d blocks, %s (blocks x class size)\n"
                      % (doc["total"]["in_use"], human(doc["total"]["in_use_bytes"])), text)
        pt = doc["passthrough"]
        self.assertIn("\npassed to glibc:  %d calls, %s (requests over 512 bytes" % (pt["calls"], human(pt["bytes"])),
                      text)
        ar = doc["arenas"]
        self.assertIn("\narenas:           %d committed (%s); %d pages given back to the OS (%s); %d empty pages kept\n"
                      % (ar["committed"], human(ar["bytes_committed"]), ar["pages_given_back"],
                         human(ar["bytes_given_back"]), ar["pages_dirty"]), text)
        self.assertGreaterEqual(ar["pages_taken"], doc["total"]["pages"])
        hp = doc["heaps"]
        self.assertIn("\npages:            %d taken from the pool, %d returned to it, %d adopted from exited threads\n"
                      % (ar["pages_taken"], ar["pages_returned"], hp["pages_adopted"]), text)
        self.assertIn("\nheaps:            %d live, %d abandoned; %d cross-thread frees\n"
                      % (hp["live"], hp["abandoned"], doc["cross_thread_frees"]), text)

    def test_reaches_the_user_when_the_program_closes_stderr(self):
        """cat (coreutils) closes stdout and stderr in an atexit handler, before the library's
        destructor runs: the report still reaches the stderr cat was given."""
        r = self.ok(self.lib_run(["cat", os.devnull], PYALLOC_STATS="1"))
        self.assertTrue(r.stderr.startswith("pyalloc %s report: pid " % header_version()), r.stderr)
        self.assertIn("cat), alignment 16", r.stderr.splitlines()[0])
        r = self.ok(self.lib_run([A.prog, "closeerr"], PYALLOC_STATS="json"))
        self.assertEqual(json.loads(r.stderr)["exe"], os.path.realpath(A.prog))
        self.assertEqual(r.stdout, "closing stdout and stderr at exit\n")

    def test_never_written_into_a_file_that_took_fd_2(self):
        """A program that closes stderr and opens a file (which gets fd 2) keeps its file to itself;
        the report goes to the stderr it was given."""
        own = os.path.join(work("reopen"), "own.txt")
        r = self.ok(self.lib_run([A.prog, "reopenerr", own], PYALLOC_STATS="1"))
        with open(own) as f:
            self.assertEqual(f.read(), "the program's own line\n")
        self.assertTrue(r.stderr.startswith("pyalloc %s report: pid " % header_version()), r.stderr)

    def test_a_daemon_does_not_hold_the_pipe(self):
        """The copy of stderr is closed in a forked child: a daemon that leaves its parent's pipes does
        not keep them open (a shell's $(...) would wait for it)."""
        t0 = time.monotonic()
        r = self.ok(self.lib_run([A.prog, "daemon", "60"], timeout=30, PYALLOC_STATS="1"))
        took = time.monotonic() - t0
        daemon = int(re.search(r"daemon=(\d+)", r.stdout).group(1))
        try:
            os.kill(daemon, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.assertLess(took, 30)
        self.assertIn(" report: pid ", r.stderr)

    def test_descriptors(self):
        """The publication for `pyalloc top`: one descriptor more, at 800 or above, close-on-exec, the
        memfd named pyalloc; none with PYALLOC_PUBLISH=0. A report to stderr: one more, close-on-exec,
        numbered from 100. A report to a file: none more."""
        def fds(env):
            r = self.ok(run([A.prog, "fds"], env=env))
            nums = sorted(int(x) for x in re.search(r"^fds=(.*)$", r.stdout, re.M).group(1).split())
            info = dict((int(a), (b == "1", c)) for a, b, c in re.findall(r"^fd=(\d+) cloexec=(\d) link=(.*)$",
                                                                          r.stdout, re.M))
            return nums, info
        base, _ = fds(clean_env())
        nums, info = fds(preload_env())
        extra = sorted(set(nums) - set(base))
        self.assertEqual(len(extra), 1, (nums, base))
        self.assertGreaterEqual(extra[0], 800)
        self.assertEqual(info[extra[0]], (True, "/memfd:pyalloc (deleted)"))
        self.assertEqual(fds(preload_env(PYALLOC_STATS="0"))[0], nums)
        self.assertEqual(fds(preload_env(PYALLOC_PUBLISH="0"))[0], base)
        self.assertEqual(fds(preload_env(PYALLOC_PUBLISH="0", PYALLOC_STATS="json",
                                         PYALLOC_STATS_FILE=os.devnull))[0], base)
        nums, info = fds(preload_env(PYALLOC_PUBLISH="0", PYALLOC_STATS="1"))
        extra = sorted(set(nums) - set(base))
        self.assertEqual(len(extra), 1, (nums, base))
        self.assertGreaterEqual(extra[0], 100)
        self.assertLess(extra[0], 800)
        self.assertTrue(info[extra[0]][0])

    def test_started_records(self):
        """With %p in PYALLOC_STATS_FILE, each process writes a record at start-up (and after fork)
        that its report replaces at exit: a child that ends with _exit() leaves the record."""
        d = work("started")
        for fmt in ("json", "text"):
            for f in os.listdir(d):
                os.unlink(os.path.join(d, f))
            r = self.ok(self.lib_run([A.prog, "fork", "100", "200", "_exit"], PYALLOC_STATS=fmt,
                                     PYALLOC_STATS_FILE=os.path.join(d, "%p.out")))
            child = int(re.search(r"child (\d+) done", r.stdout).group(1))
            self.assertEqual(len(os.listdir(d)), 2, os.listdir(d))
            with open(os.path.join(d, "%d.out" % child)) as f:
                record = f.read()
            parent = [n for n in os.listdir(d) if n != "%d.out" % child][0]
            with open(os.path.join(d, parent)) as f:
                report = f.read()
            exe = os.path.realpath(A.prog)
            if fmt == "json":
                self.assertEqual(json.loads(record), {"pyalloc": header_version(), "pid": child, "exe": exe,
                                                      "started": True})
                self.assertIn("classes", json.loads(report))
            else:
                self.assertEqual(record, "pyalloc %s: pid %d (%s) started; its report replaces this line when it "
                                 "exits\n" % (header_version(), child, exe))
                self.assertTrue(report.startswith("pyalloc %s report: pid " % header_version()), report)
        # without %p there is one file for every process, and no started record
        one = os.path.join(work("one"), "report.json")
        self.ok(self.lib_run([A.prog, "fork", "100", "200", "_exit"], PYALLOC_STATS="json", PYALLOC_STATS_FILE=one))
        with open(one) as f:
            self.assertIn("classes", json.load(f))


# ---- plot --------------------------------------------------------------------------------------------

# ---- figures: live bytes, the peak and the timeline of programs whose allocations are known ----------

# The coarse clock the library reads (CLOCK_MONOTONIC_COARSE) lags the program's CLOCK_MONOTONIC by
# at most one scheduler tick (4 ms at HZ=250, 10 ms at HZ=100).
CLOCK_SLACK_MS = 12


class Figures(Case):
    def stats_json(self, name, argv):
        """Runs argv under `pyalloc stats --json -o FILE`: (the report, the program's key=value lines
        as ints)."""
        out = os.path.join(work(name), "report.json")
        r = self.ok(pa("stats", "--json", "-o", out, "--", *argv, timeout=120))
        with open(out) as f:
            doc = json.load(f)
        return doc, {k: int(v) for k, v in common_module().parse_kv(r.stdout).items()}

    def check_timeline(self, doc):
        """What every timeline holds: times in order, live = small + large, points 100 ms apart at
        most while the program is busy."""
        tl = doc["timeline"]
        self.assertEqual(doc["timeline_interval_ms"], 100)
        self.assertGreater(len(tl), 5)
        for a, b in zip(tl, tl[1:]):
            self.assertLessEqual(a["t_ms"], b["t_ms"])
        for p in tl:
            self.assertEqual(p["live_bytes"], p["small_bytes"] + p["large_bytes"], p)
            self.assertGreater(p["rss_bytes"], 0, p)
        return tl

    def at(self, doc, ms):
        """A program's CLOCK_MONOTONIC ms as the report's ms since start."""
        return ms - doc["start_monotonic_ms"]

    def points(self, doc, lo, hi):
        """The timeline points between two of the program's markers."""
        return [p for p in doc["timeline"] if self.at(doc, lo) <= p["t_ms"] <= self.at(doc, hi)]

    def test_c_program(self):
        """cli_prog figures: 30 MB at its peak (100-byte and 256 KiB blocks, freed), 13 MB leaked
        (200-byte and 300 KiB blocks). The bytes are the program's own sums of malloc_usable_size."""
        doc, m = self.stats_json("figures_c", [A.prog, "figures"])
        tl = self.check_timeline(doc)
        live, peak = doc["live"], doc["peak"]
        leak = m["leak_small"] + m["leak_large"]
        # live at exit: the leak, and what libc keeps (< 16 KiB); small and large apart
        self.assertEqual(live["bytes"], live["small_bytes"] + live["large_bytes"])
        self.assertTrue(m["leak_small"] <= live["small_bytes"] <= m["leak_small"] + (16 << 10), (live, m))
        self.assertTrue(m["leak_large"] <= live["large_bytes"] <= m["leak_large"] + (16 << 10), (live, m))
        self.assertEqual(doc["passthrough"]["live_bytes"], live["large_bytes"])
        self.assertEqual(doc["total"]["in_use_bytes"], live["small_bytes"])
        # the peak: all of peak()'s blocks (the leak came later), plus at most the program's 100 KiB
        # block of the moment and what libc keeps; reached between peak()'s two markers
        top = m["peak_small"] + m["peak_large"]
        self.assertTrue(top <= peak["live_bytes"] <= top + (100 << 10) + (32 << 10), (peak, top))
        self.assertGreaterEqual(self.at(doc, m["peak_end_ms"]) + CLOCK_SLACK_MS, peak["t_ms"], (peak, m))
        self.assertLessEqual(self.at(doc, m["peak_begin_ms"]) - CLOCK_SLACK_MS, peak["t_ms"], (peak, m))
        self.assertGreater(peak["rss_bytes"], top * 0.5)  # read at most once per tick of the coarse clock
        # the timeline's shape: low before the peak, the peak held while the program held it, low
        # again after the frees, the leak after leak(), and the leak at exit
        before = self.points(doc, m["start_ms"], m["peak_begin_ms"] - CLOCK_SLACK_MS)
        during = self.points(doc, m["peak_end_ms"] + CLOCK_SLACK_MS, m["free_begin_ms"] - CLOCK_SLACK_MS)
        between = self.points(doc, m["free_end_ms"] + CLOCK_SLACK_MS, m["leak_begin_ms"] - CLOCK_SLACK_MS)
        after = self.points(doc, m["leak_end_ms"] + CLOCK_SLACK_MS, m["exit_ms"] - CLOCK_SLACK_MS)
        for phase, pts in (("before", before), ("during", during), ("between", between), ("after", after)):
            # 500 ms each, a point due every 100 ms: at least one even on a loaded machine
            self.assertGreaterEqual(len(pts), 1, (phase, tl))
        for p in before + between:
            self.assertLess(p["live_bytes"], 1 << 20, p)
        for p in during:
            self.assertTrue(top <= p["live_bytes"] <= peak["live_bytes"], (p, top))
            self.assertGreater(p["rss_bytes"], top * 0.9, p)
        for p in after:
            self.assertTrue(leak <= p["live_bytes"] <= leak + (200 << 10), (p, leak))
        self.assertTrue(leak <= tl[-1]["live_bytes"] <= leak + (32 << 10), tl[-1])  # the point at exit
        self.assertGreater(tl[-1]["t_ms"], self.at(doc, m["exit_ms"]) - CLOCK_SLACK_MS)
        # and the text says so too
        r = self.ok(pa("stats", "-o", "-", "--", A.prog, "figures"))
        self.assertRegex(r.stdout, r"\nlive: +[\d.]+ MiB \(RSS [\d.]+ MiB\) at \d+\.\d{3} s; peak 3[12]\.\d MiB "
                                   r"\(RSS [\d.]+ MiB\) at \d+\.\d{3} s\n")

    def test_python_program(self):
        """tests/cli/figures.py under PYTHONMALLOC=malloc: 34 MB at its peak, 8.6 MB leaked, in objects
        whose mallocs are known (bytes of 47 bytes: 80 each; list items: 8 each; bytearrays). CPython
        frees its objects at exit, so the leak is read from the timeline before exit."""
        script = os.path.join(A.source, "tests", "cli", "figures.py")
        doc, m = self.stats_json("figures_py", [sys.executable, script])
        tl = self.check_timeline(doc)
        base = self.points(doc, m["start_ms"] + CLOCK_SLACK_MS, m["base_end_ms"] - CLOCK_SLACK_MS)
        self.assertGreaterEqual(len(base), 1, tl)
        base_live = max(p["live_bytes"] for p in base)  # the interpreter's own, with the program's busy()
        self.assertGreater(base_live, 500 << 10)  # CPython's objects are pyalloc's (PYTHONMALLOC=malloc)
        slack = 256 << 10  # what CPython allocates on its own meanwhile (frames, ints, caches)
        peak = doc["peak"]
        self.assertLess(abs(peak["live_bytes"] - base_live - m["peak_bytes"]), slack, (peak, base_live, m))
        self.assertGreaterEqual(self.at(doc, m["peak_end_ms"]) + CLOCK_SLACK_MS, peak["t_ms"], (peak, m))
        self.assertLessEqual(self.at(doc, m["peak_begin_ms"]) - CLOCK_SLACK_MS, peak["t_ms"], (peak, m))
        during = self.points(doc, m["peak_end_ms"] + CLOCK_SLACK_MS, m["free_begin_ms"] - CLOCK_SLACK_MS)
        between = self.points(doc, m["free_end_ms"] + CLOCK_SLACK_MS, m["leak_begin_ms"] - CLOCK_SLACK_MS)
        after = self.points(doc, m["leak_end_ms"] + CLOCK_SLACK_MS, m["exit_ms"] - CLOCK_SLACK_MS)
        for phase, pts in (("during", during), ("between", between), ("after", after)):
            self.assertGreaterEqual(len(pts), 1, (phase, tl))
        for p in during:
            self.assertLess(abs(p["live_bytes"] - base_live - m["peak_bytes"]), slack, (p, base_live))
        for p in between:
            self.assertLess(abs(p["live_bytes"] - base_live), slack, (p, base_live))
        for p in after:
            self.assertLess(abs(p["live_bytes"] - base_live - m["leak_bytes"]), slack, (p, base_live))
        # the small blocks of the peak: 200,000 bytes objects of 80 bytes, within the slack
        self.assertLess(abs(max(p["small_bytes"] for p in during) - min(p["small_bytes"] for p in base)
                            - 200000 * 80), slack)
        self.assertLess(tl[-1]["live_bytes"], base_live)  # at exit, after CPython freed its objects


# ---- top: a running process read from outside -----------------------------------------------------

TOP_STATUS = {"no_process": 3, "other_user": 4, "not_pyalloc": 5, "not_publishing": 6, "version": 7}


class Target:
    """A process to read: started, waited for until it says it is ready, killed at the end."""

    def __init__(self, argv, env, ready=r"ready"):
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.line = self.proc.stdout.readline()
        if not re.search(ready, self.line):
            self.stop()
            raise AssertionError("the target did not start: %r %r" % (self.line, self.proc.stderr.read()))
        self.kv = {k: int(v) for k, v in common_module().parse_kv(self.line).items() if v.isdigit()}
        self.pid = self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


class Top(Case):
    def hold(self, n=20000, size=100, secs=30, **env):
        """cli_prog holding n blocks of size bytes and 1 MiB, preloaded, busy (points every 100 ms)."""
        t = Target([A.prog, "hold", str(n), str(size), str(secs)], preload_env(**env))
        self.addCleanup(t.stop)
        time.sleep(0.35)  # a timeline point after the blocks were taken
        return t

    def once_json(self, pid, **kw):
        r = self.ok(pa("top", "--once", "--json", str(pid), **kw))
        return json.loads(r.stdout)

    def test_once_json(self):
        """One snapshot, as JSON on stdout: the blocks the target holds, in the class they went to, live
        bytes, RSS, the timeline; the keys of the library's report."""
        t = self.hold()
        doc = self.once_json(t.pid)
        self.assertEqual(doc["pid"], t.pid)
        self.assertEqual(doc["exe"], os.path.realpath(A.prog))
        self.assertEqual((doc["pyalloc"], doc["layout"], doc["alignment"], doc["page_size"]),
                         (header_version(), 1, 16, 32768))
        held = t.kv["bytes"]  # 20,000 x 112 (the class of 100 bytes) + 1 MiB, by malloc_usable_size
        live = doc["live"]
        self.assertEqual(live["bytes"], live["small_bytes"] + live["large_bytes"])
        # plus what libc keeps, and the program's 100 KiB block of the moment
        self.assertTrue(held <= live["bytes"] <= held + (100 << 10) + (32 << 10), (live, held))
        row = next(c for c in doc["classes"] if c["size"] == 112)
        self.assertTrue(20000 <= row["in_use"] <= 20000 + 64, row)
        self.assertEqual(row["allocs"] - row["frees"], row["in_use"])
        self.assertGreaterEqual(doc["peak"]["live_bytes"], live["bytes"])
        self.assertGreater(doc["rss_bytes"], held * 0.9)  # read from /proc now: the blocks were written
        self.assertLess(doc["snapshot_age_ms"], 2000)  # a point every 100 ms while the target is busy
        tl = doc["timeline"]
        self.assertGreaterEqual(len(tl), 2)
        self.assertEqual([p["t_ms"] for p in tl], sorted(p["t_ms"] for p in tl))
        self.assertTrue(held <= tl[-1]["live_bytes"] <= held + (132 << 10), tl[-1])
        # the figures move with the program: read again later, the timeline has grown
        time.sleep(0.3)
        again = self.once_json(t.pid)
        self.assertGreater(again["snapshots"], doc["snapshots"])
        self.assertGreater(again["t_ms"], doc["t_ms"])

    def test_once_text(self):
        """--once without --json: the frame of the live view, once, without escape sequences."""
        t = self.hold()
        r = self.ok(pa("top", "--once", str(t.pid)))
        self.assertNotIn("\x1b", r.stdout)
        self.assertTrue(r.stdout.startswith("pyalloc top: pid %d (%s hold 20000 100 30), pyalloc %s, up "
                                            % (t.pid, os.path.basename(A.prog), header_version())), r.stdout)
        self.assertRegex(r.stdout, r"\nlive: +3\.\d MiB \(small blocks 2\.\d MiB, passed to glibc 1\.\d MiB\)")
        self.assertRegex(r.stdout, r"(?m)^ +112 +\d+ +\d+ +200\d\d +\d+ +[\d.]+ MiB +2\.\d MiB$")

    def test_live_view_in_a_terminal(self):
        """The live view in a pseudo-terminal: the alternate screen, the figures, redrawn, and q quits."""
        import pty
        import select
        import struct
        import fcntl
        import termios
        t = self.hold()
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(A.command, [A.command, "top", "--interval", "0.2", str(t.pid)], clean_env(TERM="xterm"))
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        out, deadline = b"", time.time() + 20
        while out.count(b"(q quits") < 3 and time.time() < deadline:  # three frames
            if select.select([fd], [], [], 1)[0]:
                out += os.read(fd, 65536)
        os.write(fd, b"q")
        while time.time() < deadline:
            if not select.select([fd], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other side closed: top exited
                break
            if not chunk:
                break
            out += chunk
        if time.time() >= deadline:  # top did not quit: the test fails, without waiting for ever
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        text = out.decode(errors="replace")
        self.assertEqual(os.waitstatus_to_exitcode(status), 0, text[-2000:])
        self.assertGreaterEqual(text.count("(q quits; every 0.2 s)"), 3, text[-2000:])
        self.assertTrue(text.startswith("\x1b[?1049h"), text[:100])  # the alternate screen, and back
        self.assertTrue(text.rstrip().endswith("\x1b[?1049l"), text[-100:])
        self.assertIn("pyalloc top: pid %d (cli_prog hold 20000 100 30)" % t.pid, text)
        self.assertRegex(text, r"live: +3\.\d MiB")
        self.assertRegex(text, r"live +[\d.]+ MiB \|[ ▁▂▃▄▅▆▇█]+\|")  # the graph, 120 - 24 columns wide
        self.assertTrue(re.search(r"\|([ ▁▂▃▄▅▆▇█]{96})\|", text), text[-3000:])
        self.assertIsNone(t.proc.poll())  # the target ran on, untouched

    def test_live_view_ends_with_the_process(self):
        """The target exits: the live view says so and exits 0."""
        import pty
        import select
        t = self.hold(secs=1)
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(A.command, [A.command, "top", "--interval", "0.1", str(t.pid)], clean_env(TERM="xterm"))
        out, deadline = b"", time.time() + 20
        while time.time() < deadline:
            if not select.select([fd], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if time.time() >= deadline:  # top did not quit: the test fails, without waiting for ever
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        text = out.decode(errors="replace")
        self.assertEqual(os.waitstatus_to_exitcode(status), 0, text[-2000:])
        self.assertIn("pyalloc top: process %d exited" % t.pid, text)
        self.assertIsNotNone(t.proc.poll())

    def test_forked_child_publishes_its_own(self):
        """A forked child has its own publication (its pid, its own timeline), at the descriptor number
        of its parent's, which goes on with its own figures."""
        script = ("import os, sys, time\n"
                  "a = bytearray(3 << 20); a[::4096] = b'1' * len(a[::4096])\n"
                  "r, w = os.pipe()\n"
                  "child = os.fork()\n"
                  "if child == 0:\n"
                  "    b = bytearray(7 << 20); b[::4096] = b'1' * len(b[::4096])\n"
                  "    os.write(w, b'x')\n"
                  "else:\n"
                  "    os.read(r, 1); print('ready child=%d' % child, flush=True)\n"
                  "end = time.time() + 30\n"
                  "while time.time() < end:\n"
                  "    bytearray(100 << 10); time.sleep(0.02)\n")
        t = Target([sys.executable, "-c", script], preload_env(PYTHONMALLOC="malloc"))
        self.addCleanup(t.stop)
        parent, child = t.pid, t.kv["child"]
        self.addCleanup(lambda: os.kill(child, signal.SIGKILL) if os.path.exists("/proc/%d" % child) else None)
        time.sleep(0.35)
        mom, kid = self.once_json(parent), self.once_json(child)
        self.assertEqual((mom["pid"], kid["pid"]), (parent, child))
        self.assertTrue((3 << 20) <= mom["live"]["large_bytes"] < (7 << 20), mom["live"])
        self.assertGreaterEqual(kid["live"]["large_bytes"], 10 << 20)  # its parent's 3 MiB, and its 7
        self.assertGreater(kid["start_unix_ms"], mom["start_unix_ms"])  # its own timeline, from the fork
        self.assertLess(kid["timeline"][0]["t_ms"], 200)
        links = {}
        for p in (parent, child):
            fds = [int(n) for n in os.listdir("/proc/%d/fd" % p)
                   if os.readlink("/proc/%d/fd/%s" % (p, n)) == "/memfd:pyalloc (deleted)"]
            self.assertEqual(len(fds), 1, (p, fds))
            links[p] = (fds[0], os.stat("/proc/%d/fd/%d" % (p, fds[0])).st_ino)
        self.assertEqual(links[parent][0], links[child][0])  # the same number ...
        self.assertNotEqual(links[parent][1], links[child][1])  # ... another file

    def test_no_such_process(self):
        dead = subprocess.Popen(["true"])
        dead.wait()
        r = self.status(pa("top", "--once", str(dead.pid)), TOP_STATUS["no_process"])
        self.assertEqual(r.stderr, "pyalloc top: no process %d\n" % dead.pid)
        self.assertEqual(r.stdout, "")
        # and one killed while top is away: nothing of its publication is left to find
        t = self.hold()
        self.ok(pa("top", "--once", str(t.pid)))
        t.proc.kill()
        t.proc.wait()
        self.status(pa("top", "--once", "--json", str(t.pid)), TOP_STATUS["no_process"])

    def test_another_users_process(self):
        """Only the target's user, or root, can read it: as root, a process of root read by nobody
        (setpriv), and a process of nobody read by root."""
        if os.getuid() != 0:  # a process of another user: any will do, pyalloc or not
            other = next((int(n) for n in os.listdir("/proc") if n.isdigit()
                          and os.stat("/proc/" + n).st_uid != os.getuid()), None)
            self.assertIsNotNone(other, "no process of another user to read")
            r = self.status(pa("top", "--once", str(other)), TOP_STATUS["other_user"])
            self.assertIn("only that user or root can read it", r.stderr)
            return
        self.assertIsNotNone(shutil.which("setpriv"), "setpriv (util-linux) is missing")
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        t = self.hold()
        r = self.status(run(nobody + [sys.executable, A.command, "top", "--once", str(t.pid)]),
                        TOP_STATUS["other_user"])
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        self.assertRegex(r.stderr, r"^pyalloc top: process %d \(cli_prog hold 20000 100 30\) belongs to root: only that "
                                   r"user or root can read it\n$" % t.pid)
        t2 = Target(nobody + [A.prog, "hold", "100", "100", "30"], preload_env())
        self.addCleanup(t2.stop)
        time.sleep(0.35)
        self.assertEqual(self.once_json(t2.pid)["pid"], t2.pid)  # root reads nobody's

    def test_not_running_pyalloc(self):
        t = Target(["sh", "-c", "echo ready; exec sleep 30"], clean_env())
        self.addCleanup(t.stop)
        r = self.status(pa("top", "--once", str(t.pid)), TOP_STATUS["not_pyalloc"])
        self.assertEqual(r.stderr, "pyalloc top: process %d (sleep 30) is not running pyalloc (no libpyalloc in its "
                                   "memory and no publication among its descriptors)\n" % t.pid)

    def test_publishing_off(self):
        t = self.hold(PYALLOC_PUBLISH="0")
        r = self.status(pa("top", "--once", str(t.pid)), TOP_STATUS["not_publishing"])
        self.assertIn("runs with PYALLOC_PUBLISH=0: it publishes nothing for top", r.stderr)
        # a program that closed every descriptor it did not open
        t = Target([sys.executable, "-c",
                    "import os, time; os.closerange(3, 4096); print('ready', flush=True); time.sleep(30)"],
                   preload_env(PYTHONMALLOC="malloc"))
        self.addCleanup(t.stop)
        r = self.status(pa("top", "--once", str(t.pid)), TOP_STATUS["not_publishing"])
        self.assertIn("runs pyalloc, but closed the descriptor it publishes through", r.stderr)

    def test_version_mismatch(self):
        """A publication of another layout (here, made by hand with a memfd named pyalloc): the
        message names the target's version and layout and this command's."""
        maker = ("import os, struct, sys, time\n"
                 "fd = os.memfd_create('pyalloc')\n"
                 "os.ftruncate(fd, 4096)\n"
                 "magic = int(sys.argv[1], 16)\n"
                 "os.pwrite(fd, struct.pack('<QII16sQQQ12I', magic, 99, 112, b'9.9.9', os.getpid(), 0, 0, *[0] * 12), 0)\n"
                 "print('ready', flush=True)\n"
                 "time.sleep(30)\n")
        t = Target([sys.executable, "-c", maker, "0a636f6c6c617970"], clean_env())
        self.addCleanup(t.stop)
        r = self.status(pa("top", "--once", "--json", str(t.pid)), TOP_STATUS["version"])
        self.assertEqual(r.stdout, "")
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        self.assertIn("runs pyalloc 9.9.9, whose publication has layout 99; this pyalloc top (%s) reads layout 1"
                      % header_version(), r.stderr)
        bad = Target([sys.executable, "-c", maker, "1234"], clean_env())
        self.addCleanup(bad.stop)
        r = self.status(pa("top", "--once", str(bad.pid)), TOP_STATUS["version"])
        self.assertIn("does not start with pyalloc's magic number", r.stderr)

    def test_usage(self):
        t = self.hold()
        for args, msg in ((["top"], "no process id given"),
                          (["top", "abc"], "top needs one process id (got 'abc')"),
                          (["top", "--json", str(t.pid)], "--json goes with --once"),
                          (["top", "--interval", "0", str(t.pid)], "--interval needs seconds from 0.05 to 3600"),
                          (["top", str(t.pid)], "standard output is not a terminal")):
            r = self.status(pa(*args), EXIT_USAGE_STATUS)
            self.assertIn(msg, r.stderr.splitlines()[0], args)
        self.ok(pa("top", "--help"))
        self.assertIsNone(t.proc.poll())


class Plot(Case):
    def test_png_and_svg(self):
        if not shutil.which("gnuplot"):
            self.fail("gnuplot is not installed: apt-get install gnuplot-nox")
        d = work("plot")
        png, svg = os.path.join(d, "classes.png"), os.path.join(d, "classes.svg")
        r = self.ok(pa("stats", "--plot", png, "-o", os.devnull, "--", A.prog, "alloc", "1000", "200"))
        self.assertIn("plot written to %s" % png, r.stderr)
        with open(png, "rb") as f:
            data = f.read()
        self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
        self.assertGreater(len(data), 5000)
        r = self.ok(pa("stats", "--align", "8", "--plot", svg, "-o", os.devnull, "--", A.prog, "alloc", "1000", "200"))
        with open(svg) as f:
            text = f.read()
        self.assertIn("<svg", text)
        for label in ("memory over time", ">live (small blocks + passed to glibc)<", ">RSS<", ">peak ",
                      "memory per size class", ">200<", ">504<"):
            self.assertIn(label, text)  # classic mode: every 8-byte class on the axis
        # a relative plot path is relative to the caller's directory, and CMD's failure still plots
        r = self.status(pa("stats", "--plot", "rel.svg", "-o", os.devnull, "--", A.prog, "exit", "4", cwd=d), 4)
        self.assertTrue(os.path.getsize(os.path.join(d, "rel.svg")) > 0)


# ---- bench -------------------------------------------------------------------------------------------

class Bench(Case):
    def test_list(self):
        r = self.ok(pa("bench", "--list"))
        self.assertIn("churn-1k", r.stdout)

    def test_quick_one_benchmark(self):
        r = self.ok(pa("bench", "--quick", "--benchmarks", "churn-1k", "--allocators", "pyalloc", timeout=600))
        self.assertRegex(r.stdout, r"\| churn-1k \| ok \| ok \|")
        self.assertIn("quick: 2 runs, 2 ok, 0 failed", r.stdout)
        lib = self.ok(pa("lib")).stdout.strip()
        self.assertIn("malloc served by %s" % lib, r.stderr)  # the runner was given this build's library

    def test_missing_library(self):
        r = self.status(pa("bench", "--lib", "/nonexistent/libpyalloc.so", "--quick"), 125)
        self.assertIn("/nonexistent/libpyalloc.so", r.stderr)


# ---- install -----------------------------------------------------------------------------------------

class Install(Case):
    def test_installed_copy(self):
        if not A.cmake:
            self.skipTest("no --cmake")
        d = work("install")
        prefix = os.path.join(d, "prefix")
        r = run([A.cmake, "--install", A.build, "--prefix", prefix], timeout=300)
        self.ok(r, "cmake --install")
        exe = os.path.join(prefix, "bin", "pyalloc")
        self.assertTrue(os.access(exe, os.X_OK))
        with open(exe) as f:
            text = f.read()
        self.assertTrue(text.startswith("#!/usr/bin/python3\n") or text.startswith("#!/"), text[:40])
        self.assertNotIn("@PYALLOC_CFG_", text)
        self.assertIn('"mode": "installed"', text)
        self.assertIn('"prefix": "%s"' % prefix, text)
        man = os.path.join(prefix, "share", "man", "man1", "pyalloc.1")
        self.assertTrue(os.path.isfile(man), man)
        self.assertEqual(self.ok(pa("--version", cmd=exe)).stdout, "pyalloc %s\n" % header_version())
        lib = self.ok(pa("lib", cmd=exe)).stdout.strip()
        self.assertTrue(lib.startswith(prefix + os.sep) and os.path.basename(lib) == "libpyalloc.so.0", lib)
        self.assertEqual(usable(self.ok(pa("run", "--align", "8", "--", A.prog, "usable", cmd=exe))), (24, 8))
        # stats --sites: the installed copy finds its module (share/pyalloc/tools/pyalloc_sites.py)
        r = self.ok(pa("stats", "--sites", "--sample-bytes", "4096", "-o", "-", "--", A.prog, "alloc", "2000", "3000",
                       cmd=exe))
        self.assertIn("live at exit: leaks", r.stdout)
        # moved elsewhere (a package unpacked into another root), it finds the moved library
        moved = os.path.join(d, "moved")
        os.rename(prefix, moved)
        exe = os.path.join(moved, "bin", "pyalloc")
        lib = self.ok(pa("lib", cmd=exe)).stdout.strip()
        self.assertTrue(lib.startswith(moved + os.sep), lib)
        self.assertEqual(usable(self.ok(pa("run", "--", A.prog, "usable", cmd=exe))), (32, 16))
        # it draws with the helper module installed beside its data (share/pyalloc/tools), and leaves
        # no byte code there
        if lib_has_stats() and shutil.which("gnuplot"):
            svg = os.path.join(d, "installed.svg")
            self.ok(pa("stats", "--plot", svg, "-o", os.devnull, "--", A.prog, "alloc", "100", "200", cmd=exe))
            with open(svg) as f:
                self.assertIn("memory over time", f.read())
        # the installed benchmark runner and programs
        bench = os.path.join(moved, "share", "pyalloc", "bench", "run.py")
        if os.path.isfile(bench):
            self.assertIn("churn-1k", self.ok(pa("bench", "--list", cmd=exe)).stdout)
            r = self.ok(pa("bench", "--quick", "--benchmarks", "churn-1k", "--allocators", "pyalloc", cmd=exe, cwd=d,
                           timeout=600))
            self.assertIn("quick: 2 runs, 2 ok, 0 failed", r.stdout)
            self.assertIn("malloc served by %s" % lib, r.stderr)
            self.assertFalse(os.path.exists(os.path.join(moved, "share", "pyalloc", "bench", "results")))
            self.assertEqual([p for p, _, _ in os.walk(os.path.join(moved, "share")) if "__pycache__" in p], [])
            # its --help shows the defaults of the installed command, not the source tree's
            r = self.ok(pa("bench", "--help", cmd=exe, cwd=d, env=clean_env(COLUMNS="500")))
            self.assertIn("usage: pyalloc bench", r.stdout)
            self.assertIn("(default %s)" % lib, r.stdout)
            self.assertIn("(default %s)" % os.path.join(moved, "libexec", "pyalloc", "bench"), r.stdout)
            self.assertIn("(default %s)" % os.path.join(os.path.realpath(d), "pyalloc-bench-<date-time>"), r.stdout)
            text = r.stdout.replace(os.path.realpath(d), "D").replace(d, "D")  # d lies in a build tree
            for wrong in ("build/release", "build/bench", "bench/results", "  bench/run.py "):
                self.assertNotIn(wrong, text)
        else:
            r = self.status(pa("bench", "--list", cmd=exe), 125)
            self.assertIn("not installed", r.stderr)


# ---- man page ----------------------------------------------------------------------------------------

SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "ENVIRONMENT", "EXIT STATUS", "FILES",
            "EXAMPLES", "SEE ALSO"]


class Man(Case):
    def setUp(self):
        self.page = os.path.join(A.source, "docs", "pyalloc.1")
        with open(self.page) as f:
            self.src = f.read()

    def section(self, name):
        m = re.search(r'^\.SH "?%s"?\n(.*?)(?=^\.SH |\Z)' % re.escape(name), self.src, re.M | re.S)
        self.assertIsNotNone(m, "no section %s" % name)
        return m.group(1)

    def test_sections_in_order(self):
        found = [s.strip('"') for s in re.findall(r"^\.SH (.*)$", self.src, re.M)]
        self.assertEqual([s for s in found if s in SECTIONS], SECTIONS)

    def test_groff_has_no_warnings(self):
        groff = shutil.which("groff")
        if not groff:
            self.fail("groff is not installed: apt-get install groff-base")
        r = run([groff, "-man", "-Tutf8", "-ww", "-z", self.page])
        self.ok(r, "groff")
        self.assertEqual(r.stderr, "", "groff warnings:\n" + r.stderr)

    def test_man_renders_it(self):
        man = shutil.which("man")
        if not man:
            self.fail("man is not installed: apt-get install man-db")
        r = self.ok(run([man, "-l", self.page], env=clean_env(MANPAGER="cat", PAGER="cat", MANWIDTH="100",
                                                               LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING=None)))
        text = re.sub(r".\x08", "", r.stdout)
        for s in SECTIONS:
            self.assertRegex(text, r"(?m)^%s$" % s)
        self.assertIn("pyalloc run", text)

    def test_documents_every_command_and_option(self):
        commands = self.section("COMMANDS")
        for sub in ("run", "stats", "top", "bench", "lib", "help"):
            self.assertRegex(commands, r"(?m)^\.B.*\b%s\b" % sub, sub)
        options = self.section("OPTIONS") + commands
        opts = ["--lib", "--stats", "--stats-file", "--json", "--plot", "--output", "--all", "--help", "--version",
                "--pymalloc", "--once", "--interval"]
        opts += [option_of(n) for n in documented_variables()]
        for opt in opts:
            self.assertIn(opt.replace("-", r"\-"), options, opt)
            self.assertIn(opt.replace("-", r"\-"), self.section("SYNOPSIS") + options, opt)
        status = self.section("EXIT STATUS")
        for code in ("125", "126", "127", "128"):
            self.assertIn(code, status)
        for code in range(3, 8):  # top's
            self.assertRegex(status, r"(?m)^\.B %d\n\.BR top :" % code)

    def test_documents_every_variable(self):
        """Every PYALLOC_* variable the library reads (src/), docs/options.md lists or the command reads."""
        env = self.section("ENVIRONMENT")
        names = set()
        src = os.path.join(A.source, "src")
        for n in sorted(os.listdir(src)):
            if n.endswith((".c", ".h")):
                with open(os.path.join(src, n)) as f:
                    names |= set(re.findall(r'"(PYALLOC_[A-Z0-9_]+)', f.read()))
        with open(os.path.join(A.source, "docs", "options.md")) as f:
            names |= set(re.findall(r"`(PYALLOC_[A-Z0-9_]+)", f.read()))
        with open(A.source_command) as f:
            names |= set(re.findall(r'"(PYALLOC_[A-Z0-9_]+)"', f.read()))
        names = {n.rstrip("_") for n in names} | {"PYTHONMALLOC"}  # the command sets it
        self.assertTrue({"PYALLOC_ALIGN", "PYALLOC_LIB"} <= names, names)
        missing = sorted(n for n in names if not re.search(r"^\.B %s$|^\.BR? %s\b" % (n, n), env, re.M))
        self.assertEqual(missing, [], "variables missing from ENVIRONMENT in docs/pyalloc.1")

    def test_states_documented_defaults(self):
        """Each variable's entry in ENVIRONMENT states the default docs/options.md gives."""
        env = self.section("ENVIRONMENT")
        for name, default in documented_variables().items():
            m = re.search(r"^\.B %s\n(.*?)(?=^\.TP|\Z)" % name, env, re.M | re.S)
            self.assertIsNotNone(m, name)
            self.assertIn(default.strip(), m.group(1), "%s: default %r not stated" % (name, default))

    def test_user_guide(self):
        with open(os.path.join(A.source, "docs", "command.md")) as f:
            guide = f.read()
        for sub in ("pyalloc run", "pyalloc stats", "pyalloc top", "pyalloc bench", "pyalloc lib"):
            self.assertIn(sub, guide)


GROUPS = {"basic": [Basic], "run": [Run], "stats": [Stats], "report": [Report], "figures": [Figures], "top": [Top],
          "plot": [Plot], "bench": [Bench],
          "install": [Install], "man": [Man]}


def main():
    global A
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help="the source tree")
    p.add_argument("--build", required=True, help="the build tree (its pyalloc command is tested)")
    p.add_argument("--lib", required=True, help="this build's libpyalloc.so")
    p.add_argument("--prog", required=True, help="cli_prog")
    p.add_argument("--work", required=True, help="scratch directory")
    p.add_argument("--cmake", help="cmake, for the install group")
    p.add_argument("group", choices=sorted(GROUPS))
    p.add_argument("tests", nargs="*", help="unittest names (Class.test_x) to run, default all of the group")
    A = p.parse_args()
    A.command = os.path.join(A.build, "pyalloc")
    A.source_command = os.path.join(A.source, "tools", "pyalloc")
    A.work = os.path.abspath(os.path.join(A.work, A.group))
    shutil.rmtree(A.work, ignore_errors=True)
    os.makedirs(A.work)
    if A.group in ("stats", "report", "plot", "figures", "top"):
        if not lib_has_stats():
            print("SKIP: %s has no PYALLOC_STATS support yet (the library's statistics): nothing to report"
                  % A.lib)
            return SKIP
        probe = os.path.join(A.work, "probe.json")
        r = pa("stats", "--json", "-o", probe, "--", A.prog, "exit", "0")
        if r.returncode == 0 and json.load(open(probe)).get("counters") is False:
            print("SKIP: %s was built without statistics counters (-DPYALLOC_STATS=OFF)" % A.lib)
            return SKIP
    loader = unittest.TestLoader()
    if A.tests:
        suite = loader.loadTestsFromNames(A.tests, sys.modules[__name__])
    else:
        suite = unittest.TestSuite(loader.loadTestsFromTestCase(c) for c in GROUPS[A.group])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
