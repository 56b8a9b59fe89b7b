#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The results of one `python3 -m test --junit-xml XML ...` run, in a form two runs can be compared
by: one line per test file ("file test_dict passed") from regrtest's progress lines in LOG, then one
line per test method ("case test.test_dict.DictTest.test_copy ok|skipped|failure|error") from the
JUnit XML, sorted. Timings and messages are left out: they differ between any two runs.

usage: regrtest_results.py LOG XML"""
import re
import sys
import xml.etree.ElementTree as ET

# "0:00:05 load avg: 0.74 [ 7/17] test_gc passed", "... [ 9/17/1] test_x failed (2 failures)",
# "... test_x skipped -- reason", "... test_x skipped (resource denied)", "... test_x crashed (Exit code 1)"
PROGRESS = re.compile(r"\[\s*\d+/\d+(?:/\d+)?\]\s+(test_\w+)\s+(passed|failed|skipped|crashed|timed out|"
                      r"interrupted|resource denied|ran no tests|env changed)\b")


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    files = {}
    with open(sys.argv[1], errors="replace") as f:
        for line in f:
            m = PROGRESS.search(line)
            if m:
                files[m.group(1)] = m.group(2)
    cases = []
    try:
        root = ET.parse(sys.argv[2]).getroot()
    except (OSError, ET.ParseError) as e:
        print("regrtest_results.py: cannot read %s: %s" % (sys.argv[2], e), file=sys.stderr)
        return 1
    for case in root.iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = "ok"
        for kind in ("error", "failure", "skipped"):
            if kind in kinds:
                outcome = kind
                break
        cases.append("case %s %s" % (case.get("name"), outcome))
    for name in sorted(files):
        print("file %s %s" % (name, files[name]))
    for line in sorted(cases):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
