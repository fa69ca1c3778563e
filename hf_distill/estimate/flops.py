"""Training FLOPs of a distillation run from the 2P (forward) / 6P (forward + backward) per-token rule.

Attention's sequence-length term is left out, as in seed 003's estimate; it adds roughly
``6 * layers * seq_len * hidden`` per token, small next to 6P for the sequence lengths used here.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("logit", "offline_topk", "offline_sampled", "seqkd", "feature")
OFFLINE_MODES = ("offline_topk", "offline_sampled")
# Forward + backward of a frozen base: the backward still computes the activation gradients (2P) but not the
# weight gradients (another 2P); the LoRA adapters themselves are negligible next to P.
STUDENT_FLOPS_PER_PARAM = {"full": 6.0, "lora": 4.0, "qlora": 4.0}


@dataclass(frozen=True)
class FlopBudget:
    """FLOPs of each part of a run and the ratio to pretraining the student from scratch."""

    teacher: float  # teacher forwards during training (online modes)
    precompute: float  # offline columns, run once
    generation: float  # SeqKD completions, run once
    student: float  # student forward + backward over every epoch
    pretraining: float  # 6 P_student x pretraining tokens

    @property
    def total(self) -> float:
        return self.teacher + self.precompute + self.generation + self.student

    @property
    def ratio_to_pretraining(self) -> float:
        return self.total / self.pretraining

    def precompute_per_epoch(self, epochs: int) -> float:
        """The one-off teacher pass amortised over the epochs that reuse it."""
        return (self.precompute + self.generation) / epochs


def distillation_flops(
    teacher_params: float,
    student_params: float,
    tokens: float,
    *,
    mode: str = "logit",
    epochs: int = 1,
    student_training: str = "full",
    seqkd_num_samples: int = 1,
    seqkd_generation_length: int = 256,
    seq_len: int = 2048,
    pretraining_tokens: float = 2e12,
) -> FlopBudget:
    """FLOPs for ``epochs`` passes over ``tokens`` training tokens.

    Online modes (logit, feature) run the teacher forward every epoch; offline modes run it once over the
    tokens. SeqKD reads ``tokens`` as prompt tokens, ``seq_len`` as the prompt length: the teacher generates
    ``seqkd_num_samples`` completions of ``seqkd_generation_length`` tokens per prompt (2P per token, KV cache
    assumed), and the student trains on every prompt + completion.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if student_training not in STUDENT_FLOPS_PER_PARAM:
        raise ValueError(f"student_training must be one of {tuple(STUDENT_FLOPS_PER_PARAM)}, got {student_training!r}")
    if tokens <= 0 or epochs < 1:
        raise ValueError(f"tokens must be > 0 and epochs >= 1, got tokens={tokens}, epochs={epochs}")
    per_student_token = STUDENT_FLOPS_PER_PARAM[student_training] * student_params
    teacher = precompute = generation = 0.0
    trained_tokens = tokens
    if mode in ("logit", "feature"):
        teacher = 2.0 * teacher_params * tokens * epochs
    elif mode in OFFLINE_MODES:
        precompute = 2.0 * teacher_params * tokens
    else:
        prompts = tokens / seq_len
        trained_tokens = prompts * seqkd_num_samples * (seq_len + seqkd_generation_length)
        generation = 2.0 * teacher_params * trained_tokens
    return FlopBudget(
        teacher=teacher,
        precompute=precompute,
        generation=generation,
        student=per_student_token * trained_tokens * epochs,
        pretraining=6.0 * student_params * pretraining_tokens,
    )
