"""A very short version of the CPU recipe on the real SmolLM2 from PyPI (slow: loads the real model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "cpu_smollm2.yaml"


@pytest.mark.slow
def test_cpu_recipe_end_to_end_writes_report_and_card(tmp_path):
    from hf_distill.recipe.parsing import parse_recipe_args
    from hf_distill.recipe.runner import CE_ROW, KD_ROW, TEACHER_ROW, run_recipe

    out = tmp_path / "run"
    recipe, args, model_args = parse_recipe_args(
        [
            "--config",
            str(CONFIG),
            "--output_dir",
            str(out),
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "1",
            "--max_length",
            "32",
            "--num_eval_files",
            "1",
            "--eval_chars_per_file",
            "300",
            "--eval_max_length",
            "64",
            "--next_line_pairs",
            "1",
            "--next_line_max_new_tokens",
            "4",
            "--disable_tqdm",
            "true",
        ]
    )
    paths = run_recipe(recipe, args, model_args)

    results = json.loads(Path(paths["results"]).read_text())
    assert list(results["rows"]) == [TEACHER_ROW, "student before", CE_ROW, KD_ROW]
    assert {"perplexity", "bits_per_byte", "top1_agreement", "exact_match"} <= set(results["rows"][KD_ROW])
    from hf_distill.evaluation.inference_speed import SPEED_METRICS  # the config's inference_prompts

    for row in (TEACHER_ROW, CE_ROW, KD_ROW):
        assert set(SPEED_METRICS) <= set(results["rows"][row]), row
    assert results["rows"][KD_ROW]["model_size_mb"] < results["rows"][TEACHER_ROW]["model_size_mb"]
    assert Path(paths["chart"]).is_file()
    match = json.loads(Path(paths["match"]).read_text())  # curve_eval_every: 5 in the config
    assert [point["step"] for point in match["curves"][KD_ROW]] == [0, 1]
    card = (out / "README.md").read_text()
    assert "SmolLM2-135M-Instruct" in card and "10 of the 30 decoder layers" in card and KD_ROW in card
    assert (out / "model.safetensors").is_file()
    assert (Path(f"{out}_ce_baseline") / "model.safetensors").is_file()
