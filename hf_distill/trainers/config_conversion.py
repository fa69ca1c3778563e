"""One conversion of a plain `TrainingArguments` / `SFTConfig` (or a parent KD config) into a trainer's config.

Swapping `Trainer`/`SFTTrainer` for a KD trainer must keep every setting the user made. Field values are copied
directly: `TrainingArguments.to_dict()` would replace every `*_token` field (`eos_token`, `pad_token`,
`hub_token`) by a `"<EOS_TOKEN>"`-style placeholder.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from transformers import TrainingArguments

ConfigT = TypeVar("ConfigT", bound=TrainingArguments)


def default_output_dir(model: Any, suffix: str) -> str:
    """`<model name>-<suffix>`, as TRL names the output directory when no config is given."""
    name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
    return f"{str(name).rstrip('/').split('/')[-1] or 'student'}-{suffix}"


def as_config(config_class: type[ConfigT], args: TrainingArguments | None, model: Any, suffix: str) -> ConfigT:
    """`args` as a `config_class`, keeping every field both classes share; defaults when `args` is None."""
    if args is None:
        return config_class(output_dir=default_output_dir(model, suffix))
    if isinstance(args, config_class):
        return args
    accepted = {f.name for f in dataclasses.fields(config_class) if f.init}
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and f.name in accepted}
    return config_class(**values)
