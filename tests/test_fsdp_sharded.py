"""FSDP2 through the Trainer on two CPU processes (gloo) equals one process: every trainer kind, the live
teacher sharded too, an NF4 teacher held whole by each process, checkpoint resume and the saved checkpoint.

tests/scripts/sharded_run.py runs every case once as a plain process and once under
`accelerate launch --config_file tests/scripts/fsdp_cpu.yaml`; the plain run is the reference (its losses are
checked against float64 formulas in the per-trainer tests).
"""

from __future__ import annotations

import json
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


def _launch(output: Path, processes: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = [str(SCRIPTS / "sharded_run.py"), str(output)]
    if processes == 1:
        cmd = [sys.executable, *script]
    else:
        port = str(29300 + os.getpid() % 300)
        config = str(SCRIPTS / "fsdp_cpu.yaml")
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--main_process_port", port]
        cmd += script
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-6000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharded")
    _launch(root / "single", processes=1)
    _launch(root / "fsdp", processes=2)
    return {"single": root / "single", "fsdp": root / "fsdp"}


def _logged_steps(folder: Path) -> list[dict]:
    return [entry for entry in json.loads((folder / "logs.json").read_text()) if "loss" in entry]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """A saved student loaded the ordinary way, in this one process."""
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


@pytest.mark.parametrize("case", CASES)
def test_parameters_are_dtensor_shards_on_each_process(runs, case):
    ranks = [json.loads((runs["fsdp"] / case / f"shards{r}.json").read_text()) for r in (0, 1)]
    for role in ["student", *(["teacher"] if case in LIVE_TEACHER_SHARDED else [])]:
        names = ranks[0][role]
        assert names and set(names) == set(ranks[1][role])
        for name, (local0, full, is_dtensor) in names.items():
            local1 = ranks[1][role][name][0]
            assert is_dtensor, f"{role} {name} is not sharded"
            # FSDP2 shards dim 0: the two local pieces add up to the whole parameter, each is a part of it.
            assert local0[0] + local1[0] == full[0] and local0[1:] == local1[1:] == full[1:], (role, name)
            assert local0[0] < full[0], (role, name)
    if case == "nf4":  # the NF4 teacher is held whole by each process, never sharded
        teacher = ranks[0]["teacher"]
        assert teacher and not any(is_dtensor for _, _, is_dtensor in teacher.values())


@pytest.mark.parametrize("case", CASES)
def test_two_sharded_processes_equal_one_process(runs, case):
    single, sharded = _logged_steps(runs["single"] / case), _logged_steps(runs["fsdp"] / case)
    assert len(single) == len(sharded) == (2 if case == "kd" else 1)
    for one, two in zip(single, sharded):
        terms = {k for k in one if k not in ("epoch", "step", "learning_rate")}
        assert {"loss", "grad_norm", "teacher_kl"} <= terms and terms == set(two) - {"epoch", "step", "learning_rate"}
        for term in terms:
            assert two[term] == pytest.approx(one[term], rel=1e-5, abs=1e-7), term
    reference, result = _weights(runs["single"] / case / "final"), _weights(runs["fsdp"] / case / "final")
    assert set(reference) == set(result)
    initial = make_tiny_llama(seed=0, **({"num_layers": 3} if case == "feature" else {})).state_dict()
    assert max((reference[k] - initial[k]).abs().max() for k in reference) > 1e-3  # the step really moved it
    for name, value in reference.items():
        torch.testing.assert_close(result[name], value, rtol=1e-4, atol=1e-5, msg=name)
    if case == "feature":  # the learned projections (outside the sharded student) step the same way too
        files = [runs[run] / case / "final" / "feature_projections.safetensors" for run in ("single", "fsdp")]
        one, two = load_file(files[0]), load_file(files[1])
        assert one and set(one) == set(two)
        for name, value in one.items():
            torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_resuming_a_sharded_checkpoint_gives_the_uninterrupted_weights(runs):
    """Two accumulated micro-batches per step; the run stopped after step 1 and resumed ends where the whole run
    ended (model, AdamW moments and schedule restored from the sharded run's checkpoint)."""
    folder = runs["fsdp"] / "kd"
    assert (folder / "run" / "checkpoint-1").is_dir()
    whole, resumed = _weights(folder / "final"), _weights(folder / "resumed")
    initial = make_tiny_llama(seed=0).state_dict()
    assert max((whole[k] - initial[k]).abs().max() for k in whole) > 1e-3
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-7, msg=name)
