"""Run many programs concurrently, each in its own sandbox."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm.auto import tqdm

from .opt_in import require_code_execution_opt_in
from .result import SandboxResult
from .runner import run_program, sandbox_isolation


def run_programs(
    programs: Sequence[str],
    test_codes: Sequence[str] | None = None,
    *,
    timeout: float = 5.0,
    memory_mb: int = 1024,
    num_workers: int = 2,
    max_output_chars: int = 4000,
    isolation: str = "auto",
    allow_code_execution: bool = False,
    show_progress: bool = True,
    desc: str = "executing programs",
) -> list[SandboxResult]:
    """Run many programs concurrently (each in its own sandbox); results keep the input order.

    A thread per worker drives one sandbox at a time, so at most ``num_workers`` run at once. The isolation
    level is resolved once, so every result of one call has the same ``isolation``.
    """
    require_code_execution_opt_in(allow_code_execution)
    if test_codes is not None and len(test_codes) != len(programs):
        raise ValueError(f"got {len(programs)} programs but {len(test_codes)} test codes")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    tests = list(test_codes) if test_codes is not None else [""] * len(programs)
    level = sandbox_isolation(isolation)
    results: list[SandboxResult | None] = [None] * len(programs)

    def run_one(index: int) -> int:
        results[index] = run_program(
            programs[index],
            tests[index],
            timeout=timeout,
            memory_mb=memory_mb,
            max_output_chars=max_output_chars,
            isolation=level,
            allow_code_execution=True,
        )
        return index

    with (
        ThreadPoolExecutor(max_workers=num_workers) as pool,
        tqdm(total=len(programs), desc=desc, disable=not show_progress) as progress,
    ):
        for future in as_completed([pool.submit(run_one, index) for index in range(len(programs))]):
            future.result()
            progress.update(1)
    return [result for result in results if result is not None]
