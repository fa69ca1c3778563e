"""pass@k: the unbiased estimator on known counts, the sandboxed metric, and HumanEval offline."""

import itertools
from fractions import Fraction
from math import comb

import evaluate
import pytest

from hf_distill.evaluation import METRIC_FILES, PassAtK, mean_pass_at_k, pass_at_k
from hf_distill.evaluation.humaneval import humaneval_program, humaneval_test_code, load_humaneval_problems
from hf_distill.sandbox import ALLOW_ENV_VAR, CodeExecutionNotAllowedError


def brute_force_pass_at_k(n, c, k):
    """Share of all size-k subsets of n samples (c of them correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in subset) for subset in subsets) / len(subsets)


def test_hand_computed_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # c / n
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k: every 3-subset holds a correct sample
    assert pass_at_k(1, 1, 1) == 1.0


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_matches_brute_force_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_stable_for_large_n():
    n, c, k = 1000, 7, 100
    exact = 1 - Fraction(comb(n - c, k), comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)


def test_mean_over_problems_and_bad_input():
    scores = mean_pass_at_k([5, 4], [2, 0], [1, 2])
    assert scores["pass@1"] == pytest.approx((0.4 + 0.0) / 2)
    assert scores["pass@2"] == pytest.approx((0.7 + 0.0) / 2)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="num_correct"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        mean_pass_at_k([], [], [1])


GOOD = "def square(x):\n    return x * x\n"
WRONG = "def square(x):\n    return x + x\n"
LOOPS = "def square(x):\n    while True:\n        pass\n"
SHELL = "import os\ndef square(x):\n    os.system('true')\n    return x * x\n"
TEST = "assert square(3) == 9\nassert square(-2) == 4\n"


def test_metric_runs_candidates_in_the_sandbox():
    # problem 1: 2 of 4 candidates pass; problem 2: 1 of 4 (the looping and shell ones fail)
    predictions = [[GOOD, WRONG, GOOD, WRONG], [LOOPS, SHELL, WRONG, GOOD]]
    scores = PassAtK().compute(
        predictions=predictions,
        references=[TEST, TEST],
        k=[1, 2],
        allow_code_execution=True,
        timeout=1.0,
        show_progress=False,
    )
    assert scores["pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert scores["pass@2"] == pytest.approx(((1 - comb(2, 2) / comb(4, 2)) + (1 - comb(3, 2) / comb(4, 2))) / 2)
    assert scores["num_candidates"] == 8


def test_metric_refuses_without_opt_in(monkeypatch):
    monkeypatch.delenv(ALLOW_ENV_VAR, raising=False)
    with pytest.raises(CodeExecutionNotAllowedError):
        PassAtK().compute(predictions=[[GOOD]], references=[TEST])


def test_metric_loads_with_evaluate_load():
    metric = evaluate.load(METRIC_FILES["pass_at_k"])
    scores = metric.compute(
        predictions=[[GOOD, WRONG]], references=[TEST], k=1, allow_code_execution=True, show_progress=False
    )
    assert scores["pass@1"] == pytest.approx(0.5)


def test_humaneval_loads_offline_and_canonical_solutions_pass():
    problems = load_humaneval_problems()
    assert len(problems) == 164 and problems[0]["task_id"] == "HumanEval/0"
    chosen = problems[:3]
    predictions = [
        [humaneval_program(p, p["canonical_solution"]), humaneval_program(p, "    return None\n")] for p in chosen
    ]
    scores = PassAtK().compute(
        predictions=predictions,
        references=[humaneval_test_code(p) for p in chosen],
        k=[1, 2],
        allow_code_execution=True,
        show_progress=False,
    )
    assert scores["pass@1"] == pytest.approx(0.5)  # canonical passes, `return None` fails, on every problem
    assert scores["pass@2"] == pytest.approx(1.0)
