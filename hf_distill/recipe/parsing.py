"""Command-line/YAML parsing of the recipe: `RecipeArguments`, the mode's training config, TRL's `ModelConfig`.

The training config class depends on the mode (`SeqKDConfig` adds the sequence-level fields), so the mode is
read first from the command line or the YAML file, then everything is parsed by `TrlParser`: the YAML sets
defaults, command-line flags override them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from .arguments import RecipeArguments


def _mode(argv: Sequence[str]) -> str:
    argv = list(argv)
    for i, token in enumerate(argv):
        if token == "--mode" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--mode="):
            return token.split("=", 1)[1]
    if "--config" in argv:
        with open(argv[argv.index("--config") + 1], encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
        return str(config.get("mode", "logit"))
    return "logit"


def parse_recipe_args(argv: Sequence[str] | None = None) -> tuple[RecipeArguments, Any, Any]:
    """(recipe, training config, model config) from ``argv`` (default: sys.argv[1:])."""
    import sys

    from trl import ModelConfig, TrlParser

    from .runner import trainer_classes

    argv = list(sys.argv[1:] if argv is None else argv)
    mode = _mode(argv)
    _, config_class = trainer_classes(mode)
    parser = TrlParser((RecipeArguments, config_class, ModelConfig))
    recipe, args, model_args, from_config, from_command_line = parser.parse_args_and_config(
        argv, return_remaining_strings=True, separate_remaining_strings=True
    )
    if from_command_line:
        raise ValueError(f"Unknown arguments: {from_command_line}")
    _drop_other_mode_settings(from_config, mode)
    return recipe, args, model_args


def _drop_other_mode_settings(unknown: list[str], mode: str) -> None:
    """A feature-mode YAML run with `--mode logit` (a sweep row) carries feature-only fields: ignore those, loudly;
    anything else unknown is an error."""
    import dataclasses
    import warnings

    from ..trainers.feature_config import FeatureKDConfig

    feature_fields = {f.name for f in dataclasses.fields(FeatureKDConfig)}
    names = [item[2:] for item in unknown if item.startswith("--")]
    others = [name for name in names if name not in feature_fields]
    if others or (names and mode == "feature"):
        raise ValueError(f"Unknown arguments from config file: {names}")
    if names:
        warnings.warn(f"mode={mode}: ignoring the feature-KD settings of the config file: {names}", stacklevel=3)
