#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Puts a bench run's results into README.md (between the bench markers) and its chart into
docs/bench/. usage: scripts/readme-bench.py RESULTS-DIR "COMMAND THAT PRODUCED IT" """
import os
import re
import shutil
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
results, command = sys.argv[1], sys.argv[2]
summary = open(os.path.join(results, "summary.md")).read()
os.makedirs(os.path.join(root, "docs", "bench"), exist_ok=True)
for ext in ("png", "svg"):
    shutil.copy(os.path.join(results, "chart." + ext), os.path.join(root, "docs", "bench", "chart." + ext))
shutil.copy(os.path.join(results, "summary.md"), os.path.join(root, "docs", "bench", "summary.md"))

title = summary.splitlines()[0].lstrip("# ").strip()          # "pyalloc benchmarks, <date>"
machine = summary.splitlines()[2].strip()


def section(name):
    m = re.search(r"^## " + re.escape(name) + r".*?$(.*?)(?=^## |\Z)", summary, re.S | re.M)
    return m.group(0).strip() if m else ""


body = ["<!-- bench:begin (scripts/readme-bench.py writes this part) -->",
        "## Benchmarks", "",
        "%s, from `%s`. %s" % (title.replace("pyalloc benchmarks, ", "Run on "), command, machine), "",
        "![time relative to glibc per benchmark](docs/bench/chart.svg)", ""]
for name in ("Time", "Peak RSS", "Memory given back", "CPython"):
    text = section(name)
    if text:
        body += ["#" + text, ""]
body += ["All of it, with the benchmark descriptions: [docs/bench/summary.md](docs/bench/summary.md).",
         "<!-- bench:end -->"]
readme_path = os.path.join(root, "README.md")
readme = open(readme_path).read()
block = "\n".join(body) + "\n"
if "<!-- bench:begin" in readme:
    readme = re.sub(r"<!-- bench:begin.*?<!-- bench:end -->\n", lambda _: block, readme, flags=re.S)
else:
    readme = readme.rstrip("\n") + "\n\n" + block
open(readme_path, "w").write(readme)
print("README.md updated from", results)
