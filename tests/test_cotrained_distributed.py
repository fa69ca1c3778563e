"""Two CPU processes (gloo) must train every co-trained model (peers, online teacher, MTP heads) exactly as one
process does on the same global batch, and every process must hold the same models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gloo_launch import run_processes

SCRIPT = Path(__file__).parent / "scripts" / "cotrained_one_step.py"


def _run(tmp_path: Path, processes: int, per_device_batch: int, kind: str) -> list[dict]:
    out = tmp_path / f"p{processes}" / "result.pt"
    out.parent.mkdir(parents=True)
    run_processes([str(SCRIPT), str(out), str(per_device_batch), kind], processes, base_port=29300)
    return [torch.load(f"{out}.rank{rank}") for rank in range(processes)]


@pytest.mark.parametrize("kind", ["mutual", "online", "mtp"])
def test_two_processes_match_one_process(tmp_path, kind):
    (single,) = _run(tmp_path, processes=1, per_device_batch=8, kind=kind)
    doubles = _run(tmp_path, processes=2, per_device_batch=4, kind=kind)
    assert single["world"] == 1 and all(d["world"] == 2 for d in doubles)
    assert abs(single["loss"] - doubles[0]["loss"]) < 1e-4 * abs(single["loss"])
    models = {name.split(".")[0] for name in single["delta"]}
    assert len(models) >= 2, models
    for model in models:  # every model moved, not only the student
        assert any(d.abs().max() > 1e-4 for n, d in single["delta"].items() if n.startswith(model + "."))
    for double in doubles:
        for name, delta in single["delta"].items():
            torch.testing.assert_close(double["delta"][name], delta, rtol=1e-4, atol=1e-6, msg=name)
