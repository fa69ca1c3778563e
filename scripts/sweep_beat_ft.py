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
# Name -> overrides of the CPU config. Names starting with "ce" are CE-only runs (the config's ce_baseline_trainer).
LOGIT = "--mode logit --alpha 0.9 --temperature 1"
FEATURE = "--mode feature --alpha 0.9 --temperature 1 --hidden_loss_weight 1"  # the config now uses 10
BF16_TEACHER = " --teacher_dtype bfloat16"
FEATURE_H10 = "--mode feature --alpha 0.9 --temperature 1 --hidden_loss_weight 10"
FIRST4_LAST6 = "0 1 2 3 24 25 26 27 28 29"  # the lowest KL to the teacher at init of the contiguous splits tried
VARIANTS: dict[str, list[str]] = {
    name: overrides.split()
    for name, overrides in {
        CE_ONLY: "",
        "ce_trainer": "--ce_baseline_trainer trainer",
        "ce_lr1e-3": "--learning_rate 1e-3",
        "ce_lr2e-3": "--learning_rate 2e-3",
        "logit_a0.9_T1": LOGIT,
        "logit_a1_T1": "--mode logit --alpha 1.0 --temperature 1",
        "logit_bf16teacher": LOGIT + BF16_TEACHER,
        "feature_h1": FEATURE,
        "feature_h1_bf16teacher": FEATURE + BF16_TEACHER,
        "feature_h3": "--mode feature --alpha 0.9 --temperature 1 --hidden_loss_weight 3",
        "feature_h1_lr1e-3": FEATURE + " --learning_rate 1e-3",
        "feature_h1_lr2e-3": FEATURE + " --learning_rate 2e-3",
        "feature_h10": "--mode feature --alpha 0.9 --temperature 1 --hidden_loss_weight 10",
        "curriculum": "--config recipes/configs/curriculum_smollm2.yaml",
        "feature_h1_a1": "--mode feature --alpha 1.0 --temperature 1 --hidden_loss_weight 1",
        "feature_h10_a1": "--mode feature --alpha 1.0 --temperature 1 --hidden_loss_weight 10",
        "feature_h30": "--mode feature --alpha 0.9 --temperature 1 --hidden_loss_weight 30",
        "feature_h10_T0.5": "--mode feature --alpha 0.9 --temperature 0.5 --hidden_loss_weight 10",
        "feature_h10_rkl": "--mode feature --alpha 0.9 --temperature 1 --hidden_loss_weight 10 --divergence reverse_kl",
        "ce_first4last6": "--student_layers " + FIRST4_LAST6,
        "feature_h10_first4last6": FEATURE_H10 + " --student_layers " + FIRST4_LAST6,
        "feature_h10_lr1e-3": "--mode feature --alpha 0.9 --temperature 1 --hidden_loss_weight 10 --learning_rate 1e-3",
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
