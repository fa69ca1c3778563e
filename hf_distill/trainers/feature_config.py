"""Configuration of `FeatureKDTrainer`: `KDConfig` plus hidden-state and attention distillation fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..features.layer_maps import STRATEGIES
from ..losses.attention import HEAD_REDUCTIONS
from ..losses.feature import HIDDEN_LOSSES
from ..losses.settings import require_non_negative
from .kd_config import KDConfig


@dataclass
class FeatureKDConfig(KDConfig):
    r"""
    Configuration for [`FeatureKDTrainer`]. Everything [`KDConfig`] accepts works unchanged; the fields below add
    feature distillation. Every feature term is a per-token sum over the same target positions as the logit loss
    and is divided by the same token count, so weights are comparable to `alpha`.

    Parameters:
        feature_layer_map (`str`, defaults to `"uniform"`):
            How student layers are paired with teacher layers: `uniform`, `top_heavy`, `last_k` or `explicit`
            (see `hf_distill.features.layer_maps`). Layer `l` is the output of decoder layer `l`, 0-based.
        feature_layer_pairs (`list[str]`, *optional*):
            For `explicit`: pairs written `"student:teacher"`, e.g. `["0:0", "5:20", "11:47"]`.
        feature_last_k (`int`, *optional*):
            For `last_k`: how many top layers to pair.
        hidden_loss_weight (`float`, defaults to `1.0`):
            Weight of the hidden-state term (0 disables it).
        hidden_loss_type (`str`, defaults to `"normalized_mse"`):
            `mse` (mean over the width), `normalized_mse` (squared distance of unit vectors) or `cosine`
            (`1 - cos`). Raw `mse` grows with the scale of the residual stream; the other two do not.
        feature_always_project (`bool`, defaults to `False`):
            Learn a projection per pair even when the widths are equal (it starts as the identity). Pairs of
            different widths always get one.
        attention_loss_weight (`float`, defaults to `0.0`):
            Weight of the attention-map KL term (0 disables it). Needs eager attention, see below.
        attention_head_reduction (`str`, defaults to `"group"`):
            `group`: average contiguous groups of teacher heads onto the student's heads (GQA-aligned);
            `mean`: average all heads of each side, for head counts that do not divide.
        feature_switch_to_eager (`bool`, defaults to `True`):
            Switch teacher and student to eager attention when attention distillation is on (sdpa/flash return
            no attention weights). With `False`, a non-eager model is an error instead.
        feature_export_projections (`bool`, defaults to `False`):
            Also write `feature_projections.safetensors` next to the final student. Checkpoints always contain it;
            the student's own weights never do.
    """

    feature_layer_map: str = field(
        default="uniform", metadata={"help": "Layer pairing strategy.", "choices": list(STRATEGIES)}
    )
    feature_layer_pairs: list[str] | None = field(
        default=None, metadata={"help": "Explicit pairs 'student:teacher' (with feature_layer_map=explicit)."}
    )
    feature_last_k: int | None = field(default=None, metadata={"help": "Top layers paired by last_k."})
    hidden_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the hidden-state term."})
    hidden_loss_type: str = field(
        default="normalized_mse", metadata={"help": "Hidden-state distance.", "choices": list(HIDDEN_LOSSES)}
    )
    feature_always_project: bool = field(default=False, metadata={"help": "Learn projections even for equal widths."})
    attention_loss_weight: float = field(default=0.0, metadata={"help": "Weight of the attention KL term."})
    attention_head_reduction: str = field(
        default="group", metadata={"help": "Head count matching.", "choices": list(HEAD_REDUCTIONS)}
    )
    feature_switch_to_eager: bool = field(
        default=True, metadata={"help": "Switch to eager attention for attention distillation."}
    )
    feature_export_projections: bool = field(
        default=False, metadata={"help": "Write the projections next to the final student too."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.feature_layer_map not in STRATEGIES:
            raise ValueError(
                f"feature_layer_map must be one of {', '.join(STRATEGIES)}, got {self.feature_layer_map!r}."
            )
        if self.hidden_loss_type not in HIDDEN_LOSSES:
            raise ValueError(
                f"hidden_loss_type must be one of {', '.join(HIDDEN_LOSSES)}, got {self.hidden_loss_type!r}."
            )
        if self.attention_head_reduction not in HEAD_REDUCTIONS:
            raise ValueError(
                f"attention_head_reduction must be one of {', '.join(HEAD_REDUCTIONS)}, "
                f"got {self.attention_head_reduction!r}."
            )

    def schedulable_weights(self) -> dict[str, Any]:
        """`KDConfig`'s schedulable weights plus the feature terms' (each >= 0)."""
        return {
            **super().schedulable_weights(),
            "hidden_loss_weight": require_non_negative,
            "attention_loss_weight": require_non_negative,
        }

    def check_loss_settings(self) -> None:
        super().check_loss_settings()
        for name in ("hidden_loss_weight", "attention_loss_weight"):
            require_non_negative(name, getattr(self, name))

    def feature_term_active(self, name: str) -> bool:
        """Whether ``name`` is ever weighted above 0 (so its activations must be captured at all)."""
        schedule = self.weight_schedules().get(name)
        start = getattr(self, name)
        values = schedule.values_reached(start) if schedule is not None else (start,)
        return max(values) > 0
