# SPDX-License-Identifier: MIT
"""Building the benchmark programs, and running one process: wall time and rusage measured by
bench/measure (fork, exec, wait4), stdout parsed for `checksum=` and other key=value results."""
import hashlib
import os
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import pyalloc_common


def build_programs(root: str, build_dir: str, log) -> str:
    """Configures (once) and builds bench/ on its own with CMake; returns the directory of the
    programs. Incremental, so it is cheap when nothing changed."""
    src = os.path.join(root, "bench")
    steps = []
    if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
        steps.append(["cmake", "-S", src, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release"])
    steps.append(["cmake", "--build", build_dir, "-j", str(os.cpu_count() or 2)])
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log(r.stdout + r.stderr)
            raise SystemExit("building the benchmarks failed: " + " ".join(cmd))
    return build_dir


def build_library_variant(root: str, build_dir: str, options, log) -> str:
    """Configures (once) and builds libpyalloc.so with extra CMake options (e.g. PYALLOC_STATS=OFF
    for --callgrind's cost-of-counters row); returns the library's path."""
    steps = []
    if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
        steps.append(["cmake", "-S", root, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                      "-DPYALLOC_BUILD_TESTS=OFF", "-DPYALLOC_BUILD_BENCH=OFF"] + ["-D" + o for o in options])
    steps.append(["cmake", "--build", build_dir, "--target", "pyalloc", "-j", str(os.cpu_count() or 2)])
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log(r.stdout + r.stderr)
            raise SystemExit("building a library variant failed: " + " ".join(cmd))
    return os.path.join(build_dir, "libpyalloc.so")


@dataclass
class Run:
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kb: int
    exit_code: int  # negative: killed by that signal
    timed_out: bool
    checksum: str
    results: Dict[str, str] = field(default_factory=dict)  # other key=value pairs on stdout
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def parse_output(stdout: bytes):
    """The `checksum=` line's value and the other key=value pairs; a program that prints no checksum
    line (sqlite3) is checksummed by a hash of its whole output."""
    text = stdout.decode("utf-8", "replace")
    results = pyalloc_common.parse_kv(text)
    results.pop("checksum", None)
    lines = [line for line in text.splitlines() if line.startswith("checksum=")]
    checksum = lines[-1].split("=", 1)[1].strip() if lines else None
    if checksum is None:
        checksum = "sha256:" + hashlib.sha256(stdout).hexdigest()[:16]
    return checksum, results


def _parse_measure(path: str) -> Dict[str, str]:
    try:
        with open(path) as f:
            return pyalloc_common.parse_kv(f.read())
    except OSError:
        return {}


def run_once(measure: str, argv: List[str], env: Dict[str, str], stdin_path: Optional[str],
             timeout: float) -> Run:
    """Runs argv through the `measure` launcher (bench/measure.c), which times it and reports its
    own rusage; an LD_PRELOAD in env is handed to the command only, not to the launcher."""
    env = dict(env)
    env["MEASURE_PRELOAD"] = env.pop("LD_PRELOAD", "")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r", suffix=".measure") as res, \
            open(stdin_path or os.devnull, "rb") as inp:
        proc = subprocess.Popen([measure, res.name] + argv, stdin=inp, stdout=out, stderr=err, env=env,
                                start_new_session=True)
        timed_out = []

        def kill():
            timed_out.append(True)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            launcher_status = proc.wait()
        finally:
            timer.cancel()
        m = _parse_measure(res.name)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if launcher_status != 0 or "wait_status" not in m:
        return Run(wall_s=0.0, user_s=0.0, sys_s=0.0, maxrss_kb=0, exit_code=launcher_status or -1,
                   timed_out=bool(timed_out), checksum="", stderr=stderr.decode("utf-8", "replace"))
    checksum, results = parse_output(stdout)
    # A benchmark that also waits on purpose (footprint idles to let allocators give memory back)
    # reports the time of its work as timed_s=; otherwise the process's wall time is the figure.
    wall = float(results["timed_s"]) if "timed_s" in results else float(m["wall_s"])
    return Run(wall_s=wall, user_s=float(m["user_s"]), sys_s=float(m["sys_s"]),
               maxrss_kb=int(m["maxrss_kb"]), exit_code=os.waitstatus_to_exitcode(int(m["wait_status"])),
               timed_out=bool(timed_out), checksum=checksum, results=results,
               stderr=stderr.decode("utf-8", "replace"))
