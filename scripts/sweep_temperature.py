"""Short-training temperature sweep on the CPU main job: held-out CE and top-1 agreement per temperature.

Same setup as `scripts/sweep_beat_ft.py` (the CPU config, SmolLM2-135M-Instruct teacher, 10-layer subset student,
standard-library code), logit KD at a fixed alpha and number of steps, one run per temperature. Prints the table
and saves a plot (held-out CE and agreement against T) to ``--out-dir/temperature_sweep.png``; does the seed's claim
that T around 2 is best hold here?

    PYTHONPATH=. .venv/bin/python scripts/sweep_temperature.py                         # T = 1 2 4 8, 30 steps
    PYTHONPATH=. .venv/bin/python scripts/sweep_temperature.py --temperatures 1 2 --steps 60 --alpha 0.5

Finished runs are stored as JSON in ``--out-dir`` and not rerun.
"""

from __future__ import annotations

import argparse
import os

import torch
from tqdm import tqdm

from hf_distill.recipe.sweep import cached_variant, markdown, points, table_row

CONFIG = "recipes/configs/cpu_smollm2.yaml"


def plot(rows: list[dict], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temperatures = [row["T"] for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, key, label in (
        (axes[0], "held-out CE", "held-out CE (nats/token)"),
        (axes[1], "agreement", "top-1 agreement"),
    ):
        axis.plot(temperatures, [row[key] for row in rows], marker="o", label="KD student")
        if rows[0].get(f"CE-only {key}") is not None:
            axis.axhline(rows[0][f"CE-only {key}"], color="grey", linestyle="--", label="CE-only student")
        axis.set_xscale("log", base=2)
        axis.set_xticks(temperatures, [f"{t:g}" for t in temperatures])
        axis.set_xlabel("temperature T")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--mode", default="logit", help="recipe mode of the KD runs (logit or feature)")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--out-dir", default="outputs/sweep_temperature")
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="overrides added to every run (last)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    common = ["--max_steps", str(args.steps), *args.extra]
    baseline = cached_variant(args.out_dir, f"ce_{args.steps}steps", args.config, common, args.eval_every)
    rows = []
    for temperature in tqdm(args.temperatures, desc="temperatures"):
        overrides = ["--mode", args.mode, "--alpha", str(args.alpha), "--temperature", str(temperature), *common]
        name = f"{args.mode}_a{args.alpha:g}_T{temperature:g}_{args.steps}steps"
        result = cached_variant(args.out_dir, name, args.config, overrides, args.eval_every)
        row = {"T": temperature, **table_row(name, result, baseline)}
        row["CE-only held-out CE"], row["CE-only agreement"] = points(baseline)[-1].loss, points(baseline)[-1].agreement
        rows.append(row)
    print(markdown(rows))
    print("plot:", plot(rows, os.path.join(args.out_dir, "temperature_sweep.png")))


if __name__ == "__main__":
    main()
