"""`make bench-perf`: the five measurement-quality figures in one go, written as markdown
under reports/perf/ (one file per benchmark and summary.md with all of them; the default
run that sweep_cost timed keeps its results/ and reports/ in reports/perf/default-run/).

    python -m benchmarks.perf                         # all five
    python -m benchmarks.perf --only overhead,peers   # some

Each benchmark runs as its own process, one after the other (never two timings at once on
shared cores); its progress goes to the terminal, its figures (stdout) to the files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.core.provenance import cpu_model, git_sha
from benchmarks.common import load_line

BENCHMARKS = {
    "overhead": "benchmarks.overhead",
    "repeatability": "benchmarks.repeatability",
    "sweep_cost": "benchmarks.sweep_cost",
    "peers": "benchmarks.peers",
    "eval_throughput": "benchmarks.eval_throughput",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    parser.add_argument("--out", default="reports/perf")
    args = parser.parse_args()
    names = args.only.split(",")
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; valid: {', '.join(BENCHMARKS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"# bench performance figures\n\n{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} "
              f"UTC on {platform.node()} ({cpu_model()}), bench {git_sha()}, Python "
              f"{platform.python_version()}; {load_line()} at the start.\n")
    sections, failed = [header], []
    for name in names:
        start = time.monotonic()
        print(f"bench-perf: {name} ...", file=sys.stderr)
        # the default run's rows and report stay beside the figures they gave
        keep = ["--keep", str(out / "default-run")] if name == "sweep_cost" else []
        proc = subprocess.run([sys.executable, "-m", BENCHMARKS[name], *keep],
                              stdout=subprocess.PIPE, text=True)
        took = time.monotonic() - start
        text = proc.stdout.strip() + f"\n\n_{name}: {took / 60:.1f} min, exit {proc.returncode}_\n"
        if proc.returncode != 0:
            failed.append(name)
        (out / f"{name}.md").write_text(text + "\n", encoding="utf-8")
        sections.append(text)
        print(text, flush=True)
    (out / "summary.md").write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    print(f"bench-perf: wrote {out / 'summary.md'}", file=sys.stderr)
    if failed:
        print(f"bench-perf: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
