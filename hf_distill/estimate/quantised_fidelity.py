"""How far a quantised teacher's next-token distributions are from the same teacher unquantised.

Why: a teacher loaded in NF4 costs a quarter of the weight memory, but what the student learns is the quantised
distribution. Per position, with p the unquantised (reference) and q the quantised distribution:

* ``kl``: KL(p || q) in nats, what distilling from q instead of p shifts the target by;
* ``top1_agreement``: whether both argmaxes agree;
* ``topk_mass_overlap[k]``: the share of p's top-k mass that sits on tokens also in q's top-k,
  sum_{v in topk(p) & topk(q)} p_v / sum_{v in topk(p)} p_v (1 when the top-k sets are the same).

Sums are kept so positions from several batches add up; everything is float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

DEFAULT_OVERLAP_KS = (1, 8, 32)


@dataclass
class FidelitySums:
    """Running sums over positions of the fidelity statistics."""

    ks: tuple[int, ...] = DEFAULT_OVERLAP_KS
    positions: int = 0
    kl: float = 0.0
    agree: float = 0.0
    overlap: dict[int, float] = field(default_factory=dict)

    def add(self, reference_logits: Tensor, quantised_logits: Tensor) -> None:
        """Add (positions x vocab) logits of both teachers at the same positions."""
        if reference_logits.shape != quantised_logits.shape or reference_logits.dim() != 2:
            raise ValueError(
                f"logits must be matching (positions, vocab) tensors, got {tuple(reference_logits.shape)} and "
                f"{tuple(quantised_logits.shape)}"
            )
        log_p = torch.log_softmax(reference_logits.to(torch.float64), -1)
        log_q = torch.log_softmax(quantised_logits.to(torch.float64).to(log_p.device), -1)
        p = log_p.exp()
        self.positions += p.shape[0]
        self.kl += float(torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum())
        self.agree += float((log_p.argmax(-1) == log_q.argmax(-1)).sum())
        for k in self.ks:
            kk = min(k, p.shape[-1])
            top_p, top_q = log_p.topk(kk, -1).indices, log_q.topk(kk, -1).indices
            shared = (top_p.unsqueeze(2) == top_q.unsqueeze(1)).any(2)
            mass = p.gather(-1, top_p)
            self.overlap[k] = self.overlap.get(k, 0.0) + float(((mass * shared).sum(-1) / mass.sum(-1)).sum())

    def summary(self) -> dict:
        """Means over positions."""
        n = max(self.positions, 1)
        return {
            "positions": self.positions,
            "kl_nats": self.kl / n,
            "top1_agreement": self.agree / n,
            "topk_mass_overlap": {k: self.overlap.get(k, 0.0) / n for k in self.ks},
        }


@torch.no_grad()
def compare_teachers(
    reference: torch.nn.Module,
    quantised: torch.nn.Module,
    batches: Sequence[dict[str, Tensor]],
    ks: Sequence[int] = DEFAULT_OVERLAP_KS,
) -> FidelitySums:
    """Run both teachers over ``batches`` (input_ids, optional attention_mask) and compare every real position."""
    sums = FidelitySums(ks=tuple(ks))
    for batch in batches:
        ref = reference(**batch, use_cache=False).logits
        quant = quantised(**{k: v.to(next(quantised.parameters()).device) for k, v in batch.items()}).logits
        mask = batch.get("attention_mask")
        vocab = min(ref.shape[-1], quant.shape[-1])
        if mask is None:
            sums.add(ref.reshape(-1, ref.shape[-1])[:, :vocab], quant.reshape(-1, quant.shape[-1])[:, :vocab])
        else:
            keep = mask.bool()
            sums.add(ref[keep][:, :vocab], quant[keep.to(quant.device)][:, :vocab])
    return sums


def load_nf4(path: str) -> torch.nn.Module:
    """The model at ``path`` quantised to NF4 by bitsandbytes (double quantisation, float32 compute), on CPU
    unless an accelerator is present."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=config, device_map=device).eval()


def format_fidelity(summary: dict) -> str:
    """Plain-text lines of a `FidelitySums.summary()`."""
    overlap = ", ".join(f"k={k}: {v:.4f}" for k, v in summary["topk_mass_overlap"].items())
    return (
        f"NF4 vs unquantised teacher over {summary['positions']} positions: KL {summary['kl_nats']:.5f} nats/token, "
        f"top-1 agreement {summary['top1_agreement']:.4f}, top-k mass overlap {overlap}"
    )
