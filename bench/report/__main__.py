"""`python -m bench.report [results_dir=...] [reports_dir=...]`: regenerate reports/."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from bench.errors import BenchInputError
from bench.report import generate

_KEYS = ("results_dir", "reports_dir")


def main(argv: Optional[Sequence[str]] = None) -> int:
    settings = {"results_dir": "results", "reports_dir": "reports"}
    for arg in sys.argv[1:] if argv is None else argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in _KEYS:
            print(f"bench.report: error: {arg!r} is not a known override; valid keys: "
                  f"{', '.join(_KEYS)} (as key=value)", file=sys.stderr)
            return 2
        settings[key] = value
    try:
        for path in generate(settings["results_dir"], settings["reports_dir"]):
            print(f"wrote {path}")
    except BenchInputError as exc:
        print(f"bench.report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
