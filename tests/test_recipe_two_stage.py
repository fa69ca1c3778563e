"""The two-stage seqkd job (teacher completions, then fine-tuning) as one recipe call, killed and resumed.

Every run here is the same job on a tiny random teacher: 8 prompts, 2 sampled completions each, in shards of 2
prompts; a 2-layer student cut from the teacher trains 6 steps (checkpoints every 2), then a CE-only baseline
does the same. A kill is an exception raised at a chosen point (all state is written atomically, so a SIGKILL
there leaves the same files). The reference is one uninterrupted run of the job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_llama
from safetensors.torch import load_file
from test_generation_tokenizer import char_tokenizer
from transformers import Trainer

import hf_distill.teachers.generation.pipeline as generation_pipeline
from hf_distill.cli import main as hf_distill_main
from hf_distill.recipe.job_state import JobSettingsChanged, JobState
from hf_distill.recipe.parsing import parse_recipe_args
from hf_distill.recipe.resume_training import last_complete_checkpoint
from hf_distill.recipe.runner import run_recipe
from hf_distill.recipe.two_stage import start_job
from hf_distill.teachers.resumable import load_sharded
from hf_distill.trainers.seqkd_trainer import SeqKDTrainer

NUM_PROMPTS, SAMPLES, SHARD, MAX_STEPS, SAVE_STEPS = 8, 2, 2, 6, 2
NUM_SHARDS = NUM_PROMPTS // SHARD
GENERATION = {
    "strategy": "sample",
    "num_samples": SAMPLES,
    "selection": "all",
    "max_new_tokens": 6,
    "shard_size": SHARD,
    "batch_size": 2,
}
TRAINING = {
    "max_steps": MAX_STEPS,
    "save_strategy": "steps",
    "save_steps": SAVE_STEPS,
    "per_device_train_batch_size": 2,
    "learning_rate": 1e-2,
    "lr_scheduler_type": "constant",
    "use_cpu": "true",
    "bf16": "false",
    "report_to": "none",
    "max_length": 64,
    "disable_tqdm": "true",
    "dtype": "float32",
    "teacher_dtype": "float32",
    "logging_steps": 1,
    "alpha": 0.5,
    "seed": 0,
}


REAL_GENERATE, REAL_TRAINING_STEP = generation_pipeline.generate_candidates, Trainer.training_step


class Killed(RuntimeError):
    """Stands in for the job being killed at this point."""


def _flags(values: dict) -> list[str]:
    """Command-line flags; a None value leaves the flag out."""
    return [token for key, value in values.items() if value is not None for token in (f"--{key}", str(value))]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A tiny teacher (4 layers, one character per token) and a prompt file, shared by every run."""
    root = tmp_path_factory.mktemp("sources")
    make_tiny_llama(num_layers=4, seed=3).save_pretrained(root / "teacher")
    char_tokenizer().save_pretrained(root / "teacher")
    rows = [{"prompt": f"def f{i}(x):\n    return", "reference": f" x + {i}"} for i in range(NUM_PROMPTS)]
    (root / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def models(sources: Path) -> dict[str, str]:
    """The teacher, and a 2-layer student cut from it."""
    teacher = str(sources / "teacher")
    return {
        "mode": "seqkd",
        "model_name_or_path": teacher,
        "teacher_model_name_or_path": teacher,
        "student_init": "layer_subset",
        "student_num_layers": "2",
    }


def job_argv(sources: Path, output_dir: Path, **overrides) -> list[str]:
    values = {
        **models(sources),
        "generate_prompts_from": sources / "prompts.jsonl",
        **{f"generation_{key}": value for key, value in GENERATION.items()},
        **TRAINING,
        "num_eval_files": 2,
        "eval_chars_per_file": 200,
        "ce_baseline": "true",
        "output_dir": output_dir,
        **overrides,
    }
    return _flags(values)


def run_job(sources: Path, output_dir: Path, **overrides) -> dict[str, str]:
    return run_recipe(*parse_recipe_args(job_argv(sources, output_dir, **overrides)))


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def assert_same_weights(first: Path, second: Path) -> None:
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def per_step_logs(results: dict) -> dict[str, list[dict]]:
    """Each training curve's per-step entries, without the run's closing summary (runtime, throughput) and TRL's
    running ``num_tokens`` count (kept outside the checkpoint, so it restarts from 0 on a resume)."""
    return {
        name: [
            {k: v for k, v in entry.items() if k != "num_tokens"} for entry in history if "train_runtime" not in entry
        ]
        for name, history in results["log_history"].items()
    }


def shard_snapshot(output_dir: Path) -> dict[str, tuple[int, bytes]]:
    shards = sorted((output_dir / "completions" / "shards").glob("shard-*.parquet"))
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in shards}


class Recorder:
    """Counts the teacher's generation calls (one per shard: its prompts) and every optimizer step, by trainer."""

    def __init__(self, monkeypatch, fail_generation_on_call: int | None = None, fail_at=None) -> None:
        self.generated: list[list[tuple[int, ...]]] = []
        self.steps: list[tuple[str, int]] = []
        recorder = self

        def generate(model, tokenizer, prompt_ids, *args, **kwargs):
            if fail_generation_on_call is not None and len(recorder.generated) + 1 == fail_generation_on_call:
                raise Killed("killed during generation")
            recorder.generated.append([tuple(ids) for ids in prompt_ids])
            return REAL_GENERATE(model, tokenizer, prompt_ids, *args, **kwargs)

        def training_step(trainer, *args, **kwargs):
            kind = "seqkd" if isinstance(trainer, SeqKDTrainer) else "ce_baseline"
            if fail_at == (kind, trainer.state.global_step):
                raise Killed(f"killed in {kind} after step {trainer.state.global_step}")
            recorder.steps.append((kind, trainer.state.global_step))
            return REAL_TRAINING_STEP(trainer, *args, **kwargs)

        monkeypatch.setattr(generation_pipeline, "generate_candidates", generate)
        monkeypatch.setattr(Trainer, "training_step", training_step)

    def steps_of(self, kind: str) -> list[int]:
        return [step for name, step in self.steps if name == kind]


@pytest.fixture(scope="module")
def reference(sources, tmp_path_factory):
    """One uninterrupted run of the job."""
    output_dir = tmp_path_factory.mktemp("reference") / "out"
    paths = run_job(sources, output_dir)
    return output_dir, paths


def test_uninterrupted_job_generates_trains_and_reports(reference):
    output_dir, paths = reference
    completions = load_sharded(output_dir / "completions")
    assert completions["prompt_index"] == [i for i in range(NUM_PROMPTS) for _ in range(SAMPLES)]
    state = json.loads((output_dir / "job_state.json").read_text())
    assert set(state["stages"]) == {"generate", "finetune", "ce_baseline", "report"}
    assert state["stages"]["generate"]["rows"] == NUM_PROMPTS * SAMPLES
    assert state["stages"]["finetune"]["checkpoint"] == f"checkpoint-{MAX_STEPS}"
    report = Path(paths["markdown"]).read_text()
    for row in ("| teacher |", "| student before |", "| CE-only student (alpha=0) |", "| KD student |"):
        assert row in report
    assert "completions written by the teacher" in (output_dir / "README.md").read_text()


def test_one_call_equals_the_two_separate_commands(sources, reference, tmp_path):
    """`hf-distill generate` then `hf-distill recipe` on its output: the same completions and student weights."""
    generated = tmp_path / "generated"
    generate_flags = {"teacher": sources / "teacher", "dataset": sources / "prompts.jsonl", "out": generated}
    assert hf_distill_main(["generate", *_flags(generate_flags), *_flags(GENERATION), "--no-progress"]) == 0
    recipe_flags = {
        **models(sources),
        "dataset_name": generated,
        "dataset_data_dir": "shards",
        **TRAINING,
        "output_dir": tmp_path / "student",
    }
    assert hf_distill_main(["recipe", *_flags(recipe_flags)]) == 0

    output_dir, _ = reference
    assert load_sharded(generated).to_list() == load_sharded(output_dir / "completions").to_list()
    assert_same_weights(tmp_path / "student", output_dir)


def test_killed_in_generation_resumes_it_and_trains_once(sources, reference, tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    killed_at = 3  # the third shard's generation call: two shards are on disk
    first = Recorder(monkeypatch, fail_generation_on_call=killed_at)
    with pytest.raises(Killed):
        run_job(sources, output_dir)
    assert len(first.generated) == killed_at - 1 and first.steps == []
    assert not json.loads((output_dir / "job_state.json").read_text())["stages"]
    on_disk = shard_snapshot(output_dir)
    assert len(on_disk) == killed_at - 1

    second = Recorder(monkeypatch)
    run_job(sources, output_dir)
    assert len(second.generated) == NUM_SHARDS - len(on_disk)  # only the missing shards
    assert not set(sum(first.generated, [])) & set(sum(second.generated, []))  # no prompt generated twice
    assert len(set(sum(first.generated + second.generated, []))) == NUM_PROMPTS
    assert {name: shard_snapshot(output_dir)[name] for name in on_disk} == on_disk  # finished shards untouched
    assert second.steps_of("seqkd") == list(range(MAX_STEPS))
    assert second.steps_of("ce_baseline") == list(range(MAX_STEPS))

    reference_dir, _ = reference
    assert load_sharded(output_dir / "completions").to_list() == load_sharded(reference_dir / "completions").to_list()
    assert_same_weights(output_dir, reference_dir)


@pytest.mark.parametrize("kind, killed_after", [("seqkd", 3), ("ce_baseline", 5)])
def test_killed_in_training_resumes_from_its_checkpoint(sources, reference, tmp_path, monkeypatch, kind, killed_after):
    output_dir = tmp_path / "out"
    first = Recorder(monkeypatch, fail_at=(kind, killed_after))
    with pytest.raises(Killed):
        run_job(sources, output_dir)
    assert len(first.generated) == NUM_SHARDS
    shards = shard_snapshot(output_dir)
    resumed_from = killed_after // SAVE_STEPS * SAVE_STEPS  # the last checkpoint before the kill

    second = Recorder(monkeypatch)
    run_job(sources, output_dir)
    assert second.generated == []  # the finished generation is not redone ...
    assert shard_snapshot(output_dir) == shards  # ... nor its files rewritten
    if kind == "seqkd":
        assert second.steps_of("seqkd") == list(range(resumed_from, MAX_STEPS))
        assert second.steps_of("ce_baseline") == list(range(MAX_STEPS))
    else:  # the KD student finished in the first run: it is reloaded, not retrained
        assert second.steps_of("seqkd") == []
        assert second.steps_of("ce_baseline") == list(range(resumed_from, MAX_STEPS))

    reference_dir, reference_paths = reference
    assert_same_weights(output_dir, reference_dir)
    ce_dir = Path(f"{output_dir}_ce_baseline")
    assert_same_weights(ce_dir, Path(f"{reference_dir}_ce_baseline"))
    report = json.loads((output_dir / "report" / "results.json").read_text())
    expected = json.loads(Path(reference_paths["results"]).read_text())
    assert report["rows"] == expected["rows"]
    assert per_step_logs(report) == per_step_logs(expected)  # the curves too (the timing summaries differ)


def test_a_finished_job_is_not_redone(sources, reference, tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    run_job(sources, output_dir)
    files = {path: path.stat().st_mtime_ns for path in output_dir.rglob("*") if path.is_file()}
    again = Recorder(monkeypatch)
    paths = run_job(sources, output_dir)
    assert again.generated == [] and again.steps == []
    assert {path: path.stat().st_mtime_ns for path in output_dir.rglob("*") if path.is_file()} == files
    assert Path(paths["markdown"]).is_file()


def test_a_rerun_with_other_settings_is_refused(sources, reference):
    output_dir, _ = reference
    recipe, args, model_args = parse_recipe_args(job_argv(sources, output_dir, learning_rate=0.5))
    with pytest.raises(JobSettingsChanged, match=r"training\.learning_rate: 0\.01 -> 0\.5"):
        start_job(recipe, args, model_args)


def test_a_finished_stage_whose_checkpoint_is_gone_is_an_error(sources, tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    Recorder(monkeypatch, fail_at=("ce_baseline", 0))
    with pytest.raises(Killed):
        run_job(sources, output_dir)
    final = output_dir / f"checkpoint-{MAX_STEPS}"
    final.rename(output_dir / "moved")
    with pytest.raises(FileNotFoundError, match=f"checkpoint-{MAX_STEPS}, which is gone"):
        run_job(sources, output_dir)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mode": "logit"}, "set mode: seqkd"),
        ({"generate_prompts_from": None}, "no generate_prompts_from"),
        ({"generation_top_p": 0}, "top_p must be in"),
        ({"teacher_model_name_or_path": None}, "needs a model to write the completions"),
        ({"save_strategy": "no"}, "set save_strategy: steps"),
    ],
)
def test_inconsistent_settings_fail_before_anything_runs(sources, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        start_job(*parse_recipe_args(job_argv(sources, tmp_path / "out", **overrides)))
    assert not (tmp_path / "out" / "completions").exists()


def test_job_state_keeps_finished_stages_and_refuses_other_settings(tmp_path):
    settings = {"training": {"learning_rate": 0.01, "max_steps": 6}}
    job = JobState(tmp_path, settings)
    assert not job.finished("generate")
    job.finish("generate", rows=16)
    reopened = JobState(tmp_path, settings)
    assert reopened.finished("generate") and reopened.info("generate") == {"rows": 16}
    with pytest.raises(RuntimeError, match="already finished"):
        reopened.finish("generate", rows=16)
    with pytest.raises(JobSettingsChanged, match=r"training\.max_steps: 6 -> 7"):
        JobState(tmp_path, {"training": {"learning_rate": 0.01, "max_steps": 7}})
    reader = JobState(tmp_path / "elsewhere", settings, writer=False)
    reader.finish("generate", rows=1)
    assert not (tmp_path / "elsewhere").exists()  # only the main process writes
    assert [path.name for path in tmp_path.iterdir()] == ["job_state.json"]  # no temporary file left behind


def test_last_complete_checkpoint_passes_over_a_save_cut_short(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False), (10, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_a_rerun_from_the_final_checkpoint_trains_no_extra_step(tmp_path, monkeypatch):
    """Any recipe run (two-stage or not): the Trainer alone would train one step past max_steps here."""
    from conftest import make_text_dataset, make_word_tokenizer
    from trl import SFTConfig, SFTTrainer

    from hf_distill.recipe.resume_training import train_stage

    def trainer() -> SFTTrainer:
        args = SFTConfig(
            output_dir=str(tmp_path),
            max_steps=3,  # inside the first epoch of 8 batches
            save_strategy="steps",
            save_steps=3,
            per_device_train_batch_size=2,
            use_cpu=True,
            report_to=[],
            disable_tqdm=True,
            logging_steps=1,
        )
        dataset = make_text_dataset(16)
        return SFTTrainer(make_tiny_llama(seed=1), args, train_dataset=dataset, processing_class=make_word_tokenizer())

    first = trainer()
    train_stage(first, None, "finetune")
    recorder = Recorder(monkeypatch)
    second = trainer()
    train_stage(second, None, "finetune")
    assert recorder.steps == [] and second.state.global_step == 3
    trained, reloaded = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(trained[name], reloaded[name]) for name in trained)
    assert second.state.log_history[:3] == first.state.log_history[:3]


def test_the_cpu_config_is_a_two_stage_job_on_humaneval_prompts(tmp_path):
    from hf_distill.recipe.two_stage import load_prompt_rows
    from hf_distill.recipe.two_stage_arguments import generation_config

    config = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "seqkd_two_stage_cpu.yaml"
    recipe, args, model_args = parse_recipe_args(["--config", str(config), "--output_dir", str(tmp_path)])
    assert recipe.mode == "seqkd" and type(args).__name__ == "SeqKDConfig"
    assert args.teacher_model_name_or_path == model_args.model_name_or_path == "pypi:smollm2-135m-instruct"
    generation = generation_config(recipe)
    assert generation.strategy == "greedy" and generation.require_finished and generation.chat_template_for_prompts
    prompts = load_prompt_rows(recipe)
    assert len(prompts) == recipe.generate_num_prompts
    assert prompts[0]["task_id"] == "HumanEval/0" and prompts[0]["prompt"].startswith("from typing import List")


def test_two_processes_generate_once_on_the_main_one_and_train_together(sources, reference, tmp_path):
    from gloo_launch import run_processes

    output_dir = tmp_path / "out"
    script = Path(__file__).parent / "scripts" / "two_stage_job.py"
    run_processes([str(script), str(sources), str(output_dir)], processes=2, base_port=29400)
    reference_dir, _ = reference
    assert len(shard_snapshot(output_dir)) == NUM_SHARDS
    assert load_sharded(output_dir / "completions").to_list() == load_sharded(reference_dir / "completions").to_list()
    stages = json.loads((output_dir / "job_state.json").read_text())["stages"]
    assert set(stages) == {"generate", "finetune", "report"}
    assert stages["finetune"] == {"checkpoint": f"checkpoint-{MAX_STEPS}", "global_step": MAX_STEPS}
