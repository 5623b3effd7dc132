#!/usr/bin/env bash
# The GPU checks named by issues 4 and 5, in one call on a lent GPU machine (torch/transformers/peft
# preinstalled there; no ray): the 7B-class shapes of MoSE vs LoRA (training step) and AR vs eager
# (inference; also under bf16 autocast, the trainer's precision=bf16), then tokens/s and MFU of the training
# step, then the GPU tests. Logs go to $OUT (or ./gpu-logs).
# Usage (repo root): bash benchmarks/gpu_suite.sh
set -uo pipefail
OUT="${OUT:-gpu-logs}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
} 2>&1 | tee "$OUT/env.txt"
run() {  # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  echo "=== $name ==="
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "=== $name rc=${PIPESTATUS[0]} ==="
}
run model_overhead_7b 240 python3 benchmarks/model_overhead.py --device cuda --shapes 7b
run model_overhead_7b_autocast 160 python3 benchmarks/model_overhead.py --device cuda --shapes 7b --autocast --no-count
run train_throughput_7b 200 python3 benchmarks/train_throughput.py --device cuda --shapes 7b
run gpu_tests 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/model
