"""Shared by the sandbox tests: the isolation levels to run under and a few probes of the host."""

from __future__ import annotations

import os
import secrets

import pytest

from hf_distill.sandbox import bubblewrap_problem, run_program

BWRAP_MISSING = bubblewrap_problem()
LEVELS = [
    pytest.param(
        "bubblewrap", marks=pytest.mark.skipif(BWRAP_MISSING is not None, reason=f"bubblewrap: {BWRAP_MISSING}")
    ),
    "guard",
]
needs_bubblewrap = pytest.mark.skipif(BWRAP_MISSING is not None, reason=f"bubblewrap: {BWRAP_MISSING}")


def run(level: str, program: str, test_code: str = "", **kwargs):
    kwargs.setdefault("timeout", 10.0)
    return run_program(program, test_code, isolation=level, allow_code_execution=True, **kwargs)


def unique_sleep_seconds() -> str:
    """A sleep duration no other process on the machine has on its command line (identifies leftovers)."""
    return f"{600 + secrets.randbelow(10**6) / 10**6:.6f}"


def host_processes_with(token: str) -> list[int]:
    """Host PIDs whose command line contains ``token``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as handle:
                    if token.encode() in handle.read():
                        found.append(int(name))
            except OSError:
                continue
    return found


# Starts a fresh interpreter (no harness, no policy) from inside the sandbox without any audited call:
# multiprocessing's spawn helper goes straight to _posixsubprocess. Under bubblewrap this is how a
# determined program gets past the in-process rules, so the OS layer is what the tests then exercise.
SPAWN_FRESH_PYTHON = """
import sys
from multiprocessing.util import spawnv_passfds
def spawn(code, *extra):
    argv = [sys.executable, "-I", "-S", "-c", code, *extra]
    return spawnv_passfds(sys.executable.encode(), [arg.encode() for arg in argv], [])
"""
