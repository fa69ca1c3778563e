"""Steps-to-match / time-to-match: the interpolation arithmetic, the curves' cadence and the report fields."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hf_distill.recipe.match_curves import (
    CurvePoint,
    HeldOutCurveCallback,
    HeldOutScorer,
    match_point,
    summarize_match,
)

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


def _curve(*triples):
    return [CurvePoint(step, seconds, loss) for step, seconds, loss in triples]


def test_crossing_is_interpolated_linearly_between_the_two_evaluations():
    curve = _curve((0, 0.0, 10.0), (10, 20.0, 6.0), (20, 44.0, 4.0))
    # 5.0 lies halfway between 6.0 (step 10, 20 s) and 4.0 (step 20, 44 s).
    match = match_point(curve, 5.0)
    assert match.step == pytest.approx(15.0) and match.seconds == pytest.approx(32.0)
    # A quarter of the way down from 6.0 to 4.0.
    match = match_point(curve, 5.5)
    assert match.step == pytest.approx(12.5) and match.seconds == pytest.approx(26.0)


def test_first_crossing_wins_and_an_exact_hit_needs_no_interpolation():
    curve = _curve((0, 0.0, 9.0), (5, 10.0, 7.0), (10, 20.0, 8.0), (15, 30.0, 6.0))
    assert match_point(curve, 7.0).step == 5.0  # reached exactly at step 5, before the later dip
    assert match_point(curve, 7.5).step == pytest.approx(3.75)  # 9 -> 7 over steps 0..5


def test_curve_already_below_target_and_curve_that_never_reaches_it():
    curve = _curve((0, 0.0, 3.0), (10, 5.0, 2.0))
    assert match_point(curve, 4.0).step == 0.0 and match_point(curve, 4.0).seconds == 0.0
    never = match_point(curve, 1.0)
    assert never.step is None and never.seconds is None


def test_unsorted_points_are_ordered_by_step_and_bad_target_is_refused():
    curve = _curve((20, 40.0, 4.0), (0, 0.0, 10.0), (10, 20.0, 6.0))
    assert match_point(curve, 5.0).step == pytest.approx(15.0)
    with pytest.raises(ValueError, match="finite"):
        match_point(curve, math.nan)


def test_summary_targets_the_baseline_final_loss_and_gives_ratios():
    baseline = _curve((0, 0.0, 10.0), (30, 30.0, 6.0), (60, 60.0, 5.0))
    distilled = _curve((0, 0.0, 10.0), (10, 25.0, 7.0), (20, 50.0, 4.0))
    summary = summarize_match(distilled, baseline)
    assert summary.target_loss == 5.0 and summary.baseline_steps == 60 and summary.baseline_seconds == 60.0
    # 7 -> 4 over steps 10..20: 5 is reached 2/3 of the way, step 16.67, 41.67 s.
    assert summary.steps == pytest.approx(10 + 20 / 3) and summary.seconds == pytest.approx(25 + 50 / 3)
    assert summary.step_ratio == pytest.approx((10 + 20 / 3) / 60)
    assert summary.time_ratio == pytest.approx((25 + 50 / 3) / 60)
    assert "16.7 steps" in summary.sentence() and "KD student reaches" in summary.sentence("KD student")
    assert summary.agreement_ratio is None  # no agreement recorded, and the distilled curve stops at step 20
    never = summarize_match(_curve((0, 0.0, 9.0)), baseline)
    assert never.step_ratio is None and "did not reach" in never.sentence()


def test_agreement_ratio_compares_the_two_curves_at_the_baseline_final_step():
    baseline = [CurvePoint(0, 0.0, 9.0, 0.01), CurvePoint(60, 60.0, 5.0, 0.10)]
    distilled = [CurvePoint(0, 0.0, 9.0, 0.01), CurvePoint(30, 70.0, 5.5, 0.12), CurvePoint(60, 140.0, 4.0, 0.16)]
    summary = summarize_match(distilled, baseline)
    assert summary.agreement_ratio == pytest.approx(1.6)
    assert "1.60x" in summary.sentence()


def test_scorer_matches_a_float64_cross_entropy_and_teacher_argmax(tiny_llama):
    from conftest import make_word_tokenizer

    tokenizer = make_word_tokenizer(64)
    student, teacher = tiny_llama(seed=1), tiny_llama(seed=2)
    texts = [" ".join(f"w{i}" for i in range(3, 40)), "w5 w6 w7 w9"]
    scorer = HeldOutScorer(tokenizer, texts, max_length=16, batch_size=3)
    scorer.set_teacher(teacher)
    loss, agreement = scorer.score(student)

    nll, agree, count = 0.0, 0, 0
    with torch.no_grad():
        for window in scorer.windows:  # every window scored on its own, unpadded, in float64
            ids = torch.tensor([window])
            s = student(input_ids=ids).logits[0, :-1].double().log_softmax(-1)
            t = teacher(input_ids=ids).logits[0, :-1]
            targets = ids[0, 1:]
            nll -= float(s[torch.arange(len(targets)), targets].sum())
            agree += int((s.argmax(-1) == t.argmax(-1)).sum())
            count += len(targets)
    # Every text token is a target exactly once (BOS-prefixed windows overlapping by one).
    assert count == (37 + 1 - 1) + (4 + 1 - 1)
    assert loss == pytest.approx(nll / count, rel=1e-5)
    assert agreement == agree / count


class _State:
    def __init__(self, max_steps):
        self.global_step, self.max_steps = 0, max_steps


def test_callback_scores_every_k_steps_plus_start_and_end_and_excludes_its_own_time():
    class SlowScorer:  # each evaluation costs 0.05 s, which must not count as training time
        def score(self, model):
            import time

            time.sleep(0.05)
            return 1.0, None

    callback = HeldOutCurveCallback(SlowScorer(), eval_every=3)
    state = _State(max_steps=7)
    callback.on_train_begin(None, state, None, model=None)
    for _ in range(7):
        state.global_step += 1
        callback.on_step_end(None, state, None, model=None)
    assert [p.step for p in callback.points] == [0, 3, 6, 7]
    assert callback.points[-1].seconds < 0.05  # four evaluations (0.2 s) took place, no training work
    with pytest.raises(ValueError, match="eval_every"):
        HeldOutCurveCallback(SlowScorer(), eval_every=0)


def _tiny_recipe_args(tmp_path, *overrides):
    from conftest import make_tiny_llama, make_word_tokenizer

    from hf_distill.recipe.parsing import parse_recipe_args

    teacher_dir = tmp_path / "teacher"
    if not teacher_dir.exists():
        make_tiny_llama(vocab_size=64, num_layers=4).save_pretrained(teacher_dir)
        make_word_tokenizer(64).save_pretrained(teacher_dir)
    return parse_recipe_args(
        [
            "--config",
            str(CONFIGS / "cpu_smollm2.yaml"),
            "--output_dir",
            str(tmp_path / "out"),
            "--model_name_or_path",
            str(teacher_dir),
            "--teacher_model_name_or_path",
            str(teacher_dir),
            "--student_num_layers",
            "2",
            "--num_eval_files",
            "2",
            "--max_length",
            "16",
            "--eval_max_length",
            "16",
            "--eval_chars_per_file",
            "300",
            "--next_line_pairs",
            "0",
            *overrides,
        ]
    )


def test_recipe_report_has_the_match_section_and_curves_at_the_cadence(tmp_path):
    from hf_distill.recipe.runner import run_recipe

    recipe, args, model_args = _tiny_recipe_args(tmp_path, "--max_steps", "5", "--curve_eval_every", "2")
    paths = run_recipe(recipe, args, model_args)
    match = json.loads(Path(paths["match"]).read_text())
    kd, ce = match["curves"]["KD student"], match["curves"]["CE-only student (alpha=0)"]
    assert [p["step"] for p in kd] == [0, 2, 4, 5] and [p["step"] for p in ce] == [0, 2, 4, 5]
    assert kd[0]["loss"] == pytest.approx(ce[0]["loss"])  # same initial student
    assert all(p["agreement"] is not None for p in kd + ce)
    summary = match["summary"]
    assert summary["target_loss"] == ce[-1]["loss"] and summary["baseline_steps"] == 5
    assert set(summary) >= {"steps", "seconds", "step_ratio", "time_ratio"}
    # The curve's last point is the report's held-out cross-entropy of the same model.
    rows = json.loads(Path(paths["results"]).read_text())["rows"]
    assert math.log(rows["KD student"]["perplexity"]) == pytest.approx(kd[-1]["loss"], rel=1e-4)
    report = Path(paths["markdown"]).read_text()
    assert "## Steps and time to match the CE-only student" in report and "match_curves.png" in report
    assert Path(paths["match_chart"]).stat().st_size > 0


def test_feature_mode_pairs_each_student_layer_with_its_source_layer(tmp_path):
    from hf_distill.recipe.runner import build_trainer

    recipe, args, model_args = _tiny_recipe_args(tmp_path, "--mode", "feature", "--max_steps", "2")
    run = build_trainer(recipe, args, model_args)
    assert type(run.trainer).__name__ == "FeatureKDTrainer"
    assert list(run.trainer.layer_map) == [(0, 0), (1, 3)]  # kept layers [0, 3] of 4


def test_bf16_teacher_leaves_the_student_float32_with_exact_layer_copies(tmp_path):
    from hf_distill.recipe.runner import build_trainer

    recipe, args, model_args = _tiny_recipe_args(tmp_path, "--teacher_dtype", "bfloat16", "--max_steps", "2")
    run = build_trainer(recipe, args, model_args)
    reference = type(run.trainer.model).from_pretrained(tmp_path / "teacher", dtype=torch.float32)
    student = run.trainer.model
    assert next(run.trainer.teacher_model.parameters()).dtype == torch.bfloat16
    assert next(student.parameters()).dtype == torch.float32
    torch.testing.assert_close(
        student.model.layers[1].mlp.up_proj.weight, reference.model.layers[3].mlp.up_proj.weight, rtol=0, atol=0
    )


def test_sweep_table_row_reports_steps_and_time_to_match_against_the_baseline():
    from hf_distill.recipe.sweep import markdown, table_row

    def result(curve, seconds_per_step):
        rows = [{"step": s, "seconds": t, "loss": loss, "agreement": a} for s, t, loss, a in curve]
        return {"overrides": ["--alpha", "1"], "curve": rows, "seconds_per_step": seconds_per_step, "load": 1.0}

    baseline = result([(0, 0.0, 10.0, 0.0), (60, 120.0, 6.0, 0.1)], 2.0)
    distilled = result([(0, 0.0, 10.0, 0.0), (20, 60.0, 7.0, 0.1), (40, 120.0, 5.0, 0.2)], 3.0)
    row = table_row("kd", distilled, baseline)
    # 7 -> 5 over steps 20..40 crosses 6 at step 30, 90 s; the baseline trained 120 s.
    assert row["steps to match"] == pytest.approx(30.0) and row["time to match (x CE)"] == pytest.approx(0.75)
    assert row["held-out CE"] == 5.0 and row["agreement"] == 0.2 and row["overrides"] == "--alpha 1"
    table = markdown([row])
    assert table.splitlines()[0].startswith("| variant | overrides |") and "| 30.000 |" in table
