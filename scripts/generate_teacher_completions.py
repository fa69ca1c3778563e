#!/usr/bin/env python
"""Same as `hf-distill generate`: teacher completions for a prompt dataset (sequence-level KD), resumable.

    python scripts/generate_teacher_completions.py --teacher HuggingFaceTB/SmolLM2-135M-Instruct \
        --dataset prompts.jsonl --out runs/teacher_completions --strategy sample --num-samples 4 --selection loglik

Options: `python scripts/generate_teacher_completions.py --help` (code: `hf_distill/teachers/generation/cli.py`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_distill.teachers.generation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
