# SPDX-License-Identifier: MIT
"""From the runs to the results: medians, ratios to glibc, geometric means; raw.csv,
summary.json and summary.md. scripts/readme-bench.py builds the README's tables from summary.json
with the same functions (load_json, about, sections)."""
import csv
import json
import math
import statistics
from types import SimpleNamespace
from typing import List, Optional

GEOMEANS = (  # (key, title, kinds it covers)
    ("all", "geomean, all", ("small", "large", "real")),
    ("small", "geomean, small (all blocks <= 512 B)", ("small",)),
    ("real", "geomean, real programs", ("real",)),
)

RAW_FIELDS = ["benchmark", "kind", "allocator", "round", "status", "wall_s", "user_s", "sys_s",
              "maxrss_kb", "exit_code", "checksum", "results"]


def _median(xs):
    return statistics.median(xs) if xs else None


def _geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def _number(v):
    try:
        return float(v)
    except ValueError:
        return None


def summarize(records: List[dict], benches, allocs, metric: str) -> dict:
    """metric: "wall" (wall-clock time) or "cpu" (user + system time)."""
    out = {"metric": metric, "benchmarks": {}, "geomean": {}}
    for b in benches:
        entry = {"kind": b.kind, "about": b.about, "allocators": {}}
        for a in allocs:
            runs = [r for r in records if r["benchmark"] == b.name and r["allocator"] == a.name]
            if not runs:
                continue
            good = [r for r in runs if r["status"] == "ok"]
            bad = sorted({r["status"] for r in runs if r["status"] != "ok"})
            cell = {"runs": len(runs), "failed": len(runs) - len(good),
                    "status": "ok" if not bad else "FAILED: " + ", ".join(bad)}
            if good and not bad:
                cell["wall_s"] = _median([r["wall_s"] for r in good])
                cell["cpu_s"] = _median([r["user_s"] + r["sys_s"] for r in good])
                times = [r["wall_s"] if metric == "wall" else r["user_s"] + r["sys_s"] for r in good]
                cell["time_s"] = _median(times)
                cell["time_spread"] = (max(times) - min(times)) / (2 * cell["time_s"]) if cell["time_s"] else 0.0
                cell["maxrss_kb"] = _median([r["maxrss_kb"] for r in good])
                keys = sorted({k for r in good for k in r["results"]})
                cell["results"] = {k: _median([n for n in (_number(r["results"].get(k, "")) for r in good)
                                               if n is not None]) for k in keys}
            entry["allocators"][a.name] = cell
        base = entry["allocators"].get("glibc", {})
        for cell in entry["allocators"].values():
            if "time_s" in cell and base.get("time_s"):
                cell["time_ratio"] = cell["time_s"] / base["time_s"]
                cell["rss_ratio"] = cell["maxrss_kb"] / base["maxrss_kb"] if base.get("maxrss_kb") else None
        out["benchmarks"][b.name] = entry
    for key, _, kinds in GEOMEANS:
        names = [n for n, e in out["benchmarks"].items() if e["kind"] in kinds]
        if not names:
            continue
        g = {}
        for a in allocs:
            cells = [out["benchmarks"][n]["allocators"].get(a.name, {}) for n in names]
            t = [c["time_ratio"] for c in cells if c.get("time_ratio")]
            m = [c["rss_ratio"] for c in cells if c.get("rss_ratio")]
            if t:
                g[a.name] = {"time_ratio": _geomean(t), "rss_ratio": _geomean(m), "n": len(t), "of": len(names)}
        out["geomean"][key] = g
    return out


def write_raw(path: str, records: List[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RAW_FIELDS)
        w.writeheader()
        for r in records:
            row = {k: r[k] for k in RAW_FIELDS if k != "results"}
            row["results"] = ";".join("%s=%s" % kv for kv in sorted(r["results"].items()))
            for k in ("wall_s", "user_s", "sys_s"):
                row[k] = "%.4f" % r[k]
            w.writerow(row)


def write_json(path: str, summary: dict, meta: dict) -> None:
    """summary.json: the summary, meta (machine, date, rounds, argv, allocators, failures) and the
    order the benchmarks and allocators ran in (the tables' row and column order)."""
    order = {"benchmarks": list(summary["benchmarks"]), "allocators": list(meta.get("allocators", {}))}
    with open(path, "w") as f:
        json.dump({"meta": meta, "order": order, **summary}, f, indent=2)
        f.write("\n")


def load_json(path: str):
    """(summary, meta, allocators) of a summary.json: allocators in their order, each with .name."""
    with open(path) as f:
        doc = json.load(f)
    order = doc.pop("order")
    meta = doc.pop("meta")
    doc["benchmarks"] = {b: doc["benchmarks"][b] for b in order["benchmarks"]}
    return doc, meta, [SimpleNamespace(name=n) for n in order["allocators"]]


def _ratio(x: Optional[float]) -> str:
    return "%.2f×" % x if x else "?"


def _cell(c: dict, value: str, ratio_key: str, is_base: bool) -> str:
    if not c:
        return "—"
    if c["status"] != "ok":
        return "**%s**" % c["status"]
    return value if is_base else "%s (%s)" % (value, _ratio(c.get(ratio_key)))


def _fmt_time(c: dict) -> str:
    spread = c.get("time_spread", 0.0)
    return "%.3f s" % c["time_s"] + (" ±%.0f%%" % (100 * spread) if c["runs"] > 1 else "")


def _table(summary, allocs, title_value, fmt, ratio_key) -> List[str]:
    names = [a.name for a in allocs]
    lines = ["| benchmark | kind | " + " | ".join(names) + " |",
             "|---|---|" + "---:|" * len(names)]
    for bname, e in summary["benchmarks"].items():
        cells = []
        for a in names:
            c = e["allocators"].get(a, {})
            cells.append(_cell(c, fmt(c) if title_value in c else "", ratio_key, a == "glibc"))
        lines.append("| %s | %s | %s |" % (bname, e["kind"], " | ".join(cells)))
    gkey = "time_ratio" if ratio_key == "time_ratio" else "rss_ratio"
    for key, title, _ in GEOMEANS:
        g = summary["geomean"].get(key)
        if not g:
            continue
        cells = []
        for a in names:
            v = g.get(a)
            if not v:
                cells.append("—")
            else:
                partial = "" if v["n"] == v["of"] else " (%d of %d)" % (v["n"], v["of"])
                cells.append("**%s**%s" % (_ratio(v[gkey]), partial))
        lines.append("| **%s** | | %s |" % (title, " | ".join(cells)))
    return lines


def _footprint(summary, allocs, level) -> List[str]:
    e = summary["benchmarks"].get("footprint")
    if not e:
        idle = _idle(summary, allocs)
        return [level + " Memory given back", ""] + idle if idle else []
    lines = [level + " Memory given back (footprint: 2 M blocks of 16..256 B, all freed)", "",
             "| allocator | RSS at start | RSS at peak | RSS after free | returned at once | RSS 2 s later | returned by then |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for a in allocs:
        res = e["allocators"].get(a.name, {}).get("results", {})
        if not {"rss_start_kb", "rss_peak_kb", "rss_after_free_kb"} <= res.keys():
            continue
        s, p, f = (float(res[k]) for k in ("rss_start_kb", "rss_peak_kb", "rss_after_free_kb"))
        i = float(res.get("rss_idle_kb", f))

        def back(x):
            share = 100.0 * (p - x) / (p - s) if p > s else None
            return "?" if share is None else "%.0f %%" % (0.0 if abs(share) < 0.5 else share)
        lines.append("| %s | %.1f MB | %.1f MB | %.1f MB | %s | %.1f MB | %s |" % (
            a.name, s / 1024, p / 1024, f / 1024, back(f), i / 1024, back(i)))
    return lines + [""] + _idle(summary, allocs)


def _idle(summary, allocs) -> List[str]:
    """bench/idle: RSS after the spike, after the free and 1.5 s later with no allocator call."""
    names = [n for n in ("idle-small", "idle-small-bg1", "idle-small-mt", "idle-large", "idle-large-bg1",
                         "idle-large-mt") if n in summary["benchmarks"]]
    if not names:
        return []
    lines = ["### While idle (bench/idle: the spike freed, then 1.5 s with no allocator call)", "",
             "RSS after the spike -> after the free -> 1.5 s later, and the share of the spike given back by then.", "",
             "| allocator | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for a in allocs:
        cells = []
        for n in names:
            res = summary["benchmarks"][n]["allocators"].get(a.name, {}).get("results", {})
            if not {"rss_start_kb", "rss_peak_kb", "rss_after_free_kb", "rss_idle_kb"} <= res.keys():
                cells.append("—")
                continue
            s, p, f, i = (float(res[k]) for k in ("rss_start_kb", "rss_peak_kb", "rss_after_free_kb", "rss_idle_kb"))
            share = 100.0 * (p - i) / (p - s) if p > s else 0.0
            cells.append("%.0f -> %.0f -> %.0f MB (%.0f %%)" % (p / 1024, f / 1024, i / 1024, max(share, 0.0)))
        lines.append("| %s | %s |" % (a.name, " | ".join(cells)))
    return lines + [""]


def _eviction(summary, allocs, level) -> List[str]:
    """The memory benchmarks (bench/evict, bench/py/cache.py): memory held after the spike and after
    each eviction's idle, against the same allocator's survivors-only run."""
    lines = []
    for name in sorted(n for n, e in summary["benchmarks"].items()
                       if e["kind"] == "memory" and "-survivors-" not in n):
        refs = [summary["benchmarks"].get("%s-survivors-%d" % (name.replace("-trim", ""), k), {})
                .get("allocators", {}) for k in (10, 1)]
        if not lines:
            lines = [level + " Memory after scattered eviction (memory held: RSS of anonymous and file pages "
                     "plus memfd pages, MB; × survivors-only)", ""]
        lines += ["%s# %s: %s" % (level, name, summary["benchmarks"][name]["about"]), "",
                  "| allocator | after the spike | 90 % evicted, 1.5 s idle | survivors only | "
                  "99 % evicted, 1.5 s idle | survivors only |", "|---|---:|---:|---:|---:|---:|"]
        for a in allocs:
            res = summary["benchmarks"][name]["allocators"].get(a.name, {}).get("results", {})
            if "mem_spike_kb" not in res:
                continue
            cells = ["%.1f" % (res["mem_spike_kb"] / 1024)]
            for pct, ref in zip((90, 99), refs):
                got = res.get("mem_idle%d_kb" % pct)
                r = ref.get(a.name, {}).get("results", {}).get("mem_idle_kb")
                cells.append("%.1f (%s)" % (got / 1024, _ratio(got / r) if got and r else "?") if got else "—")
                cells.append("%.1f" % (r / 1024) if r else "—")
            lines.append("| %s | %s |" % (a.name, " | ".join(cells)))
        lines.append("")
    return lines


def _pymalloc(summary, allocs, level) -> List[str]:
    ref = summary["benchmarks"].get("python-pymalloc", {}).get("allocators", {}).get("glibc", {})
    py = summary["benchmarks"].get("python", {}).get("allocators", {})
    if not ref.get("time_s") or not py:
        return []
    lines = [level + " CPython: PYTHONMALLOC=malloc under each allocator vs its own pymalloc", "",
             "pymalloc (no PYTHONMALLOC, glibc for the rest): %.3f s, peak RSS %.1f MB." % (
                 ref["time_s"], ref["maxrss_kb"] / 1024), "",
             "| allocator | time | ratio to pymalloc | peak RSS | ratio to pymalloc |", "|---|---:|---:|---:|---:|"]
    for a in allocs:
        c = py.get(a.name, {})
        if c.get("time_s"):
            lines.append("| %s | %.3f s | %.2f× | %.1f MB | %.2f× |" % (
                a.name, c["time_s"], c["time_s"] / ref["time_s"], c["maxrss_kb"] / 1024,
                c["maxrss_kb"] / ref["maxrss_kb"]))
    return lines + [""]


def about(meta: dict) -> str:
    """The sentence on where and how the run was made."""
    return ("%s; %d round(s), allocators interleaved and rotated each round; medians. "
            "Ratios are to glibc: lower is better. Load average (1 min) %.2f at the start, %.2f at the end%s."
            % (meta["machine"], meta["rounds"], meta["load_start"], meta["load_end"],
               " (a busy machine: timings are noisy)" if max(meta["load_start"], meta["load_end"]) > 1.0 else ""))


def sections(summary: dict, allocs, level: str = "##") -> List[str]:
    """The tables, each under a heading of level: time, peak RSS, memory given back, CPython."""
    metric = "wall-clock time" if summary["metric"] == "wall" else "CPU time (user + system)"
    lines = ["%s Time (median %s)" % (level, metric), ""]
    lines += ["± is half the range over the rounds, relative to the median: the noise of that cell.", ""]
    lines += _table(summary, allocs, "time_s", _fmt_time, "time_ratio")
    lines += ["", "%s Peak RSS (median ru_maxrss of the process)" % level, ""]
    lines += _table(summary, allocs, "maxrss_kb", lambda c: "%.1f MB" % (c["maxrss_kb"] / 1024), "rss_ratio")
    return lines + [""] + _footprint(summary, allocs, level) + _eviction(summary, allocs, level) + _pymalloc(summary, allocs, level)


def write_markdown(path: str, summary: dict, meta: dict, allocs, failures: List[str]) -> str:
    lines = ["# pyalloc benchmarks, %s" % meta["date"], "", about(meta), ""]
    for a in allocs:
        lines.append("- **%s**: %s" % (a.name, a.describe))
    lines += [""] + sections(summary, allocs)
    lines += ["## Benchmarks", ""]
    for bname, e in summary["benchmarks"].items():
        lines.append("- **%s** (%s): %s" % (bname, e["kind"], e["about"]))
    if failures:
        lines += ["", "## FAILURES", ""] + ["- " + f for f in failures]
    text = "\n".join(lines) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return text
