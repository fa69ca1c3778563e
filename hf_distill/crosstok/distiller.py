"""Cross-tokenizer distillation: the teacher's view of a student batch, and the loss terms.

The student batch (ids + labels, as TRL's collator builds it) is decoded back to text; the teacher
tokenizes that text with its own tokenizer (optionally after rewriting the prompt into its own
format), and only the labeled completion text is aligned and distilled. Special tokens of the
student (EOS, chat markers) are left to the hard cross-entropy: their text means nothing to the teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses.cross_entropy import cross_entropy_sum
from ..losses.cross_vocab import CrossVocabLossSpec, cross_vocab_loss
from ..losses.token_kd import IGNORE_INDEX, KDLossTerms, LogitSource, _project, causal_targets
from ..modeling import final_hidden_states, lm_head, supports_fused_head
from .alignment import align_tokens
from .batch import AlignedExample, CrossTokenAlignment, build_alignment, compact_teacher_rows
from .offsets import TokenizedText, spans_from_ids, tokenize_with_spans
from .vocab_map import shared_vocab_pairs


@dataclass
class TeacherView:
    """The teacher's batch for one student batch, and the alignment between the two."""

    teacher_inputs: dict[str, Tensor]
    alignment: CrossTokenAlignment
    teacher_rows: Tensor  # flat (batch * teacher_len) rows whose logits the loss reads
    completion_characters: int
    aligned_characters: int


class CrossTokenizerDistiller:
    """Everything cross-tokenizer KD adds to a KD step, independent of the Trainer machinery.

    Args:
        student_tokenizer / teacher_tokenizer: fast tokenizers (slow ones work through decoding).
        student_vocab_size / teacher_vocab_size: widths of the models' logits.
        spec: weights of the ULD and exact-match terms, temperature, top-k.
        alpha: weight of the soft term; ``1 - alpha`` weights the student's cross-entropy.
        teacher_prompt_fn: maps the student's prompt text (everything before the first completion
            token) to the teacher's prompt text, e.g. to re-render it in the teacher's chat format.
            Default: the teacher reads the student's text unchanged.
    """

    def __init__(
        self,
        student_tokenizer: Any,
        teacher_tokenizer: Any,
        student_vocab_size: int,
        teacher_vocab_size: int,
        spec: CrossVocabLossSpec,
        alpha: float = 0.5,
        teacher_prompt_fn: Callable[[str], str] | None = None,
    ) -> None:
        if teacher_tokenizer is None:
            raise ValueError("Cross-tokenizer distillation needs the teacher's tokenizer (`teacher_processing_class`).")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        self.student_tokenizer = getattr(student_tokenizer, "tokenizer", student_tokenizer)
        self.teacher_tokenizer = getattr(teacher_tokenizer, "tokenizer", teacher_tokenizer)
        self.spec = spec
        self.alpha = alpha
        self.teacher_prompt_fn = teacher_prompt_fn
        self.student_special_ids = set(getattr(self.student_tokenizer, "all_special_ids", []))
        self.teacher_special_ids = set(getattr(self.teacher_tokenizer, "all_special_ids", []))
        s_ids, t_ids = shared_vocab_pairs(
            self.student_tokenizer, self.teacher_tokenizer, student_vocab_size, teacher_vocab_size
        )
        self.shared_pairs = (s_ids, t_ids)
        # Teacher id -> student id of the identical-text token, -1 if none: for the agreement metric.
        self.teacher_to_student = torch.full((teacher_vocab_size,), -1, dtype=torch.long)
        self.teacher_to_student[t_ids] = s_ids
        pad = self.teacher_tokenizer.pad_token_id
        self.teacher_pad_id = pad if pad is not None else (self.teacher_tokenizer.eos_token_id or 0)

    # ---- the teacher's batch -------------------------------------------------------------------

    def prepare(self, inputs: dict[str, Any]) -> TeacherView:
        """Decode the student batch, re-tokenize it for the teacher, and align the completions."""
        input_ids, labels = inputs["input_ids"].cpu(), inputs["labels"].cpu()
        if "attention_mask" not in inputs and "position_ids" in inputs:
            raise ValueError(
                "Cross-tokenizer distillation does not support padding-free/packed batches; set "
                "`padding_free=False` and `packing=False`."
            )
        mask = inputs.get("attention_mask")
        mask = torch.ones_like(input_ids) if mask is None else mask.cpu()
        examples, teacher_ids = [], []
        completion_chars = aligned_chars = 0
        for b in range(input_ids.shape[0]):
            real = mask[b].nonzero().flatten()
            if real.numel() == 0:
                examples.append(AlignedExample((), (), ()))
                teacher_ids.append([])
                continue
            offset, end = int(real[0]), int(real[-1]) + 1
            ids = input_ids[b, offset:end].tolist()
            row_labels = labels[b, offset:end].tolist()
            # TRL tokenizes prompt and completion apart: re-tokenizing each piece recovers the spans fast.
            split = next((i for i, label in enumerate(row_labels) if label != IGNORE_INDEX), 0)
            student = spans_from_ids(self.student_tokenizer, ids, split_points=(split,))
            regions = self._completion_regions(student, row_labels)
            teacher, shift = self._teacher_tokens(student.text, regions[0][0] if regions else len(student.text))
            groups = []
            for start, stop in regions:
                groups.extend(align_tokens(student, teacher, (start, stop), (start + shift, stop + shift)))
                completion_chars += stop - start
            aligned_chars += sum(g.char_end - g.char_start for g in groups)
            examples.append(AlignedExample(ids, teacher.input_ids, groups, student_offset=offset))
            teacher_ids.append(list(teacher.input_ids))

        teacher_len = max(1, max(len(ids) for ids in teacher_ids))
        padded = torch.full((len(teacher_ids), teacher_len), self.teacher_pad_id, dtype=torch.long)
        attention = torch.zeros_like(padded)
        for b, ids in enumerate(teacher_ids):
            padded[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[b, : len(ids)] = 1
        alignment = build_alignment(examples, input_ids.shape[1], teacher_len)
        rows, alignment = compact_teacher_rows(alignment)
        return TeacherView(
            teacher_inputs={"input_ids": padded, "attention_mask": attention},
            alignment=alignment,
            teacher_rows=rows,
            completion_characters=completion_chars,
            aligned_characters=aligned_chars,
        )

    def _teacher_tokens(self, student_text: str, completion_start: int) -> tuple[TokenizedText, int]:
        """The teacher's tokens and the character shift from student to teacher text.

        Prompt and completion are tokenized separately and concatenated (as TRL does for the student),
        so the teacher always has a token boundary where the completion starts and none of its text is
        lost to a token that straddles the boundary.
        """
        student_prompt = student_text[:completion_start]
        prompt = self.teacher_prompt_fn(student_prompt) if self.teacher_prompt_fn is not None else student_prompt
        head = tokenize_with_spans(self.teacher_tokenizer, prompt, add_special_tokens=True)
        keep = len(head)  # a post-processor's trailing EOS would land between prompt and completion
        while (
            keep > 1
            and head.starts[keep - 1] == head.ends[keep - 1]
            and head.input_ids[keep - 1] in self.teacher_special_ids
        ):
            keep -= 1
        head = TokenizedText(head.text, head.input_ids[:keep], head.starts[:keep], head.ends[:keep])
        tail = tokenize_with_spans(self.teacher_tokenizer, student_text[completion_start:], add_special_tokens=False)
        joined = TokenizedText(
            prompt + tail.text,
            head.input_ids + tail.input_ids,
            head.starts + tuple(start + len(prompt) for start in tail.starts),
            head.ends + tuple(end + len(prompt) for end in tail.ends),
        )
        return joined, len(prompt) - completion_start

    def _completion_regions(self, student: TokenizedText, row_labels: list[int]) -> list[tuple[int, int]]:
        """Character ranges of the runs of labeled, non-special tokens (the text to distill)."""
        regions: list[tuple[int, int]] = []
        run: list[int] = []
        for i, label in enumerate([*row_labels, IGNORE_INDEX]):
            keep = label != IGNORE_INDEX and student.input_ids[i] not in self.student_special_ids
            if keep:
                run.append(i)
                continue
            covering = [j for j in run if student.ends[j] > student.starts[j]]
            if covering:
                regions.append((min(student.starts[j] for j in covering), max(student.ends[j] for j in covering)))
            run = []
        return regions

    # ---- teacher logits --------------------------------------------------------------------------

    @torch.no_grad()
    def teacher_logits(self, teacher: nn.Module, view: TeacherView, device: torch.device) -> Tensor:
        """Teacher logits at only the rows the loss reads: (rows, teacher_vocab), float32.

        ``teacher`` is the unwrapped model; its context length is checked by the caller.
        """
        inputs = {k: v.to(device) for k, v in view.teacher_inputs.items()}
        rows = view.teacher_rows.to(device)
        if not supports_fused_head(teacher):
            logits = teacher(**inputs, use_cache=False).logits
            return logits.reshape(-1, logits.shape[-1]).index_select(0, rows).float()
        hidden = final_hidden_states(teacher, inputs)
        picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)
        head = lm_head(teacher)
        return F.linear(picked, head.weight, head.bias).float()

    # ---- loss ----------------------------------------------------------------------------------

    def terms(
        self, student: Tensor | LogitSource, teacher_logits: Tensor, view: TeacherView, labels: Tensor
    ) -> KDLossTerms:
        """``alpha * soft + (1 - alpha) * CE``, both sums; ``kl_sum`` holds the exact-match KL part.

        ``student`` is (batch, seq, vocab) logits or a flattened ``LogitSource`` (hidden states plus
        ``lm_head``: then the student's logits are only formed for the rows the loss reads, a chunk at a time).
        """
        if not isinstance(student, LogitSource):
            student = LogitSource(student.reshape(-1, student.shape[-1]))
        device = student.states.device
        targets = causal_targets(labels).to(device)
        alignment = view.alignment.to(device)
        pairs = self.shared_pairs if self.spec.exact_weight > 0 else None
        student_top = None
        if self.alpha > 0 and alignment.num_groups > 0:
            soft = cross_vocab_loss(student, teacher_logits, alignment, self.spec, shared_pairs=pairs)
            soft_loss, soft_sum, kl_sum = soft.loss, soft.uld_sum + soft.exact_sum, soft.exact_sum
            student_top = soft.student_top1
        else:
            soft_loss = student.states.new_zeros((), dtype=torch.float32)
            soft_sum = kl_sum = soft_loss.detach()
        hard = cross_entropy_sum(student, targets, self.spec.chunk_size, self.spec.precision)
        loss = self.alpha * soft_loss + (1.0 - self.alpha) * hard
        with torch.no_grad():
            if student_top is None:
                student_top = _row_argmax(student, alignment.student_row, self.spec.rows_per_chunk(student.vocab_size))
            teacher_top = self.teacher_to_student.to(device)[
                teacher_logits.index_select(0, alignment.teacher_row).argmax(-1)
            ]
            agree = (student_top == teacher_top).sum().float()
        return KDLossTerms(
            loss=loss,
            soft_sum=soft_sum.detach(),
            hard_sum=hard.detach(),
            num_tokens=(targets != IGNORE_INDEX).sum(),
            top1_agree=agree,
            kl_sum=kl_sum.detach(),
        )


def _row_argmax(source: LogitSource, rows: Tensor, step: int) -> Tensor:
    """Argmax of the logits at ``rows``, projecting a chunk of rows at a time."""
    picks = [_project(source.states, source.head_weight, source.head_bias, chunk, source.vocab_size).argmax(-1)
             for chunk in rows.split(step)]  # fmt: skip
    return torch.cat(picks) if picks else rows.new_zeros(0)
