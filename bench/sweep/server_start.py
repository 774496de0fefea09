"""The fork server's first import (bench.sweep.children): from here on the kernel kills the
server when the sweep that started it dies, as it does each cell, so a killed sweep leaves no
server importing torch behind it (nor one whose sweep died before it got here)."""

import os

from bench.core.process import die_with_parent

# the sweep's pid, set for the server alone: the cells forked from it do not see it
die_with_parent(int(os.environ.pop("BENCH_FORK_SERVER_PARENT", "0")) or None)
