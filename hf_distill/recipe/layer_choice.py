"""Which teacher layers a layer-subset student should keep, chosen by the KL to the teacher they leave.

Evenly spaced layers are a guess; a student whose kept layers already reproduce the teacher's next-token
distribution closely starts its training further along. Greedy removal measures that directly: starting from all
layers, drop the one whose absence raises KL(teacher || student) the least on a few training batches, and repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .layer_subset import layer_subset_student


@dataclass(frozen=True)
class LayerChoice:
    """The kept teacher layers and their KL per token (nats) at initialisation, after each removal."""

    layers: list[int]
    kl: float
    history: list[tuple[list[int], float]]


def teacher_log_probs(teacher: nn.Module, batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The teacher's log-probabilities on ``batches``, computed once and shared by every candidate's KL."""
    return _log_probs(teacher.eval(), batches)


def _log_probs(model: nn.Module, batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(input_ids=batch, use_cache=False).logits.float().log_softmax(-1) for batch in batches]


def subset_kl(teacher: nn.Module, layers: Sequence[int], batches, teacher_lp: list[torch.Tensor]) -> float:
    """Mean per-token KL(teacher || layer-subset student) over ``batches`` (float32)."""
    student = layer_subset_student(teacher, layers).eval()
    total, count = 0.0, 0
    for student_lp, batch_teacher_lp in zip(_log_probs(student, batches), teacher_lp):
        total += (batch_teacher_lp.exp() * (batch_teacher_lp - student_lp)).sum(-1).sum().item()
        count += batch_teacher_lp.shape[0] * batch_teacher_lp.shape[1]
    return total / count


def choose_layers_by_kl(
    teacher: nn.Module,
    batches: Sequence[torch.Tensor],
    num_keep: int,
    keep: Sequence[int] = (),
    progress: bool = True,
    teacher_lp: list[torch.Tensor] | None = None,
) -> LayerChoice:
    """Greedy removal down to ``num_keep`` layers; ``keep`` lists layers never removed (e.g. the first and last).

    Cost: about (L^2 - num_keep^2) / 2 forwards of a partial model on ``batches`` for L teacher layers, so keep the
    batches small (a few thousand tokens separate the candidates well). ``teacher_lp``: `teacher_log_probs` of the
    same batches, when the caller has them already.
    """
    total = teacher.config.get_text_config().num_hidden_layers
    if not 1 <= num_keep <= total:
        raise ValueError(f"num_keep must be in [1, {total}], got {num_keep}")
    if len(set(keep)) > num_keep or any(not 0 <= i < total for i in keep):
        raise ValueError(f"keep must hold at most {num_keep} layer indices in [0, {total}), got {list(keep)}")
    if not batches:
        raise ValueError("choose_layers_by_kl needs at least one batch of input_ids")
    teacher = teacher.eval()
    if teacher_lp is None:
        teacher_lp = teacher_log_probs(teacher, batches)
    layers = list(range(total))
    history: list[tuple[list[int], float]] = []
    kl = 0.0
    bar = tqdm(total=total - num_keep, desc="dropping layers by KL", disable=not progress)
    while len(layers) > num_keep:
        scored = [
            (subset_kl(teacher, [i for i in layers if i != drop], batches, teacher_lp), drop)
            for drop in layers
            if drop not in keep
        ]
        kl, drop = min(scored)
        layers.remove(drop)
        history.append((list(layers), kl))
        bar.update(1)
        bar.set_postfix(kl=f"{kl:.3f}", dropped=drop)
    bar.close()
    return LayerChoice(layers, kl, history)
