"""Configurations of the co-trained regimes: `MutualKDConfig` (mutual learning) and `OnlineKDConfig` (online
distillation). Both are `KDConfig` (temperature, alpha, divergence, chunking apply to every model's loss) plus the
other models' learning rates; every other optimizer and schedule setting is shared with the student."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses.settings import require_positive
from .kd_config import KDConfig


def _check_common(config: KDConfig, trainer: str) -> None:
    if config.fp16:
        raise ValueError(
            f"{trainer} does not support fp16: the loss scaler would scale the other models' gradients without "
            "unscaling them. Use bf16=True (or float32)."
        )
    if str(config.lr_scheduler_type).endswith("reduce_lr_on_plateau"):
        raise ValueError(f"{trainer} gives every model its own schedule; reduce_lr_on_plateau is not supported.")
    if config.cross_tokenizer:
        raise ValueError(f"{trainer} compares models token by token; cross_tokenizer=True has no meaning here.")
    if config.teacher_model_name_or_path or config.teacher_ensemble:
        raise ValueError(
            f"{trainer} trains every model it is given; a frozen teacher (teacher_model_name_or_path / "
            "teacher_ensemble) is not used. Pass the co-trained models as trainer arguments instead."
        )


@dataclass
class MutualKDConfig(KDConfig):
    r"""
    Configuration for [`MutualKDTrainer`] (deep mutual learning): the student and each peer minimise
    `(1 - alpha) * CE + alpha * T^2 * mean over the other models of D(other || self)`, the others detached.

    Parameters:
        peer_learning_rates (`list[float]`, *optional*):
            One learning rate per peer, in the order the peers are given (default: `learning_rate` for all). Each
            peer has its own optimizer (same `optim` and settings) and its own `lr_scheduler_type` schedule.
    """

    peer_learning_rates: list[float] | None = field(
        default=None, metadata={"help": "Learning rate of each peer (default: learning_rate)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_common(self, "MutualKDTrainer")
        for rate in self.peer_learning_rates or []:
            require_positive("peer_learning_rates", rate)

    def peer_learning_rate(self, index: int, count: int) -> float:
        """The learning rate of peer ``index`` (0-based) of ``count`` peers."""
        if self.peer_learning_rates is None:
            return self.learning_rate
        if len(self.peer_learning_rates) != count:
            raise ValueError(f"peer_learning_rates has {len(self.peer_learning_rates)} entries for {count} peers.")
        return float(self.peer_learning_rates[index])


@dataclass
class OnlineKDConfig(KDConfig):
    r"""
    Configuration for [`OnlineKDTrainer`] (online distillation): the teacher trains on the labels (cross-entropy)
    while the student minimises `(1 - alpha) * CE + alpha * T^2 * D(teacher || student)`, the teacher detached.

    Parameters:
        teacher_learning_rate (`float`, *optional*):
            The teacher's learning rate (default: `learning_rate`). The teacher has its own optimizer (same `optim`
            and settings) and its own `lr_scheduler_type` schedule.
    """

    teacher_learning_rate: float | None = field(
        default=None, metadata={"help": "The co-trained teacher's learning rate (default: learning_rate)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_common(self, "OnlineKDTrainer")
        if self.teacher_learning_rate is not None:
            require_positive("teacher_learning_rate", self.teacher_learning_rate)

    def peer_learning_rate(self, index: int, count: int) -> float:
        return self.learning_rate if self.teacher_learning_rate is None else float(self.teacher_learning_rate)
