"""One recipe variant trained with its held-out curve, for the sweep scripts (`scripts/sweep_*.py`).

A variant is the recipe's YAML config plus command-line overrides, so every sweep row can be rerun as a recipe run
(`bash scripts/run_cpu_demo.sh <overrides>`). Each finished variant is stored as JSON and skipped when the sweep is
run again, so nothing is lost on interruption.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from .match_curves import CurvePoint, curve_rows, summarize_match

CE_ONLY = "ce"


def run_variant(config: str, overrides: Sequence[str], eval_every: int, ce_only: bool = False) -> dict[str, Any]:
    """Train one variant (the CE-only baseline when ``ce_only``) and return its curve and timings."""
    from .parsing import parse_recipe_args
    from .runner import build_trainer, curve_callbacks, train_ce_baseline

    given = list(overrides)
    overrides = list(overrides)
    if "--config" in overrides:  # a variant with its own YAML file (e.g. the curriculum config)
        at = overrides.index("--config")
        config = overrides[at + 1]
        del overrides[at : at + 2]
    with tempfile.TemporaryDirectory() as out:
        argv = ["--config", config, *overrides, "--output_dir", os.path.join(out, "run")]
        argv += ["--ce_baseline", str(ce_only).lower(), "--curve_eval_every", str(eval_every)]
        argv += ["--disable_tqdm", "true"]
        recipe, args, model_args = parse_recipe_args(argv)
        run = build_trainer(recipe, args, model_args)
        kd_curve, ce_curve = curve_callbacks(recipe, args, run)
        began = time.perf_counter()
        if ce_only:
            train_ce_baseline(
                run,
                args,
                callbacks=(ce_curve,),
                trainer_kind=recipe.ce_baseline_trainer,
                learning_rate=recipe.ce_baseline_learning_rate,
            )
            curve = ce_curve
        else:
            run.trainer.add_callback(kd_curve)
            run.trainer.train()
            curve = kd_curve
        wall = time.perf_counter() - began
    final = curve.points[-1]
    return {
        "overrides": given,
        "ce_only": ce_only,
        "curve": curve_rows(curve.points),
        "train_seconds": final.seconds,
        "seconds_per_step": final.seconds / max(final.step, 1),
        "wall_seconds_with_eval": wall,
        "load": os.getloadavg()[0],
    }


def cached_variant(out_dir: str, name: str, config: str, overrides: Sequence[str], eval_every: int) -> dict:
    """`run_variant`, stored as ``out_dir/name.json`` and read back instead of rerun when it exists."""
    path = os.path.join(out_dir, f"{name}.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    result = run_variant(config, overrides, eval_every, ce_only=name == CE_ONLY or name.startswith(CE_ONLY + "_"))
    os.makedirs(out_dir, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    os.replace(path + ".tmp", path)
    return result


def points(result: dict) -> list[CurvePoint]:
    return [CurvePoint(**row) for row in result["curve"]]


def table_row(name: str, result: dict, baseline: dict | None) -> dict[str, Any]:
    """Final held-out CE and agreement, s/step, and steps/seconds to reach the baseline's final loss."""
    curve = points(result)
    final = curve[-1]
    row = {
        "variant": name,
        "overrides": " ".join(result["overrides"]) or "(config)",
        "steps": final.step,
        "held-out CE": final.loss,
        "agreement": final.agreement,
        "s/step": result["seconds_per_step"],
        "load": result.get("load"),
    }
    if baseline is not None:
        summary = summarize_match(curve, points(baseline))
        row["steps to match"] = summary.steps
        row["time to match (x CE)"] = summary.time_ratio
    return row


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = []
        for key in keys:
            value = row.get(key)
            cells.append("" if value is None else f"{value:.3f}" if isinstance(value, float) else f"{value}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
