"""pass@k for generated code, as an ``evaluate.Metric`` that executes candidates only when opted in.

Usable directly (``PassAtK().compute(...)``) or through ``evaluate.load(path_to_this_file)``. Each prediction
is a list of n candidate programs for one problem; each reference is the test code that must run without
an exception after a candidate (e.g. HumanEval's ``test`` plus ``check(entry_point)``). Candidates run in
``hf_distill.sandbox`` (bubblewrap where it starts, else the weaker in-process guard); the scores say which
under ``"isolation"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import datasets
import evaluate
import numpy as np

from hf_distill.sandbox import SandboxResult, require_code_execution_opt_in, run_programs


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k), in the product form that never forms huge binomials.

    C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i), so no factorials and no overflow for large n.
    """
    n, c = int(num_samples), int(num_correct)
    if n < 1:
        raise ValueError(f"num_samples must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"num_correct must be in [0, num_samples={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, num_samples={n}] (need at least k samples per problem), got {k}")
    if n - c < k:  # every size-k subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def mean_pass_at_k(num_samples: Sequence[int], num_correct: Sequence[int], ks: Iterable[int]) -> dict[str, float]:
    """Average the per-problem estimator over problems, one ``pass@k`` entry per k."""
    if len(num_samples) != len(num_correct):
        raise ValueError(f"got {len(num_samples)} sample counts but {len(num_correct)} correct counts")
    if len(num_samples) == 0:
        raise ValueError("pass@k needs at least one problem")
    return {f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for n, c in zip(num_samples, num_correct)])) for k in ks}


def execute_candidates(
    predictions: Sequence[Sequence[str]],
    references: Sequence[str],
    *,
    allow_code_execution: bool = False,
    timeout: float = 5.0,
    memory_mb: int = 1024,
    num_workers: int = 2,
    show_progress: bool = True,
) -> list[list[SandboxResult]]:
    """Run every candidate of every problem against that problem's tests; results mirror ``predictions``."""
    require_code_execution_opt_in(allow_code_execution)
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} problems' candidates but {len(references)} test codes")
    programs, tests, owners = [], [], []
    for problem_index, (candidates, test_code) in enumerate(zip(predictions, references)):
        if isinstance(candidates, str):
            raise TypeError("each prediction must be a list of candidate programs, not a single string")
        for candidate in candidates:
            programs.append(candidate)
            tests.append(test_code)
            owners.append(problem_index)
    flat = run_programs(
        programs,
        tests,
        timeout=timeout,
        memory_mb=memory_mb,
        num_workers=num_workers,
        allow_code_execution=True,
        show_progress=show_progress,
        desc="pass@k: running tests",
    )
    grouped: list[list[SandboxResult]] = [[] for _ in predictions]
    for owner, result in zip(owners, flat):
        grouped[owner].append(result)
    return grouped


_DESCRIPTION = """
pass@k: the probability that at least one of k samples drawn from n generated candidates passes the
problem's unit tests, estimated without bias as 1 - C(n-c, k)/C(n, k) and averaged over problems.
Executes model-generated code: pass allow_code_execution=True (or set HF_DISTILL_ALLOW_CODE_EXECUTION=1).
"""

_INPUTS = """
Args:
    predictions: list (one per problem) of lists of candidate programs (strings).
    references: list (one per problem) of test code run after each candidate.
    k: int or list of ints, each <= the number of candidates of every problem. Default [1].
    allow_code_execution: must be True (or the env var set) to run anything.
    timeout: wall-clock seconds per candidate. memory_mb: address-space limit per candidate.
    num_workers: candidates run at once. show_progress: tqdm bar.
Returns:
    {"pass@k": float for each k, "num_problems": int, "num_candidates": int,
     "isolation": the sandbox level the candidates ran under ("bubblewrap" or "guard")}
"""


class PassAtK(evaluate.Metric):
    """pass@k with sandboxed execution (opt-in)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("string")), "references": datasets.Value("string")}
            ),
        )

    def _compute(
        self,
        predictions: Sequence[Sequence[str]],
        references: Sequence[str],
        k: int | Sequence[int] = (1,),
        allow_code_execution: bool = False,
        timeout: float = 5.0,
        memory_mb: int = 1024,
        num_workers: int = 2,
        show_progress: bool = True,
    ) -> dict[str, float | int | str]:
        ks = [int(k)] if isinstance(k, (int, np.integer)) else [int(value) for value in k]
        require_code_execution_opt_in(allow_code_execution)
        results = execute_candidates(
            predictions,
            references,
            allow_code_execution=True,
            timeout=timeout,
            memory_mb=memory_mb,
            num_workers=num_workers,
            show_progress=show_progress,
        )
        num_samples = [len(problem) for problem in results]
        num_correct = [sum(result.passed for result in problem) for problem in results]
        scores: dict[str, float | int | str] = dict(mean_pass_at_k(num_samples, num_correct, ks))
        scores["num_problems"] = len(results)
        scores["num_candidates"] = sum(num_samples)
        scores["isolation"] = ",".join(sorted({result.isolation for problem in results for result in problem}))
        return scores
