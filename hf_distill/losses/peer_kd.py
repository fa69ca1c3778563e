"""The loss of one co-trained model: cross-entropy plus the average divergence to the models it learns from.

``(1 - alpha) * CE + alpha * T^2 * mean_l D(p_l || q)`` summed over valid target positions, with every ``p_l``
detached (a model never receives gradients through another's loss). Mutual learning gives each model all the
others; an online teacher gets none and so trains on the labels alone. Each pair goes through the chunked
`token_kd_loss` (the first one also carries the CE), so no float32 tokens x vocab tensor is ever held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from .cross_entropy import cross_entropy_sum
from .token_kd import IGNORE_INDEX, KDLossSpec, KDLossTerms, LogitSource, token_kd_loss


def detached(source: LogitSource) -> LogitSource:
    """The same logits, cut from the graph: what another model sees of this one."""
    return LogitSource(
        source.states.detach(),
        None if source.head_weight is None else source.head_weight.detach(),
        None if source.head_bias is None else source.head_bias.detach(),
    )


def peer_kd_terms(
    student: LogitSource, others: Sequence[LogitSource], targets: Tensor, spec: KDLossSpec
) -> KDLossTerms:
    """One model's summed loss against ``others`` (detached here); statistics are averaged over ``others``.

    ``soft_sum``, ``kl_sum`` and ``top1_agree`` are the mean over the other models of their sums; ``hard_sum`` is
    the CE sum. With no others the loss is the CE alone.
    """
    if not others:
        ce = cross_entropy_sum(student, targets, spec.chunk_size, spec.precision)
        zero = torch.zeros((), device=ce.device)
        count = torch.as_tensor((targets != IGNORE_INDEX).sum(), device=ce.device)
        return KDLossTerms(loss=ce, soft_sum=zero, hard_sum=ce.detach(), num_tokens=count, top1_agree=zero, kl_sum=zero)
    soft_weight, hard_weight = spec.alpha / len(others), 1.0 - spec.alpha
    scale = soft_weight + hard_weight
    first = token_kd_loss(student, detached(others[0]), targets, replace(spec, alpha=soft_weight / scale))
    loss = first.loss * scale
    soft, agree, kl = first.soft_sum, first.top1_agree, first.kl_sum
    for other in others[1:]:
        terms = token_kd_loss(student, detached(other), targets, replace(spec, alpha=1.0))
        loss = loss + terms.loss * soft_weight
        soft, agree, kl = soft + terms.soft_sum, agree + terms.top1_agree, kl + terms.kl_sum
    count = len(others)
    return KDLossTerms(
        loss=loss,
        soft_sum=soft / count,
        hard_sum=first.hard_sum,
        num_tokens=first.num_tokens,
        top1_agree=agree / count,
        kl_sum=kl / count,
    )
