"""The fork server's first import (bench.sweep.children): from here on the kernel kills the
server when the sweep that started it dies, as it does each cell, so a killed sweep leaves no
server importing torch behind it."""

from bench.core.process import die_with_parent

die_with_parent()
