"""Which teacher source serves a trainer: the registered kinds, asked in priority order.

Adding a kind of teacher is one module with a `TeacherSource` subclass decorated with `register_teacher_source`.
"""

from __future__ import annotations

from .base import TeacherRequest, TeacherSource

TEACHER_SOURCES: list[type[TeacherSource]] = []


def register_teacher_source(cls: type[TeacherSource]) -> type[TeacherSource]:
    """Make a `TeacherSource` subclass available to every trainer (usable as a class decorator)."""
    if any(existing.kind == cls.kind for existing in TEACHER_SOURCES if existing is not cls):
        raise ValueError(f"A teacher source of kind {cls.kind!r} is already registered.")
    if cls not in TEACHER_SOURCES:
        TEACHER_SOURCES.append(cls)
        TEACHER_SOURCES.sort(key=lambda source: source.priority)
    return cls


def resolve_teacher_source(request: TeacherRequest) -> TeacherSource | None:
    """The source for a request: the user's own `TeacherSource`, the first registered kind that claims it, or
    None (no teacher at all)."""
    if isinstance(request.teacher, TeacherSource):
        return request.teacher
    for cls in TEACHER_SOURCES:
        if cls.claims(request):
            return cls(request)
    if request.teacher_or_name is not None:
        raise TypeError(
            f"No teacher source accepts teacher_model={request.teacher_or_name!r}: pass a model, a name/path, a list "
            "of those (ensemble), 'ema', or a TeacherSource."
        )
    return None
