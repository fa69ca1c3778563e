"""Which distillation settings make a layer-dropped SmolLM2 student beat plain fine-tuning on the CPU main job?

Every variant is the CPU config (`recipes/configs/cpu_smollm2.yaml`: SmolLM2-135M-Instruct teacher, its 10-layer
subset as student, standard-library code) plus recipe overrides; each is trained for the config's steps and scored on
the held-out windows every ``--eval-every`` steps. The table gives the final held-out CE and top-1 agreement with the
teacher, seconds per step (training only, from this run: the machine may be shared, see the load column), and the
steps and time (relative to the CE-only run) each variant needs to reach the CE-only student's final held-out CE.

    PYTHONPATH=. .venv/bin/python scripts/sweep_beat_ft.py                    # all variants (~1 h on 2 quiet cores)
    PYTHONPATH=. .venv/bin/python scripts/sweep_beat_ft.py --only ce feature_h1  # a subset

Finished variants are stored as JSON in ``--out-dir`` and not rerun (delete the file to rerun one).
"""

from __future__ import annotations

import argparse
import os

import torch
from tqdm import tqdm

from hf_distill.recipe.sweep import CE_ONLY, cached_variant, markdown, table_row

CONFIG = "recipes/configs/cpu_smollm2.yaml"
# Name -> overrides of the CPU config. Names starting with "ce" are CE-only runs (the config's ce_baseline_trainer,
# learning rate ce_baseline_learning_rate); every KD row names its learning rate, so rows stay comparable when the
# config's defaults move. The config's own choice is `feature_h30_lr2e-3` against `ce` (CE-only at its best rate).
FIRST4_LAST6 = "0 1 2 3 24 25 26 27 28 29"  # the lowest KL to the teacher at init of the contiguous splits tried
BF16_TEACHER = " --teacher_dtype bfloat16"


def logit(alpha: float = 0.9, lr: str = "5e-4", extra: str = "") -> str:
    return f"--mode logit --alpha {alpha} --temperature 1 --learning_rate {lr}{extra}"


def feature(weight: float, lr: str = "5e-4", alpha: float = 0.9, temperature: float = 1, extra: str = "") -> str:
    settings = f"--alpha {alpha} --temperature {temperature} --hidden_loss_weight {weight} --learning_rate {lr}"
    return f"--mode feature {settings}{extra}"


def ce(lr: str, extra: str = "") -> str:
    return f"--ce_baseline_learning_rate {lr}{extra}"


VARIANTS: dict[str, list[str]] = {
    name: overrides.split()
    for name, overrides in {
        CE_ONLY: "",
        "ce_lr5e-4": ce("5e-4"),
        "ce_lr2e-3": ce("2e-3"),
        "ce_sft_lr5e-4": ce("5e-4", " --ce_baseline_trainer sft"),
        "ce_first4last6": ce("5e-4", " --student_layers " + FIRST4_LAST6),
        "logit_a0.9_T1": logit(),
        "logit_a1_T1": logit(alpha=1.0),
        "logit_bf16teacher": logit(extra=BF16_TEACHER),
        "feature_h1": feature(1),
        "feature_h1_bf16teacher": feature(1, extra=BF16_TEACHER),
        "feature_h1_a1": feature(1, alpha=1.0),
        "feature_h1_lr1e-3": feature(1, lr="1e-3"),
        "feature_h1_lr2e-3": feature(1, lr="2e-3"),
        "feature_h3": feature(3),
        "feature_h10": feature(10),
        "feature_h10_a1": feature(10, alpha=1.0),
        "feature_h10_T0.5": feature(10, temperature=0.5),
        "feature_h10_rkl": feature(10, extra=" --divergence reverse_kl"),
        "feature_h10_first4last6": feature(10, extra=" --student_layers " + FIRST4_LAST6),
        "feature_h10_lr1e-3": feature(10, lr="1e-3"),
        "feature_h30": feature(30),
        "feature_h30_lr1e-3": feature(30, lr="1e-3"),
        "feature_h30_lr2e-3": feature(30, lr="2e-3"),
        "feature_h100_lr1e-3": feature(100, lr="1e-3"),
        "curriculum": "--config recipes/configs/curriculum_smollm2.yaml --learning_rate 5e-4",
    }.items()
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help=f"variants to run (default: all): {', '.join(VARIANTS)}")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="overrides added to every variant")
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--out-dir", default="outputs/sweep_beat_ft")
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.only or list(VARIANTS)
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if CE_ONLY not in names:
        names = [CE_ONLY, *names]  # the reference every row is compared with
    results = {}
    for name in tqdm(names, desc="variants"):
        results[name] = cached_variant(args.out_dir, name, args.config, VARIANTS[name] + args.extra, args.eval_every)
    rows = [table_row(name, result, results[CE_ONLY]) for name, result in results.items()]
    print(markdown(rows))


if __name__ == "__main__":
    main()
