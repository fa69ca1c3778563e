"""Two CPU processes (gloo) must take the same step as one process on the same global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gloo_launch import run_processes

SCRIPT = Path(__file__).parent / "scripts" / "kd_one_step.py"


def _run(tmp_path: Path, processes: int, per_device_batch: int, kind: str) -> dict:
    out = tmp_path / f"p{processes}" / "result.pt"
    out.parent.mkdir(parents=True)
    run_processes([str(SCRIPT), str(out), str(per_device_batch), kind], processes, base_port=29600)
    result = torch.load(out)
    result["emas"] = [torch.load(path) for path in sorted(out.parent.glob(f"{out.name}.ema*"))]
    return result


@pytest.mark.parametrize("kind", ["kd", "feature", "nf4", "ema"])
def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path, kind):
    """nf4: an NF4 teacher loaded by path on every process. feature: FeatureKDTrainer's learned projections
    sit outside DDP's wrapper, so the trainer averages their gradients and clips them itself (max_grad_norm =
    0.1 is set small enough to bite). ema: three steps against the student's own EMA; every process must hold the
    same EMA as the single process."""
    single = _run(tmp_path, processes=1, per_device_batch=8, kind=kind)
    double = _run(tmp_path, processes=2, per_device_batch=4, kind=kind)
    assert (single["world"], double["world"]) == (1, 2)
    if kind == "feature":
        assert any(name.startswith("projection.") for name in single["delta"])
        assert single["grad_norm"] > 0.1 and double["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4)
    assert abs(single["loss"] - double["loss"]) < 1e-4 * abs(single["loss"])
    assert any(d.abs().max() > 1e-4 for d in single["delta"].values())
    for name, delta in single["delta"].items():
        torch.testing.assert_close(double["delta"][name], delta, rtol=1e-4, atol=1e-6, msg=name)
    if kind == "ema":
        assert len(single["emas"]) == 1 and len(double["emas"]) == 2
        reference = single["emas"][0]
        for ema in double["emas"]:
            assert set(ema) == set(reference) and reference
            for name, value in reference.items():
                torch.testing.assert_close(ema[name], value, rtol=1e-4, atol=1e-6, msg=name)
