"""examples/cotrained.py runs every co-trained regime end to end (train, export, reload) and logs each model's terms."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cotrained.py"


def test_every_regime_in_the_example_trains_exports_and_reloads():
    # This checkout's hf_distill, also when another one is installed in the environment.
    path = os.pathsep.join(filter(None, [str(EXAMPLE.parents[1]), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.split()}
    for regime, expected in [
        ("mutual", ["saved=.,peers/peer1,peers/peer2", "student_soft_loss=", "peer2_loss=", "peer1_learning_rate="]),
        ("online", ["saved=.,teacher", "student_soft_loss=", "teacher_hard_loss=", "teacher_learning_rate="]),
        ("mtp", ["saved=.", "hard_loss=", "mtp1_ce=", "mtp2_kl="]),
    ]:
        assert regime in rows, done.stdout[-2000:]
        for text in expected:
            assert text in rows[regime], (text, rows[regime])
