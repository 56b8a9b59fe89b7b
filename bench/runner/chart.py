# SPDX-License-Identifier: MIT
"""The chart: time ratio to glibc per benchmark, one bar per allocator, drawn by gnuplot into
chart.png and chart.svg. The data and script are kept beside them (chart.dat, chart.gp)."""
import os
import shutil
import subprocess
from typing import List, Optional

SCRIPT = """\
set datafile separator "\\t"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top left horizontal
set grid ytics
set ylabel "time / glibc time (lower is better)"
set title "{title}"
set yrange [0:*]
set xtics rotate by -40 nomirror
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5 lc rgb "#444444" front
set terminal {png_term} size 1400,650 font ",11"
set output "chart.png"
plot for [i=2:{ncols}] "chart.dat" using i:xtic(1) title columnheader(i)
set terminal svg size 1400,650 dynamic font ",11"
set output "chart.svg"
replot
"""


def _png_terminal(gnuplot: str) -> str:
    r = subprocess.run([gnuplot, "-e", "set terminal pngcairo"], capture_output=True, text=True)
    return "pngcairo" if r.returncode == 0 and not r.stderr.strip() else "png"


def draw(out_dir: str, summary: dict, alloc_names: List[str], title: str) -> Optional[str]:
    """Returns a message on what was drawn, or why nothing was."""
    gnuplot = shutil.which("gnuplot")
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
    script = SCRIPT.format(title=title.replace('"', "'"), ncols=len(names) + 1,
                           png_term=_png_terminal(gnuplot) if gnuplot else "pngcairo")
    with open(os.path.join(out_dir, "chart.gp"), "w") as f:
        f.write(script)
    if not gnuplot:
        return ("chart: gnuplot is not installed (apt-get install gnuplot-nox); chart.dat and chart.gp "
                "are written, run `gnuplot chart.gp` in %s to draw it" % out_dir)
    r = subprocess.run([gnuplot, "chart.gp"], cwd=out_dir, capture_output=True, text=True)
    if r.returncode != 0:
        return "chart: gnuplot failed: " + r.stderr.strip()
    return "chart: %s, %s" % (os.path.join(out_dir, "chart.png"), os.path.join(out_dir, "chart.svg"))
