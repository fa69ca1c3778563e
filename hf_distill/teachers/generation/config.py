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

    strategy: str = field(
        default="greedy", metadata={"help": "greedy (argmax), beam (beam search) or sample", "choices": STRATEGIES}
    )
    max_new_tokens: int = field(default=256, metadata={"help": "generation length limit per completion"})
    num_samples: int = field(default=1, metadata={"help": "candidates per prompt (sampled, or the best beams)"})
    num_beams: int = field(default=4, metadata={"help": "beam width (strategy beam)"})
    length_penalty: float = field(
        default=1.0, metadata={"help": "beams ranked by summed log-probability / length ** length_penalty"}
    )
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (strategy sample)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass, in (0, 1] (strategy sample)"})
    top_k: int = field(default=0, metadata={"help": "sample among the k most likely tokens; 0 disables it"})
    stop_sequences: list[str] = field(
        default_factory=list,
        metadata={
            "help": "stop sequences (repeat the flag or list several; on the command line and in --config files "
            "backslash escapes such as \\n are decoded)",
            "aliases": ["--stop"],
            "action": "extend",
        },
    )
    selection: str = field(
        default="first",
        metadata={
            "help": "first surviving candidate, the one the teacher finds most likely (loglik), or all",
            "choices": SELECTIONS,
        },
    )
    min_completion_tokens: int = field(default=0, metadata={"help": "drop shorter completions"})
    max_completion_tokens: int | None = field(default=None, metadata={"help": "drop longer completions"})
    require_finished: bool = field(
        default=False, metadata={"help": "drop completions cut by max_new_tokens (no EOS or stop sequence)"}
    )
    chat_template_for_prompts: bool = field(
        default=False, metadata={"help": "wrap plain prompts as a user message in the teacher's chat template"}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "column with the prompt text or messages"})
    messages_column: str = field(
        default="messages", metadata={"help": "column with conversations, used when there is no prompt column"}
    )
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    shard_size: int = field(
        default=64, metadata={"help": "prompts per written shard (the unit of resumption after a kill)"}
    )
    seed: int = field(default=0, metadata={"help": "sampling seed; each shard is seeded from it and its content"})
    backend: str = field(
        default="transformers",
        metadata={"help": "generation engine (vllm needs the vllm package)", "choices": BACKENDS},
    )

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
