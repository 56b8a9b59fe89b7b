# SPDX-License-Identifier: MIT
"""The pyalloc benchmark runner: bench/run.py is its command line."""
