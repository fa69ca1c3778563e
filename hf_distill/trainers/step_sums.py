"""Running sums of per-step statistics (loss terms, token counts) between two Trainer log calls.

They stay on the device they were computed on, so recording them costs no host synchronisation per step, and
they are summed over processes only when the Trainer logs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class StepSums:
    """Sums keyed by a name (one per trainer layer: "kd", "seqkd", "feature") and a mode ("train"/"eval")."""

    def __init__(self) -> None:
        self._sums: dict[tuple[str, str], Tensor] = {}

    def add(self, name: str, mode: str, values: list[Tensor]) -> None:
        device = values[0].device
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        local = torch.stack([v.detach().to(device=device, dtype=dtype).reshape(()) for v in values])
        key = (name, mode)
        self._sums[key] = local if key not in self._sums else self._sums[key] + local

    def pop(self, name: str, mode: str, accelerator: Any) -> list[float] | None:
        """The sums since the last pop, over all processes (every process must call this together)."""
        sums = self._sums.pop((name, mode), None)
        if sums is None:
            return None
        return accelerator.reduce(sums.to(accelerator.device), reduction="sum").tolist()
