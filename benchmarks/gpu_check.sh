#!/usr/bin/env bash
# `make gpu-check`: bench's CUDA paths, proved on one GPU machine in under 7 minutes with no
# network. The machine's image has torch with CUDA, transformers, accelerate, pandas,
# pyarrow, scipy and nvidia-ml-py; `make device-wheels` (here, online) puts what it lacks
# into .whl/ (hydra-core, omegaconf, antlr4, bitsandbytes), installed offline into a
# temporary prefix. Every step is time-boxed: one failure does not eat the rest.
#
#   OUT=<dir>   where the (at most 8) files go: env.txt (doctor, nvidia-smi, torch), smi_apps.csv
#               and smi_gpu.csv (nvidia-smi every 100 ms, independent of bench), cells.log,
#               rows.csv, summary.md (the table), logs.tgz (cell logs and the report)
#   DRY_RUN=1   plan the same cells here (`dry_run=true`, nothing loads) and exit 0
#   BENCH_PYTHON  the interpreter (default: python3; .venv/bin/python for DRY_RUN)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
DRY_RUN=${DRY_RUN:-0}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1
if [ "$DRY_RUN" = 1 ]; then
  PY=${BENCH_PYTHON:-.venv/bin/python}
else
  PY=${BENCH_PYTHON:-python3}
  SITE=$(mktemp -d /tmp/bench-gpu-site.XXXX)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || { echo "no wheels: run make device-wheels first"; exit 3; }
  export PYTHONPATH="$SITE:$PWD"
fi
WORK=$(mktemp -d /tmp/bench-gpu-check.XXXX)
R=$WORK/results
export BENCH_CACHE=$WORK/cache
RID=gpucheck
T0=$(date +%s)
LIMIT_S=${GPU_CHECK_LIMIT_S:-330}  # cells stop starting after this; the summary follows
stamp() { echo "== $(( $(date +%s) - T0 ))s $*" | tee -a "$OUT/cells.log"; }

# Llama-2-7B's true architecture with random weights (nothing downloaded), 512 + 128 tokens
BASE="weights=synthetic eval=none report=false results_dir=$R
      workload.prompt_tokens=512 workload.max_warmup_runs=2
      workload.repeats=3 workload.min_duration_s=2 workload.max_repeats=4
      cell.phase_timeout_s.measure=150 hydra.run.dir=$WORK/outputs/\${run_id}"
# name | overrides | what it proves (128 new tokens; 32 where decoding is slow)
N="model=llama2-7b workload.new_tokens"
CELLS=(
  "a-fp16|run_id=$RID quant=fp16 gpu=local $N=128|peak vs nvidia-smi, weights bytes, decode vs roofline"
  "b-sync|run_id=$RID-sync quant=fp16 gpu=local $N=128 workload.cuda_clock=sync|events clock vs sync"
  "c-24gb|run_id=$RID quant=fp16 gpu=rtx4090-24gb $N=128|emulated 24 GB class: fits (cap = class - context)"
  "d-12gb|run_id=$RID quant=fp16 gpu=rtx3060-12gb $N=128|emulated 12 GB class: oom"
  "e-offload|run_id=$RID quant=fp16 gpu=rtx3060-12gb offload=true $N=32|offload under 12 GB: peak <= class"
  "f-nf4|run_id=$RID quant=bnb-nf4 gpu=local $N=128|bitsandbytes 4-bit on CUDA, synthetic weights made on the GPU"
  "h-pidns|run_id=$RID-pidns quant=fp16 gpu=local $N=128|own PID namespace: device-rise fallback"
  "g-int8|run_id=$RID quant=bnb-int8 gpu=local $N=32|bitsandbytes LLM.int8 on CUDA"
  "i-sd15|run_id=$RID-sd model=sd-1.5 quant=fp16 gpu=local workload.steps=20|diffusers on CUDA: SD 1.5 fp16 at 512x512, per-step, encoder and VAE times, peak"
  "j-sd15-8gb|run_id=$RID-sd model=sd-1.5 quant=fp16 gpu=laptop-8gb workload.steps=20|SD 1.5 under an emulated 8 GB class"
)

if [ "$DRY_RUN" = 1 ]; then
  rc=0
  for spec in "${CELLS[@]}"; do
    IFS='|' read -r name args why <<< "$spec"
    echo "== $name: $why"
    # shellcheck disable=SC2086
    "$PY" -m bench $BASE $args dry_run=true || rc=1
  done 2>&1 | tee "$OUT/cells.log"
  exit "${PIPESTATUS[0]}"
fi

stamp env
{ nvidia-smi; nvidia-smi -q | grep -iE "driver version|cuda version|mig mode|product name|power limit"
  "$PY" -m bench.doctor results_dir="$R" cache_dir="$BENCH_CACHE"
  "$PY" - <<'EOF'
import os, torch, pynvml
p = torch.cuda.get_device_properties(0); torch.empty(1, device="cuda")
pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(0)
procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
print("torch", torch.__version__, torch.version.cuda, p.name, p.total_memory, "uuid", p.uuid)
print("nvml uuid", pynvml.nvmlDeviceGetUUID(h), "pid", os.getpid(), "nvml pids",
      [(q.pid, q.usedGpuMemory) for q in procs])
EOF
} > "$OUT/env.txt" 2>&1
nvidia-smi --query-compute-apps=timestamp,pid,used_memory --format=csv,noheader -lms 100 \
  > "$OUT/smi_apps.csv" 2>/dev/null & SMI1=$!
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu,clocks.sm,power.draw \
  --format=csv,noheader -lms 100 > "$OUT/smi_gpu.csv" 2>/dev/null & SMI2=$!

for spec in "${CELLS[@]}"; do
  IFS='|' read -r name args why <<< "$spec"
  if (( $(date +%s) - T0 > LIMIT_S )); then stamp "SKIP (time) $name"; continue; fi
  stamp "cell $name: $why"
  pre=""
  [ "$name" = "h-pidns" ] && pre="unshare -p -f --mount-proc"
  # shellcheck disable=SC2086
  timeout 150 $pre "$PY" -m bench $BASE $args >> "$OUT/cells.log" 2>&1
  stamp "$name rc=$?"
done
kill $SMI1 $SMI2 2>/dev/null

stamp summary
"$PY" benchmarks/gpu_check_summary.py "$R" "$OUT" > "$OUT/summary.md" 2>&1
"$PY" -m bench.report results_dir="$R" reports_dir="$WORK/report" >> "$OUT/cells.log" 2>&1
tar czf "$OUT/logs.tgz" -C "$WORK" outputs report 2>/dev/null
stamp done
cat "$OUT/summary.md"
