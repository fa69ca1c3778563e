"""Configuration of `MTPTrainer`: `KDConfig` plus the multi-token-prediction self-distillation fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses.mtp import MTPLossSpec
from .kd_config import KDConfig


@dataclass
class MTPConfig(KDConfig):
    r"""
    Configuration for [`MTPTrainer`]. Everything [`KDConfig`] accepts works unchanged (the teacher settings only
    matter when a teacher is given); the fields below add auxiliary next-k-token heads. Their terms are sums over
    target tokens divided by the same count as the main loss, so their weights compare directly with it.

    Parameters:
        mtp_num_heads (`int`, defaults to `1`):
            Auxiliary heads; head `d` predicts the token `d + 1` positions ahead (the main head predicts 1 ahead).
        mtp_ce_weight (`float`, defaults to `0.3`):
            Weight of each head's cross-entropy on its target token.
        mtp_kd_weight (`float`, defaults to `0.1`):
            Weight of each head's `T^2 * KL(main || head)`, the main head's (detached) distribution taken at the
            position that predicts the same token.
        mtp_temperature (`float`, defaults to `2.0`):
            Temperature of that KL (divides both sides' logits).
        mtp_tie_projection (`bool`, defaults to `False`):
            Project every head with the student's own `lm_head` (fewer parameters; the heads' CE then also
            trains the `lm_head`) instead of one projection per head, initialised as a copy of it.
        mtp_intermediate_size (`int`, *optional*):
            Width of each head's block (default: the student's hidden size).
    """

    mtp_num_heads: int = field(default=1, metadata={"help": "Auxiliary next-k-token heads."})
    mtp_ce_weight: float = field(default=0.3, metadata={"help": "Weight of each head's cross-entropy."})
    mtp_kd_weight: float = field(default=0.1, metadata={"help": "Weight of each head's KL to the main head."})
    mtp_temperature: float = field(default=2.0, metadata={"help": "Temperature of the heads' KL."})
    mtp_tie_projection: bool = field(default=False, metadata={"help": "Project heads with the student's lm_head."})
    mtp_intermediate_size: int | None = field(default=None, metadata={"help": "Width of each head's block."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mtp_num_heads < 1:
            raise ValueError(f"mtp_num_heads must be >= 1, got {self.mtp_num_heads}.")
        if self.mtp_intermediate_size is not None and self.mtp_intermediate_size < 1:
            raise ValueError(f"mtp_intermediate_size must be >= 1, got {self.mtp_intermediate_size}.")
        if self.packing or self.padding_free:
            raise ValueError(
                "MTP heads read targets several positions ahead, which would cross sequence boundaries in a packed "
                "or padding-free batch. Set `packing=False` and `padding_free=False`."
            )
        self.mtp_spec()

    def mtp_spec(self) -> MTPLossSpec:
        """The auxiliary heads' loss settings, validated."""
        return MTPLossSpec(
            ce_weight=self.mtp_ce_weight,
            kd_weight=self.mtp_kd_weight,
            temperature=self.mtp_temperature,
            chunk_size=self.loss_chunk_size,
            precision=self.loss_precision,
        )
