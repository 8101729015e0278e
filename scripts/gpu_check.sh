#!/usr/bin/env bash
# The GPU checks in one command, for any CUDA machine (figures for docs/gpu.md):
#   1. ./run_all.sh --profile gpu-smoke        (steps 1-6; 3-6 on the GPU; offline models)
#   2. benchmarks/gpu_finetune_compare.py      (Unsloth 4-bit vs transformers+PEFT+bitsandbytes QLoRA,
#                                               Llama-2-7B shape with random weights, + 4-bit inference)
# and copies what to report (trainer stats, inference manifests, the comparison table, the benchmark
# JSON, nvidia-smi) into OUT_DIR. Without CUDA it stops in one line (exit 1).
#   scripts/gpu_check.sh OUT_DIR [extra benchmark arguments, e.g. --shape smollm2-135m --steps 4]
# A machine without network: AE_VENV=none PYTHON=<a python with requirements + requirements-gpu
# installed>, with the offline models' cache (artifacts/cache/models) or their packages present.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/gpu_check.sh OUT_DIR [benchmark arguments]}"
shift
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || { echo "gpu_check: no CUDA GPU here (nvidia-smi failed)" >&2; exit 1; }
start=$(date +%s)
./run_all.sh --profile gpu-smoke 2>&1 | tee "$out/gpu-smoke.log"
echo "gpu-smoke wall time: $(( $(date +%s) - start )) s" | tee -a "$out/gpu-smoke.log"
for f in artifacts/models/gpu-smoke/*/trainer_stats.json artifacts/predictions/gpu-smoke/manifest-*.json \
         artifacts/metrics/gpu-smoke/comparison.md; do
  [ -f "$f" ] && cp "$f" "$out/$(echo "$f" | tr / _)"
done
source scripts/setup_env.sh --profile gpu-smoke >/dev/null
"$PY" benchmarks/gpu_finetune_compare.py --json "$out/gpu_finetune_compare.json" "$@" 2>&1 | tee "$out/compare.log"
