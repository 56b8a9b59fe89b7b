# SPDX-License-Identifier: MIT
"""The chart: time ratio to glibc per benchmark, one bar per allocator, drawn by gnuplot (through
tools/pyalloc_common.py, which the pyalloc command draws with too) into chart.png and chart.svg.
The data and script are kept beside them (chart.dat, chart.gp)."""
import os
from typing import List, Optional

import pyalloc_common

SCRIPT = """\
set datafile separator "\\t"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top left horizontal
set grid ytics
set ylabel "time / glibc time (lower is better)"
set title {title}
set yrange [0:*]
set xtics rotate by -40 nomirror
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5 lc rgb "#444444" front
plot for [i=2:{ncols}] "chart.dat" using i:xtic(1) title columnheader(i)
"""


def draw(out_dir: str, summary: dict, alloc_names: List[str], title: str) -> Optional[str]:
    """Returns a message on what was drawn, or why nothing was."""
    rows = [(b, e) for b, e in summary["benchmarks"].items() if e["kind"] != "reference"]
    names = [a for a in alloc_names if a != "glibc" and
             any(e["allocators"].get(a, {}).get("time_ratio") for _, e in rows)]
    if not names:
        return "chart: nothing to draw (no allocator besides glibc has a successful run)"
    with open(os.path.join(out_dir, "chart.dat"), "w") as f:
        f.write("benchmark\t" + "\t".join(names) + "\n")
        for b, e in rows:
            vals = []
            for a in names:
                r = e["allocators"].get(a, {}).get("time_ratio")
                vals.append("%.4f" % r if r else "NaN")
            f.write(b + "\t" + "\t".join(vals) + "\n")
    body = SCRIPT.format(title=pyalloc_common.quote(title), ncols=len(names) + 1)
    why = pyalloc_common.draw(body, ["chart.png", "chart.svg"], out_dir, script="chart.gp",
                              size=(1400, 650), font=",11")
    if why:
        return "chart: %s; chart.dat and chart.gp are in %s (`gnuplot chart.gp` there draws it)" % (why, out_dir)
    return "chart: %s, %s" % (os.path.join(out_dir, "chart.png"), os.path.join(out_dir, "chart.svg"))
