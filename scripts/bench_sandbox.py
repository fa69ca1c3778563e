"""Per-program cost of the sandbox's isolation levels, against a bare interpreter running the same programs.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_sandbox.py [--problems 20] [--rounds 3]

Runs the first ``--problems`` HumanEval canonical solutions with their tests, one at a time (no
concurrency, so the numbers are latency per program), under: a bare ``python -I -S`` subprocess (no
isolation at all: the floor any process-based runner pays), the in-process guard, and bubblewrap. Prints
the median milliseconds per program over the rounds, the overhead over the bare run, and the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from hf_distill.evaluation.humaneval import humaneval_program, humaneval_test_code, load_humaneval_problems
from hf_distill.sandbox import bubblewrap_problem, run_program
from hf_distill.sandbox.bubblewrap import base_interpreter


def bare_run(program: str, test_code: str) -> bool:
    """The floor: a fresh interpreter in a temporary directory, no limits, no isolation."""
    with tempfile.TemporaryDirectory() as workdir:
        path = os.path.join(workdir, "program.py")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(program + "\n\n" + test_code)
        done = subprocess.run([base_interpreter(), "-I", "-S", path], cwd=workdir, capture_output=True, timeout=60)
    return done.returncode == 0


def sandboxed(level: str) -> Callable[[str, str], bool]:
    def run(program: str, test_code: str) -> bool:
        return run_program(program, test_code, timeout=60, isolation=level, allow_code_execution=True).passed

    return run


def ms_per_program(runner: Callable[[str, str], bool], jobs: list[tuple[str, str]], rounds: int) -> float:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        passed = [runner(program, test_code) for program, test_code in jobs]
        timings.append((time.perf_counter() - started) * 1000 / len(jobs))
        if not all(passed):
            raise SystemExit("a canonical solution failed: the benchmark would not measure honest programs")
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    problems = load_humaneval_problems(limit=args.problems)
    jobs = [(humaneval_program(p, p["canonical_solution"]), humaneval_test_code(p)) for p in problems]
    runners = {"bare interpreter": bare_run, "guard": sandboxed("guard")}
    problem = bubblewrap_problem()
    if problem is None:
        runners["bubblewrap"] = sandboxed("bubblewrap")
    else:
        print(f"bubblewrap skipped: {problem}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {len(jobs)} HumanEval programs x {args.rounds}")
    results = {name: ms_per_program(runner, jobs, args.rounds) for name, runner in runners.items()}
    floor = results["bare interpreter"]
    print(f"{'runner':<18} {'ms/program':>11} {'overhead ms':>12} {'x bare':>7}")
    for name, value in results.items():
        print(f"{name:<18} {value:>11.1f} {value - floor:>12.1f} {value / floor:>7.2f}")
    if "bubblewrap" in results:
        print(f"bubblewrap / guard: {results['bubblewrap'] / results['guard']:.2f}")


if __name__ == "__main__":
    main()
