# SPDX-License-Identifier: MIT
"""--callgrind: instructions per malloc+free pair, counted by valgrind's callgrind.

bench/fastpath runs under callgrind with each allocator's LD_PRELOAD (callgrind, unlike memcheck,
does not replace malloc, so the preloaded allocator serves the blocks: the out file names the
object every call went to, and that is checked). It runs twice, with N1 and N2 pairs; the
difference of the counts divided by N2 - N1 is the cost of one pair, free of start-up and
lazy-binding costs. The calls made by the loop function (fastpath_pairs) give the split: inclusive
instructions in free, in malloc, and in the loop itself.
"""
import json
import os
import shutil
import subprocess
from collections import defaultdict
from typing import Dict, List, Tuple

LOOP_FN = "fastpath_pairs"


def parse(path: str) -> dict:
    """Totals of a callgrind out file, and the calls made from LOOP_FN: per callee
    (function, object) the call count and inclusive instructions; and LOOP_FN's self cost."""
    names = {"fn": {}, "ob": {}, "fl": {}}
    kind_of = {"fn": "fn", "cfn": "fn", "ob": "ob", "cob": "ob",
               "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl"}

    def name(key, value):
        space = names[kind_of[key]]
        value = value.strip()
        if value.startswith("("):
            ident, _, rest = value.partition(")")
            ident += ")"
            if rest.strip():
                space[ident] = rest.strip()
            return space.get(ident, ident)
        return value

    total = None
    ob = fn = cob = cfn = None
    pending_calls = None
    callees = defaultdict(lambda: [0, 0])  # (cfn, cob) -> [calls, inclusive Ir]
    self_ir = 0
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            if line.startswith(("summary:", "totals:")):
                total = int(line.split(":", 1)[1].split()[0])
                continue
            key, eq, value = line.partition("=")
            if eq and key in kind_of:
                v = name(key, value)
                if key == "ob":
                    ob = v
                elif key == "fn":
                    fn, cob, cfn = v, None, None
                elif key == "cob":
                    cob = v
                elif key == "cfn":
                    cfn = v
                continue
            if eq and key == "calls":
                pending_calls = int(value.split()[0])
                continue
            if eq or not (line[0].isdigit() or line[0] in "+-*"):
                continue
            parts = line.split()
            ir = int(parts[1]) if len(parts) > 1 else 0
            in_loop = fn is not None and fn.split("'")[0] == LOOP_FN
            if pending_calls is not None:
                if in_loop:
                    c = callees[(cfn, cob or ob)]
                    c[0] += pending_calls
                    c[1] += ir
                pending_calls, cob = None, None
            elif in_loop:
                self_ir += ir
    return {"total": total, "self": self_ir, "callees": dict(callees)}


def _bucket(fn_name: str) -> str:
    return "free" if "free" in (fn_name or "") else "malloc"


def _run(alloc, bin_dir: str, pairs: int, out_file: str) -> dict:
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out_file,
           os.path.join(bin_dir, "fastpath"), str(pairs)]
    r = subprocess.run(cmd, env=alloc.environ({}), capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(out_file):
        raise SystemExit("callgrind failed for %s (exit %d):\n%s" % (alloc.name, r.returncode, r.stderr[-2000:]))
    if "pairs=%d" % pairs not in r.stdout:
        raise SystemExit("%s: fastpath under callgrind did not report pairs=%d" % (alloc.name, pairs))
    return parse(out_file)


def _served_by_preload(alloc, parsed: dict, pairs: int) -> Tuple[bool, List[str]]:
    """Every function the loop called about once per pair must live in the allocator's object.
    Valgrind names no object ("???") for code in a section of its own, as gperftools puts malloc
    in "google_malloc": that is accepted for a preload (it is not glibc, whose object is named),
    and the probe has already shown the preload serves malloc outside valgrind."""
    objs = sorted({ob for (fn, ob), (calls, _) in parsed["callees"].items() if calls >= pairs // 2})
    if not alloc.lib:
        return bool(objs) and all(os.path.basename(o).startswith("libc") for o in objs), objs
    want = os.path.realpath(alloc.lib)
    return bool(objs) and all(o == "???" or os.path.realpath(o) == want for o in objs), objs


def run(allocs, bin_dir: str, out_dir: str, n1: int, n2: int, log) -> dict:
    if not shutil.which("valgrind"):
        raise SystemExit("--callgrind needs valgrind (apt-get install valgrind)")
    cg_dir = os.path.join(out_dir, "callgrind")
    os.makedirs(cg_dir, exist_ok=True)
    rows: Dict[str, dict] = {}
    for a in allocs:
        counts = {}
        for n in (n1, n2):
            log("[callgrind] %s fastpath %d pairs ..." % (a.name, n))
            counts[n] = _run(a, bin_dir, n, os.path.join(cg_dir, "callgrind.%s.%d.out" % (a.name, n)))
        ok, objs = _served_by_preload(a, counts[n2], n2)
        if not ok:
            raise SystemExit("%s: under valgrind the loop's malloc/free went to %s, not %s"
                             % (a.name, objs, a.lib or "glibc"))
        d = float(n2 - n1)
        split = defaultdict(float)
        fnames = defaultdict(set)
        for (fn, ob), (calls, ir) in counts[n2]["callees"].items():
            before = counts[n1]["callees"].get((fn, ob), (0, 0))[1]
            split[_bucket(fn)] += (ir - before) / d
            if calls >= n2 // 2:
                fnames[_bucket(fn)].add(fn)
        rows[a.name] = {
            "instr_per_pair": (counts[n2]["total"] - counts[n1]["total"]) / d,
            "free": split["free"], "malloc": split["malloc"],
            "loop": (counts[n2]["self"] - counts[n1]["self"]) / d,
            "functions": {k: sorted(v) for k, v in fnames.items()},
            "served_by": objs, "pairs": [n1, n2],
            "totals": [counts[n1]["total"], counts[n2]["total"]],
        }
    base = rows.get("glibc", {}).get("instr_per_pair")
    for r in rows.values():
        r["ratio_to_glibc"] = r["instr_per_pair"] / base if base else None
    return rows


def markdown(rows: dict, n1: int, n2: int) -> str:
    lines = ["## Instructions per malloc+free pair (callgrind, bench/fastpath)", "",
             "(instructions(N2) - instructions(N1)) / (N2 - N1) with N1 = %d, N2 = %d; 256 live blocks "
             "of 8..512 B freed in a scrambled order. The split is the inclusive count of the calls the "
             "loop makes; `loop` is the loop's own instructions (the same for every allocator)." % (n1, n2), "",
             "| allocator | instr / pair | ratio to glibc | in free | in malloc | loop | functions called |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        fns = ", ".join(f for k in ("free", "malloc") for f in r["functions"].get(k, []))
        lines.append("| %s | %.1f | %s | %.1f | %.1f | %.1f | %s |" % (
            name, r["instr_per_pair"], "%.2f×" % r["ratio_to_glibc"] if r["ratio_to_glibc"] else "?",
            r["free"], r["malloc"], r["loop"], fns))
    return "\n".join(lines) + "\n"


def write(out_dir: str, rows: dict, n1: int, n2: int, meta: dict) -> str:
    text = markdown(rows, n1, n2)
    with open(os.path.join(out_dir, "callgrind.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "callgrind.json"), "w") as f:
        json.dump({"meta": meta, "pairs": [n1, n2], "allocators": rows}, f, indent=2, sort_keys=True)
        f.write("\n")
    return text
