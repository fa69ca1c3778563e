"""Index tensors that let a batched loss compare aligned groups of two differently tokenized batches.

For a group whose student tokens are ``[a, b)``, the student logits at position ``a - 1`` give the
next-token distribution at the group's first character, conditioned on the same text as the
teacher's logits at its own ``a' - 1``. The group's own probability is the chain
``p(tok_a | ...) * p(tok_a+1 | ..., tok_a) * ...``; its log is the first token's log-probability
plus the "continuation" terms, one per further token, which the loss gathers with ``index_add``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from .alignment import AlignedGroup


@dataclass
class TokenChain:
    """Continuation tokens of the groups on one side: logits row ``row[i]`` (of the flattened
    ``(batch * seq_len, vocab)`` logits) predicted ``token[i]``, which belongs to group ``group[i]``."""

    row: Tensor
    token: Tensor
    group: Tensor

    def to(self, device: torch.device | str) -> TokenChain:
        return TokenChain(*(getattr(self, f.name).to(device) for f in fields(self)))


@dataclass
class CrossTokenAlignment:
    """Everything a cross-vocabulary loss needs about a batch, as 1-D long tensors of length G (groups).

    Rows index the flattened ``(batch * seq_len, vocab)`` logits of each side: ``student_row`` holds
    the logits predicting the group's first student token, ``student_first_token`` that token's id.
    """

    group_batch: Tensor
    student_row: Tensor
    teacher_row: Tensor
    student_first_token: Tensor
    teacher_first_token: Tensor
    student_chain: TokenChain
    teacher_chain: TokenChain
    dropped_groups: int = 0

    @property
    def num_groups(self) -> int:
        return int(self.group_batch.numel())

    def to(self, device: torch.device | str) -> CrossTokenAlignment:
        return CrossTokenAlignment(
            self.group_batch.to(device),
            self.student_row.to(device),
            self.teacher_row.to(device),
            self.student_first_token.to(device),
            self.teacher_first_token.to(device),
            self.student_chain.to(device),
            self.teacher_chain.to(device),
            self.dropped_groups,
        )


@dataclass(frozen=True)
class AlignedExample:
    """One sequence pair: token ids as placed in their batch rows (from ``*_offset`` on) and its groups."""

    student_ids: Sequence[int]
    teacher_ids: Sequence[int]
    groups: Sequence[AlignedGroup]
    student_offset: int = 0
    teacher_offset: int = 0


def build_alignment(
    examples: Sequence[AlignedExample], student_row_length: int, teacher_row_length: int
) -> CrossTokenAlignment:
    """Flatten per-example groups into index tensors over ``(batch * row_length, vocab)`` logits.

    Groups starting at a sequence's first token have no position that predicts them and are dropped
    (counted in ``dropped_groups``); in a prompt/completion setup the prompt always precedes them.
    """
    group_rows: list[tuple[int, int, int, int, int]] = []
    chains: dict[str, list[tuple[int, int, int]]] = {"student": [], "teacher": []}
    dropped = 0
    for b, example in enumerate(examples):
        for ids, offset, length, side in (
            (example.student_ids, example.student_offset, student_row_length, "student"),
            (example.teacher_ids, example.teacher_offset, teacher_row_length, "teacher"),
        ):
            if offset < 0 or offset + len(ids) > length:
                raise ValueError(f"Example {b}: {side} tokens at offset {offset} do not fit a row of length {length}.")
        for group in example.groups:
            if group.student_start == 0 or group.teacher_start == 0:
                dropped += 1
                continue
            g = len(group_rows)
            s_base = b * student_row_length + example.student_offset - 1
            t_base = b * teacher_row_length + example.teacher_offset - 1
            group_rows.append(
                (
                    b,
                    s_base + group.student_start,
                    t_base + group.teacher_start,
                    int(example.student_ids[group.student_start]),
                    int(example.teacher_ids[group.teacher_start]),
                )
            )
            for side, ids, base, start, end in (
                ("student", example.student_ids, s_base, group.student_start, group.student_end),
                ("teacher", example.teacher_ids, t_base, group.teacher_start, group.teacher_end),
            ):
                for index in range(start + 1, end):
                    chains[side].append((base + index, int(ids[index]), g))

    columns = torch.tensor(group_rows, dtype=torch.long).reshape(-1, 5).t()
    return CrossTokenAlignment(
        group_batch=columns[0].contiguous(),
        student_row=columns[1].contiguous(),
        teacher_row=columns[2].contiguous(),
        student_first_token=columns[3].contiguous(),
        teacher_first_token=columns[4].contiguous(),
        student_chain=_chain(chains["student"]),
        teacher_chain=_chain(chains["teacher"]),
        dropped_groups=dropped,
    )


def _chain(rows: list[tuple[int, int, int]]) -> TokenChain:
    columns = torch.tensor(rows, dtype=torch.long).reshape(-1, 3).t()
    return TokenChain(*(columns[i].contiguous() for i in range(3)))


def compact_teacher_rows(alignment: CrossTokenAlignment) -> tuple[Tensor, CrossTokenAlignment]:
    """The distinct teacher rows the loss reads, and the alignment re-indexed into just those rows.

    Lets a caller project only these rows through a large-vocabulary ``lm_head`` (262k entries for
    Gemma 3) instead of materialising logits for every teacher position.
    """
    rows, inverse = torch.unique(torch.cat([alignment.teacher_row, alignment.teacher_chain.row]), return_inverse=True)
    num_groups = alignment.num_groups
    chain = alignment.teacher_chain
    return rows, CrossTokenAlignment(
        group_batch=alignment.group_batch,
        student_row=alignment.student_row,
        teacher_row=inverse[:num_groups],
        student_first_token=alignment.student_first_token,
        teacher_first_token=alignment.teacher_first_token,
        student_chain=alignment.student_chain,
        teacher_chain=TokenChain(inverse[num_groups:], chain.token, chain.group),
        dropped_groups=alignment.dropped_groups,
    )
