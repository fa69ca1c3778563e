"""Teacher generation for sequence-level KD: prompts in, a resumable dataset of (filtered) completions out.

Modules: ``config`` (the settings), ``prompts`` (rendering and length checks), ``hf`` / ``vllm`` (the two
decoding backends), ``selection`` (which candidates to keep), ``execution`` (the unit-test filter),
``pipeline`` (the sharded run) and ``cli`` (``hf-distill generate``).
"""

from .config import TeacherGenerationConfig
from .execution import UnitTestExecutionCheck
from .pipeline import generate_teacher_completions

__all__ = ["TeacherGenerationConfig", "UnitTestExecutionCheck", "generate_teacher_completions"]
