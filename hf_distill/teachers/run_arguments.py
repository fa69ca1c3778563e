"""Command-line arguments every resumable teacher run shares (`hf-distill precompute`, `hf-distill generate`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TeacherRunArguments:
    """The teacher, the rows it runs over and the output directory; each command adds its own fields."""

    teacher: str = field(metadata={"help": "teacher: Hub id or local directory"})
    dataset: str = field(
        metadata={"help": "rows: a save_to_disk directory, a .jsonl/.json/.parquet file, or a Hub dataset id"}
    )
    out: str = field(metadata={"help": "output directory (rerun the same command with it to resume)"})
    split: str = field(default="train", metadata={"help": "dataset split (Hub datasets)"})
    dtype: str = field(default="auto", metadata={"help": "teacher dtype: auto, bfloat16, float16 or float32"})
    progress: bool = field(default=True, metadata={"help": "show progress bars; --no-progress turns them off"})
