"""Teacher-student agreement on a shared vocabulary: top-1 agreement and mean token KL(teacher || student).

Top-1 agreement is the share of positions where both models' most likely next token is the same; the KL is
the mean over positions of sum_v p_t(v) (log p_t(v) - log p_s(v)), in nats. Both are computed from float32
log-softmaxes taken a chunk of tokens at a time. ``compute_agreement`` runs two models over held-out texts;
``agreement_from_logits`` works on logits you already have (e.g. in a KD trainer's evaluation loop) and its
output feeds the ``TeacherStudentAgreement`` metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np
import torch
from tqdm.auto import tqdm

from hf_distill.evaluation.token_windows import (
    batches,
    model_device,
    pad_id_of,
    resolve_max_length,
    text_windows,
)


def _check_vocab(student_logits: torch.Tensor, teacher_logits: torch.Tensor, vocab_size: int | None):
    if vocab_size is not None:
        if vocab_size > min(student_logits.shape[-1], teacher_logits.shape[-1]):
            raise ValueError(
                f"vocab_size={vocab_size} exceeds the logits' vocabulary "
                f"(student {student_logits.shape[-1]}, teacher {teacher_logits.shape[-1]})"
            )
        return student_logits[..., :vocab_size], teacher_logits[..., :vocab_size]
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            f"teacher and student vocabularies differ ({teacher_logits.shape[-1]} vs {student_logits.shape[-1]}): "
            "token agreement needs a shared vocabulary. If one is only padded, pass vocab_size=len(tokenizer)."
        )
    return student_logits, teacher_logits


def agreement_from_logits(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    vocab_size: int | None = None,
    token_chunk_size: int = 1024,
) -> dict[str, list]:
    """Per-position student/teacher top-1 ids and KL(teacher || student) at positions where ``mask`` is true.

    Logits are (..., vocab) with matching leading shapes; the result is ready for
    ``TeacherStudentAgreement().compute(**result)``: {"predictions", "references", "token_kl"}.
    """
    student_logits, teacher_logits = torch.as_tensor(student_logits), torch.as_tensor(teacher_logits)
    if student_logits.shape[:-1] != teacher_logits.shape[:-1]:
        raise ValueError(
            f"logits shapes differ: student {tuple(student_logits.shape)}, teacher {tuple(teacher_logits.shape)}"
        )
    student_logits, teacher_logits = _check_vocab(student_logits, teacher_logits, vocab_size)
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.bool, device=student_logits.device)
        student_rows, teacher_rows = student_logits[mask], teacher_logits[mask]
    else:
        student_rows = student_logits.reshape(-1, student_logits.shape[-1])
        teacher_rows = teacher_logits.reshape(-1, teacher_logits.shape[-1])
    student_top1, teacher_top1, token_kl = [], [], []
    with torch.no_grad():
        for start in range(0, student_rows.shape[0], token_chunk_size):
            student_lp = torch.log_softmax(student_rows[start : start + token_chunk_size].float(), dim=-1)
            teacher_lp = torch.log_softmax(teacher_rows[start : start + token_chunk_size].float(), dim=-1)
            token_kl.append((teacher_lp.exp() * (teacher_lp - student_lp)).sum(-1).double().cpu())
            student_top1.append(student_lp.argmax(-1).cpu())
            teacher_top1.append(teacher_lp.argmax(-1).cpu())
    if not token_kl:
        return {"predictions": [], "references": [], "token_kl": []}
    return {
        "predictions": torch.cat(student_top1).tolist(),
        "references": torch.cat(teacher_top1).tolist(),
        "token_kl": torch.cat(token_kl).tolist(),
    }


@torch.no_grad()
def compute_agreement(
    teacher: Any,
    student: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 4,
    max_length: int | None = None,
    vocab_size: int | None = None,
    token_chunk_size: int = 1024,
    show_progress: bool = True,
) -> dict[str, float]:
    """Top-1 agreement and mean token KL(teacher || student) over every next-token position of ``texts``.

    Both models see the same windows (``max_length`` defaults to the smaller of their context lengths,
    capped at 1024) and must share ``tokenizer``'s vocabulary.
    """
    length = max_length or min(resolve_max_length(teacher, None), resolve_max_length(student, None))
    windows = text_windows(tokenizer, texts, length)
    if not windows:
        raise ValueError("no token to compare: texts are empty")
    student_device, teacher_device = model_device(student), model_device(teacher)
    modes = (teacher.training, student.training)
    teacher.eval()
    student.eval()
    agree, kl_sum, count = 0, 0.0, 0
    try:
        for batch in tqdm(
            batches(windows, batch_size, pad_id_of(tokenizer), student_device),
            total=math.ceil(len(windows) / batch_size),
            desc="teacher-student agreement",
            disable=not show_progress,
        ):
            student_logits = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            teacher_logits = teacher(
                input_ids=batch.input_ids.to(teacher_device), attention_mask=batch.attention_mask.to(teacher_device)
            ).logits
            teacher_logits = teacher_logits.to(student_device)
            # Right padding: each row's scored positions are a prefix, so slice views instead of copying.
            for row, length in enumerate(batch.target_mask.sum(dim=1).tolist()):
                rows = agreement_from_logits(
                    student_logits[row, :length],
                    teacher_logits[row, :length],
                    vocab_size=vocab_size,
                    token_chunk_size=token_chunk_size,
                )
                agree += sum(s == t for s, t in zip(rows["predictions"], rows["references"]))
                kl_sum += math.fsum(rows["token_kl"])
                count += length
    finally:
        teacher.train(modes[0])
        student.train(modes[1])
    return {"top1_agreement": agree / count, "kl_teacher_student": kl_sum / count, "num_tokens": count}


_DESCRIPTION = """
Teacher-student agreement over token positions: the share where the student's top-1 next token equals the
teacher's, and (when per-token KL values are given) the mean KL(teacher || student) in nats.
"""

_INPUTS = """
Args:
    predictions: student top-1 token ids, one per position.
    references: teacher top-1 token ids, same positions.
    token_kl: optional per-position KL(teacher || student) values (see agreement_from_logits).
Returns:
    {"top1_agreement", "num_tokens"} and "kl_teacher_student" when token_kl is given.
"""


class TeacherStudentAgreement(evaluate.Metric):
    """Top-1 agreement (and mean token KL) from per-position predictions, e.g. in ``compute_metrics``."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(
        self, predictions: Sequence[int], references: Sequence[int], token_kl: Sequence[float] | None = None
    ) -> dict[str, float]:
        if len(predictions) == 0:
            raise ValueError("TeacherStudentAgreement needs at least one position")
        scores = {
            "top1_agreement": float(np.mean(np.asarray(predictions) == np.asarray(references))),
            "num_tokens": len(predictions),
        }
        if token_kl is not None:
            if len(token_kl) != len(predictions):
                raise ValueError(f"got {len(token_kl)} token_kl values for {len(predictions)} positions")
            scores["kl_teacher_student"] = float(np.mean(np.asarray(token_kl, dtype=np.float64)))
        return scores
