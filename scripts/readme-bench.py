#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Puts a bench run's results into docs/bench/ (summary.json, summary.md, chart.png, chart.svg) and
its tables into README.md, between the bench markers. The tables are built from docs/bench/summary.json
by the runner's own functions (bench/runner/report.py), so they are the ones summary.md has.

usage: scripts/readme-bench.py [RESULTS-DIR] [--command "COMMAND THAT PRODUCED IT"]
  RESULTS-DIR   a bench/run.py results folder, copied into docs/bench/ first; without it the README
                is written again from the docs/bench/summary.json already there
  --command     how the run was made, for the README's sentence (default: bash scripts/bench.sh
                with the runner's arguments, as summary.json records them)
"""
import argparse
import os
import re
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs", "bench")
FILES = ("summary.json", "summary.md", "chart.png", "chart.svg")
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "bench"))
from runner import report  # noqa: E402


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="?", help="a bench/run.py results folder")
    p.add_argument("--command", help="the command that produced it")
    args = p.parse_args(argv)
    if args.results:
        missing = [f for f in FILES if not os.path.isfile(os.path.join(args.results, f))]
        if missing:
            sys.exit("readme-bench.py: %s has no %s (a --quick or --callgrind run has no tables)"
                     % (args.results, ", ".join(missing)))
        os.makedirs(DOCS, exist_ok=True)
        for f in FILES:
            shutil.copy(os.path.join(args.results, f), os.path.join(DOCS, f))
    source = os.path.join(DOCS, "summary.json")
    if not os.path.isfile(source):
        sys.exit("readme-bench.py: no %s: give the results folder of a bench run" % source)
    summary, meta, allocs = report.load_json(source)
    command = args.command or " ".join(["bash scripts/bench.sh"] + meta.get("argv", []))

    body = ["<!-- bench:begin (scripts/readme-bench.py writes this part) -->",
            "## Benchmarks", "",
            "Run on %s, from `%s`. %s" % (meta["date"], command, report.about(meta)), "",
            "![time relative to glibc per benchmark](docs/bench/chart.svg)", ""]
    body += report.sections(summary, allocs, level="###")
    body += ["All of it, with the benchmark descriptions: [docs/bench/summary.md](docs/bench/summary.md).",
             "<!-- bench:end -->"]
    block = "\n".join(body) + "\n"
    readme_path = os.path.join(ROOT, "README.md")
    with open(readme_path) as f:
        readme = f.read()
    if "<!-- bench:begin" in readme:
        readme = re.sub(r"<!-- bench:begin.*?<!-- bench:end -->\n", lambda _: block, readme, flags=re.S)
    else:
        readme = readme.rstrip("\n") + "\n\n" + block
    with open(readme_path, "w") as f:
        f.write(readme)
    print("README.md written from %s" % source)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
