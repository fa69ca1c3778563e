#!/usr/bin/env python
"""Same as `hf-distill precompute`: a teacher's top-k or sampled signal into dataset columns (resumable).

    python scripts/precompute_logits.py --teacher HuggingFaceTB/SmolLM2-1.7B-Instruct \
        --dataset data/tokenized --out out/teacher_topk --mode topk --k 32 --max-length 1024 --dtype bfloat16

Options: `python scripts/precompute_logits.py --help` (the code lives in `hf_distill/teachers/precompute_cli.py`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_distill.teachers.precompute_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
