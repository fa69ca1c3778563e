"""Execution check for code completions: run prompt + completion against the unit tests shipped with the row.

The default layout is HumanEval's: the row has the function signature and docstring in ``prompt``, a
``test`` column defining ``check(candidate)``, and an ``entry_point`` naming the function. Code runs in
``hf_distill.sandbox`` (separate process, time and memory limits, process creation and sockets disabled),
and only after an explicit opt-in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...sandbox import SandboxResult, require_code_execution_opt_in, run_program, sandbox_isolation

# A fenced block; one left open at the end (the answer hit max_new_tokens) runs to the end of the text.
_FENCED_CODE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(completion: str) -> str | None:
    """The first fenced code block of a chat-style answer, or None when the completion is bare code."""
    match = _FENCED_CODE.search(completion)
    return match.group(1) if match else None


@dataclass
class UnitTestExecutionCheck:
    """Say whether a completion passes the row's unit tests (callable as ``check(row, completion)``).

    A bare completion continues the prompt's code (``prompt + completion``). A chat-style answer with a
    fenced code block is appended after the prompt instead, so the answer's full definition replaces the
    prompt's stub while the prompt's imports stay available.
    """

    test_column: str = "test"
    entry_point_column: str | None = "entry_point"
    prompt_column: str = "prompt"
    timeout: float = 5.0
    memory_mb: int = 512
    allow_code_execution: bool = False

    def __post_init__(self) -> None:
        # Fail when the check is built, not hours later when the first candidate is ready.
        require_code_execution_opt_in(self.allow_code_execution)

    def program(self, row: Mapping[str, Any], completion: str) -> str:
        prompt = row.get(self.prompt_column, "")
        prompt = prompt if isinstance(prompt, str) else ""
        code = extract_code(completion)
        return prompt + completion if code is None else prompt + "\n" + code

    def test_code(self, row: Mapping[str, Any]) -> str:
        if self.test_column not in row:
            raise ValueError(
                f"the execution check needs a '{self.test_column}' column with unit tests; the row has {list(row)}"
            )
        tests = row[self.test_column]
        if self.entry_point_column and row.get(self.entry_point_column):
            tests = f"{tests}\n\ncheck({row[self.entry_point_column]})\n"
        return tests

    def __call__(self, row: Mapping[str, Any], completion: str) -> SandboxResult:
        return run_program(
            self.program(row, completion),
            self.test_code(row),
            timeout=self.timeout,
            memory_mb=self.memory_mb,
            allow_code_execution=True,
        )

    def describe(self) -> dict[str, Any]:
        """What goes into the generation metadata."""
        return {
            "type": type(self).__name__,
            "test_column": self.test_column,
            "entry_point_column": self.entry_point_column,
            "timeout": self.timeout,
            "memory_mb": self.memory_mb,
            "isolation": sandbox_isolation(),
        }
