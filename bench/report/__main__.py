"""`python -m bench.report [results_dir=...] [reports_dir=...] [--fail-on-regression]`.

Regenerates reports/ from results/. Exit 2 on bad input (one line naming the valid keys,
or the missing results dir); with --fail-on-regression, exit 1 and one line per
regression when the regression table is not empty.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from bench.core.errors import BenchInputError
from bench.report import build_report
from bench.results.outputs import check_writable_dir
from bench.results.store import existing_results_dir

KEYS = ("results_dir", "reports_dir")
FLAGS = ("--fail-on-regression",)


def _usage_error(arg: str) -> int:
    print(f"bench.report: error: {arg!r} is not a known override; valid keys: "
          f"{', '.join(KEYS)} (as key=value), flags: {', '.join(FLAGS)}", file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    settings = {"results_dir": "results", "reports_dir": "reports"}
    fail_on_regression = False
    for arg in sys.argv[1:] if argv is None else argv:
        if arg == "--fail-on-regression":
            fail_on_regression = True
            continue
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS or not value:
            return _usage_error(arg)
        settings[key] = value
    try:  # nothing is created before both directories are known to be usable
        existing_results_dir(settings["results_dir"])
        check_writable_dir("reports_dir", settings["reports_dir"])
        report = build_report(settings["results_dir"], settings["reports_dir"])
    except BenchInputError as exc:
        print(f"bench.report: error: {exc}", file=sys.stderr)
        return 2
    for path in report.files:
        print(f"wrote {path}")
    if fail_on_regression and report.regressions:
        for reg in report.regressions:
            print(reg.line())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
