# SPDX-License-Identifier: MIT
# The Python program of tests/sites (run with PYTHONMALLOC=malloc): leak() keeps 20,000 bytes objects
# of 1,000..1,002 bytes to exit; peak() holds 40,000 of 1,500 bytes, then lets them go. A bytes object
# of k bytes is one malloc of 33 + k (CPython 3.11's PyBytesObject header and its terminating NUL).
# Each allocating line carries a SITE: marker that test_sites.py looks for.
keep = []


def leak(n):
    for i in range(n):
        keep.append(bytes(1000 + i % 3))  # SITE:py_leak


def peak(n):
    held = []
    for i in range(n):
        held.append(bytes(1500))  # SITE:py_peak
    return len(held)


leak(20000)  # SITE:py_call_leak
peak(40000)  # SITE:py_call_peak
