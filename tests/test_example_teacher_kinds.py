"""examples/teacher_kinds.py runs every kind of teacher end to end and prints one row per kind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "teacher_kinds.py"


def test_every_teacher_kind_in_the_example_trains():
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "2"], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.split()}
    for kind, description in [
        ("live", "live teacher"),
        ("precomputed", "precomputed teacher columns"),
        ("cross_tokenizer", "cross-tokenizer teacher"),
        ("ema", "EMA self-teacher"),
        ("ensemble", "ensemble of 2 teachers"),
    ]:
        assert kind in rows and description in rows[kind], done.stdout[-2000:]
