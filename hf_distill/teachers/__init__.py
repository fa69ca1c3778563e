"""Where the teacher signal comes from: a frozen model, precomputed columns, or generated sequences."""

from .generation import TeacherGenerationConfig, UnitTestExecutionCheck, generate_teacher_completions
from .resumable import load_sharded, run_sharded

__all__ = [
    "TeacherGenerationConfig",
    "UnitTestExecutionCheck",
    "generate_teacher_completions",
    "load_sharded",
    "run_sharded",
]
