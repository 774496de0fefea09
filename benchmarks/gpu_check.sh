#!/usr/bin/env bash
# `make gpu-check` (or, where the image has no make: `bash benchmarks/gpu_check.sh`): bench's
# CUDA paths proved on one GPU machine with no network, in one call of at most 10 minutes
# (benchmarks/gpu_check.py: the cells, their estimates, the deadlines). The image has torch
# with CUDA, transformers, accelerate, pandas, pyarrow, scipy, psutil and nvidia-ml-py;
# `make device-wheels` (on a machine with network) puts what it lacks into .whl/ (hydra-core,
# omegaconf, antlr4, bitsandbytes, diffusers), installed here offline into a temporary
# prefix. .whl/ is ignored by git: a copy of the working tree must carry it.
#
#   OUT=<dir>      where the (at most 8) files go (default gpu-check-out)
#   DRY_RUN=1      plan the same cells here (nothing loads), print each cell's estimate and
#                  the total; exit 1 when a cell does not plan or the total does not fit
#   BENCH_PYTHON   the interpreter (default: python3; .venv/bin/python for DRY_RUN)
#   GPU_CHECK_LIMIT_S  the cells' budget in seconds (default 480)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
LIMIT=(--limit-s "${GPU_CHECK_LIMIT_S:-480}")
if [ "${DRY_RUN:-0}" = 1 ]; then
  exec "${BENCH_PYTHON:-.venv/bin/python}" -m benchmarks.gpu_check --dry-run --out "$OUT" "${LIMIT[@]}"
fi
PY=${BENCH_PYTHON:-python3}
ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run make device-wheels on a machine with network, and carry .whl/"; exit 3; }
SITE=$(mktemp -d /tmp/bench-gpu-site.XXXX)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" .whl/*.whl || { echo "the wheels in .whl/ did not install"; exit 3; }
export PYTHONPATH="$SITE:$PWD"
exec "$PY" -m benchmarks.gpu_check --out "$OUT" "${LIMIT[@]}"
