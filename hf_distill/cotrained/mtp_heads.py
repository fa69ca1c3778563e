"""Auxiliary next-k-token heads for multi-token-prediction self-distillation.

Head ``d`` (1-based) is a small residual block chained after head ``d - 1`` (head 0 is the student's final hidden
state) and a projection to the vocabulary, so position ``i`` predicts the token ``d + 1`` ahead. The heads live
outside the student: the trainer adds them to the optimizer, writes them to every checkpoint and beside an
exported student (``mtp_heads/``), and the student itself reloads as a plain transformers model.

Why these initial values: the block's output layer starts at zero and an untied projection starts as a copy of
the student's ``lm_head``, so every head initially predicts what the main head predicts and the first steps do
not push random gradients into the backbone.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

MTP_HEADS_DIR = "mtp_heads"
MTP_WEIGHTS_FILE = "heads.safetensors"
MTP_CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class MTPHeadsConfig:
    """Shape of the heads; written beside their weights so they can be rebuilt without the trainer."""

    num_heads: int
    hidden_size: int
    vocab_size: int
    intermediate_size: int
    tie_projection: bool = False
    rms_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.num_heads < 1:
            raise ValueError(f"mtp_num_heads must be >= 1, got {self.num_heads}.")
        if self.intermediate_size < 1:
            raise ValueError(f"The MTP block's intermediate size must be >= 1, got {self.intermediate_size}.")


class MTPBlock(nn.Module):
    """``h + down(silu(up(rms_norm(h))))``: one cheap transformation per extra step of look-ahead."""

    def __init__(self, hidden_size: int, intermediate_size: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(hidden_size, eps=eps)
        self.up = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=False)
        nn.init.zeros_(self.down.weight)

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden + self.down(nn.functional.silu(self.up(self.norm(hidden))))


class MTPHeads(nn.Module):
    """The chained blocks and (unless tied to the student's ``lm_head``) one projection per depth."""

    def __init__(self, config: MTPHeadsConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(
            MTPBlock(config.hidden_size, config.intermediate_size, config.rms_norm_eps) for _ in range(config.num_heads)
        )
        self.projections = (
            None
            if config.tie_projection
            else nn.ModuleList(nn.Linear(config.hidden_size, config.vocab_size) for _ in range(config.num_heads))
        )

    @classmethod
    def for_head(cls, lm_head: nn.Linear, num_heads: int, tie_projection: bool, intermediate_size: int | None = None):
        """Heads matching a student's ``lm_head`` (its dtype and device), initialised as described above."""
        hidden, vocab = lm_head.weight.shape[1], lm_head.weight.shape[0]
        config = MTPHeadsConfig(num_heads, hidden, vocab, intermediate_size or hidden, tie_projection)
        heads = cls(config).to(device=lm_head.weight.device, dtype=lm_head.weight.dtype)
        if heads.projections is not None:
            with torch.no_grad():
                for projection in heads.projections:
                    projection.weight.copy_(lm_head.weight)
                    if lm_head.bias is None:
                        projection.bias.zero_()
                    else:
                        projection.bias.copy_(lm_head.bias)
        return heads

    def forward(self, hidden: Tensor) -> list[Tensor]:
        """The hidden state of each depth, (batch, seq, hidden) each, from the student's final hidden states."""
        states, current = [], hidden.to(self.blocks[0].up.weight.dtype)
        for block in self.blocks:
            current = block(current)
            states.append(current)
        return states

    def projection(self, depth: int, lm_head: nn.Linear) -> tuple[Tensor, Tensor | None]:
        """(weight, bias) of depth ``depth``'s projection (1-based); the student's ``lm_head`` when tied."""
        if self.projections is None:
            return lm_head.weight, lm_head.bias
        projection = self.projections[depth - 1]
        return projection.weight, projection.bias

    # ---- files ---------------------------------------------------------------------------------------

    def save(self, folder: str) -> str:
        """Write ``folder/mtp_heads/{heads.safetensors,config.json}``; returns that directory."""
        directory = os.path.join(folder, MTP_HEADS_DIR)
        os.makedirs(directory, exist_ok=True)
        tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        save_file(tensors, os.path.join(directory, MTP_WEIGHTS_FILE))
        with open(os.path.join(directory, MTP_CONFIG_FILE), "w") as handle:
            json.dump(asdict(self.config), handle, indent=2)
        return directory

    def load(self, folder: str) -> bool:
        """Restore weights written by `save` into ``folder``; False (and no change) when there are none."""
        path = os.path.join(folder, MTP_HEADS_DIR, MTP_WEIGHTS_FILE)
        if not os.path.isfile(path):
            return False
        with open(os.path.join(folder, MTP_HEADS_DIR, MTP_CONFIG_FILE)) as handle:
            saved = MTPHeadsConfig(**json.load(handle))
        if saved != self.config:
            raise ValueError(f"{path} holds heads of another shape ({saved}) than this run's ({self.config}).")
        device = next(self.parameters()).device
        self.load_state_dict({name: tensor.to(device) for name, tensor in load_file(path).items()})
        return True

    @classmethod
    def from_folder(cls, folder: str) -> MTPHeads:
        """Rebuild saved heads (for inference with the exported student, or to continue training them)."""
        with open(os.path.join(folder, MTP_HEADS_DIR, MTP_CONFIG_FILE)) as handle:
            heads = cls(MTPHeadsConfig(**json.load(handle)))
        heads.load_state_dict(load_file(os.path.join(folder, MTP_HEADS_DIR, MTP_WEIGHTS_FILE)))
        return heads
