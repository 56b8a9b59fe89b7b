# SPDX-License-Identifier: MIT
"""The allocators compared, the environment that selects each, and the probe proving it took.

ld.so ignores an LD_PRELOAD it cannot open with only a warning, and the program then runs on
glibc; so before any timing, bench/probe (built with the benchmarks) runs under each allocator and
must report that malloc is defined by the preloaded library.
"""
import os
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import pyalloc_common

LIBDIR = "/usr/lib/x86_64-linux-gnu"

# Variables that would change which allocator or mode a run gets: removed from every run's
# environment, then set per allocator (or per benchmark).
CONTROLLED = ("LD_PRELOAD", "PYTHONMALLOC", "PYALLOC_ALIGN", "PYALLOC_BACKGROUND", "PYALLOC_MESH", "PYALLOC_SITES",
              "PYALLOC_SAMPLE_BYTES", "PYALLOC_SITES_FILE")


@dataclass
class Allocator:
    name: str
    lib: Optional[str]  # None: glibc, no preload
    env: Dict[str, str] = field(default_factory=dict)
    package: str = ""  # Debian package that ships lib
    expect_align: int = 0  # pa_alignment_mode() expected, 0: not checked
    probe: Dict[str, str] = field(default_factory=dict)
    default: bool = True  # run when --allocators does not name the allocators; else only when named

    @property
    def describe(self) -> str:
        how = "no preload" if not self.lib else "LD_PRELOAD=" + self.lib
        how += "".join(" %s=%s" % kv for kv in self.env.items())
        if self.probe:
            how += "; malloc served by %s; malloc_usable_size(malloc(32)) = %s" % (
                self.probe.get("malloc_from"), self.probe.get("usable32"))
        return how

    def environ(self, extra: Dict[str, str]) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
        env["PYTHONHASHSEED"] = "0"
        env.update(self.env)
        env.update(extra)
        if self.lib:
            env["LD_PRELOAD"] = self.lib
        return env


def table(pyalloc_lib: str) -> List[Allocator]:
    return [
        Allocator("glibc", None),
        Allocator("pyalloc", pyalloc_lib, expect_align=16),
        Allocator("pyalloc-a8", pyalloc_lib, {"PYALLOC_ALIGN": "8"}, expect_align=8),
        Allocator("pyalloc-mesh", pyalloc_lib, {"PYALLOC_MESH": "1"}, expect_align=16),
        # allocation sites on at the default rate (what `pyalloc stats --sites` costs); only when named
        Allocator("pyalloc-sites", pyalloc_lib, {"PYALLOC_SITES": "1", "PYALLOC_SITES_FILE": "/dev/null"},
                  expect_align=16, default=False),
        Allocator("mimalloc", LIBDIR + "/libmimalloc.so.2", package="libmimalloc2.0"),
        Allocator("jemalloc", LIBDIR + "/libjemalloc.so.2", package="libjemalloc2"),
        Allocator("tcmalloc", LIBDIR + "/libtcmalloc_minimal.so.4", package="libtcmalloc-minimal4"),
    ]


def choose(all_allocs: List[Allocator], names: Optional[str], log) -> List[Allocator]:
    """The allocators to run: those named (glibc always first, it is the reference), or every one
    whose library is present. A named one that is missing is an error; an unnamed one a note."""
    by_name = {a.name: a for a in all_allocs}
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise SystemExit("unknown allocator(s): %s; known: %s" % (", ".join(unknown), ", ".join(by_name)))
        chosen = [by_name["glibc"]] + [by_name[n] for n in wanted if n != "glibc"]
        missing = [a for a in chosen if a.lib and not os.path.exists(a.lib)]
        if missing:
            raise SystemExit("library not found: " + ", ".join("%s (%s)" % (a.name, a.lib) for a in missing))
        return chosen
    chosen = []
    for a in all_allocs:
        if not a.default:
            continue
        if a.lib and not os.path.exists(a.lib):
            hint = " (apt-get install %s, or scripts/bench.sh --install-peers)" % a.package if a.package else ""
            log("note: skipping %s: %s not found%s" % (a.name, a.lib, hint))
            continue
        chosen.append(a)
    return chosen


def verify(alloc: Allocator, probe_bin: str) -> None:
    """Runs the probe under alloc; raises SystemExit unless malloc really comes from alloc.lib."""
    env = alloc.environ({})
    r = subprocess.run(["true"], env=env, capture_output=True, text=True)
    if r.returncode != 0 or "ld.so" in r.stderr:
        raise SystemExit("%s: LD_PRELOAD=%s does not run `true`: %s" % (alloc.name, alloc.lib, r.stderr.strip()))
    r = subprocess.run([probe_bin], env=env, capture_output=True, text=True)
    info = pyalloc_common.parse_kv(r.stdout)
    if r.returncode != 0 or "malloc_from" not in info:
        raise SystemExit("%s: probe failed (exit %d): %s" % (alloc.name, r.returncode, r.stderr.strip()))
    if "ld.so" in r.stderr:
        raise SystemExit("%s: ld.so complained: %s" % (alloc.name, r.stderr.strip()))
    served_by = os.path.realpath(info["malloc_from"])
    if alloc.lib is None:
        ok = os.path.basename(served_by).startswith("libc")
    else:
        ok = served_by == os.path.realpath(alloc.lib)
    if not ok:
        raise SystemExit("%s: malloc is served by %s, not %s: the preload did not take"
                         % (alloc.name, served_by, alloc.lib or "glibc"))
    if alloc.expect_align:
        mode = int(info.get("align_mode", "0"))
        if mode == 0:
            raise SystemExit("%s: %s does not export pa_alignment_mode" % (alloc.name, alloc.lib))
        if mode != alloc.expect_align:
            raise SystemExit("%s: pa_alignment_mode() is %d, expected %d" % (alloc.name, mode, alloc.expect_align))
    alloc.probe = info
