#!/usr/bin/env bash
# Create .venv and install jacinv with its test, data and docs extras.
# PyTorch: the CUDA build when an NVIDIA GPU is visible, otherwise a CPU build
# (a local +cpu wheel from pip's find-links when one is there, else PyTorch's CPU index).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    $PIP install "torch>=2.1"
  else
    local_cpu=""
    for dir in ${PIP_FIND_LINKS:-} $(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true); do
      local_cpu=$(ls "$dir"/torch-*+cpu-*.whl 2>/dev/null | head -n 1 || true)
      [ -n "$local_cpu" ] && break
    done
    if [ -n "$local_cpu" ]; then
      $PIP install "$local_cpu" || $PIP install torch --index-url https://download.pytorch.org/whl/cpu
    else
      $PIP install torch --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
fi
$PIP install -q -e ".[test,data,docs]"
