#!/usr/bin/env bash
# The README's main job: install everything, then distil SmolLM2-135M-Instruct into a 10-layer copy of itself on
# Python standard-library code, on CPU and offline, and print where the report is.
#
#   bash scripts/run_cpu_demo.sh [--field value ...]     # extra flags override recipes/configs/cpu_smollm2.yaml
#
# Environment: HF_DISTILL_THREADS (default: all cores, at most 2 by default on a 2-core box),
# HF_DISTILL_SKIP_SETUP=1 to reuse an existing .venv, HF_DISTILL_CONFIG=recipes/configs/<other>.yaml for another
# CPU config (e.g. curriculum_smollm2.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
if [ "${HF_DISTILL_SKIP_SETUP:-0}" != "1" ]; then
  bash scripts/setup.sh
fi
setup_done=$(date +%s)
THREADS=${HF_DISTILL_THREADS:-$(nproc)}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# This checkout's code, even where the editable install points at another one (a git worktree).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
CONFIG=${HF_DISTILL_CONFIG:-recipes/configs/cpu_smollm2.yaml}
# accelerate launch sets OMP_NUM_THREADS=1 unless told otherwise: give the single process every core.
.venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
  --num_cpu_threads_per_process "$THREADS" \
  recipes/deepseek_to_llama3.py --config "$CONFIG" "$@"
end=$(date +%s)
echo
echo "Setup: $((setup_done - start)) s, distillation run: $((end - setup_done)) s, total: $((end - start)) s."
