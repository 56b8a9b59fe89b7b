# SPDX-License-Identifier: MIT
"""What the pyalloc command (tools/pyalloc) and the benchmark runner (bench/runner) share: drawing
with gnuplot, reading the key=value lines programs print, and sizes in the units of the library's
text report. Python 3 standard library only.

It lives beside the command in the source tree (tools/), and is installed with it as
<datadir>/pyalloc/tools/pyalloc_common.py, where the installed command and the installed runner
(<datadir>/pyalloc/bench/run.py, whose root is <datadir>/pyalloc) both find it.
"""
import os
import shutil
import subprocess

GNUPLOT_PACKAGE = "gnuplot-nox"  # the Debian package that brings gnuplot without X


# ---- gnuplot -----------------------------------------------------------------------------------------

def gnuplot():
    """The gnuplot program, or None."""
    return shutil.which("gnuplot")


def quote(s):
    """s as a gnuplot string literal (single quotes: no escapes but '' for ')."""
    return "'" + str(s).replace("'", "''") + "'"


_png_terminals = {}


def png_terminal(gp):
    """pngcairo where this gnuplot has it (anti-aliased), else the libgd png terminal; pngcairo when
    there is no gnuplot to ask (a script written for later)."""
    if gp is None:
        return "pngcairo"
    if gp not in _png_terminals:
        r = subprocess.run([gp, "-e", "set terminal pngcairo"], capture_output=True, text=True)
        _png_terminals[gp] = "pngcairo" if r.returncode == 0 and not r.stderr.strip() else "png"
    return _png_terminals[gp]


def terminal(gp, path, width, height, font):
    """The `set terminal` line for path (.svg: SVG, anything else: PNG), width x height pixels."""
    if path.lower().endswith(".svg"):
        return ('set terminal svg size %d,%d dynamic noenhanced font "%s" background rgb "white"'
                % (width, height, font))
    term = png_terminal(gp)
    if term == "pngcairo":
        return 'set terminal pngcairo size %d,%d noenhanced font "%s"' % (width, height, font)
    return "set terminal png size %d,%d noenhanced" % (width, height)  # libgd: its own font


def draw(body, outputs, workdir, script="plot.gp", size=(1200, 800), font="sans,10"):
    """Draws body (gnuplot commands that plot, without terminal or output) into each of outputs (paths
    relative to workdir, or absolute) by one gnuplot run in workdir. The script is kept as
    workdir/script, so that it can be run again by hand. Returns None, or why nothing was drawn: one
    line naming the package to install, or gnuplot's own message."""
    gp = gnuplot()
    lines = []
    for out in outputs:
        lines += [terminal(gp, out, size[0], size[1], font),
                  "set output " + quote(out), body.rstrip("\n"), "unset output"]
    with open(os.path.join(workdir, script), "w") as f:
        f.write("\n".join(lines) + "\n")
    if not gp:
        return "gnuplot is not installed: apt-get install " + GNUPLOT_PACKAGE
    r = subprocess.run([gp, script], cwd=workdir, capture_output=True, text=True)
    missing = [o for o in outputs
               if not os.path.isfile(os.path.join(workdir, o)) or os.path.getsize(os.path.join(workdir, o)) == 0]
    if r.returncode != 0 or missing:
        for o in outputs:  # gnuplot leaves an empty file where it failed to draw
            path = os.path.join(workdir, o)
            if os.path.isfile(path) and os.path.getsize(path) == 0:
                os.remove(path)
        return "gnuplot failed%s: %s" % (" to write " + ", ".join(missing) if missing else "",
                                         r.stderr.strip() or "exit status %d" % r.returncode)
    return None


# ---- sizes -------------------------------------------------------------------------------------------

def human_size(n):
    """n bytes as the library's text report writes them (src/stats.c, fmt_size): "N B" below 1 KiB,
    else KiB, MiB, GiB or TiB with one decimal rounded half up, in the smallest unit that keeps the
    rounded value under 1024."""
    if n < 1024:
        return "%d B" % n
    for u, unit in enumerate(("KiB", "MiB", "GiB", "TiB")):
        shift = 10 * (u + 1)
        whole, tenths = n >> shift, ((n & ((1 << shift) - 1)) * 10 + (1 << (shift - 1))) >> shift
        if tenths == 10:
            whole, tenths = whole + 1, 0
        if whole < 1024 or unit == "TiB":
            return "%d.%d %s" % (whole, tenths, unit)


# ---- key=value output --------------------------------------------------------------------------------

def parse_kv(text):
    """{key: value} of the whitespace-separated key=value words in text: a key is letters, digits and
    _; the value runs to the next blank. Other words are skipped; a later key wins."""
    out = {}
    for word in text.split():
        key, eq, value = word.partition("=")
        if eq and key and all(c.isalnum() or c == "_" for c in key):
            out[key] = value
    return out
