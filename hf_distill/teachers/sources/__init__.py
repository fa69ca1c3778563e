"""Teacher sources: every kind of teacher behind one interface (see `base.TeacherSource`).

Built-in kinds, in the order they are asked: EMA self-teacher (`"ema"`), ensemble (a list of teachers),
cross-tokenizer teacher (`cross_tokenizer=True`), live teacher (a model or a name), precomputed columns (no teacher
model, datasets with teacher columns).
"""

from . import cross_tokenizer, ema, ensemble, live, precomputed  # noqa: F401  (registers the built-in kinds)
from .base import Capabilities, TeacherCompatibilityError, TeacherNeeds, TeacherRequest, TeacherSource, check_compatible
from .cross_tokenizer import CrossTokenizerTeacher
from .ema import EMATeacher, ExponentialMovingAverage
from .ensemble import TeacherEnsemble
from .live import LiveTeacher
from .precomputed import PrecomputedTeacher
from .registry import TEACHER_SOURCES, register_teacher_source, resolve_teacher_source

__all__ = [
    "TEACHER_SOURCES",
    "Capabilities",
    "CrossTokenizerTeacher",
    "EMATeacher",
    "ExponentialMovingAverage",
    "LiveTeacher",
    "PrecomputedTeacher",
    "TeacherCompatibilityError",
    "TeacherEnsemble",
    "TeacherNeeds",
    "TeacherRequest",
    "TeacherSource",
    "check_compatible",
    "register_teacher_source",
    "resolve_teacher_source",
]
