"""Held-out perplexity, bits per byte and teacher agreement of several students with one teacher pass.

Why not call `compute_perplexity` and `compute_agreement` per model: each agreement call reruns the teacher,
which dominates the CPU budget. Here every batch of held-out windows goes through the teacher once and then
through each student; the per-batch arithmetic is the evaluation package's own (`token_nll_sum`,
`agreement_from_logits`, `perplexity_from_counts`) on the same windows, so the numbers equal what those
functions return one model at a time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..diagnostics import diagnostic_sums, empty_sums, summarize
from ..evaluation.agreement import agreement_from_logits
from ..evaluation.perplexity import perplexity_from_counts, token_nll_sum
from ..evaluation.token_windows import batches, model_device, pad_id_of, text_windows


class _Tally:
    def __init__(self) -> None:
        self.nll = 0.0
        self.tokens = 0
        self.agree = 0
        self.kl = 0.0
        self.diagnostics = empty_sums()


@torch.no_grad()
def evaluate_against_teacher(
    teacher: Any,
    students: Mapping[str, Any],
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 4,
    token_chunk_size: int = 1024,
    teacher_name: str = "teacher",
    show_progress: bool = True,
) -> dict[str, dict[str, float]]:
    """{name: {perplexity, bits_per_byte, nll_per_token, entropy_bits, ece, top1_agreement, kl_teacher_student,
    top5_overlap, prob_correlation}} for the teacher (no distances to itself) and each student, every held-out
    token scored once in windows of ``max_length`` (diagnostics: `hf_distill.diagnostics`)."""
    windows = text_windows(tokenizer, texts, max_length)
    if not windows:
        raise ValueError("no held-out token to score: texts are empty")
    models = {teacher_name: teacher, **students}
    modes = {name: model.training for name, model in models.items()}
    for model in models.values():
        model.eval()
    tallies = {name: _Tally() for name in models}
    device = model_device(teacher)
    try:
        progress = tqdm(
            batches(windows, batch_size, pad_id_of(tokenizer), device),
            total=math.ceil(len(windows) / batch_size),
            desc="held-out eval",
            disable=not show_progress,
        )
        for batch in progress:
            targets = batch.input_ids.roll(-1, dims=1)[batch.target_mask]
            teacher_logits = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            teacher_rows = teacher_logits[batch.target_mask]
            del teacher_logits
            _add_nll(tallies[teacher_name], teacher_rows, targets, token_chunk_size)
            # The teacher against itself: its entropy and calibration (the distances are trivially zero).
            tallies[teacher_name].diagnostics += diagnostic_sums(teacher_rows, teacher_rows, targets).cpu()
            for name, student in students.items():
                logits = student(
                    input_ids=batch.input_ids.to(model_device(student)),
                    attention_mask=batch.attention_mask.to(model_device(student)),
                ).logits
                rows = logits[batch.target_mask.to(logits.device)].to(device)
                del logits
                _add_nll(tallies[name], rows, targets, token_chunk_size)
                agreement = agreement_from_logits(rows, teacher_rows, token_chunk_size=token_chunk_size)
                tallies[name].agree += sum(s == t for s, t in zip(agreement["predictions"], agreement["references"]))
                tallies[name].kl += math.fsum(agreement["token_kl"])
                tallies[name].diagnostics += diagnostic_sums(rows, teacher_rows, targets).cpu()
    finally:
        for name, model in models.items():
            model.train(modes[name])
    num_bytes = sum(len(text.encode("utf-8")) for text in texts)
    results: dict[str, dict[str, float]] = {}
    for name, tally in tallies.items():
        scores = perplexity_from_counts(tally.nll, tally.tokens, num_bytes)
        row = {key: scores[key] for key in ("perplexity", "bits_per_byte", "nll_per_token")}
        diagnostics = summarize(tally.diagnostics)
        if name != teacher_name:
            row["top1_agreement"] = tally.agree / tally.tokens
            row["kl_teacher_student"] = tally.kl / tally.tokens
            row["top5_overlap"] = diagnostics["top5_overlap"]
            row["prob_correlation"] = diagnostics["prob_correlation"]
        row["entropy_bits"] = diagnostics["student_entropy_bits"]
        row["ece"] = diagnostics["student_ece"]
        results[name] = row
    return results


def _add_nll(tally: _Tally, rows: torch.Tensor, targets: torch.Tensor, token_chunk_size: int) -> None:
    tally.nll += float(token_nll_sum(rows, targets.to(rows.device), token_chunk_size))
    tally.tokens += int(targets.numel())
