"""`hf-distill progressive --config chain.yaml`: run or resume a chain and print its report."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hf-distill progressive",
        description="Run a progressive distillation chain from a YAML file (docs/progressive.md). Rerunning the "
        "same command after an interruption skips finished stages and resumes the current one from its last "
        "checkpoint.",
    )
    parser.add_argument("--config", required=True, help="chain YAML: teacher, output_dir, shared settings, stages")
    parser.add_argument("--output_dir", default=None, help="override the file's output_dir")
    parser.add_argument("--no_report", action="store_true", help="train the stages only")
    options = parser.parse_args(argv)

    from .runner import run_chain
    from .spec import load_chain_spec

    overrides = {"output_dir": options.output_dir} if options.output_dir else None
    result = run_chain(load_chain_spec(options.config, overrides), report=not options.no_report)
    for name, path in result.stage_dirs.items():
        print(f"{name}: {path} ({result.stop_reasons[name]})")
    if "markdown" in result.report:
        with open(result.report["markdown"], encoding="utf-8") as handle:
            print("\n" + handle.read())
    return 0
