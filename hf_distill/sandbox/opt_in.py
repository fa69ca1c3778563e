"""The explicit opt-in that running model-written code requires."""

from __future__ import annotations

import os

ALLOW_ENV_VAR = "HF_DISTILL_ALLOW_CODE_EXECUTION"


class CodeExecutionNotAllowedError(PermissionError):
    """Raised when code would be executed without the user's explicit opt-in."""


def code_execution_allowed(allow_code_execution: bool = False) -> bool:
    """True when the caller or the environment (``HF_DISTILL_ALLOW_CODE_EXECUTION=1``) opted in."""
    return bool(allow_code_execution) or os.environ.get(ALLOW_ENV_VAR, "").strip() == "1"


def require_code_execution_opt_in(allow_code_execution: bool = False) -> None:
    """Refuse to go on unless the user explicitly accepted running model-generated code."""
    if not code_execution_allowed(allow_code_execution):
        raise CodeExecutionNotAllowedError(
            "Refusing to execute model-generated code. It runs in a sandbox (bubblewrap where available, "
            "otherwise a weaker in-process guard; see docs/evaluation.md for what each level guarantees). "
            "To opt in, pass allow_code_execution=True "
            f"or set the environment variable {ALLOW_ENV_VAR}=1."
        )
