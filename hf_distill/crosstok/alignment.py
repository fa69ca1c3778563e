"""Match groups of student tokens with groups of teacher tokens that cover exactly the same text.

Two tokenizations of one text agree on some character positions where both place a token
boundary ("cuts"). Between two consecutive common cuts lies an aligned group: a run of student
tokens and a run of teacher tokens covering identical text. Taking *all* common cuts gives the
finest such groups (most are one token on each side), and consecutive groups tile the text.
"""

from __future__ import annotations

from dataclasses import dataclass

from .offsets import TokenizedText


@dataclass(frozen=True)
class AlignedGroup:
    """Student tokens ``[student_start, student_end)`` and teacher tokens ``[teacher_start, teacher_end)``
    covering the same text, ``[char_start, char_end)`` in completion coordinates."""

    student_start: int
    student_end: int
    teacher_start: int
    teacher_end: int
    char_start: int
    char_end: int


def token_cuts(tokens: TokenizedText, region_start: int, region_end: int) -> dict[int, int]:
    """Character positions in ``[region_start, region_end]`` where this tokenization has a boundary.

    Maps each cut (relative to ``region_start``) to the index of the first text-covering token after
    it (``len(tokens)`` for the cut after the last one). A cut before token k exists when no earlier
    token ends after the point where token k and every later token start; overlapping spans
    (pieces of one character) therefore never get a cut between them, and a whitespace gap left by
    trimmed offsets is given to the following token, whose text it precedes. Tokens with empty spans
    cover no text and are skipped. The region's end counts as a cut only if a token ends exactly
    there, so a token running past the completion is never split.
    """
    covering = [i for i in range(len(tokens)) if tokens.ends[i] > tokens.starts[i]]
    if not covering:
        return {}
    suffix_min_start = [0] * len(covering)
    running = len(tokens.text)
    for k in range(len(covering) - 1, -1, -1):
        running = min(running, tokens.starts[covering[k]])
        suffix_min_start[k] = running

    cuts: dict[int, int] = {}
    max_end = None
    for k, index in enumerate(covering):
        position = tokens.starts[index] if max_end is None else max_end
        if (max_end is None or max_end <= suffix_min_start[k]) and region_start <= position <= region_end:
            cuts[position - region_start] = index
        max_end = tokens.ends[index] if max_end is None else max(max_end, tokens.ends[index])
    if region_start <= max_end <= region_end:
        cuts[max_end - region_start] = covering[-1] + 1
    return cuts


def align_tokens(
    student: TokenizedText,
    teacher: TokenizedText,
    student_region: tuple[int, int] | None = None,
    teacher_region: tuple[int, int] | None = None,
) -> list[AlignedGroup]:
    """Aligned groups inside a region (e.g. the completion) that has identical text on both sides.

    Regions are ``(char_start, char_end)`` in each side's own text, so the prompts around the
    completion may differ (each model's own chat template). Default: the whole text.
    """
    s_start, s_end = student_region if student_region is not None else (0, len(student.text))
    t_start, t_end = teacher_region if teacher_region is not None else (0, len(teacher.text))
    student_piece, teacher_piece = student.text[s_start:s_end], teacher.text[t_start:t_end]
    if student_piece != teacher_piece:
        raise ValueError(
            "The aligned regions differ between student and teacher text: "
            f"{student_piece[:60]!r}... vs {teacher_piece[:60]!r}..."
        )
    student_cuts = token_cuts(student, s_start, s_end)
    teacher_cuts = token_cuts(teacher, t_start, t_end)
    common = sorted(set(student_cuts) & set(teacher_cuts))
    groups = []
    for left, right in zip(common, common[1:]):
        groups.append(
            AlignedGroup(
                student_start=student_cuts[left],
                student_end=_last_covering_before(student, student_cuts[right]) + 1,
                teacher_start=teacher_cuts[left],
                teacher_end=_last_covering_before(teacher, teacher_cuts[right]) + 1,
                char_start=left,
                char_end=right,
            )
        )
    return groups


def _last_covering_before(tokens: TokenizedText, index: int) -> int:
    """Index of the last text-covering token before ``index`` (empty-span tokens at a cut are left out)."""
    i = index - 1
    while tokens.ends[i] <= tokens.starts[i]:
        i -= 1
    return i


def covered_characters(groups: list[AlignedGroup]) -> int:
    """Number of region characters inside aligned groups (equals the region length when fully tiled)."""
    return sum(group.char_end - group.char_start for group in groups)
