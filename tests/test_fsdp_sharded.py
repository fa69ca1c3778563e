"""FSDP2 (and, where DeepSpeed is installed, ZeRO-3) through the Trainer on two CPU processes (gloo) equals one
process: every trainer kind, the live teacher sharded too, an NF4 teacher held whole by each process, checkpoint
resume and the saved checkpoint.

tests/scripts/sharded_run.py runs every case once as a plain process and once under
`accelerate launch --config_file tests/scripts/fsdp_cpu.yaml` (or zero3_cpu.yaml); the plain run is the
reference (its losses are checked against float64 formulas in the per-trainer tests).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_llama
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

SCRIPTS = Path(__file__).parent / "scripts"
CASES = ["kd", "seqkd", "feature", "offline", "nf4"]
LIVE_TEACHER_SHARDED = ["kd", "seqkd", "feature"]
ZERO3_CASES = ["kd", "seqkd", "offline"]


def _launch(output: Path, config: str | None, *cases: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    script = [str(SCRIPTS / "sharded_run.py"), str(output), *cases]
    cmd = [sys.executable, *script]
    if config is not None:
        port = str(29300 + os.getpid() % 300 + (7 if "zero3" in config else 0))
        launch = ["-m", "accelerate.commands.launch", "--config_file", str(SCRIPTS / config)]
        cmd = [sys.executable, *launch, "--main_process_port", port, *script]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-6000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharded")
    _launch(root / "single", None)
    _launch(root / "fsdp", "fsdp_cpu.yaml")
    return {"single": root / "single", "fsdp": root / "fsdp"}


@pytest.fixture(scope="module")
def zero3(runs) -> Path:
    pytest.importorskip("deepspeed", reason="DeepSpeed is optional (pip install deepspeed)")
    output = runs["single"].parent / "zero3"
    _launch(output, "zero3_cpu.yaml", *ZERO3_CASES, "feature_refused")
    return output


def _logged_steps(folder: Path) -> list[dict]:
    return [entry for entry in json.loads((folder / "logs.json").read_text()) if "loss" in entry]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """A saved student loaded the ordinary way, in this one process."""
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def _check_sharded(folder: Path, case: str, how: str) -> None:
    """Every student (and live teacher) parameter is split over the two processes, as FSDP2 or ZeRO-3 split them."""
    ranks = [json.loads((folder / case / f"shards{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["fused_head"] is ranks[1]["fused_head"] is False  # the sharded lm_head turns it off
    for role in ["student", *(["teacher"] if case in LIVE_TEACHER_SHARDED else [])]:
        names = ranks[0][role]
        assert names and set(names) == set(ranks[1][role])
        for name, (local0, full, kind) in names.items():
            local1 = ranks[1][role][name][0]
            assert kind == how, f"{role} {name} is not sharded by {how}"
            if how == "dtensor":  # FSDP2 shards dim 0: the two local pieces add up to the whole parameter
                assert local0[0] + local1[0] == full[0] and local0[1:] == local1[1:] == full[1:], (role, name)
                assert local0[0] < full[0], (role, name)
            else:  # ZeRO-3: equal flat partitions (the last one padded) that together cover the parameter
                assert local0 == local1 and 2 * local0[0] >= math.prod(full) > local0[0], (role, name)
    if case == "nf4":  # the NF4 teacher is held whole by each process, never sharded
        teacher = ranks[0]["teacher"]
        assert teacher and not any(kind for _, _, kind in teacher.values())


@pytest.mark.parametrize("case", CASES)
def test_parameters_are_dtensor_shards_on_each_process(runs, case):
    _check_sharded(runs["fsdp"], case, "dtensor")


def _check_equal(single: Path, sharded: Path) -> None:
    """Logged loss terms and the saved (then loaded in one process) weights of one case's two runs agree."""
    case = single.name
    one_logs, two_logs = _logged_steps(single), _logged_steps(sharded)
    assert len(one_logs) == len(two_logs) == (2 if case == "kd" else 1)
    for one, two in zip(one_logs, two_logs):
        terms = set(one) - {"epoch", "step", "learning_rate"}
        assert {"loss", "grad_norm", "teacher_kl"} <= terms and terms == set(two) - {"epoch", "step", "learning_rate"}
        for term in terms:
            assert two[term] == pytest.approx(one[term], rel=1e-5, abs=1e-7), term
    reference, result = _weights(single / "final"), _weights(sharded / "final")
    assert set(reference) == set(result)
    initial = make_tiny_llama(seed=0, **({"num_layers": 3} if case == "feature" else {})).state_dict()
    assert max((reference[k] - initial[k]).abs().max() for k in reference) > 1e-3  # the step really moved it
    for name, value in reference.items():
        torch.testing.assert_close(result[name], value, rtol=1e-4, atol=1e-5, msg=name)
    if case == "feature":  # the learned projections (outside the sharded student) step the same way too
        one, two = (load_file(run / "final" / "feature_projections.safetensors") for run in (single, sharded))
        assert one and set(one) == set(two)
        for name, value in one.items():
            torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-6, msg=name)


def _check_resume(folder: Path) -> None:
    """The run stopped after step 1 and resumed from its sharded checkpoint ends where the whole run ended."""
    assert (folder / "run" / "checkpoint-1").is_dir()
    whole, resumed = _weights(folder / "final"), _weights(folder / "resumed")
    initial = make_tiny_llama(seed=0).state_dict()
    assert max((whole[k] - initial[k]).abs().max() for k in whole) > 1e-3
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("case", CASES)
def test_two_fsdp_processes_equal_one_process(runs, case):
    # One process takes the fused lm_head path where it can, so the comparison crosses the two loss paths too.
    single = json.loads((runs["single"] / case / "shards0.json").read_text())
    assert single["fused_head"] is True
    _check_equal(runs["single"] / case, runs["fsdp"] / case)


def test_resuming_an_fsdp_checkpoint_gives_the_uninterrupted_weights(runs):
    """Two accumulated micro-batches per step; model, AdamW moments and schedule come back from the checkpoint."""
    _check_resume(runs["fsdp"] / "kd")


@pytest.mark.parametrize("case", ZERO3_CASES)
def test_two_zero3_processes_are_partitioned_and_equal_one_process(runs, zero3, case):
    _check_sharded(zero3, case, "zero3")
    _check_equal(runs["single"] / case, zero3 / case)


def test_zero3_resumes_and_refuses_feature_projections(zero3):
    _check_resume(zero3 / "kd")
    assert "cannot be trained under DeepSpeed ZeRO-3" in (zero3 / "feature_refused" / "refused.txt").read_text()


def test_quantized_teacher_is_refused_under_zero3_only():
    """ZeRO-3 would partition the packed NF4 weights; the refusal names what to use instead."""
    from types import SimpleNamespace

    import hf_distill.trainers.kd_trainer  # noqa: F401  (importing teachers.sources first on its own is circular)
    from hf_distill.teachers.sources.live import check_quantized_placement

    def trainer(deepspeed: bool, stage: int) -> SimpleNamespace:
        state = SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=stage))
        return SimpleNamespace(is_deepspeed_enabled=deepspeed, accelerator=SimpleNamespace(state=state))

    with pytest.raises(ValueError, match="ZeRO-3.*Use FSDP.*teacher_load_in_4bit=False"):
        check_quantized_placement(trainer(True, 3), quantized=True)
    check_quantized_placement(trainer(True, 3), quantized=False)
    check_quantized_placement(trainer(True, 2), quantized=True)
    check_quantized_placement(trainer(False, 3), quantized=True)
