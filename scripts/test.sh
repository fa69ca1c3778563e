#!/usr/bin/env bash
# Set up (if needed) and run the default test suite: fast tests on tiny random models.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the real-model tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
