"""Which student decoder layer is matched to which teacher decoder layer.

Layer ``l`` always means *the output of decoder layer l* (0-based), i.e. the residual stream after that
layer and before the model's final norm. A map is an ordered tuple of ``(student_layer, teacher_layer)``
pairs; several student layers may share a teacher layer and layers may be skipped.

Strategies:

* ``uniform``: ``s -> round(s * n_teacher / n_student)`` with ties rounded up, capped at the last teacher
  layer. Integer arithmetic, so no float drift. This reproduces both published examples: 32 -> 80 layers
  gives 0->0, 15->38, 31->78 and 12 -> 60 layers gives 0->0, 1->5, 2->10, ..., 11->55.
* ``top_heavy``: the lower student half (layers ``0 .. n_s // 2``) is spread over the lower third of the
  teacher (``0 .. n_t // 3``) and the remaining student layers over the upper half of the teacher
  (``n_t // 2 .. n_t - 1``). 12 -> 60 layers gives 0->0, 6->20, 7->30, 11->59 as in the published
  example; that example also lists 1->2, which no linear rule through 0->0 and 6->20 yields (this rule
  gives 1->3), see ``docs/feature_kd.md``.
* ``last_k``: the last ``k`` student layers paired, in order, with the last ``k`` teacher layers.
* ``explicit``: the pairs given by the user, validated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

LayerPair = tuple[int, int]
LayerMap = tuple[LayerPair, ...]

STRATEGIES = ("uniform", "top_heavy", "last_k", "explicit")


def _round_half_up_ratio(numerator: int, denominator: int) -> int:
    """round(numerator / denominator) with ties going up, exactly, for non-negative integers."""
    return (2 * numerator + denominator) // (2 * denominator)


def _spread(n_points: int, first: int, last: int) -> list[int]:
    """``n_points`` integers evenly spread from ``first`` to ``last`` inclusive (ties rounded up)."""
    if n_points == 1:
        return [first]
    span = last - first
    return [first + _round_half_up_ratio(i * span, n_points - 1) for i in range(n_points)]


def _check_counts(n_student: int, n_teacher: int) -> None:
    if n_student < 1 or n_teacher < 1:
        raise ValueError(f"Layer counts must be >= 1, got student={n_student}, teacher={n_teacher}.")


def uniform_map(n_student: int, n_teacher: int) -> LayerMap:
    """Every student layer ``s`` -> teacher layer ``round(s * n_teacher / n_student)``."""
    _check_counts(n_student, n_teacher)
    return tuple((s, min(_round_half_up_ratio(s * n_teacher, n_student), n_teacher - 1)) for s in range(n_student))


def top_heavy_map(n_student: int, n_teacher: int) -> LayerMap:
    """Lower student half over the teacher's lower third, upper student layers over its upper half."""
    _check_counts(n_student, n_teacher)
    if n_student < 3 or n_teacher < 3:
        return uniform_map(n_student, n_teacher)
    n_lower = n_student // 2 + 1
    lower = _spread(n_lower, 0, n_teacher // 3)
    upper = _spread(n_student - n_lower, n_teacher // 2, n_teacher - 1)
    return tuple(enumerate(lower + upper))


def last_k_map(n_student: int, n_teacher: int, k: int) -> LayerMap:
    """The last ``k`` student layers matched in order with the last ``k`` teacher layers."""
    _check_counts(n_student, n_teacher)
    if not 1 <= k <= min(n_student, n_teacher):
        raise ValueError(f"last_k needs 1 <= k <= min(n_student, n_teacher) = {min(n_student, n_teacher)}, got {k}.")
    return tuple((n_student - k + i, n_teacher - k + i) for i in range(k))


def validate_map(pairs: Iterable[LayerPair], n_student: int, n_teacher: int) -> LayerMap:
    """Check every pair lies inside both models; the error names the offending pair."""
    _check_counts(n_student, n_teacher)
    checked: list[LayerPair] = []
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair):
            raise ValueError(f"Layer pair {pair!r} must be two integers (student_layer, teacher_layer).")
        s, t = pair
        if not 0 <= s < n_student:
            raise ValueError(
                f"Layer pair ({s}, {t}): student layer {s} is outside the student's layers 0..{n_student - 1}."
            )
        if not 0 <= t < n_teacher:
            raise ValueError(
                f"Layer pair ({s}, {t}): teacher layer {t} is outside the teacher's layers 0..{n_teacher - 1}."
            )
        if (s, t) in checked:
            raise ValueError(f"Layer pair ({s}, {t}) is listed twice.")
        checked.append((s, t))
    if not checked:
        raise ValueError("A layer map needs at least one (student_layer, teacher_layer) pair.")
    return tuple(checked)


def _explicit_pairs(pairs: Mapping[int, int] | Iterable[LayerPair] | Iterable[str]) -> list[LayerPair]:
    """Accept ``{s: t}``, ``[(s, t), ...]`` or ``["s:t", ...]`` (the form CLI/YAML users type)."""
    if isinstance(pairs, Mapping):
        return [(int(s), int(t)) for s, t in pairs.items()]
    out: list[LayerPair] = []
    for item in pairs:
        if isinstance(item, str):
            parts = item.split(":")
            if len(parts) != 2:
                raise ValueError(f"Layer pair {item!r} must look like 'student:teacher', e.g. '3:9'.")
            out.append((int(parts[0]), int(parts[1])))
        else:
            out.append(tuple(item))  # type: ignore[arg-type]
    return out


def build_layer_map(
    strategy: str,
    n_student: int,
    n_teacher: int,
    *,
    k: int | None = None,
    pairs: Mapping[int, int] | Iterable[LayerPair] | Iterable[str] | None = None,
) -> LayerMap:
    """Build and validate a map by strategy name (see module docstring)."""
    if strategy == "uniform":
        layer_map = uniform_map(n_student, n_teacher)
    elif strategy == "top_heavy":
        layer_map = top_heavy_map(n_student, n_teacher)
    elif strategy == "last_k":
        if k is None:
            raise ValueError("The 'last_k' layer map needs k (feature_last_k).")
        layer_map = last_k_map(n_student, n_teacher, k)
    elif strategy == "explicit":
        if pairs is None:
            raise ValueError("The 'explicit' layer map needs pairs (feature_layer_pairs), e.g. ['0:0', '3:9'].")
        layer_map = tuple(_explicit_pairs(pairs))
    else:
        raise ValueError(f"Unknown layer map strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
    return validate_map(layer_map, n_student, n_teacher)


def format_layer_map(layer_map: LayerMap, n_student: int | None = None, n_teacher: int | None = None) -> str:
    """Human-readable table of a map, one pair per line."""
    header = "Feature distillation layer map (student -> teacher)"
    if n_student is not None and n_teacher is not None:
        header += f", {n_student}-layer student / {n_teacher}-layer teacher"
    width = max(len(str(s)) for s, _ in layer_map)
    lines = [header + ":"] + [f"  student {s:>{width}} -> teacher {t}" for s, t in layer_map]
    return "\n".join(lines)


def print_layer_map(layer_map: LayerMap, n_student: int | None = None, n_teacher: int | None = None) -> None:
    """Print ``format_layer_map`` (the helper users call to see what will be matched)."""
    print(format_layer_map(layer_map, n_student, n_teacher))
