"""Candidates a teacher wrote for one prompt, the filters they must pass, and the rule that picks among them.

Filters run cheapest first (length, then the execution check), and the execution check is only run on as
many candidates as the selection needs: for ``first`` and ``loglik`` it stops at the first candidate (in
selection order) that passes, which yields the same pick as executing all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .config import TeacherGenerationConfig


@dataclass
class Candidate:
    """One completion: its text, token ids (for scoring), and what the filters found."""

    text: str
    token_ids: list[int]
    finished: bool  # ended by EOS or a stop sequence rather than by max_new_tokens
    ended_with_eos: bool = False
    sample_index: int = 0
    score: float | None = None  # teacher mean log-likelihood per token, when computed
    passed: bool | None = None  # execution-check result, when run
    generated_ids: list[int] | None = None  # raw decoder output up to and including EOS, for inspection


class ExecutionCheck(Protocol):
    """Anything that says whether a completion for a dataset row is correct (e.g. passes its unit tests).

    It may return a bool or an object with a ``passed`` attribute (like ``sandbox.SandboxResult``).
    """

    def __call__(self, row: Mapping[str, Any], completion: str) -> Any: ...


def check_passed(check: ExecutionCheck, row: Mapping[str, Any], completion: str) -> bool:
    result = check(row, completion)
    passed = getattr(result, "passed", result)
    if not isinstance(passed, bool):
        raise TypeError(f"execution check must return a bool or an object with .passed, got {result!r}")
    return passed


def within_length_limits(candidate: Candidate, config: TeacherGenerationConfig) -> bool:
    n = len(candidate.token_ids)
    if n < config.min_completion_tokens:
        return False
    if config.max_completion_tokens is not None and n > config.max_completion_tokens:
        return False
    return candidate.finished or not config.require_finished


def select_candidates(
    candidates: list[Candidate],
    config: TeacherGenerationConfig,
    row: Mapping[str, Any],
    score_fn: Callable[[list[Candidate]], list[float]] | None = None,
    execution_check: ExecutionCheck | None = None,
) -> list[Candidate]:
    """The candidates to keep for one prompt (possibly none), best first.

    ``score_fn`` gives each candidate its teacher mean log-likelihood; it is required for ``loglik``.
    """
    survivors = [c for c in candidates if within_length_limits(c, config)]
    if config.selection == "loglik":
        if score_fn is None:
            raise ValueError("selection='loglik' needs a scoring function")
        for candidate, score in zip(survivors, score_fn(survivors)):
            candidate.score = score
        # Stable sort: ties keep generation order. NaN scores (no tokens) sort last.
        survivors.sort(key=lambda c: -c.score if c.score is not None and not math.isnan(c.score) else math.inf)
    if execution_check is None:
        return survivors if config.selection == "all" else survivors[:1]
    kept: list[Candidate] = []
    for candidate in survivors:
        candidate.passed = check_passed(execution_check, row, candidate.text)
        if candidate.passed:
            kept.append(candidate)
            if config.selection != "all":
                break
    return kept
