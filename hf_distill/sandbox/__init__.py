"""Run untrusted Python (model-generated code plus its tests) in a throw-away sandbox.

Used by pass@k evaluation and by the sequence-KD execution filter. Two isolation levels:

- ``"bubblewrap"`` (default where it starts): each program runs in bubblewrap with read-only system
  directories, a private work directory and ``/tmp``, no network, its own PID namespace (the whole process
  tree ends at the timeout), a fresh read-only ``/proc``, an empty environment and resource limits.
- ``"guard"`` (fallback, with a one-time warning): a separate process with the same limits and an
  in-process guard. It is best effort, not a security boundary.

The verdict is always decided outside the sandbox from the harness's exit status. docs/evaluation.md says
exactly what each level guarantees. Executing anything requires an explicit opt-in:
``allow_code_execution=True`` or the environment variable ``HF_DISTILL_ALLOW_CODE_EXECUTION=1``.
"""

from .batch import run_programs
from .bubblewrap import find_bwrap
from .opt_in import ALLOW_ENV_VAR, CodeExecutionNotAllowedError, code_execution_allowed, require_code_execution_opt_in
from .result import ISOLATION_LEVELS, STATUSES, SandboxResult
from .runner import ISOLATION_CHOICES, bubblewrap_problem, run_program, sandbox_isolation

__all__ = [
    "ALLOW_ENV_VAR",
    "ISOLATION_CHOICES",
    "ISOLATION_LEVELS",
    "STATUSES",
    "CodeExecutionNotAllowedError",
    "SandboxResult",
    "bubblewrap_problem",
    "code_execution_allowed",
    "find_bwrap",
    "require_code_execution_opt_in",
    "run_program",
    "run_programs",
    "sandbox_isolation",
]
