"""How concentrated a teacher's next-token distributions are, to choose the offline mode and k before paying.

Per position: the entropy, the probability mass of the k most likely tokens, and the KL lost by storing only
those k (plus a tail mass). The loss is measured as KL(teacher || reconstruction), where the reconstruction is
the most that top-k columns say: the k probabilities exactly and the tail mass r spread evenly over the other
V - k tokens (the maximum-entropy completion). It equals ``r * (log(V - k) - H(tail / r))``: zero when the
tail is already uniform or empty, large when the tail has structure the columns drop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .storage import offline_bytes_per_token

DEFAULT_KS = (1, 8, 32, 128)
ROWS_PER_CHUNK = 256  # float64 (rows x vocab) work buffers: 256 x 128k x 8 bytes = 256 MB


@dataclass
class TeacherInspection:
    """Per-position statistics (nats) over every inspected position, and the vocabulary they came from."""

    vocab: int
    ks: tuple[int, ...]
    entropy: list[float] = field(default_factory=list)
    topk_mass: dict[int, list[float]] = field(default_factory=dict)
    kl_lost: dict[int, list[float]] = field(default_factory=dict)

    def add(self, logits: Tensor, temperature: float = 1.0) -> None:
        """Append the statistics of (positions x vocab) ``logits`` at ``temperature``, in float64 row chunks."""
        for start in range(0, logits.shape[0], ROWS_PER_CHUNK):
            entropy, mass, lost = position_statistics(logits[start : start + ROWS_PER_CHUNK], self.ks, temperature)
            self.entropy += entropy.tolist()
            for k in self.ks:
                self.topk_mass.setdefault(k, []).extend(mass[k].tolist())
                self.kl_lost.setdefault(k, []).extend(lost[k].tolist())

    @property
    def positions(self) -> int:
        return len(self.entropy)

    def summary(self) -> dict:
        """Means and entropy quantiles, plus bytes per token for each k (as stored by `hf-distill precompute`)."""
        entropy = torch.tensor(self.entropy, dtype=torch.float64)
        quantiles = torch.quantile(entropy, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
        return {
            "positions": self.positions,
            "vocab": self.vocab,
            "entropy_bits_mean": entropy.mean().item() / math.log(2),
            "entropy_bits_p10_p50_p90": [q / math.log(2) for q in quantiles],
            "per_k": {
                k: {
                    "topk_mass_mean": _mean(self.topk_mass[k]),
                    "kl_lost_nats_mean": _mean(self.kl_lost[k]),
                    "bytes_per_token": offline_bytes_per_token("offline_topk", self.vocab, k=min(k, self.vocab)),
                }
                for k in self.ks
            },
        }


def position_statistics(
    logits: Tensor, ks: Sequence[int] = DEFAULT_KS, temperature: float = 1.0
) -> tuple[Tensor, dict[int, Tensor], dict[int, Tensor]]:
    """(entropy, {k: top-k mass}, {k: KL lost}) per row of ``logits``, computed in float64."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (positions, vocab), got shape {tuple(logits.shape)}")
    vocab = logits.shape[-1]
    logp = torch.log_softmax(logits.to(torch.float64) / temperature, dim=-1)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
    entropy = -plogp.sum(-1)
    top_p, top_index = p.topk(min(max(ks), vocab), dim=-1)
    top_plogp = plogp.gather(-1, top_index)
    mass, lost = {}, {}
    for k in ks:
        kk = min(k, vocab)
        mass[k] = top_p[:, :kk].sum(-1)
        tail = (1.0 - mass[k]).clamp_min(0.0)
        tail_plogp = plogp.sum(-1) - top_plogp[:, :kk].sum(-1)  # sum over the tail of p log p
        if kk == vocab:
            lost[k] = torch.zeros_like(tail)
        else:
            tail_log_tail = torch.where(tail > 0, tail * tail.clamp_min(1e-300).log(), torch.zeros_like(tail))
            lost[k] = (tail_plogp - tail_log_tail + tail * math.log(vocab - kk)).clamp_min(0.0)
    return entropy, mass, lost


@torch.no_grad()
def inspect_teacher(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Tensor]],
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = 1.0,
) -> TeacherInspection:
    """Run ``model`` over ``batches`` (input_ids, optional attention_mask) and collect every real position."""
    model.eval()
    result = None
    for batch in batches:
        logits = model(**batch, use_cache=False).logits
        if result is None:
            result = TeacherInspection(vocab=logits.shape[-1], ks=tuple(ks))
        mask = batch.get("attention_mask")
        rows = logits.reshape(-1, logits.shape[-1]) if mask is None else logits[mask.bool()]
        result.add(rows, temperature)
    if result is None:
        raise ValueError("no batches to inspect: the dataset sample is empty")
    return result


def format_inspection(summary: dict, teacher: str) -> str:
    """A plain-text table of the summary: mass, KL lost and storage per k."""
    p10, p50, p90 = summary["entropy_bits_p10_p50_p90"]
    lines = [
        f"Teacher {teacher}: {summary['positions']} positions, vocabulary {summary['vocab']}",
        f"entropy per position: mean {summary['entropy_bits_mean']:.3f} bits (p10 {p10:.3f}, median {p50:.3f}, "
        f"p90 {p90:.3f})",
        "",
        f"{'k':>5} {'top-k mass':>11} {'KL lost (nats/token)':>21} {'storage (B/token)':>18}",
    ]
    for k, row in summary["per_k"].items():
        lines.append(
            f"{k:>5} {row['topk_mass_mean']:>11.4f} {row['kl_lost_nats_mean']:>21.4f} {row['bytes_per_token']:>18.0f}"
        )
    lines.append(
        "KL lost: KL(teacher || top-k probabilities + tail mass spread evenly over the rest); sampled mode "
        "(24 draws) stores about 37 B/token and is unbiased instead (docs/offline_kd.md)."
    )
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
