"""Run a test script in one process, or in several CPU processes that form a gloo group (shared by the tests that
compare a multi-process step with a single-process one)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_processes(script_args: list[str], processes: int, base_port: int) -> None:
    """Run ``python *script_args`` once, or under `accelerate launch` with ``processes`` processes; fail on error."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes == 1:
        cmd = [sys.executable, *script_args]
    else:
        # `--multi_gpu` selects the torchrun launcher; with `use_cpu=True` the processes form a gloo group.
        port = str(base_port + os.getpid() % 300)
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
            "--num_processes", str(processes), "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", port, *script_args,
        ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
