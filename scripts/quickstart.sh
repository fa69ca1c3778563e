#!/usr/bin/env bash
# The README's main job: set up .venv, then run the end-to-end example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/tiny_kd.py
