#!/usr/bin/env bash
# The one script every scheduler calls (systemd timer, cron, CI): take the lock, update the
# checkout and the venv, then run one night (`python -m bench.ops.nightly "$@"`, which resumes
# an interrupted run, sweeps, reports and publishes). Works from any working directory.
#
# Environment (see deploy/nightly.env.example for all of them):
#   BENCH_STATE_DIR  lock, current-run marker, publish clone   (~/.local/state/bench)
#   BENCH_LOCK_FILE  the lock                                    ($BENCH_STATE_DIR/nightly.lock)
#   BENCH_UPDATE     0 = measure the checkout as it is: no git pull, no make install  (1)
#   BENCH_VENV       the virtual environment `make install` fills and that runs the night
#                                                                (<repo>/.venv)
# A second invocation while one holds the lock prints one line and exits 0.
set -euo pipefail

main() {
  local repo state_dir lock venv
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
  cd "$repo"
  state_dir="${BENCH_STATE_DIR:-$HOME/.local/state/bench}"
  lock="${BENCH_LOCK_FILE:-$state_dir/nightly.lock}"
  venv="${BENCH_VENV:-$repo/.venv}"
  mkdir -p "$state_dir" "$(dirname "$lock")"

  # fd 9 stays open through `exec` below, so the lock is held until the night ends.
  exec 9>>"$lock"
  if ! flock -n 9; then
    echo "another nightly run holds $lock"
    exit 0
  fi

  if [[ "${BENCH_UPDATE:-1}" != 0 ]]; then
    echo "nightly.sh: updating $repo (git pull --ff-only; make install)"
    git pull --ff-only
    make install VENV="$venv"
  fi

  export BENCH_STATE_DIR="$state_dir"
  exec "$venv/bin/python" -m bench.ops.nightly "$@"
}

# Everything runs from inside main(): bash has parsed the whole script before `git pull`
# can replace it.
main "$@"
