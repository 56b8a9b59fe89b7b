# SPDX-License-Identifier: MIT
"""The allocation sites of `pyalloc stats --sites`: the library's data read, its return addresses
named, the sites reported (text, JSON, folded stacks). Python 3 standard library only; imported by
tools/pyalloc, and runnable on its own on a data file:

    python3 tools/pyalloc_sites.py [--json] [--top N] [--folded FILE] [--folded-leaks FILE] DATA

The library's data (src/sample.c writes it at exit to PYALLOC_SITES_FILE): one record a line, fields
separated by spaces; a text field has its bytes below '!', '%' and above '~' written %XX ("%" alone:
empty):
    pyalloc-sites 1
    version V | pid P | sample_bytes R | samples N DROPPED | python (3.11|other|none) PY_VERSION
    peak SET T_MS (samples|allocator)          the moment "live at the peak" describes
    exit T_MS (exit|python-finalize)           ... and "live at exit"
    object ID MAP_START MAP_END LOAD_BIAS BUILD_ID PATH
    string ID TEXT
    stack ID (SAMPLES BYTES BLOCKS VARIANCE) x 3 NNATIVE PC... NPY (FILE NAME LINE ENTRY)...
    end
The three sums of a stack are for every sample, those live at the peak, and those live at exit;
BYTES and BLOCKS are estimates (each sample weighted size / (1 - exp(-size / R))), VARIANCE the
estimate's variance. PCs are return addresses, innermost first; Python frames (FILE and NAME are
string ids) innermost first, ENTRY marking the first frame of each _PyEval_EvalFrameDefault call.

Naming: each address falls in an object of the load map; its ELF symbol table (.symtab, or the
separate debug file /usr/lib/debug/.build-id/xx/yyyy.debug, else .dynsym) gives the function, and
addr2line (binutils), where the object has DWARF line tables, the file, line and inlined callers.
"""
import bisect
import json
import math
import mmap
import os
import re
import shutil
import struct
import subprocess
import sys

FORMAT = "pyalloc-sites 1"

# Functions of the allocator itself, left off the top of a stack (a libpyalloc.a linked into the
# program has no object of its own to tell them by).
ALLOCATOR_FUNCTIONS = {
    "malloc", "calloc", "realloc", "free", "cfree", "posix_memalign", "aligned_alloc", "memalign",
    "valloc", "pvalloc", "reallocarray", "realloc_small", "alloc_aligned", "pa_malloc_slow",
    "pa_malloc_counted", "pa_malloc_sampled", "pa_sample_sys", "pa_malloc", "pa_calloc", "pa_realloc",
    "pa_posix_memalign", "pa_aligned_alloc", "pa_memalign", "pa_valloc", "pa_pvalloc",
}
PY_EVAL = "_PyEval_EvalFrameDefault"


class SitesError(Exception):
    pass


# ---- the library's data --------------------------------------------------------------------------

def unescape(field):
    if field == "%":
        return ""
    out, i = bytearray(), 0
    b = field.encode("latin-1")
    while i < len(b):
        if b[i] == 0x25 and i + 2 < len(b):
            out.append(int(b[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(b[i])
            i += 1
    return out.decode("utf-8", "replace")


def parse(text):
    """The library's data as a dict; SitesError if it is not that."""
    lines = text.split("\n")
    if not lines or lines[0] != FORMAT:
        raise SitesError("not pyalloc sites data (first line %r, expected %r)" % (lines[0][:40] if lines else "", FORMAT))
    d = {"objects": [], "strings": {}, "stacks": [], "complete": False}
    for line in lines[1:]:
        w = line.split(" ")
        key = w[0]
        try:
            if key == "version":
                d["version"] = unescape(w[1])
            elif key == "pid":
                d["pid"] = int(w[1])
            elif key == "sample_bytes":
                d["sample_bytes"] = int(w[1])
            elif key == "samples":
                d["samples"], d["dropped"] = int(w[1]), int(w[2])
            elif key == "python":
                d["python"], d["python_version"] = w[1], int(w[2])
            elif key == "peak":
                d["peak"] = {"set": w[1] == "1", "t_ms": int(w[2]), "source": w[3]}
            elif key == "exit":
                d["exit"] = {"t_ms": int(w[1]), "source": w[2]}
            elif key == "object":
                d["objects"].append({"id": int(w[1]), "start": int(w[2], 16), "end": int(w[3], 16),
                                     "bias": int(w[4], 16), "build_id": unescape(w[5]), "path": unescape(w[6])})
            elif key == "string":
                d["strings"][int(w[1])] = unescape(w[2]) if len(w) > 2 else ""
            elif key == "stack":
                nums = [int(x) for x in w[2:14]]
                sums = [dict(zip(("samples", "bytes", "blocks", "variance"), nums[i:i + 4])) for i in (0, 4, 8)]
                k = 14
                nnat = int(w[k])
                pcs = [int(x, 16) for x in w[k + 1:k + 1 + nnat]]
                k += 1 + nnat
                npy = int(w[k])
                py = [tuple(int(x) for x in w[k + 1 + 4 * i:k + 5 + 4 * i]) for i in range(npy)]
                d["stacks"].append({"id": int(w[1]), "all": sums[0], "peak": sums[1], "exit": sums[2],
                                    "pcs": pcs, "py": py})
            elif key == "end":
                d["complete"] = True
        except (IndexError, ValueError) as e:
            raise SitesError("malformed line in the sites data: %r (%s)" % (line[:120], e))
    for need in ("pid", "sample_bytes", "samples"):
        if need not in d:
            raise SitesError("the sites data has no %r line" % need)
    return d


def load(path):
    try:
        with open(path, encoding="latin-1") as f:
            return parse(f.read())
    except OSError as e:
        raise SitesError("cannot read %s: %s" % (path, e.strerror))


# ---- ELF symbols ---------------------------------------------------------------------------------

class ElfSymbols:
    """Function symbols of one ELF file: name of the function holding a virtual address."""

    def __init__(self, path):
        self.path = path
        self.starts, self.ends, self.names = [], [], []
        self.has_lines = False
        self.debug_file = None
        self.build_id = ""
        syms = self._read(path)
        if self.build_id:
            dbg = "/usr/lib/debug/.build-id/%s/%s.debug" % (self.build_id[:2], self.build_id[2:])
            if os.path.isfile(dbg):
                self.debug_file = dbg
                more = self._read(dbg, keep_build_id=True)
                syms = more or syms
        syms.sort()
        for start, size, name in syms:
            self.starts.append(start)
            self.ends.append(start + max(size, 1))
            self.names.append(name)

    def _read(self, path, keep_build_id=False):
        try:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return self._parse(m, keep_build_id)
        except (OSError, ValueError, struct.error):
            return []

    def _parse(self, m, keep_build_id):
        if m[:4] != b"\x7fELF" or m[4] != 2 or m[5] != 1:
            return []
        shoff, = struct.unpack_from("<Q", m, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", m, 0x3a)
        secs = [struct.unpack_from("<IIQQQQIIQQ", m, shoff + i * shentsize) for i in range(shnum)]
        if shstrndx >= len(secs):
            return []
        shstr = secs[shstrndx]

        def secname(s):
            off = shstr[4] + s[0]
            return m[off:m.find(b"\0", off)].decode("latin-1")

        names = [secname(s) for s in secs]
        if ".debug_line" in names or ".zdebug_line" in names:
            self.has_lines = True
        if not keep_build_id:
            for s, n in zip(secs, names):
                if n == ".note.gnu.build-id" and s[5] >= 16:
                    namesz, descsz = struct.unpack_from("<II", m, s[4])
                    desc = s[4] + 12 + ((namesz + 3) & ~3)
                    self.build_id = m[desc:desc + descsz].hex()
        out = {}
        for want in (2, 11):  # SHT_SYMTAB first; SHT_DYNSYM fills in
            for s in secs:
                if s[1] != want or s[9] != 24 or s[6] >= len(secs):
                    continue
                strtab = secs[s[6]]
                for i in range(s[5] // 24):
                    st_name, st_info, _, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", m, s[4] + 24 * i)
                    if st_shndx == 0 or st_value == 0 or (st_info & 15) not in (2, 10):  # FUNC, IFUNC
                        continue
                    if st_value in out and out[st_value][0] >= st_size:
                        continue
                    off = strtab[4] + st_name
                    name = m[off:m.find(b"\0", off)].decode("utf-8", "replace")
                    out[st_value] = (st_size, name)
        return [(v, sz, n) for v, (sz, n) in out.items()]

    def lookup(self, vaddr):
        i = bisect.bisect_right(self.starts, vaddr) - 1
        if i >= 0 and vaddr < self.ends[i]:
            return self.names[i]
        return None


# ---- naming the return addresses -----------------------------------------------------------------

class Symbolizer:
    """Names native frames: (object, function, file, line, inlined callers) of each return address."""

    def __init__(self, objects, use_addr2line=True):
        self.objects = sorted(objects, key=lambda o: o["start"])
        self.starts = [o["start"] for o in self.objects]
        self.elf = {}
        self.cache = {}
        self.addr2line = shutil.which("addr2line") if use_addr2line else None
        self.warnings = []

    def object_of(self, pc):
        i = bisect.bisect_right(self.starts, pc - 1) - 1
        if i >= 0 and pc - 1 < self.objects[i]["end"]:
            return self.objects[i]
        return None

    def _elf(self, obj):
        path = obj["path"]
        if path not in self.elf:
            e = ElfSymbols(path) if path and os.path.isfile(path) else None
            if e is not None and obj["build_id"] and e.build_id and e.build_id != obj["build_id"]:
                self.warnings.append("%s changed since the program ran (build-id differs): its frames are "
                                     "named from the new file" % path)
            self.elf[path] = e
        return self.elf[path]

    def resolve(self, pcs):
        """Fills the cache for every pc (batched per object, one addr2line run each)."""
        todo = {}
        for pc in pcs:
            if pc in self.cache:
                continue
            obj = self.object_of(pc)
            if obj is None:
                self.cache[pc] = [{"function": "0x%x" % pc, "object": "?"}]
                continue
            todo.setdefault(obj["id"], (obj, []))[1].append(pc)
        for obj, opcs in todo.values():
            elf = self._elf(obj)
            base = os.path.basename(obj["path"]) or "?"
            lines = {}
            if elf is not None and (elf.has_lines or elf.debug_file):
                lines = self._addr2line(elf.debug_file if elf.debug_file else obj["path"],
                                        [pc - 1 - obj["bias"] for pc in opcs])
            for pc in opcs:
                vaddr = pc - 1 - obj["bias"]
                name = elf.lookup(vaddr) if elf is not None else None
                frames = lines.get(vaddr)
                if frames:
                    # addr2line: innermost (inlined) first; the outermost is the symbol's function
                    out = [dict(f, object=base) for f in frames]
                    if name and out[-1].get("function") in (None, "??"):
                        out[-1]["function"] = name
                else:
                    out = [{"function": name or "%s+0x%x" % (base, vaddr), "object": base}]
                for f in out:
                    if f.get("function") in (None, "??"):
                        f["function"] = "%s+0x%x" % (base, vaddr)
                self.cache[pc] = out
        self._demangle()

    def _addr2line(self, path, vaddrs):
        if not self.addr2line or not vaddrs:
            return {}
        try:
            r = subprocess.run([self.addr2line, "-e", path, "-a", "-f", "-i", "-C"] + ["0x%x" % a for a in vaddrs],
                               capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return {}
        # "-a": each address on a line of its own ("0x..."), then a function line and a "file:line"
        # line for it and for each function it was inlined into, innermost first.
        out, cur, lines, i = {}, None, r.stdout.splitlines(), 0
        while i < len(lines):
            ln = lines[i]
            if re.fullmatch(r"0x[0-9a-fA-F]+", ln):
                cur = int(ln, 16)
                out[cur] = []
                i += 1
                continue
            if cur is None or i + 1 >= len(lines):
                break
            fname, _, lno = lines[i + 1].rpartition(":")
            lno = lno.split(" ")[0]  # "17 (discriminator 2)"
            f = {"function": ln}
            if fname and fname != "??" and lno.isdigit() and lno != "0":
                f["file"], f["line"] = fname, int(lno)
            out[cur].append(f)
            i += 2
        return {a: fs for a, fs in out.items() if any("file" in f for f in fs)}

    def _demangle(self):
        mangled = sorted({f["function"] for fs in self.cache.values() for f in fs if f["function"].startswith("_Z")})
        cxxfilt = shutil.which("c++filt")
        if not mangled or not cxxfilt:
            return
        try:
            r = subprocess.run([cxxfilt], input="\n".join(mangled) + "\n", capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return
        names = dict(zip(mangled, r.stdout.splitlines()))
        for fs in self.cache.values():
            for f in fs:
                f["function"] = names.get(f["function"], f["function"])


# ---- stacks and sites ----------------------------------------------------------------------------

def py_frame(d, file_id, name_id, line):
    f = {"function": d["strings"].get(name_id) or "?", "file": d["strings"].get(file_id) or "?", "python": True}
    if line > 0:
        f["line"] = line
    return f


def frames_of(stack, d, sym, interpreter_frames=False):
    """The stack's frames, innermost first: native ones named, the allocator's own left off the top,
    and the Python frames in place of the _PyEval_EvalFrameDefault calls that ran them. Unless
    interpreter_frames, a stack with Python frames loses, below its innermost Python frame, the
    interpreter's own native frames (those of the object that runs _PyEval_EvalFrameDefault) and
    every native frame below its outermost Python frame (the process's start-up): it reads as the
    Python calls, with the C functions of extensions they call, and the C code that allocated."""
    native = []
    for pc in stack["pcs"]:
        native.extend(sym.cache.get(pc, [{"function": "0x%x" % pc, "object": "?"}]))
    while native and (native[0].get("object", "").startswith("libpyalloc") or
                      native[0]["function"] in ALLOCATOR_FUNCTIONS):
        native.pop(0)
    py = [(py_frame(d, fi, ni, ln), bool(entry)) for fi, ni, ln, entry in stack["py"]]
    interp = {f.get("object") for f in native if f["function"] == PY_EVAL}
    out, k = [], 0
    for f in native:
        if f["function"] == PY_EVAL and k < len(py):
            while k < len(py):  # this call's frames: up to and including its entry frame
                out.append(py[k][0])
                k += 1
                if py[k - 1][1]:
                    break
            continue
        if k and not interpreter_frames and f.get("object") in interp:
            continue
        out.append(f)
    out.extend(p for p, _ in py[k:])  # the native walk stopped early: the rest, outermost last
    if py and not interpreter_frames:
        last = max(i for i, f in enumerate(out) if f.get("python"))
        out = out[:last + 1]
    return out


def short_path(path):
    """A Python file's path as the code object names it, relative to the working directory if it is
    under it."""
    cwd = os.getcwd() + os.sep
    return path[len(cwd):] if path.startswith(cwd) else path


def frame_text(f, with_object=False):
    """"function (file:line)": a Python file by short_path, a C file by its base name."""
    s = f["function"]
    if f.get("file"):
        s += " (%s%s)" % (short_path(f["file"]) if f.get("python") else os.path.basename(f["file"]),
                          ":%d" % f["line"] if f.get("line") else "")
    elif with_object and f.get("object"):
        s += " [%s]" % f["object"]
    return s


def site_key(frames):
    """The frame a site is named by: the innermost Python frame, else the innermost native one."""
    for f in frames:
        if f.get("python"):
            return f
    return frames[0] if frames else {"function": "(no stack)"}


def build(d, use_addr2line=True, interpreter_frames=False):
    """The sites report (JSON-ready) from the library's data."""
    sym = Symbolizer(d["objects"], use_addr2line)
    sym.resolve({pc for s in d["stacks"] for pc in s["pcs"]})
    stacks = []
    for s in d["stacks"]:
        fr = frames_of(s, d, sym, interpreter_frames)
        stacks.append({"frames": fr, "all": s["all"], "peak": s["peak"], "exit": s["exit"]})
    R = d["sample_bytes"]

    def section(which):
        sites = {}
        for st in stacks:
            c = st[which]
            if not c["samples"]:
                continue
            key_frame = site_key(st["frames"])
            key = (key_frame["function"], key_frame.get("file"), key_frame.get("line"), key_frame.get("object"))
            e = sites.setdefault(key, {"function": key[0], "file": key[1], "line": key[2], "object": key[3],
                                       "python": bool(key_frame.get("python")), "bytes": 0, "blocks": 0,
                                       "samples": 0, "variance": 0, "stacks": []})
            for k in ("bytes", "blocks", "samples", "variance"):
                e[k] += c[k]
            e["stacks"].append((c["bytes"], st["frames"]))
        out = []
        for e in sites.values():
            e["stacks"].sort(key=lambda t: -t[0])
            site = {k: e[k] for k in ("function", "file", "line", "object") if e[k] is not None}
            site["python"] = e["python"]
            site.update({"bytes": e["bytes"], "blocks": e["blocks"], "samples": e["samples"],
                         "error_bytes": int(2 * math.sqrt(e["variance"])),
                         "stack": e["stacks"][0][1], "stacks": len(e["stacks"])})
            out.append(site)
        out.sort(key=lambda s: -s["bytes"])
        return {"bytes": sum(s["bytes"] for s in out), "sites": out}

    py = {"3.11": "3.11", "none": None}.get(d.get("python"), "unsupported")
    if py == "unsupported":
        v = d.get("python_version", 0)
        py = "unsupported (%d.%d.%d: only 3.11's frames are read)" % (v >> 24, (v >> 16) & 255, (v >> 8) & 255)
    rep = {"sample_bytes": R, "samples": d["samples"], "dropped": d.get("dropped", 0), "python": py,
           "complete": d["complete"],
           "peak": dict(section("peak"), t_ms=d.get("peak", {}).get("t_ms"),
                        source=d.get("peak", {}).get("source")),
           "exit": dict(section("exit"), t_ms=d.get("exit", {}).get("t_ms"), source=d.get("exit", {}).get("source")),
           "allocated": section("all"),
           "warnings": sym.warnings}
    rep["_stacks"] = stacks  # for folded(); dropped by to_json()
    return rep


def to_json(rep):
    return {k: v for k, v in rep.items() if not k.startswith("_")}


# ---- output --------------------------------------------------------------------------------------

def human(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024


def format_text(rep, top=10, callers=4):
    R = rep["sample_bytes"]
    out = ["allocation sites: about 1 sample per %s allocated (PYALLOC_SAMPLE_BYTES=%d), %d samples%s"
           % (human(R), R, rep["samples"], "" if not rep["dropped"] else " (%d not recorded: no memory, or a block free could not find)" % rep["dropped"]),
           "Python frames: %s" % (rep["python"] or "none (not a Python 3.11 process)"),
           "bytes and blocks are estimates from the samples; ± is twice the estimate's standard error"]
    if not rep["complete"]:
        out.append("(the data was cut short: the report may miss sites)")
    for w in rep["warnings"]:
        out.append("warning: " + w)
    peak, ex = rep["peak"], rep["exit"]
    sections = [
        ("live at the peak%s" % (" (%d ms after start)" % peak["t_ms"] if peak.get("t_ms") is not None else ""), peak),
        ("live at exit: leaks%s" % (" (when the interpreter began to finalize, %d ms)" % ex["t_ms"]
                                    if ex.get("source") == "python-finalize" else ""), ex),
        ("allocated in all (freed or not)", rep["allocated"]),
    ]
    for title, sec in sections:
        out.append("")
        out.append("%s: %s in %d site%s" % (title, human(sec["bytes"]), len(sec["sites"]), "" if len(sec["sites"]) == 1 else "s"))
        if not sec["sites"]:
            continue
        out.append("%12s %10s %5s %10s  %s" % ("bytes", "±", "%", "blocks", "site"))
        total = sec["bytes"] or 1
        for s in sec["sites"][:top]:
            out.append("%12s %10s %4.0f%% %10d  %s" % (human(s["bytes"]), human(s["error_bytes"]), 100.0 * s["bytes"] / total,
                                                     s["blocks"], frame_text(s, with_object=True)))
            chain = s["stack"]
            i = next((k for k, f in enumerate(chain) if f.get("function") == s["function"] and f.get("line") == s.get("line")), 0)
            rest = chain[i + 1:i + 1 + callers]
            if rest:
                out.append("%41s  <- %s%s" % ("", " <- ".join(frame_text(f) for f in rest),
                                               " ..." if len(chain) > i + 1 + callers else ""))
        if len(sec["sites"]) > top:
            more = len(sec["sites"]) - top
            out.append("%41s  (%d more site%s)" % ("", more, "" if more == 1 else "s"))
    return "\n".join(out)


def folded(rep, which="peak"):
    """Folded stacks ("outermost;...;innermost bytes"), the format flamegraph.pl and speedscope read."""
    agg = {}
    for st in rep["_stacks"]:
        b = st[which]["bytes"]
        if not b:
            continue
        names = [frame_text(f).replace(";", ":") for f in reversed(st["frames"])] or ["(no stack)"]
        key = ";".join(names)
        agg[key] = agg.get(key, 0) + b
    return "".join("%s %d\n" % (k, v) for k, v in sorted(agg.items(), key=lambda kv: -kv[1]))


def main(argv):
    import argparse
    p = argparse.ArgumentParser(description="Report the allocation sites in a pyalloc sites data file.")
    p.add_argument("data")
    p.add_argument("--json", action="store_true")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--folded", metavar="FILE", help="folded stacks of the bytes live at the peak")
    p.add_argument("--folded-leaks", metavar="FILE", help="folded stacks of the bytes live at exit")
    p.add_argument("--interpreter-frames", action="store_true",
                   help="keep the Python interpreter's own C frames between Python frames")
    a = p.parse_args(argv)
    try:
        rep = build(load(a.data), interpreter_frames=a.interpreter_frames)
    except SitesError as e:
        sys.stderr.write("pyalloc_sites: %s\n" % e)
        return 1
    for path, which in ((a.folded, "peak"), (a.folded_leaks, "exit")):
        if path:
            with open(path, "w") as f:
                f.write(folded(rep, which))
    print(json.dumps(to_json(rep), indent=1) if a.json else format_text(rep, a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
