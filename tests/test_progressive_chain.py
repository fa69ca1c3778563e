"""Progressive chains end to end on tiny random Llamas: hand-off, kill-and-resume, early stop, report."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import make_tiny_llama, make_word_tokenizer
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_distill.progressive.runner import run_chain
from hf_distill.progressive.spec import parse_chain_spec
from hf_distill.recipe.layer_subset import spaced_layer_indices, subset_state_dict


class SimulatedKill(RuntimeError):
    pass


class KillAfterCheckpoint(TrainerCallback):
    """Raises right after the checkpoint of ``step`` in the stage whose directory ends with ``stage``."""

    def __init__(self, stage: str, step: int) -> None:
        self.stage, self.step = stage, step

    def on_save(self, args, state, control, **kwargs):
        if args.output_dir.endswith(self.stage) and state.global_step == self.step:
            raise SimulatedKill(f"killed after checkpoint-{self.step} of {self.stage}")


class StepRecorder(TrainerCallback):
    """(stage directory, step) of every optimizer step taken."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, int]] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append((os.path.basename(args.output_dir), state.global_step))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher")
    make_tiny_llama(vocab_size=64, num_layers=4, seed=3).save_pretrained(path)
    make_word_tokenizer(64).save_pretrained(path)
    return path


def chain_spec(teacher_dir, output_dir, stages=None):
    raw = {
        "teacher": str(teacher_dir),
        "output_dir": str(output_dir),
        "dataset_name": "stdlib",
        "num_eval_files": 2,
        "eval_chars_per_file": 300,
        "max_length": 16,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-2,
        "temperature": 2.0,
        "alpha": 0.5,
        "save_strategy": "steps",
        "save_steps": 2,
        "logging_steps": 1,
        "report_to": "none",
        "use_cpu": True,
        "dtype": "float32",
        "teacher_dtype": "float32",
        "disable_tqdm": True,
        "eval_batch_size": 2,
        "seed": 0,
        "stages": stages
        or [
            {"name": "l3", "student": {"layers": 3}, "max_steps": 4},
            {"name": "l2", "student": {"layers": 2}, "max_steps": 4, "divergence": "jsd"},
        ],
    }
    return parse_chain_spec(raw)


def weights(stage_dir):
    return load_file(os.path.join(stage_dir, "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_stage_two_is_taught_by_stage_one_saved_weights_bit_for_bit(teacher_dir, tmp_path, monkeypatch):
    import hf_distill.recipe.runner as recipe_runner

    built = {}
    original = recipe_runner.build_trainer

    def recording_build_trainer(recipe, args, model_args, data=None):
        run = original(recipe, args, model_args, data=data)
        name = os.path.basename(args.output_dir)
        built[name] = {
            "teacher": {k: v.clone() for k, v in run.trainer.teacher_model.state_dict().items()},
            "student": {k: v.clone() for k, v in run.trainer.model.state_dict().items()},
        }
        return run

    monkeypatch.setattr(recipe_runner, "build_trainer", recording_build_trainer)
    result = run_chain(chain_spec(teacher_dir, tmp_path / "chain"), report=False)
    stage1 = weights(result.stage_dirs["l3"])
    assert_same_weights(built["l2"]["teacher"], stage1)
    # Stage 2's student starts as layers 0 and 2 of stage 1's result (same bits, renumbered).
    assert spaced_layer_indices(3, 2) == [0, 2]
    assert_same_weights(built["l2"]["student"], subset_state_dict(stage1, [0, 2]))
    # Stage 1 was taught by the original teacher, and trained (its weights moved away from the layer subset).
    teacher = load_file(teacher_dir / "model.safetensors")
    assert_same_weights(built["l3"]["teacher"], teacher)
    start = subset_state_dict(teacher, spaced_layer_indices(4, 3))
    assert not torch.equal(stage1["model.layers.1.mlp.up_proj.weight"], start["model.layers.1.mlp.up_proj.weight"])
    state = json.loads((tmp_path / "chain" / "chain_state.json").read_text())
    assert state["finished"]["l2"]["teacher"] == result.stage_dirs["l3"]
    assert [state["finished"][n]["steps"] for n in ("l3", "l2")] == [4, 4]
    assert not list((tmp_path / "chain" / "l3").glob("checkpoint-*"))  # dropped once the stage is recorded


def test_killed_chain_resumes_in_its_stage_with_the_uninterrupted_result(teacher_dir, tmp_path):
    uninterrupted = run_chain(chain_spec(teacher_dir, tmp_path / "whole"), report=False)

    spec = chain_spec(teacher_dir, tmp_path / "killed")
    with pytest.raises(SimulatedKill):
        run_chain(spec, callbacks=[KillAfterCheckpoint("l2", 2)], report=False)
    state = json.loads((tmp_path / "killed" / "chain_state.json").read_text())
    assert list(state["finished"]) == ["l3"]
    stage1_file = tmp_path / "killed" / "l3" / "model.safetensors"
    stage1_mtime = stage1_file.stat().st_mtime_ns

    recorder = StepRecorder()
    resumed = run_chain(spec, callbacks=[recorder], report=False)
    assert recorder.steps == [("l2", 3), ("l2", 4)]  # stage 1 not retrained, stage 2 from its checkpoint-2
    assert stage1_file.stat().st_mtime_ns == stage1_mtime
    # Deterministic on CPU with fixed seeds and the checkpoint's RNG states: the same bits as the uninterrupted run.
    for name in ("l3", "l2"):
        assert_same_weights(weights(resumed.stage_dirs[name]), weights(uninterrupted.stage_dirs[name]))

    again = StepRecorder()
    run_chain(spec, callbacks=[again], report=False)
    assert again.steps == []  # a finished chain trains nothing


def test_early_stop_ends_the_stage_and_survives_a_kill_after_its_checkpoint(teacher_dir, tmp_path):
    stages = [
        # Any KL is below 1e9: the stage stops at its first evaluation (step 1), not at max_steps = 4.
        {"name": "l3", "student": {"layers": 3}, "max_steps": 4, "stop": {"eval_steps": 1, "kl_below": 1e9}},
        {"name": "l2", "student": {"layers": 2}, "max_steps": 2},
    ]
    whole = run_chain(chain_spec(teacher_dir, tmp_path / "whole", stages), report=False)
    assert "held-out KL" in whole.stop_reasons["l3"] and whole.stop_reasons["l2"] == "fixed steps (2)"
    state = json.loads((tmp_path / "whole" / "chain_state.json").read_text())
    assert state["finished"]["l3"]["steps"] == 1

    spec = chain_spec(teacher_dir, tmp_path / "killed", stages)
    with pytest.raises(SimulatedKill):  # killed after the stop's checkpoint, before the stage was recorded
        run_chain(spec, callbacks=[KillAfterCheckpoint("l3", 1)], report=False)
    recorder = StepRecorder()
    resumed = run_chain(spec, callbacks=[recorder], report=False)
    assert recorder.steps == [("l2", 1), ("l2", 2)]  # the stop is not undone by more stage-1 steps
    assert "held-out KL" in resumed.stop_reasons["l3"]
    for name in ("l3", "l2"):
        assert_same_weights(weights(resumed.stage_dirs[name]), weights(whole.stage_dirs[name]))


def test_a_changed_finished_stage_is_refused_on_resume(teacher_dir, tmp_path):
    from hf_distill.progressive.state import ChainStateError

    stages = [{"name": "l3", "student": {"layers": 3}, "max_steps": 1}]
    run_chain(chain_spec(teacher_dir, tmp_path / "chain", stages), report=False)
    changed = [{"name": "l3", "student": {"layers": 3}, "max_steps": 1, "temperature": 4.0}]
    with pytest.raises(ChainStateError, match="stage 1 \\(l3\\) is finished .* with other settings"):
        run_chain(chain_spec(teacher_dir, tmp_path / "chain", changed), report=False)


class LogRecorder(TrainerCallback):
    def __init__(self) -> None:
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def test_a_stage_with_a_feature_term_trains_it(teacher_dir, tmp_path):
    stages = [{"name": "l2", "student": {"layers": 2}, "max_steps": 2, "hidden_loss_weight": 0.5}]
    recorder = LogRecorder()
    run_chain(chain_spec(teacher_dir, tmp_path / "chain", stages), callbacks=[recorder], report=False)
    hidden = [entry["hidden_loss"] for entry in recorder.logs if "hidden_loss" in entry]
    assert len(hidden) == 2 and all(value > 0 for value in hidden)


def test_the_command_refuses_a_bad_chain_file_before_training(tmp_path):
    import yaml

    from hf_distill.cli import main
    from hf_distill.progressive.spec import ChainSpecError

    path = tmp_path / "chain.yaml"
    stages = [{"name": "s", "student": {"layers": 1}, "max_steps": 1, "temprature": 2.0}]
    path.write_text(yaml.safe_dump({"teacher": "t", "output_dir": str(tmp_path / "out"), "stages": stages}))
    with pytest.raises(ChainSpecError, match=r"stage 1 \(s\): unknown key `temprature`"):
        main(["progressive", "--config", str(path)])
    assert not (tmp_path / "out").exists()


def test_stages_train_on_consecutive_slices_of_the_direct_runs_rows(teacher_dir, tmp_path):
    from transformers import AutoTokenizer

    from hf_distill.progressive.runner import stage_data
    from hf_distill.progressive.spec import stage_arguments

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)

    def rows(spec):
        arguments = [stage_arguments(spec, s, teacher="t", student_source="t") for s in spec.stages]
        return [list(data.train_dataset["input_ids"]) for data in stage_data(spec, arguments, tokenizer)]

    chain = rows(chain_spec(teacher_dir, tmp_path / "chain"))  # 4 + 4 steps of batch 2
    (direct,) = rows(
        chain_spec(teacher_dir, tmp_path / "direct", [{"name": "d", "student": {"layers": 2}, "max_steps": 8}])
    )
    assert [len(stage) for stage in chain] == [8, 8] and len(direct) == 16
    assert chain[0] + chain[1] == direct


def test_a_chain_refuses_to_run_in_several_processes(teacher_dir, tmp_path, monkeypatch):
    spec = chain_spec(teacher_dir, tmp_path / "chain")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="runs in one process"):
        run_chain(spec, report=False)
    assert not (tmp_path / "chain").exists()
