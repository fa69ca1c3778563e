"""Honest programs keep their verdicts in the sandbox: every HumanEval canonical solution passes, known wrong
ones fail, and pass@k reports the isolation level it ran under."""

from __future__ import annotations

import pytest
from sandbox_levels import LEVELS

from hf_distill.evaluation.humaneval import humaneval_program, humaneval_test_code, load_humaneval_problems
from hf_distill.evaluation.pass_at_k import PassAtK
from hf_distill.sandbox import run_programs, sandbox_isolation


def _verdicts(level: str, completions: list[str], problems: list[dict]) -> list[bool]:
    results = run_programs(
        [humaneval_program(p, c) for p, c in zip(problems, completions)],
        [humaneval_test_code(p) for p in problems],
        timeout=20.0,
        num_workers=2,
        isolation=level,
        allow_code_execution=True,
        show_progress=False,
    )
    assert {r.isolation for r in results} == {level}
    return [r.passed for r in results]


def _check_all_problems(level: str) -> None:
    problems = load_humaneval_problems()
    assert len(problems) == 164
    canonical = _verdicts(level, [p["canonical_solution"] for p in problems], problems)
    assert [p["task_id"] for p, ok in zip(problems, canonical) if not ok] == []
    wrong = _verdicts(level, ["    return None\n"] * len(problems), problems)
    assert [p["task_id"] for p, ok in zip(problems, wrong) if ok] == []


def test_all_canonical_solutions_pass_and_wrong_ones_fail_at_the_default_level():
    _check_all_problems(sandbox_isolation("auto"))


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
def test_all_canonical_solutions_pass_and_wrong_ones_fail(level):
    _check_all_problems(level)


def test_pass_at_k_reports_the_isolation_level():
    scores = PassAtK().compute(
        predictions=[["def f():\n    return 1\n", "def f():\n    return 2\n"]],
        references=["assert f() == 1\n"],
        k=1,
        allow_code_execution=True,
        show_progress=False,
    )
    assert scores["pass@1"] == pytest.approx(0.5)
    assert scores["isolation"] == sandbox_isolation("auto")
