"""Per-program cost of the sandbox's isolation levels, against a bare interpreter running the same programs.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_sandbox.py [--problems 20] [--rounds 3]

Runs the first ``--problems`` HumanEval canonical solutions with their tests, one at a time (no
concurrency, so the numbers are latency per program), under: a bare ``python -I -S`` subprocess (no
isolation at all: the floor any process-based runner pays), the in-process guard, and bubblewrap. The
runners take turns program by program (in a rotating order), so a shared, noisy machine slows them alike;
the overhead is the median over programs and rounds of the paired difference to the bare run.
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


def paired_timings(
    runners: dict[str, Callable[[str, str], bool]], jobs: list[tuple[str, str]], rounds: int
) -> dict[str, list[float]]:
    """Milliseconds per (round, program) for each runner, the runners interleaved program by program."""
    timings: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for round_index in range(rounds):
        for job_index, (program, test_code) in enumerate(jobs):
            shift = (round_index + job_index) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                if not runners[name](program, test_code):
                    raise SystemExit(f"{name}: a canonical solution failed; the benchmark measures honest programs")
                timings[name].append((time.perf_counter() - started) * 1000)
    return timings


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
    timings = paired_timings(runners, jobs, args.rounds)
    floor = timings["bare interpreter"]
    print(f"{'runner':<18} {'median ms':>10} {'overhead ms (paired median)':>28} {'x bare':>7}")
    for name, values in timings.items():
        overhead = statistics.median(value - bare for value, bare in zip(values, floor))
        ratio = statistics.median(values) / statistics.median(floor)
        print(f"{name:<18} {statistics.median(values):>10.1f} {overhead:>28.1f} {ratio:>7.2f}")
    if "bubblewrap" in timings:
        extra = statistics.median(b - g for b, g in zip(timings["bubblewrap"], timings["guard"]))
        print(f"bubblewrap - guard (paired median): {extra:.1f} ms")


if __name__ == "__main__":
    main()
