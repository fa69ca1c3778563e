"""Settings of a teacher-generation run: decoding strategy, candidate count, filters and selection.

Kept as one JSON-serialisable dataclass because everything in it changes the output: it is written to
the run's metadata, and a rerun with different settings into the same directory is refused.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

STRATEGIES = ("greedy", "beam", "sample")
# first: the first candidate that survives the filters; loglik: the one the teacher itself finds most
# likely (mean log-probability per completion token); all: keep every surviving candidate.
SELECTIONS = ("first", "loglik", "all")
BACKENDS = ("transformers", "vllm")


@dataclass
class TeacherGenerationConfig:
    """How the teacher writes completions and which candidates are kept.

    Decoding: ``strategy`` greedy (argmax), beam (``num_beams``; beams are ranked by summed log-probability
    divided by length ** ``length_penalty``) or sample (``temperature``, ``top_p``,
    ``top_k``); ``num_samples`` candidates per prompt (sampled, or the best beams). Filters: completion
    length in tokens within ``[min_completion_tokens, max_completion_tokens]``, ``require_finished``
    (ended by EOS or a stop sequence, not cut by ``max_new_tokens``), and an optional execution check
    passed to ``generate_teacher_completions``. ``selection`` then picks among the survivors.
    """

    strategy: str = "greedy"
    max_new_tokens: int = 256
    num_samples: int = 1
    num_beams: int = 4
    length_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_sequences: list[str] = field(default_factory=list)
    selection: str = "first"
    min_completion_tokens: int = 0
    max_completion_tokens: int | None = None
    require_finished: bool = False
    chat_template_for_prompts: bool = False
    prompt_column: str = "prompt"
    messages_column: str = "messages"
    batch_size: int = 8
    shard_size: int = 64
    seed: int = 0
    backend: str = "transformers"

    def __post_init__(self) -> None:
        self.stop_sequences = list(self.stop_sequences)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("max_new_tokens", "num_samples", "num_beams", "batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.strategy == "greedy" and self.num_samples > 1:
            raise ValueError(
                "greedy decoding yields one candidate per prompt; use strategy='sample' or 'beam' "
                f"for num_samples={self.num_samples}"
            )
        if self.strategy == "beam" and self.num_samples > self.num_beams:
            raise ValueError(
                f"beam search returns at most num_beams={self.num_beams} candidates, got num_samples={self.num_samples}"
            )
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if any(not s for s in self.stop_sequences):
            raise ValueError("stop_sequences must be non-empty strings")
        if self.min_completion_tokens < 0:
            raise ValueError(f"min_completion_tokens must be >= 0, got {self.min_completion_tokens}")
        if self.max_completion_tokens is not None and self.max_completion_tokens < self.min_completion_tokens:
            raise ValueError("max_completion_tokens must be >= min_completion_tokens")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
