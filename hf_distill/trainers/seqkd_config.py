"""Configuration of `SeqKDTrainer`: `KDConfig` plus the sequence-level distillation fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..losses.settings import require_in_range
from .kd_config import KDConfig


@dataclass
class SeqKDConfig(KDConfig):
    r"""
    Configuration for [`SeqKDTrainer`]: supervised fine-tuning on teacher-written completions, optionally mixed
    with ground-truth targets. Everything [`KDConfig`] (and so `SFTConfig` / `TrainingArguments`) accepts works.

    The loss is `beta * L_seqkd + (1 - beta) * L_gt`, each term a mean over its own completion tokens in the
    whole (accumulated, multi-process) batch. `L_seqkd` is the cross-entropy on the teacher completions; when a
    `teacher_model` sharing the student's vocabulary is given, it becomes the `KDConfig` token-level loss on those
    completions, `alpha * T^2 * D(teacher || student) + (1 - alpha) * CE`. Without a teacher model, `alpha`,
    `temperature` and `divergence` are unused.

    Parameters:
        beta (`float`, defaults to `1.0`):
            Weight of the loss on teacher completions; `1 - beta` weights the ground-truth targets. In [0, 1].
        prompt_column (`str`, defaults to `"prompt"`):
            Prompt column (text, or a list of messages for conversational data).
        completion_column (`str`, defaults to `"completion"`):
            Teacher completion column (text, or a list with the assistant message).
        ground_truth_column (`str`, *optional*):
            Column with the reference completion, required when `beta < 1`.
    """

    beta: float = field(
        default=1.0, metadata={"help": "Weight of the teacher-completion loss (1 - beta: ground truth)."}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Prompt column."})
    completion_column: str = field(default="completion", metadata={"help": "Teacher completion column."})
    ground_truth_column: str | None = field(
        default=None, metadata={"help": "Reference completion column (needed when beta < 1)."}
    )

    def __post_init__(self) -> None:
        if self.completion_only_loss is False:
            raise ValueError("SeqKDConfig trains on completion tokens only; completion_only_loss cannot be False.")
        self.completion_only_loss = True
        super().__post_init__()
        require_in_range("beta", self.beta, 0.0, 1.0)
        if self.beta < 1.0 and not self.ground_truth_column:
            raise ValueError(
                f"beta={self.beta} mixes in ground-truth targets; set ground_truth_column to the column holding them."
            )
        if self.beta < 1.0 and self.packing:
            raise ValueError("packing merges teacher and ground-truth sequences; use packing=False when beta < 1.")
